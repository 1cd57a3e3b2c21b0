"""The distortion terms a fit minimises.

A distortion is a callable render -> scalar tensor. `PixelMSE` is the common case, the mean
squared error over some pixels, and the fit treats it specially: it synthesises only those pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..model.bands import fit_band_rows
from ..model.lottery_model import LotteryModel

Distortion = Callable[[torch.Tensor], torch.Tensor]


def squared_error(target: torch.Tensor) -> Distortion:
    """The mean squared error of a whole (3, H, W) render against `target`."""
    return lambda image: torch.mean((image - target) ** 2)


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

    @classmethod
    def whole(cls, target: torch.Tensor) -> PixelMSE:
        """Every pixel of a (C, H, W) target."""
        n = target.shape[-2] * target.shape[-1]
        return cls(torch.arange(n, device=target.device), target.reshape(target.shape[0], n), n)

    def __call__(self, part: torch.Tensor) -> torch.Tensor:
        return torch.mean((part - self.target) ** 2)

    def columns(self, cols: torch.Tensor) -> PixelMSE:
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


def draw_columns(n_columns: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """A random part of `n_columns` positions: exactly round(fraction * n_columns) of them (at
    least one), sorted, one in each of that many equal strata of 0 .. n_columns - 1 (int64). A
    position that straddles two strata can be drawn twice (then it counts twice in the loss).

    Every position is drawn with the same probability (n / n_columns, `fraction` to within one
    position), as when each is kept on its own with that probability, but the count is the same
    every step. Why: with a count that changed from step to step, every step's tensors had new
    sizes, glibc's heap kept what it could not reuse and faulted fresh pages in, and oneDNN
    compiled its GELU anew for each size (docs/design.md has the measurements). Stratified, the
    estimate of the loss also varies less from step to step.
    """
    n = min(n_columns, max(1, round(fraction * n_columns)))
    offsets = torch.rand(n, generator=generator, dtype=torch.float64)
    starts = torch.arange(n, dtype=torch.float64)
    # stratum i covers [i, i + 1) * n_columns / n: its position is floor((i + u) * n_columns / n)
    return ((starts + offsets) * (n_columns / n)).floor_().to(torch.int64).clamp_(max=n_columns - 1)


def fit_distortion(target: torch.Tensor, pixel_fraction: float) -> Distortion:
    """The MSE a compression fit minimises: over every pixel, or, with `pixel_fraction` < 1, as a
    `PixelMSE` so that each step synthesises and scores a fresh random part of the pixels. An image
    large enough to be fitted in bands of rows (`model.bands`) always gets a PixelMSE, which is
    what a fit in bands needs."""
    banded = fit_band_rows(target.shape[-2], target.shape[-1]) > 0
    return squared_error(target) if pixel_fraction >= 1.0 and not banded else PixelMSE.whole(target)
