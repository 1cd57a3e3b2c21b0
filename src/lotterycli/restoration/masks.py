"""Inpainting masks as images: white (>= 128) = known pixel, black (< 128) = missing.

In the library a mask is a bool (H, W) tensor, True = observed; one mask serves the 3 channels.
`write_mask` writes an 'L' mode PNG with 255 / 0.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import LotteryError
from ..images import DEFAULT_MAX_PIXELS, atomic_write_bytes, bomb_message, check_size, read_input_bytes


def as_mask(mask) -> torch.Tensor:
    if mask is None:
        raise LotteryError("inpainting needs a mask (white = known pixel, black = missing)")
    if isinstance(mask, (str, os.PathLike)):
        return read_mask(mask)
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise LotteryError(f"inpainting mask must be a (H, W) tensor or a PNG path, got {type(mask).__name__}")
    if mask.dim() == 3 and mask.shape[0] in (1, 3):
        if mask.shape[0] == 3 and not bool((mask == mask[:1]).all()):
            raise LotteryError("inpainting mask must be the same for the 3 channels")
        mask = mask[0]
    if mask.dim() != 2:
        raise LotteryError(f"inpainting mask must be a (H, W) map, got shape {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point():
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise LotteryError("inpainting mask must hold 0/1 or booleans (True = observed)")
        mask = mask != 0
    return mask.detach().cpu().contiguous()


def read_mask(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Read a mask image as a bool (H, W) tensor: white (gray level >= 128) = known, black = missing.

    Colour images are converted to grayscale (luma) first; an alpha channel is ignored. The size is
    checked from the file's header before any pixel is decoded.
    """
    path = Path(path)
    data = read_input_bytes(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_size applies --max-pixels
            im = Image.open(io.BytesIO(data))
        with im:
            w, h = im.size
            check_size(h, w, what=str(path), min_side=1, max_pixels=max_pixels)
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = arr / (65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0) * 255.0
            else:
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    im = im.convert("RGBA").convert("RGB")
                arr = np.asarray(im.convert("L"), dtype=np.float64)
    except LotteryError:
        raise
    except Image.DecompressionBombError:
        raise LotteryError(bomb_message(str(path), max_pixels)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise LotteryError(f"{path}: not a readable mask image ({exc.__class__.__name__})") from None
    return torch.from_numpy(arr >= 128)


def encode_mask_png(mask: torch.Tensor) -> bytes:
    """'L' mode PNG bytes of a mask: 255 (white) = known, 0 (black) = missing."""
    m = as_mask(mask)
    arr = np.where(m.numpy(), 255, 0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_mask(path: str | os.PathLike, mask: torch.Tensor) -> None:
    """Write a mask as an 'L' mode PNG (white = known, black = missing), atomically."""
    atomic_write_bytes(path, encode_mask_png(mask))


def masked_observation(x: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """The observation image for inpainting: x where mask is True, ``fill`` elsewhere.

    fill = 0.0 (black) matches ``Inpaint.forward``; 0.5 gives mid-grey for display.
    """
    m = as_mask(mask).to(x.device)
    if tuple(x.shape[-2:]) != tuple(m.shape):
        raise LotteryError(f"image is {x.shape[-1]}x{x.shape[-2]} but the mask is {m.shape[1]}x{m.shape[0]}")
    return torch.where(m, x, torch.full((), float(fill), dtype=x.dtype, device=x.device))
