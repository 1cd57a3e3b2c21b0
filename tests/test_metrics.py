import math

import pytest
import torch

from lotterycli.metrics import mse, psnr, ssim


def _img(seed=0, h=40, w=36):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def test_psnr_identical_is_inf():
    x = _img()
    assert psnr(x, x) == math.inf
    u = (x * 255).round().to(torch.uint8)
    assert psnr(u, u) == math.inf


def test_psnr_constant_offset():
    x = torch.full((3, 16, 16), 0.5)
    assert psnr(x, x + 0.1) == pytest.approx(20.0, abs=1e-5)  # mse 0.01 -> 20 dB
    assert psnr(x, x + 0.01) == pytest.approx(40.0, abs=1e-4)
    # data_range scales the peak
    assert psnr(x * 255, x * 255 + 25.5, data_range=255.0) == pytest.approx(20.0, abs=1e-5)


def test_psnr_uint8_is_divided_by_255():
    a = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    b = torch.full((3, 8, 8), 110, dtype=torch.uint8)
    expected = 10 * math.log10(1.0 / (10 / 255) ** 2)
    assert psnr(a, b) == pytest.approx(expected, abs=1e-9)
    assert psnr(a, b.float() / 255) == pytest.approx(expected, abs=1e-5)  # mixed dtypes
    assert mse(a, b) == pytest.approx((10 / 255) ** 2)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError):
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))  # smaller than the 11x11 window


def test_ssim_identical_is_one():
    x = _img()
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, (x * 0.5).clamp(0, 1)) < 1.0


def test_ssim_symmetric_and_bounded():
    x, y = _img(1), _img(2)
    s = ssim(x, y)
    assert -1.0 <= s <= 1.0
    assert s == pytest.approx(ssim(y, x), abs=1e-12)


@pytest.mark.parametrize("seed,noise", [(0, 0.05), (3, 0.2)])
def test_ssim_matches_skimage(seed, noise):
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image not installed (bench extra)")
    x = _img(seed, 48, 41)
    g = torch.Generator().manual_seed(seed + 100)
    y = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ref = skm.structural_similarity(
        x.permute(1, 2, 0).double().numpy(), y.permute(1, 2, 0).double().numpy(), channel_axis=-1,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
    )
    assert ssim(x, y) == pytest.approx(ref, abs=1e-6)
    u8x = (x * 255).round().to(torch.uint8)
    u8y = (y * 255).round().to(torch.uint8)
    ref8 = skm.structural_similarity(
        u8x.permute(1, 2, 0).double().numpy() / 255, u8y.permute(1, 2, 0).double().numpy() / 255, channel_axis=-1,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
    )
    assert ssim(u8x, u8y) == pytest.approx(ref8, abs=1e-6)
