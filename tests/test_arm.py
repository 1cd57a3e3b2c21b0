"""The ARM: fused-convolution rate vs a naive gather, gradients, fixed-point exactness."""

import numpy as np
import pytest
import torch

from lotterycli.errors import LotteryError
from lotterycli.model import fixedpoint
from lotterycli.model.arm import (
    CONTEXT_OFFSETS,
    PARAM_NAMES,
    Arm,
    ArmExact,
    causal_contexts,
    exact_gelu,
    laplace_bits,
)


def _random_arm(seed, std=0.2, dtype=torch.float32, hidden=24):
    torch.manual_seed(seed)
    arm = Arm(hidden).to(dtype)
    with torch.no_grad():
        for p in arm.parameters():
            p.normal_(0, std)
    return arm


def _shapes():
    return [(37, 53), (19, 27), (10, 14), (5, 7), (3, 4), (2, 2), (1, 1)]


def test_offsets_are_causal_in_wavefront_order():
    assert len(CONTEXT_OFFSETS) == 24 and len(set(CONTEXT_OFFSETS)) == 24
    assert CONTEXT_OFFSETS[0] == (-4, 0) and CONTEXT_OFFSETS[-1] == (0, -1)
    for dy, dx in CONTEXT_OFFSETS:
        assert 4 * dy + dx < 0  # every neighbour is in an earlier wavefront t = 4y + x


@pytest.mark.parametrize("hidden", [24, 16, 8])
def test_fused_rate_equals_naive_gather(hidden):
    for seed in range(3):
        arm = _random_arm(seed, hidden=hidden)
        lat = [torch.randn(s) * 4 for s in _shapes()]
        fused = arm.rate_bits(lat)
        naive = arm.rate_bits_naive(lat)
        assert abs(float(fused.detach()) - float(naive.detach())) <= 1e-4 * float(naive.detach())


@pytest.mark.parametrize("hidden", [24, 12])
def test_gradients_match_naive_and_reach_everything(hidden):
    arm = _random_arm(3, dtype=torch.float64, hidden=hidden)
    lat = [(torch.randn(s, dtype=torch.float64) * 3).requires_grad_() for s in _shapes()]
    arm.rate_bits(lat).backward()
    g_lat = [g.grad.clone() for g in lat]
    g_par = {n: p.grad.clone() for n, p in arm.named_parameters()}
    for g in lat:
        g.grad = None
    arm.zero_grad()
    arm.rate_bits_naive(lat).backward()
    for a, g in zip(g_lat, lat):
        assert torch.allclose(a, g.grad, rtol=1e-6, atol=1e-8)
        assert a.abs().sum() > 0
    for n, p in arm.named_parameters():
        assert torch.allclose(g_par[n], p.grad, rtol=1e-6, atol=1e-6), n
        assert g_par[n].abs().sum() > 0, n


def test_rate_of_empty_list_is_zero():
    assert float(Arm().rate_bits([]).detach()) == 0.0


def test_laplace_bits_sane():
    mu = torch.zeros(5)
    for ls in (-3.0, 0.0, 5.5):
        q = torch.arange(-2.0, 3.0)
        p = torch.exp2(-laplace_bits(q, mu, torch.full((5,), ls)))
        assert (p > 0).all() and float(p.sum()) <= 1.0 + 5 * 2.0**-16 + 1e-6
    # closed form for b = 1, q = 0: 1 - exp(-0.5)
    b0 = laplace_bits(torch.zeros(1), torch.zeros(1), torch.zeros(1))
    assert abs(float(b0) + np.log2(1 - np.exp(-0.5))) < 1e-5
    # floor at 2**-16
    far = laplace_bits(torch.tensor([1000.0]), torch.zeros(1), torch.tensor([-3.0]))
    assert float(far) == 16.0


def test_rate_gradient_survives_the_scale_clamp_and_the_16_bit_cap():
    """A latent far from a confident prediction must still pull the prediction's scale up (the
    high-lambda collapse: with both limits flat, the ARM could never recover)."""
    q = torch.tensor([3.0])
    mu = torch.zeros(1, requires_grad=True)
    ls = torch.tensor([-6.0], requires_grad=True)  # below LOG_SCALE_MIN and capped at 16 bits
    bits = laplace_bits(q, mu, ls)
    assert float(bits.detach()) == 16.0  # the value is unchanged
    bits.sum().backward()
    assert float(ls.grad) < 0  # descent raises the scale
    assert float(mu.grad) < 0  # descent moves mu towards q


def test_scale_clamp_blocks_gradients_pointing_further_out():
    # q = mu exactly: a smaller scale always helps, so below the minimum nothing flows
    q, mu = torch.zeros(1), torch.zeros(1)
    low = torch.tensor([-6.0], requires_grad=True)
    laplace_bits(q, mu, low).sum().backward()
    assert float(low.grad) == 0.0
    inside = torch.tensor([-2.0], requires_grad=True)
    laplace_bits(q, mu, inside).sum().backward()
    assert float(inside.grad) > 0.0


