"""Tuning fits against a protocol run's lottery points at the same crop and lambda.

    python benchmarks/tuning_vs_protocol.py RESULTS.jsonl [--protocol benchmarks/results/full.json]

RESULTS.jsonl holds the lines `tune_compress.py` writes (crop index, lambda, the schedule
change, bpp of the real file, PSNR of its decoded pixels). Each line is printed beside
the protocol's point for the same crop and lambda, with the change of J = MSE + lambda * bpp (the
fitting objective), then the mean change per change tried. A line with no change is a control: it
should match the protocol when both ran the same code at the same step count. docs/tuning.md
(session 15) quotes it.
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.compare_runs import cost, lottery_points  # noqa: E402


def change_label(line: dict) -> str:
    """What a tuning line changed: its schedule overrides (its architecture is always the full one, so it
    is not part of the label)."""
    parts = [f"{k}={v}" for k, v in sorted(line.get("sched", {}).items())]
    return ", ".join(parts) or "(control)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path)
    p.add_argument("--protocol", type=Path, default=Path("benchmarks/results/full.json"))
    args = p.parse_args()

    protocol, _ = lottery_points(args.protocol)
    by_change: dict[str, list[float]] = defaultdict(list)
    for text in args.results.read_text().splitlines():
        if not text.strip():
            continue
        line = json.loads(text)
        image, setting = f"kodim{int(line['img']):02d}", f"lam={float(line['lam']):g}"
        ref = protocol.get((image, setting))
        if ref is None:
            print(f"{image} {setting}: not in {args.protocol}")
            continue
        mine = dict(lam=float(line["lam"]), bpp=float(line["bpp"]), psnr=float(line["psnr"]))
        delta = 100 * (cost(mine) / cost(ref) - 1)
        label = change_label(line)
        by_change[label].append(delta)
        print(f"{image} {setting:10s} {label:28s} {mine['bpp']:.4f} bpp {mine['psnr']:.2f} dB | protocol "
              f"{ref['bpp']:.4f} bpp {ref['psnr']:.2f} dB | J {delta:+.2f} %")
    for label, deltas in by_change.items():
        print(f"mean {label}: J {sum(deltas) / len(deltas):+.2f} % over {len(deltas)} points")


if __name__ == "__main__":
    main()
