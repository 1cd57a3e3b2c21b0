"""Baselines: image codecs (Pillow) and classical / deep-image-prior restoration.

Codecs: `codec_point(img, codec, quality)` encodes a uint8 or float (3, H, W) image with JPEG,
WebP (method 6) or AVIF (4:4:4, speed 6) and reports bpp from the real file bytes and the PSNR of the
decoded image. `codec_sweep` runs a list of qualities.

Restoration: every function takes float (3, H, W) tensors on the 0-1 scale (observations may
leave [0, 1]) and returns `(image, seconds)` with the image a float (3, H, W) tensor clamped to [0, 1].
- `bm3d_denoise` (CBM3D from the `bm3d` package, noise sigma known),
- `nlmeans_denoise` (scikit-image, h = 0.8 sigma, the scikit-image example setting),
- `biharmonic_inpaint` (scikit-image),
- `bicubic_upsample` and `bm3d_then_bicubic` for super-resolution,
- `dip_restore`: a deep image prior (ConvDecoder) fitted through the operator's forward for a fixed
  number of iterations and reported at its final iterate.
Optional dependencies are imported lazily; `available()` says which are usable.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CODECS = ("jpeg", "webp", "avif")

JPEG_QUALITIES = [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
WEBP_QUALITIES = [0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
AVIF_QUALITIES = [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
DEFAULT_QUALITIES = {"jpeg": JPEG_QUALITIES, "webp": WEBP_QUALITIES, "avif": AVIF_QUALITIES}

CODEC_SETTINGS = {
    "jpeg": "Pillow libjpeg, 4:2:0 subsampling (Pillow default), optimize=False",
    "webp": "Pillow libwebp, lossy, method=6",
    "avif": "Pillow AVIF, 4:4:4 subsampling, speed=6",
}


# --------------------------------------------------------------------------- availability

def available() -> dict[str, str | None]:
    """Name -> None if usable, else the reason it is not."""
    out: dict[str, str | None] = {}
    try:
        from PIL import features

        out["jpeg"] = None if features.check("jpg") else "Pillow built without JPEG"
        out["webp"] = None if features.check("webp") else "Pillow built without WebP"
        out["avif"] = None if features.check("avif") else "Pillow built without AVIF (needs Pillow >= 11.3 with libavif)"
    except Exception as exc:  # pragma: no cover - Pillow is a runtime dependency
        out.update(jpeg=str(exc), webp=str(exc), avif=str(exc))
    for name, mod in (("bm3d", "bm3d"), ("skimage", "skimage"), ("scipy", "scipy"), ("matplotlib", "matplotlib")):
        try:
            __import__(mod)
            out[name] = None
        except Exception as exc:
            out[name] = f"`{mod}` not importable ({exc.__class__.__name__}: {exc}); pip install '.[bench]'"
    return out


# --------------------------------------------------------------------------- helpers

def to_uint8(img: torch.Tensor) -> torch.Tensor:
    if img.dtype == torch.uint8:
        return img
    return torch.floor(img.detach().to(torch.float64).clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def to_hwc(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) tensor -> (H, W, 3) float64 numpy array (values as given)."""
    return img.detach().cpu().permute(1, 2, 0).to(torch.float64).numpy()


def from_hwc(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).clamp(0, 1).contiguous()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    from lotterycli.metrics import psnr

    return psnr(a, b)


# --------------------------------------------------------------------------- codecs

def encode(img_u8: torch.Tensor, codec: str, quality: int) -> bytes:
    from PIL import Image

    arr = img_u8.permute(1, 2, 0).contiguous().numpy()
    im = Image.fromarray(arr, mode="RGB")
    buf = io.BytesIO()
    if codec == "jpeg":
        im.save(buf, format="JPEG", quality=int(quality))
    elif codec == "webp":
        im.save(buf, format="WEBP", quality=int(quality), method=6)
    elif codec == "avif":
        im.save(buf, format="AVIF", quality=int(quality), speed=6, subsampling="4:4:4")
    else:
        raise ValueError(f"unknown codec {codec!r}")
    return buf.getvalue()


def decode(data: bytes) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def codec_point(img: torch.Tensor, codec: str, quality: int) -> dict:
    """One RD point: {codec, quality, n_bytes, bpp, psnr, seconds (encode), decode_seconds}."""
    u8 = to_uint8(img)
    h, w = u8.shape[-2:]
    t0 = time.perf_counter()
    data = encode(u8, codec, quality)
    t1 = time.perf_counter()
    dec = decode(data)
    t2 = time.perf_counter()
    return {
        "codec": codec,
        "quality": int(quality),
        "n_bytes": len(data),
        "bpp": 8.0 * len(data) / (h * w),
        "psnr": _psnr(dec, u8),
        "seconds": t1 - t0,
        "decode_seconds": t2 - t1,
    }


