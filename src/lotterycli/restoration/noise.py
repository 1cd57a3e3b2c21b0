"""Gaussian noise: the protocol that simulates it, and the estimate of its level from an image.

Simulation: noise is drawn in float64 with ``numpy.random.default_rng(seed).normal(0.0, sigma,
size=(h, w, C))`` (the H x W x C order of a numpy image; ``(B, h, w, C)`` for a batch), transposed
to (C, h, w), added to A(x) in float64, and the sum cast to float32, neither clipped nor rounded.
With sigma == 0 no random number is drawn.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import LotteryError


def add_noise(clean: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """clean + default_rng(seed).normal(0, sigma, HxWxC order), float64 sum cast to float32."""
    clean = clean.detach()
    if sigma == 0:
        return clean.to(torch.float32).clone()
    base = clean.cpu().to(torch.float64).numpy()
    rng = np.random.default_rng(seed)
    if base.ndim == 3:  # (C, h, w) <- noise drawn as (h, w, C)
        noise = rng.normal(0.0, sigma, size=(base.shape[1], base.shape[2], base.shape[0]))
        noise = np.transpose(noise, (2, 0, 1))
    else:  # (B, C, h, w) <- noise drawn as (B, h, w, C)
        noise = rng.normal(0.0, sigma, size=(base.shape[0], base.shape[2], base.shape[3], base.shape[1]))
        noise = np.transpose(noise, (0, 3, 1, 2))
    y = (base + noise).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(y)).to(clean.device)


def estimate_sigma(y: torch.Tensor) -> float:
    """Robust noise level (0-1 scale) of a noisy image, Donoho's wavelet MAD estimator.

    Per channel: the finest diagonal Haar subband HH = (a - b - c + d) / 2 over 2x2 blocks
    (orthonormal, so white noise of std sigma gives HH of std sigma), sigma_c = median(|HH|) / 0.6745;
    the channel estimates are averaged. Accepts (3, H, W), (B, 3, H, W) (all images pooled per
    channel) or (H, W).
    """
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(np.asarray(y))
    z = y.detach().to(torch.float64).cpu()
    if z.dim() == 2:
        z = z[None]
    if z.dim() == 4:  # crop each image to even size, then stack them vertically per channel
        z = z[..., : z.shape[-2] // 2 * 2, :]
        z = z.transpose(0, 1).reshape(z.shape[1], -1, z.shape[-1])
    if z.dim() != 3:
        raise LotteryError(f"cannot estimate noise of a tensor of shape {tuple(y.shape)}")
    h, w = z.shape[-2] // 2 * 2, z.shape[-1] // 2 * 2
    if h < 2 or w < 2:
        raise LotteryError(f"image is {z.shape[-1]}x{z.shape[-2]}: too small to estimate its noise level")
    z = z[:, :h, :w]
    hh = (z[:, 0::2, 0::2] - z[:, 0::2, 1::2] - z[:, 1::2, 0::2] + z[:, 1::2, 1::2]) / 2.0
    mad = hh.abs().reshape(hh.shape[0], -1).median(dim=1).values / 0.6745
    return float(mad.mean())
