"""The autoregressive entropy model (ARM) of the latent grids.

Each latent value is modelled by a Laplace distribution whose mean and log-scale come from a small
MLP applied to its 24 causal neighbours on the same grid (docs/method.md):

    x  = context (24 values, zero outside the grid)
    h1 = GELU(fc1(x) + x)        (the "+ x" residual only when the hidden width is 24)
    h2 = GELU(fc2(h1) + h1)
    (mu, log_scale) = fc3(h2)

The hidden width is an architecture choice stored in the file: the reference's 24 costs ~1,250
parameters, which is a large share of a small image's file; narrower ARMs trade modelling power
for fewer parameter bits.

Two implementations of the same math:

* `Arm` (float, differentiable) for fitting. `Arm.rate_bits` is the hot path of the fitting loop:
  context extraction, fc1 and its residual are fused into ONE convolution whose kernel holds
  (fc1.weight + I) at the 24 causal taps of a 5x9 window (rows -4..0, columns -4..4; the 9x9 window
  of the reference minus its four all-zero bottom rows), then fc2/fc3 are 1x1 convolutions.
* `ArmExact` (float64 fixed point, see `fixedpoint`) for the bitstream: bit-identical results on
  every machine and thread count, used by `entropy` to pick coding probabilities.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LotteryError
from . import device_policy, fixedpoint
from .architecture import ARM_CONTEXT_SIZE, MAX_ARM_HIDDEN
from .overlap_add import overlap_add
from .payload import QuantizedModule

CONTEXT_OFFSETS: tuple[tuple[int, int], ...] = (
    ((-4, 0),)
    + tuple((-3, dx) for dx in range(-2, 3))
    + tuple((-2, dx) for dx in range(-3, 4))
    + tuple((-1, dx) for dx in range(-3, 4))
    + tuple((0, dx) for dx in range(-4, 0))
)
CONTEXT_SIZE = len(CONTEXT_OFFSETS)  # 24
assert CONTEXT_SIZE == ARM_CONTEXT_SIZE == 24

# Laplace scale b = exp(clamp(log_scale, LOG_SCALE_MIN, LOG_SCALE_MAX)): b in [0.0498, 244.7].
# The limits are multiples of 1/16 so the coding table's log-scale grid lands on them exactly.
LOG_SCALE_MIN = -3.0
LOG_SCALE_MAX = 5.5
PROB_FLOOR_LOG2 = -16  # probabilities are floored at 2**-16 (a symbol costs at most 16 bits)

PARAM_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")

# Kernel geometry of the fused convolution: rows dy in [-4, 0] -> kernel row dy + 4,
# columns dx in [-4, 4] -> kernel column dx + 4. Input is padded 4 rows on top, 4 columns each side.
_KH, _KW = 5, 9
_TAP_POSITIONS = tuple((dy + 4) * _KW + (dx + 4) for dy, dx in CONTEXT_OFFSETS)
_TAP_INDEX = torch.tensor(_TAP_POSITIONS, dtype=torch.long)
_LN2 = math.log(2.0)
DISTINCT_LATENTS = 1 << 20  # latents whose contexts `distinct_contexts` sorts at once
DISTINCT_MERGE = 1 << 21  # at most this many pairs of all chunks are sorted together


def causal_contexts(grid: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Contexts (N, 24) of positions (ys[i], xs[i]) of a 2-D grid, zero outside the grid."""
    h, w = grid.shape
    padded = F.pad(grid.reshape(1, 1, h, w), (4, 4, 4, 0)).reshape(h + 4, w + 8)
    ys = torch.as_tensor(ys, dtype=torch.long).reshape(-1, 1)
    xs = torch.as_tensor(xs, dtype=torch.long).reshape(-1, 1)
    dy = torch.tensor([o[0] for o in CONTEXT_OFFSETS], dtype=torch.long)
    dx = torch.tensor([o[1] for o in CONTEXT_OFFSETS], dtype=torch.long)
    return padded[ys + 4 + dy, xs + 4 + dx]


