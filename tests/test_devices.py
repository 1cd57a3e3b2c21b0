"""Device placement: the fitting path must not mix CPU-only tensors into a model on another device.

The `meta` device runs the same forward/backward without data, on any machine, and raises the
same "Expected all tensors to be on the same device" error a GPU would (a CPU-made identity
matrix in the ARM broke every GPU fit once, unseen by a CPU-only suite). The CUDA tests run only
where a GPU is present.
"""

from __future__ import annotations

import pytest
import torch

import lotterycli.fit as fit_module
from lotterycli.codec import latents as latents_module
from lotterycli.codec.architecture import Architecture
from lotterycli.codec.model import LotteryModel
from lotterycli.config import load_task_config
from lotterycli.operators import Denoise, Inpaint, SuperResolution

from conftest import scene

ARCHS = {"config": load_task_config("compress").architecture, "reference": Architecture()}


@pytest.fixture
def meta_fit(monkeypatch):
    """fit() on the meta device: no noise generator there, and evaluations need real numbers."""
    monkeypatch.setattr(latents_module.LatentGrids, "_noise_generator", lambda self, device: None)
    monkeypatch.setattr(fit_module, "evaluate", lambda model, distortion, lam: (0.0, 0.0, 0.0))
    return fit_module.fit


@pytest.mark.parametrize("arch_name", sorted(ARCHS))
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_forward_backward_stay_on_the_model_device(meta_fit, arch_name, mode):
    model = LotteryModel(24, 40, ARCHS[arch_name], seed=0, mask_ratio=0.3).to("meta")
    image, bits = model(mode, 0.3, 1.5)
    (image.mean() + bits).backward()
    assert image.device.type == "meta" and image.shape == (3, 24, 40)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.device.type == "meta" for g in grads)


@pytest.mark.parametrize(
    "operator, obs_shape",
    [
        (Denoise(sigma=0.1), (24, 40)),
        (SuperResolution(scale=4), (6, 10)),
        (Inpaint.random(24, 40, 0.5, seed=0), (24, 40)),
    ],
    ids=["denoise", "sr", "inpaint"],
)
def test_restoration_fit_runs_on_another_device(meta_fit, operator, obs_shape):
    model = LotteryModel(24, 40, ARCHS["config"], seed=0, mask_ratio=0.3).to("meta")
    y = torch.zeros(3, *obs_shape, device="meta")
    result = meta_fit(model, lambda im: operator.loss(im, y), 1e-3, fit_module.Schedule(steps=6, average_fraction=0.5))
    assert result.average_render is not None and result.average_render.device.type == "meta"


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@cuda
def test_compress_on_cuda_decodes_to_its_reported_pixels():
    from lotterycli.compress import compress_image, decompress_bytes

    x = scene(32, 48)
    cfg = load_task_config("compress", overrides={"steps": 30})
    result = compress_image(x, cfg, device="cuda")
    assert torch.equal(decompress_bytes(result.data), result.decoded)
    assert result.psnr > 15.0


@cuda
def test_restore_on_cuda_with_concurrent_members():
    from lotterycli.metrics import psnr
    from lotterycli.restore import restore_image

    x = scene(32, 32)
    op = Denoise(sigma=25 / 255)
    y = op.simulate(x, seed=3)
    cfg = load_task_config("denoise", overrides={"steps": 40, "ensemble": 2})
    result = restore_image(y, op, cfg, lam=cfg.lambda_for(25.0), device="cuda", workers=2)
    assert len(result.members) == 2 and result.image.device.type == "cpu"
    assert psnr(result.image, x) > psnr(y.clamp(0, 1), x)
