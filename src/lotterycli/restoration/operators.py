"""Degradation operators for zero-shot restoration: y = A(x) + n.

Each operator offers

* ``forward(x)``        the noiseless operator A on an image (3, H, W) or a batch (B, 3, H, W);
                        pure torch, differentiable, cheap (it sits inside the fitting loop);
* ``observed(y_shape)`` which pixels of y enter the loss: None (all) or a bool (h, w) map;
* ``loss(render, y)``   mean squared error between A(render) and y over observed entries only;
* ``simulate(x, seed)`` a synthetic observation y = A(x) + noise (`noise.add_noise`);
* ``output_shape(y_shape)`` the (H, W) of the clean image behind an observation, after
                        ``check_observation``; ``check_image(x_shape)`` refuses clean images
                        the operator cannot be applied to. Both raise LotteryError.

``sigma`` is on the 0-1 scale inside the library (the CLI takes 0-255 values and divides by 255).
Super-resolution's A is Pillow's anti-aliased bicubic downsampling (`resize`); inpainting's a
pixel mask (True = observed, `masks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..errors import LotteryError
from .fill import biharmonic_fill
from .masks import as_mask
from .noise import add_noise
from .resize import bicubic_downsample

SCALES = (2, 3, 4)
TASKS = ("denoise", "sr", "inpaint")

# ----------------------------------------------------------------------------------------------
# Shape helpers


def _hw(shape: Sequence[int], what: str) -> tuple[int, int]:
    """(H, W) of a (H, W), (C, H, W) or (B, C, H, W) shape."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3, 4):
        raise LotteryError(f"{what} must be an image (3, H, W) or a batch (B, 3, H, W), got shape {shape}")
    if len(shape) >= 3 and shape[-3] != 3:
        raise LotteryError(f"{what} must have 3 channels, got shape {shape}")
    h, w = shape[-2], shape[-1]
    if h < 1 or w < 1:
        raise LotteryError(f"{what} is empty (shape {shape})")
    return h, w


