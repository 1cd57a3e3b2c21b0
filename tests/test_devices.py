"""Device placement: the fitting path must not mix CPU-only tensors into a model on another device.

The `meta` device runs the same forward/backward without data, on any machine, and raises the
same "Expected all tensors to be on the same device" error a GPU would (a CPU-made identity
matrix in the ARM broke every GPU fit once, unseen by a CPU-only suite). The CUDA tests run only
where a GPU is present.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import arch, scene, schedule

import lotterycli.fitting.loop as fit_module
from lotterycli.config import load_task_config
from lotterycli.model import latents as latents_module
from lotterycli.model.lottery_model import LotteryModel
from lotterycli.restoration.operators import Denoise, Inpaint, SuperResolution

ARCHS = {"config": load_task_config("compress").architecture, "reference": arch()}


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
    result = meta_fit(model, lambda im: operator.loss(im, y), 1e-3, schedule(steps=6, average_fraction=0.5))
    assert result.average_render is not None and result.average_render.device.type == "meta"


@pytest.mark.parametrize(
    "observed, pixel_fraction", [("all", 1.0), ("all", 0.5), ("some", 0.5)], ids=["denoise", "random-half", "inpaint"]
)
def test_pixel_loss_fit_runs_on_another_device(meta_fit, observed, pixel_fraction):
    """A PixelMSE fit (denoising, inpainting, compression with pixel_fraction < 1) stays on the
    model's device: renders of the loss's pixels, of a random part of them drawn each step (from
    a CPU generator), and whole renders on the averaged steps. (The meta device lets a CPU index
    tensor through, as CUDA's indexing does; a CPU-made tensor computed with is what it catches.)"""
    from lotterycli.fitting.losses import PixelMSE, fit_distortion

    model = LotteryModel(24, 40, ARCHS["config"], seed=0, mask_ratio=0.3).to("meta")
    if observed == "all":
        loss = fit_distortion(torch.zeros(3, 24, 40, device="meta"), 0.5)  # compression's PixelMSE
    else:
        pixels = torch.arange(0, 24 * 40, 3).to("meta")
        loss = PixelMSE(pixels, torch.zeros(3, pixels.numel(), device="meta"), 24 * 40)
    assert isinstance(loss, PixelMSE)
    # steps 0, 1 and 3 render the loss's pixels (or a random part of them), step 2 (averaged) all
    sched = schedule(steps=4, average_fraction=0.5, average_every=2, pixel_fraction=pixel_fraction)
    result = meta_fit(model, loss, 1e-3, sched)
    assert result.average_render is not None and result.average_render.device.type == "meta"
    assert result.average_render.shape == (3, 24, 40)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@cuda
def test_compress_on_cuda_decodes_to_its_reported_pixels():
    from lotterycli.compression.decoder import decode_bytes
    from lotterycli.compression.encoder import compress_image

    x = scene(32, 48)
    cfg = load_task_config("compress", overrides={"steps": 30})
    result = compress_image(x, cfg, device="cuda")
    assert torch.equal(decode_bytes(result.data), result.decoded)
    assert result.psnr > 15.0


@cuda
def test_restore_on_cuda_with_concurrent_members():
    from lotterycli.metrics import psnr
    from lotterycli.restoration.ensemble import restore_image

    x = scene(32, 32)
    op = Denoise(sigma=25 / 255)
    y = op.simulate(x, seed=3)
    cfg = load_task_config("denoise", overrides={"steps": 40, "ensemble": 2})
    for batch in ("never", "auto"):  # members on CUDA streams; as one member batch (the default there)
        settings = replace(cfg.restoration, member_batch=batch)
        result = restore_image(y, op, replace(cfg, restoration=settings), lam=cfg.lambda_for(25.0), device="cuda",
                               workers=2)
        assert len(result.members) == 2 and result.image.device.type == "cpu"
        assert psnr(result.image, x) > psnr(y.clamp(0, 1), x)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_member_batch_stays_on_the_model_device(monkeypatch, mode):
    """The member batch (a GPU's restoration path) on the meta device: forward, backward, the
    per-member clipping and the optimizer step make no CPU tensor (the noise is faked: the meta
    device has no generator)."""
    from lotterycli.fitting.batched import BatchedFitter
    from lotterycli.fitting.losses import PixelMSE
    from lotterycli.model.members import MemberBatch

    monkeypatch.setattr(MemberBatch, "_noise", lambda self, shape, a, device: torch.zeros(shape, device=device))
    models = [LotteryModel(24, 40, ARCHS["config"], seed=k, mask_ratio=0.3).to("meta") for k in range(3)]
    batch = MemberBatch(models)
    images, bits = batch(mode, 0.3, 1.5)
    assert images.device.type == "meta" and images.shape == (3, 3, 24, 40) and bits.shape == (3,)
    target = torch.zeros(3, 24 * 40, device="meta")
    fitter = BatchedFitter(batch, [PixelMSE(torch.arange(24 * 40, device="meta"), target, 24 * 40)] * 3, 1e-3,
                           schedule(steps=20, eval_every=100, hard_fraction=0.0))
    monkeypatch.setattr(BatchedFitter, "evaluate", lambda self: [0.0] * self.batch.n_members)
    fitter.advance(2)
    fitter.keep([2, 0])
    fitter.advance(3)
    assert all(p.device.type == "meta" and p.shape[0] == 2 for p in fitter.params)


@pytest.mark.parametrize("size", [(24, 40), (72, 80)], ids=["folded", "per-tap"])
def test_the_gpu_way_of_each_step_part_gives_the_cpu_ways_values(monkeypatch, size):
    """`device_policy.launch_bound` picks a GPU's way (fewer, larger operations; no host sync) or
    a CPU's for each part of a step; both must compute the same loss and gradients. Run here with
    the GPU's way forced on CPU tensors: the ARM contexts as one im2col, its and the upsampling's
    weight gradients as matrix products, overlap-adds folded, the synthesis' first layer uncached.
    (72x80 has ARM and upsampling planes above the CPU's fold size, 24x40 none.)"""
    from lotterycli.fitting.losses import fit_distortion
    from lotterycli.model import device_policy

    h, w = size
    target = scene(h, w)

    def gradients(gpu_way: bool) -> dict[str, torch.Tensor]:
        monkeypatch.setattr(device_policy, "launch_bound", lambda t: gpu_way)
        torch.manual_seed(0)
        model = LotteryModel(h, w, ARCHS["config"], seed=0, mask_ratio=0.3)
        fitter = fit_module.Fitter(model, fit_distortion(target, 1.0), 1e-3, schedule(steps=4), rate_thread=False)
        fitter.advance(2)  # two steps, so the CPU's first-layer cache is used as well as filled
        model.zero_grad(set_to_none=True)
        image, bits = model("soft", 0.3, 1.0)
        ((image - target).square().mean() + 1e-3 * bits / (h * w)).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    cpu_way, gpu_way = gradients(False), gradients(True)
    assert cpu_way.keys() == gpu_way.keys() and len(cpu_way) > 10
    for name in cpu_way:
        scale = float(cpu_way[name].abs().max())  # the rate's gradients are small: compare to their size
        torch.testing.assert_close(gpu_way[name], cpu_way[name], rtol=1e-4, atol=1e-5 * scale, msg=name)
