"""Time one whole restoration of a protocol crop in this process (quiet machine, default workers).

    python benchmarks/time_restore.py 6 --steps 1000 --ensemble 4 --candidates 6 [--task inpaint-50]

Builds the protocol observation of kodimII's 256x256 centre crop (as benchmarks/tune_restore.py),
runs `restore_image` with the task config and the given preset overrides, and prints one JSON line:
seconds, PSNR of the result and of the ensemble before any classical blend, members' PSNR, kept
seeds. Run the same command from two trees (e.g. `git archive` copies with PYTHONPATH) in one
sitting to compare commits. docs/tuning.md (session 7) quotes it.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("img", type=int, help="Kodak image number (1-24)")
    p.add_argument("--task", default="inpaint-50", help="denoise-s25, inpaint-50, sr-x4-s5, ...")
    p.add_argument("--steps", type=int)
    p.add_argument("--ensemble", type=int)
    p.add_argument("--candidates", type=int)
    args = p.parse_args()

    from benchmarks.data import center_crop, load_image
    from benchmarks.tune_restore import _operator
    from lotterycli.config import load_task_config
    from lotterycli.metrics import psnr
    from lotterycli.restore import restore_image

    x = center_crop(load_image(f"kodim{args.img:02d}"), 256)
    task, op = _operator(args.task, 256, args.img)
    y = op.simulate(x, 1234 + args.img)
    cfg = load_task_config(task, overrides={"steps": args.steps, "ensemble": args.ensemble, "candidates": args.candidates})
    sigma = getattr(op, "sigma", 0.0)
    lam = cfg.lambda_for(sigma * 255 if task != "inpaint" else None, getattr(op, "scale", None))
    start = time.perf_counter()
    r = restore_image(y, op, cfg, lam=lam, device="cpu")
    print(json.dumps({"img": args.img, "task": args.task, "steps": cfg.steps, "ensemble": cfg.ensemble,
                      "candidates": cfg.candidates, "s": round(time.perf_counter() - start, 1),
                      "psnr": round(psnr(r.image, x), 3), "ensemble_psnr": round(psnr(r.ensemble_image, x), 3),
                      "members": [round(psnr(m, x), 2) for m in r.members], "seeds": r.seeds}))


if __name__ == "__main__":
    main()
