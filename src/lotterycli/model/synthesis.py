"""The masked random synthesis network: frozen seeded weights, a learned binary mask.

Only one score per weight is learned; the kept set is the global top (1 - mask_ratio) fraction of
scores (one threshold across all layers). The forward pass uses W0 * mask; the backward pass sends
the gradient of the mask straight through to the scores.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import device_policy, fixedpoint
from .architecture import Architecture
from .prng import uniform_odd_integers

WEIGHT_BITS = 13  # odd integers in +-(2**13 - 1)
SCALE_BITS = 8  # layer bound rounded to a multiple of 2**-8


def random_weight_integers(arch: Architecture, seed: int) -> tuple[list[torch.Tensor], list[int]]:
    """Integer weights and per-layer integer bounds: weight = w_int * bound_int * 2**-(13 + 8).

    Uniform with a Kaiming bound sqrt(6 / fan_in); the bound is rounded to 2**-8 so every weight is
    an exact dyadic (22 significant bits: exact in float32 too).
    """
    shapes = arch.synth_layer_shapes
    ints = uniform_odd_integers(seed, arch.n_synth_weights, WEIGHT_BITS)
    out, bounds, pos = [], [], 0
    for fan_out, fan_in in shapes:
        n = fan_out * fan_in
        out.append(torch.tensor(ints[pos : pos + n], dtype=torch.int64).view(fan_out, fan_in))
        bounds.append(max(1, round(math.sqrt(6.0 / fan_in) * (1 << SCALE_BITS))))
        pos += n
    return out, bounds


def random_weights(arch: Architecture, seed: int, dtype=torch.float32) -> list[torch.Tensor]:
    """The frozen synthesis weights W0 regenerated from the seed (exact dyadic values)."""
    ints, bounds = random_weight_integers(arch, seed)
    shift = WEIGHT_BITS + SCALE_BITS
    return [(w * b).to(torch.float64).mul_(2.0 ** -shift).to(dtype) for w, b in zip(ints, bounds)]


def pixel_coordinates(height: int, width: int, dtype=torch.float32, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """(2, H*W) pixel-centre coordinates (x, y) in (-1, 1), rounded to the fixed-point grid; with
    `rows` (a, b) only those rows' pixels.

    Computed with IEEE-exact float64 division and rounding so the decoder gets the same values.
    """
    a, b = rows if rows is not None else (0, height)
    xs = torch.arange(width, dtype=torch.float64).mul_(2).add_(1).div_(width).sub_(1)
    ys = torch.arange(a, b, dtype=torch.float64).mul_(2).add_(1).div_(height).sub_(1)
    xs, ys = fixedpoint.round_fixed(xs), fixedpoint.round_fixed(ys)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)]).to(dtype)


def split_layers(flat: torch.Tensor, arch: Architecture) -> list[torch.Tensor]:
    """Split a flat per-weight vector (mask or scores) into per-layer (out, in) matrices."""
    out, pos = [], 0
    for fan_out, fan_in in arch.synth_layer_shapes:
        out.append(flat[pos : pos + fan_out * fan_in].view(fan_out, fan_in))
        pos += fan_out * fan_in
    return out


def _first_preactivation(w1: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """w1 @ coords for rows of the first layer, written out as elementwise products and sums over
    the few coordinates. Why: a matrix product's kernel, and so its rounding, depends on how many
    rows it multiplies, and the cached first layer recomputes only the rows whose mask changed; a
    fit resumed from a checkpoint starts its cache afresh. Written out, every value is rounded the
    same way whichever rows are computed together, so the resumed fit continues exactly."""
    out = w1[:, :1] * coords[:1]
    for k in range(1, coords.shape[0]):
        out = out + w1[:, k : k + 1] * coords[k : k + 1]
    return out


def topk_mask(scores: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """Bool mask keeping the round((1 - mask_ratio) * n) highest scores (ties: lowest index)."""
    n = scores.numel()
    keep = n - int(round(mask_ratio * n))
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if keep > 0:
        idx = torch.topk(scores.detach(), keep, sorted=False).indices
        mask[idx] = True
    return mask


class _CachedFirstLayer(torch.autograd.Function):
    """h1 = GELU(w1 @ coords) from values computed earlier: forward returns `h1`, backward gives
    w1 its gradient (grad * GELU'(w1 @ coords)) @ coords.T (coords and w1 get no other gradient)."""

    @staticmethod
    def forward(ctx, w1, h1, slope, coords):
        ctx.save_for_backward(slope, coords)
        return h1.view_as(h1)  # a new tensor object: the cached one never carries a grad_fn

    @staticmethod
    def backward(ctx, grad):
        slope, coords = ctx.saved_tensors
        return (grad * slope) @ coords.t(), None, None, None


class MaskedSynthesis(nn.Module):
    """Per-pixel 4-layer MLP on (x, y) coordinates, modulated by [h, M_k] concatenations.

    The first layer sees only the fixed coordinates, so GELU(w1 @ coords) and its slope change
    only where the mask of that layer changes: they are kept between calls on the same
    coordinates and updated row by row (`_first_layer`), saving most of a GELU forward and
    backward on a (32, H*W) map per step.
    """

    def __init__(self, arch: Architecture, seed: int, mask_ratio: float):
        super().__init__()
        self.arch = arch
        self.seed = seed
        self.mask_ratio = mask_ratio
        weights = random_weights(arch, seed)
        self.register_buffer("w0_flat", torch.cat([w.reshape(-1) for w in weights]))
        # Scores start proportional to |W0| plus a little noise: the initial mask keeps the
        # largest weights of every layer relative to its bound (a sensible random subnetwork).
        bounds = torch.cat([w.abs().max().expand(w.numel()) for w in weights])
        init = self.w0_flat.abs() / bounds
        self.scores = nn.Parameter(init + 0.01 * torch.rand_like(init))

        self._first_cache: tuple | None = None  # (coords, w1 values, GELU(w1 @ coords), its slope)
        # The cache holds 256 bytes per pixel of the image: a model fitted in bands of rows, for
        # the memory, computes the first layer of each band's pixels instead.
        self.cache_first_layer = True

    def mask(self) -> torch.Tensor:
        return topk_mask(self.scores, self.mask_ratio)

    def _first_layer(self, w1: torch.Tensor, coords: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
        """GELU(w1 @ coords[:, pixels]) with w1's straight-through gradient.

        GELU(w1 @ coords) and its slope over every pixel are kept between calls on the same
        coordinates; only the rows whose weights changed since the last call (a mask flip changes
        the one or two rows holding the flipped weights) are computed again. On a CPU only.
        """
        if device_policy.launch_bound(coords) or not self.cache_first_layer:
            # off a CPU, finding changed rows needs a device sync, and GELU is cheap there
            return nn.functional.gelu(w1 @ (coords if pixels is None else coords.index_select(1, pixels)))
        cache = self._first_cache
        values = w1.detach()
        if cache is None or cache[0] is not coords:
            rows = None  # everything
        else:
            rows = torch.nonzero((cache[1] != values).any(1)).squeeze(1)  # empty when nothing changed
        if rows is None or rows.numel():
            part = values if rows is None else values.index_select(0, rows)
            with torch.enable_grad():
                a1 = _first_preactivation(part, coords).requires_grad_()
                h_part = nn.functional.gelu(a1)
                (s_part,) = torch.autograd.grad(h_part, a1, torch.ones_like(h_part))
            if rows is None:
                h1, slope = h_part.detach(), s_part
            else:  # in place: no copy of two (32, H*W) maps. A graph that still holds the old
                # values (none does between fitting steps) fails on backward with autograd's
                # in-place check instead of using the new ones.
                h1 = cache[2].index_copy_(0, rows, h_part.detach())
                slope = cache[3].index_copy_(0, rows, s_part)
            cache = self._first_cache = (coords, values.clone(), h1, slope)
        _, _, h1, slope = cache
        if pixels is not None:
            h1, slope, coords = h1.index_select(1, pixels), slope.index_select(1, pixels), coords.index_select(1, pixels)
        if not w1.requires_grad:
            return h1
        return _CachedFirstLayer.apply(w1, h1, slope, coords)

    def masked_weights(self) -> list[torch.Tensor]:
        """W0 * mask with a straight-through gradient to the scores."""
        hard = self.mask().to(self.scores.dtype)
        m = hard + (self.scores - self.scores.detach())
        return split_layers(self.w0_flat * m, self.arch)

    def forward(self, coords: torch.Tensor, modulations: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                pixels: torch.Tensor | None = None) -> torch.Tensor:
        """coords (2, N) and the ModNet blocks ([U3, U2], U1, U0) as (C, N) matrices -> RGB (3, N);
        with `pixels`, coords holds every pixel and only those columns are synthesised (the
        modulations are then (C, len(pixels))).

        Layer k sees [h, M_k] with M1 = [U3, U2], M2 = M1 + U1, M3 = M2 + U0. Instead of
        concatenating (copies) or slicing M3 (slice backward zero-fills a full-size gradient), the
        modulation terms of all layers are computed up front, one matmul per ModNet block, and
        split by rows (split's backward is a cheap concatenation).
        """
        w1, w2, w3, w4 = self.masked_weights()
        blk_a, blk_b, blk_c = modulations
        na, nb = blk_a.shape[0], blk_b.shape[0]
        h1, h2, h3 = self.arch.synth_hidden
        from_a = torch.cat([w2[:, h1:], w3[:, h2 : h2 + na], w4[:, h3 : h3 + na]]) @ blk_a
        from_b = torch.cat([w3[:, h2 + na :], w4[:, h3 + na : h3 + na + nb]]) @ blk_b
        from_c = w4[:, h3 + na + nb :] @ blk_c
        a2, a3, a4 = torch.split(from_a, [h2, h3, 3])
        b3, b4 = torch.split(from_b, [h3, 3])
        gelu = nn.functional.gelu
        h = self._first_layer(w1, coords, pixels)
        h = gelu(torch.addmm(a2, w2[:, :h1], h))
        h = gelu(torch.addmm(a3 + b3, w3[:, :h2], h))
        v = torch.addmm(a4 + b4 + from_c, w4[:, :h3], h)
        return (torch.tanh(v) + 1) * 0.5


def exact_weights(arch: Architecture, seed: int, mask: torch.Tensor) -> list[torch.Tensor]:
    """The four masked random layers as exact float64 dyadic matrices (out, in), for the decoder."""
    weights = random_weights(arch, seed, dtype=torch.float64)
    masks = split_layers(mask.to(torch.float64), arch)
    return [w * m for w, m in zip(weights, masks)]


def synthesis_exact(
    arch: Architecture, weights: list[torch.Tensor], coords: torch.Tensor, small: torch.Tensor, from_u0: torch.Tensor
) -> torch.Tensor:
    """Bit-exact fixed-point synthesis of a block of pixels -> RGB (3, N) on the 2**-16 grid.

    coords (2, N); small = [U3, U2, U1] (3*modnet_out, N); from_u0 = the last layer's exact,
    unrounded product with U0 (3, N), computed while U0 was at hand. Each layer's input is split
    into its hidden and modulation parts; the partial products are exact, so their sum equals the
    product with the concatenation, whatever the order.
    """
    w1, w2, w3, w4 = weights
    h1, h2, h3 = arch.synth_hidden
    m1, m2, _ = arch.modulation_channels
    g, r, one = fixedpoint.gelu_scaled_, fixedpoint.round_fixed_, fixedpoint.ONE  # g: rounding + GELU, fused
    h = g((w1 @ coords).mul_(one))
    h = g(torch.addmm(w2[:, h1:] @ small[:m1], w2[:, :h1], h).mul_(one))
    h = g(torch.addmm(w3[:, h2:] @ small[:m2], w3[:, :h2], h).mul_(one))
    v = r(torch.addmm(w4[:, h3 : h3 + m2] @ small[:m2] + from_u0, w4[:, :h3], h).mul_(one))
    return r(fixedpoint.tanh(v).add_(1.0).mul_(0.5 * one))
