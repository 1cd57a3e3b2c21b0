"""Probe: a compression step split into two halves side by side (`Fitter._halves_step`) against
the plain step and the rate on a second thread, and the halves' extra work on one thread.

    python -m benchmarks.halves_probe [--size 256x256] [--steps 20]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import Future
from dataclasses import replace

import torch

from lotterycli.config import load_task_config
from lotterycli.fitting.loop import Fitter
from lotterycli.fitting.losses import fit_distortion
from lotterycli.model.lottery_model import LotteryModel


class _Inline:
    """An executor that runs what it is given at once (the halves one after the other)."""

    def submit(self, fn, *args):
        f = Future()
        f.set_result(fn(*args))
        return f


def ms_per_step(kind: str, height: int, width: int, steps: int) -> float:
    cfg = load_task_config("compress")
    target = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    model = LotteryModel(height, width, cfg.architecture, seed=0, mask_ratio=0.3)
    schedule = replace(cfg.schedule, steps=1000, hard_fraction=0.0)
    fitter = Fitter(model, fit_distortion(target, 0.5), 1e-3, schedule, rate_thread=kind in ("split", "halves"))
    if kind == "split":
        fitter._halves_step = fitter._split_step
    if kind == "halves, one thread":
        fitter._plain_step = lambda *a: fitter._halves_step(_Inline(), *a)
    fitter.advance(3)
    start = time.perf_counter()
    fitter.advance(3 + steps)
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="256x256")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    runs = {(2, "plain"): [], (2, "split"): [], (2, "halves"): [], (1, "plain"): [], (1, "halves, one thread"): []}
    for _ in range(3):  # alternating rounds
        for (threads, kind), times in runs.items():
            torch.set_num_threads(threads)
            times.append(ms_per_step(kind, height, width, args.steps))
    for (threads, kind), times in runs.items():
        print(f"{threads} thread(s) {kind:20s} ms/step: " + " ".join(f"{t:.1f}" for t in times))


if __name__ == "__main__":
    main()
