"""Per-tensor against per-module quantization steps for the small networks, on the same fits.

    python benchmarks/quantize_study.py OUT.jsonl --images 1,2,3,4 --lams 0.004,0.016 \
        --steps 1000 [--workers 2] [--crop 256]

Each (image, lambda) fit runs once, on one thread (workers side by side), on the 256x256 centre
crop (`--crop`) with the compress config. The fitted model is then quantized twice, with one step per module
(`quantize_networks(..., per_tensor=False)`, what files had before format v2) and with the default
per-tensor search; both are written as real v2 files and decoded. A line per fit records, for
each, file bytes, network bytes, PSNR of the decoded file and its cost (MSE + lambda * bpp), plus
the bytes a version-1 header would have added. No seed noise enters the comparison: the two files
come from one fitted model.
"""
import argparse
import copy
import json
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable as a script


def _job(spec: dict) -> dict:
    import time

    import torch

    torch.set_num_threads(1)
    from benchmarks.data import center_crop, load_image
    from lotterycli.bitstream.container import decode_file, encode_file, read_header
    from lotterycli.codec.model import LotteryModel, decode_payload
    from lotterycli.compress import fit_distortion, quantize_networks
    from lotterycli.config import load_task_config
    from lotterycli.fit import fit, mse
    from lotterycli.metrics import psnr

    s = spec["crop"]
    x = center_crop(load_image(f"kodim{spec['img']:02d}"), s)
    cfg = load_task_config("compress", overrides={"steps": spec["steps"], "lambda": spec["lam"], "seed": spec["seed"]})
    torch.manual_seed(cfg.seed)
    model = LotteryModel(s, s, cfg.architecture, cfg.seed, cfg.mask_ratio)
    schedule = cfg.fitted_schedule()
    fit(model, fit_distortion(x, schedule), cfg.lam, schedule)
    out = dict(spec)
    for name, per_tensor in (("module", False), ("tensor", True)):
        m = copy.deepcopy(model)
        start = time.perf_counter()
        modules = quantize_networks(m, mse(x), cfg.lam, per_tensor=per_tensor)
        seconds = time.perf_counter() - start
        payload = m.to_payload(modules)
        data = encode_file(payload)
        header = read_header(data)
        decoded = decode_payload(decode_file(data))
        p = psnr(decoded, x)
        bpp = len(data) * 8 / (s * s)
        out[name] = dict(
            bytes=len(data),
            mask=header.section_sizes["mask"],
            networks={k: header.section_sizes[k] for k in modules},
            shifts={k: q.tensor_shifts() for k, q in modules.items()},
            latents=header.section_sizes["latents"],
            header=header.header_size + 4,
            psnr=round(p, 3),
            cost=round((10 ** (-p / 10) + cfg.lam * bpp) * 1e4, 4),
            search_s=round(seconds, 1),
        )
        if not per_tensor:
            out["v1_header_extra"] = len(encode_file(payload, version=1)) - len(data)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--images", default="1,2,3,4")
    p.add_argument("--lams", default="0.004,0.016")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--crop", type=int, default=256, help="centre crop size")
    args = p.parse_args()
    specs = [dict(img=int(i), lam=float(lam), steps=args.steps, seed=args.seed, crop=args.crop)
             for lam in args.lams.split(",") for i in args.images.split(",")]
    with open(args.out, "a") as f, Pool(args.workers) as pool:
        for row in pool.imap_unordered(_job, specs):
            f.write(json.dumps(row) + "\n")
            f.flush()
            m, t = row["module"], row["tensor"]
            print(f"kodim{row['img']:02d} lam {row['lam']}: {m['bytes']} -> {t['bytes']} bytes "
                  f"(networks {sum(m['networks'].values())} -> {sum(t['networks'].values())}), "
                  f"PSNR {m['psnr']} -> {t['psnr']}, cost {m['cost']} -> {t['cost']} "
                  f"({100 * (t['cost'] / m['cost'] - 1):+.1f} %)", flush=True)


if __name__ == "__main__":
    main()
