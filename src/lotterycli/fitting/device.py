"""Where a fit runs."""

from __future__ import annotations

import torch

from ..errors import LotteryError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if device not in DEVICES:
        raise LotteryError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LotteryError("--device cuda: no CUDA GPU is available (use --device auto or cpu)")
    return torch.device(device)
