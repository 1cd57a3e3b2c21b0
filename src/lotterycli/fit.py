"""The per-image optimisation loop shared by compression and restoration.

Minimises distortion(render) + lambda * latent bits per pixel. Latents use soft-rounding plus
Kumaraswamy noise, both annealed, for the first (1 - hard_fraction) of the steps, then hard
rounding with straight-through gradients. Adam with per-group learning rates and cosine decay,
gradient-norm clipping, and the best hard-rounded state seen is kept.
"""

from __future__ import annotations

import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from .adam import Adam
from .codec.model import LotteryModel


@dataclass
class Schedule:
    """Step budget and optimiser settings of one fit."""

    steps: int = 1000
    lr: float = 1e-2  # latents and small networks
    latent_lr_scale: float = 1.0  # the latents' learning rate is lr times this (the small networks keep lr)
    score_lr: float = 1e-1  # mask scores
    lr_floor: float = 0.05  # cosine decays to lr * lr_floor, not to zero (short runs keep learning)
    hard_fraction: float = 0.1  # final fraction of steps with hard rounding
    temperature: tuple[float, float] = (0.3, 0.1)
    noise: tuple[float, float] = (2.0, 1.0)
    grad_clip: float = 10.0
    eval_every: int = 25  # how often the hard-rounded loss is checked for best-state keeping
    average_fraction: float = 0.0  # restoration: average the renders of this last fraction of steps
    average_every: int = 1  # ... taking the render of every n-th step of that window
    pixel_fraction: float = 1.0  # with a PixelMSE distortion: fraction of its pixels drawn at random each step
    modnet_rate_weight: float = 0.0  # ModNet's estimated parameter bits join the rate term, times this
    arm_rate_weight: float = 0.0  # the ARM's too (both 0: the networks' bits are not priced while fitting)
    arm_refit_steps: int = 0  # after the fit: Adam steps fitting the ARM alone to the final integer latents
    arm_refit_lr: float = 5e-3  # ... at this learning rate
    arm_scratch_widths: tuple[int, ...] = ()  # ARMs of these widths also fitted, from scratch, to those latents
    arm_scratch_steps: int = 600  # ... with this many Adam steps
    arm_scratch_lr: float = 1e-2  # ... at this learning rate (the cheapest ARM goes in the file)
    arm_scratch_min_share: float = 0.0  # ... only when the ARM's parameters are this share of its cost (0: always)


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


@dataclass
class FitResult:
    steps: int
    seconds: float
    best_loss: float
    best_step: int
    history: list[StepInfo] = field(default_factory=list)
    average_render: torch.Tensor | None = None  # mean render over the averaging window, if any


Distortion = Callable[[torch.Tensor], torch.Tensor]


