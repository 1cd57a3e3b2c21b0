"""The test images and deterministic centre crops.

Two sets: the Kodak images (`kodim01` ... `kodim24`), read from `$LOTTERY_KODAK` if set, else
from `../shared/data/kodak` beside the repository; and colour photographs that scikit-image ships
in `skimage.data` (`PHOTOS`; the `bench` extra installs it), so that no default is chosen on the
Kodak images alone. Crops are always the centre of the image (for odd margins the extra pixel goes
to the bottom/right), so every run sees the same pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_KODAK = REPO_ROOT.parent / "shared" / "data" / "kodak"
KODAK_ENV = "LOTTERY_KODAK"

# The benchmark protocol uses kodim01-08.
PROTOCOL_IMAGES = [f"kodim{i:02d}" for i in range(1, 9)]
# Colour photographs shipped with scikit-image (name -> skimage.data function), none from Kodak.
PHOTOS = {
    "astronaut": "astronaut", "chelsea": "chelsea", "coffee": "coffee", "rocket": "rocket",
    "motorcycle": "stereo_motorcycle", "hubble": "hubble_deep_field", "ihc": "immunohistochemistry",
    "retina": "retina",
}
IMAGE_SETS = {"kodak": PROTOCOL_IMAGES, "photos": list(PHOTOS)}


class DataMissing(RuntimeError):
    """The Kodak directory or an image in it is not there."""


def kodak_dir() -> Path:
    env = os.environ.get(KODAK_ENV)
    return Path(env).expanduser() if env else DEFAULT_KODAK


def image_index(name: str) -> int:
    """kodim05 -> 5, a photo -> 100 + its place in PHOTOS (the number that seeds its noise)."""
    if name in PHOTOS:
        return 100 + list(PHOTOS).index(name)
    digits = "".join(ch for ch in name if ch.isdigit())
    if not digits:
        raise ValueError(f"{name!r} has no image number")
    return int(digits)


def list_images(n: int | None = None, names: list[str] | None = None) -> list[str]:
    """The first `n` protocol images (kodim01..kodim08), or exactly `names`."""
    if names:
        return list(names)
    imgs = PROTOCOL_IMAGES
    return imgs if n is None else imgs[: max(0, n)]


def image_path(name: str, root: Path | None = None) -> Path:
    root = kodak_dir() if root is None else Path(root)
    path = root / (name if name.endswith(".png") else f"{name}.png")
    if not path.exists():
        raise DataMissing(f"{path} not found (set {KODAK_ENV} to the directory holding kodimNN.png)")
    return path


def load_image(name: str, root: Path | None = None) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]: a Kodak image read through the library's own reader, or a
    photo of `PHOTOS` from scikit-image."""
    if name in PHOTOS:
        return load_photo(name)
    from lotterycli.images import read_image

    return read_image(image_path(name, root))


def load_photo(name: str) -> torch.Tensor:
    try:
        import skimage.data
    except ImportError:
        raise DataMissing("the photo set needs scikit-image (pip install 'lotterycli[bench]')") from None
    arr = getattr(skimage.data, PHOTOS[name])()
    if isinstance(arr, tuple):  # a stereo pair: its left image
        arr = arr[0]
    return torch.from_numpy(arr[..., :3].copy()).permute(2, 0, 1).float().div_(255.0).contiguous()


def crop_box(height: int, width: int, size: int | tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, crop_h, crop_w) of the centre crop; the crop is clipped to the image."""
    ch, cw = (size, size) if isinstance(size, int) else size
    ch, cw = min(ch, height), min(cw, width)
    top = (height - ch) // 2
    left = (width - cw) // 2
    return top, left, ch, cw


def center_crop(img: torch.Tensor, size: int | tuple[int, int] | None) -> torch.Tensor:
    """Centre crop of a (C, H, W) tensor to `size` (int: square; None: unchanged), contiguous copy."""
    if size is None:
        return img.clone()
    top, left, ch, cw = crop_box(img.shape[-2], img.shape[-1], size)
    return img[..., top : top + ch, left : left + cw].contiguous().clone()


def load_crops(names: list[str], size: int | None, root: Path | None = None) -> dict[str, torch.Tensor]:
    return {name: center_crop(load_image(name, root), size) for name in names}
