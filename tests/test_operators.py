"""Tests for lotterycli.restoration (operators, resize, fill, noise, masks; small images only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lotterycli.errors import LotteryError
from lotterycli.restoration.fill import biharmonic_fill
from lotterycli.restoration.masks import masked_observation, read_mask, write_mask
from lotterycli.restoration.noise import estimate_sigma
from lotterycli.restoration.operators import Denoise, Inpaint, SuperResolution, make_operator
from lotterycli.restoration.resize import bicubic_downsample, upsample_bicubic

KODAK = Path("/work/shared/data/kodak")


def smooth_image(h: int = 48, w: int = 60, seed: int = 0) -> torch.Tensor:
    """Random-ish smooth image in [0, 1]: upsampled random colours plus a little texture."""
    rng = np.random.default_rng(seed)
    base = torch.tensor(rng.random((1, 3, 6, 8)))
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)[0]
    x = 0.9 * x + 0.1 * torch.tensor(rng.random((3, h, w)))
    return x.float().clamp(0, 1)


def synthetic_scene(h: int = 128, w: int = 128) -> torch.Tensor:
    """Smooth gradients plus a few sharp edges."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    img = np.stack([0.2 + 0.5 * xx, 0.3 + 0.4 * yy * xx, 0.5 + 0.3 * np.sin(3 * xx + 2 * yy)])
    img[:, 40:90, 30:70] += 0.2
    img[1, :, 100:] -= 0.15
    img[2, 100:, :] = 0.1
    return torch.tensor(np.clip(img, 0, 1)).float()


