"""BD-rates of `arm_refit_study.py` points against the codec anchors of a protocol run.

    python benchmarks/refit_bd.py STUDY.jsonl [--protocol benchmarks/results/full.json]

The study fits each (crop, lambda) once and writes the file with and without the ARM refit, so
its refit-0 points should be the protocol's own lottery points (same code path, seed and steps;
this prints both to check), and each refit setting gives a new lottery curve on the same fits.
Prints, per refit setting, the BD-rate against every anchor of the protocol (mean curves over the
images that have every lambda in that setting), and the same-fit change in bytes.
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.runner import _bd_table, _curves  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study")
    p.add_argument("--protocol", default="benchmarks/results/full.json")
    args = p.parse_args()
    protocol = json.loads(Path(args.protocol).read_text())["parts"]["compress"]["points"]
    rows = [json.loads(line) for line in Path(args.study).read_text().splitlines() if line.strip()]
    by_setting: dict[str, dict[tuple[str, str], dict]] = defaultdict(dict)
    for r in rows:
        setting = f"refit {r['refit_steps']}" + (f" lr {r['refit_lr']:g}" if r["refit_steps"] else "")
        by_setting[setting][(f"kodim{r['img']:02d}", f"lam={r['lam']:g}")] = r
    lams = sorted({k[1] for s in by_setting.values() for k in s})

    def complete(pts: dict) -> list[str]:
        return sorted({img for img, _ in pts if all((img, lam) in pts for lam in lams)})

    print(f"lambdas: {', '.join(lams)}")
    ref = {(q["image"], q["setting"]): q for q in protocol if q["method"] == "lottery"}
    base = by_setting.get("refit 0", {})
    for key in sorted(base):
        if key in ref:
            print(f"  {key[0]} {key[1]}: study {base[key]['bytes']} B / {base[key]['psnr']:.2f} dB, "
                  f"protocol {ref[key]['n_bytes']} B / {ref[key]['psnr']:.2f} dB")
    for setting, pts in by_setting.items():
        images = complete(pts)
        anchors = [q for q in protocol if q["method"] != "lottery" and q["image"] in images]
        points = anchors + [dict(method="lottery", image=img, setting=lam, bpp=r["bpp"], psnr=r["psnr"])
                            for (img, lam), r in pts.items() if img in images]
        table = _bd_table(points, _curves(points))
        bds = ", ".join(f"{t['anchor']} {t['bd_rate_percent']:+.1f} %" for t in table if t["bd_rate_percent"] is not None)
        line = f"{setting}: images with every lambda: {', '.join(images) or 'none'}; BD-rate vs {bds or '-'}"
        if setting != "refit 0" and base:
            change = [pts[k]["bytes"] / base[k]["bytes"] - 1 for k in pts if k in base]
            line += f"; bytes vs refit 0: mean {100 * sum(change) / len(change):+.2f} % (min {100 * min(change):+.2f}, max {100 * max(change):+.2f}) over {len(change)} fits"
        print(line)


if __name__ == "__main__":
    main()
