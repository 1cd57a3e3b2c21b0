"""The member batch (B fits as one model) against the single model it stacks."""

from __future__ import annotations

import pytest
import torch
from conftest import arch

from lotterycli.model.lottery_model import LotteryModel
from lotterycli.model.members import MemberBatch


def _members(n: int, height: int = 20, width: int = 24, **changes) -> list[LotteryModel]:
    models = []
    for k in range(n):
        torch.manual_seed(100 + k)
        m = LotteryModel(height, width, arch(**changes), seed=7 + k, mask_ratio=0.3)
        with torch.no_grad():  # latents away from zero, networks away from their start
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
            for g in m.latents.grids:
                g.copy_(torch.randn_like(g) * 0.4)
        models.append(m)
    return models


def _loss(image: torch.Tensor, bits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((image - target) ** 2).mean() + 1e-3 * bits / image[0].numel()


@pytest.mark.parametrize("way", ["cpu", "gpu"])
@pytest.mark.parametrize("mode", ["hard", "soft"])
@pytest.mark.parametrize("changes", [{}, {"arm_hidden": 16, "arm_band_rows": 6}])
def test_members_compute_what_their_models_compute(monkeypatch, way, mode, changes):
    """Each member's render, rate and every parameter's gradient are those of its own model
    (up to float order: batched products and grouped convolutions sum in another order), in the
    CPU's way and in a GPU's (`device_policy`: the grids packed in one canvas, on both sides)."""
    from lotterycli.model import device_policy

    monkeypatch.setattr(device_policy, "launch_bound", lambda t: way == "gpu")
    models = _members(3, **changes)
    batch = MemberBatch(models)
    target = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(5))
    images, bits = batch(mode, 0.3, 1.5)
    assert images.shape == (3, 3, 20, 24) and bits.shape == (3,)
    sum(_loss(images[k], bits[k], target) for k in range(3)).backward()
    for k, model in enumerate(models):
        image, b = model(mode, 0.3, 1.5)  # its own noise generator: the same draws as member k's
        _loss(image, b, target).backward()
        assert torch.allclose(images[k], image, atol=1e-5)
        assert torch.allclose(bits[k], b, rtol=1e-5)
        for name, p in model.named_parameters():
            got = batch.p(name).grad[k]
            assert torch.allclose(got, p.grad, rtol=1e-3, atol=1e-5), name


def test_member_results_do_not_depend_on_the_batch():
    """A member alone and the same member beside others: the same render, rate and gradients up to
    float order (no operation mixes members). Not bit for bit: the CPU's batched products and
    grouped convolutions choose their kernels and reduction blocking by batch size and by CPU. On
    an AVX-512 Xeon render and rate were bit-identical and gradients within 1e-9 relative; on an
    AVX2 EPYC the upsampling's grouped convolution differs by ~2e-6 with 1 and 4 members, the
    render by ~3e-7 and the gradients by < 1e-8."""
    models = _members(4)
    alone, together = MemberBatch(models[1:2]), MemberBatch(models)
    target = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(5))
    outputs = []
    for batch, k in ((alone, 0), (together, 1)):
        images, bits = batch("soft", 0.3, 1.5)
        sum(_loss(images[i], bits[i], target) for i in range(batch.n_members)).backward()
        outputs.append((images[k], bits[k], {n: batch.p(n).grad[k] for n in batch.names}))
    (i1, b1, g1), (i2, b2, g2) = outputs
    assert torch.allclose(i1, i2, rtol=0, atol=2e-6) and torch.allclose(b1, b2, rtol=1e-6, atol=0)
    for n in g1:
        assert torch.allclose(g1[n], g2[n], rtol=1e-6, atol=1e-8), n


