"""The library's front door: compress, decompress and restore images from Python.

    from lotterycli.api import compress, decompress, restore
    result = compress(image)            # image: (3, H, W) float tensor in [0, 1]
    pixels = decompress(result.data)    # uint8 (3, H, W), identical to result.decoded
"""

from __future__ import annotations

import torch

from .compress import CompressResult, compress_image, decompress_bytes
from .config import load_task_config
from .fit import ProgressCallback
from .operators import Operator
from .restore import RestoreResult, restore_image

__all__ = ["compress", "decompress", "restore", "CompressResult", "RestoreResult"]


def compress(
    image: torch.Tensor,
    *,
    preset: str = "balanced",
    lam: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    mask_ratio: float | None = None,
    device: str = "auto",
    config_file: str | None = None,
    progress: ProgressCallback | None = None,
) -> CompressResult:
    """Compress an image into .lottery bytes (`result.data`), decoded back as a self-check."""
    cfg = load_task_config(
        "compress", preset=preset, config_file=config_file,
        overrides={"lambda": lam, "steps": steps, "seed": seed, "mask_ratio": mask_ratio},
    )
    return compress_image(image, cfg, device=device, progress=progress)


def decompress(data: bytes) -> torch.Tensor:
    """.lottery bytes -> uint8 image (3, H, W), bit-exact on every machine."""
    return decompress_bytes(data)


def restore(
    y: torch.Tensor,
    operator: Operator,
    *,
    task: str,
    preset: str = "balanced",
    steps: int | None = None,
    ensemble: int | None = None,
    candidates: int | None = None,
    lam: float | None = None,
    seed: int = 0,
    mask_ratio: float | None = None,
    device: str = "auto",
    config_file: str | None = None,
    progress: ProgressCallback | None = None,
    keep_payloads: bool = False,
) -> RestoreResult:
    """Restore an observation `y` through `operator` (Denoise, SuperResolution, Inpaint).

    Lambda comes from the task config for the operator's noise level unless `lam` is given.
    """
    cfg = load_task_config(
        task, preset=preset, config_file=config_file,
        overrides={"steps": steps, "ensemble": ensemble, "seed": seed, "mask_ratio": mask_ratio, "lambda": lam,
                   "candidates": candidates},
    )
    sigma = getattr(operator, "sigma", None)
    scale = getattr(operator, "scale", None)
    chosen = lam if lam is not None else cfg.lambda_for(None if sigma is None else sigma * 255.0, scale)
    return restore_image(y, operator, cfg, lam=chosen, device=device, progress=progress, keep_payloads=keep_payloads)
