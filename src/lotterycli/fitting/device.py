"""Where a fit runs: which device, and whether several fits share one batched model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LotteryError

if TYPE_CHECKING:  # torch is imported where a device is resolved: `lottery batch` plans without it
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    import torch

    if device not in DEVICES:
        raise LotteryError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LotteryError("--device cuda: no CUDA GPU is available (use --device auto or cpu)")
    return torch.device(device)


def use_member_batch(setting: str, device_type: str, n_candidates: int, checkpointing: bool) -> bool:
    """Whether the members are fitted as one batched model (`model.members`).

    "auto": on a GPU, where a step is launch-bound and B members batched cost about one
    member's launches; not on a CPU, where a batched product costs more per member than one fit
    per core (docs/design.md). Never with one member, nor when checkpoints are saved or resumed
    (the batched loop keeps none): the members are then fitted one by one as usual. Used by
    restoration (its ensemble's members) and `lottery batch compress` (images of one size).
    """
    if n_candidates < 2 or checkpointing or setting == "never":
        return False
    return setting == "always" or device_type == "cuda"
