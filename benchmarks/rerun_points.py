"""Re-run some lottery points of a compression results file with the current code and recompute BD-rates.

    PYTHONPATH=. python benchmarks/rerun_points.py benchmarks/results/full.json kodim02:0.016 kodim04:0.016 \\
        > benchmarks/results/full-rerun.json

Used after the best-state change (docs/tuning.md, "Instability at high lambda") for the two points
of the protocol run that showed the failure. Prints JSON: the new points, and the BD-rate table
with them substituted (the other points unchanged, from the older code: say so where quoted).
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.data import center_crop, load_image  # noqa: E402
from benchmarks.runner import _bd_table, _curves  # noqa: E402
from lotterycli import api  # noqa: E402


def main(results: str, specs: list[str]) -> None:
    torch.set_num_threads(1)
    d = json.loads(Path(results).read_text())
    part = d["parts"]["compress"]
    points = [dict(p) for p in part["points"]]
    new = []
    for spec in specs:
        name, lam = spec.split(":")
        x = center_crop(load_image(name), part["crop"])
        t0 = time.perf_counter()
        res = api.compress(x, preset="balanced", lam=float(lam), seed=0, device="cpu")
        row = {"image": name, "setting": f"lam={lam}", "bpp": res.bpp, "psnr": res.psnr,
               "seconds": time.perf_counter() - t0}
        new.append(row)
        for p in points:
            if p["method"] == "lottery" and p["image"] == name and p["setting"] == f"lam={lam}":
                p.update(bpp=res.bpp, psnr=res.psnr)
    print(json.dumps({"source": results, "rerun": new, "bd_rate": _bd_table(points, _curves(points))}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
