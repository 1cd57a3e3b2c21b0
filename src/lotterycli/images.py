"""Image files <-> float tensors, and atomic output files.

Images inside the library are float32 tensors of shape (3, H, W) with values in [0, 1]
(observations for restoration may leave that range: noise is not clipped). Files are read with
Pillow; `.npy` holds lossless float observations (values on the 0-1 scale, HxWx3 or 3xHxW).
Sizes are read from the file's header and checked before any pixel is decoded.
torch is imported only by the functions that make or take tensors: the command line checks its
inputs with this module before paying for the torch import.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import LotteryError
from .files import write_atomically

if TYPE_CHECKING:
    import torch

log = logging.getLogger("lotterycli")

MIN_SIDE = 16
MAX_SIDE = 16384
DEFAULT_MAX_PIXELS = 40_000_000  # above an 8K frame's 33 megapixels
MAX_INPUT_BYTES = 1 << 30  # an input read from standard input is refused beyond this


def check_size(height: int, width: int, what: str = "image", min_side: int = MIN_SIDE,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse sizes the model cannot handle (too small for the latent pyramid) or above the limits."""
    if height < min_side or width < min_side:
        raise LotteryError(f"{what} is {width}x{height}: both sides must be at least {min_side} pixels")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise LotteryError(f"{what} is {width}x{height}: a side is larger than the supported {MAX_SIDE} pixels")
    if height * width > max_pixels:
        raise LotteryError(f"{what} is {width}x{height} ({height * width / 1e6:.1f} megapixels): above the limit of "
                           f"{max_pixels / 1e6:g} megapixels (raise it with --max-pixels)")


def bomb_message(name: str, max_pixels: int) -> str:
    """The refusal of an image above Pillow's hard limit (twice Image.MAX_IMAGE_PIXELS)."""
    pillow = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return (f"{name}: image too large: its header declares more than {pillow / 1e6:.0f} megapixels, more than "
            f"Pillow decodes (the limit is {max_pixels / 1e6:g} megapixels, --max-pixels)")


def _read_at_most(fh, limit: int) -> bytes:
    """At most limit + 1 bytes of `fh`, in pieces: `fh.read(n)` allocates n bytes at once (1 GiB
    for every input otherwise)."""
    buf = bytearray()
    while len(buf) <= limit:
        piece = fh.read(min(1 << 20, limit + 1 - len(buf)))
        if not piece:
            break
        buf += piece
    return bytes(buf)


