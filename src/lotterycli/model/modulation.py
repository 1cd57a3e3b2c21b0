"""ModNet: turns the upsampled latents into the per-layer modulations M1, M2, M3 ("rewind").

U0 = GELU(1x1 conv n_levels->hidden), U1 = GELU(1x1 hidden->out), U2 = GELU(3x3(U1) + U1),
U3 = GELU(3x3(U2) + U2); M3 = [U3, U2, U1, U0], and M1, M2 are its leading 2*out, 3*out rows.
Tensors are kept as (C, N) matrices so the 1x1 layers are plain matmuls and the (C, H, W) views
for the 3x3 layers are free.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import device_policy, fixedpoint
from .architecture import Architecture


class _Conv3x3(torch.autograd.Function):
    """3x3 'same' convolution of a (C, H*W) map: nine shifted copies and one matmul forward, one
    small convolution for the input gradient.

    Why: with 3 channels the work is tiny (81 MACs per pixel). oneDNN's convolution backward cost
    ~8 ms per call at 256x256 on one core, so the forward multiplies the stacked shifts. Their
    autograd backward was the next cost: a (27, 3) x (3, H*W) product, memory-bound at that
    shape, then nine shifted copies summed. The input gradient is itself a 3x3 convolution (of
    the output gradient with the transposed, flipped kernel), which oneDNN's forward does well:
    a 256x256 layer's forward and backward together 6.4 -> 3.8 ms on one thread, 5.3 -> 2.5 ms
    on two. The weight gradient multiplies the saved shifts. Same sums as F.conv2d up to float
    order (tests/test_model.py).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, height: int, width: int):
        c = x.shape[0]
        if device_policy.launch_bound(x):  # one im2col instead of a pad, nine slices and a stack
            shifts = F.unfold(x.view(1, c, height, width), (3, 3), padding=1)[0]
        else:  # on a CPU the slices are several times faster than im2col
            padded = F.pad(x.view(c, height, width), (1, 1, 1, 1))
            shifts = torch.stack([padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)], 1)
            shifts = shifts.view(9 * c, -1)
        ctx.save_for_backward(shifts, weight)
        ctx.size = (height, width)
        return torch.addmm(bias[:, None], weight.reshape(weight.shape[0], -1), shifts)

    @staticmethod
    def backward(ctx, grad):
        shifts, weight = ctx.saved_tensors
        height, width = ctx.size
        grad = grad.contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            flipped = weight.transpose(0, 1).flip(2, 3)
            gx = F.conv2d(grad.view(1, -1, height, width), flipped, padding=1).view(weight.shape[1], -1)
        if ctx.needs_input_grad[1]:
            gw = (grad @ shifts.t()).view_as(weight)
        if ctx.needs_input_grad[2]:
            gb = grad.sum(1)
        return gx, gw, gb, None, None


def conv3x3_unfolded(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """3x3 'same' convolution of a (C, H*W) map -> (C_out, H*W), for fitting (`_Conv3x3`)."""
    return _Conv3x3.apply(x, weight, bias, height, width)


class ModNet(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        n, hid, out = arch.n_levels, arch.modnet_hidden, arch.modnet_out
        self.u0 = nn.Linear(n, hid)
        self.u1 = nn.Linear(hid, out)
        self.u2 = nn.Conv2d(out, out, 3, padding=1)
        self.u3 = nn.Conv2d(out, out, 3, padding=1)
        with torch.no_grad():  # the residual 3x3 layers start close to identity
            self.u2.weight.mul_(0.1)
            self.u3.weight.mul_(0.1)

    def forward(self, features: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features (n_levels, H*W) -> the blocks ([U3, U2], U1, U0) whose concatenation is M3."""
        gelu = F.gelu
        u0 = gelu(torch.addmm(self.u0.bias[:, None], self.u0.weight, features))
        u1 = gelu(torch.addmm(self.u1.bias[:, None], self.u1.weight, u0))
        u2 = gelu(conv3x3_unfolded(u1, self.u2.weight, self.u2.bias, height, width) + u1)
        u3 = gelu(conv3x3_unfolded(u2, self.u3.weight, self.u3.bias, height, width) + u2)
        return torch.cat([u3, u2]), u1, u0



def modnet_exact_pointwise(params: dict[str, torch.Tensor], features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed-point U0, U1 of a block of pixels: float64 dyadic params, grid features (n_levels, N).

    Both layers are per pixel, so the decoder runs them on cache-sized blocks of pixels.
    """
    g, one = fixedpoint.gelu_scaled_, fixedpoint.ONE  # g: rounding + GELU, fused
    u0 = g(torch.addmm(params["u0.bias"][:, None], params["u0.weight"], features).mul_(one))
    u1 = g(torch.addmm(params["u1.bias"][:, None], params["u1.weight"], u0).mul_(one))
    return u0, u1


def modnet_exact_residual(params: dict[str, torch.Tensor], u1: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed-point U2, U3 (the 3x3 residual layers) of the whole image from U1 (out, H*W)."""
    g, r, one = fixedpoint.gelu_scaled_, fixedpoint.round_fixed, fixedpoint.ONE  # g: rounding + GELU, fused
    c = u1.shape[0]

    def conv3(x: torch.Tensor, name: str) -> torch.Tensor:
        y = fixedpoint.conv3x3_exact(x.view(c, height, width), params[f"{name}.weight"], params[f"{name}.bias"])
        return r(y.view(c, -1))

    u2 = g((conv3(u1, "u2") + u1).mul_(one))
    u3 = g((conv3(u2, "u3") + u2).mul_(one))
    return u2, u3
