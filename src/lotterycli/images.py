"""Image files <-> float tensors.

Images inside the library are float32 tensors of shape (3, H, W) with values in [0, 1]
(observations for restoration may leave that range: noise is not clipped). Files are read
with Pillow; `.npy` holds lossless float observations (values on the 0-1 scale, HxWx3 or 3xHxW).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import LotteryError

MIN_SIDE = 16
MAX_SIDE = 16384
MAX_PIXELS = 64 * 1024 * 1024

# Pillow refuses decompression bombs above this with a warning/error; we check sizes ourselves.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def check_size(height: int, width: int, what: str = "image", min_side: int = MIN_SIDE) -> None:
    """Refuse sizes the model cannot handle (too small for the latent pyramid) or absurd ones."""
    if height < min_side or width < min_side:
        raise LotteryError(f"{what} is {width}x{height}: both sides must be at least {min_side} pixels")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise LotteryError(f"{what} is {width}x{height}: larger than the supported {MAX_SIDE}x{MAX_SIDE} / {MAX_PIXELS} pixels")


def read_image(path: str | os.PathLike, *, allow_float: bool = False, min_side: int = MIN_SIDE) -> torch.Tensor:
    """Read a PNG/JPEG (or, with allow_float, a .npy float observation) as a (3, H, W) float32 tensor.

    Grayscale is replicated to RGB and RGBA drops its alpha channel, each with a warning.
    16-bit grayscale PNGs are read at full precision (scaled by 1/65535); 16-bit colour PNGs at
    8-bit precision (what Pillow gives), with a warning.
    """
    path = Path(path)
    if not path.exists():
        raise LotteryError(f"{path}: no such file")
    if path.is_dir():
        raise LotteryError(f"{path}: is a directory, not an image")
    if path.suffix.lower() == ".npy":
        if not allow_float:
            raise LotteryError(f"{path}: .npy float images are accepted only as restoration input")
        return _read_npy(path, min_side)
    try:
        with Image.open(path) as im:
            # Pillow reads 16-bit colour PNGs as 8-bit RGB(A): say so instead of losing bits silently.
            wide = not im.mode.startswith("I") and any(";16" in str(getattr(t, "args", "")) for t in (im.tile or []))
            im.load()
            tensor = _pil_to_tensor(im, path)
        if wide:
            warnings.warn(f"{path.name}: 16-bit colour image, read at 8-bit precision")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LotteryError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    except Image.DecompressionBombError:
        raise LotteryError(f"{path}: image too large") from None
    if min(tensor.shape[1:]) < min_side:
        raise LotteryError(f"{path}: image is {tensor.shape[2]}x{tensor.shape[1]}, sides must be at least {min_side}")
    check_size(tensor.shape[1], tensor.shape[2], what=str(path), min_side=min_side)
    return tensor


def _pil_to_tensor(im: Image.Image, path: Path) -> torch.Tensor:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        warnings.warn(f"{path.name}: 16-bit grayscale image, converted to RGB")
        arr = np.repeat((arr / scale)[..., None], 3, axis=2)
        return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1).contiguous()
    if mode == "RGB":
        pass
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        warnings.warn(f"{path.name}: alpha channel dropped")
        im = im.convert("RGB")
    elif mode in ("L", "1"):
        warnings.warn(f"{path.name}: grayscale image, converted to RGB")
        im = im.convert("RGB")
    else:
        im = im.convert("RGB")
    arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0).contiguous()


def _read_npy(path: Path, min_side: int) -> torch.Tensor:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise LotteryError(f"{path}: not a readable .npy array ({exc})") from None
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3:
        raise LotteryError(f"{path}: .npy image must be HxWx3 or 3xHxW, got shape {arr.shape}")
    if arr.shape[0] == 3 and arr.shape[2] != 3:
        arr = np.transpose(arr, (1, 2, 0))
    if arr.shape[2] != 3:
        raise LotteryError(f"{path}: .npy image must have 3 channels, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise LotteryError(f"{path}: .npy image must hold floats on the 0-1 scale, got {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise LotteryError(f"{path}: .npy image holds NaN or infinite values")
    if min(arr.shape[:2]) < min_side:
        raise LotteryError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, sides must be at least {min_side}")
    check_size(arr.shape[0], arr.shape[1], what=str(path), min_side=min_side)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).contiguous()


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Round a [0, 1] float image to 8-bit (round half up after clamping), shape kept."""
    return torch.floor(image.detach().to(torch.float64).clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: no partial file is ever left behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def encode_png(image: torch.Tensor) -> bytes:
    """PNG bytes of a (3, H, W) image: float in [0, 1] (rounded to 8 bits) or uint8."""
    import io

    arr = image if image.dtype == torch.uint8 else to_uint8(image)
    buf = io.BytesIO()
    Image.fromarray(arr.permute(1, 2, 0).contiguous().numpy(), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | os.PathLike, image: torch.Tensor) -> None:
    """Write a (3, H, W) image as an 8-bit RGB PNG, atomically."""
    atomic_write_bytes(path, encode_png(image))


def write_npy(path: str | os.PathLike, image: torch.Tensor) -> None:
    """Write a float observation losslessly as an HxWx3 float32 .npy, atomically."""
    import io

    buf = io.BytesIO()
    np.save(buf, image.detach().permute(1, 2, 0).contiguous().numpy().astype(np.float32), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
