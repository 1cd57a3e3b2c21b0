"""Restoration candidates fitted as member batches: the way members run on a GPU.

A GPU step is launch-bound, so B members held as one model (`model.members`, fitted by
`fitting.batched`) cost about one member's kernel launches. Candidates are grouped by frame shape
(a transposed frame of a non-square image has another) and each group is split to what the
device's memory holds. Each member's result is that of its own fit within float noise
(docs/design.md says why not bit for bit).
"""

from __future__ import annotations

import torch

from ..fitting.batched import BatchedFitter
from ..fitting.memory import members_at_once
from ..fitting.schedule import Schedule
from ..model.members import MemberBatch
from .candidates import Candidates, Screened, rank


def use_member_batch(setting: str, device: torch.device, n_candidates: int, checkpointing: bool) -> bool:
    """Whether the members are fitted as one batched model (`model.members`).

    "auto": on a GPU, where a step is launch-bound and B members batched cost about one
    member's launches; not on a CPU, where a batched product costs more per member than one fit
    per core (docs/design.md). Never with one member, nor when checkpoints are saved or resumed
    (the batched loop keeps none): the members are then fitted one by one as usual.
    """
    if n_candidates < 2 or checkpointing or setting == "never":
        return False
    return setting == "always" or device.type == "cuda"


# A batched member's fitting step on a GPU, bytes per pixel: a cautious guess (a single CPU fit at
# 768x512 peaks at 2,086 MB RSS, torch included: docs/benchmarks.md, "Engine"; the batch's autograd
# keeps more), to be replaced by what `benchmarks.gpu_check` measures (`member_batch_cuda`: peak
# bytes per member-pixel).
MEMBER_BYTES_PER_PIXEL = 16 * 1024


def batch_capacity(device: torch.device, height: int, width: int) -> int:
    """How many members one batch may hold, so that a batch that would not fit is split instead of
    failing: on a GPU what its free memory holds at MEMBER_BYTES_PER_PIXEL (at least one); on a
    CPU what the free memory holds by `fitting.memory` (LotteryError if not one member)."""
    n_pixels = height * width
    if device.type == "cpu":
        return members_at_once(height, width, device, 1 << 30)
    if device.type != "cuda":
        return 1 << 30
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(free // (MEMBER_BYTES_PER_PIXEL * max(1, n_pixels))))


def fit_member_batches(candidates: Candidates, lam: float, schedule: Schedule, screen_until: int) -> Screened:
    """Every candidate in member batches, screened after `screen_until` steps when there are more
    candidates than members (as one-by-one fits are screened); each kept member's best state is
    written back into its own model."""
    shapes: dict[tuple[int, int], list[int]] = {}
    for k in range(candidates.count):
        shapes.setdefault(candidates.frame_shape(k), []).append(k)
    size = batch_capacity(candidates.device, candidates.height, candidates.width)
    groups = []
    for members in shapes.values():
        for i in range(0, len(members), size):
            ks = members[i: i + size]
            progress = [candidates.progress(k) for k in ks]
            distortions = [candidates.distortion(k) for k in ks]
            batch = MemberBatch([candidates.models[k] for k in ks])
            groups.append((ks, batch, BatchedFitter(batch, distortions, lam, schedule, progress)))
    losses: list[float] = []
    kept = list(range(candidates.ensemble))
    if candidates.count > candidates.ensemble:
        by_candidate: dict[int, float] = {}
        for ks, _, fitter in groups:
            fitter.advance(screen_until)
            by_candidate.update(zip(ks, fitter.recent_loss()))
        losses = [by_candidate[k] for k in range(candidates.count)]
        kept = rank(losses, candidates.ensemble)
        for i, (ks, batch, fitter) in enumerate(groups):
            stay = [pos for pos, k in enumerate(ks) if k in kept]
            fitter.keep(stay)
            groups[i] = ([ks[pos] for pos in stay], batch, fitter)
    finished = {}
    for ks, batch, fitter in groups:
        if not ks:
            continue
        for pos, (k, result) in enumerate(zip(ks, fitter.finish())):
            batch.write_member(pos, candidates.models[k])  # the best state, into the member's own model
            finished[k] = (candidates.image(k, result), result)
    candidates.drop_all_but(kept)
    return Screened(losses, kept, [finished[k] for k in kept])
