"""Rich progress display on stderr behind the fitting loop's callback interface."""

from __future__ import annotations

import math
import threading

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .fitting.loop import StepInfo


class FitProgress:
    """Context manager: `with FitProgress(enabled) as p: fit(..., progress=p)`.

    Shows step, loss, PSNR of the fit (against the target for compression, the observation for
    restoration), estimated latent rate, elapsed time and ETA. Disabled, it does nothing.
    The display starts with the first bar: a command that fails before any fit starts (an
    unreadable image, a bad option) prints nothing but its one error line.
    """

    def __init__(self, enabled: bool = True, label: str = "fitting", display: Progress | None = None):
        """`display`: a Progress already shown (`BatchProgress`) that this fit's bars join, and
        leave when the fit ends."""
        self.enabled = enabled
        self.label = label
        self._display = display
        self._progress: Progress | None = None
        self._task = None
        self._stage_tasks: dict[str, object] = {}  # stage -> its bar (ARM refits, screened fits, quantization)
        self._member_tasks: list = []
        self._started = False
        self._lock = threading.Lock()  # members may add their bars from worker threads

    def __enter__(self) -> FitProgress:
        if self.enabled and self._display is not None:
            self._progress, self._started = self._display, True
        elif self.enabled:
            self._progress = fit_display()
        return self

    def __exit__(self, *exc) -> None:
        if self._display is not None:
            self.close()
        elif self._progress is not None and self._started:
            self._progress.__exit__(*exc)

    def close(self) -> None:
        """Remove this fit's bars from a shared display (the next image's take their place)."""
        if self._display is None:
            return
        with self._lock:
            for task in [self._task, *self._stage_tasks.values(), *self._member_tasks]:
                if task is not None and task in self._display.task_ids:
                    self._display.remove_task(task)
            self._task, self._stage_tasks, self._member_tasks = None, {}, []

    def _add_task(self, label: str, total: int):
        """A new bar, starting the display on the first one."""
        with self._lock:
            if not self._started:
                self._progress.__enter__()
                self._started = True
            return self._progress.add_task(self._prefix + label, total=total, loss="-", psnr="-", bpp="-")

    @property
    def _prefix(self) -> str:
        return f"{self.label}: " if self._display is not None else ""

    def start(self, label: str, total: int) -> None:
        """Begin a new bar (one per ensemble member)."""
        if self._progress is None:
            return
        self._task = self._add_task(label, total)

    def member(self, k: int, n: int, total: int):
        """A callback with its own bar "member k+1/n": members fitted side by side update their own."""
        if self._progress is None:
            return lambda info: None
        label = f"member {k + 1}/{n}"
        task = self._add_task(label, total)
        self._member_tasks.append(task)
        label = self._prefix + label

        def update(info: StepInfo) -> None:
            if info.stage == "dropped":  # a screened-out candidate: its bar stops where it is
                self._progress.update(task, description=f"{label} (screened out)")
            else:
                self._update(task, info)

        return update

    def __call__(self, info: StepInfo) -> None:
        if self._progress is None:
            return
        if info.stage.startswith(("arm refit", "screen", "quantize")):  # each on a bar of its own
            if info.stage not in self._stage_tasks:
                self._stage_tasks[info.stage] = self._add_task(_stage_label(info.stage), info.total)
            self._update(self._stage_tasks[info.stage], info)
            return
        if self._task is None:
            self.start("fit" if self._display is not None else self.label, info.total)
        self._update(self._task, info)

    def _update(self, task, info: StepInfo) -> None:
        """The bar's step and numbers; a number the stage does not know (nan) shows as "-"."""
        # the ARM refit's loss is its own objective (bits), not the fit's: not shown
        loss = "-" if info.stage.startswith("arm refit") or math.isnan(info.loss) else f"{info.loss:.5f}"
        if math.isnan(info.distortion):
            psnr = "-"
        else:
            psnr = f"{-10 * math.log10(info.distortion) if info.distortion > 0 else float('inf'):.2f} dB"
        bpp = "-" if math.isnan(info.bpp) else f"{info.bpp:.3f}"
        # a stage may learn its length as it goes (the quantization search)
        self._progress.update(task, completed=info.step, total=info.total, loss=loss, psnr=psnr, bpp=bpp)


def _stage_label(stage: str) -> str:
    """A bar's label for a stage after (or beside) the fit."""
    if stage.startswith("arm refit"):
        return "ARM refit" + stage[len("arm refit"):]
    if stage == "quantize":
        return "quantize networks"
    return stage


def fit_display() -> Progress:
    """The columns of a fit's bar: step, loss, PSNR, rate, elapsed time, ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=16),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]} {task.fields[psnr]} {task.fields[bpp]} bpp"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(compact=True),
        console=Console(stderr=True),
        transient=False,
    )


class BatchProgress:
    """`lottery batch`'s display on stderr: the images bar (done / skipped / failed, ETA) above the
    bar of each fit running. Disabled, it does nothing."""

    def __init__(self, enabled: bool = True, label: str = "batch"):
        self.enabled = enabled
        self.label = label
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self._task = None
        self._live: Live | None = None
        if enabled:
            self.images = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=16),
                MofNCompleteColumn(),
                TextColumn("images, {task.fields[counts]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(compact=True),
            )
            self.fits = fit_display()

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            if not self._live.console.is_interactive:  # as rich's Progress: end the last line
                self._live.console.print()
            self._live = None

    def _counts(self) -> str:
        return ", ".join(f"{n} {name}" for name, n in self.counts.items())

    def start(self, total: int, skipped: int) -> None:
        """Show the display: `total` images to run (`skipped` already done)."""
        self.counts["skipped"] = skipped
        if not self.enabled or total == 0:
            return
        self._task = self.images.add_task(self.label, total=total, counts=self._counts())
        self._live = Live(Group(self.images, self.fits), console=Console(stderr=True), refresh_per_second=4,
                          transient=False)
        self._live.__enter__()

    def fit(self, label: str) -> FitProgress:
        """The bars of one image's fit (a context manager: they go when it ends)."""
        return FitProgress(enabled=self._live is not None, label=label,
                           display=self.fits if self._live is not None else None)

    def finished(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        if self._task is not None:
            self.images.update(self._task, advance=1, counts=self._counts())
