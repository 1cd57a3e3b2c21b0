"""The model: seeded weights, mask, straight-through, latent proxies, frames, exact decoding."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from conftest import arch, edges_scene, scene, schedule

from lotterycli.bitstream.container import decode_file, encode_file
from lotterycli.bitstream.header import FORMAT_VERSION
from lotterycli.compression.quantize import quantize_networks
from lotterycli.fitting.loop import fit
from lotterycli.fitting.losses import squared_error
from lotterycli.metrics import psnr
from lotterycli.model import fixedpoint, prng, synthesis, upsampling
from lotterycli.model.architecture import macs_per_pixel
from lotterycli.model.exact_render import render_payload
from lotterycli.model.frames import N_FRAMES, dihedral, frame_shape
from lotterycli.model.latents import LatentGrids, kumaraswamy_noise, soft_round
from lotterycli.model.lottery_model import LotteryModel, model_from_payload

# Pinned values. If one of these changes, every existing .lottery file decodes differently:
# that needs a format version bump, not a new pin.
WEIGHTS_SEED_1234_SHA256 = "da0e15e99ab07bc21de7c878050e7870077861ce77064e2792e438de953159fd"
TABLE_FINGERPRINT = "7eb573e891e45ba8040a83991e3236a727fba60b89a9b8ec6e4a7092b0273a06"


# -- PRNG and frozen weights --------------------------------------------------------------------
def test_splitmix64_reference_values():
    assert prng.splitmix64(0, 3) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    # a longer run starts with the same values (the generator is a plain sequence)
    assert prng.splitmix64(0, 5)[:3] == prng.splitmix64(0, 3)
    # seeds are taken mod 2**64
    assert prng.splitmix64(2**64 + 7, 4) == prng.splitmix64(7, 4)


def test_uniform_odd_integers_range():
    vals = prng.uniform_odd_integers(5, 4000, bits=13)
    arr = np.array(vals)
    assert np.all(arr % 2 != 0)
    assert arr.min() >= -(2**13 - 1) and arr.max() <= 2**13 - 1
    assert abs(arr.mean()) < 300  # symmetric around zero (std is ~4700)


def _weights_sha256(weights) -> str:
    h = hashlib.sha256()
    for w in weights:
        h.update(w.detach().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def test_random_weights_pinned_hash():
    weights = synthesis.random_weights(arch(), seed=1234)
    assert [tuple(w.shape) for w in weights] == arch().synth_layer_shapes
    assert all(w.dtype == torch.float32 for w in weights)
    assert _weights_sha256(weights) == WEIGHTS_SEED_1234_SHA256


def test_random_weights_depend_on_seed_and_are_reproducible():
    a = synthesis.random_weights(arch(), seed=1)
    b = synthesis.random_weights(arch(), seed=2)
    a2 = synthesis.random_weights(arch(), seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, a2))
    assert all(not torch.equal(x, y) for x, y in zip(a, b))
    # most individual weights differ, not just a few
    assert float((torch.cat([x.flatten() for x in a]) != torch.cat([y.flatten() for y in b])).float().mean()) > 0.9


def test_random_weights_are_exact_dyadics():
    shift = synthesis.WEIGHT_BITS + synthesis.SCALE_BITS  # 21
    w32 = synthesis.random_weights(arch(), seed=99)
    w64 = synthesis.random_weights(arch(), seed=99, dtype=torch.float64)
    for a, b in zip(w32, w64):
        scaled = b * 2.0**shift
        assert torch.equal(scaled, torch.round(scaled)), "w * 2**21 must be an integer"
        assert torch.equal(a.double(), b), "float32 weights must be exact (no rounding)"
        assert bool((a != 0).all()), "odd integers: no weight is exactly zero"
    # Kaiming-like bound per layer: |w| <= sqrt(6 / fan_in) (rounded to 2**-8)
    for (_, fan_in), w in zip(arch().synth_layer_shapes, w64):
        assert float(w.abs().max()) <= math.sqrt(6.0 / fan_in) + 2**-8


# -- mask and straight-through ------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 100, 2897])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.99])
def test_topk_mask_keeps_exact_count(n, ratio):
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n))
    mask = synthesis.topk_mask(scores, ratio)
    assert mask.dtype == torch.bool and mask.shape == (n,)
    keep = int(round((1 - ratio) * n))
    assert int(mask.sum()) == n - int(round(ratio * n))
    assert abs(int(mask.sum()) - keep) <= 1  # the two roundings agree up to a half-way tie
    if 0 < int(mask.sum()) < n:  # the kept ones are the highest scores
        assert float(scores[mask].min()) >= float(scores[~mask].max())


def test_topk_mask_keeps_highest():
    scores = torch.tensor([0.1, 5.0, -1.0, 3.0, 2.0])
    assert synthesis.topk_mask(scores, 0.4).tolist() == [False, True, False, True, True]


def test_straight_through_gradient_reaches_scores():
    ref = arch()
    syn = synthesis.MaskedSynthesis(ref, seed=3, mask_ratio=0.3)
    assert int(syn.mask().sum()) == ref.n_synth_weights - round(0.3 * ref.n_synth_weights)
    coords = synthesis.pixel_coordinates(8, 8)
    m1, m2, m3 = ref.modulation_channels
    o = ref.modnet_out
    gen = torch.Generator().manual_seed(0)
    mods = (torch.randn(2 * o, 64, generator=gen), torch.randn(o, 64, generator=gen), torch.randn(m3 - m2, 64, generator=gen))
    out = syn(coords, mods)
    assert out.shape == (3, 64)
    assert float(out.detach().min()) >= 0.0 and float(out.detach().max()) <= 1.0
    out.sum().backward()
    g = syn.scores.grad
    assert g is not None and torch.isfinite(g).all()
    assert float(g.abs().sum()) > 0
    # the forward pass uses W0 * hard mask: weights removed by the mask still get a gradient
    assert float(g[~syn.mask()].abs().sum()) > 0


# -- latent proxies -----------------------------------------------------------------------------
def test_hard_proxy_gives_integers_and_straight_through():
    grids = LatentGrids(20, 12, 3, gain=16.0)
    with torch.no_grad():
        for g in grids.grids:
            g.copy_(torch.randn(g.shape) * 0.3)
    rate_in, synth_in = grids.proxies("hard")
    for r, s, q in zip(rate_in, synth_in, grids.quantized()):
        assert torch.equal(r, torch.round(r)) and torch.equal(r, s)
        assert torch.equal(r.detach().to(torch.int64), q)
    sum(s.sum() for s in synth_in).backward()
    for g in grids.grids:  # straight-through: d(round(16 g))/dg == 16
        assert torch.allclose(g.grad, torch.full_like(g, 16.0))


def test_soft_proxies_are_each_grids_own_in_one_pass():
    """All grids go through the proxies as one flat tensor: the values are those of each grid on
    its own, with the noise drawn grid after grid from the same generator. Equal to the last bit
    or two only: torch computes the tail of a vectorised loop with scalar functions (pow, tanh),
    and where a grid's size is not a multiple of the vector width its tail moved."""
    grids = LatentGrids(23, 37, 5, gain=16.0, noise_seed=3)
    with torch.no_grad():
        for g in grids.grids:
            g.copy_(torch.randn(g.shape) * 0.3)
    rate_in, synth_in = grids.proxies("soft", temperature=0.25, noise_a=1.7)
    gen = torch.Generator().manual_seed(3)
    for g, r, s in zip(grids.grids, rate_in, synth_in, strict=True):
        y = g.detach() * 16.0
        noisy = soft_round(y, 0.25) + kumaraswamy_noise(y.shape, 1.7, generator=gen)
        assert r.shape == g.shape
        torch.testing.assert_close(r.detach(), noisy, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(s.detach(), soft_round(noisy, 0.25), rtol=1e-6, atol=1e-6)
    sum((r.sum() + s.square().sum()) for r, s in zip(rate_in, synth_in)).backward()
    assert all(float(g.grad.abs().sum()) > 0 for g in grids.grids)


def test_soft_round_tends_to_round():
    y = torch.linspace(-3.2, 3.2, 97)
    y = y[(y - torch.round(y)).abs() < 0.3]  # away from the half-way points
    err_hot = (soft_round(y, 1.0) - torch.round(y)).abs().max()
    err_cold = (soft_round(y, 0.02) - torch.round(y)).abs().max()
    assert err_cold < 1e-3
    assert err_cold < err_hot
    # monotone, and exact at half-integers
    s = soft_round(torch.linspace(-2, 2, 401), 0.1)
    assert bool((s[1:] >= s[:-1]).all())
    half = torch.tensor([-1.5, -0.5, 0.5, 2.5])
    assert torch.allclose(soft_round(half, 0.2), half, atol=1e-6)


def test_kumaraswamy_noise_range_and_uniform_case():
    gen = torch.Generator().manual_seed(0)
    n = kumaraswamy_noise((20000,), 2.0, generator=gen)
    assert float(n.min()) >= -0.5 and float(n.max()) <= 0.5
    u = kumaraswamy_noise((20000,), 1.0, generator=torch.Generator().manual_seed(1))
    assert abs(float(u.mean())) < 0.02 and abs(float(u.var()) - 1 / 12) < 0.01
    assert float(n.var()) < float(u.var())  # a > 1 concentrates the noise around 0


# -- frames (model.frames) ---------------------------------------------------------------------
def _asymmetric(*shape: int) -> torch.Tensor:
    """Distinct values everywhere: no symmetry of the square maps it onto itself."""
    n = 1
    for d in shape:
        n *= d
    return torch.arange(n, dtype=torch.float32).reshape(shape)


@pytest.mark.parametrize("k", range(N_FRAMES))
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6), (2, 3, 6, 6), (1, 1)])
def test_dihedral_inverse_round_trip(k, shape):
    x = _asymmetric(*shape)
    y = dihedral(x, k)
    assert y.shape[:-2] == x.shape[:-2]
    assert tuple(y.shape[-2:]) == frame_shape(x.shape[-2], x.shape[-1], k)
    assert torch.equal(dihedral(y, k, inverse=True), x)
    assert torch.equal(dihedral(dihedral(x, k, inverse=True), k), x)
    assert sorted(y.flatten().tolist()) == sorted(x.flatten().tolist())  # a permutation of the pixels
    assert torch.equal(dihedral(x, k + N_FRAMES), y)  # k is taken mod 8


