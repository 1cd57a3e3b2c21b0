"""Two protocol runs' lottery points side by side: per point and per lambda, cost and BD-rate.

    python -m benchmarks.compare_runs NEW.json OLD.json

For each (image, lambda) that both runs have: bytes, PSNR and the cost J = MSE + lambda * bpp of
each (the fitting objective, on the real file and decoded pixels), then the change of J from OLD
to NEW, its mean per lambda, NEW's bits at equal PSNR against OLD's per image (the BD-rate of
NEW's curve against OLD's), and the BD-rate of each run's lottery curve against NEW's codec
anchors (JPEG, WebP, AVIF) over the images both runs cover.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from .bdrate import bd_rate
from .compress_suite import bd_table, rd_curves


def lottery_points(path: Path) -> tuple[dict[tuple[str, str], dict], list[dict]]:
    """({(image, setting): lottery point}, codec anchor points) of a results JSON."""
    points = json.loads(Path(path).read_text())["parts"]["compress"]["points"]
    lottery = {(p["image"], p["setting"]): p for p in points if p["method"] == "lottery"}
    return lottery, [p for p in points if p["method"] != "lottery"]



def cost(point: dict) -> float:
    """J = MSE + lambda * bpp, with MSE from the PSNR of the decoded 8-bit image."""
    return 10 ** (-point["psnr"] / 10) + point["lam"] * point["bpp"]



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("new", type=Path)
    p.add_argument("old", type=Path)
    args = p.parse_args()
    new, anchors = lottery_points(args.new)
    old, _ = lottery_points(args.old)
    common = sorted(set(new) & set(old), key=lambda k: (float(k[1][4:]), k[0]))
    if not common:
        sys.exit("no (image, lambda) point in both runs")
    by_lam = defaultdict(list)
    print("image    lambda   old bytes / dB / J (x1e4)     new bytes / dB / J (x1e4)    J change")
    for key in common:
        a, b = old[key], new[key]
        change = cost(b) / cost(a) - 1
        by_lam[key[1]].append(change)
        print(f"{key[0]}  {key[1][4:]:>7}  {a['n_bytes']:6d} / {a['psnr']:.2f} / {1e4 * cost(a):7.3f}"
              f"    {b['n_bytes']:6d} / {b['psnr']:.2f} / {1e4 * cost(b):7.3f}    {100 * change:+6.2f} %")
    for lam, changes in sorted(by_lam.items(), key=lambda kv: float(kv[0][4:])):
        print(f"lambda {lam[4:]}: mean J change {100 * sum(changes) / len(changes):+.2f} % over {len(changes)} images "
              f"(min {100 * min(changes):+.2f}, max {100 * max(changes):+.2f})")
    lams = sorted(by_lam)
    images = sorted({img for img, _ in common if all((img, lam) in old and (img, lam) in new for lam in lams)})
    per_image = {}
    for img in images:
        a = sorted((old[(img, lam)] for lam in lams), key=lambda q: q["bpp"])
        b = sorted((new[(img, lam)] for lam in lams), key=lambda q: q["bpp"])
        per_image[img] = bd_rate([q["bpp"] for q in a], [q["psnr"] for q in a],
                                 [q["bpp"] for q in b], [q["psnr"] for q in b])
    known = [v for v in per_image.values() if v is not None]
    print("bits at equal PSNR, new vs old, per image: "
          + ", ".join(f"{img} {'-' if v is None else f'{v:+.1f} %'}" for img, v in per_image.items())
          + (f"; mean {sum(known) / len(known):+.1f} %" if known else ""))
    base = [q for q in anchors if q["image"] in images]
    for label, run in (("old", old), ("new", new)):
        pts = base + [q for (img, lam), q in run.items() if img in images and lam in lams]
        table = bd_table(pts, rd_curves(pts))
        bds = ", ".join(f"{t['anchor']} {t['bd_rate_percent']:+.1f} %" for t in table
                        if t["bd_rate_percent"] is not None)
        print(f"{label}: BD-rate over {len(images)} images vs {bds or '-'}")


if __name__ == "__main__":
    main()
