"""How much memory a fit needs on a CPU, checked before the fit starts.

Why: a fit's peak memory grows with the image, about 4 KB per pixel (the activations of the
full-resolution latents, upsampling, ModNet and ARM that the backward pass needs, whatever
fraction of the pixels a step synthesises), so a 12-megapixel photograph needs ~58 GB. Without a
check the operating system kills the process partway through its fit (or it swaps for hours);
with it, the command stops at once and says what it would need. Measured by `python -m
benchmarks.memory`: one fit (a whole compression, or a restoration member) 3.7-4.1 KB per pixel
above the imported package, two restoration members side by side 9.4 KB. An image fitted in
bands of rows (`model.bands`: above 2 megapixels, under a per-pixel loss) holds that much for one
band only, plus BANDED_BYTES_PER_PIXEL for every pixel of the image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LotteryError
from ..model.bands import fit_band_rows

if TYPE_CHECKING:  # torch-free, so that `lottery batch` can size its workers before importing torch
    import torch

FIT_BYTES_PER_PIXEL = 4864  # per member fitted at once (4.75 KiB: the measured slopes, with a margin)
FIT_FIXED_BYTES = 128 << 20  # what a fit holds whatever the image size, beyond the imported package
BANDED_BYTES_PER_PIXEL = 512  # a fit in bands: what every pixel of the image costs beside its band


def one_fit_bytes(height: int, width: int, banded: bool = True) -> int:
    """The memory one fit of a `height` x `width` render adds at its peak, on a CPU: in bands of
    rows where its size calls for them and `banded` (its loss is per pixel), else whole."""
    rows = fit_band_rows(height, width) if banded else 0
    if not rows:
        return FIT_BYTES_PER_PIXEL * height * width
    return BANDED_BYTES_PER_PIXEL * height * width + FIT_BYTES_PER_PIXEL * (rows + 4) * width


def fit_bytes(height: int, width: int, at_once: int = 1, banded: bool = True) -> int:
    """The peak memory of `at_once` fits of a `height` x `width` render side by side, on a CPU."""
    return FIT_FIXED_BYTES + at_once * one_fit_bytes(height, width, banded)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def available_bytes() -> int | None:
    """Memory a new allocation can still get: the kernel's MemAvailable, less where this
    process's cgroup (a container's limit) allows less; None where neither can be read (not Linux)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    for limit_file, usage_file in (("memory.max", "memory.current"),  # cgroup v2
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):  # v1
        limit = _read_int(Path("/sys/fs/cgroup") / limit_file)
        usage = _read_int(Path("/sys/fs/cgroup") / usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            left = max(0, limit - usage)
            available = left if available is None else min(available, left)
    return available


def size_text(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def checked() -> bool:
    """Whether fits check their memory (`LOTTERY_NO_MEMORY_CHECK` unset)."""
    return not os.environ.get("LOTTERY_NO_MEMORY_CHECK")


def fits_in(available: int, height: int, width: int, banded: bool = True) -> int:
    """How many fits of a `height` x `width` render side by side `available` bytes hold."""
    one = max(1, one_fit_bytes(height, width, banded))
    return (available - FIT_FIXED_BYTES) // one if available > FIT_FIXED_BYTES else 0


def members_at_once(height: int, width: int, device: torch.device, wanted: int, banded: bool = True) -> int:
    """How many fits of a `height` x `width` render may run side by side (at most `wanted`): all
    of them off a CPU or where the free memory is unknown. Raises LotteryError, naming the size
    and the memory, when not even one fits. `banded`: the fit's loss is per pixel, so a large
    render is fitted in bands (`model.bands`); False for a loss that needs the whole render."""
    if device.type != "cpu" or not checked():
        return wanted
    available = available_bytes()
    if available is None:
        return wanted
    fits = fits_in(available, height, width, banded)
    if fits < 1:
        raise LotteryError(
            f"fitting a {width}x{height} image needs about {size_text(fit_bytes(height, width, 1, banded))} "
            f"of memory and {size_text(available)} is available: "
            "crop or downscale it, or run it where more memory is free")
    return int(min(wanted, fits))


def check_fit_memory(height: int, width: int, device: torch.device, banded: bool = True) -> None:
    """Raise LotteryError, before anything is allocated, if one fit of this size cannot fit in
    the free memory (`members_at_once`)."""
    members_at_once(height, width, device, 1, banded)
