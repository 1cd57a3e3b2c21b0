"""Experiment: does a shorter mask-ratio screening pick what the configured one picks?

For each image and lambda, every screened mask ratio is fitted as `lottery compress` screens it
(the whole run's schedule, e.g. 5,000 steps for `balanced`) and its screening cost (recent
training loss plus lambda times the mask's bits, `encoder.screen_mask_ratios`) is read at several
step counts. One JSON line per point. `python -m benchmarks.screen_probe --images kodim01,chelsea
--lambdas 0.016,0.004 --steps 5000 --at 100,160,250,350,500 --out FILE.jsonl`
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.data import center_crop, load_image
from benchmarks.tune import image_names


def probe(name: str, lam: float, steps: int, checkpoints: list[int]) -> dict:
    from lotterycli.compression.encoder import mask_cost_bpp
    from lotterycli.config import load_task_config
    from lotterycli.fitting.loop import Fitter
    from lotterycli.fitting.losses import fit_distortion
    from lotterycli.model.lottery_model import LotteryModel

    x = center_crop(load_image(name), 256)
    cfg = load_task_config("compress", overrides={"lambda": lam, "steps": steps})
    ratios = (cfg.mask_ratio, *cfg.compression.mask_ratio_candidates)
    costs: dict[str, list[float]] = {}
    start = time.perf_counter()
    for ratio in ratios:
        torch.manual_seed(cfg.seed)
        model = LotteryModel(256, 256, cfg.architecture, cfg.seed, ratio)
        fitter = Fitter(model, fit_distortion(x, cfg.schedule.pixel_fraction), lam, cfg.schedule, None)
        mask = lam * mask_cost_bpp(model.arch.n_synth_weights, ratio, model.n_pixels)
        row = []
        for n in checkpoints:
            fitter.advance(n)
            row.append(fitter.recent_loss() + mask)
        costs[f"{ratio:g}"] = row
    return {"image": name, "lam": lam, "steps": steps, "at": checkpoints, "costs": costs,
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--lambdas", default="0.016,0.004")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--at", default="100,160,250,350,500")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    checkpoints = [int(v) for v in args.at.split(",")]
    for name in image_names(args.images):
        for lam in (float(v) for v in args.lambdas.split(",")):
            row = probe(name, lam, args.steps, checkpoints)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            picks = [min(row["costs"], key=lambda r, i=i: row["costs"][r][i]) for i in range(len(checkpoints))]
            print(name, lam, "picks", picks, f"{row['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
