"""Diagnostic behind docs/tuning.md "Instability at high lambda": compress one 256x256 Kodak crop
with the balanced preset (one thread) and print the fit's trajectory every 50 steps, with how many
ARM log-scales fell below the clamp (LOG_SCALE_MIN) and how many symbols hit the 16-bit cap.

    PYTHONPATH=src:. python benchmarks/diagnose_high_lambda.py [IMAGE] [LAMBDA]   (default kodim02 0.016)

Columns: step, loss, distortion (MSE), estimated bpp, then over the last 10 steps (evaluations
included): log-scales below the clamp / rate terms computed, capped symbols, bits from positions
below the clamp, all bits.
"""

import sys

import torch

import lotterycli.codec.arm as arm
from benchmarks.data import center_crop, load_image
from lotterycli.bitstream.container import describe
from lotterycli.compress import compress_image
from lotterycli.config import load_task_config

torch.set_num_threads(1)
image = sys.argv[1] if len(sys.argv) > 1 else "kodim02"
lam = float(sys.argv[2]) if len(sys.argv) > 2 else 0.016

_laplace_bits = arm.laplace_bits
window = [0, 0, 0, 0.0, 0.0]


def counting_laplace_bits(q, mu, log_scale):
    bits = _laplace_bits(q, mu, log_scale)
    with torch.no_grad():
        below = log_scale < arm.LOG_SCALE_MIN
        window[0] += log_scale.numel()
        window[1] += int(below.sum())
        window[2] += int((bits >= 15.99).sum())
        window[3] += float(bits[below].sum())
        window[4] += float(bits.sum())
    return bits


arm.laplace_bits = counting_laplace_bits  # looked up at call time by Arm.rate_bits
x = center_crop(load_image(image), 256)
cfg = load_task_config("compress", overrides={"lambda": lam})


def report(info):
    if info.step % 50 == 1 or info.step == info.total:
        terms, below, capped, bits_below, bits = window
        print(info.step, round(info.loss, 5), round(info.distortion, 6), round(info.bpp, 4),
              f"below_clamp {below}/{terms}", f"capped {capped}", f"bits_below {bits_below:.0f}", f"bits {bits:.0f}",
              flush=True)
    window[:] = [0, 0, 0, 0.0, 0.0]


r = compress_image(x, cfg, device="cpu", progress=report)
print("final", image, lam, f"{r.bpp:.4f} bpp", f"{r.psnr:.2f} dB", describe(r.data)["sizes"],
      "best step", r.fit.best_step, "best loss", r.fit.best_loss)
