"""Does fitting the ARM alone to the final latents shrink the file? One fit per crop, several refits.

    python benchmarks/arm_refit_study.py OUT.jsonl --images 3,4 --lams 0.004,0.016 --steps 2500 \
        --refits 0,150:0.005,300:0.005 [--workers 2]

Each (crop, lambda) is fitted once with the compression config (`--crop` 256: the centre crop of
../shared/data/kodak, `--steps`, seed 0, the config's own `arm_refit_steps` switched off), then for
each refit setting STEPS:LR the fitted model is copied, its ARM refitted (`compress.refit_arm`), its
networks quantized and the file written and decoded. Refitting changes only the rate, so every
setting of one fit has the same PSNR and the bytes compare exactly. One JSON line per setting:
bytes, bpp, PSNR, the ARM's bytes and the refit's seconds (one thread per worker).
"""
import argparse
import copy
import dataclasses
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _job(spec: dict) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    from benchmarks.data import center_crop, load_image
    from lotterycli.bitstream.container import decode_file, describe, encode_file
    from lotterycli.codec.model import LotteryModel, decode_payload
    from lotterycli.compress import fit_distortion, quantize_networks, refit_arm
    from lotterycli.config import load_task_config
    from lotterycli.fit import fit, mse
    from lotterycli.metrics import psnr

    image = center_crop(load_image(f"kodim{spec['img']:02d}"), spec["crop"]).contiguous()
    height, width = image.shape[1:]
    cfg = load_task_config("compress", overrides={"steps": spec["steps"], "lambda": spec["lam"]})
    schedule = dataclasses.replace(cfg.fitted_schedule(), arm_refit_steps=0)
    torch.manual_seed(cfg.seed)
    model = LotteryModel(height, width, cfg.architecture, cfg.seed, cfg.mask_ratio)
    start = time.perf_counter()
    fit(model, fit_distortion(image, schedule), cfg.lam, schedule)
    fit_s = time.perf_counter() - start
    rows = []
    for steps, lr in spec["refits"]:
        m = copy.deepcopy(model)
        t = time.perf_counter()
        bits = refit_arm(m, steps, lr)
        refit_s = time.perf_counter() - t
        data = encode_file(m.to_payload(quantize_networks(m, mse(image), cfg.lam)))
        decoded = decode_payload(decode_file(data))
        rows.append(dict(img=spec["img"], crop=spec["crop"], lam=spec["lam"], steps=spec["steps"], refit_steps=steps, refit_lr=lr,
                         bytes=len(data), bpp=round(len(data) * 8 / (height * width), 4), psnr=round(psnr(decoded, image), 3),
                         arm_bytes=describe(data)["sizes"]["networks"]["arm"], objective_bits=round(bits, 1),
                         refit_s=round(refit_s, 1), fit_s=round(fit_s, 1)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--images", default="3,4")
    p.add_argument("--lams", default="0.004,0.016")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--refits", default="0,150:0.005,300:0.005", help="STEPS[:LR],...")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--crop", type=int, default=256, help="centre crop size (the protocol's is 256)")
    args = p.parse_args()
    refits = []
    for item in args.refits.split(","):
        steps, _, lr = item.partition(":")
        refits.append((int(steps), float(lr or 0.005)))
    specs = [dict(img=int(i), lam=float(l), steps=args.steps, refits=refits, crop=args.crop)
             for l in args.lams.split(",") for i in args.images.split(",")]
    with Pool(args.workers) as pool, open(args.out, "a") as out:
        for rows in pool.imap_unordered(_job, specs):
            for r in rows:
                out.write(json.dumps(r) + "\n")
                out.flush()
                print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
