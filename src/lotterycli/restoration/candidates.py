"""The candidate members of one restoration: each one's model, frame, loss and result image.

Candidate k has seed `cfg.seed + k`, its own random synthesis network, and (with
`member_transforms`) fits the image in frame k mod 8 of the square's symmetries: the seeded
network, the latent grids and the ARM's causal order then meet the image in another orientation,
which makes the members' errors less alike. Both ways of fitting them (`side_by_side`,
`member_batches`) take their models, losses and images from here, so they fit the same problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import TaskConfig
from ..fitting.loop import FitResult, ProgressCallback
from ..fitting.losses import Distortion, PixelMSE
from ..model.frames import N_FRAMES, dihedral, frame_shape
from ..model.lottery_model import LotteryModel
from .operators import Operator


def loss_in_frame(operator: Operator, frame: int, target: torch.Tensor) -> Distortion:
    """operator.loss against `target` for a render made in `frame`."""
    if frame == 0:
        return lambda image: operator.loss(image, target)
    return lambda image: operator.loss(dihedral(image, frame, inverse=True), target)


def rank(losses: list[float], keep: int) -> list[int]:
    """The `keep` candidates with the lowest screening loss (ties: lower seed), in seed order."""
    return sorted(sorted(range(len(losses)), key=lambda k: (losses[k], k))[:keep])


@dataclass
class Screened:
    """What a way of fitting the candidates hands back."""

    screen_losses: list[float]  # every candidate's screening loss (empty without screening)
    kept: list[int]  # the candidates fitted to the end, in seed order
    outputs: list[tuple[torch.Tensor, FitResult]]  # each kept one's image and fit


class Candidates:
    """Candidates 0 .. count - 1 of a restoration of observation `y` through `operator`."""

    def __init__(self, y: torch.Tensor, operator: Operator, cfg: TaskConfig, device: torch.device, *,
                 progress: ProgressCallback | None = None,
                 on_member: Callable[[int, int], ProgressCallback | None] | None = None):
        settings = cfg.restoration
        assert settings is not None
        self.operator, self.device = operator, device
        self.keep_observed = settings.keep_observed
        self.ensemble = settings.ensemble
        self.count = max(settings.ensemble, settings.candidates)
        self.height, self.width = operator.output_shape(tuple(y.shape))
        self.y = y.to(device)
        self.frames = [k % N_FRAMES if settings.member_transforms else 0 for k in range(self.count)]
        self.models: list[LotteryModel | None] = []
        for k in range(self.count):  # built in order: initialisation draws from torch's global generator
            torch.manual_seed(cfg.seed + k)
            h_k, w_k = frame_shape(self.height, self.width, self.frames[k])
            self.models.append(LotteryModel(h_k, w_k, cfg.architecture, cfg.seed + k, cfg.mask_ratio).to(device))
        self._progress, self._on_member = progress, on_member
        # Where the loss is a per-pixel mean squared error (denoising, inpainting), members get it as
        # a PixelMSE: they synthesise only the pixels it reads, or a random part of them per step
        # (schedule.pixel_fraction).
        self._loss_map = operator.loss_pixels(self.y)

    def frame_shape(self, k: int) -> tuple[int, int]:
        return frame_shape(self.height, self.width, self.frames[k])

    def progress(self, k: int) -> ProgressCallback | None:
        """Candidate k's progress callback; `on_member(k, count)` is called as it starts."""
        own = self._on_member(k, self.count) if self._on_member is not None else None
        return own or self._progress

    def distortion(self, k: int) -> Distortion | PixelMSE:
        """What candidate k's fit minimises besides the rate."""
        if self._loss_map is None:
            return loss_in_frame(self.operator, self.frames[k], self.y)
        h, w = self._loss_map.shape
        original = dihedral(torch.arange(h * w, device=self.device).view(h, w), self.frames[k]).reshape(-1)
        pixels = torch.nonzero(self._loss_map.reshape(-1)[original]).squeeze(1)
        target = self.y.reshape(self.y.shape[0], -1).index_select(1, original[pixels])
        return PixelMSE(pixels, target, h * w)

    def image(self, k: int, result: FitResult) -> torch.Tensor:
        """Candidate k's result in the observation's frame, on the CPU: its averaged or its
        hard-rounded render, observed pixels put back with `keep_observed`."""
        if result.average_render is not None:
            image = result.average_render
        else:
            with torch.no_grad():
                image, _ = self.models[k]("hard")
        image = dihedral(image.detach(), self.frames[k], inverse=True).clamp(0, 1)
        if self.keep_observed:
            image = self.operator.keep_observed(image, self.y)
        return image.cpu()

    def drop_all_but(self, kept: list[int]) -> None:
        """Free the models of the candidates screened out."""
        for k in range(self.count):
            if k not in kept:
                self.models[k] = None