def pil_resize(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Pillow BICUBIC resize of each channel in float ('F') mode; size = (width, height)."""
    return np.stack(
        [
            np.asarray(
                Image.fromarray(x[c].numpy().astype(np.float32), mode="F").resize(
                    size, Image.BICUBIC, reducing_gap=None
                )
            )
            for c in range(x.shape[0])
        ]
    )


# ---------------------------------------------------------------------------------------------
# forward / shapes


def test_forward_shapes():
    x = smooth_image(48, 60)
    xb = torch.stack([x, x.flip(-1)])
    assert Denoise(0.1).forward(x).shape == (3, 48, 60)
    assert Denoise(0.1).forward(xb).shape == (2, 3, 48, 60)
    for s in (2, 3, 4):
        op = SuperResolution(s)
        assert op.forward(x).shape == (3, 48 // s, 60 // s)
        assert op.forward(xb).shape == (2, 3, 48 // s, 60 // s)
        assert op.output_shape((3, 48 // s, 60 // s)) == (48, 60)
        assert op.observation_shape(x.shape) == (48 // s, 60 // s)
        assert upsample_bicubic(op.forward(x), s).shape == (3, 48, 60)
    op = Inpaint.random(48, 60, 0.5, seed=3)
    assert op.forward(x).shape == (3, 48, 60)
    assert op.forward(xb).shape == (2, 3, 48, 60)
    assert op.output_shape((3, 48, 60)) == (48, 60)
    assert Denoise(0.1).output_shape((3, 20, 30)) == (20, 30)


def test_batch_forward_matches_single():
    x = smooth_image(24, 36)
    xb = torch.stack([x, 1 - x])
    op = SuperResolution(3)
    out = op.forward(xb)
    assert torch.equal(out, bicubic_downsample(xb, 3))
    assert torch.allclose(out[0], op.forward(x), atol=1e-6)
    assert torch.allclose(out[1], op.forward(1 - x), atol=1e-6)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_sr_constant_image(scale):
    x = torch.full((3, 24, 36), 0.37)
    y = SuperResolution(scale).forward(x)
    assert torch.allclose(y, torch.full_like(y, 0.37), atol=1e-6)
    up = upsample_bicubic(y, scale)
    assert torch.allclose(up, torch.full_like(up, 0.37), atol=1e-6)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_sr_matches_pillow_bicubic(scale):
    # Pillow renormalises the kernel at the borders, as we do: the whole image matches.
    x = smooth_image(48, 60, seed=scale)
    y = SuperResolution(scale).forward(x).numpy()
    ref = pil_resize(x, (60 // scale, 48 // scale))
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upsample_matches_pillow_bicubic(scale):
    y = smooth_image(12, 15, seed=10 + scale)
    up = upsample_bicubic(y, scale).numpy()
    ref = pil_resize(y, (15 * scale, 12 * scale))
    assert np.abs(up - ref).max() < 1e-5


def test_sr_forward_differentiable():
    x = smooth_image(24, 24).requires_grad_(True)
    op = SuperResolution(2)
    loss = op.loss(x, torch.zeros(3, 12, 12))
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# inpainting


def test_inpaint_random_mask_exact_count_and_observed():
    op = Inpaint.random(40, 50, 0.37, seed=5)
    missing = int((~op.mask).sum())
    assert missing == round(0.37 * 40 * 50)
    obs = op.observed((3, 40, 50))
    assert obs.dtype == torch.bool and obs.shape == (40, 50)
    assert torch.equal(obs, op.mask)
    # same seed -> same mask; different seed -> different mask
    assert torch.equal(Inpaint.random(40, 50, 0.37, seed=5).mask, op.mask)
    assert not torch.equal(Inpaint.random(40, 50, 0.37, seed=6).mask, op.mask)
    # documented draw
    rng = np.random.default_rng(5)
    flat = np.ones(2000, dtype=bool)
    flat[rng.choice(2000, size=740, replace=False)] = False
    assert np.array_equal(op.mask.numpy(), flat.reshape(40, 50))
    # forward zeroes the missing pixels on the 3 channels
    x = smooth_image(40, 50) + 0.1
    out = op.forward(x)
    assert (out[:, ~op.mask] == 0).all()
    assert torch.equal(out[:, op.mask], x[:, op.mask])
    assert Denoise(0.1).observed((3, 40, 50)) is None
    assert SuperResolution(2).observed((3, 20, 25)) is None


def test_inpaint_loss_ignores_missing_pixels():
    op = Inpaint.random(32, 32, 0.5, seed=1)
    x = smooth_image(32, 32)
    y = op.simulate(x, seed=0)
    render = smooth_image(32, 32, seed=9).requires_grad_(True)
    base = op.loss(render, y)
    changed = render.detach().clone()
    changed[:, ~op.mask] = torch.rand(3, int((~op.mask).sum()))
    assert torch.allclose(op.loss(changed, y), base)
    # and garbage in y at missing pixels does not matter either
    y2 = y.clone()
    y2[:, ~op.mask] = 5.0
    assert torch.allclose(op.loss(render, y2), base)
    # mean over observed entries
    expected = ((render.detach() - y)[:, op.mask] ** 2).mean()
    assert torch.allclose(base.detach(), expected)
    base.backward()
    assert (render.grad[:, ~op.mask] == 0).all()


def test_keep_observed_puts_back_only_exact_pixels():
    x = smooth_image(24, 20)
    op = Inpaint.random(24, 20, 0.5, seed=3)
    y = op.simulate(x, seed=0)
    estimate = torch.full_like(x, 0.5)
    kept = op.keep_observed(estimate, y)
    assert torch.equal(kept[:, op.mask], y[:, op.mask])
    assert (kept[:, ~op.mask] == 0.5).all()
    # noisy observations are not the truth: nothing is put back, for any operator
    noisy = Inpaint(mask=op.mask, sigma=0.1)
    assert torch.equal(noisy.keep_observed(estimate, noisy.simulate(x, seed=0)), estimate)
    assert torch.equal(Denoise(0.0).keep_observed(estimate, x), estimate)
    assert torch.equal(SuperResolution(2).keep_observed(estimate, x[:, ::2, ::2]), estimate)


def test_biharmonic_fill_reproduces_smooth_functions_and_keeps_known_pixels():
    """A plane has zero biharmonic energy away from the border: the fill finds it (the replicated
    edges bend it slightly within a few pixels of the border)."""
    h, w = 40, 36
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    plane = torch.stack([0.2 + 0.5 * xx, 0.7 - 0.3 * yy, 0.1 + 0.2 * xx + 0.3 * yy])
    op = Inpaint.random(h, w, 0.5, seed=1)
    y = op.simulate(plane, 0)
    filled = biharmonic_fill(y, op.mask)
    assert torch.equal(filled[:, op.mask].float(), y[:, op.mask])  # known pixels untouched
    error = (filled - plane.double()).abs()
    assert float(error.mean()) < 5e-4 and float(error.max()) < 0.02
    # far better than the mean-colour start on a textured image, and no holes -> a copy
    x = smooth_image(40, 36)
    y = op.simulate(x, 0)
    mean_fill = torch.where(op.mask, y, y[:, op.mask].mean(dim=1)[:, None, None])
    err = lambda a: float(((a.float() - x)[:, ~op.mask] ** 2).mean())  # noqa: E731
    assert err(biharmonic_fill(y, op.mask)) < 0.3 * err(mean_fill)
    assert torch.equal(biharmonic_fill(x, torch.ones(40, 36, dtype=torch.bool)), x)


def test_denoise_loss_is_mse():
    x = smooth_image(16, 16)
    y = Denoise(0.1).simulate(x, seed=1)
    assert torch.allclose(Denoise(0.1).loss(x, y), torch.mean((x - y) ** 2))


def test_mask_png_round_trip(tmp_path):
    op = Inpaint.random(20, 30, 0.4, seed=2)
    path = tmp_path / "mask.png"
    write_mask(path, op.mask)
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (30, 20)
        arr = np.asarray(im)
    assert set(np.unique(arr)) <= {0, 255}
    assert np.array_equal(arr == 255, op.mask.numpy())
    assert torch.equal(read_mask(path), op.mask)
    # an Inpaint built from the path, and a colour mask with threshold 128
    assert torch.equal(make_operator("inpaint", mask=str(path)).mask, op.mask)
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[0, 0] = 128
    rgb[1, 1] = 127
    rgb[2, 2] = 255
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    m = read_mask(tmp_path / "rgb.png")
    assert m.sum() == 2 and m[0, 0] and m[2, 2] and not m[1, 1]


def test_masked_observation():
    op = Inpaint.random(16, 16, 0.5, seed=0)
    x = smooth_image(16, 16) + 0.05
    obs = masked_observation(x, op.mask)
    assert torch.equal(obs, op.forward(x))
    grey = masked_observation(x, op.mask, fill=0.5)
    assert (grey[:, ~op.mask] == 0.5).all() and torch.equal(grey[:, op.mask], x[:, op.mask])


def test_read_mask_errors(tmp_path):
    with pytest.raises(LotteryError):
        read_mask(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(LotteryError):
        read_mask(bad)


# ---------------------------------------------------------------------------------------------
# simulation


def test_simulate_determinism_and_noise_stats():
    x = torch.full((3, 64, 64), 0.5)
    op = Denoise(25 / 255)
    y1, y2, y3 = op.simulate(x, 1234), op.simulate(x, 1234), op.simulate(x, 1235)
    assert y1.dtype == torch.float32 and y1.shape == x.shape
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)
    n = (y1 - x).double()
    assert abs(float(n.std()) - 25 / 255) < 0.03 * 25 / 255
    assert abs(float(n.mean())) < 0.003


def test_simulate_matches_numpy_protocol_exactly():
    x = smooth_image(24, 30)
    sigma = 50 / 255
    y = Denoise(sigma).simulate(x, seed=1234 + 7)
    # protocol: numpy HxWx3 image + default_rng(seed).normal(0, sigma, HxWx3), float, no clip/round
    img = x.permute(1, 2, 0).numpy().astype(np.float64)
    ref = (img + np.random.default_rng(1241).normal(0.0, sigma, img.shape)).astype(np.float32)
    assert np.array_equal(y.permute(1, 2, 0).numpy(), ref)
    assert float(y.min()) < 0.0 or float(y.max()) > 1.0  # not clipped
    # super-resolution: the noise is drawn for the low-res observation, same order
    op = SuperResolution(3, sigma)
    ys = op.simulate(x, seed=3)
    low = op.forward(x).permute(1, 2, 0).numpy().astype(np.float64)
    ref = (low + np.random.default_rng(3).normal(0.0, sigma, low.shape)).astype(np.float32)
    assert np.array_equal(ys.permute(1, 2, 0).numpy(), ref)
    # batches: noise drawn as (B, H, W, 3)
    xb = torch.stack([x, x])
    yb = Denoise(sigma).simulate(xb, seed=4)
    imgb = xb.permute(0, 2, 3, 1).numpy().astype(np.float64)
    refb = (imgb + np.random.default_rng(4).normal(0.0, sigma, imgb.shape)).astype(np.float32)
    assert np.array_equal(yb.permute(0, 2, 3, 1).numpy(), refb)


def test_simulate_zero_sigma_and_inpaint():
    x = smooth_image(16, 16)
    assert torch.equal(Denoise(0.0).simulate(x, 0), x)
    op = Inpaint.random(16, 16, 0.3, seed=0, sigma=0.1)
    y = op.simulate(x, seed=0)
    assert (y[:, ~op.mask] == 0).all()
    assert not torch.equal(y[:, op.mask], x[:, op.mask])


# ---------------------------------------------------------------------------------------------
# noise estimation


@pytest.mark.parametrize("sigma255", [10, 25, 50])
def test_estimate_sigma_synthetic(sigma255):
    x = synthetic_scene()
    for i in range(2):
        y = Denoise(sigma255 / 255).simulate(x, 1234 + i)
        est = estimate_sigma(y)
        assert abs(est - sigma255 / 255) < 0.15 * sigma255 / 255


@pytest.mark.skipif(not (KODAK / "kodim23.png").exists(), reason="Kodak images not available")
@pytest.mark.parametrize("sigma255", [10, 25, 50])
def test_estimate_sigma_kodak_crop(sigma255):
    from lotterycli.images import read_image

    x = read_image(KODAK / "kodim23.png")[:, :256, :256]
    y = Denoise(sigma255 / 255).simulate(x, 1234)
    est = estimate_sigma(y)
    assert abs(est - sigma255 / 255) < 0.15 * sigma255 / 255


def test_estimate_sigma_batch_and_clean():
    x = synthetic_scene(64, 64)
    assert estimate_sigma(x) < 2 / 255
    yb = Denoise(25 / 255).simulate(torch.stack([x, x]), 0)
    assert abs(estimate_sigma(yb) - 25 / 255) < 0.15 * 25 / 255


# ---------------------------------------------------------------------------------------------
# errors and factory


def test_size_mismatch_errors():
    op = SuperResolution(3, 0.1)
    with pytest.raises(LotteryError, match="divisible by 3"):
        op.simulate(smooth_image(50, 48), seed=0)
    with pytest.raises(LotteryError, match="divisible"):
        op.forward(smooth_image(50, 48))
    with pytest.raises(LotteryError):
        op.loss(smooth_image(48, 48), torch.zeros(3, 15, 16))
    ip = Inpaint.random(20, 20, 0.5, seed=0)
    with pytest.raises(LotteryError, match="mask"):
        ip.simulate(smooth_image(20, 24), seed=0)
    with pytest.raises(LotteryError, match="mask"):
        ip.output_shape((3, 21, 20))
    with pytest.raises(LotteryError, match="mask"):
        ip.forward(smooth_image(20, 24))
    with pytest.raises(LotteryError):
        Denoise(0.1).output_shape((1, 20, 20))


def test_make_operator():
    assert isinstance(make_operator("denoise", sigma=0.1), Denoise)
    sr = make_operator("sr", scale=4, sigma=0.02)
    assert isinstance(sr, SuperResolution) and sr.scale == 4 and sr.sigma == 0.02
    ip = make_operator("inpaint", mask=torch.ones(8, 8, dtype=torch.bool))
    assert isinstance(ip, Inpaint) and ip.sigma == 0.0
    with pytest.raises(LotteryError, match="unknown task"):
        make_operator("deblur")
    with pytest.raises(LotteryError, match=">= 0"):
        make_operator("denoise", sigma=-0.1)
    with pytest.raises(LotteryError, match="0-1 scale"):
        make_operator("denoise", sigma=25)
    with pytest.raises(LotteryError):
        make_operator("denoise")
    for bad in (1, 5, 2.5, None, "x", True):
        with pytest.raises(LotteryError, match="scale"):
            make_operator("sr", scale=bad)
    with pytest.raises(LotteryError):
        make_operator("inpaint")
    with pytest.raises(LotteryError):
        make_operator("inpaint", mask=torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(LotteryError):
        Inpaint.random(8, 8, 1.0, seed=0)
