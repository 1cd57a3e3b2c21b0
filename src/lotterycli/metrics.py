"""Image quality metrics: PSNR and SSIM on (3, H, W) tensors.

Both accept float tensors on the 0-1 scale or uint8 tensors (divided by 255), and any mix of
the two. Computation is done in float64 on the CPU so results do not depend on the device.

- `psnr(a, b, data_range=1.0)`: 10 log10(data_range^2 / MSE) in dB over all channels and pixels;
  `inf` for identical images.
- `ssim(a, b)`: the standard Gaussian-window SSIM of Wang et al. (2004): 11x11 window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, population (not sample) statistics, on the 0-1 scale, mean over the
  "valid" region (windows fully inside the image), computed per channel and averaged. This is
  what `skimage.metrics.structural_similarity(a, b, channel_axis=-1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=1)` computes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "mse"]

_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # int(3.5 * 1.5 + 0.5): skimage's truncate=3.5 gives an 11x11 window
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _as_float64(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    x = x.detach().to("cpu")
    if x.dtype == torch.uint8:
        return x.to(torch.float64) / 255.0
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a float or uint8 tensor, got {x.dtype}")
    return x.to(torch.float64)


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a64, b64 = _as_float64(a, "a"), _as_float64(b, "b")
    if a64.shape != b64.shape:
        raise ValueError(f"shape mismatch: {tuple(a64.shape)} vs {tuple(b64.shape)}")
    if a64.numel() == 0:
        raise ValueError("empty images")
    return a64, b64


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error on the 0-1 scale (uint8 inputs are divided by 255)."""
    a64, b64 = _pair(a, b)
    return float(torch.mean((a64 - b64) ** 2))


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; `math.inf` when the images are identical."""
    if data_range <= 0:
        raise ValueError("data_range must be positive")
    err = mse(a, b)
    if err == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / err)


def _gaussian_window(device=None) -> torch.Tensor:
    r = _SSIM_RADIUS
    x = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    g = torch.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
    g = g / g.sum()
    return g


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean structural similarity of two (C, H, W) (or (H, W)) images, channels averaged.

    Images smaller than the 11x11 window raise ValueError (as skimage does).
    """
    a64, b64 = _pair(a, b)
    if a64.dim() == 2:
        a64, b64 = a64[None], b64[None]
    if a64.dim() != 3:
        raise ValueError(f"expected (C, H, W) or (H, W) images, got shape {tuple(a64.shape)}")
    c, h, w = a64.shape
    win = 2 * _SSIM_RADIUS + 1
    if h < win or w < win:
        raise ValueError(f"images of {w}x{h} are smaller than the {win}x{win} SSIM window")

    g = _gaussian_window()
    # Separable Gaussian filtering, 'valid' region only: each channel is filtered independently.
    kh = g.view(1, 1, win, 1).expand(5 * c, 1, win, 1).contiguous()
    kw = g.view(1, 1, 1, win).expand(5 * c, 1, 1, win).contiguous()
    x = a64[None]
    y = b64[None]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (1, 5C, H, W)
    filt = F.conv2d(F.conv2d(stack, kh, groups=5 * c), kw, groups=5 * c)
    mu_x, mu_y, xx, yy, xy = filt.split(c, dim=1)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    smap = num / den  # (1, C, H-10, W-10)
    return float(smap.mean(dim=(0, 2, 3)).mean())