def test_dihedral_frames_are_the_eight_symmetries():
    x = _asymmetric(3, 4, 4)
    frames = [dihedral(x, k) for k in range(N_FRAMES)]
    # all distinct, and closed under composition and inversion: the group of the square
    for a in range(N_FRAMES):
        assert all(not torch.equal(frames[a], frames[b]) for b in range(a))
        for b in range(N_FRAMES):
            assert any(torch.equal(dihedral(frames[a], b), f) for f in frames)
        assert any(torch.equal(dihedral(x, a, inverse=True), f) for f in frames)
    # the bits: 1 mirrors left-right, 2 top-bottom, 4 transposes (before the mirrors)
    assert torch.equal(frames[0], x)
    assert torch.equal(frames[1], x.flip(-1))
    assert torch.equal(frames[2], x.flip(-2))
    assert torch.equal(frames[4], x.transpose(-1, -2))
    assert torch.equal(frames[5], x.transpose(-1, -2).flip(-1))
    assert torch.equal(frames[7], x.transpose(-1, -2).flip(-1, -2))


@pytest.mark.parametrize("k", range(N_FRAMES))
def test_frame_shape(k):
    want = (7, 5) if k & 4 else (5, 7)
    assert frame_shape(5, 7, k) == want
    assert frame_shape(*frame_shape(5, 7, k), k) == (5, 7)  # the same shape takes it back
    assert frame_shape(5, 7, k + 3 * N_FRAMES) == want


# -- fixed point and exact decoding -------------------------------------------------------------
def test_table_fingerprint_pinned():
    assert fixedpoint.table_fingerprint() == TABLE_FINGERPRINT


