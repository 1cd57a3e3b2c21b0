"""GPU checks and timings, for a machine with a CUDA GPU (not part of the CPU protocol).

    python -m benchmarks.gpu_check OUT.json [DEVICE] [--smoke]

`--smoke` (64x64 crop, 20 steps) only checks that the script runs, e.g. on a CPU before a lease.

Measures, on the GPU: fitting steps/s at 256x256 and 768x512 (default and reference sizes);
member-steps/s and operations per step of batched fits (`fitting.batched`) of 1, 4 and 16 members
at both sizes; `restore` denoise sigma 25 with the balanced preset, members one after another,
concurrently (threads, one CUDA stream each) and as one member batch (`member_batch`); `compress`
of a 256x256 Kodak crop (time, bpp, PSNR; the file is decoded on the CPU by the same code path
`decompress` uses, and two fits with the same seed are compared byte for byte, with and without
torch's deterministic-algorithms mode); four 256x256 crops compressed one after another and as
member batches (what `batch compress` does on a GPU).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import replace

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic mode

import torch

from benchmarks.data import center_crop, load_image
from benchmarks.profile_step import measure_step_rate
from lotterycli.bitstream.header import ARCH_PRESETS
from lotterycli.compression.decoder import decode_bytes
from lotterycli.compression.encoder import compress_image
from lotterycli.config import load_task_config
from lotterycli.metrics import psnr
from lotterycli.restoration.ensemble import restore_image
from lotterycli.restoration.operators import Denoise

DEVICE = "cuda"
SMOKE = False


def log(*a):
    print(*a, flush=True)


def step_rates(out: dict) -> None:
    rates = {}
    for name, arch in (("config", None), ("reference", ARCH_PRESETS[2])):
        sizes = ((64, 64, 5),) if SMOKE else ((256, 256, 300), (512, 768, 200))
        for h, w, steps in sizes:
            r = measure_step_rate(h, w, steps=steps, device=DEVICE, arch=arch)
            rates[f"{name}_{w}x{h}"] = round(r, 2)
            log("steps/s", name, f"{w}x{h}", round(r, 2))
    out["step_rates_cuda"] = rates


def member_rates(out: dict) -> None:
    from benchmarks.engine import member_probe

    rows = []
    for h, w in ((64, 64),) if SMOKE else ((256, 256), (512, 768)):
        for members in (1, 4) if SMOKE else (1, 4, 16):
            rows.append(member_probe(h, w, members, 5 if SMOKE else 100, torch.get_num_threads(), DEVICE))
            log("member batch", rows[-1])
    out["member_batch_cuda"] = rows


def compress_runs(out: dict, image: str, lam: float) -> None:
    x = center_crop(load_image(image), 64 if SMOKE else 256)
    # 1,600 steps (the `fast` preset), not the default preset: four runs must fit the device budget
    cfg = load_task_config("compress", overrides={"lambda": lam, "steps": 20 if SMOKE else 1600})
    runs = []
    for deterministic in (False, True):
        torch.use_deterministic_algorithms(deterministic, warn_only=True)  # warns where no such kernel
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = False
        files = []
        for _ in range(2):
            t0 = time.perf_counter()
            r = compress_image(x, cfg, device=DEVICE)
            seconds = time.perf_counter() - t0
            decoded = decode_bytes(r.data)
            files.append(r.data)
            runs.append({
                "deterministic_mode": deterministic, "seconds": round(seconds, 2), "fit_seconds": round(r.fit.seconds, 2),
                "bpp": r.bpp, "psnr": r.psnr, "decode_matches_encoder": bool(torch.equal(decoded, r.decoded)),
            })
            log("compress", runs[-1])
        runs[-1]["same_bytes_as_previous_run"] = files[0] == files[1]
        log("same bytes:", files[0] == files[1])
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    out["compress_cuda"] = {"image": image, "crop": 256, "lambda": lam, "preset": cfg.preset, "steps": cfg.steps, "runs": runs}


def restore_runs(out: dict, image: str) -> None:
    x = center_crop(load_image(image), 64 if SMOKE else 256)
    op = Denoise(sigma=25 / 255)
    y = op.simulate(x, seed=1234 + int(image[-2:]))
    cfg = load_task_config("denoise", overrides={"steps": 20, "ensemble": 2} if SMOKE else None)
    lam = cfg.lambda_for(25.0)
    runs = []
    for workers, batch in ((1, "always"), (1, "never"), (cfg.restoration.ensemble, "never")):
        t0 = time.perf_counter()
        settings = replace(cfg.restoration, member_batch=batch)
        r = restore_image(y, op, replace(cfg, restoration=settings), lam=lam, device=DEVICE, workers=workers)
        seconds = time.perf_counter() - t0
        runs.append({"workers": workers, "member_batch": batch, "seconds": round(seconds, 2), "psnr": psnr(r.image, x),
                     "member_psnr": [round(psnr(m, x), 3) for m in r.members]})
        log("restore", runs[-1])
    out["restore_cuda"] = {"image": image, "task": "denoise sigma 25", "preset": cfg.preset, "steps": cfg.steps,
                           "ensemble": cfg.restoration.ensemble, "runs": runs}


def compress_group_runs(out: dict, images: tuple[str, ...], lam: float) -> None:
    """Crops of several images compressed one after another (`compress_image`) and together as
    member batches (`compress_images`, what `batch compress` does on a GPU): seconds, bpp, PSNR."""
    from lotterycli.compression.member_batches import compress_images

    crops = [center_crop(load_image(name), 64 if SMOKE else 256) for name in images]
    cfg = load_task_config("compress", overrides={"lambda": lam, "steps": 20 if SMOKE else 1600})
    t0 = time.perf_counter()
    alone = [compress_image(x, cfg, device=DEVICE) for x in crops]
    one_by_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    together = compress_images(crops, cfg, device=DEVICE)
    batched = time.perf_counter() - t0
    out["compress_group_cuda"] = {
        "images": list(images), "crop": 64 if SMOKE else 256, "lambda": lam, "steps": cfg.steps,
        "seconds_one_by_one": round(one_by_one, 2), "seconds_member_batches": round(batched, 2),
        "bpp": [[round(r.bpp, 4) for r in rs] for rs in (alone, together)],
        "psnr": [[round(r.psnr, 3) for r in rs] for rs in (alone, together)],
    }
    log("compress group", out["compress_group_cuda"])


def main() -> None:
    global DEVICE, SMOKE
    path = sys.argv[1]
    args = sys.argv[2:]
    SMOKE = "--smoke" in args
    DEVICE = next((a for a in args if not a.startswith("--")), DEVICE)
    out: dict = {
        "torch": torch.__version__, "device": DEVICE,
        "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else None, "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }
    log(out)
    for part in (step_rates, member_rates, lambda o: restore_runs(o, "kodim03"),
                 lambda o: compress_runs(o, "kodim03", 0.004),
                 lambda o: compress_group_runs(o, ("kodim01", "kodim02", "kodim03", "kodim04"), 0.004)):
        try:
            part(out)
        except Exception as exc:  # keep what was measured so far
            out.setdefault("errors", []).append(repr(exc))
            log("error", repr(exc))
        with open(path, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
