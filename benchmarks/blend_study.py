"""How much of the classical estimate to mix into a restoration ensemble, from saved renders.

    python benchmarks/tune_restore.py JOBS out.jsonl 2     # job lines with "save": DIR
    python benchmarks/blend_study.py DIR [0.1 0.2 0.3 0.4 0.5]

For every saved inpainting job (kodimII-inpaint-50-*.pt) prints the PSNR of the ensemble (mean of
its members), of the classical estimate (biharmonic fill) and of (1 - w) * ensemble + w * fill for
each weight w, then the means over the files. docs/tuning.md (session 6) quotes its output.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lotterycli.metrics import psnr  # noqa: E402
from lotterycli.operators import Inpaint  # noqa: E402
from lotterycli.restore import blend_classical, combine  # noqa: E402


def main(directory: str, weights: list[float]) -> None:
    rows = []
    for path in sorted(Path(directory).glob("kodim*-inpaint-50-*.pt")):
        saved = torch.load(path)
        x, y, members, i = saved["x"], saved["y"], saved["members"], saved["spec"]["img"]
        op = Inpaint.random(x.shape[1], x.shape[2], 0.5, 1234 + i)  # the protocol's mask
        ensemble = combine(members).clamp(0, 1)
        fill = op.classical_estimate(y)
        row = {"ensemble": psnr(ensemble, x), "classical": psnr(fill, x)}
        row.update({f"w={w:g}": psnr(blend_classical(ensemble, fill, w), x) for w in weights})
        rows.append(row)
        print(f"{path.name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    if rows:
        print(f"mean of {len(rows)}: " + ", ".join(f"{k} {sum(r[k] for r in rows) / len(rows):.3f}" for k in rows[0]))


if __name__ == "__main__":
    main(sys.argv[1], [float(w) for w in sys.argv[2:]] or [0.1, 0.2, 0.3, 0.4, 0.5])
