"""The library's front door: compress, decompress, restore and degrade images from Python.

    from lotterycli import api
    from lotterycli.images import read_image
    result = api.compress(read_image("img.png"), preset="fast")     # result.data: .lottery bytes
    pixels = api.decompress(result.data)                              # uint8 (3, H, W) == result.decoded
    noisy, op = api.degrade(read_image("img.png"), "denoise", sigma=25, seed=0)
    restored = api.restore(noisy, op).image                           # float (3, H, W) in [0, 1]

Every option left as None takes its value from the task's config (`configs/<task>.yaml`, or
`config_file` merged over it, then the preset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .compression.decoder import decode_bytes
from .compression.encoder import CompressResult, compress_image
from .config import TaskConfig, load_task_config
from .errors import LotteryError
from .fitting.loop import ProgressCallback
from .images import DEFAULT_MAX_PIXELS
from .restoration.ensemble import RestoreResult, restore_image
from .restoration.noise import estimate_sigma
from .restoration.operators import Inpaint, Operator, make_operator

__all__ = ["compress", "decompress", "restore", "degrade", "restoration_operator", "compress_config",
           "restore_config", "CompressResult", "RestoreResult", "Degraded"]


def compress_config(*, preset: str | None = None, lam: float | None = None, steps: int | None = None,
                    seed: int | None = None, mask_ratio: float | None = None,
                    config_file: str | Path | None = None) -> TaskConfig:
    """The effective compression config for these options."""
    return load_task_config("compress", preset=preset, config_file=config_file,
                            overrides={"lambda": lam, "steps": steps, "seed": seed, "mask_ratio": mask_ratio})


def compress(
    image: torch.Tensor,
    *,
    preset: str | None = None,
    lam: float | None = None,
    steps: int | None = None,
    seed: int | None = None,
    mask_ratio: float | None = None,
    device: str = "auto",
    config_file: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> CompressResult:
    """Compress a (3, H, W) float image in [0, 1] into .lottery bytes (`result.data`), decoded back
    as a self-check (`result.decoded`, `result.psnr`)."""
    cfg = compress_config(preset=preset, lam=lam, steps=steps, seed=seed, mask_ratio=mask_ratio,
                          config_file=config_file)
    return compress_image(image, cfg, device=device, progress=progress)


def decompress(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """.lottery bytes -> uint8 image (3, H, W), bit-exact on every machine.

    A file whose image is larger than `max_pixels` is refused before anything is decoded."""
    from .bitstream.header import read_header

    header = read_header(data)
    height, width = header.image_size
    if height * width > max_pixels:
        raise LotteryError(f"the file's image is {width}x{height} ({height * width / 1e6:.1f} megapixels): above the "
                           f"limit of {max_pixels / 1e6:g} megapixels (raise it with --max-pixels)")
    return decode_bytes(data)


def restore_config(task: str, *, preset: str | None = None, steps: int | None = None, ensemble: int | None = None,
                   candidates: int | None = None, lam: float | None = None, seed: int | None = None,
                   mask_ratio: float | None = None, config_file: str | Path | None = None) -> TaskConfig:
    """The effective restoration config of `task` (denoise, sr, inpaint) for these options."""
    return load_task_config(task, preset=preset, config_file=config_file, overrides={
        "steps": steps, "ensemble": ensemble, "candidates": candidates, "lambda": lam, "seed": seed,
        "mask_ratio": mask_ratio})


def restoration_operator(task: str, y: torch.Tensor, *, sigma: float | None = None, scale: int | None = None,
                         mask: torch.Tensor | None = None) -> tuple[Operator, float, bool]:
    """(operator, sigma on the 0-255 scale, whether sigma was estimated) for observation `y`.

    Denoising estimates the noise level from `y` when `sigma` (0-255 scale) is not given; the other
    tasks take 0 (noiseless) by default."""
    estimated = False
    if task == "denoise" and sigma is None:
        sigma = estimate_sigma(y) * 255.0
        estimated = True
    if task == "sr" and scale is None:
        raise LotteryError("super-resolution needs a scale factor: 2, 3 or 4")
    if task == "inpaint" and mask is None:
        raise LotteryError("inpainting needs a mask (white = known pixel, black = missing)")
    sigma_255 = float(sigma or 0.0)
    operator = make_operator(task, sigma=sigma_255 / 255.0, scale=scale, mask=mask)
    operator.check_observation(tuple(y.shape))
    return operator, sigma_255, estimated


def restore(
    y: torch.Tensor,
    operator: Operator,
    *,
    preset: str | None = None,
    steps: int | None = None,
    ensemble: int | None = None,
    candidates: int | None = None,
    lam: float | None = None,
    seed: int | None = None,
    mask_ratio: float | None = None,
    device: str = "auto",
    config_file: str | Path | None = None,
    progress: ProgressCallback | None = None,
    on_member=None,
    bitstream: bool = False,
    workers: int | None = None,
) -> RestoreResult:
    """Restore an observation `y` through `operator` (Denoise, SuperResolution, Inpaint: see
    `restoration_operator`). Lambda follows the operator's noise level (and scale) per the task
    config unless `lam` is given. `bitstream`: also quantize the best member (`result.payload`;
    `bitstream.container.encode_file` makes it a .lottery file)."""
    cfg = restore_config(operator.task, preset=preset, steps=steps, ensemble=ensemble, candidates=candidates,
                         lam=lam, seed=seed, mask_ratio=mask_ratio, config_file=config_file)
    return restore_image(y, operator, cfg, lam=restore_lambda(cfg, operator, lam), device=device,
                         progress=progress, on_member=on_member, bitstream=bitstream, workers=workers)


def restore_lambda(cfg: TaskConfig, operator: Operator, lam: float | None = None) -> float:
    """The rate weight of a restoration: `lam`, or the config's for the operator's noise level."""
    if lam is not None:
        return lam
    sigma = None if isinstance(operator, Inpaint) else operator.sigma * 255.0
    return cfg.lambda_for(sigma, getattr(operator, "scale", None))


@dataclass
class Degraded:
    observation: torch.Tensor  # float (3, h, w), noise neither clipped nor rounded
    operator: Operator  # what made it (for inpainting: its mask)


def degrade(x: torch.Tensor, task: str, *, sigma: float = 0.0, scale: int | None = None,
            missing_ratio: float | None = None, seed: int = 0) -> Degraded:
    """A simulated observation of clean image `x`: noise of level `sigma` (0-255 scale) after
    downsampling by `scale` (sr) or removing `missing_ratio` of the pixels at random (inpaint)."""
    if task == "inpaint":
        if missing_ratio is None:
            raise LotteryError("inpainting needs a missing ratio (e.g. 0.5)")
        operator: Operator = Inpaint.random(x.shape[1], x.shape[2], missing_ratio, seed, sigma=sigma / 255.0)
    else:
        operator = make_operator(task, sigma=sigma / 255.0, scale=scale)
    operator.check_image(tuple(x.shape))
    return Degraded(operator.simulate(x, seed), operator)
