"""Experiment: fitting steps per second at 256x256 with the compression architecture's ARM at
16 and at 8 hidden channels, in alternating rounds.

    python -m benchmarks.arm_width_speed [--threads 1] [--rounds 3]

Whole renders, the rate on a second thread where `lottery compress` would use it
(`benchmarks.profile_step.measure_step_rate`). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
from dataclasses import replace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import torch

    from benchmarks.profile_step import measure_step_rate
    from lotterycli.config import load_task_config

    torch.set_num_threads(args.threads)
    arch = load_task_config("compress").architecture
    rates: dict[int, list[float]] = {16: [], 8: []}
    for _ in range(args.rounds):
        for width, seen in rates.items():
            seen.append(measure_step_rate(256, 256, steps=40, arch=replace(arch, arm_hidden=width)))
    for width, seen in rates.items():
        print(f"{args.threads} thread(s), ARM {width} wide: steps/s " + " ".join(f"{r:.2f}" for r in seen))


if __name__ == "__main__":
    main()
