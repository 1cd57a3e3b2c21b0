"""The fitting loop's render averaging (restoration self-ensemble) and best-state keeping."""

import torch

from lotterycli.codec.architecture import Architecture
from lotterycli.codec.model import LotteryModel
from lotterycli.fit import Schedule, evaluate, fit, mse


def _model_and_target(seed=0):
    torch.manual_seed(seed)
    target = torch.rand(3, 20, 24)
    return LotteryModel(20, 24, Architecture(), seed=seed, mask_ratio=0.3), target


def test_average_render_is_mean_of_last_fraction():
    model, target = _model_and_target()
    result = fit(model, mse(target), 1e-3, Schedule(steps=12, average_fraction=0.5))
    avg = result.average_render
    assert avg is not None and avg.shape == (3, 20, 24)
    assert torch.isfinite(avg).all() and avg.min() >= 0 and avg.max() <= 1
    with torch.no_grad():
        final, _ = model("hard")
    assert not torch.equal(avg, final)  # an average of several renders, not the last one


def test_no_average_by_default():
    model, target = _model_and_target(1)
    assert fit(model, mse(target), 1e-3, Schedule(steps=4)).average_render is None


def test_best_state_is_kept():
    model, target = _model_and_target(2)
    result = fit(model, mse(target), 1e-3, Schedule(steps=20, hard_fraction=0.5, eval_every=1))
    loss, _, _ = evaluate(model, mse(target), 1e-3)
    assert abs(loss - result.best_loss) < 1e-6  # the model holds the best hard-rounded state
    assert 10 < result.best_step <= 20
