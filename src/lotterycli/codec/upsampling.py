"""Learned x2 upsampling shared by every latent level (one transposed-convolution kernel).

Starting from the coarsest grid: upsample x2, crop to the next grid's size, stack with it; the
result has one channel per level at full resolution.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import fixedpoint


def bicubic_kernel_1d(size: int, a: float = -0.75) -> torch.Tensor:
    """Taps of bicubic x2 upsampling for a stride-2 transposed convolution of `size` taps."""
    taps = []
    for k in range(size):
        t = abs((k - (size - 1) / 2) / 2)
        if t <= 1:
            w = (a + 2) * t**3 - (a + 3) * t**2 + 1
        elif t < 2:
            w = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        else:
            w = 0.0
        taps.append(w)
    return torch.tensor(taps)


def _upsample_levels(grids: list[torch.Tensor], kernel: torch.Tensor, round_fn=None) -> torch.Tensor:
    size = kernel.shape[-1]
    pad = (size - 2) // 2
    k = kernel.view(1, 1, size, size)
    x = grids[-1][None]
    for level in range(len(grids) - 2, -1, -1):
        h, w = grids[level].shape
        up = F.conv_transpose2d(x[:, None], k, stride=2, padding=pad)[:, 0, :h, :w]
        if round_fn is not None:
            up = round_fn(up)
        x = torch.cat([up, grids[level][None]])
    return x


class Upsampling(nn.Module):
    def __init__(self, kernel_size: int):
        super().__init__()
        k1 = bicubic_kernel_1d(kernel_size)
        self.kernel = nn.Parameter(torch.outer(k1, k1))

    def forward(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """Latent grids (level 0 first) -> (n_levels, H, W), coarsest level first."""
        return _upsample_levels(grids, self.kernel)


def upsampling_exact(grids: list[torch.Tensor], kernel: torch.Tensor) -> torch.Tensor:
    """Fixed-point version for the decoder: integer grids, dyadic kernel, rounding each level."""
    return _upsample_levels([g.to(torch.float64) for g in grids], kernel.to(torch.float64), fixedpoint.round_fixed)
