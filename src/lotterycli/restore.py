"""Zero-shot restoration: fit the codec through a degradation operator, K seeds, combined.

Each ensemble member is a full model with its own seed (its own random synthesis network, mask
scores and noise); members' errors are largely independent, so their mean is better than any one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .codec.architecture import Architecture
from .codec.model import LotteryModel
from .codec.params import Payload
from .compress import quantize_networks, resolve_device
from .config import TaskConfig
from .fit import FitResult, ProgressCallback, fit
from .operators import Operator


@dataclass
class RestoreResult:
    image: torch.Tensor  # float (3, H, W) in [0, 1]: the combined estimate
    members: list[torch.Tensor]  # each member's render
    fits: list[FitResult]
    seconds: float
    lam: float
    best_member: int  # index of the member with the lowest final loss
    payloads: list[Payload] = field(default_factory=list)  # when bitstreams were asked for


def combine(members: list[torch.Tensor], how: str = "mean") -> torch.Tensor:
    stack = torch.stack(members)
    return stack.median(dim=0).values if how == "median" else stack.mean(dim=0)


def restore_image(
    y: torch.Tensor,
    operator: Operator,
    cfg: TaskConfig,
    *,
    lam: float,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    on_member=None,
    keep_payloads: bool = False,
    arch: Architecture | None = None,
) -> RestoreResult:
    """Fit `cfg.ensemble` members to observation `y` (3, h, w) through `operator`.

    `on_member(k, K)` is called before each member starts (for progress displays).
    """
    start = time.perf_counter()
    dev = resolve_device(device)
    operator.check_observation(tuple(y.shape))
    height, width = operator.output_shape(tuple(y.shape))
    y_dev = y.to(dev)
    members, fits, payloads = [], [], []
    for k in range(cfg.ensemble):
        if on_member is not None:
            on_member(k, cfg.ensemble)
        seed = cfg.seed + k
        torch.manual_seed(seed)
        model = LotteryModel(height, width, arch or cfg.architecture, seed, cfg.mask_ratio).to(dev)

        def distortion(image, _y=y_dev):
            return operator.loss(image, _y)

        result = fit(model, distortion, lam, cfg.fitted_schedule(), progress)
        fits.append(result)
        if result.average_render is not None:
            image = result.average_render
        else:
            with torch.no_grad():
                image, _ = model("hard")
        members.append(image.detach().clamp(0, 1).cpu())
        if keep_payloads:
            model = model.cpu()
            y_cpu = y.cpu()
            modules = quantize_networks(model, lambda im: operator.loss(im, y_cpu), lam)
            payloads.append(model.to_payload(modules))
    best = min(range(len(fits)), key=lambda i: fits[i].best_loss)
    return RestoreResult(
        image=combine(members, cfg.combine).clamp(0, 1),
        members=members,
        fits=fits,
        seconds=time.perf_counter() - start,
        lam=lam,
        best_member=best,
        payloads=payloads,
    )
