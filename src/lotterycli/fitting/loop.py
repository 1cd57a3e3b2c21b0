"""The per-image optimisation loop shared by compression and restoration.

Minimises distortion(render) + lambda * latent bits per pixel. Latents use soft-rounding plus
Kumaraswamy noise, both annealed, for the first (1 - hard_fraction) of the steps, then hard
rounding with straight-through gradients. Adam with per-group learning rates and cosine decay,
gradient-norm clipping, and the best hard-rounded state seen is kept.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..heap import GrowthLimit
from ..model.arm import coded_bands
from ..model.lottery_model import LotteryModel
from .adam import Adam
from .losses import Distortion, PixelMSE, draw_columns
from .schedule import Schedule

_CANCELLED = threading.Event()


class FitCancelled(Exception):
    """Raised inside a fit's loop after `cancel_all` (an interrupted command)."""


def cancel_all() -> None:
    """Make every fit of this process stop at its next step (they raise FitCancelled): fits on
    other threads cannot be interrupted otherwise, and would run to their end."""
    _CANCELLED.set()


@dataclass
class StepInfo:
    step: int
    total: int
    loss: float
    distortion: float  # the distortion term (MSE), as optimised
    bpp: float  # latent rate estimate in bits per pixel
    elapsed: float
    stage: str


class ProgressCallback(Protocol):
    def __call__(self, info: StepInfo) -> None: ...


def dropped_info(history: list[StepInfo], step: int, total: int, seconds: float) -> StepInfo:
    """The last report of a fit that stops at `step` (a screened-out restoration candidate)."""
    last = history[-1] if history else None
    return StepInfo(step, total, last.loss if last else math.nan, last.distortion if last else math.nan,
                    last.bpp if last else math.nan, seconds, "dropped")


@dataclass
class FitResult:
    steps: int
    seconds: float
    best_loss: float
    best_step: int
    history: list[StepInfo] = field(default_factory=list)
    average_render: torch.Tensor | None = None  # mean render over the averaging window, if any


