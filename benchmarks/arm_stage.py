"""Time of the ARM stage after a fit (the ARM refit and the narrower ARMs fitted from scratch) on
the latents of real files: over every latent, and over their distinct (context, value) pairs.

    python -m benchmarks.arm_stage FILE.lottery [FILE.lottery ...] [--threads 2] [--rounds 2]

For each file: its latents, how many distinct pairs they hold, then the seconds of
`refit_arm` (the schedule's steps, from the file's own ARM) and of `scratch_arm` at each of the
schedule's narrower widths, given every latent once (count 1 each) and given the distinct pairs
weighted by their counts (what `compression.encoder` does), in alternating rounds; and the refit
objective (bits) each way, which should agree up to float summation order.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from lotterycli.bitstream.container import decode_file
from lotterycli.compression.arm_refit import latent_pairs, refit_arm, scratch_arm
from lotterycli.config import load_task_config
from lotterycli.model.arm import Arm
from lotterycli.model.lottery_model import model_from_payload


def every_latent(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every latent's context and value, each counted once (the stage before distinct pairs)."""
    latents = [q.to(torch.float32) for q in model.latents.quantized()]
    contexts, values = Arm.fixed_contexts(latents, model.arch.arm_band_rows)
    return contexts, values, torch.ones_like(values)


def stage_seconds(model, pairs, schedule) -> tuple[float, float]:
    """(seconds, refit objective) of the refit and the narrower ARMs on a copy of `model`."""
    model = copy.deepcopy(model)
    start = time.perf_counter()
    bits = refit_arm(model, schedule.arm_refit_steps, schedule.arm_refit_lr, pairs=pairs)
    for width in schedule.arm_scratch_widths:
        scratch_arm(model, width, schedule.arm_scratch_steps, schedule.arm_scratch_lr, 0, pairs=pairs)
    return time.perf_counter() - start, bits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    schedule = load_task_config("compress").schedule
    print(f"{args.threads} thread(s); refit {schedule.arm_refit_steps} steps, widths {schedule.arm_scratch_widths} "
          f"{schedule.arm_scratch_steps} steps each")
    for path in args.files:
        model = model_from_payload(decode_file(open(path, "rb").read()))
        start = time.perf_counter()
        distinct = latent_pairs(model)
        found = time.perf_counter() - start
        every = every_latent(model)
        runs: dict[str, list[tuple[float, float]]] = {"every latent": [], "distinct pairs": []}
        for _ in range(args.rounds):
            runs["every latent"].append(stage_seconds(model, every, schedule))
            runs["distinct pairs"].append(stage_seconds(model, distinct, schedule))
        print(f"{path}: {every[1].numel():,} latents, {distinct[1].numel():,} distinct pairs (found in {found:.2f} s)")
        for name, results in runs.items():
            seconds = " ".join(f"{s:.1f}" for s, _ in results)
            print(f"  {name:15s} seconds {seconds}   refit objective {results[0][1]:.1f} bits")


if __name__ == "__main__":
    main()