def test_weight_gradient_paths_agree():
    """The CPU path (one correlation conv2d) and the GPU path (stacked shifted views)."""
    from lotterycli.model.arm import _context_matrix, _pad, _weight_grad

    torch.manual_seed(0)
    h, w = 13, 21
    xpad = _pad(torch.randn(h, w))
    grad = torch.randn(16, h * w)
    via_conv = _weight_grad(xpad, grad, h, w)
    via_matmul = grad @ _context_matrix(xpad, h, w).t()
    assert via_conv.shape == (16, 24)
    assert torch.allclose(via_conv, via_matmul, atol=1e-4, rtol=1e-5)


def test_causal_contexts_match_padded_gather():
    g = torch.randn(9, 11)
    ys, xs = torch.meshgrid(torch.arange(9), torch.arange(11), indexing="ij")
    ctx = causal_contexts(g, ys.reshape(-1), xs.reshape(-1))
    for n, (y, x) in enumerate(zip(ys.reshape(-1).tolist(), xs.reshape(-1).tolist())):
        for k, (dy, dx) in enumerate(CONTEXT_OFFSETS):
            yy, xx = y + dy, x + dx
            want = g[yy, xx] if 0 <= yy < 9 and 0 <= xx < 11 else 0.0
            assert float(ctx[n, k]) == float(want)
    arm = _random_arm(0)
    mu, ls = arm.params_maps(g)
    mu2, ls2 = arm.forward_from_context(ctx)
    assert torch.allclose(mu.reshape(-1), mu2, atol=1e-5)
    assert torch.allclose(ls.reshape(-1), ls2, atol=1e-5)


def test_quantize_names_and_roundtrip():
    arm = _random_arm(1)
    q = arm.quantize(10)
    assert list(q.tensors) == list(PARAM_NAMES)
    assert all(t.dtype == torch.int64 for t in q.tensors.values())
    arm2 = Arm.from_quantized(q)
    for n, p in arm2.named_parameters():
        assert torch.equal(p.detach().double(), q.dequantized()[n].float().double())
    bad = arm.quantize(10)
    bad.tensors["fc3.bias"] = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(LotteryError):
        ArmExact(bad)


def _int_contexts(n, seed, lim=40):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(-lim, lim + 1, (n, 24), generator=g).to(torch.float64)
    return ctx * (torch.rand(n, 24, generator=g) < 0.6)


@pytest.mark.parametrize("hidden", [24, 16, 8])
def test_exact_matches_float_forward(hidden):
    for seed in range(3):
        arm = _random_arm(seed, std=0.15, dtype=torch.float64, hidden=hidden)
        q = arm.quantize(12)
        arm.load_quantized(q)
        ex = ArmExact(q)
        ctx = _int_contexts(2000, seed, lim=6)
        mu, ls = ex(ctx)
        with torch.no_grad():
            mu_f, ls_f = arm.forward_from_context(ctx)
        assert float((mu - mu_f).abs().max()) < 1e-3
        assert float((ls - ls_f).abs().max()) < 1e-3


def test_exact_gelu_is_fixedpoint_gelu():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-12 << 16, 12 << 16, (20000,), generator=g).to(torch.float64) / fixedpoint.ONE
    x = torch.cat([x, torch.tensor([-8.0, 8.0, -256.0, 256.0, 0.0, 8.0 + 2**-16, -8.0 - 2**-16])])
    assert torch.equal(exact_gelu(x), fixedpoint.gelu(x))


@pytest.mark.parametrize("hidden", [24, 8])
def test_exact_is_bit_identical_across_threads_batches_and_paths(hidden):
    arm = _random_arm(5, std=0.5, hidden=hidden)
    ex = ArmExact(arm.quantize(13))
    ctx = _int_contexts(1000, 5, lim=300)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        mu1, ls1 = ex(ctx)
        torch.set_num_threads(2)
        mu2, ls2 = ex(ctx)
    finally:
        torch.set_num_threads(old)
    mu3 = torch.cat([ex(c)[0] for c in ctx.split(7)])
    ls3 = torch.cat([ex(c)[1] for c in ctx.split(7)])
    mu4, ls4 = ex.forward_numpy(ctx.numpy().copy())
    mu5 = np.concatenate([ex.forward_numpy(c.numpy().copy())[0] for c in ctx.split(7)])
    for m in (mu2, mu3, torch.from_numpy(mu4), torch.from_numpy(mu5)):
        assert torch.equal(mu1, m)
    for s in (ls2, ls3, torch.from_numpy(ls4)):
        assert torch.equal(ls1, s)
    # the decoder's path: contexts clipped beforehand, the clamp skipped
    clipped = np.clip(ctx.numpy(), -fixedpoint.ACT_LIMIT, fixedpoint.ACT_LIMIT)
    mu6, ls6 = ex.forward_numpy(clipped, clipped=True)
    assert torch.equal(mu1, torch.from_numpy(mu6)) and torch.equal(ls1, torch.from_numpy(ls6))
    # results are on the fixed-point grid
    assert torch.equal(mu1 * fixedpoint.ONE, torch.round(mu1 * fixedpoint.ONE))


