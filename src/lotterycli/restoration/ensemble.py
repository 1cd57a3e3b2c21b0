"""Zero-shot restoration: fit the model through a degradation operator, K seeds, combined.

Each ensemble member is a full model with its own seed (its own random synthesis network, mask
scores and noise); members' errors are largely independent, so their mean is better than any one.

Screening: some seeds are bad tickets, and a bad ticket already shows in its training loss after a
tenth of the steps; with `candidates` > K the restorer starts that many members, ranks them by their
training loss after `screen_fraction` of the steps, and continues only the K best.

Members may fit the image in different orientations (`member_transforms`), and inpainting mixes
the classical biharmonic fill into the result (`classical_blend`); docs/design.md gives the
measured effect of each.

The candidates (`candidates`) are fitted one of two ways: as single models, on a CPU side by side
one per core (`side_by_side`), or on a GPU as member batches, one kernel launch serving them all
(`member_batches`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..compression.encoder import quantized_payload
from ..config import TaskConfig
from ..fitting.checkpoint import Checkpoint
from ..fitting.device import resolve_device, use_member_batch
from ..fitting.loop import FitResult, ProgressCallback
from ..fitting.memory import members_at_once
from ..model.payload import Payload
from .candidates import Candidates, loss_in_frame
from .member_batches import fit_member_batches
from .operators import Operator
from .side_by_side import default_workers, fit_side_by_side, member_threads


@dataclass
class RestoreResult:
    image: torch.Tensor  # float (3, H, W) in [0, 1]: the result (ensemble, mixed with the classical estimate)
    members: list[torch.Tensor]  # each member's render (observed pixels put back if keep_observed)
    fits: list[FitResult]
    seconds: float
    lam: float
    best_member: int  # index of the member with the lowest final loss
    payload: Payload | None = None  # the best member's model, when a bitstream was asked for
    seeds: list[int] = field(default_factory=list)  # each member's seed
    dropped_seeds: list[int] = field(default_factory=list)  # candidates screened out
    screen_losses: list[float] = field(default_factory=list)  # every candidate's screening loss (seed order)
    ensemble_image: torch.Tensor | None = None  # the members combined, before any classical blend
    classical_image: torch.Tensor | None = None  # the operator's classical estimate, when it was used


def combine(members: list[torch.Tensor], how: str = "mean") -> torch.Tensor:
    stack = torch.stack(members)
    return stack.median(dim=0).values if how == "median" else stack.mean(dim=0)


def blend_classical(ensemble: torch.Tensor, classical: torch.Tensor | None, weight: float) -> torch.Tensor:
    """(1 - weight) * ensemble + weight * classical, in [0, 1]; the ensemble alone without one.

    Why: for inpainting, the biharmonic fill is as good as the random-network ensemble on smooth
    images and worse on textured ones, and their errors are only partly alike (docs/design.md).
    """
    if classical is None or weight <= 0:
        return ensemble.clamp(0, 1)
    # lerp: ensemble + weight * (classical - ensemble), exact where the two agree (kept pixels)
    return torch.lerp(ensemble, classical.to(ensemble), weight).clamp(0, 1)


def restore_image(
    y: torch.Tensor,
    operator: Operator,
    cfg: TaskConfig,
    *,
    lam: float,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    on_member: Callable[[int, int], ProgressCallback | None] | None = None,
    bitstream: bool = False,
    workers: int | None = None,
    checkpoint: Checkpoint | None = None,
    resume: dict | None = None,
) -> RestoreResult:
    """Fit `cfg.restoration.ensemble` members to observation `y` (3, h, w) through `operator`.

    With `cfg.restoration.candidates` > `cfg.restoration.ensemble`, that many candidates (seeds seed .. seed + C - 1) run
    the first `cfg.restoration.screen_fraction` of the steps; the `cfg.restoration.ensemble` with the lowest recent training
    loss (ties: lower seed) continue to the end, the others are dropped.
    `on_member(k, C)` is called as candidate k starts; it may return a progress callback for it
    (used instead of `progress`, so concurrent members can show separate bars).
    With `cfg.restoration.member_transforms`, candidate k fits the image seen in frame k mod 8 of the square's
    symmetries (`model.frames.dihedral`; frame 0 = as given) and its render is mapped back.
    `bitstream`: also quantize the best member into `result.payload` (its file records its frame).
    With `cfg.restoration.member_batch` ("auto": on a GPU; `use_member_batch`) the candidates are
    fitted as member batches, one per frame shape (`model.members`, `fitting.batched`), screened
    and kept the same way; each member's result is that of its own fit within float noise.
    `workers`: otherwise, fits run concurrently in threads (default: `default_workers`). Candidate k always
    uses seed + k and its own noise generator, so concurrent fits compute exactly what they
    would one after another on one thread (float sums may differ in the last bit with more threads).
    `checkpoint`: saves each candidate's fit now and then (part "member K"), the screening's
    outcome ("screen") and each member's state when its fit ends. `resume`: such parts from an
    earlier run of this observation and config; the members go on from them, screening is not run
    again once decided, and the result is the one an uninterrupted run gives.
    """
    start = time.perf_counter()
    settings = cfg.restoration
    if settings is None:
        raise ValueError(f"{cfg.task} is not a restoration task")
    dev = resolve_device(device)
    operator.check_observation(tuple(y.shape))
    height, width = operator.output_shape(tuple(y.shape))
    count = max(settings.ensemble, settings.candidates)
    workers = default_workers(count, dev) if workers is None else max(1, min(int(workers), count))
    checkpointing = (checkpoint is not None and checkpoint.saving) or bool(resume)
    batched = use_member_batch(settings.member_batch, dev.type, count, checkpointing)
    if not batched:  # side by side only as many as the free memory holds (member batches size themselves)
        # a per-pixel loss (denoising, inpainting) lets a large image be fitted in bands of rows
        workers = members_at_once(height, width, dev, workers, banded=operator.loss_pixels(y) is not None)
    candidates = Candidates(y, operator, cfg, dev, progress=progress, on_member=on_member)
    schedule = cfg.schedule
    screen_until = max(1, int(round(settings.screen_fraction * schedule.steps)))
    classical = operator.classical_estimate(y) if settings.classical_blend > 0 else None
    with member_threads(1 if batched else workers, dev):
        if batched:
            screened = fit_member_batches(candidates, lam, schedule, screen_until)
        else:
            screened = fit_side_by_side(candidates, lam, schedule, screen_until, workers, checkpoint, resume)
        fits = [fit for _, fit in screened.outputs]
        best = min(range(len(fits)), key=lambda i: fits[i].best_loss)
        payload = None
        if bitstream:  # on the same thread count as the member's fit
            k = screened.kept[best]
            frame = candidates.frames[k]
            payload = quantized_payload(candidates.models[k], loss_in_frame(operator, frame, y.cpu()), lam,
                                        schedule, cfg.seed + k)
            payload.frame, payload.restoration = frame, True
    members = [image for image, _ in screened.outputs]
    ensemble = combine(members, settings.combine).clamp(0, 1)
    return RestoreResult(
        image=blend_classical(ensemble, classical, settings.classical_blend),
        ensemble_image=ensemble,
        classical_image=classical.cpu() if classical is not None else None,
        members=members,
        fits=fits,
        seconds=time.perf_counter() - start,
        lam=lam,
        best_member=best,
        payload=payload,
        seeds=[cfg.seed + k for k in screened.kept],
        dropped_seeds=[cfg.seed + k for k in range(count) if k not in screened.kept],
        screen_losses=screened.screen_losses,
    )