def _cosine(step: int, total: int, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def check_cancelled() -> None:
    """Raise FitCancelled in a fit's loop once `cancel_all` was called."""
    if _CANCELLED.is_set():
        raise FitCancelled("the fit was cancelled")


def step_settings(schedule: Schedule, step: int, soft_steps: int, total: int) -> tuple[bool, float, float, float]:
    """(soft stage?, soft-round temperature, noise parameter, learning-rate factor) of `step`:
    the annealing and cosine decay every fitting loop follows."""
    frac = step / max(soft_steps - 1, 1)
    (t0, t1), (a0, a1) = schedule.temperature, schedule.noise
    return (step < soft_steps, t0 + (t1 - t0) * frac, a0 + (a1 - a0) * frac,
            _cosine(step, total, schedule.lr_floor))


def evaluate(model: LotteryModel, distortion: Distortion, lam: float) -> tuple[float, float, float]:
    """(loss, distortion, bpp) of the hard-rounded model, without gradients (all of a PixelMSE's pixels)."""
    with torch.no_grad():
        if isinstance(distortion, PixelMSE):
            _, bits, image = distortion.render(model, "hard")
        else:
            image, bits = model("hard")
        d = float(distortion(image))
        bpp = float(bits) / model.n_pixels
    return d + lam * bpp, d, bpp


class Fitter:
    """One fit that can pause and resume: `advance(until)` runs steps up to `until`, `finish()`
    restores the best hard-rounded state and returns the result.

    Why resumable: restoration screens several candidate members for a few steps, keeps the best
    and continues only those (`restoration.ensemble`); the continued fit is step for step the
    one an uninterrupted `fit` would have run.
    """

    def __init__(
        self,
        model: LotteryModel,
        distortion: Distortion,
        lam: float,
        schedule: Schedule,
        progress: ProgressCallback | None = None,
        report_every: int = 10,
        rate_thread: bool = False,
        checkpoint: Callable[[Fitter], None] | None = None,
    ):
        """`checkpoint(fitter)`: called after every step (it decides when to save `state_dict()`:
        `fitting.checkpoint`), so a killed fit can resume; None, the default, costs nothing.

        `rate_thread` (CPU): each step computes the rate (the ARM over every latent, forward and
        backward) on a second thread while this one renders and scores the image, each branch
        with half of torch's threads, then joins their gradients at the quantization proxies.
        The same gradients as the plain step, bit for bit (the same sums in the same order; tested),
        so the same file whatever the thread count on the machines measured; at 256x256 on 2 cores
        1.25x the steps per second of both threads working on every operation in turn, whose
        operations are too small to keep two threads busy (`rate_thread_pays`; docs/design.md).

        A `PixelMSE` distortion: the model synthesises only the pixels the loss reads (all of its
        pixels, or with `schedule.pixel_fraction` < 1 a fresh random part of them each step),
        except on the steps whose render is averaged, which are whole. With every pixel drawn, same
        loss and gradients as a whole render, less work."""
        self.pixel_loss = distortion if isinstance(distortion, PixelMSE) else None
        self.model, self.distortion, self.lam, self.schedule = model, distortion, lam, schedule
        # A large image under a PixelMSE is fitted a band of rows at a time (`_banded_step`).
        self.banded = self.pixel_loss is not None and len(model.row_bands()) > 1
        self.rate_thread = rate_thread and not self.banded
        self.heap_limit = GrowthLimit()
        self.checkpoint = checkpoint
        # The pixel draws have their own generator (concurrent fits must not share torch's global one).
        self.pixel_generator = torch.Generator().manual_seed(0x5EED ^ model.seed)
        self.progress, self.report_every = progress, report_every
        groups = model.parameter_groups()
        self.optimizer = Adam(
            [
                {"params": groups["latents"], "lr": schedule.lr * schedule.latent_lr_scale},
                {"params": groups["networks"], "lr": schedule.lr},
                {"params": groups["scores"], "lr": schedule.score_lr},
            ]
        )
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.params = [p for g in groups.values() for p in g]
        # multi-tensor clipping where torch has it (not on the meta device the tests use)
        self.foreach = self.params[0].device.type in ("cpu", "cuda") if self.params else False
        self.total = max(1, schedule.steps)
        self.soft_steps = int(round(self.total * (1.0 - schedule.hard_fraction)))
        self.step = 0  # next step to run
        self.seconds = 0.0
        self.best_loss, self.best_step, self.best_state = math.inf, 0, None
        self.history: list[StepInfo] = []
        self.losses: list[torch.Tensor] = []  # training loss of every step (detached: no GPU sync per step)
        if schedule.average_fraction > 0:
            self.average_start = int(round(self.total * (1.0 - schedule.average_fraction)))
        else:
            self.average_start = self.total
        self.render_sum: torch.Tensor | None = None
        self.n_averaged = 0

    def advance(self, until: int | None = None) -> None:
        """Run steps [self.step, until) (default: to the end of the schedule)."""
        until = self.total if until is None else min(int(until), self.total)
        if not self.rate_thread or self.step >= until:
            self._run(until, None)
            return
        threads = torch.get_num_threads()
        branch = max(1, threads // 2)
        # torch.set_num_threads sets the calling thread's OpenMP team size only (a new thread
        # starts with the process default, whatever torch.get_num_threads says), so each branch
        # sets its own.
        torch.set_num_threads(branch)
        try:
            with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(branch,)) as pool:
                self._run(until, pool)
        finally:
            torch.set_num_threads(threads)

    def _run(self, until: int, rate_pool: ThreadPoolExecutor | None) -> None:
        start = time.perf_counter()
        sched, model, optimizer = self.schedule, self.model, self.optimizer
        while self.step < until:
            check_cancelled()
            step = self.step
            soft, temperature, noise_a, factor = step_settings(sched, step, self.soft_steps, self.total)
            for g, base in zip(optimizer.param_groups, self.base_lrs):
                g["lr"] = base * factor

            averaged = step >= self.average_start and (step - self.average_start) % max(1, sched.average_every) == 0
            mode = "soft" if soft else "hard"
            optimizer.zero_grad(set_to_none=True)
            if self.banded:
                image, bits, d = self._banded_step(mode, temperature, noise_a, averaged)
            elif rate_pool is None:
                image, bits, d = self._plain_step(mode, temperature, noise_a, averaged)
            else:
                image, bits, d = self._split_step(rate_pool, mode, temperature, noise_a, averaged)
            self.heap_limit.check()  # else the heap's free memory grows step after step (`heap.py`)
            bpp = bits / model.n_pixels
            loss = d + self.lam * bpp
            if sched.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, sched.grad_clip, foreach=self.foreach)
            optimizer.step()
            self.losses.append(loss.detach())
            if averaged:
                # Renders of successive steps differ by the quantization noise and the optimiser's
                # moves; their mean is a cheap self-ensemble (restoration only).
                if self.render_sum is None:
                    self.render_sum = image.detach().clone()
                else:
                    self.render_sum.add_(image.detach())
                self.n_averaged += 1

            last = step == self.total - 1
            # Hard-rounded evaluations in the hard stage, and also through the last 80 % of the soft
            # stage: a fit that destabilises (seen at high lambda: the rate jumped at step ~400 of 1,500
            # and never came back) then still returns its best state. An evaluation costs about a third
            # of a step, every eval_every steps.
            tracked = not soft or step >= self.soft_steps // 5
            if tracked and ((step - self.soft_steps) % sched.eval_every == 0 or last):
                hard_loss, _, _ = evaluate(model, self.distortion, self.lam)
                if hard_loss < self.best_loss:
                    self.best_loss, self.best_step = hard_loss, step + 1
                    self.best_state = copy.deepcopy(model.state_dict())
            self.step += 1
            if self.progress is not None and (step % self.report_every == 0 or last):
                elapsed = self.seconds + time.perf_counter() - start
                info = StepInfo(step + 1, self.total, loss.item(), d.item(), bpp.item(), elapsed,
                                "soft" if soft else "hard")
                self.history.append(info)
                self.progress(info)
            if self.checkpoint is not None:
                now = time.perf_counter()  # the state saved carries the seconds spent so far
                self.seconds += now - start
                start = now
                self.checkpoint(self)
        self.seconds += time.perf_counter() - start

    def _step_loss(self) -> PixelMSE:
        """This step's PixelMSE: the whole one, or with `schedule.pixel_fraction` < 1 a fresh random
        part of its pixels."""
        loss, fraction = self.pixel_loss, self.schedule.pixel_fraction
        if fraction < 1.0:
            drawn = draw_columns(loss.indices.numel(), fraction, self.pixel_generator)
            loss = loss.columns(_to_device(drawn, loss.indices.device))
        return loss

    def _plain_step(self, mode: str, temperature: float, noise_a: float,
                    whole: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward and backward of one step in one go -> (render, bits, distortion), detached.
        Under a PixelMSE the render covers the pixels drawn for this step, or the whole image
        (C, H, W) when `whole`."""
        if self.pixel_loss is None:
            image, bits = self.model(mode, temperature, noise_a)
            d = self.distortion(image)
        else:
            loss = self._step_loss()
            image, bits, seen = loss.render(self.model, mode, temperature, noise_a, whole)
            d = loss(seen)
        (d + self.lam * (bits / self.model.n_pixels)).backward()
        return image.detach(), bits.detach(), d.detach()

    def _split_step(self, pool: ThreadPoolExecutor, mode: str, temperature: float, noise_a: float,
                    whole: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward and backward of one step in two branches (see `rate_thread`): the rate on the
        pool's thread, the render and distortion here, from detached copies of the
        quantization proxies; their gradients then flow on to the latents in one last backward.
        Each parameter gets its gradient from one branch only, so the sums do not depend on
        which branch finishes first. Returns (render, bits, distortion), detached."""
        model = self.model
        rate_in, synth_in = model.latents.proxies(mode, temperature, noise_a)
        rate_leaves = [r.detach().requires_grad_() for r in rate_in]
        synth_leaves = [s.detach().requires_grad_() for s in synth_in]
        weight = self.lam / model.n_pixels

        def rate_branch() -> torch.Tensor:
            bits = model.arm.rate_bits(rate_leaves, model.arch.arm_band_rows)
            (bits * weight).backward()
            return bits.detach()

        future = pool.submit(rate_branch)
        try:
            if self.pixel_loss is None:
                image = model.render_from(synth_leaves)
                d = self.distortion(image)
            else:
                loss = self._step_loss()
                image = model.render_from(synth_leaves, loss.pixels_to_render(whole))
                d = loss(loss.seen(image, whole))
            d.backward()
        finally:
            bits = future.result()  # waits for the rate branch (and raises its error) either way
        _join_at_proxies(rate_in + synth_in, rate_leaves + synth_leaves)
        return image.detach(), bits, d.detach()

    def _banded_step(self, mode: str, temperature: float, noise_a: float,
                     whole: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_plain_step` a band of rows at a time, so that only one band's intermediates are held.

        The quantization proxies are drawn once for the step (as in `_split_step`); each band of
        the image renders its pixels of this step's draw (`LotteryModel.render_rows`) and sends its
        share of the distortion back to detached copies of them, and so does each band of the
        latents that the ARM codes on its own; one last backward takes the summed gradients on to
        the latents. The same loss and gradients as the plain step, summed in another order.
        Returns (render, bits, distortion), detached; the render is (C, H, W) when `whole`, else
        the drawn pixels (C, n)."""
        model, loss = self.model, self._step_loss()
        rate_in, synth_in = model.latents.proxies(mode, temperature, noise_a)
        rate_leaves = [r.detach().requires_grad_() for r in rate_in]
        synth_leaves = [s.detach().requires_grad_() for s in synth_in]
        weight = self.lam / model.n_pixels
        bits = rate_in[0].new_zeros(())
        for part in coded_bands(rate_leaves, model.arch.arm_band_rows):  # views: gradients reach the leaves
            part_bits = model.arm.rate_bits([part])
            (part_bits * weight).backward()
            bits += part_bits.detach()

        bands, width = model.row_bands(), model.width
        indices, target = loss.indices, loss.target
        bounds = model.band_bounds(indices, bands)
        scale = 1.0 / target.numel()  # the mean over every drawn pixel and channel
        d = target.new_zeros(())
        image = target.new_empty(target.shape[0], model.height, width) if whole else target.new_empty(target.shape)
        for (a, b), lo, hi in zip(bands, bounds, bounds[1:]):
            if whole:  # every pixel of the band, scored at the loss's
                band = model.render_rows(synth_leaves, a, b)
                image[:, a:b] = band.detach().view(-1, b - a, width)
                seen = band.index_select(1, indices[lo:hi] - a * width)
            elif hi > lo:
                seen = model.render_rows(synth_leaves, a, b, indices[lo:hi])
                image[:, lo:hi] = seen.detach()
            else:
                continue
            part_d = (seen - target[:, lo:hi]).square().sum() * scale
            part_d.backward()
            d += part_d.detach()
        _join_at_proxies(rate_in + synth_in, rate_leaves + synth_leaves)
        return image, bits, d

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything the fit needs to go on exactly as if it had not stopped: parameters, the
        optimizer's moments, the step, the random generators, best-state keeping, the averaging
        window, the loss record. Tensors are CPU copies (a checkpoint file can hold them)."""

        def cpu(t):
            return None if t is None else t.detach().to("cpu", copy=True)

        optimizer = []
        for p in self.params:
            st = self.optimizer.state.get(p)
            optimizer.append(None if st is None else {"step": st["step"], "exp_avg": cpu(st["exp_avg"]),
                                                      "exp_avg_sq": cpu(st["exp_avg_sq"])})
        return {
            "step": self.step, "total": self.total, "seconds": self.seconds,
            "model": {k: cpu(v) for k, v in self.model.state_dict().items()},
            "optimizer": optimizer,
            "best_loss": self.best_loss, "best_step": self.best_step,
            "best_state": None if self.best_state is None else {k: cpu(v) for k, v in self.best_state.items()},
            "losses": cpu(torch.stack(self.losses)) if self.losses else None,
            "render_sum": cpu(self.render_sum), "n_averaged": self.n_averaged,
            "history": [vars(info) for info in self.history],
            "pixel_generator": self.pixel_generator.get_state(),
            "noise_generator": self.model.latents.noise_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` of a fit of the same model, loss and schedule."""
        if state["total"] != self.total:
            raise ValueError(f"the checkpoint is of a {state['total']}-step fit, this one has {self.total} steps")
        device = next(self.model.parameters()).device
        self.model.load_state_dict(state["model"])
        for p, st in zip(self.params, state["optimizer"]):
            if st is None:
                self.optimizer.state.pop(p, None)
            else:
                self.optimizer.state[p] = {"step": st["step"], "exp_avg": st["exp_avg"].to(device),
                                           "exp_avg_sq": st["exp_avg_sq"].to(device)}
        self.step, self.seconds = state["step"], state["seconds"]
        self.best_loss, self.best_step = state["best_loss"], state["best_step"]
        self.best_state = None if state["best_state"] is None else {k: v.to(device) for k, v in state["best_state"].items()}
        self.losses = [] if state["losses"] is None else list(state["losses"].to(device).unbind())
        self.render_sum = None if state["render_sum"] is None else state["render_sum"].to(device)
        self.n_averaged = state["n_averaged"]
        self.history = [StepInfo(**info) for info in state["history"]]
        self.pixel_generator.set_state(state["pixel_generator"])
        self.model.latents.set_noise_state(state["noise_generator"], device)

    def recent_loss(self, fraction: float = 0.25) -> float:
        """Mean training loss over the last `fraction` of the steps run so far (at least one step).

        A mean rather than the last value: single soft-stage losses carry the quantization noise.
        """
        if not self.losses:
            return math.inf
        n = max(1, int(round(len(self.losses) * fraction)))
        return float(torch.stack(self.losses[-n:]).mean())

    def drop(self) -> None:
        """Tell the progress display this fit stops here (a screened-out restoration candidate)."""
        if self.progress is not None:
            self.progress(dropped_info(self.history, self.step, self.total, self.seconds))

    def finish(self) -> FitResult:
        """Run any remaining steps, load the best hard-rounded state into the model, return the result."""
        self.advance()
        if self.best_state is None:  # no hard stage (hard_fraction 0): evaluate the final state
            self.best_loss, _, _ = evaluate(self.model, self.distortion, self.lam)
            self.best_step = self.total
        else:
            self.model.load_state_dict(self.best_state)
        average = self.render_sum / self.n_averaged if self.n_averaged else None
        return FitResult(
            steps=self.total, seconds=self.seconds, best_loss=self.best_loss, best_step=self.best_step,
            history=self.history, average_render=average,
        )


def _join_at_proxies(proxies: list[torch.Tensor], leaves: list[torch.Tensor]) -> None:
    """Take the gradients gathered on the detached `leaves` on through the `proxies` they were
    copied from, to the latents (one backward for the whole step)."""
    grads = [torch.zeros_like(x) if x.grad is None else x.grad for x in leaves]
    torch.autograd.backward(proxies, grads)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to a GPU through pinned memory without waiting (a plain copy from
    pageable memory would make every step wait for the GPU to finish the previous one)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def fit(
    model: LotteryModel,
    distortion: Distortion,
    lam: float,
    schedule: Schedule,
    progress: ProgressCallback | None = None,
    report_every: int = 10,
    rate_thread: bool = False,
) -> FitResult:
    """Fit `model` in place; on return it holds the best hard-rounded state evaluated (every
    `eval_every` steps from 20 % of the soft stage on, and at the last step). `rate_thread`: see
    `Fitter`."""
    return Fitter(model, distortion, lam, schedule, progress, report_every, rate_thread=rate_thread).finish()


RATE_THREAD_MAX_PIXELS = 384 * 384  # above this, two threads on every operation beat the split step


def rate_thread_pays(device: torch.device, n_pixels: int) -> bool:
    """Whether a fit should run its rate on a second thread (`Fitter`'s rate_thread).

    On a CPU with at least two torch threads, for images up to RATE_THREAD_MAX_PIXELS: at 256x256
    the split step gave 1.25x the steps per second of the plain one on two threads (median of 5),
    ~1.15x at 384x384, but 0.96x at 512x512 and 0.88x at 768x512, where the operations are large
    enough for two threads each and the longer render branch leaves a core idle (docs/design.md).
    The step's values do not change, only their timing.
    """
    return device.type == "cpu" and torch.get_num_threads() >= 2 and n_pixels <= RATE_THREAD_MAX_PIXELS
