"""Rich progress display on stderr behind the fitting loop's callback interface."""

from __future__ import annotations

import math
import threading

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .fitting.loop import StepInfo


class FitProgress:
    """Context manager: `with FitProgress(enabled) as p: fit(..., progress=p)`.

    Shows step, loss, PSNR of the fit (against the target for compression, the observation for
    restoration), estimated latent rate, elapsed time and ETA. Disabled, it does nothing.
    The display starts with the first bar: a command that fails before any fit starts (an
    unreadable image, a bad option) prints nothing but its one error line.
    """

    def __init__(self, enabled: bool = True, label: str = "fitting"):
        self.enabled = enabled
        self.label = label
        self._progress: Progress | None = None
        self._task = None
        self._refit_tasks: dict[str, object] = {}  # stage -> bar of each ARM refit, below the fit's
        self._started = False
        self._lock = threading.Lock()  # members may add their bars from worker threads

    def __enter__(self) -> FitProgress:
        if self.enabled:
            self._progress = Progress(
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
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None and self._started:
            self._progress.__exit__(*exc)

    def _add_task(self, label: str, total: int):
        """A new bar, starting the display on the first one."""
        with self._lock:
            if not self._started:
                self._progress.__enter__()
                self._started = True
            return self._progress.add_task(label, total=total, loss="-", psnr="-", bpp="-")

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

        def update(info: StepInfo) -> None:
            if info.stage == "dropped":  # a screened-out candidate: its bar stops where it is
                self._progress.update(task, description=f"{label} (screened out)")
            else:
                self._update(task, info)

        return update

    def __call__(self, info: StepInfo) -> None:
        if self._progress is None:
            return
        if info.stage.startswith("arm refit"):  # each refit on its own bar, below the fit's
            if info.stage not in self._refit_tasks:
                label = "ARM refit" + info.stage[len("arm refit"):]
                self._refit_tasks[info.stage] = self._add_task(label, info.total)
            self._update(self._refit_tasks[info.stage], info)
            return
        if self._task is None:
            self.start(self.label, info.total)
        self._update(self._task, info)

    def _update(self, task, info: StepInfo) -> None:
        if info.stage.startswith("arm refit"):  # the fit's pixels, only the latent rate moves
            loss, psnr = "-", "-"
        else:
            loss = f"{info.loss:.5f}"
            psnr = f"{-10 * math.log10(info.distortion) if info.distortion > 0 else float('inf'):.2f} dB"
        self._progress.update(task, completed=info.step, loss=loss, psnr=psnr, bpp=f"{info.bpp:.3f}")