def codec_sweep(img: torch.Tensor, codec: str, qualities: list[int] | None = None) -> list[dict]:
    return [codec_point(img, codec, q) for q in (qualities or DEFAULT_QUALITIES[codec])]


# --------------------------------------------------------------------------- restoration baselines

def _timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bm3d_denoise(y: torch.Tensor, sigma: float) -> tuple[torch.Tensor, float]:
    """CBM3D (colour BM3D in the opponent colour space) with the true noise sigma (0-1 scale)."""
    import bm3d

    def run():
        return from_hwc(bm3d.bm3d_rgb(to_hwc(y), sigma_psd=float(sigma)))

    return _timed(run)


def nlmeans_denoise(y: torch.Tensor, sigma: float) -> tuple[torch.Tensor, float]:
    from skimage.restoration import denoise_nl_means

    def run():
        out = denoise_nl_means(
            to_hwc(y), h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6, channel_axis=-1
        )
        return from_hwc(out)

    return _timed(run)


def biharmonic_inpaint(y: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, float]:
    """`observed`: bool (H, W) or (1|3, H, W), True where the pixel was seen."""
    from skimage.restoration import inpaint_biharmonic

    obs = observed.bool()
    if obs.dim() == 3:
        obs = obs.all(dim=0)
    missing = (~obs).cpu().numpy()

    def run():
        return from_hwc(inpaint_biharmonic(to_hwc(y), missing, channel_axis=-1))

    return _timed(run)


def _bicubic(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic upsampling to `size`: the library's Pillow-compatible kernel (a = -0.5) for integer
    factors, else torch's bicubic interpolation; clamped to [0, 1]."""
    h, w = y.shape[-2:]
    if size[0] % h == 0 and size[0] // h == size[1] // w and size[1] % w == 0:
        try:
            from lotterycli.restoration.resize import upsample_bicubic

            return upsample_bicubic(y.float(), size[0] // h).clamp(0, 1)
        except ImportError:
            pass
    out = F.interpolate(y[None].float(), size=size, mode="bicubic", align_corners=False)
    return out[0].clamp(0, 1)


def bicubic_upsample(y: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, float]:
    return _timed(lambda: _bicubic(y, size))


def bm3d_then_bicubic(y: torch.Tensor, sigma: float, size: tuple[int, int]) -> tuple[torch.Tensor, float]:
    import bm3d

    def run():
        den = from_hwc(bm3d.bm3d_rgb(to_hwc(y), sigma_psd=float(sigma)))
        return _bicubic(den, size)

    return _timed(run)


class ConvDecoder(nn.Module):
    """ConvDecoder (Darestani & Heckel 2021): fixed random input, [upsample, conv3x3, ReLU, BN] x L."""

    def __init__(self, height: int, width: int, channels: int = 64, levels: int = 4, seed: int = 0):
        super().__init__()
        self.sizes = [(math.ceil(height / 2 ** (levels - i)), math.ceil(width / 2 ** (levels - i))) for i in range(levels)]
        self.sizes.append((height, width))
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("z", torch.rand(1, channels, *self.sizes[0], generator=g) * 0.1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=True), nn.ReLU(), nn.BatchNorm2d(channels))
            for _ in range(levels)
        )
        self.head = nn.Conv2d(channels, 3, 1)

    def forward(self) -> torch.Tensor:
        h = self.z
        for size, block in zip(self.sizes[1:], self.blocks):
            h = block(F.interpolate(h, size=size, mode="bilinear", align_corners=False))
        return torch.sigmoid(self.head(h))[0]


def dip_restore(
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    size: tuple[int, int],
    *,
    iters: int = 1000,
    channels: int = 64,
    lr: float = 0.01,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[torch.Tensor, float]:
    """Fit a ConvDecoder g minimising loss_fn(g, y) for `iters` Adam steps; return the final iterate.

    `loss_fn` is the operator's data term, e.g. `op.loss` (MSE of A(g) against y over the observed
    entries) or `lambda x, y: F.mse_loss(A(x), y)`.
    """

    def run():
        torch.manual_seed(seed)
        net = ConvDecoder(size[0], size[1], channels=channels, seed=seed).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        target = y.to(device).float()
        for _ in range(iters):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(), target)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return net().detach().cpu().clamp(0, 1)

    return _timed(run)
