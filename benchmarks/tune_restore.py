"""Restoration tuning: render averaging (schedule.average_fraction) on/off, one member, 300 steps.

    python benchmarks/tune_restore.py [crop_size]

Prints PSNR per task (denoise sigma 25, inpaint 50 %, SR x2 sigma 5) on kodim01/kodim03 centre
crops with the benchmark protocol's noise seeds (1234 + i). docs/tuning.md quotes its output.
"""
import dataclasses
import os
import sys
from pathlib import Path

import torch

from lotterycli.config import load_task_config
from lotterycli.images import read_image
from lotterycli.metrics import psnr
from lotterycli.operators import Denoise, Inpaint, SuperResolution
from lotterycli.restore import restore_image

KODAK = Path(os.environ.get("LOTTERY_KODAK", Path(__file__).resolve().parents[2] / "shared/data/kodak"))


def main(size: int = 128) -> None:
    torch.set_num_threads(2)
    for i in (1, 3):
        img = read_image(KODAK / f"kodim{i:02d}.png")
        h, w = img.shape[1:]
        x = img[:, (h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size].contiguous()
        for task, op in (("denoise", Denoise(25 / 255)), ("inpaint", Inpaint.random(size, size, 0.5, 1234 + i)),
                         ("sr", SuperResolution(2, 5 / 255))):
            y = op.simulate(x, 1234 + i)
            for avg in (0.0, 0.5):
                cfg = load_task_config(task, overrides={"steps": 300, "ensemble": 1})
                cfg.schedule = dataclasses.replace(cfg.schedule, average_fraction=avg)
                lam = cfg.lambda_for_sigma(None if task == "inpaint" else op.sigma * 255)
                r = restore_image(y, op, cfg, lam=lam, device="cpu")
                print(f"kodim{i:02d} {task:8s} average_fraction {avg:.1f}: {psnr(r.image, x):.2f} dB, {r.seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 128)