class PixelMSE:
    """A distortion of the form mean((render - target)**2) over some pixels of the render: the flat
    pixel `indices` (n,), sorted, into the model's H*W, with `target` (C, n) their observed values.

    Why a class rather than a closure: a Fitter given one knows which pixels the loss reads, so it
    synthesises only those (inpainting: the observed ones) and can draw a random part of them each
    step (`Schedule.pixel_fraction`); a denoising fit covers every pixel. Called on a (C, n) render of
    exactly those pixels.
    """

    def __init__(self, indices: torch.Tensor, target: torch.Tensor, n_pixels: int):
        if target.shape[-1] != indices.numel():
            raise ValueError("PixelMSE: one target column per pixel index")
        self.indices, self.target, self.n_pixels = indices, target, n_pixels
        self.all_pixels = indices.numel() == n_pixels  # indices are then 0 .. n-1 in order

    def __call__(self, part: torch.Tensor) -> torch.Tensor:
        return torch.mean((part - self.target) ** 2)

    def columns(self, cols: torch.Tensor) -> "PixelMSE":
        """The same loss over the chosen columns only (sorted positions into `indices`)."""
        return PixelMSE(self.indices[cols], self.target[:, cols], self.n_pixels)

    def pixels_to_render(self, whole: bool = False) -> torch.Tensor | None:
        """The pixels a render for this loss must cover: None (the whole image, (C, H, W)) when
        `whole` or when the loss reads every pixel, else this loss's own."""
        return None if whole or self.all_pixels else self.indices

    def seen(self, image: torch.Tensor, whole: bool = False) -> torch.Tensor:
        """This loss's pixels (C, n) of a render made for `pixels_to_render(whole)`."""
        if whole or self.all_pixels:
            flat = image.reshape(image.shape[0], -1)
            return flat if self.all_pixels else flat.index_select(1, self.indices)
        return image

    def render(self, model: LotteryModel, mode: str, temperature: float = 0.3, noise_a: float = 1.0,
               whole: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(render, bits, the render at this loss's pixels): only those pixels are synthesised
        unless `whole` (the render is then (C, H, W)) or they are every pixel."""
        image, bits = model(mode, temperature, noise_a, self.pixels_to_render(whole))
        return image, bits, self.seen(image, whole)


def _cosine(step: int, total: int, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


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
    and continues only those (`restore.restore_image`); the continued fit is step for step the
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
        guide: Callable[[torch.Tensor, int], torch.Tensor | None] | None = None,
        rate_thread: bool = False,
    ):
        """`guide(image, step)`: an extra term of the training loss only (e.g. the inpainting warm
        start); evaluations and best-state keeping use distortion + lambda * rate alone.

        `rate_thread` (CPU): each step computes the rate (the ARM over every latent, forward and
        backward) on a second thread while this one renders and scores the image, each branch
        with half of torch's threads, then joins their gradients at the quantization proxies.
        The same gradients as the plain step, bit for bit (the same sums in the same order; tested),
        so the same file whatever the thread count on the machines measured; at 256x256 on 2 cores
        1.25x the steps per second of both threads working on every operation in turn, whose
        operations are too small to keep two threads busy (`rate_thread_pays`; docs/tuning.md,
        session 16).

        A `PixelMSE` distortion: the model synthesises only the pixels the loss reads (all of its
        pixels, or with `schedule.pixel_fraction` < 1 a fresh random part of them each step),
        except on the steps whose render is averaged, which are whole. With every pixel drawn, same
        loss and gradients as a whole render, less work (docs/tuning.md, session 7)."""
        self.pixel_loss = distortion if isinstance(distortion, PixelMSE) else None
        if guide is not None and self.pixel_loss is not None:
            raise ValueError("a guide term needs whole renders: pass a plain distortion with a guide")
        self.model, self.distortion, self.lam, self.schedule = model, distortion, lam, schedule
        self.guide = guide
        self.rate_thread = rate_thread
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
            step = self.step
            soft = step < self.soft_steps
            progress_frac = step / max(self.soft_steps - 1, 1)
            t0, t1 = sched.temperature
            a0, a1 = sched.noise
            temperature = t0 + (t1 - t0) * progress_frac
            noise_a = a0 + (a1 - a0) * progress_frac
            factor = _cosine(step, self.total, sched.lr_floor)
            for g, base in zip(optimizer.param_groups, self.base_lrs):
                g["lr"] = base * factor

            averaged = step >= self.average_start and (step - self.average_start) % max(1, sched.average_every) == 0
            mode = "soft" if soft else "hard"
            optimizer.zero_grad(set_to_none=True)
            if rate_pool is None:
                image, bits, d = self._plain_step(mode, temperature, noise_a, averaged, step)
            else:
                image, bits, d = self._split_step(rate_pool, mode, temperature, noise_a, averaged, step)
            bpp = bits / model.n_pixels
            loss = d + self.lam * bpp
            if sched.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, sched.grad_clip)
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
        self.seconds += time.perf_counter() - start

    def _priced_networks(self, loss: torch.Tensor, name: str) -> torch.Tensor:
        """`loss` plus lambda times the estimated parameter bits per pixel of network `name`
        ("arm" or "modnet"), scaled by the schedule's weight for it; `loss` itself when that is 0.

        Why: the file stores these networks, and at low rates they cost as much as the latents;
        the fit otherwise treats them as free and grows parameters the file then pays for."""
        weight = self.schedule.arm_rate_weight if name == "arm" else self.schedule.modnet_rate_weight
        if weight <= 0:
            return loss
        module = self.model.arm if name == "arm" else self.model.modnet
        return loss + module.parameter_bits() * (weight * self.lam / self.model.n_pixels)

    def _step_loss(self) -> PixelMSE:
        """This step's PixelMSE: the whole one, or with `schedule.pixel_fraction` < 1 a fresh random
        part of its pixels."""
        loss, fraction = self.pixel_loss, self.schedule.pixel_fraction
        if fraction < 1.0:
            keep = torch.rand(loss.indices.numel(), generator=self.pixel_generator) < fraction
            loss = loss.columns(torch.nonzero(keep).squeeze(1).to(loss.indices.device))
        return loss

    def _plain_step(self, mode: str, temperature: float, noise_a: float, whole: bool,
                    step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        total = d + self.lam * (bits / self.model.n_pixels)  # as before the split step: same floats
        total = self._priced_networks(total, "arm")
        total = self._priced_networks(total, "modnet")
        extra = self.guide(image, step) if self.guide is not None else None
        (total if extra is None else total + extra).backward()
        return image.detach(), bits.detach(), d.detach()

    def _split_step(self, pool: ThreadPoolExecutor, mode: str, temperature: float, noise_a: float,
                    whole: bool, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward and backward of one step in two branches (see `rate_thread`): the rate on the
        pool's thread, the render, distortion and guide term here, from detached copies of the
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
            self._priced_networks(bits * weight, "arm").backward()
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
            extra = self.guide(image, step) if self.guide is not None else None
            priced = self._priced_networks(d, "modnet")
            (priced if extra is None else priced + extra).backward()
        finally:
            bits = future.result()  # waits for the rate branch (and raises its error) either way
        leaves = rate_leaves + synth_leaves
        grads = [torch.zeros_like(x) if x.grad is None else x.grad for x in leaves]
        torch.autograd.backward(rate_in + synth_in, grads)
        return image.detach(), bits, d.detach()

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
            last = self.history[-1] if self.history else None
            self.progress(StepInfo(self.step, self.total, last.loss if last else math.nan,
                                   last.distortion if last else math.nan, last.bpp if last else math.nan,
                                   self.seconds, "dropped"))

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
    enough for two threads each and the longer render branch leaves a core idle (session 16,
    docs/tuning.md). The step's values do not change, only their timing.
    """
    return device.type == "cpu" and torch.get_num_threads() >= 2 and n_pixels <= RATE_THREAD_MAX_PIXELS


def mse(target: torch.Tensor) -> Distortion:
    return lambda image: torch.mean((image - target) ** 2)


def measure_step_rate(height: int, width: int, steps: int = 20, device: str = "cpu", arch=None) -> float:
    """Fitting steps per second on a random image of the given size (after 3 warm-up steps), with
    whole renders, and with the rate on a second thread where `lottery compress` would use it
    (`rate_thread_pays`).

    `arch`: an Architecture; default: the compression config's (what `lottery compress` fits).
    """
    if arch is None:
        from .config import load_task_config

        arch = load_task_config("compress").architecture
    model = LotteryModel(height, width, arch, seed=0, mask_ratio=0.3).to(device)
    target = torch.rand(3, height, width, device=device)
    split = rate_thread_pays(torch.device(device), height * width)
    fit(model, mse(target), 1e-3, Schedule(steps=3), rate_thread=split)
    start = time.perf_counter()
    fit(model, mse(target), 1e-3, Schedule(steps=steps, hard_fraction=0.0), rate_thread=split)
    return steps / (time.perf_counter() - start)
