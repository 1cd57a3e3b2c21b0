"""Learned x2 upsampling shared by every latent level (one transposed-convolution kernel).

Starting from the coarsest grid: upsample x2, crop to the next grid's size, stack with it; the
result has one channel per level at full resolution.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import torch
from torch import nn
from torch.nn import functional as F

from . import device_policy, fixedpoint
from .overlap_add import overlap_add


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


@cache
def initial_kernel_integers(size: int, shift: int) -> tuple[int, ...]:
    """The initial (bicubic) kernel on the grid 2**-shift, row-major, in exact rational arithmetic.

    Why: the file may store the learned kernel as its difference from this prediction (a fitted
    kernel stays close to bicubic), and encoder and decoder must compute it identically on every
    machine, hence fractions rather than floats (halves round up).
    """
    a = Fraction(-3, 4)
    taps = []
    for k in range(size):
        t = abs(Fraction(2 * k - (size - 1), 4))  # (k - (size - 1) / 2) / 2, as in bicubic_kernel_1d
        if t <= 1:
            taps.append((a + 2) * t**3 - (a + 3) * t**2 + 1)
        elif t < 2:
            taps.append(a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a)
        else:
            taps.append(Fraction(0))
    scale = Fraction(2) ** shift
    return tuple(int((ti * tj * scale + Fraction(1, 2)).__floor__()) for ti in taps for tj in taps)


def _transposed_x2(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Stride-2 transposed convolution of (C, 1, h, w) maps with a (K, K) kernel (padding (K-2)/2)."""
    size = kernel.shape[-1]
    return F.conv_transpose2d(x, kernel.view(1, 1, size, size), stride=2, padding=(size - 2) // 2)


def _phase_taps(size: int, phase: int) -> tuple[int, int]:
    """(d_lo, d_hi): output 2q+phase of the x2 transposed convolution takes inputs q-d, d_lo <= d <= d_hi,
    through kernel tap phase + p + 2d (p = (K-2)/2)."""
    p = (size - 2) // 2
    return -((phase + p) // 2), (size - 1 - phase - p) // 2


def _polyphase_weights(kernel: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """The transposed convolution as one correlation with 4 output channels, one per phase (a, b).

    Over the input padded by `before` zeros, correlation index j = before - d, so phase a uses
    w_a[j] = kernel[a + p + 2(before - j)] (zero where that tap does not exist).
    Returns (4, 1, T, T) weights, before, after.
    """
    size = kernel.shape[-1]
    p = (size - 2) // 2
    bounds = [_phase_taps(size, a) for a in (0, 1)]
    before, after = max(hi for _, hi in bounds), -min(lo for lo, _ in bounds)
    taps = before + after + 1
    w = kernel.new_zeros(2, 2, taps, taps)
    for a in (0, 1):
        for b in (0, 1):
            for j in range(taps):
                for k in range(taps):
                    ky, kx = a + p + 2 * (before - j), b + p + 2 * (before - k)
                    if 0 <= ky < size and 0 <= kx < size:
                        w[a, b, j, k] = kernel[ky, kx]
    return w.view(4, 1, taps, taps), before, after


def _polyphase_x2(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Same values as _transposed_x2 (up to its cropped size), 3-4x faster for float64 (decoder).

    float64 conv_transpose2d has no fast kernel; one correlation with a channel per output phase
    plus a pixel shuffle computes the same exact sums (measured faster than four per-phase calls).
    """
    w, before, after = _polyphase_weights(kernel)
    y = F.conv2d(F.pad(x, (before, after, before, after)), w)
    return F.pixel_shuffle(y, 2)


@cache
def _polyphase_gather(size: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Where each polyphase weight comes from in the flattened (K, K) kernel: (index, valid, before,
    after), so the training path builds the (4, T*T) weights with one differentiable gather
    instead of `_polyphase_weights`' Python loops."""
    probe = torch.arange(1, size * size + 1, dtype=torch.float64).view(size, size)
    w, before, after = _polyphase_weights(probe)
    flat = w.reshape(4, -1)
    valid = flat > 0
    index = torch.where(valid, flat.long() - 1, torch.zeros_like(flat, dtype=torch.long))
    return index, valid, before, after


class _PolyphaseX2(torch.autograd.Function):
    """x2 transposed convolution of (N, h, w) maps, as `_polyphase_x2`, with a hand-written backward.

    Why: oneDNN's backward of a one-channel convolution was several times slower than its forward on
    a 2-core AVX2 EPYC (the upsampling part of a 256x256 step: 43 -> 17 ms on one thread with this
    backward). The input gradient is one small matmul (taps x phases) whose T*T shifted planes are
    added up (`overlap_add`); the weight gradient is one correlation of the input with the output
    gradient, the case oneDNN handles well (as in the ARM). Same sums as conv_transpose2d.
    """

    @staticmethod
    def forward(ctx, x, w, before, after):
        n, h, wd = x.shape
        taps = before + after + 1
        xp = F.pad(x, (before, after, before, after))
        y = F.conv2d(xp[:, None], w.view(4, 1, taps, taps))
        ctx.save_for_backward(xp, w)
        ctx.geometry = (before, taps)
        return F.pixel_shuffle(y, 2)[:, 0]

    @staticmethod
    def backward(ctx, grad):
        xp, w = ctx.saved_tensors
        before, taps = ctx.geometry
        n, hp, wp = xp.shape
        h, wd = hp - taps + 1, wp - taps + 1
        gy = F.pixel_unshuffle(grad.contiguous()[:, None], 2)  # (N, 4, h, w)
        phases = gy.transpose(0, 1).reshape(4, -1)  # (4, N*h*w), phases first
        gx = gw = None
        if ctx.needs_input_grad[0]:
            # One (T*T, 4) x (4, N*h*w) product, phases first so that each tap's rows are one
            # contiguous (N, h, w) block (a batched matmul here was computed transposed and copied).
            per_tap = (w.t() @ phases).view(taps * taps, n, h, wd)
            gxp = overlap_add(per_tap, taps, taps)
            gx = gxp[:, before : before + h, before : before + wd]
        if ctx.needs_input_grad[1]:
            if not device_policy.launch_bound(xp):
                gw = F.conv2d(xp[None], gy.transpose(0, 1)).reshape(4, taps * taps)
            else:  # image-sized kernels are slow in cuDNN (see arm._weight_grad): a matmul instead
                cols = F.unfold(xp[:, None], (taps, taps))  # (N, T*T, h*w): one im2col, not T*T slices
                gw = phases @ cols.transpose(0, 1).reshape(taps * taps, -1).t()
        return gx, gw, None, None


def feature_channel(level: int, n_levels: int) -> int:
    """The channel of the upsampled stack that carries latent grid `level` (the stack holds the
    coarsest level first; each channel is upsampled on its own, so an all-zero grid gives an
    all-zero channel)."""
    return n_levels - 1 - level


def _upsample_levels(grids: list[torch.Tensor], kernel: torch.Tensor, round_fn=None, up_fn=_transposed_x2) -> torch.Tensor:
    x = grids[-1][None]
    for level in range(len(grids) - 2, -1, -1):
        h, w = grids[level].shape
        up = up_fn(x[:, None], kernel)[:, 0, :h, :w]
        if round_fn is not None:
            up = round_fn(up)
        x = torch.cat([up, grids[level][None]])
    return x


def upsampled_rows(grids: list[torch.Tensor], a: int, b: int, up, margin: int, level: int = 0,
                   cast=None, round_fn=None) -> torch.Tensor:
    """Rows [a, b) (clipped to the grid) of the stack `_upsample_levels` builds at `level`:
    (n_levels - level, rows, width), from slices of the grids only.

    Why: the whole stack holds n_levels values per pixel at full resolution; a band of rows of
    level l needs only the rows of level l + 1 around half of them (the kernel's reach, `margin`
    rows of the coarser grid), so each band is computed from its own slices. The rows kept are
    beyond the reach of the slices' zero-padded edges: the values are those of the whole-image
    computation (the exact decoder's bit for bit; float sums may round differently).
    `up`: (C, h, w) -> (C, 2h, 2w); `cast`: applied to each grid slice; `round_fn`: to each
    upsampled level (the decoder's fixed-point rounding).
    """
    grid = grids[level]
    h, w = grid.shape
    a, b = max(0, a), min(h, b)
    own = grid[a:b][None] if cast is None else cast(grid[a:b])[None]
    if level == len(grids) - 1:
        return own
    s, e = a // 2 - margin, -(-b // 2) + margin
    coarse = upsampled_rows(grids, s, e, up, margin, level + 1, cast, round_fn)
    s = max(0, s)  # the first row `coarse` holds
    upx = up(coarse)[:, a - 2 * s : b - 2 * s, :w]  # rows 2s.. of the level, cropped
    return torch.cat([upx if round_fn is None else round_fn(upx), own])


class Upsampling(nn.Module):
    def __init__(self, kernel_size: int):
        super().__init__()
        k1 = bicubic_kernel_1d(kernel_size)
        self.kernel = nn.Parameter(torch.outer(k1, k1))

    def _up(self):
        """(up: (C, h, w) -> (C, 2h, 2w) differentiable in the kernel, the kernel's reach in rows)."""
        index, valid, before, after = _polyphase_gather(self.kernel.shape[-1])
        index, valid = index.to(self.kernel.device), valid.to(self.kernel.device)
        w = torch.where(valid, self.kernel.reshape(-1)[index], self.kernel.new_zeros(()))
        return (lambda x: _PolyphaseX2.apply(x, w, before, after)), max(before, after) + 1

    def forward(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """Latent grids (level 0 first) -> (n_levels, H, W), coarsest level first."""
        up, _ = self._up()
        return _upsample_levels(grids, self.kernel, up_fn=lambda x, _kernel: up(x[:, 0])[:, None])

    def rows(self, grids: list[torch.Tensor], a: int, b: int) -> torch.Tensor:
        """Rows [a, b) of `forward(grids)`, (n_levels, b - a, W), computed from slices of the grids
        (a fit in bands of rows, `LotteryModel.render_rows`)."""
        up, margin = self._up()
        return upsampled_rows(grids, a, b, up, margin)


def upsampling_exact(grids: list[torch.Tensor], kernel: torch.Tensor) -> torch.Tensor:
    """Fixed-point version for the decoder: integer grids, dyadic kernel, rounding each level."""
    return _upsample_levels(
        [g.to(torch.float64) for g in grids], kernel.to(torch.float64), fixedpoint.round_fixed, _polyphase_x2
    )


class ExactUpsampler:
    """The decoder's upsampled feature stack (as `upsampling_exact`), a band of rows at a time.

    Why: the whole stack holds n_levels float64 values per pixel (56 bytes at 7 levels): 0.9 GB for
    a 4096x4096 image. A band of rows of level l needs only the rows of level l + 1 around half of
    them (the kernel's reach, `margin`), so each band is computed from its own slices of the grids.
    Every sum is exact, so a band's values are those of the whole-image computation, bit for bit.
    """

    def __init__(self, grids: list[torch.Tensor], kernel: torch.Tensor):
        self.grids = grids  # integer latent grids, level 0 (full resolution) first
        self.weights, self.before, self.after = _polyphase_weights(kernel.to(torch.float64))
        self.margin = max(self.before, self.after) + 1  # low-resolution rows a band must see beyond its own

    def _up(self, coarse: torch.Tensor) -> torch.Tensor:
        taps = self.before + self.after + 1
        up = F.conv2d(F.pad(coarse[:, None], (self.before, self.after, self.before, self.after)),
                      self.weights.view(4, 1, taps, taps))
        return F.pixel_shuffle(up, 2)[:, 0]

    def rows(self, a: int, b: int, level: int = 0) -> torch.Tensor:
        """Rows [a, b) (clipped to the grid) of the stack at `level`: (n_levels - level, rows, width)."""
        return upsampled_rows(self.grids, a, b, self._up, self.margin, level,
                              cast=lambda g: g.to(torch.float64), round_fn=fixedpoint.round_fixed)