def test_members_move_in_and_out_of_models():
    models = _members(2)
    batch = MemberBatch(models)
    with torch.no_grad():
        batch.p("arm.fc1.weight")[1].add_(1.0)
    state = batch.member_state(1)
    batch.write_member(1, models[1])
    assert torch.equal(dict(models[1].named_parameters())["arm.fc1.weight"], state["arm.fc1.weight"])
    batch.load_member_state(0, state)
    assert torch.equal(batch.p("arm.fc1.weight")[0], batch.p("arm.fc1.weight")[1])
    with pytest.raises(ValueError, match="share image size"):
        MemberBatch([models[0], LotteryModel(20, 20, arch(), seed=1, mask_ratio=0.3)])


# -- the batched fitting loop ---------------------------------------------------------------------
def _fit_batched(models, target, steps=30, keep_at=None, keep=None, **changes):
    from conftest import schedule

    from lotterycli.fitting.batched import BatchedFitter
    from lotterycli.fitting.losses import PixelMSE

    batch = MemberBatch(models)
    sched = schedule(steps=steps, eval_every=5, average_fraction=0.3, **changes)
    fitter = BatchedFitter(batch, [PixelMSE.whole(target) for _ in models], 2e-3, sched)
    if keep_at is not None:
        fitter.advance(keep_at)
        fitter.keep(keep)
    results = fitter.finish()
    return batch, results


def test_batched_fit_matches_single_fits():
    """Each member of a batched fit ends where its own `Fitter` fit ends (every pixel each step, no
    rate thread): the same losses up to the drift of float order over the steps."""
    from conftest import schedule

    from lotterycli.fitting.loop import Fitter
    from lotterycli.fitting.losses import PixelMSE

    torch.set_num_threads(1)
    target = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(5))
    batch, results = _fit_batched(_members(3), target)
    for k, model in enumerate(_members(3)):
        single = Fitter(model, PixelMSE.whole(target), 2e-3,
                        schedule(steps=30, eval_every=5, average_fraction=0.3)).finish()
        assert results[k].best_step == single.best_step
        assert results[k].best_loss == pytest.approx(single.best_loss, rel=1e-4)
        assert torch.allclose(results[k].average_render, single.average_render, atol=1e-4)
        for name, p in model.named_parameters():
            assert torch.allclose(batch.p(name)[k], p, atol=1e-3), name
    assert len({r.best_loss for r in results}) == 3  # the members differ


def test_batched_fit_does_not_depend_on_the_other_members():
    """A member fitted alone and inside a batch of 4: the same result within float noise (forward
    passes are identical; gradients may differ in the last bits, see above)."""
    torch.set_num_threads(1)
    target = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(5))
    _, alone = _fit_batched(_members(4)[2:3], target)
    _, together = _fit_batched(_members(4), target)
    assert together[2].best_loss == pytest.approx(alone[0].best_loss, rel=1e-4)


def test_batched_fit_keeps_chosen_members():
    """Dropping members mid-fit (screening) leaves the others' fits as they were: the same as a
    batch of just those members from the start."""
    torch.set_num_threads(1)
    target = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(5))
    _, screened = _fit_batched(_members(4), target, keep_at=8, keep=[3, 1])
    models = _members(4)
    _, direct = _fit_batched([models[3], models[1]], target)
    for a, b in zip(screened, direct):
        assert a.best_loss == pytest.approx(b.best_loss, rel=1e-4) and a.best_step == b.best_step


@pytest.mark.parametrize("height, width", [(1, 1), (5, 3), (33, 2)])
def test_members_render_odd_sizes_as_their_models(height, width):
    """Grids of one value, odd sizes and ARM bands taller than some grids: each member's render and
    rate are its model's."""
    models = _members(2, height, width, arm_band_rows=4)
    images, bits = MemberBatch(models)("soft", 0.3, 1.5)
    for k, model in enumerate(models):
        image, b = model("soft", 0.3, 1.5)
        assert torch.allclose(images[k], image, atol=1e-5) and torch.allclose(bits[k], b, rtol=1e-5)
