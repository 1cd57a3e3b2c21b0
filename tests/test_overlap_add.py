"""overlap_add: the per-tap loop and col2im (F.fold) give the same floats, so where each runs
(by device and plane size) changes no gradient and no file."""

import pytest
import torch

from lotterycli.model import overlap_add as oa
from lotterycli.model.arm import Arm
from lotterycli.model.upsampling import Upsampling


def _both(monkeypatch, fn):
    """fn() with every plane added tap by tap, then with every plane folded."""
    monkeypatch.setattr(oa, "FOLD_MAX_CPU_PIXELS", 0)
    by_loop = fn()
    monkeypatch.setattr(oa, "FOLD_MAX_CPU_PIXELS", 1 << 40)
    by_fold = fn()
    return by_loop, by_fold


@pytest.mark.parametrize("taps", [None, (0, 4, 5, 11, 13, 14)])
def test_loop_and_fold_give_the_same_sums(monkeypatch, taps):
    torch.manual_seed(0)
    kh, kw = 3, 5
    planes = torch.randn(kh * kw if taps is None else len(taps), 2, 7, 9)
    by_loop, by_fold = _both(monkeypatch, lambda: oa.overlap_add(planes, kh, kw, taps))
    assert by_loop.shape == (2, 7 + kh - 1, 9 + kw - 1)
    assert torch.equal(by_loop, by_fold)
    # against a plain reading of the definition
    expect = torch.zeros(2, 9, 13, dtype=torch.float64)
    for t, position in enumerate(range(kh * kw) if taps is None else taps):
        i, j = divmod(position, kw)
        expect[:, i: i + 7, j: j + 9] += planes[t].double()
    assert torch.allclose(by_loop.double(), expect, atol=1e-6)


def test_a_tap_count_that_does_not_match_the_planes_is_refused():
    with pytest.raises(ValueError, match="3 planes for 2 taps"):
        oa.overlap_add(torch.zeros(3, 1, 4, 4), 2, 2, (0, 1))


def test_the_rate_and_the_upsampling_have_the_same_gradients_either_way(monkeypatch):
    """Planes of every size, grids of 40x36 down to 3x3: both paths, bit for bit."""
    torch.manual_seed(1)
    arm, up = Arm(16), Upsampling(8)
    shapes = [(40, 36), (20, 18), (10, 9), (5, 5), (3, 3)]
    grids = [torch.randn(s).mul(3).round() for s in shapes]

    def grads():
        lat = [g.clone().requires_grad_() for g in grids]
        arm.zero_grad()
        up.zero_grad()
        (arm.rate_bits(lat) + up(lat).square().sum()).backward()
        return [g.grad for g in lat] + [p.grad.clone() for p in (*arm.parameters(), *up.parameters())]

    by_loop, by_fold = _both(monkeypatch, grads)
    for a, b in zip(by_loop, by_fold, strict=True):
        assert torch.equal(a, b)
        assert a.abs().sum() > 0
