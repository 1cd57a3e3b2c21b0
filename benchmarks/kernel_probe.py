"""Experiment: the upsampling kernel as a symmetric separable one (4 numbers instead of 64).

The file stores the shared x2 upsampling kernel as 64 integers (30-60 bytes of a file). Fitted
as outer(a, a) with a = (h, reversed h), it would need 4. This probe fits `lottery compress`'s
whole pipeline with the kernel so constrained (`--variant separable`) or free (`--variant full`);
after the fit the constrained kernel is handed on as the 8x8 tensor it equals, so the file is
written by today's format, and the probe reports the bytes the upsampling took in it, for an
estimate of what a format storing 4 numbers would save. One JSON line per point.
`python -m benchmarks.kernel_probe --variant separable --images kodim03,chelsea --lambdas 0.016
--steps 1600 --mask-ratio 0.3 --out FILE.jsonl`
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torch.nn.utils import parametrize

from benchmarks.data import center_crop, load_image
from benchmarks.tune import image_names


class SymmetricSeparable(nn.Module):
    """h (K/2,) -> outer(a, a), a = (h, h reversed): a symmetric separable (K, K) kernel."""

    def forward(self, half: torch.Tensor) -> torch.Tensor:
        a = torch.cat([half, half.flip(0)])
        return torch.outer(a, a)

    def right_inverse(self, kernel: torch.Tensor) -> torch.Tensor:
        i = int(kernel.diagonal().argmax())
        a = kernel[i] / kernel[i, i].sqrt()
        return a[: a.numel() // 2].clone()


def constrain(enabled: bool) -> None:
    """Make every new Upsampling's kernel symmetric separable, and hand the quantization a plain
    tensor again once the fit is done."""
    from lotterycli.compression import encoder
    from lotterycli.model import upsampling

    if not enabled:
        return
    init = upsampling.Upsampling.__init__

    def constrained_init(self, kernel_size: int) -> None:
        init(self, kernel_size)
        parametrize.register_parametrization(self, "kernel", SymmetricSeparable(), unsafe=True)

    upsampling.Upsampling.__init__ = constrained_init
    file_result = encoder.file_result

    def plain_kernel_file_result(model, *args, **kwargs):
        parametrize.remove_parametrizations(model.upsampling, "kernel", leave_parametrized=True)
        return file_result(model, *args, **kwargs)

    encoder.file_result = plain_kernel_file_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("full", "separable"), required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--lambdas", default="0.016,0.004")
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--mask-ratio", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    constrain(args.variant == "separable")
    from lotterycli.bitstream.header import describe
    from lotterycli.compression.encoder import compress_image
    from lotterycli.config import load_task_config

    for name in image_names(args.images):
        x = center_crop(load_image(name), 256)
        for lam in (float(v) for v in args.lambdas.split(",")):
            cfg = load_task_config("compress", overrides={"lambda": lam, "steps": args.steps,
                                                          "mask_ratio": args.mask_ratio})
            start = time.perf_counter()
            r = compress_image(x, cfg, device="cpu")
            mse = 10 ** (-r.psnr / 10)
            row = {"variant": args.variant, "image": name, "lam": lam, "steps": args.steps, "bytes": r.n_bytes,
                   "psnr": r.psnr, "J": mse + lam * r.bpp, "sizes": describe(r.data)["sizes"],
                   "seconds": time.perf_counter() - start}
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(name, lam, r.n_bytes, f"{r.psnr:.3f}", row["sizes"]["networks"]["upsampling"], f"{row['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
