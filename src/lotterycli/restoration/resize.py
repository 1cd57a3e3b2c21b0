"""Bicubic resampling by integer factors, pixel for pixel as Pillow's `Image.resize(..., BICUBIC)`.

Downsampling is the super-resolution operator (anti-aliased: the Keys kernel a = -0.5 stretched
by the factor, support 2 * scale taps each side); upsampling is the plain bicubic baseline. The
boundary is handled as Pillow does: taps outside the image are dropped and the remaining weights
renormalised to sum to 1 (constants are preserved exactly). Both are separable strided
convolutions with zero padding divided by the precomputed sum of in-range weights, differentiable.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LotteryError

CUBIC_A = -0.5


def _cubic(d: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (Pillow / Matlab 'bicubic')."""
    d = np.abs(np.asarray(d, dtype=np.float64))
    a = CUBIC_A
    out = np.zeros_like(d)
    near = d < 1
    far = (d >= 1) & (d < 2)
    out[near] = ((a + 2) * d[near] - (a + 3)) * d[near] ** 2 + 1
    out[far] = (((d[far] - 5) * d[far] + 8) * d[far] - 4) * a
    return out


@cache
def _down_taps(scale: int) -> tuple[int, np.ndarray]:
    """Offsets m (input index = scale*i + m) from m0 on, and their unnormalised weights."""
    # output i is centred at input coordinate (i + 0.5) * scale; tap x = scale*i + m sits at
    # distance d = m + 0.5 - 0.5*scale; the kernel is cubic(d / scale), support |d| < 2*scale.
    m = np.arange(-3 * scale, 3 * scale + 1)
    d = m + 0.5 - 0.5 * scale
    keep = np.abs(d) < 2 * scale
    m, d = m[keep], d[keep]
    w = _cubic(d / scale)
    nz = np.nonzero(w)[0]
    m, w = m[nz[0] : nz[-1] + 1], w[nz[0] : nz[-1] + 1]
    return int(m[0]), w


@lru_cache(maxsize=64)
def _down_norm(scale: int, n_out: int) -> np.ndarray:
    """Sum of the in-range weights for each output sample (Pillow renormalises at the border)."""
    m0, w = _down_taps(scale)
    n_in = n_out * scale
    idx = scale * np.arange(n_out)[:, None] + m0 + np.arange(len(w))[None, :]
    inside = (idx >= 0) & (idx < n_in)
    return (w[None, :] * inside).sum(axis=1)


@cache
def _up_taps(scale: int) -> np.ndarray:
    """(scale, 5) weights: output scale*i + p uses inputs i-2 .. i+2 (unnormalised)."""
    # output o = scale*i + p is centred at input coordinate (o + 0.5) / scale; tap x = i + m
    # sits at distance d = m + 0.5 - (p + 0.5) / scale, kernel cubic(d), support |d| < 2.
    p = np.arange(scale)[:, None]
    m = np.arange(-2, 3)[None, :]
    return _cubic(m + 0.5 - (p + 0.5) / scale)


@lru_cache(maxsize=64)
def _up_norm(scale: int, n_in: int) -> np.ndarray:
    w = _up_taps(scale)
    idx = np.arange(n_in)[:, None] + np.arange(-2, 3)[None, :]
    inside = ((idx >= 0) & (idx < n_in)).astype(np.float64)
    return inside @ w.T  # (n_in, scale)


_TENSOR_CACHE: dict = {}


def _cached(key, make) -> torch.Tensor:
    t = _TENSOR_CACHE.get(key)
    if t is None:
        if len(_TENSOR_CACHE) > 256:
            _TENSOR_CACHE.clear()
        t = _TENSOR_CACHE[key] = make()
    return t


def bicubic_downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Anti-aliased bicubic downsampling by an integer factor (Pillow BICUBIC, reducing_gap=None).

    x: (..., H, W) with H and W divisible by ``scale``; returns (..., H/scale, W/scale) in x's dtype.
    Differentiable; a separable strided convolution.
    """
    scale = int(scale)
    *lead, h, w = x.shape
    if h % scale or w % scale:
        raise LotteryError(f"image is {w}x{h}: both sides must be divisible by the scale factor {scale}")
    if scale == 1:
        return x
    m0, taps = _down_taps(scale)
    k = len(taps)
    left = -m0
    right = m0 + k - scale  # last tap of the last output: scale*(n-1) + m0 + k - 1 <= L - 1 + right
    dev, dt = x.device, x.dtype
    kern = _cached(("dk", scale, dev, dt), lambda: torch.as_tensor(taps, dtype=dt, device=dev))
    hn, wn = h // scale, w // scale
    norm = _cached(
        ("dn", scale, hn, wn, dev, dt),
        lambda: torch.as_tensor(np.outer(_down_norm(scale, hn), _down_norm(scale, wn)), dtype=dt, device=dev),
    )
    z = x.reshape(-1, 1, h, w)
    z = F.conv2d(F.pad(z, (left, right, 0, 0)), kern.view(1, 1, 1, k), stride=(1, scale))
    z = F.conv2d(F.pad(z, (0, 0, left, right)), kern.view(1, 1, k, 1), stride=(scale, 1))
    z = z / norm
    return z.reshape(*lead, hn, wn)


def _up_last(z: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling along the last axis of z (N, 1, R, n) -> (N, 1, R, n*scale)."""
    n_rows, n = z.shape[-2], z.shape[-1]
    dev, dt = z.device, z.dtype
    w = torch.as_tensor(_up_taps(scale), dtype=dt, device=dev).view(scale, 1, 1, 5)
    norm = torch.as_tensor(_up_norm(scale, n).T, dtype=dt, device=dev)  # (scale, n)
    out = F.conv2d(F.pad(z, (2, 2, 0, 0)), w)  # (N, scale, R, n)
    out = out / norm[None, :, None, :]
    return out.permute(0, 2, 3, 1).reshape(z.shape[0], 1, n_rows, n * scale)


def upsample_bicubic(y: torch.Tensor, scale: int) -> torch.Tensor:
    """Plain bicubic upsampling baseline by an integer factor (Pillow BICUBIC, a = -0.5).

    y: (3, h, w) or (B, 3, h, w) (any (..., h, w)); returns (..., h*scale, w*scale), not clipped.
    """
    scale = int(scale)
    if scale < 1:
        raise LotteryError(f"upsampling factor must be a positive integer, got {scale}")
    if scale == 1:
        return y.clone()
    *lead, h, w = y.shape
    z = y.reshape(-1, 1, h, w)
    z = _up_last(z, scale)
    z = _up_last(z.transpose(-1, -2), scale).transpose(-1, -2)
    return z.reshape(*lead, h * scale, w * scale).contiguous()
