"""Exact fixed-point arithmetic for the decoder, carried in float64 tensors.

Why: decoding must give bit-identical pixels on every machine and thread count. Float sums
depend on summation order; sums of integers do not. Every decoder-side activation is a multiple
of 2**-FRAC_BITS with |value| <= ACT_LIMIT, every weight a multiple of 2**-shift (shift <= 16)
with small magnitude, so each product and every partial sum of a matmul or convolution is an
integer multiple of 2**-(FRAC_BITS + shift) below 2**53: float64 represents it exactly, whatever
order BLAS adds in. After each linear op the result is rounded back onto the 2**-FRAC_BITS grid.

Nonlinearities use piecewise-linear tables whose knots are themselves rounded onto the grid;
interpolation is one exact multiply-add, so GELU and tanh are exact functions of their inputs.
The knot values come from math.erf/math.tanh rounded to 2**-16: a one-ulp libm difference could
only matter if a value lay within 1e-16 of a rounding boundary; `table_fingerprint()` is pinned
by a test so any machine where that happens is caught.
"""

from __future__ import annotations

import hashlib
import math
from functools import cache

import torch

FRAC_BITS = 16
ONE = float(1 << FRAC_BITS)
ACT_LIMIT = 256.0  # activations are clamped to [-ACT_LIMIT, ACT_LIMIT] on the decoder side
LUT_RANGE = 8.0  # tables cover [-LUT_RANGE, LUT_RANGE]
LUT_STEP_BITS = 6  # knots every 2**-6
DTYPE = torch.float64


def round_fixed(x: torch.Tensor) -> torch.Tensor:
    """Round onto the 2**-FRAC_BITS grid (half up) and clamp to the activation range."""
    return round_fixed_(x * ONE)


def round_fixed_(scaled: torch.Tensor) -> torch.Tensor:
    """In place: `scaled` holds x * ONE; returns round_fixed(x) in the same storage (fewer temporaries)."""
    return scaled.add_(0.5).floor_().mul_(1.0 / ONE).clamp_(-ACT_LIMIT, ACT_LIMIT)  # 1/ONE is exact


def dyadic(values: torch.Tensor, shift: int) -> torch.Tensor:
    """Integers times 2**-shift as an exact float64 tensor."""
    return values.to(DTYPE) * (2.0 ** -shift)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, Cin) @ weight (Cout, Cin).T + bias, exact, then rounded to the grid."""
    y = x @ weight.t()
    if bias is not None:
        y = y + bias
    return round_fixed(y)


def conv3x3_exact(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Zero-padded 3x3 convolution of a (C, H, W) map with exact operands, as nine small matmuls.

    Why not F.conv2d: float64 has no fast CPU convolution kernel; one (out, in) matmul per tap on
    the padded map, accumulated at the tap's offset, was 2.6x faster on a 768x512 3-channel map.
    Every sum is exact (fixed-point operands), so the order of the additions does not matter.
    """
    c_out, height, width = weight.shape[0], x.shape[1], x.shape[2]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    flat = padded.reshape(x.shape[0], -1)
    out = bias.to(x.dtype).view(c_out, 1, 1).expand(c_out, height, width).clone()
    for dy in range(3):
        for dx in range(3):
            tap = (weight[:, :, dy, dx] @ flat).view(c_out, height + 2, width + 2)
            out += tap[:, dy : dy + height, dx : dx + width]
    return out


def _knots(fn) -> torch.Tensor:
    n = int(2 * LUT_RANGE * (1 << LUT_STEP_BITS))
    vals = []
    for i in range(n + 2):  # one spare knot so index n+1 exists for the top edge
        x = -LUT_RANGE + i / (1 << LUT_STEP_BITS)
        vals.append(math.floor(fn(x) * ONE + 0.5) / ONE)
    return torch.tensor(vals, dtype=DTYPE)


def _gelu(x: float) -> float:
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


@cache
def gelu_table() -> torch.Tensor:
    return _knots(_gelu)


@cache
def tanh_table() -> torch.Tensor:
    return _knots(math.tanh)


def _table(name: str) -> torch.Tensor:
    return gelu_table() if name == "gelu" else tanh_table()


@cache
def _slopes(name: str) -> torch.Tensor:
    """Knot-to-knot differences (exact: both knots are on the grid), so interpolation needs one gather less."""
    table = _table(name)
    return torch.cat([table[1:] - table[:-1], table.new_zeros(1)])


