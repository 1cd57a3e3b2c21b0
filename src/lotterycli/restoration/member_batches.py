"""Restoration candidates fitted as member batches: the way members run on a GPU.

A GPU step is launch-bound, so B members held as one model (`model.members`, fitted by
`fitting.batched`) cost about one member's kernel launches. Candidates are grouped by frame shape
(a transposed frame of a non-square image has another) and each group is split to what the
device's memory holds. Each member's result is that of its own fit within float noise
(docs/design.md says why not bit for bit).
"""

from __future__ import annotations

from ..fitting.batched import BatchedFitter, batch_capacity
from ..fitting.schedule import Schedule
from ..model.members import MemberBatch
from .candidates import Candidates, Screened, rank


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