def read_input_bytes(path: str | os.PathLike, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of an input file, or of standard input for "-" (refused beyond `limit`)."""
    if str(path) == "-":
        import sys

        data = _read_at_most(sys.stdin.buffer, limit)
        if len(data) > limit:
            raise LotteryError(f"standard input: more than {limit} bytes")
        return data
    path = Path(path)
    if not path.exists():
        raise LotteryError(f"{path}: no such file")
    if path.is_dir():
        raise LotteryError(f"{path}: is a directory")
    try:
        with path.open("rb") as fh:
            data = _read_at_most(fh, limit)
    except OSError as exc:
        raise LotteryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise LotteryError(f"{path}: larger than {limit} bytes")
    return data


def check_input_file(path: str | os.PathLike) -> None:
    """Refuse a missing, unreadable or directory input at once (before any heavy import)."""
    if str(path) == "-":
        return
    path = Path(path)
    if not path.exists():
        raise LotteryError(f"{path}: no such file")
    if path.is_dir():
        raise LotteryError(f"{path}: is a directory")
    if not os.access(path, os.R_OK):
        raise LotteryError(f"{path}: cannot read (permission denied)")


def read_image(path: str | os.PathLike, *, allow_float: bool = False, min_side: int = MIN_SIDE,
               max_pixels: int = DEFAULT_MAX_PIXELS, data: bytes | None = None) -> torch.Tensor:
    """Read a PNG/JPEG/... (or, with allow_float, a .npy float observation) as a (3, H, W) float32 tensor.

    `data`: the file's bytes, already read (e.g. from standard input); `path` then only names it.
    The EXIF orientation is applied; an animated image gives its first frame with a warning;
    grayscale is replicated to RGB and RGBA drops its alpha channel, each with a warning.
    16-bit grayscale PNGs are read at full precision (scaled by 1/65535); 16-bit colour PNGs at
    8-bit precision (what Pillow gives), with a warning.
    """
    name = "standard input" if str(path) == "-" else str(path)
    if data is None:
        check_input_file(path)
        data = read_input_bytes(path)
    if data[:6] == b"\x93NUMPY" or (data is not None and str(path).lower().endswith(".npy")):
        if not allow_float:
            raise LotteryError(f"{name}: .npy float images are accepted only as restoration input")
        return _read_npy(data, name, min_side, max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow's warning threshold (89 MP) is not ours: check_size applies --max-pixels below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            w, h = im.size  # from the header: nothing decoded yet
            check_size(h, w, what=name, min_side=min_side, max_pixels=max_pixels)
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                warnings.warn(f"{name}: animated image with {frames} frames, only the first is used")
            # Pillow reads 16-bit colour PNGs as 8-bit RGB(A): say so instead of losing bits silently.
            wide = not im.mode.startswith("I") and any(";16" in str(getattr(t, "args", "")) for t in (im.tile or []))
            orientation = im.getexif().get(0x0112, 1)
            im.load()
            if orientation not in (1, None):
                im = ImageOps.exif_transpose(im)
                log.info("%s: EXIF orientation %s applied (the image is %dx%d as shown)", name, orientation, *im.size)
            tensor = _pil_to_tensor(im, name)
        if wide:
            warnings.warn(f"{name}: 16-bit colour image, read at 8-bit precision")
    except LotteryError:
        raise
    except Image.DecompressionBombError:
        raise LotteryError(bomb_message(name, max_pixels)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise LotteryError(f"{name}: not a readable image ({exc.__class__.__name__})") from None
    check_size(tensor.shape[1], tensor.shape[2], what=name, min_side=min_side, max_pixels=max_pixels)
    return tensor


def _pil_to_tensor(im: Image.Image, name: str) -> torch.Tensor:
    import torch

    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        warnings.warn(f"{name}: 16-bit grayscale image, converted to RGB")
        arr = np.repeat((arr / scale)[..., None], 3, axis=2)
        return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1).contiguous()
    if mode == "RGB":
        pass
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        warnings.warn(f"{name}: alpha channel dropped")
        im = im.convert("RGB")
    elif mode in ("L", "1"):
        warnings.warn(f"{name}: grayscale image, converted to RGB")
        im = im.convert("RGB")
    else:
        im = im.convert("RGB")
    arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0).contiguous()


def _npy_header(buf: io.BytesIO, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy header, without reading the array."""
    try:
        major, _ = np.lib.format.read_magic(buf)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif major in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"version {major}")
    except (ValueError, OSError, SyntaxError) as exc:
        raise LotteryError(f"{name}: not a readable .npy array ({exc})") from None
    return tuple(int(s) for s in shape), dtype


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image or .npy file from its header, without decoding its pixels
    (EXIF rotation not applied); LotteryError if it cannot be read."""
    name = str(path)
    try:
        if name.lower().endswith(".npy"):
            with open(path, "rb") as fh:
                shape, _ = _npy_header(fh, name)
            if len(shape) < 2:
                raise LotteryError(f"{name}: not an image array (shape {shape})")
            return shape[-2], shape[-1]
        with Image.open(path) as im:
            width, height = im.size
        return height, width
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise LotteryError(f"{name}: cannot read the image's size ({exc})") from None


def _read_npy(data: bytes, name: str, min_side: int, max_pixels: int) -> torch.Tensor:
    import torch

    buf = io.BytesIO(data)
    shape, dtype = _npy_header(buf, name)
    if len(shape) not in (2, 3):
        raise LotteryError(f"{name}: .npy image must be HxWx3 or 3xHxW, got shape {shape}")
    if len(shape) == 3 and shape[0] == 3 and shape[2] != 3:
        h, w = shape[1], shape[2]
    else:
        h, w = shape[0], shape[1]
    check_size(h, w, what=name, min_side=min_side, max_pixels=max_pixels)  # before the array is read
    if not np.issubdtype(dtype, np.floating):
        raise LotteryError(f"{name}: .npy image must hold floats on the 0-1 scale, got {dtype}")
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - buf.tell() < expected:
        raise LotteryError(f"{name}: truncated .npy array ({len(data) - buf.tell()} bytes of data, the header says {expected})")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise LotteryError(f"{name}: not a readable .npy array ({exc})") from None
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[0] == 3 and arr.shape[2] != 3:
        arr = np.transpose(arr, (1, 2, 0))
    if arr.shape[2] != 3:
        raise LotteryError(f"{name}: .npy image must have 3 channels, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise LotteryError(f"{name}: .npy image holds NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).contiguous()


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Round a [0, 1] float image to 8-bit (round half up after clamping), shape kept."""
    import torch

    return torch.floor(image.detach().to(torch.float64).clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file beside it, then rename: no partial file is
    ever left behind. The file gets the permissions of a normally created one (the umask applies).
    "-" writes to standard output."""
    if str(path) == "-":
        import sys

        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    write_atomically(path, data)


def encode_png(image: torch.Tensor) -> bytes:
    """PNG bytes of a (3, H, W) image: float in [0, 1] (rounded to 8 bits) or uint8."""
    import torch

    arr = image if image.dtype == torch.uint8 else to_uint8(image)
    buf = io.BytesIO()
    Image.fromarray(arr.permute(1, 2, 0).contiguous().numpy(), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | os.PathLike, image: torch.Tensor) -> None:
    """Write a (3, H, W) image as an 8-bit RGB PNG, atomically ("-": standard output)."""
    atomic_write_bytes(path, encode_png(image))


def encode_npy(image: torch.Tensor) -> bytes:
    """A float observation as HxWx3 float32 .npy bytes (lossless)."""
    buf = io.BytesIO()
    np.save(buf, image.detach().permute(1, 2, 0).contiguous().numpy().astype(np.float32), allow_pickle=False)
    return buf.getvalue()


def write_npy(path: str | os.PathLike, image: torch.Tensor) -> None:
    """Write a float observation losslessly as an HxWx3 float32 .npy, atomically."""
    atomic_write_bytes(path, encode_npy(image))