def test_fixedpoint_gelu_tanh_close_to_float():
    x = fixedpoint.round_fixed(torch.linspace(-10, 10, 2001, dtype=torch.float64))
    assert torch.allclose(fixedpoint.gelu(x), torch.nn.functional.gelu(x), atol=2e-4)
    assert torch.allclose(fixedpoint.tanh(x), torch.tanh(x), atol=2e-4)
    for y in (fixedpoint.gelu(x), fixedpoint.tanh(x)):  # results stay on the grid
        assert torch.equal(y * fixedpoint.ONE, torch.round(y * fixedpoint.ONE))


@pytest.mark.parametrize("height, width", [(1, 1), (1, 7), (5, 3), (17, 23)])
def test_conv3x3_exact_equals_conv2d(height, width):
    """The decoder's 3x3 layers: nine tap matmuls give exactly F.conv2d(padding=1) on fixed-point values."""
    g = torch.Generator().manual_seed(height * 100 + width)
    x = torch.round(torch.randn(3, height, width, generator=g, dtype=torch.float64) * 65536) / 65536
    w = torch.round(torch.randn(3, 3, 3, 3, generator=g, dtype=torch.float64) * 32) / 32
    b = torch.round(torch.randn(3, generator=g, dtype=torch.float64) * 32) / 32
    expected = torch.nn.functional.conv2d(x[None], w, b, padding=1)[0]
    assert torch.equal(fixedpoint.conv3x3_exact(x, w, b), expected)


@pytest.mark.parametrize("height,width", [(1, 1), (5, 3), (37, 53)])
def test_modnet_unfolded_conv_equals_conv2d_with_gradients(height, width):
    """The fitting loop's 3x3 ModNet convolution (nine shifted copies, one matmul) computes
    conv2d's values and gradients (float64: equal to rounding)."""
    from torch.nn import functional as F

    from lotterycli.model.modulation import conv3x3_unfolded

    g = torch.Generator().manual_seed(height * 100 + width)
    x = torch.randn(3, height * width, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 3, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    upstream = torch.randn(3, height * width, dtype=torch.float64, generator=g)
    ours = conv3x3_unfolded(x, w, b, height, width)
    grads = torch.autograd.grad((ours * upstream).sum(), (x, w, b))
    ref = F.conv2d(x.view(1, 3, height, width), w, b, padding=1).view(3, -1)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (x, w, b))
    assert torch.allclose(ours, ref, rtol=0, atol=1e-12)
    for a, r in zip(grads, ref_grads):
        assert torch.allclose(a, r, rtol=0, atol=1e-11)


def test_gelu_table_ends_are_exact():
    # fixedpoint.gelu relies on these: the lookup clamps to [-8, 8] and adds relu(x - 8)
    t = fixedpoint.gelu_table()
    n = int(2 * fixedpoint.LUT_RANGE) << fixedpoint.LUT_STEP_BITS
    assert float(t[0]) == 0.0 and float(t[n]) == fixedpoint.LUT_RANGE
    x = torch.tensor([-300.0, -8.0 - 2**-16, 8.0 + 2**-16, 100.0, 256.0, 300.0], dtype=torch.float64)
    assert fixedpoint.gelu(fixedpoint.round_fixed(x)).tolist() == [0.0, 0.0, 8.0 + 2**-16, 100.0, 256.0, 256.0]


def test_gelu_on_grid_equals_gelu_everywhere():
    n = int(2 * fixedpoint.LUT_RANGE * fixedpoint.ONE) + 1
    x = torch.arange(n, dtype=torch.float64) / fixedpoint.ONE - fixedpoint.LUT_RANGE
    assert torch.equal(fixedpoint.gelu_on_grid(), fixedpoint.gelu(x))
    assert torch.equal(fixedpoint.gelu_grid(x), fixedpoint.gelu(x))


