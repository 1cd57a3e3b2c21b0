"""How much the seed (random network + initialisation) matters for compression, and whether the
training loss early in a fit predicts the final rate-distortion cost (the basis of screening).

    python benchmarks/compress_seed_study.py OUT.jsonl --images 2,3,4,1 --seeds 0,1,2,3 \
        --lam 0.004 --steps 1000 --checkpoints 100,250 [--workers 2] [--sched '{"pixel_fraction": 0.5}']

Each (image, seed) fit runs on one thread (workers side by side) on the 256x256 centre crop;
the line records the mean training loss over the last quarter of the steps run at each
checkpoint (what screening ranks by) and the final real-file bpp, PSNR and cost
(MSE + lambda * bpp of the decoded file).
"""
import argparse
import json
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable as a script


def _job(spec: dict) -> dict:
    import dataclasses
    import time

    import torch

    torch.set_num_threads(1)
    from benchmarks.data import center_crop, load_image
    from lotterycli.bitstream.container import decode_file, encode_file
    from lotterycli.codec.model import LotteryModel, decode_payload
    from lotterycli.compress import fit_distortion, quantize_networks
    from lotterycli.config import load_task_config
    from lotterycli.fit import Fitter, mse
    from lotterycli.metrics import psnr

    s = 256
    x = center_crop(load_image(f"kodim{spec['img']:02d}"), s)
    cfg = load_task_config("compress", overrides={"steps": spec["steps"], "lambda": spec["lam"], "seed": spec["seed"]})
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = LotteryModel(s, s, cfg.architecture, cfg.seed, cfg.mask_ratio)
    schedule = dataclasses.replace(cfg.fitted_schedule(), **spec.get("sched", {}))
    fitter = Fitter(model, fit_distortion(x, schedule), cfg.lam, schedule)
    early = {}
    for c in spec["checkpoints"]:
        fitter.advance(c)
        early[str(c)] = round(fitter.recent_loss() * 1e4, 3)
    fitter.finish()
    modules = quantize_networks(model, mse(x), cfg.lam)
    data = encode_file(model.to_payload(modules))
    decoded = decode_payload(decode_file(data))
    bpp = len(data) * 8 / (s * s)
    p = psnr(decoded, x)
    cost = 10 ** (-p / 10) + cfg.lam * bpp
    return dict(spec, early=early, bpp=round(bpp, 4), psnr=round(p, 2), cost=round(cost * 1e4, 3),
                s=round(time.perf_counter() - start, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--images", default="2,3,4,1")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--lam", type=float, default=0.004)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--checkpoints", default="100,250")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sched", default="{}", help='schedule overrides as JSON, e.g. {"pixel_fraction": 0.5}')
    a = p.parse_args()
    specs = [dict(img=int(i), seed=int(sd), lam=a.lam, steps=a.steps, sched=json.loads(a.sched),
                  checkpoints=[int(c) for c in a.checkpoints.split(",")])
             for i in a.images.split(",") for sd in a.seeds.split(",")]
    with Pool(a.workers) as pool, open(a.out, "a") as out:
        for res in pool.imap_unordered(_job, specs):
            out.write(json.dumps(res) + "\n")
            out.flush()
            print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
