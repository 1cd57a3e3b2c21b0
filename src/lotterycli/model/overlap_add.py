"""Overlap-add: the input gradient of a small correlation, one shifted plane per kernel tap.

The hand-written backwards of the ARM's causal convolution (`arm._CausalConv`) and of the x2
upsampling (`upsampling._PolyphaseX2`) end the same way: each kernel tap's plane of gradients is
added into the padded input at that tap's offset. Two ways to do it give the same floats bit for
bit (each output element sums its taps in kernel order, row by row, from zero):

* one in-place add per tap: cheapest on a CPU for large planes (a 256x256 ARM grid: 1.3 ms
  against 8.5 ms for col2im), but one dispatched operation per tap (the ARM's 24 taps, the
  upsampling's 25), which is what a small plane's time is made of, and one kernel launch per
  tap on a GPU;
* `F.fold` (col2im): one operation whatever the taps: 3-6x cheaper on a CPU for a 16x16 or smaller
  plane, and on a GPU the launch count is what a step's time is made of.

`benchmarks.engine` counts the operations of a step; the crossover was measured on a 2-core
Xeon, one and two threads (col2im and the loop tie at 32x32).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch
import torch.nn.functional as F

from . import device_policy

FOLD_MAX_CPU_PIXELS = 32 * 32  # planes up to this size are folded on a CPU too


@cache
def _index(taps: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(taps, dtype=torch.long, device=device)


def overlap_add(planes: torch.Tensor, kh: int, kw: int, taps: Sequence[int] | None = None) -> torch.Tensor:
    """Sum of shifted planes: out[n, y + i, x + j] += planes[t, n, y, x] for tap t at (i, j).

    `planes` is (T, N, h, w), tap-major; tap t sits at kernel position `taps[t]` = i * kw + j
    (all kh * kw positions in order when `taps` is None). Returns (N, h + kh - 1, w + kw - 1).
    """
    n_taps, n, h, w = planes.shape
    positions = range(kh * kw) if taps is None else taps
    if len(positions) != n_taps:
        raise ValueError(f"{n_taps} planes for {len(positions)} taps")
    if device_policy.launch_bound(planes) or h * w <= FOLD_MAX_CPU_PIXELS:
        cols = planes.reshape(n_taps, n, h * w).transpose(0, 1)
        if taps is not None:  # the absent taps add zeros, which changes no sum
            cols = cols.new_zeros(n, kh * kw, h * w).index_copy_(1, _index(tuple(taps), cols.device), cols)
        return F.fold(cols.contiguous(), (h + kh - 1, w + kw - 1), (kh, kw))[:, 0]
    out = planes.new_zeros(n, h + kh - 1, w + kw - 1)
    for t, position in enumerate(positions):
        i, j = divmod(int(position), kw)
        # .add_ on the view: `out[...] += t` would also copy the sum back onto itself
        out[:, i: i + h, j: j + w].add_(planes[t])
    return out