def _check_tensor(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise LotteryError(f"{what} must be a torch tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise LotteryError(f"{what} must be an image (3, H, W) or a batch (B, 3, H, W), got shape {tuple(x.shape)}")


def _check_sigma(sigma) -> float:
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise LotteryError(f"noise level sigma must be a number, got {sigma!r}") from None
    if isinstance(sigma, bool) or not math.isfinite(value):
        raise LotteryError(f"noise level sigma must be a finite number, got {sigma!r}")
    if value < 0:
        raise LotteryError(f"noise level sigma must be >= 0, got {value:g}")
    if value > 1:
        raise LotteryError(
            f"noise level sigma {value:g} is too large: inside the library sigma is on the 0-1 scale "
            "(divide a 0-255 value by 255)"
        )
    return value


def _check_scale(scale) -> int:
    if isinstance(scale, bool):
        raise LotteryError(f"super-resolution scale must be one of 2, 3, 4, got {scale!r}")
    if isinstance(scale, float) and scale.is_integer():
        scale = int(scale)
    if isinstance(scale, (int, np.integer)) and int(scale) in SCALES:
        return int(scale)
    raise LotteryError(f"super-resolution scale must be one of 2, 3, 4, got {scale!r}")


# ----------------------------------------------------------------------------------------------
# Operators


class Operator:
    """Base class: identity operator. Subclasses (dataclasses) set ``sigma`` and override what differs."""

    task = "identity"
    sigma: float = 0.0

    def __post_init__(self) -> None:
        self.sigma = _check_sigma(self.sigma)

    # -- the operator ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def observed(self, y_shape: Sequence[int]) -> Optional[torch.Tensor]:
        self.check_observation(y_shape)
        return None

    def loss(self, render: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error between forward(render) and y over the observed entries."""
        pred = self.forward(render)
        if pred.shape[-2:] != y.shape[-2:]:
            raise LotteryError(
                f"rendered image maps to {pred.shape[-1]}x{pred.shape[-2]} but the observation is "
                f"{y.shape[-1]}x{y.shape[-2]}"
            )
        return torch.mean((pred - y) ** 2)

    def loss_pixels(self, y: torch.Tensor) -> torch.Tensor | None:
        """Bool (H, W) map of the output pixels `loss` reads when the loss is the mean squared error
        between the render and y over just those pixels; None when it is not of that form.

        Why: a fit can then synthesise only those pixels (inpainting: the observed half) or a random
        part of them per step (`fitting.losses.PixelMSE`, `Schedule.pixel_fraction`).
        """
        return None

    def classical_estimate(self, y: torch.Tensor) -> torch.Tensor | None:
        """A training-free classical estimate of the clean image, or None where there is none here.

        Only inpainting has one: the biharmonic fill of the missing pixels (the ensemble mixes it
        into the result with the config's `classical_blend`).
        """
        return None


    def keep_observed(self, image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`image` with the pixels that y observes exactly put back (data consistency).

        Only a noiseless pixel mask observes output pixels exactly; every other operator (noise,
        downsampling) returns `image` unchanged.
        """
        return image

    def simulate(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """y = A(x) + N(0, sigma^2) noise from numpy default_rng(seed) (see module docstring)."""
        _check_tensor(x, "clean image")
        self.check_image(x.shape)
        with torch.no_grad():
            clean = self.forward(x)
        return add_noise(clean, self.sigma, seed)

    # -- shapes ---------------------------------------------------------------------------------
    def check_image(self, x_shape: Sequence[int]) -> tuple[int, int]:
        """Raise LotteryError unless the operator applies to a clean image of this shape."""
        return _hw(x_shape, "image")

    def check_observation(self, y_shape: Sequence[int]) -> tuple[int, int]:
        """Raise LotteryError unless an observation of this shape is valid for the operator."""
        return _hw(y_shape, "observation")

    def output_shape(self, y_shape: Sequence[int]) -> tuple[int, int]:
        """(H, W) of the clean image behind an observation of shape y_shape."""
        return self.check_observation(y_shape)

    def observation_shape(self, x_shape: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the observation A(x) for a clean image of shape x_shape."""
        return self.check_image(x_shape)


@dataclass(eq=False)
class Denoise(Operator):
    """Additive white Gaussian noise of level sigma (0-1 scale); A = identity."""

    task = "denoise"

    sigma: float

    def loss_pixels(self, y: torch.Tensor) -> torch.Tensor:
        """Every pixel: `loss` is the plain mean squared error between the render and y."""
        self.check_observation(y.shape)
        return torch.ones(tuple(y.shape[-2:]), dtype=torch.bool, device=y.device)


@dataclass(eq=False)
class SuperResolution(Operator):
    """Noisy super-resolution: A = anti-aliased bicubic downsampling by ``scale`` (2, 3 or 4)."""

    task = "sr"

    scale: int
    sigma: float = 0.0

    def __post_init__(self) -> None:
        self.scale = _check_scale(self.scale)
        super().__post_init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_downsample(x, self.scale)

    def check_image(self, x_shape: Sequence[int]) -> tuple[int, int]:
        h, w = _hw(x_shape, "image")
        if h % self.scale or w % self.scale:
            raise LotteryError(
                f"image is {w}x{h}: for super-resolution x{self.scale} both sides must be divisible by "
                f"{self.scale} (crop it to {w - w % self.scale}x{h - h % self.scale})"
            )
        return h, w

    def output_shape(self, y_shape: Sequence[int]) -> tuple[int, int]:
        h, w = self.check_observation(y_shape)
        return h * self.scale, w * self.scale

    def observation_shape(self, x_shape: Sequence[int]) -> tuple[int, int]:
        h, w = self.check_image(x_shape)
        return h // self.scale, w // self.scale

    def loss(self, render: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h, w = y.shape[-2:]
        if tuple(render.shape[-2:]) != (h * self.scale, w * self.scale):
            raise LotteryError(
                f"rendered image is {render.shape[-1]}x{render.shape[-2]}, expected "
                f"{w * self.scale}x{h * self.scale} (x{self.scale} the {w}x{h} observation)"
            )
        return super().loss(render, y)


@dataclass(eq=False)
class Inpaint(Operator):
    """A = pixel mask (True = observed). Missing pixels are 0 in A(x) and never enter the loss."""

    task = "inpaint"

    mask: torch.Tensor
    sigma: float = 0.0
    _dev_masks: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.mask = as_mask(self.mask)
        super().__post_init__()
        if not bool(self.mask.any()):
            raise LotteryError("inpainting mask has no observed pixel (it is all black)")

    @classmethod
    def random(cls, height: int, width: int, missing_ratio: float, seed: int, sigma: float = 0.0) -> Inpaint:
        """Exactly round(missing_ratio * H * W) missing pixels, chosen by
        ``numpy.random.default_rng(seed).choice(H * W, size=k, replace=False)`` (row-major index)."""
        height, width = int(height), int(width)
        if height < 1 or width < 1:
            raise LotteryError(f"mask size {width}x{height} is empty")
        try:
            ratio = float(missing_ratio)
        except (TypeError, ValueError):
            raise LotteryError(f"missing ratio must be a number in [0, 1), got {missing_ratio!r}") from None
        if not (0.0 <= ratio < 1.0):
            raise LotteryError(f"missing ratio must be in [0, 1), got {missing_ratio!r}")
        n = height * width
        k = int(round(ratio * n))
        if k >= n:
            raise LotteryError(f"missing ratio {ratio:g} leaves no observed pixel in a {width}x{height} image")
        rng = np.random.default_rng(seed)
        flat = np.ones(n, dtype=bool)
        if k:
            flat[rng.choice(n, size=k, replace=False)] = False
        return cls(mask=torch.from_numpy(flat.reshape(height, width)), sigma=sigma)

    @property
    def missing_ratio(self) -> float:
        return 1.0 - float(self.mask.float().mean())

    def _mask_for(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The mask on x's device, as x's dtype (or ``dtype``), cached."""
        dtype = x.dtype if dtype is None else dtype
        key = (x.device, dtype)
        m = self._dev_masks.get(key)
        if m is None:
            m = self._dev_masks[key] = self.mask.to(device=x.device, dtype=dtype)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != tuple(self.mask.shape):
            raise LotteryError(
                f"image is {x.shape[-1]}x{x.shape[-2]} but the mask is {self.mask.shape[1]}x{self.mask.shape[0]}"
            )
        return x * self._mask_for(x)

    def observed(self, y_shape: Sequence[int]) -> torch.Tensor:
        self.check_observation(y_shape)
        return self.mask

    def loss(self, render: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_observation(y.shape)
        pred = self.forward(render)
        keep = self._mask_for(pred, torch.bool)
        diff = torch.where(keep, pred - y, torch.zeros((), dtype=pred.dtype, device=pred.device))
        count = int(self.mask.sum()) * (diff.numel() // self.mask.numel())
        return (diff**2).sum() / count

    def loss_pixels(self, y: torch.Tensor) -> torch.Tensor:
        """The observed pixels: `loss` is the mean squared error over them alone."""
        self.check_observation(y.shape)
        return self._mask_for(y, torch.bool)

    def keep_observed(self, image: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Noiseless inpainting: the known pixels are the truth, so the result keeps them and only
        the missing ones come from the model (as classical inpainting does). With noise
        (sigma > 0) the model's estimate is better than the noisy pixel: unchanged."""
        if self.sigma > 0:
            return image
        self.check_observation(y.shape)
        keep = self._mask_for(image, torch.bool)
        return torch.where(keep, y.to(image.dtype).clamp(0, 1), image)

    def classical_estimate(self, y: torch.Tensor) -> torch.Tensor:
        """y with its missing pixels filled by biharmonic inpainting (`biharmonic_fill`), in [0, 1]."""
        self.check_observation(y.shape)
        return biharmonic_fill(y, self.mask.to(y.device)).to(y.dtype).clamp(0, 1)


    def simulate(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """Masked image plus noise; missing pixels are exactly 0 (noise is drawn for every pixel,
        in the documented order, then masked)."""
        y = super().simulate(x, seed)
        return torch.where(self.mask.to(y.device), y, torch.zeros((), dtype=y.dtype, device=y.device))

    def _check_size(self, shape: Sequence[int], what: str) -> tuple[int, int]:
        h, w = _hw(shape, what)
        mh, mw = self.mask.shape
        if (h, w) != (mh, mw):
            raise LotteryError(f"{what} is {w}x{h} but the inpainting mask is {mw}x{mh}: they must be the same size")
        return h, w

    def check_image(self, x_shape: Sequence[int]) -> tuple[int, int]:
        return self._check_size(x_shape, "image")

    def check_observation(self, y_shape: Sequence[int]) -> tuple[int, int]:
        return self._check_size(y_shape, "observation")


# ----------------------------------------------------------------------------------------------
# Factory


def make_operator(task: str, *, sigma: float | None = None, scale: int | None = None, mask=None) -> Operator:
    """Build the operator for ``task`` in {"denoise", "sr", "inpaint"}.

    sigma is on the 0-1 scale (required for denoise, default 0 otherwise); scale in {2, 3, 4}
    for sr; mask (bool (H, W) tensor / array, True = observed, or a PNG path) for inpaint.
    """
    key = str(task).strip().lower() if isinstance(task, str) else task
    if key not in TASKS:
        raise LotteryError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    if key == "denoise":
        if sigma is None:
            raise LotteryError("denoising needs the noise level sigma")
        return Denoise(sigma=sigma)
    s = 0.0 if sigma is None else sigma
    if key == "sr":
        if scale is None:
            raise LotteryError("super-resolution needs a scale factor (2, 3 or 4)")
        return SuperResolution(scale=scale, sigma=s)
    return Inpaint(mask=mask, sigma=s)