def test_banded_rate_sums_the_bands_and_keeps_gradients():
    arm = _random_arm(5, dtype=torch.float64)
    lat = [(torch.randn(s, dtype=torch.float64) * 3).requires_grad_() for s in _shapes()]
    banded = arm.rate_bits(lat, band_rows=8)
    split = sum(arm.rate_bits([b]) for g in lat for b in g.split(8, dim=0))
    assert torch.allclose(banded, split, rtol=1e-12)
    assert not torch.allclose(banded, arm.rate_bits(lat))  # the first rows of each band lose their context
    banded.backward()
    assert all(g.grad.abs().sum() > 0 for g in lat)


def test_distinct_contexts_weighted_by_their_counts_give_the_rate_and_its_gradients(monkeypatch):
    """The refit's pairs (each distinct context and value once, times its count) give rate_bits'
    sum and gradients, with bands and when built in several chunks; latents mostly zero, as at
    low rates, have far fewer pairs than values."""
    from lotterycli.model import arm as arm_module
    from lotterycli.model.arm import Arm

    torch.manual_seed(4)
    arm = Arm(8).double()
    with torch.no_grad():
        arm.fc3.weight.normal_(0, 0.3)
    sizes = ((40, 31), (20, 16), (10, 8), (5, 4))
    sparse = [torch.round(torch.randn(h, w, dtype=torch.float64) * 0.25) + 0.0 for h, w in sizes]  # ~95 % zeros
    n = sum(g.numel() for g in sparse)
    for band_rows, chunk in ((0, 1 << 20), (7, 1 << 20), (0, 50), (7, 33)):
        monkeypatch.setattr(arm_module, "DISTINCT_LATENTS", chunk)
        contexts, values, counts = Arm.distinct_contexts(sparse, band_rows)
        assert contexts.shape == (24, values.numel()) and counts.shape == values.shape
        assert int(counts.sum()) == n and values.numel() < n / 3
        pairs = torch.cat([contexts, values[None]]).t().tolist()
        assert len({tuple(p) for p in pairs}) == len(pairs)  # each pair once
        arm.zero_grad()
        a = arm.rate_bits(sparse, band_rows)
        a.backward()
        grads = [p.grad.clone() for p in arm.parameters()]
        arm.zero_grad()
        b = arm.rate_bits_from_contexts(contexts, values, counts)
        b.backward()
        assert torch.allclose(a, b, rtol=1e-12)
        assert all(torch.allclose(g, p.grad, rtol=1e-9, atol=1e-12) for g, p in zip(grads, arm.parameters()))
    # the same pairs in the same order however they were gathered
    monkeypatch.setattr(arm_module, "DISTINCT_LATENTS", 1 << 20)
    whole = Arm.distinct_contexts(sparse, 7)
    monkeypatch.setattr(arm_module, "DISTINCT_LATENTS", 33)
    assert all(torch.equal(x, y) for x, y in zip(whole, Arm.distinct_contexts(sparse, 7)))
    # too many pairs to merge: each chunk's own, the same sum
    monkeypatch.setattr(arm_module, "DISTINCT_MERGE", 10)
    contexts, values, counts = Arm.distinct_contexts(sparse, 7)
    assert values.numel() > whole[1].numel() and int(counts.sum()) == n
    assert torch.allclose(arm.rate_bits_from_contexts(contexts, values, counts), arm.rate_bits(sparse, 7), rtol=1e-12)


def test_rate_from_fixed_contexts_equals_the_fused_rate_with_bands():
    """The refit's path (contexts built once, one batch) gives rate_bits' sum and gradients."""
    from lotterycli.model.arm import Arm

    torch.manual_seed(3)
    arm = Arm(12).double()
    with torch.no_grad():
        arm.fc3.weight.normal_(0, 0.3)
        arm.fc1.bias.normal_(0, 0.1)
    latents = [torch.round(torch.randn(h, w, dtype=torch.float64) * 3) for h, w in ((23, 17), (12, 9), (6, 5), (3, 3))]
    for band_rows in (0, 5):
        contexts, values = Arm.fixed_contexts(latents, band_rows)
        assert contexts.shape == (24, sum(g.numel() for g in latents)) and values.shape == (contexts.shape[1],)
        arm.zero_grad()
        a = arm.rate_bits(latents, band_rows)
        a.backward()
        grads = [p.grad.clone() for p in arm.parameters()]
        arm.zero_grad()
        b = arm.rate_bits_from_contexts(contexts, values)
        b.backward()
        assert torch.allclose(a, b, rtol=1e-12)
        assert all(torch.allclose(g, p.grad, rtol=1e-9, atol=1e-12) for g, p in zip(grads, arm.parameters()))
