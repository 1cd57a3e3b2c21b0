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
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from .codec.model import LotteryModel


@dataclass
class Schedule:
    """Step budget and optimiser settings of one fit."""

    steps: int = 1000
    lr: float = 1e-2  # latents and small networks
    score_lr: float = 1e-1  # mask scores
    lr_floor: float = 0.05  # cosine decays to lr * lr_floor, not to zero (short runs keep learning)
    hard_fraction: float = 0.1  # final fraction of steps with hard rounding
    temperature: tuple[float, float] = (0.3, 0.1)
    noise: tuple[float, float] = (2.0, 1.0)
    grad_clip: float = 10.0
    eval_every: int = 25  # how often the hard-rounded loss is checked for best-state keeping
    average_fraction: float = 0.0  # restoration: average the renders of this last fraction of steps


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


def _cosine(step: int, total: int, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def evaluate(model: LotteryModel, distortion: Distortion, lam: float) -> tuple[float, float, float]:
    """(loss, distortion, bpp) of the hard-rounded model, without gradients."""
    with torch.no_grad():
        image, bits = model("hard")
        d = float(distortion(image))
        bpp = float(bits) / model.n_pixels
    return d + lam * bpp, d, bpp


def fit(
    model: LotteryModel,
    distortion: Distortion,
    lam: float,
    schedule: Schedule,
    progress: ProgressCallback | None = None,
    report_every: int = 10,
) -> FitResult:
    """Fit `model` in place; on return it holds the best hard-rounded state evaluated (every
    `eval_every` steps from 20 % of the soft stage on, and at the last step)."""
    groups = model.parameter_groups()
    optimizer = torch.optim.Adam(
        [
            {"params": groups["latents"], "lr": schedule.lr},
            {"params": groups["networks"], "lr": schedule.lr},
            {"params": groups["scores"], "lr": schedule.score_lr},
        ]
    )
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    params = [p for g in groups.values() for p in g]
    total = max(1, schedule.steps)
    soft_steps = int(round(total * (1.0 - schedule.hard_fraction)))
    start = time.perf_counter()
    best_loss, best_step, best_state = math.inf, 0, None
    history: list[StepInfo] = []
    average_start = int(round(total * (1.0 - schedule.average_fraction))) if schedule.average_fraction > 0 else total
    render_sum, n_averaged = None, 0

    for step in range(total):
        soft = step < soft_steps
        progress_frac = step / max(soft_steps - 1, 1)
        t0, t1 = schedule.temperature
        a0, a1 = schedule.noise
        temperature = t0 + (t1 - t0) * progress_frac
        noise_a = a0 + (a1 - a0) * progress_frac
        factor = _cosine(step, total, schedule.lr_floor)
        for g, base in zip(optimizer.param_groups, base_lrs):
            g["lr"] = base * factor

        image, bits = model("soft" if soft else "hard", temperature, noise_a)
        d = distortion(image)
        bpp = bits / model.n_pixels
        loss = d + lam * bpp
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if schedule.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, schedule.grad_clip)
        optimizer.step()
        if step >= average_start:
            # Renders of successive steps differ by the quantization noise and the optimiser's
            # moves; their mean is a cheap self-ensemble (restoration only).
            render_sum = image.detach().clone() if render_sum is None else render_sum.add_(image.detach())
            n_averaged += 1

        last = step == total - 1
        # Hard-rounded evaluations in the hard stage, and also through the last 80 % of the soft
        # stage: a fit that destabilises (seen at high lambda: the rate jumped at step ~400 of 1,500
        # and never came back) then still returns its best state. An evaluation costs about a third
        # of a step, every eval_every steps.
        tracked = not soft or step >= soft_steps // 5
        if tracked and ((step - soft_steps) % schedule.eval_every == 0 or last):
            hard_loss, _, _ = evaluate(model, distortion, lam)
            if hard_loss < best_loss:
                best_loss, best_step = hard_loss, step + 1
                best_state = copy.deepcopy(model.state_dict())
        if progress is not None and (step % report_every == 0 or last):
            info = StepInfo(step + 1, total, loss.item(), d.item(), bpp.item(), time.perf_counter() - start, "soft" if soft else "hard")
            history.append(info)
            progress(info)

    if best_state is None:  # no hard stage (hard_fraction 0): evaluate the final state
        best_loss, _, _ = evaluate(model, distortion, lam)
        best_step = total
    else:
        model.load_state_dict(best_state)
    average = render_sum / n_averaged if n_averaged else None
    return FitResult(
        steps=total, seconds=time.perf_counter() - start, best_loss=best_loss, best_step=best_step,
        history=history, average_render=average,
    )


def mse(target: torch.Tensor) -> Distortion:
    return lambda image: torch.mean((image - target) ** 2)


def measure_step_rate(height: int, width: int, steps: int = 20, device: str = "cpu", arch=None) -> float:
    """Fitting steps per second on a random image of the given size (after 3 warm-up steps).

    `arch`: an Architecture; default: the compression config's (what `lottery compress` fits).
    """
    if arch is None:
        from .config import load_task_config

        arch = load_task_config("compress").architecture
    model = LotteryModel(height, width, arch, seed=0, mask_ratio=0.3).to(device)
    target = torch.rand(3, height, width, device=device)
    fit(model, mse(target), 1e-3, Schedule(steps=3))
    start = time.perf_counter()
    fit(model, mse(target), 1e-3, Schedule(steps=steps, hard_fraction=0.0))
    return steps / (time.perf_counter() - start)