def _interp(x: torch.Tensor, name: str) -> torch.Tensor:
    """Table value at x (clamped to the table range), rounded to the grid; x is not modified."""
    table = _table(name)
    pos = x.clamp(-LUT_RANGE, LUT_RANGE).add_(LUT_RANGE).mul_(float(1 << LUT_STEP_BITS))  # exact
    idx = torch.floor(pos)
    frac = pos.sub_(idx)
    i = idx.long().view(-1)
    lo = table.index_select(0, i).view(x.shape)  # index_select: ~3x faster than table[i]
    y = lo.addcmul_(frac, _slopes(name).index_select(0, i).view(x.shape))  # lo + frac * (hi - lo), exact
    return y.mul_(ONE).add_(0.5).floor_().mul_(1.0 / ONE)  # round_fixed without its clamp: |y| <= 8


def gelu_on_grid() -> torch.Tensor:
    """gelu(x) for every grid value x = -8 + n * 2**-16, n = 0 .. 2**20, built directly.

    Knot interval i = n >> 10 holds 1024 grid values at fractions (n & 1023) / 1024: the same exact
    lo + frac * slope as `_interp`, without its per-element index arithmetic (the decoder builds
    this once per process).
    """
    per_knot = 1 << (FRAC_BITS - LUT_STEP_BITS)
    knots = int(2 * LUT_RANGE) << LUT_STEP_BITS
    table, slopes = gelu_table(), _slopes("gelu")
    frac = torch.arange(per_knot, dtype=DTYPE) / per_knot
    y = (table[:knots, None] + frac[None, :] * slopes[:knots, None]).reshape(-1)
    y = torch.cat([y, table[knots:knots + 1]])  # x = +8 exactly
    return y.mul_(ONE).add_(0.5).floor_().mul_(1.0 / ONE)


@cache
def gelu_grid_table() -> torch.Tensor:
    """`gelu_on_grid()`, built once per process (8 MiB): the decoder's GELU lookup table."""
    return gelu_on_grid()


@cache
def _gelu_grid_table_f32() -> torch.Tensor:
    """The same table in float32 (4 MiB): every entry is a multiple of 2**-16 in [-0.2, 8], exact
    in float32's 24-bit mantissa, and half the size gathers ~20 % faster (fewer cache misses)."""
    t = gelu_grid_table().to(torch.float32)
    assert torch.equal(t.to(DTYPE), gelu_grid_table())
    return t


def gelu_grid(x: torch.Tensor) -> torch.Tensor:
    """== gelu(x) for x on the 2**-16 grid (any round_fixed output), with one gather.

    Why: the decoder spends most of its per-pixel time in GELU; `gelu` interpolates between knots
    with two gathers and a dozen passes, this looks the grid value up directly (a test checks
    equality at every grid value of the table and beyond it). x is not modified. It is
    `gelu_scaled_` of x * ONE: rounding a grid value changes nothing (|x| <= ACT_LIMIT).
    """
    return gelu_scaled_(x * ONE)


def gelu_scaled_(scaled: torch.Tensor) -> torch.Tensor:
    """== gelu_grid(round_fixed(x)) where `scaled` holds x * ONE (e.g. a matmul output times ONE);
    `scaled` is overwritten.

    Why: a decoder layer is a matmul, a rounding and a GELU; done apart they make 13 passes over
    the (channels, pixels) block, fused 7. Rounding and the table index are one integer
    k = floor(x * ONE + 0.5) + 8 * ONE: clamping k to [0, 16 * ONE] clamps x to the table's range,
    and the identity part above +8 is (k - 16 * ONE) / ONE clamped to [0, ACT_LIMIT - 8]
    (round_fixed's clamp at ACT_LIMIT). Every step is exact in float64.
    """
    top = 2 * LUT_RANGE * ONE
    k = scaled.add_(0.5 + LUT_RANGE * ONE).floor_()
    above = None
    if k.numel() and float(k.max()) > top:  # rare: some values above +8
        above = (k - top).clamp_(0.0, (ACT_LIMIT - LUT_RANGE) * ONE).mul_(1.0 / ONE)
    idx = k.clamp_(0.0, top).to(torch.int32)
    y = _gelu_grid_table_f32().index_select(0, idx.view(-1)).view(k.shape).to(k.dtype)
    return y if above is None else y.add_(above)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU on grid values: table inside [-8, 8], 0 below, identity above.

    The table's knots at -8 and 8 are exactly 0 and 8, so adding relu(x - 8) to the clamped lookup
    gives the identity above 8 without a select.
    """
    return _interp(x, "gelu").add_((x - LUT_RANGE).clamp_(min=0.0))


def tanh(x: torch.Tensor) -> torch.Tensor:
    """Exact tanh on grid values (saturates to +-1 beyond +-8)."""
    return _interp(x, "tanh")


def table_fingerprint() -> str:
    """SHA-256 of the nonlinearity tables, pinned in the tests (catches libm differences)."""
    h = hashlib.sha256()
    for t in (gelu_table(), tanh_table()):
        h.update((t * ONE).to(torch.int64).numpy().tobytes())
    return h.hexdigest()