def test_gelu_grid_matches_gelu_on_decoder_shaped_maps():
    """The decoder's one-gather GELU: (channels, pixels) maps, values beyond the table both ways."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-300 << 16, 300 << 16, (5, 4001), generator=g).to(torch.float64) / fixedpoint.ONE
    x = fixedpoint.round_fixed(x)  # on the grid, clamped to +-256 like every decoder activation
    before = x.clone()
    assert torch.equal(fixedpoint.gelu_grid(x), fixedpoint.gelu(x))
    assert torch.equal(x, before)  # the input is left alone


@pytest.mark.parametrize("scale", [1.0, 4.0, 12.0, 400.0])
def test_fused_rounding_and_gelu_equals_the_two_steps(scale):
    """gelu_scaled_ (the decoder layers' fused rounding + GELU) against round_fixed then gelu,
    on unrounded dyadic products, at the rounding ties, the table ends and the activation limit."""
    g = torch.Generator().manual_seed(int(scale))
    one = fixedpoint.ONE
    s = torch.randint(-(1 << 40), 1 << 40, (6, 3001), generator=g).to(torch.float64) * (scale * one / 2**40 / 1024)
    s = torch.round(s * 1024) / 1024  # products carry a few bits below the grid
    edges = [8 * one - 0.5, 8 * one + 0.5, 8 * one - 0.51, -8 * one - 0.5, -8 * one + 0.5,
             256 * one + 0.5, 256 * one - 0.5, -256 * one - 0.5, 0.5, -0.5]
    s[0, : len(edges)] = torch.tensor(edges, dtype=torch.float64)
    want = fixedpoint.gelu(fixedpoint.round_fixed(s / one))
    assert torch.equal(fixedpoint.gelu_scaled_(s.clone()), want)


@pytest.mark.parametrize("size", [2, 3, 4, 5, 7, 8])
def test_polyphase_upsampling_equals_transposed_convolution(size):
    gen = torch.Generator().manual_seed(size)
    kernel = torch.randint(-500, 500, (size, size), generator=gen).double() / 1024
    for h, w in [(1, 1), (2, 3), (5, 7), (17, 10)]:
        x = torch.randint(-20, 20, (3, 1, h, w), generator=gen).double()
        ref = upsampling._transposed_x2(x, kernel)
        fast = upsampling._polyphase_x2(x, kernel)
        hh, ww = min(ref.shape[2], 2 * h), min(ref.shape[3], 2 * w)
        assert fast.shape[2] >= hh and fast.shape[3] >= ww
        assert torch.equal(fast[..., :hh, :ww], ref[..., :hh, :ww])


@pytest.mark.parametrize("size", [2, 3, 4, 5, 8])
def test_training_upsampling_equals_transposed_convolution_with_gradients(size):
    """The fitting path's polyphase upsampling (hand-written backward) against conv_transpose2d."""
    gen = torch.Generator().manual_seed(size)
    for h, w in [(1, 1), (5, 2), (37, 53), (16, 16)]:
        shapes = [(-(-h // (1 << i)), -(-w // (1 << i))) for i in range(5)]
        module = upsampling.Upsampling(size).double()
        with torch.no_grad():
            module.kernel.add_(0.1 * torch.randn(size, size, generator=gen, dtype=torch.float64))
        grids = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for s in shapes]
        ref = upsampling._upsample_levels(grids, module.kernel)  # conv_transpose2d, autograd's backward
        out = module(grids)
        assert out.shape == ref.shape and torch.allclose(out, ref, rtol=0, atol=1e-12)
        weight = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
        want = torch.autograd.grad((ref * weight).sum(), grids + [module.kernel])
        got = torch.autograd.grad((out * weight).sum(), grids + [module.kernel])
        for a, b in zip(got, want):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def test_synthesis_first_layer_cache_follows_mask_changes():
    """The cached GELU(w1 @ coords) and its slope give the plain layer's values and gradients after
    mask flips (rows recomputed), on chosen pixels, and for other coordinates."""
    torch.manual_seed(0)
    synth = synthesis.MaskedSynthesis(arch(), seed=4, mask_ratio=0.3)
    coords = synthesis.pixel_coordinates(9, 11)
    pixels = torch.tensor([0, 5, 17, 98])
    n_first = arch().synth_layer_shapes[0][0] * 2
    masks = set()
    for trial in range(4):
        if trial:  # flip the mask of a few first-layer weights (and of some others)
            with torch.no_grad():
                synth.scores[torch.randint(0, n_first, (3,))] += 2 * torch.randn(3)
                synth.scores[n_first:n_first + 5] -= 1.0
        masks.add(tuple(synth.mask()[:n_first].tolist()))
        for cols, pix in ((coords, None), (coords, pixels), (synthesis.pixel_coordinates(4, 3), None)):
            w1 = synth.masked_weights()[0]
            got = synth._first_layer(w1, cols, pix)
            grad = torch.randn(got.shape)
            (g_got,) = torch.autograd.grad((got * grad).sum(), synth.scores)
            w1 = synth.masked_weights()[0]
            plain = torch.nn.functional.gelu(w1 @ (cols if pix is None else cols[:, pix]))
            (g_plain,) = torch.autograd.grad((plain * grad).sum(), synth.scores)
            assert torch.allclose(got, plain, rtol=1e-6, atol=1e-6)
            assert torch.allclose(g_got, g_plain, rtol=1e-5, atol=1e-6)
        # bit for bit what a fresh cache computes (a fit resumed from a checkpoint starts one)
        fresh = synthesis.MaskedSynthesis(arch(), seed=4, mask_ratio=0.3)
        with torch.no_grad():
            fresh.scores.copy_(synth.scores)
            assert torch.equal(fresh._first_layer(fresh.masked_weights()[0], coords, None),
                               synth._first_layer(synth.masked_weights()[0], coords, None))
    assert len(masks) > 1  # the first layer's mask did change between trials


def test_synthesis_first_layer_cache_update_never_feeds_a_stale_graph():
    """The cache is updated in place (no copy of two (32, H*W) maps per mask flip): a graph that
    still holds the old values must fail on backward, not silently use the new ones."""
    torch.manual_seed(1)
    synth = synthesis.MaskedSynthesis(arch(), seed=4, mask_ratio=0.3)
    coords = synthesis.pixel_coordinates(9, 11)
    old = synth._first_layer(synth.masked_weights()[0], coords, None)
    pending = (old * old).sum()  # saves the cached values for its backward
    n_first = arch().synth_layer_shapes[0][0] * 2
    with torch.no_grad():
        synth.scores[:n_first] = torch.rand(n_first)  # flips first-layer weights
    synth._first_layer(synth.masked_weights()[0], coords, None)
    with pytest.raises(RuntimeError, match="inplace"):
        pending.backward()


@pytest.fixture(scope="module")
def fitted():
    """A tiny model fitted briefly, its networks quantized; (model, payload, target)."""
    torch.set_num_threads(1)
    target = edges_scene(24, 20) * 0.6 + scene(24, 20) * 0.4
    torch.manual_seed(0)
    model = LotteryModel(24, 20, arch(), seed=11, mask_ratio=0.3)
    fit(model, squared_error(target), 0.002, schedule(steps=25, eval_every=5))
    modules = quantize_networks(model, squared_error(target), 0.002)
    return model, model.to_payload(modules), target


def test_render_payload_deterministic_across_threads_and_calls(fitted):
    _, payload, _ = fitted
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = render_payload(payload)
        again = render_payload(payload)
        torch.set_num_threads(2)
        two = render_payload(payload)
    finally:
        torch.set_num_threads(before)
    assert one.dtype == torch.uint8 and one.shape == (3, 24, 20)
    assert torch.equal(one, again)
    assert torch.equal(one, two)
    # and through the real bitstream
    assert torch.equal(render_payload(decode_file(encode_file(payload))), one)
    # per-pixel layers run in blocks: any block size gives the same pixels
    assert torch.equal(render_payload(payload, block_pixels=7), one)
    assert torch.equal(render_payload(payload, block_pixels=1), one)


def test_render_payload_matches_float_render(fitted):
    model, payload, target = fitted
    with torch.no_grad():
        render, _ = model("hard")
    decoded = render_payload(payload).double() / 255.0
    assert psnr(decoded, render.double().clamp(0, 1)) > 40.0
    # and the fit did something: better than a flat grey image
    assert psnr(decoded, target) > psnr(torch.full_like(target, 0.5), target)


@pytest.mark.parametrize("k", range(N_FRAMES))
def test_decode_bytes_renders_exactly_and_undoes_the_frame(fitted, k):
    """compression.decoder.decode_bytes renders the file's payload with model.exact_render and
    undoes the frame it records: the picture is dihedral(render_payload(payload), k, inverse=True)."""
    from dataclasses import replace

    from lotterycli.bitstream.header import read_header
    from lotterycli.compression.decoder import decode_bytes

    _, payload, _ = fitted
    payload = replace(payload, frame=k)
    data = encode_file(payload)
    assert decode_file(data).frame == k
    rendered = render_payload(payload)
    decoded = decode_bytes(data)
    assert decoded.dtype == torch.uint8
    assert torch.equal(decoded, dihedral(rendered, k, inverse=True))
    # the picture's size: the render's, transposed by frames 4-7 (and what the header announces)
    assert tuple(decoded.shape) == (3, *frame_shape(payload.height, payload.width, k))
    assert read_header(data).image_size == tuple(decoded.shape[1:])
    if k == 0:
        assert torch.equal(decoded, rendered)


def test_model_from_payload_keeps_latents_and_networks(fitted):
    _, payload, _ = fitted
    model = model_from_payload(payload)
    p2 = model.to_payload({n: payload.modules[n] for n in payload.modules})
    assert all(torch.equal(a, b) for a, b in zip(p2.latents, payload.latents))
    for name, q in payload.modules.items():
        again = model.quantize_module(name, q.shift, q.shifts)
        assert again.tensor_shifts() == q.tensor_shifts()
        assert all(torch.equal(a, b) for a, b in zip(again.tensors.values(), q.tensors.values()))


def test_model_from_payload_keeps_mask(fitted):
    _, payload, _ = fitted
    model = model_from_payload(payload)
    assert torch.equal(model.synthesis.mask().cpu(), payload.mask)


def test_payload_mask_count(fitted):
    _, payload, _ = fitted
    n = arch().n_synth_weights
    assert payload.mask.dtype == torch.bool and payload.mask.numel() == n
    assert int(payload.mask.sum()) == n - round(0.3 * n)


def test_macs_per_pixel_sane():
    ref = arch()
    n = ref.n_synth_weights
    mask = synthesis.topk_mask(torch.rand(n, generator=torch.Generator().manual_seed(0)), 0.3)
    kept = int(mask.sum())
    macs = macs_per_pixel(ref, kept, 256, 256)
    assert 1000 < macs < 10000
    full = macs_per_pixel(ref, n, 256, 256)
    # every kept synthesis weight costs one MAC per pixel
    assert full - macs == pytest.approx(n - kept)
    # per-pixel cost barely depends on the image size
    assert macs_per_pixel(ref, kept, 512, 384) == pytest.approx(macs, rel=0.05)


def test_modnet_weights_on_an_empty_latent_grid_are_stored_as_zeros(fitted):
    """A grid with no nonzero integer gives ModNet an all-zero input channel: the quantized
    first layer holds zeros there whatever the float weights were, and the file is shorter than
    with the weights kept, for the same decoded pixels."""
    import copy
    from dataclasses import replace

    model, _, target = fitted
    m = copy.deepcopy(model)
    integers = m.latents.quantized()
    assert integers[0].any()  # the fit left the finest grid nonzero: empty it
    m.latents.set_from_integers([torch.zeros_like(integers[0])] + integers[1:])
    channel = upsampling.feature_channel(0, len(integers))
    with torch.no_grad():
        m.modnet.u0.weight[:, channel] = torch.linspace(-0.8, 0.8, m.modnet.u0.weight.shape[0])
    modules = quantize_networks(m, squared_error(target), 0.002)
    u0 = modules["modnet"].tensors["u0.weight"]
    assert not u0[:, channel].any() and u0.any()

    kept = copy.deepcopy(modules["modnet"])
    kept.tensors["u0.weight"] = u0.clone()
    kept.tensors["u0.weight"][:, channel] = torch.arange(1, u0.shape[0] + 1)
    payload = m.to_payload(modules)
    with_weights = replace(payload, modules=dict(payload.modules, modnet=kept))
    assert torch.equal(render_payload(payload), render_payload(with_weights))
    assert len(encode_file(payload)) < len(encode_file(with_weights))
    # and a grid that holds something keeps its weights
    assert u0[:, upsampling.feature_channel(1, len(integers))].any()


def test_per_tensor_steps_lower_the_real_cost(fitted):
    """The per-tensor search starts from the per-module steps and keeps only what lowers the
    cost, and its files decode like any other: check both on the real file's cost."""
    import copy

    from lotterycli.bitstream.param_coding import module_bits

    model, _, target = fitted
    lam = 0.02  # high lambda: the networks' bits matter, coarser hidden-layer steps pay

    def real_cost(per_tensor: bool) -> tuple[float, dict]:
        m = copy.deepcopy(model)
        modules = quantize_networks(m, squared_error(target), lam, per_tensor=per_tensor)
        data = encode_file(m.to_payload(modules))
        decoded = render_payload(decode_file(data)).double() / 255.0
        d = float(((decoded - target.double()) ** 2).mean())
        return d + lam * len(data) * 8 / m.n_pixels, modules

    module_cost, module_q = real_cost(False)
    tensor_cost, tensor_q = real_cost(True)
    assert all(len(set(q.tensor_shifts().values())) == 1 for q in module_q.values())
    assert any(len(set(q.tensor_shifts().values())) > 1 for q in tensor_q.values())
    assert sum(module_bits(q, n) for n, q in tensor_q.items()) < sum(module_bits(q, n) for n, q in module_q.items())
    assert tensor_cost < module_cost


def test_integer_refinement_moves_values_towards_zero_where_the_cost_falls(fitted):
    """The refinement keeps each module's steps, moves integers only one step towards zero, moves
    some on a fitted model at a high lambda, and its file costs less than the plain search's
    (real bytes, decoded pixels)."""
    import copy

    model, _, target = fitted
    lam = 0.02

    def quantized(refine: bool):
        m = copy.deepcopy(model)
        modules = quantize_networks(m, squared_error(target), lam, refine=refine)
        data = encode_file(m.to_payload(modules))
        decoded = render_payload(decode_file(data)).double() / 255.0
        return modules, float(((decoded - target.double()) ** 2).mean()) + lam * len(data) * 8 / m.n_pixels

    plain, plain_cost = quantized(False)
    refined, refined_cost = quantized(True)
    moved = 0
    for name, q in plain.items():
        r = refined[name]
        assert r.tensor_shifts() == q.tensor_shifts()
        for t, before in q.tensors.items():
            after = r.tensors[t]
            changed = after != before
            assert torch.equal(after[changed], before[changed] - before[changed].sign())
            moved += int(changed.sum())
    assert moved > 0
    assert refined_cost < plain_cost


def test_the_encoder_refines_integers_where_configured_and_the_image_is_small_enough(fitted, monkeypatch):
    import copy

    from lotterycli.compression import encoder

    model, _, target = fitted

    def file_bytes(refine: bool) -> bytes:
        payload = encoder.quantized_payload(copy.deepcopy(model), squared_error(target), 0.02,
                                            schedule(network_refinement=refine), seed=0)
        return encode_file(payload)

    plain, refined = file_bytes(False), file_bytes(True)
    assert refined != plain
    monkeypatch.setattr(encoder, "REFINE_MAX_PIXELS", model.n_pixels - 1)
    assert file_bytes(True) == plain


def test_estimated_value_bits_follow_the_real_code():
    """The refinement's estimate: zero is cheapest where zeros are common, larger magnitudes cost
    more, and over a tensor the estimates add up to about its real code length."""
    from lotterycli.bitstream.param_coding import best_order, estimated_value_bits

    rng = np.random.default_rng(0)
    values = [int(v) for v in np.round(rng.laplace(0, 2.0, 300))]
    k, n_bytes = best_order(values, [len(values)])
    bits = estimated_value_bits(values, k)
    assert bits(0) < bits(1) == bits(-1) < bits(3) < bits(9) < bits(40)
    assert sum(bits(v) for v in values) == pytest.approx(8 * n_bytes, rel=0.1)


def test_quantization_search_reports_each_trial(fitted):
    """The search's progress bar: stage "quantize", one step per trial, a total that starts at
    the most trials the search could run, never grows, never falls below the trials done, and
    ends equal to them (the integer refinement's trials included); reporting changes nothing the
    search chooses."""
    import copy

    from lotterycli.model.arm import Arm

    model, _, target = fitted
    torch.manual_seed(0)
    narrower = Arm(8)  # an alternative ARM: its searches are counted too
    quiet = quantize_networks(copy.deepcopy(model), squared_error(target), 0.02,
                              arm_alternatives=[copy.deepcopy(narrower)], refine=True)
    reports = []
    shown = quantize_networks(copy.deepcopy(model), squared_error(target), 0.02,
                              arm_alternatives=[copy.deepcopy(narrower)], progress=reports.append, refine=True)
    assert {r.stage for r in reports} == {"quantize"}
    steps, totals = [r.step for r in reports], [r.total for r in reports]
    assert sorted(set(steps)) == list(range(1, steps[-1] + 1)) and steps == sorted(steps)
    assert totals == sorted(totals, reverse=True) and totals[0] > steps[-1]
    assert all(r.total >= r.step for r in reports) and totals[-1] == steps[-1]
    assert all(math.isnan(r.distortion) and math.isnan(r.bpp) for r in reports)
    assert min(r.loss for r in reports) == reports[-1].loss  # the cheapest cost seen so far
    for name, q in quiet.items():
        assert shown[name].tensor_shifts() == q.tensor_shifts()
        assert all(torch.equal(a, b) for a, b in zip(shown[name].tensors.values(), q.tensors.values()))


def test_banded_model_writes_and_decodes_its_bands():
    """A fit with ARM bands: the file carries the band height and decodes to the payload's pixels."""
    torch.set_num_threads(1)
    target = scene(24, 20)
    torch.manual_seed(0)
    model = LotteryModel(24, 20, arch(arm_band_rows=5), seed=3, mask_ratio=0.3)
    fit(model, squared_error(target), 0.002, schedule(steps=10, eval_every=5))
    payload = model.to_payload(quantize_networks(model, squared_error(target), 0.002, per_tensor=False))
    data = encode_file(payload)
    back = decode_file(data)
    assert back.architecture.arm_band_rows == 5 and data[4] == FORMAT_VERSION == 5
    assert all(torch.equal(a, b) for a, b in zip(back.latents, payload.latents))
    assert torch.equal(render_payload(back), render_payload(payload))
    with torch.no_grad():  # the model's rate is the banded one
        rate_in, _ = model.latents.proxies("hard")
        assert float(model("hard")[1]) == pytest.approx(float(model.arm.rate_bits(rate_in, 5)), rel=1e-6)


def test_bands_at_least_as_tall_as_the_image_are_stored_as_none():
    assert LotteryModel(24, 20, arch(arm_band_rows=24), seed=0, mask_ratio=0.3).arch.arm_band_rows == 0
    assert LotteryModel(24, 20, arch(arm_band_rows=23), seed=0, mask_ratio=0.3).arch.arm_band_rows == 23


# -- ARM refit (compression.arm_refit.refit_arm) ------------------------------------------------
def test_arm_parameter_bits_is_zero_at_zero_and_pulls_weights_towards_zero():
    from lotterycli.model.arm import Arm

    arm = Arm(8)
    with torch.no_grad():
        for p in arm.parameters():
            p.zero_()
    assert float(arm.parameter_bits().detach()) == 0.0
    with torch.no_grad():
        arm.fc1.weight[0, 0] = 0.125  # one hidden-layer step: log2(1 + 1) = 1 bit
        arm.fc3.weight[1, 2] = -0.0625  # two output-layer steps: log2(3) bits
    bits = arm.parameter_bits()
    assert float(bits.detach()) == pytest.approx(1.0 + math.log2(3.0), rel=1e-6)
    bits.backward()
    assert float(arm.fc1.weight.grad[0, 0]) > 0 and float(arm.fc3.weight.grad[1, 2]) < 0


def test_refit_arm_lowers_its_objective_and_touches_nothing_but_the_arm(fitted):
    """The refit changes only the ARM: the render (latents, upsampling, ModNet, mask) is the
    same, so PSNR cannot move; its objective (latent bits + the ARM's parameter estimate) falls."""
    import copy

    from lotterycli.compression.arm_refit import refit_arm

    model, _, _ = fitted
    m = copy.deepcopy(model)
    before = refit_arm(m, 0, 0.005)  # 0 steps: only evaluates
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), model.state_dict().values()))
    after = refit_arm(m, 30, 0.005)
    assert after < before
    changed = {k for k, v in m.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
    assert changed and all(k.startswith("arm.") for k in changed)
    with torch.no_grad():
        assert torch.equal(m("hard")[0], model("hard")[0])
    # deterministic: a second refit from the same state lands on the same ARM
    m2 = copy.deepcopy(model)
    assert refit_arm(m2, 30, 0.005) == after
    assert all(torch.equal(a, b) for a, b in zip(m2.arm.state_dict().values(), m.arm.state_dict().values()))


def test_refit_arm_shrinks_the_real_file_at_equal_pixels(fitted):
    """What the stage is for: the same fit, refitted, codes to fewer bytes and the same pixels."""
    import copy

    from lotterycli.compression.arm_refit import refit_arm

    model, _, target = fitted
    files = {}
    for steps in (0, 60):
        m = copy.deepcopy(model)
        refit_arm(m, steps, 0.005)
        data = encode_file(m.to_payload(quantize_networks(m, squared_error(target), 0.002)))
        files[steps] = (len(data), render_payload(decode_file(data)))
    assert files[60][0] < files[0][0]
    assert torch.equal(files[60][1], files[0][1])


def test_an_arm_alternative_is_kept_only_when_it_codes_cheaper(fitted):
    """quantize_networks prices every ARM state it is given and keeps the cheapest: offered a
    useless ARM (all zero: b = 1 everywhere) beside the fitted one, it keeps the fitted one's
    code; offered it as the main state with the fitted one as the alternative, the same."""
    import copy

    model, _, target = fitted
    plain = quantize_networks(copy.deepcopy(model), squared_error(target), 0.002)
    useless = {k: torch.zeros_like(v) for k, v in model.arm.state_dict().items()}
    fitted_arm = {k: v.clone() for k, v in model.arm.state_dict().items()}
    m = copy.deepcopy(model)
    with_alt = quantize_networks(m, squared_error(target), 0.002, arm_alternatives=[useless])
    m2 = copy.deepcopy(model)
    m2.arm.load_state_dict(useless)
    swapped = quantize_networks(m2, squared_error(target), 0.002, arm_alternatives=[fitted_arm])
    for q in (with_alt["arm"], swapped["arm"]):
        assert q.tensor_shifts() == plain["arm"].tensor_shifts()
        assert all(torch.equal(q.tensors[k], plain["arm"].tensors[k]) for k in q.tensors)


def test_compress_refits_the_arm_for_at_most_the_fit_steps(monkeypatch):
    """compress_image runs the config's refit, capped at the fit's own step count."""
    from lotterycli.compression import arm_refit, encoder
    from lotterycli.compression.decoder import decode_bytes
    from lotterycli.config import load_task_config

    calls = []
    real = arm_refit.refit_arm

    def recorded(m, steps, lr, *rest, **kw):
        calls.append((steps, lr))
        return real(m, steps, lr, *rest, **kw)

    # the encoder calls the refit itself, and scratch_arm (in arm_refit) calls it for the narrower ARM
    monkeypatch.setattr(encoder, "refit_arm", recorded)
    monkeypatch.setattr(arm_refit, "refit_arm", recorded)
    torch.set_num_threads(1)
    cfg = load_task_config("compress", overrides={"steps": 8})
    assert cfg.schedule.arm_scratch_widths == (8, 4)
    result = encoder.compress_image(scene(20, 24), cfg, device="cpu")
    # the refit, then the 8- and 4-wide ARMs from scratch: all capped at the fit's 8 steps
    assert calls == [(8, cfg.schedule.arm_refit_lr), (8, cfg.schedule.arm_scratch_lr), (8, cfg.schedule.arm_scratch_lr)]
    assert result.bpp == pytest.approx(len(result.data) * 8 / (20 * 24))  # the image's own pixel count
    assert torch.equal(decode_bytes(result.data), result.decoded)


@pytest.mark.parametrize("min_share, tried", [(0.0, True), (1.0, False)])
def test_narrower_arms_are_tried_only_above_the_parameter_share(monkeypatch, min_share, tried):
    """schedule.arm_scratch_min_share gates the scratch ARMs on `arm_parameter_share`, which is the
    refit ARM's estimated parameter bits over the refit's total bits."""
    from dataclasses import replace

    from lotterycli.compression import encoder
    from lotterycli.compression.decoder import decode_bytes
    from lotterycli.config import load_task_config

    assert load_task_config("compress").schedule.arm_scratch_min_share == 0.06
    shares, scratched = [], []
    real_share, real_scratch = encoder.arm_parameter_share, encoder.scratch_arm

    def share(model, bits):
        value = real_share(model, bits)
        with torch.no_grad():
            assert value == pytest.approx(float(model.arm.parameter_bits()) / bits)
        shares.append(value)
        return value

    monkeypatch.setattr(encoder, "arm_parameter_share", share)
    monkeypatch.setattr(encoder, "scratch_arm", lambda *a, **k: scratched.append(a[1]) or real_scratch(*a, **k))
    torch.set_num_threads(1)
    cfg = load_task_config("compress", overrides={"steps": 6})
    cfg = replace(cfg, schedule=replace(cfg.schedule, arm_scratch_min_share=min_share))
    result = encoder.compress_image(scene(20, 24), cfg, device="cpu")
    assert len(shares) == 1 and 0.0 < shares[0] < 1.0
    assert scratched == ([8, 4] if tried else [])
    assert torch.equal(decode_bytes(result.data), result.decoded)


def test_a_narrower_arm_is_installed_when_its_search_says_cheaper(fitted, monkeypatch):
    """An `Arm` of another width offered to quantize_networks becomes the model's ARM (and the
    file's arm_hidden) when its cost, header bytes included, is the lowest; the pixels are those
    without it. `scratch_arm` makes one deterministically and leaves the model alone."""
    import copy

    from lotterycli.bitstream.header import architecture_bytes
    from lotterycli.compression import quantize
    from lotterycli.compression.arm_refit import scratch_arm

    model, _, target = fitted
    m = copy.deepcopy(model)
    base = encode_file(copy.deepcopy(m).to_payload(quantize_networks(copy.deepcopy(m), squared_error(target), 0.002)))
    narrow = scratch_arm(m, 2, 20, 0.01, seed=0)
    assert m.arch.arm_hidden == model.arch.arm_hidden and m.arm is not narrow  # only offered
    again = scratch_arm(copy.deepcopy(m), 2, 20, 0.01, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(narrow.state_dict().values(), again.state_dict().values()))
    priced = []
    real = quantize._search_steps

    def search(model_, name, *args):
        cost, q = real(model_, name, *args)
        if name == "arm":
            priced.append(model_.arch.arm_hidden)
            if model_.arch.arm_hidden == 2:
                cost -= 1.0  # far below any real difference: this one must win
        return cost, q

    monkeypatch.setattr(quantize, "_search_steps", search)
    data = encode_file(m.to_payload(quantize_networks(m, squared_error(target), 0.002, arm_alternatives=[narrow])))
    assert priced == [model.arch.arm_hidden, 2]
    back = decode_file(data)
    assert back.architecture.arm_hidden == 2 and m.arm is narrow and m.arch.arm_hidden == 2
    assert back.modules["arm"].tensors["fc1.weight"].shape == (2, 24)
    assert torch.equal(render_payload(back), render_payload(decode_file(base)))
    # the header's share: a preset costs nothing, the same sizes with a 2-wide ARM 12 bytes
    assert architecture_bytes(model.arch) == 0 and architecture_bytes(m.arch) == 12


class _StubFit:
    """What `screen_mask_ratios` reads of a Fitter: a fixed recent loss after `advance`."""

    def __init__(self, ratio: float, loss: float):
        from types import SimpleNamespace

        self.ratio, self.loss, self.total, self.progress, self.ran = ratio, loss, 200, None, None
        self.model = SimpleNamespace(arch=SimpleNamespace(n_synth_weights=1627), n_pixels=256 * 256)

    def advance(self, until: int) -> None:
        self.ran = until

    def recent_loss(self) -> float:
        return self.loss


@pytest.mark.parametrize("loss_without_mask, chosen", [(1.0e-3, 0.0), (1.2e-3, 0.0), (1.4e-3, 0.3)])
def test_mask_ratio_screening_prices_the_mask_bits(loss_without_mask, chosen):
    """Each ratio fits `fraction` of the steps; the lowest recent loss plus lambda x the mask's
    bits per pixel goes on. At lambda 0.016 a 30 % mask of 1,627 weights costs ~3.5e-4."""
    from lotterycli.compression.encoder import mask_cost_bpp, screen_mask_ratios

    lam = 0.016
    assert mask_cost_bpp(1627, 0.0, 256 * 256) == 0.0
    assert lam * mask_cost_bpp(1627, 0.3, 256 * 256) == pytest.approx(3.5e-4, rel=0.01)
    losses = {0.3: 1.0e-3, 0.0: loss_without_mask}
    started = []

    def start(ratio):
        started.append(_StubFit(ratio, losses[ratio]))
        return started[-1]

    best = screen_mask_ratios(start, (0.3, 0.0), 0.1, lam)
    assert best.ratio == chosen
    assert [f.ran for f in started] == [20, 20]


def test_compression_screens_the_mask_ratio_and_the_file_says_which(monkeypatch):
    """With candidates, the file's header and the result carry the chosen ratio; with none, the
    config's ratio; either way the file decodes to the encoder's pixels."""
    from dataclasses import replace

    from lotterycli.bitstream.header import read_header
    from lotterycli.compression import encoder
    from lotterycli.compression.decoder import decode_bytes
    from lotterycli.config import load_task_config

    torch.set_num_threads(1)
    cfg = load_task_config("compress", overrides={"steps": 20, "lambda": 0.016})  # a lambda that screens
    screened = []
    real = encoder.screen_mask_ratios
    monkeypatch.setattr(encoder, "screen_mask_ratios", lambda *a: screened.append(a[1]) or real(*a))
    result = encoder.compress_image(scene(20, 24), cfg, device="cpu")
    assert screened == [(0.3, 0.0, 0.1)]  # the shipped ratio, then its candidates
    assert read_header(result.data).mask_ratio == result.mask_ratio in (0.3, 0.0, 0.1)
    assert torch.equal(decode_bytes(result.data), result.decoded)
    fixed = replace(cfg, compression=replace(cfg.compression, mask_ratio_candidates=()))
    result = encoder.compress_image(scene(20, 24), fixed, device="cpu")
    assert len(screened) == 1 and result.mask_ratio == 0.3 and read_header(result.data).mask_ratio == 0.3


def test_mask_ratio_screening_bars_end_full():
    """Each screened ratio's progress ends at its screening step (the fit reports every 10 steps,
    the screening step of a 150-step fit is 15), so its bar on the display ends full."""
    from lotterycli.compression import encoder
    from lotterycli.config import load_task_config

    torch.set_num_threads(1)
    cfg = load_task_config("compress", overrides={"steps": 150, "lambda": 0.016})  # a lambda that screens
    seen: dict[str, list] = {}
    encoder.compress_image(scene(16, 16), cfg, device="cpu",
                           progress=lambda info: seen.setdefault(info.stage, []).append(info))
    screens = {stage: infos for stage, infos in seen.items() if stage.startswith("screen")}
    assert set(screens) == {"screen: mask ratio 0.3", "screen: mask ratio 0", "screen: mask ratio 0.1"}
    for infos in screens.values():
        assert [(i.step, i.total) for i in infos] == [(1, 15), (11, 15), (15, 15)]