class _InwardClamp(torch.autograd.Function):
    """clamp(x, lo, hi) whose gradient still flows where it would move x back inside [lo, hi].

    A plain clamp has zero gradient outside the range. At large lambda the ARM drove most
    log-scales below LOG_SCALE_MIN; with no gradient there it could never raise them again when
    a latent moved off zero, and the estimated rate jumped by 80 % and stayed there
    (docs/design.md, "Rate gradients at the limits"). Gradients pointing further out stay blocked.
    """

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        # A descent step moves x by -grad: below lo it helps when grad < 0, above hi when grad > 0.
        blocked = ((x < ctx.lo) & (grad > 0)) | ((x > ctx.hi) & (grad < 0))
        return grad.masked_fill(blocked, 0.0), None, None


def laplace_bits(q: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log2 P(q) elementwise for a Laplace(mu, b) integrated over [q - 0.5, q + 0.5].

    b = exp(clamp(log_scale)); P floored at 2**-16 (a symbol costs at most 16 bits, as in the
    coder's table). Stable: outside the central bin the log probability is computed in closed
    form in the log domain, inside it with expm1. For training, neither limit stops the gradient:
    the log-scale clamp passes gradients pointing back into range (`_InwardClamp`), and a capped
    symbol keeps the gradient of its uncapped cost, so a latent far from its prediction still
    pulls the prediction (and itself) closer.
    """
    ls = _InwardClamp.apply(log_scale, LOG_SCALE_MIN, LOG_SCALE_MAX)
    inv_b = torch.exp(-ls)
    d = (q - mu).abs()
    # |q - mu| >= 0.5: P = 0.5 * exp(-(d - 0.5) / b) * (1 - exp(-1 / b))
    d_out = d.clamp(min=0.5)
    log_p_out = -(d_out - 0.5) * inv_b + torch.log(-torch.expm1(-inv_b)) - _LN2
    # |q - mu| < 0.5: P = -0.5 * (expm1(-(0.5 - d) / b) + expm1(-(0.5 + d) / b))
    d_in = d.clamp(max=0.5)
    p_in = -0.5 * (torch.expm1(-(0.5 - d_in) * inv_b) + torch.expm1(-(0.5 + d_in) * inv_b))
    log_p_in = torch.log(p_in.clamp(min=2.0 ** PROB_FLOOR_LOG2))
    log_p = torch.where(d < 0.5, log_p_in, log_p_out)
    bits = -log_p / _LN2
    excess = (bits + PROB_FLOOR_LOG2).clamp(min=0.0).detach()  # value capped, gradient kept
    return bits - excess


def _pad(grid: torch.Tensor) -> torch.Tensor:
    """(h, w) -> (h + 4, w + 8): 4 zero rows on top, 4 zero columns on each side."""
    h, w = grid.shape
    return F.pad(grid.reshape(1, 1, h, w), (4, 4, 4, 0)).reshape(h + 4, w + 8)


def coded_bands(latents: list[torch.Tensor], band_rows: int) -> list[torch.Tensor]:
    """The non-empty grids cut into bands of `band_rows` rows (0: whole grids), as the coder codes them."""
    return [g for grid in latents if grid.numel()
            for g in (grid.split(band_rows, dim=0) if 0 < band_rows < grid.shape[0] else (grid,))]


def _scatter_kernel(w1res: torch.Tensor) -> torch.Tensor:
    """(24, 24) context weights -> (24, 1, 5, 9) convolution kernel (zero at non-causal taps)."""
    k = w1res.new_zeros(w1res.shape[0], _KH * _KW)
    k[:, _tap_index(k.device)] = w1res
    return k.reshape(w1res.shape[0], 1, _KH, _KW)


def _weight_grad(xpad: torch.Tensor, grad: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """d loss / d w1res (hidden, 24) from the output gradient (hidden, h*w).

    On a CPU one conv2d correlates the input with the output gradient (oneDNN handles it well).
    On a GPU that convolution has an image-sized kernel, for which cuDNN's choice took 10 ms a
    call on an H200 (93 % of a step's GPU time); there the contexts (`_context_matrix`) are
    multiplied instead (one small matrix product).
    """
    hp, wp = xpad.shape
    if not device_policy.launch_bound(xpad):
        full = F.conv2d(xpad.reshape(1, 1, hp, wp), grad.reshape(-1, 1, h, w))  # (1, hidden, 5, 9)
        return full.reshape(grad.shape[0], _KH * _KW)[:, _TAP_INDEX]
    return grad @ _context_matrix(xpad, h, w).t()


def _context_matrix(xpad: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(24, h*w): row k holds every position's k-th causal neighbour.

    On a CPU the 24 shifted slices, stacked (im2col is several times slower there). Elsewhere one im2col
    and one gather: two kernels instead of 48 dispatched slices and a stack, where a step's time
    is made of its dispatches (docs/gpu.md)."""
    if not device_policy.launch_bound(xpad):
        rows = [xpad[4 + dy: 4 + dy + h, 4 + dx: 4 + dx + w] for dy, dx in CONTEXT_OFFSETS]
        return torch.stack(rows).reshape(CONTEXT_SIZE, h * w)
    windows = F.unfold(xpad.reshape(1, 1, *xpad.shape), (_KH, _KW))[0]  # (45, h*w), row i * 9 + j
    return windows.index_select(0, _tap_index(xpad.device))


@cache
def _tap_index(device: torch.device) -> torch.Tensor:
    """`_TAP_INDEX` on `device`, copied there once (not at every step)."""
    return _TAP_INDEX.to(device)


@cache
def _canvas(shapes: tuple[tuple[int, int], ...], device: torch.device) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """Layout of `Arm._packed_rate_bits`' canvas for grids of these shapes: (rows, width, place,
    pick), where `place` is the flat canvas position of each grid value (grids in order, each
    row-major) and `pick` the flat position of its output among the canvas convolution's
    (rows - 4) x (width - 8) outputs, which sit 4 rows down and 4 columns right of their inputs."""
    width = max(w for _, w in shapes) + 8
    place, pick, top = [], [], 0
    for h, w in shapes:
        ys, xs = torch.arange(top, top + h)[:, None], torch.arange(w)[None, :]
        place.append(((ys + 4) * width + xs + 4).reshape(-1))
        pick.append((ys * (width - 8) + xs).reshape(-1))
        top += h + 4
    return top, width, torch.cat(place).to(device), torch.cat(pick).to(device)


class _CausalConv(torch.autograd.Function):
    """a1 = (fc1.weight + I) @ context + bias for every position, as (24, h*w).

    Forward is one conv2d (1 -> 24 channels, 5x9 kernel with 24 nonzero taps). The backward is
    hand-written because oneDNN's input gradient of a 1-channel convolution is ~5x slower than
    the forward: grad_input = the 24 shifted planes of (W^T @ grad) added up (`overlap_add`),
    grad_weight = one conv2d that correlates the input with the output gradient on a CPU, a small
    matrix product elsewhere (`_weight_grad`).
    """

    @staticmethod
    def forward(ctx, xpad, w1res, bias):
        hp, wp = xpad.shape
        h, w = hp - 4, wp - 8
        ctx.save_for_backward(xpad, w1res)
        a1 = F.conv2d(xpad.reshape(1, 1, hp, wp), _scatter_kernel(w1res), bias)
        return a1.reshape(w1res.shape[0], h * w)

    @staticmethod
    def backward(ctx, grad):
        xpad, w1res = ctx.saved_tensors
        hp, wp = xpad.shape
        h, w = hp - 4, wp - 8
        grad = grad.contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            g_taps = (w1res.t() @ grad).reshape(CONTEXT_SIZE, 1, h, w)
            gx = overlap_add(g_taps, _KH, _KW, _TAP_POSITIONS)[0]
        if ctx.needs_input_grad[1]:
            gw = _weight_grad(xpad, grad, h, w)
        if ctx.needs_input_grad[2]:
            gb = grad.sum(1)
        return gx, gw, gb


class Arm(nn.Module):
    """Float ARM: 24 -> hidden (+res if hidden == 24) GELU -> hidden (+res) GELU -> 2 (mu, log_scale)."""

    def __init__(self, hidden: int = 24):
        super().__init__()
        if not 1 <= hidden <= MAX_ARM_HIDDEN:
            raise ValueError(f"ARM hidden width must be 1..{MAX_ARM_HIDDEN}, got {hidden}")
        self.hidden = hidden
        self.fc1 = nn.Linear(CONTEXT_SIZE, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 2)
        with torch.no_grad():
            bound = 0.5 / math.sqrt(hidden)
            for fc in (self.fc1, self.fc2):
                fc.weight.uniform_(-bound, bound)
                fc.bias.zero_()
            self.fc3.weight.uniform_(-1e-3, 1e-3)
            self.fc3.bias.zero_()  # mu = 0, log_scale = 0 (b = 1) at the start

    # Float path on explicit contexts --------------------------------------------------------
    def forward_from_context(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ctx (N, 24) -> (mu, log_scale), each (N,). Reference float implementation."""
        a1 = self.fc1(ctx)
        h1 = F.gelu(a1 + ctx if self.hidden == CONTEXT_SIZE else a1)
        h2 = F.gelu(self.fc2(h1) + h1)
        out = self.fc3(h2)
        return out[:, 0], out[:, 1]

    forward = forward_from_context

    # Fused convolutional path ------------------------------------------------------------
    def _w1res(self) -> torch.Tensor:
        if self.hidden != CONTEXT_SIZE:
            return self.fc1.weight
        return self.fc1.weight + torch.eye(CONTEXT_SIZE, dtype=self.fc1.weight.dtype, device=self.fc1.weight.device)

    def params_maps(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_scale) maps (h, w) for every position of one grid (differentiable)."""
        h, w = grid.shape
        return self._maps(_pad(grid), self._w1res(), h, w)

    def _maps(self, xpad, w1res, h, w):
        """xpad (h+4, w+8) padded grid -> (mu, log_scale) maps (h, w)."""
        out = self._outputs(xpad, w1res)
        return out[0].reshape(h, w), out[1].reshape(h, w)

    def _outputs(self, xpad: torch.Tensor, w1res: torch.Tensor) -> torch.Tensor:
        """xpad (h+4, w+8) padded grid -> (2, h*w): (mu, log_scale) of every position."""
        a1 = _CausalConv.apply(xpad, w1res, self.fc1.bias)  # (hidden, h*w)
        h1 = F.gelu(a1)
        h2 = F.gelu(torch.addmm(self.fc2.bias.reshape(-1, 1), self._w2res(), h1))
        return torch.addmm(self.fc3.bias.reshape(-1, 1), self.fc3.weight, h2)

    def _w2res(self) -> torch.Tensor:
        return self.fc2.weight + torch.eye(self.hidden, dtype=self.fc2.weight.dtype, device=self.fc2.weight.device)

    def rate_bits(self, latents: list[torch.Tensor], band_rows: int = 0) -> torch.Tensor:
        """Total bits of all grids under the model (scalar, differentiable).

        Each grid's values serve both as the context and as the coded symbols. With `band_rows`
        B > 0 each grid is cut into bands of B rows whose contexts see zeros above them, exactly
        as the coder codes them (`entropy`, format v3). On a CPU the grids are processed one by
        one with one fused convolution each (packing the small grids did not pay off there), their
        symbols' costs in one pass; on a launch-bound device all of them at once (`_packed_rate_bits`).
        """
        grids = coded_bands(latents, band_rows)
        if grids and device_policy.launch_bound(grids[0]):
            return self._packed_rate_bits(grids)
        w1res = self._w1res()
        values, mus, log_scales = [], [], []
        for g in grids:
            h, w = g.shape
            mu, ls = self._maps(_pad(g), w1res, h, w)
            values.append(g.reshape(-1))
            mus.append(mu.reshape(-1))
            log_scales.append(ls.reshape(-1))
        if not values:
            return self.fc3.bias.sum() * 0.0
        # one elementwise pass over every grid's symbols: ~30 operations forward and ~40 backward,
        # once instead of once per grid
        return laplace_bits(torch.cat(values), torch.cat(mus), torch.cat(log_scales)).sum()

    def _packed_rate_bits(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """`rate_bits` of all grids with one convolution and one pass of the MLP: the grids are
        placed one below the other in a zero canvas, each under 4 zero rows and between at least 4
        zero columns on each side, so that every context sees what it sees in its own padded grid.
        About 1.6x the positions of the grids themselves are computed (the canvas' zeros), but a
        step dispatches a seventh of the ARM's operations: on a GPU, where each is a launch, that
        is what counts."""
        rows, width, place, pick = _canvas(tuple(tuple(g.shape) for g in grids), grids[0].device)
        values = torch.cat([g.reshape(-1) for g in grids])
        canvas = values.new_zeros(rows * width).index_copy(0, place, values).view(rows, width)
        out = self._outputs(canvas, self._w1res()).index_select(1, pick)
        return laplace_bits(values, out[0], out[1]).sum()

    @staticmethod
    def fixed_contexts(latents: list[torch.Tensor], band_rows: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(contexts (24, N), values (N,)) of every latent of every grid (bands as in `rate_bits`).

        For latents that no longer change (the ARM refit after a fit): built once, they turn each
        rate evaluation into three matrix products over one batch, with no per-grid calls.
        """
        mats, values = [], []
        for g in coded_bands(latents, band_rows):
            h, w = g.shape
            mats.append(_context_matrix(_pad(g), h, w))
            values.append(g.reshape(-1))
        return torch.cat(mats, 1), torch.cat(values)

    @staticmethod
    def distinct_contexts(latents: list[torch.Tensor], band_rows: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(contexts (24, U), values (U,), counts (U,)): the distinct pairs of a context and a value
        among every latent of every grid (bands as in `rate_bits`), and how many latents have each
        pair (float32), in a fixed order. (Beyond DISTINCT_MERGE pairs in all, those of each chunk
        of latents are distinct; a pair may recur in another chunk.)

        Why: the rate of latents that no longer change is a sum over latents of one function of
        their (context, value) pair, and at low rates most latents are zeros among zeros: the
        87,376 latents of a 256x256 image fitted at lambda 1.6e-2 held ~1,400 distinct pairs. An
        ARM refit step over the distinct pairs, each weighted by its count, gives the same
        objective as one over every latent (up to float summation order) for a fraction of the
        work. Built DISTINCT_LATENTS latents at a time, so a large image never holds every
        latent's context at once.
        """
        parts, counts = [], []
        for g in coded_bands(latents, band_rows):
            h, w = g.shape
            padded = _pad(g)
            step = max(1, DISTINCT_LATENTS // w)
            for a in range(0, h, step):
                b = min(h, a + step)
                rows = torch.cat([_context_matrix(padded[a : b + 4], b - a, w), g[a:b].reshape(1, -1)])
                unique, n = torch.unique(rows, dim=1, return_counts=True)
                parts.append(unique)
                counts.append(n)
        if not parts:
            empty = latents[0].new_zeros(CONTEXT_SIZE + 1, 0) if latents else torch.zeros(CONTEXT_SIZE + 1, 0)
            return empty[:-1], empty[-1], empty[-1]
        rows, n = torch.cat(parts, 1), torch.cat(counts)
        if len(parts) > 1 and rows.shape[1] <= DISTINCT_MERGE:  # pairs repeated across chunks merged; more stay as
            # they are (a pair may then appear more than once: the sum is the same, and the sort
            # of a large image's pairs would cost more memory than it saves work)
            rows, inverse = torch.unique(rows, dim=1, return_inverse=True)
            n = torch.zeros(rows.shape[1], dtype=torch.int64, device=rows.device).index_add_(0, inverse, n)
        return rows[:-1].contiguous(), rows[-1].contiguous(), n.to(rows.dtype)

    def rate_bits_from_contexts(self, contexts: torch.Tensor, values: torch.Tensor,
                                counts: torch.Tensor | None = None) -> torch.Tensor:
        """Total bits of `values` given their `fixed_contexts` (the same sum as `rate_bits`), or of
        `distinct_contexts`, each pair's bits times its `counts`."""
        h1 = F.gelu(torch.addmm(self.fc1.bias.reshape(-1, 1), self._w1res(), contexts))
        h2 = F.gelu(torch.addmm(self.fc2.bias.reshape(-1, 1), self._w2res(), h1))
        out = torch.addmm(self.fc3.bias.reshape(-1, 1), self.fc3.weight, h2)
        bits = laplace_bits(values, out[0], out[1])
        return bits.sum() if counts is None else bits.mul(counts).sum()

    def rate_bits_naive(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """Reference implementation by gathering 24 shifted copies (tests and timing only)."""
        total = 0.0
        for g in latents:
            h, w = g.shape
            p = F.pad(g.reshape(1, 1, h, w), (4, 4, 4, 0))[0, 0]
            ctx = torch.stack([p[4 + dy: 4 + dy + h, 4 + dx: 4 + dx + w] for dy, dx in CONTEXT_OFFSETS], -1)
            mu, ls = self.forward_from_context(ctx.reshape(-1, CONTEXT_SIZE))
            total = total + laplace_bits(g.reshape(-1), mu, ls).sum()
        return total

    def parameter_bits(self) -> torch.Tensor:
        """A smooth estimate of the bits the ARM's quantized parameters will cost in the file.

        log2(1 + |w| / s) per parameter, with s the step the quantizer typically picks (2**-3 for
        the hidden layers and biases, 2**-5 for the output weights): about the Exp-Golomb length of
        |w| / s, and zero for a zero weight. Its gradient pulls weights that do not pay for
        themselves towards zero, where the parameter coder codes them in a fraction of a bit.
        """
        total = None
        for name, p in self.named_parameters():
            step = 2.0 ** (-5 if name == "fc3.weight" else -3)
            bits = torch.log2(1.0 + p.abs() / step).sum()
            total = bits if total is None else total + bits
        return total

    # Quantization -----------------------------------------------------------------------
    def quantize(self, shift: int) -> QuantizedModule:
        """Round every parameter to an integer times 2**-shift (names in PARAM_NAMES order)."""
        scale = 2.0 ** shift
        params = dict(self.named_parameters())
        tensors = {}
        for name in PARAM_NAMES:
            tensors[name] = torch.round(params[name].detach().to(torch.float64) * scale).to(torch.int64)
        return QuantizedModule(shift=int(shift), tensors=tensors)

    @torch.no_grad()
    def load_quantized(self, q: QuantizedModule) -> Arm:
        """Set the float parameters to the exact dequantized values of `q` (returns self)."""
        deq = q.dequantized()
        params = dict(self.named_parameters())
        for name in PARAM_NAMES:
            params[name].copy_(deq[name].to(params[name].dtype))
        return self

    @classmethod
    def from_quantized(cls, q: QuantizedModule) -> Arm:
        return cls(int(q.tensors["fc1.bias"].shape[0])).load_quantized(q)


def expected_shapes(hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        "fc1.weight": (hidden, CONTEXT_SIZE),
        "fc1.bias": (hidden,),
        "fc2.weight": (hidden, hidden),
        "fc2.bias": (hidden,),
        "fc3.weight": (2, hidden),
        "fc3.bias": (2,),
    }
MAX_SHIFT = 16
MAX_ABS_PARAM = 64.0  # keeps every fixed-point partial sum far below 2**53


def exact_gelu(x: torch.Tensor) -> torch.Tensor:
    """== fixedpoint.gelu(x) for x on the 2**-16 grid (e.g. any fixedpoint.linear output)."""
    return fixedpoint.gelu_grid(x)


@cache
def _gelu_grid_table_np() -> np.ndarray:
    """fixedpoint.gelu_grid_table() scaled by 2**16 (integers) as numpy; its ends are exactly 0 and 8."""
    t = (fixedpoint.gelu_grid_table() * fixedpoint.ONE).numpy()
    assert t[0] == 0.0 and t[-1] == fixedpoint.LUT_RANGE * fixedpoint.ONE
    return t


class ArmExact:
    """Fixed-point ARM: bit-identical (mu, log_scale) on every machine and thread count.

    Identity residuals are folded into the weights (W + I is an exact dyadic); since the residual
    input is already on the 2**-16 grid, round(Wx + b) + x == round((W + I)x + b) exactly.
    """

    def __init__(self, q: QuantizedModule):
        for name, shift in q.tensor_shifts().items():
            if not (0 <= shift <= MAX_SHIFT):
                raise LotteryError(f"ARM parameter shift {shift} of {name} out of range 0..{MAX_SHIFT}")
        if list(q.tensors) != list(PARAM_NAMES):
            raise LotteryError(f"ARM parameters must be {list(PARAM_NAMES)}")
        hidden = int(q.tensors["fc1.bias"].shape[0]) if q.tensors["fc1.bias"].dim() == 1 else -1
        if not 1 <= hidden <= MAX_ARM_HIDDEN:  # with MAX_ABS_PARAM and |activation| <= 256, sums stay below 2**53
            raise LotteryError(f"ARM hidden width must be 1..{MAX_ARM_HIDDEN}")
        for name, shape in expected_shapes(hidden).items():
            if tuple(q.tensors[name].shape) != shape:
                raise LotteryError(f"ARM parameter {name} has shape {tuple(q.tensors[name].shape)}, expected {shape}")
        deq = q.dequantized()
        for name, t in deq.items():
            if t.numel() and float(t.abs().max()) > MAX_ABS_PARAM:
                raise LotteryError(f"ARM parameter {name} out of range")
        self.qmodule = q
        residual1 = torch.eye(CONTEXT_SIZE, dtype=torch.float64) if hidden == CONTEXT_SIZE else 0.0
        self.w1 = (deq["fc1.weight"] + residual1).contiguous()
        self.b1 = deq["fc1.bias"].contiguous()
        self.w2 = (deq["fc2.weight"] + torch.eye(hidden, dtype=torch.float64)).contiguous()
        self.b2 = deq["fc2.bias"].contiguous()
        self.w3 = deq["fc3.weight"].contiguous()
        self.b3 = deq["fc3.bias"].contiguous()
        # numpy mirror (see forward_numpy): weights transposed, biases scaled by 2**16 with the
        # rounding's +0.5 and, for the hidden layers, the table offset +8 * 2**16 folded in; the
        # first layer's weights are scaled by 2**16 too (its input is unscaled). All exact.
        one, offset = fixedpoint.ONE, fixedpoint.LUT_RANGE * fixedpoint.ONE
        self._np = [((self.w1 * one).t().contiguous().numpy(), (self.b1 * one + (0.5 + offset)).numpy()),
                    (self.w2.t().contiguous().numpy(), (self.b2 * one + (0.5 + offset)).numpy()),
                    (self.w3.t().contiguous().numpy(), (self.b3 * one + 0.5).numpy())]

    def __call__(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ctx: float64 (N, 24) of integer latent values -> (mu, log_scale) float64 (N,).

        Contexts are clamped to the activation range (+-256) first, so the first product stays
        exact whatever the latent values.
        """
        x = ctx.to(torch.float64).clamp(-fixedpoint.ACT_LIMIT, fixedpoint.ACT_LIMIT)
        h1 = exact_gelu(fixedpoint.linear(x, self.w1, self.b1))
        h2 = exact_gelu(fixedpoint.linear(h1, self.w2, self.b2))
        out = fixedpoint.linear(h2, self.w3, self.b3)
        return out[:, 0], out[:, 1]

    def forward_numpy(self, ctx: np.ndarray, clipped: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Same values as __call__, bit for bit, with few numpy ops (the decoder's hot loop).

        Works on activations scaled by 2**16 (integers): every step below is the exact
        counterpart of fixedpoint.linear / round_fixed / gelu, each intermediate is an integer
        or a dyadic far below 2**53, so no rounding happens anywhere except the explicit floors.
        `clipped`: the caller guarantees |ctx| <= ACT_LIMIT (the decoder keeps its context canvas
        clipped), so the input clamp is skipped. The test suite checks equality with __call__.

        Pre-activations carry an extra +8 * 2**16 folded into the biases (an exact integer shift),
        so the GELU table index is floor(h) clamped to [0, 16 * 2**16]: `take(mode="clip")` does
        the clamp, and truncation equals floor wherever the clamp does not decide (h >= 0). Above
        +8 the GELU is the identity, added only when some value of the layer gets there.
        """
        one = fixedpoint.ONE
        lim = fixedpoint.ACT_LIMIT * one
        r = fixedpoint.LUT_RANGE * one
        table = _gelu_grid_table_np()
        (w1, b1), (w2, b2), (w3, b3) = self._np
        if clipped:
            x = ctx
        else:  # np.minimum/np.maximum with out= instead of np.clip: same values, less overhead
            x = np.minimum(ctx, fixedpoint.ACT_LIMIT)
            np.maximum(x, -fixedpoint.ACT_LIMIT, out=x)
        h = x @ w1  # = 2**16 * (x @ W.T): w1 holds W.T * 2**16 (exact)
        h += b1  # biases hold 2**16 * b + 0.5 (+ r for the hidden layers): see __init__
        for w, b_next in ((w2, b2), (w3, b3)):
            k = h.astype(np.int64)  # |h| < 2**36: exact
            g = table.take(k, mode="clip")  # gelu * 2**16 at the clamped grid value
            if k.max() > 2 * r:  # identity part: k - 2r, with k clamped to lim + r first
                above = np.floor(h)
                above -= 2 * r
                np.maximum(above, 0.0, out=above)
                np.minimum(above, lim - r, out=above)
                g += above  # the table ends at exactly 8 * 2**16
            h = g @ w  # g is gelu * 2**16, so this is 2**16 * (gelu @ W.T): exact
            h += b_next
        np.floor(h, out=h)
        np.minimum(h, lim, out=h)
        np.maximum(h, -lim, out=h)
        out = h * (1.0 / one)
        return out[:, 0], out[:, 1]
