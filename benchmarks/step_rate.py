"""Fitting steps per second (`lotterycli.fit.measure_step_rate`, whole renders) of a source tree.

    python benchmarks/step_rate.py [--src TREE] [--size 256x256] [--threads 2] [--steps 40] [--repeats 2]

`--src` is the root of a lotterycli checkout (e.g. a `git archive` of an older commit) whose
`src/` is imported instead of the installed package, so two commits can be compared in one
sitting by alternating runs. Run it on a quiet machine. docs/tuning.md (session 8) quotes it.
"""
import argparse
import sys
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--size", default="256x256", help="WIDTHxHEIGHT")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    sys.path.insert(0, str(args.src.resolve() / "src"))
    import torch

    import lotterycli
    from lotterycli.fit import measure_step_rate

    width, height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    rates = [measure_step_rate(height, width, steps=args.steps) for _ in range(args.repeats)]
    print(f"{Path(lotterycli.__file__).parents[2]}: {args.size}, {args.threads} thread(s): "
          + ", ".join(f"{r:.2f}" for r in rates) + " steps/s")


if __name__ == "__main__":
    main()
