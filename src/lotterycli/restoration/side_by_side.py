"""Restoration candidates fitted as single models: side by side on a CPU's cores, one after the
other on a GPU without member batches, and whenever checkpoints are saved or resumed.

Candidate k always uses its own seed and noise generator, so concurrent fits compute exactly what
they would one after another on one thread (float sums may differ in the last bit with more
threads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from ..fitting.checkpoint import Checkpoint
from ..fitting.loop import FitResult, Fitter
from ..fitting.schedule import Schedule
from .candidates import Candidates, Screened, rank

T = TypeVar("T")


def default_workers(ensemble: int, device: torch.device) -> int:
    """Members fitted at once when they are not a member batch: on a CPU one per core (up to K),
    each on one torch thread.

    Why: at 256x256, two single-thread fits side by side make more steps per second in all than
    one fit on two threads. On a GPU (without the batch) members run one after the other: in
    threads on their own CUDA streams they were only 4 % faster, the Python launch overhead being
    shared (docs/gpu.md).
    """
    if device.type != "cpu" or ensemble < 2:
        return 1
    return max(1, min(ensemble, torch.get_num_threads()))


@contextlib.contextmanager
def member_threads(workers: int, device: torch.device) -> Iterator[None]:
    """With members side by side on a CPU, one torch thread per member for the duration
    (process-wide: each member's operations run on its own worker thread)."""
    before = torch.get_num_threads()
    if workers > 1 and device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _member_stream(device: torch.device, workers: int) -> Iterator[None]:
    """On a GPU with concurrent members, give each member its own CUDA stream so their many small
    kernels can overlap; elsewhere a no-op."""
    if device.type != "cuda" or workers < 2:
        yield
        return
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        yield
    stream.synchronize()


def fit_side_by_side(candidates: Candidates, lam: float, schedule: Schedule, screen_until: int, workers: int,
                     checkpoint: Checkpoint | None = None, resume: dict | None = None) -> Screened:
    """Fit each candidate as its own `Fitter`, `workers` at a time (in threads), screened after
    `screen_until` steps when there are more candidates than members.

    `checkpoint`: saves each candidate's fit now and then (part "member K"), the screening's
    outcome ("screen") and each member's state when its fit ends. `resume`: such parts from an
    earlier run; the members go on from them and screening is not run again once decided.
    """
    resume = resume or {}
    fitters: list[Fitter | None] = [None] * candidates.count

    def start_fit(k: int) -> Fitter:
        hook = checkpoint.hook(f"member {k}") if checkpoint is not None else None
        fitters[k] = Fitter(candidates.models[k], candidates.distortion(k), lam, schedule,
                            candidates.progress(k), checkpoint=hook)
        if f"member {k}" in resume:
            fitters[k].load_state_dict(resume[f"member {k}"])
        return fitters[k]

    def screen_candidate(k: int) -> float:
        fitter = start_fit(k)
        with _member_stream(candidates.device, workers):
            fitter.advance(screen_until)
        return fitter.recent_loss()

    def finish_member(k: int) -> tuple[torch.Tensor, FitResult]:
        if fitters[k] is None:  # no screening: the member starts here
            start_fit(k)
        with _member_stream(candidates.device, workers):
            if checkpoint is not None and checkpoint.saving:  # a finished member is kept whole: a resumed run only renders it
                fitters[k].advance()
                checkpoint.put(f"member {k}", fitters[k].state_dict())
                checkpoint.save(only_if_due=True)
            result = fitters[k].finish()
        fitters[k] = None
        return candidates.image(k, result), result

    def run_all(fn: Callable[[int], T], items: list[int]) -> list[T]:
        if workers == 1:
            return [fn(k) for k in items]
        with ThreadPoolExecutor(max_workers=min(workers, len(items)), initializer=torch.set_num_threads,
                                initargs=(1,)) as pool:
            return list(pool.map(fn, items))

    losses: list[float] = []
    kept = list(range(candidates.ensemble))
    if candidates.count > candidates.ensemble and "screen" in resume:  # decided before the run stopped
        losses, kept = list(resume["screen"]["losses"]), list(resume["screen"]["kept"])
    elif candidates.count > candidates.ensemble:
        losses = run_all(screen_candidate, list(range(candidates.count)))
        kept = rank(losses, candidates.ensemble)
        if checkpoint is not None:
            checkpoint.put("screen", {"losses": losses, "kept": kept})
        for k in range(candidates.count):
            if k not in kept:
                fitters[k].drop()
                fitters[k] = None
                if checkpoint is not None:
                    checkpoint.drop(f"member {k}")
    candidates.drop_all_but(kept)
    return Screened(losses, kept, run_all(finish_member, kept))
