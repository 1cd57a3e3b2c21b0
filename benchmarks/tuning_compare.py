"""Tuning fits against other fits of the same file: each change against its control, or each step count
against the longest fit.

    python benchmarks/tuning_compare.py RESULTS.jsonl                    # against the control lines
    python benchmarks/tuning_compare.py RESULTS.jsonl --against longest  # convergence: J by steps

RESULTS.jsonl holds the lines `tune_compress.py` writes. J = MSE + lambda * bpp (the fitting
objective) is computed from each line's real file size and decoded PSNR.

`--against control` (default): each line is compared with the line of the same crop, lambda and
step count that changed nothing (no schedule override), run in the same sitting on the same
machine, so the machine's own float results are the reference (fits are not bit-identical across
CPUs). Then the mean change per change tried.

`--against longest`: lines of the same crop, lambda and change are compared with the one with the
most steps: how much of the longest fit's J each shorter budget reaches, and in what time (the
`s` field: seconds of the whole `compress_image` call on one thread). Then the mean per step count.
docs/tuning.md (session 16) quotes both.
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.compare_runs import cost  # noqa: E402
from benchmarks.tuning_vs_protocol import change_label  # noqa: E402


def read_lines(path: Path) -> list[dict]:
    return [json.loads(t) for t in Path(path).read_text().splitlines() if t.strip()]


def _j(line: dict) -> float:
    return cost(dict(lam=float(line["lam"]), bpp=float(line["bpp"]), psnr=float(line["psnr"])))


def _point(line: dict) -> str:
    return f"kodim{int(line['img']):02d} lam={float(line['lam']):g}"


def against_control(lines: list[dict]) -> list[str]:
    """Report lines: each changed fit beside the control of its crop, lambda and steps."""
    controls = {(l["img"], l["lam"], l["steps"]): l for l in lines if not l.get("sched")}
    out, by_change = [], defaultdict(list)
    for line in lines:
        if not line.get("sched"):
            continue
        ref = controls.get((line["img"], line["lam"], line["steps"]))
        label = change_label(line)
        if ref is None:
            out.append(f"{_point(line)} {label}: no control line at {line['steps']} steps")
            continue
        delta = 100 * (_j(line) / _j(ref) - 1)
        by_change[label].append(delta)
        out.append(f"{_point(line):20s} {label:36s} {line['bpp']:.4f} bpp {line['psnr']:.2f} dB {line['s']:6.1f} s | "
                   f"control {ref['bpp']:.4f} bpp {ref['psnr']:.2f} dB {ref['s']:6.1f} s | J {delta:+.2f} %")
    for label, deltas in by_change.items():
        better = sum(d < 0 for d in deltas)
        out.append(f"mean {label}: J {sum(deltas) / len(deltas):+.2f} % over {len(deltas)} points ({better} better)")
    return out


def against_longest(lines: list[dict]) -> list[str]:
    """Report lines: each fit's J against the longest fit of its crop, lambda and change."""
    groups = defaultdict(list)
    for line in lines:
        groups[(line["img"], line["lam"], change_label(line))].append(line)
    out, by_steps, secs = [], defaultdict(list), defaultdict(list)
    for (_, _, label), group in groups.items():
        group.sort(key=lambda l: l["steps"])
        ref = group[-1]
        for line in group:
            delta = 100 * (_j(line) / _j(ref) - 1)
            by_steps[line["steps"]].append(delta)
            secs[line["steps"]].append(float(line["s"]))
            out.append(f"{_point(line):20s} {label:24s} {line['steps']:6d} steps {line['bpp']:.4f} bpp "
                       f"{line['psnr']:.2f} dB {line['s']:7.1f} s | J {delta:+.2f} % vs {ref['steps']} steps")
    for steps in sorted(by_steps):
        d, s = by_steps[steps], secs[steps]
        out.append(f"mean {steps:6d} steps: J {sum(d) / len(d):+.2f} % vs the longest, "
                   f"{sum(s) / len(s):.1f} s per fit, over {len(d)} fits")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path)
    p.add_argument("--against", choices=("control", "longest"), default="control")
    args = p.parse_args()
    lines = read_lines(args.results)
    print("\n".join(against_control(lines) if args.against == "control" else against_longest(lines)))


if __name__ == "__main__":
    main()
