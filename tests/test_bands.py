"""Fitting in bands of rows: a large image is rendered and fitted a band at a time, with the
same values and gradients as whole (summed in another order), so that a fit holds one band's
intermediates. Bands start at 2 megapixels; the tests make small images use them."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import scene, schedule, shipped_arch

from lotterycli.compression import arm_refit
from lotterycli.compression.decoder import decode_bytes
from lotterycli.compression.encoder import compress_image
from lotterycli.config import load_task_config
from lotterycli.fitting.loop import Fitter
from lotterycli.fitting.losses import PixelMSE, fit_distortion
from lotterycli.model import bands
from lotterycli.model.lottery_model import LotteryModel


def model_with_values(height: int, width: int) -> LotteryModel:
    """A model whose latents and upsampling kernel are not at their (trivial) start."""
    torch.manual_seed(3)
    model = LotteryModel(height, width, shipped_arch(), 0, 0.3)
    with torch.no_grad():
        for grid in model.latents.grids:
            grid.normal_(0.0, 0.3)
        model.upsampling.kernel.add_(0.05 * torch.randn_like(model.upsampling.kernel))
    return model


def test_the_band_size_depends_on_the_image_size_alone():
    assert bands.fit_band_rows(1080, 1920) == 0  # full HD and smaller: whole
    rows = bands.fit_band_rows(3000, 4000)
    assert rows == bands.BAND_PIXELS // 4000 and 0 < rows < 3000
    assert bands.fit_band_rows(3000, 10**6) == bands.MIN_BAND_ROWS  # very wide: the minimum height
    assert LotteryModel(40, 30, shipped_arch(), 0, 0.3).row_bands() == [(0, 40)]


@pytest.mark.parametrize("rows", [1, 5, 16])
def test_a_render_in_bands_equals_the_whole_render(rows):
    model = model_with_values(45, 37)
    _, synth = model.latents.proxies("hard")
    with torch.no_grad():
        whole = model.render_from(synth)
        model.set_band_rows(rows)
        assert len(model.row_bands()) == -(-45 // rows)
        banded = model.render_from(synth)
        pixels = torch.sort(torch.randperm(45 * 37, generator=torch.Generator().manual_seed(1))[:500]).values
        some = model.render_from(synth, pixels)
    torch.testing.assert_close(banded, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(some, whole.reshape(3, -1)[:, pixels], rtol=0, atol=1e-6)


@pytest.mark.parametrize("whole", [False, True])
def test_a_step_in_bands_has_the_whole_steps_loss_and_gradients(whole):
    """The same draw of pixels and quantization noise: the same bits, distortion, render and
    gradient of every parameter, up to the order of float sums (with several ARM bands too)."""
    model = model_with_values(45, 37)
    model.arch = replace(model.arch, arm_band_rows=12)  # the ARM codes bands of 12 latent rows
    fitter = Fitter(model, PixelMSE.whole(scene(45, 37)), 2e-3, schedule(steps=20, pixel_fraction=0.5))
    fitter.advance(3)

    def step(fn):
        pixels, noise = fitter.pixel_generator.get_state(), model.latents.noise_state()
        model.zero_grad(set_to_none=True)
        out = fn("soft", 0.3, 2.0, whole)
        fitter.pixel_generator.set_state(pixels)
        model.latents.set_noise_state(noise, torch.device("cpu"))
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    (image, bits, d), grads = step(fitter._plain_step)
    model.set_band_rows(8)
    (image_b, bits_b, d_b), grads_b = step(fitter._banded_step)
    torch.testing.assert_close(bits_b, bits, rtol=1e-6, atol=0)
    torch.testing.assert_close(d_b, d, rtol=1e-6, atol=0)
    torch.testing.assert_close(image_b, image, rtol=0, atol=1e-6)
    assert grads_b.keys() == grads.keys() and "synthesis.scores" in grads
    for name, g in grads.items():
        assert (grads_b[name] - g).norm() <= 1e-5 * g.norm() + 1e-12, name


def test_a_large_compression_is_fitted_in_bands_and_decodes_as_reported(monkeypatch):
    """Thresholds lowered so a 40x48 image is fitted in 16-row bands: the fit runs the banded
    step, the file decodes to the encoder's reconstruction, and the result is that of a whole fit
    within float noise."""
    image = scene(40, 48)
    cfg = load_task_config("compress", overrides={"steps": 40, "seed": 0})
    torch.set_num_threads(1)
    whole = compress_image(image, cfg, device="cpu")
    monkeypatch.setattr(bands, "BANDS_ABOVE_PIXELS", 1000)
    monkeypatch.setattr(bands, "BAND_PIXELS", 16 * 48)
    assert isinstance(fit_distortion(image, 1.0), PixelMSE)  # what a fit in bands needs
    used = []
    original = Fitter._banded_step
    monkeypatch.setattr(Fitter, "_banded_step", lambda self, *a: used.append(1) or original(self, *a))
    banded = compress_image(image, cfg, device="cpu")
    assert used
    assert torch.equal(decode_bytes(banded.data), banded.decoded)
    assert abs(banded.psnr - whole.psnr) < 0.1
    assert abs(len(banded.data) - len(whole.data)) <= 0.05 * len(whole.data)


def test_the_arm_refit_in_chunks_is_the_refit_in_one_pass(monkeypatch):
    model = model_with_values(40, 48)
    start = {k: v.clone() for k, v in model.arm.state_dict().items()}
    one_pass = arm_refit.refit_arm(model, 5, 5e-3)
    refitted = {k: v.clone() for k, v in model.arm.state_dict().items()}
    model.arm.load_state_dict(start)
    monkeypatch.setattr(arm_refit, "REFIT_CHUNK", 300)  # ~2,600 latents: 9 chunks
    chunked = arm_refit.refit_arm(model, 5, 5e-3)
    assert chunked == pytest.approx(one_pass, rel=1e-5)
    for k, v in model.arm.state_dict().items():
        torch.testing.assert_close(v, refitted[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("task", ["denoise", "inpaint"])
def test_a_large_restoration_is_fitted_in_bands(monkeypatch, task):
    """Denoising (every pixel, averaged renders) and inpainting (the observed pixels only) fitted
    in 16-row bands: the result is that of the whole fit within float noise."""
    from lotterycli.metrics import psnr
    from lotterycli.restoration.ensemble import restore_image
    from lotterycli.restoration.operators import Denoise, Inpaint

    x = scene(40, 48)
    op = Denoise(sigma=0.1) if task == "denoise" else Inpaint.random(40, 48, 0.5, seed=1)
    y = op.simulate(x, 0)
    cfg = load_task_config(task, overrides={"steps": 30, "ensemble": 1, "candidates": 0, "seed": 1})
    torch.set_num_threads(1)
    whole = restore_image(y, op, cfg, lam=5e-3, device="cpu", workers=1)
    monkeypatch.setattr(bands, "BANDS_ABOVE_PIXELS", 1000)
    monkeypatch.setattr(bands, "BAND_PIXELS", 16 * 48)
    used = []
    original = Fitter._banded_step
    monkeypatch.setattr(Fitter, "_banded_step", lambda self, *a: used.append(1) or original(self, *a))
    banded = restore_image(y, op, cfg, lam=5e-3, device="cpu", workers=1)
    assert used
    assert abs(float(psnr(banded.image, x)) - float(psnr(whole.image, x))) < 0.1
