"""Probe: the ARM's forward and backward fused over blocks of rows that fit in a cache.

    python -m benchmarks.arm_chunk_probe [--threads 1] [--size 256x256] [--chunks 4096,16384,65536]

Why: a 256x256 ARM step holds (16, 65,536)-float activations (4 MB each); its GELUs and skinny
matrix products run at a few GB/s, as if bound by memory traffic. This probe computes the rate's
value and every gradient block by block (forward, the Laplace cost and its derivatives by hand,
backward), so each block's activations stay in the cache and nothing image-sized is kept for a
backward pass, and times it against `Arm.rate_bits` + autograd on the same latents. It also
checks that both give the same bits and gradients (float order aside).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from lotterycli.config import load_task_config
from lotterycli.model import arm as A
from lotterycli.model.lottery_model import LotteryModel
from lotterycli.model.overlap_add import overlap_add

_LN2 = math.log(2.0)


def laplace_bits_and_grads(q: torch.Tensor, mu: torch.Tensor, ls: torch.Tensor):
    """`arm.laplace_bits` and its derivatives by hand: (bits, d bits/d mu, d bits/d log_scale),
    with the same gradient rules (inward clamp, capped cost keeping its gradient)."""
    lo, hi, floor = A.LOG_SCALE_MIN, A.LOG_SCALE_MAX, 2.0 ** A.PROB_FLOOR_LOG2
    t = torch.exp(-ls.clamp(lo, hi))
    diff = q - mu
    d = diff.abs()
    inside = d < 0.5
    log_p_out = -(d.clamp(min=0.5) - 0.5) * t + torch.log(-torch.expm1(-t)) - _LN2
    dt_out = 0.5 - d + 1.0 / torch.expm1(t)
    dc = d.clamp(max=0.5)
    e1 = torch.expm1(-(0.5 - dc) * t)
    e2 = torch.expm1(-(0.5 + dc) * t)
    p = -0.5 * (e1 + e2)
    inv_p = torch.where(p >= floor, 1.0 / p, 0.0)
    log_p = torch.where(inside, torch.log(p.clamp(min=floor)), log_p_out)
    dd = torch.where(inside, (-0.5 * t) * (e1 - e2) * inv_p, -t) * (-1.0 / _LN2)
    dt = torch.where(inside, 0.5 * ((0.5 - dc) * (e1 + 1) + (0.5 + dc) * (e2 + 1)) * inv_p, dt_out) * (-1.0 / _LN2)
    g_ls = dt * -t
    g_ls = g_ls.masked_fill(((ls < lo) & (g_ls > 0)) | ((ls > hi) & (g_ls < 0)), 0.0)
    bits = (-log_p / _LN2).clamp(max=-A.PROB_FLOOR_LOG2)
    return bits, -dd * diff.sign(), g_ls


def chunked_rate(arm: A.Arm, grids: list[torch.Tensor], chunk: int):
    """(total bits, gradient of each grid, gradients of w1res, b1, w2res, b2, w3, b3), computed
    over blocks of about `chunk` latents (whole rows)."""
    w1, b1 = arm._w1res().detach(), arm.fc1.bias.detach()
    w2, b2 = arm._w2res().detach(), arm.fc2.bias.detach()
    w3, b3 = arm.fc3.weight.detach(), arm.fc3.bias.detach()
    kernel = A._scatter_kernel(w1)
    grads = [torch.zeros_like(p) for p in (w1, b1, w2, b2, w3, b3)]
    gw1, gb1, gw2, gb2, gw3, gb3 = grads
    total = torch.zeros(())
    grid_grads = []
    for g in grids:
        g = g.detach()
        h, w = g.shape
        xpad = A._pad(g)
        gxpad = torch.zeros_like(xpad)
        g_symbols = torch.empty_like(g)
        rows = max(1, chunk // w)
        for a in range(0, h, rows):
            b = min(h, a + rows)
            r = b - a
            xc = xpad[a: b + 4]
            a1 = F.conv2d(xc.reshape(1, 1, r + 4, w + 8), kernel, b1).reshape(-1, r * w)
            h1 = F.gelu(a1)
            a2 = torch.addmm(b2.reshape(-1, 1), w2, h1)
            h2 = F.gelu(a2)
            out = torch.addmm(b3.reshape(-1, 1), w3, h2)
            bits, g_mu, g_ls = laplace_bits_and_grads(g[a:b].reshape(-1), out[0], out[1])
            total += bits.sum()
            g_out = torch.stack((g_mu, g_ls))
            gw3.addmm_(g_out, h2.t())
            gb3 += g_out.sum(1)
            g_a2 = torch.ops.aten.gelu_backward(w3.t() @ g_out, a2)
            gw2.addmm_(g_a2, h1.t())
            gb2 += g_a2.sum(1)
            g_a1 = torch.ops.aten.gelu_backward(w2.t() @ g_a2, a1)
            gb1 += g_a1.sum(1)
            gw1 += A._weight_grad(xc, g_a1, r, w)
            taps = (w1.t() @ g_a1).reshape(A.CONTEXT_SIZE, 1, r, w)
            gxpad[a: b + 4].add_(overlap_add(taps, A._KH, A._KW, A._TAP_POSITIONS)[0])
            g_symbols[a:b] = (-g_mu).reshape(r, w)
        grid_grads.append(gxpad[4:, 4:-4] + g_symbols)
    return total, grid_grads, grads


def _median_ms(fn, repeats: int = 15) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--chunks", default="4096,16384,65536")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    model = LotteryModel(height, width, load_task_config("compress").architecture, seed=0, mask_ratio=0.3)
    torch.manual_seed(0)
    latents = [(torch.randn(g.shape) * 2).round().requires_grad_() for g in model.latents.grids]
    arm = model.arm
    with torch.no_grad():  # away from the initial state, so that every gradient is non-trivial
        for p in arm.parameters():
            p.add_(torch.randn_like(p) * 0.2)

    def autograd_rate():
        for g in latents:
            g.grad = None
        arm.zero_grad()
        bits = arm.rate_bits(latents)
        bits.backward()
        return bits

    bits = float(autograd_rate().detach())
    for chunk in (int(c) for c in args.chunks.split(",")):
        total, grid_grads, _ = chunked_rate(arm, latents, chunk)
        err = max(float((g.grad - gg).abs().max() / g.grad.abs().max()) for g, gg in zip(latents, grid_grads))
        ref_ms = _median_ms(autograd_rate)
        new_ms = _median_ms(lambda c=chunk: chunked_rate(arm, latents, c))
        print(f"blocks of {chunk:6d} latents: {new_ms:6.1f} ms against {ref_ms:6.1f} ms (autograd, whole grids);"
              f" bits {float(total):.1f} vs {bits:.1f}, largest latent-gradient difference {err:.1e} (relative)")


if __name__ == "__main__":
    main()
