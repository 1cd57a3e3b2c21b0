"""A restoration task's operator and rate weight for an observation, and simulated observations.

Shared by `api` (the library's front door, which exports them) and `jobs` (the commands' work on
files), which therefore need not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import TaskConfig
from ..errors import LotteryError
from .noise import estimate_sigma
from .operators import Inpaint, Operator, make_operator


def restoration_operator(task: str, y: torch.Tensor, *, sigma: float | None = None, scale: int | None = None,
                         mask: torch.Tensor | None = None) -> tuple[Operator, float, bool]:
    """(operator, sigma on the 0-255 scale, whether sigma was estimated) for observation `y`.

    Denoising estimates the noise level from `y` when `sigma` (0-255 scale) is not given; the other
    tasks take 0 (noiseless) by default."""
    estimated = False
    if task == "denoise" and sigma is None:
        sigma = estimate_sigma(y) * 255.0
        estimated = True
    if task == "sr" and scale is None:
        raise LotteryError("super-resolution needs a scale factor: 2, 3 or 4")
    if task == "inpaint" and mask is None:
        raise LotteryError("inpainting needs a mask (white = known pixel, black = missing)")
    sigma_255 = float(sigma or 0.0)
    operator = make_operator(task, sigma=sigma_255 / 255.0, scale=scale, mask=mask)
    operator.check_observation(tuple(y.shape))
    return operator, sigma_255, estimated


def restore_lambda(cfg: TaskConfig, operator: Operator, lam: float | None = None) -> float:
    """The rate weight of a restoration: `lam`, or the config's for the operator's noise level."""
    if lam is not None:
        return lam
    sigma = None if isinstance(operator, Inpaint) else operator.sigma * 255.0
    return cfg.lambda_for(sigma, getattr(operator, "scale", None))


@dataclass
class Degraded:
    observation: torch.Tensor  # float (3, h, w), noise neither clipped nor rounded
    operator: Operator  # what made it (for inpainting: its mask)


def degrade(x: torch.Tensor, task: str, *, sigma: float = 0.0, scale: int | None = None,
            missing_ratio: float | None = None, seed: int = 0) -> Degraded:
    """A simulated observation of clean image `x`: noise of level `sigma` (0-255 scale) after
    downsampling by `scale` (sr) or removing `missing_ratio` of the pixels at random (inpaint)."""
    if task == "inpaint":
        if missing_ratio is None:
            raise LotteryError("inpainting needs a missing ratio (e.g. 0.5)")
        operator: Operator = Inpaint.random(x.shape[1], x.shape[2], missing_ratio, seed, sigma=sigma / 255.0)
    else:
        operator = make_operator(task, sigma=sigma / 255.0, scale=scale)
    operator.check_image(tuple(x.shape))
    return Degraded(operator.simulate(x, seed), operator)
