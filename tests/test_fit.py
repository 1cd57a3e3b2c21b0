"""The fitting loop: render averaging (restoration self-ensemble), best-state keeping, pausing and
resuming, partial renders, the rate thread, our Adam, and cancellation."""

import pytest
import torch
from conftest import arch, schedule

from lotterycli.fitting import loop as loop_module
from lotterycli.fitting.loop import FitCancelled, Fitter, cancel_all, evaluate, fit
from lotterycli.fitting.losses import PixelMSE, fit_distortion, squared_error
from lotterycli.model.lottery_model import LotteryModel


def _model_and_target(seed=0):
    torch.manual_seed(seed)
    target = torch.rand(3, 20, 24)
    return LotteryModel(20, 24, arch(), seed=seed, mask_ratio=0.3), target


def test_average_render_is_mean_of_last_fraction():
    model, target = _model_and_target()
    result = fit(model, squared_error(target), 1e-3, schedule(steps=12, average_fraction=0.5))
    avg = result.average_render
    assert avg is not None and avg.shape == (3, 20, 24)
    assert torch.isfinite(avg).all() and avg.min() >= 0 and avg.max() <= 1
    with torch.no_grad():
        final, _ = model("hard")
    assert not torch.equal(avg, final)  # an average of several renders, not the last one


def test_no_average_by_default():
    model, target = _model_and_target(1)
    assert fit(model, squared_error(target), 1e-3, schedule(steps=4)).average_render is None


def test_best_state_is_kept():
    model, target = _model_and_target(2)
    result = fit(model, squared_error(target), 1e-3, schedule(steps=20, hard_fraction=0.5, eval_every=1))
    loss, _, _ = evaluate(model, squared_error(target), 1e-3)
    assert abs(loss - result.best_loss) < 1e-6  # the model holds the best hard-rounded state
    assert 10 < result.best_step <= 20


def test_best_state_survives_a_late_soft_stage_blow_up():
    """A fit knocked off course late in the soft stage still returns its earlier best state."""
    model, target = _model_and_target(3)

    def blow_up(info):
        if info.step == 61:  # after step 60, in the tracked part of the soft stage
            with torch.no_grad():
                for g in model.latents.grids:
                    g.add_(torch.randn_like(g) * 5.0)

    result = fit(model, squared_error(target), 1e-3, schedule(steps=80, hard_fraction=0.1, eval_every=5), progress=blow_up)
    assert 14 <= result.best_step <= 61  # an evaluation before the blow-up won
    loss, _, _ = evaluate(model, squared_error(target), 1e-3)
    assert abs(loss - result.best_loss) < 1e-6


def test_paused_and_resumed_fit_equals_uninterrupted_fit():
    """Fitter.advance in pieces (restoration screening pauses candidates) runs the same steps."""
    sched = schedule(steps=16, hard_fraction=0.25, eval_every=2, average_fraction=0.5)
    model_a, target = _model_and_target(4)
    straight = fit(model_a, squared_error(target), 1e-3, sched)
    model_b, _ = _model_and_target(4)
    fitter = Fitter(model_b, squared_error(target), 1e-3, sched)
    fitter.advance(3)
    assert fitter.step == 3 and len(fitter.losses) == 3
    assert fitter.recent_loss(1.0) == torch.stack(fitter.losses).mean().item()
    fitter.advance(11)
    fitter.advance(11)  # no-op: already there
    resumed = fitter.finish()
    assert fitter.step == 16
    assert (resumed.best_loss, resumed.best_step) == (straight.best_loss, straight.best_step)
    assert torch.equal(resumed.average_render, straight.average_render)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name


def test_dropped_fit_tells_the_progress_callback():
    model, target = _model_and_target(5)
    seen = []
    fitter = Fitter(model, squared_error(target), 1e-3, schedule(steps=10), progress=seen.append, report_every=2)
    fitter.advance(4)
    fitter.drop()
    assert [i.stage for i in seen][-1] == "dropped" and seen[-1].step == 4
    assert all(i.stage == "soft" for i in seen[:-1])


def test_render_of_chosen_pixels_equals_those_columns_of_the_full_render():
    model, _ = _model_and_target(6)
    with torch.no_grad():
        for g in model.latents.grids:
            g.normal_()
        full, bits_full = model("hard")
        pixels = torch.tensor([0, 5, 23, 24, 200, 479])
        part, bits_part = model("hard", pixels=pixels)
    assert part.shape == (3, 6)
    torch.testing.assert_close(part, full.reshape(3, -1)[:, pixels], rtol=0, atol=1e-6)
    assert float(bits_part) == float(bits_full)  # the rate covers every latent either way


def test_fit_on_chosen_pixels_matches_a_masked_full_fit():
    """A PixelMSE distortion: synthesising just the pixels it reads gives the same fit."""
    _, target = _model_and_target(7)
    keep = torch.rand(20, 24, generator=torch.Generator().manual_seed(1)) > 0.5
    pixels = torch.nonzero(keep.reshape(-1)).squeeze(1)
    sched = schedule(steps=24, hard_fraction=0.25, eval_every=4, average_fraction=0.5)

    def masked(image):
        return torch.mean((image.reshape(3, -1)[:, pixels] - target.reshape(3, -1)[:, pixels]) ** 2)

    model_a, _ = _model_and_target(7)
    full = Fitter(model_a, masked, 1e-3, sched).finish()
    model_b, _ = _model_and_target(7)
    part = Fitter(model_b, PixelMSE(pixels, target.reshape(3, -1)[:, pixels], 20 * 24), 1e-3, sched).finish()
    assert part.best_step == full.best_step
    assert abs(part.best_loss - full.best_loss) < 1e-5 * full.best_loss
    # the averaged render is whole, and equal to the full fit's
    assert part.average_render.shape == (3, 20, 24)
    torch.testing.assert_close(part.average_render, full.average_render, rtol=0, atol=1e-4)


def test_fit_distortion_is_the_whole_mse_or_a_pixel_mse_for_partial_steps():
    _, target = _model_and_target(14)
    image = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(2))
    whole = fit_distortion(target, 1.0)
    assert not isinstance(whole, PixelMSE)
    assert torch.equal(whole(image), squared_error(target)(image))
    part = fit_distortion(target, 0.5)
    assert isinstance(part, PixelMSE) and part.all_pixels and part.indices.numel() == 480
    torch.testing.assert_close(part(image.reshape(3, -1)), whole(image), rtol=1e-6, atol=0)


def test_pixel_fraction_draws_a_fresh_part_of_the_pixels_each_step(monkeypatch):
    """pixel_fraction < 1: each step renders a random fraction of the loss's pixels, the same
    number every step (seeded by the model's seed, so the fit is repeatable); averaged steps
    still render the whole image."""
    seen = []
    forward = LotteryModel.forward

    def spy(self, mode="hard", temperature=0.3, noise_a=1.0, pixels=None):
        if torch.is_grad_enabled():
            seen.append(None if pixels is None else pixels.clone())
        return forward(self, mode, temperature, noise_a, pixels)

    monkeypatch.setattr(LotteryModel, "forward", spy)
    sched = schedule(steps=12, average_fraction=0.25, average_every=1, pixel_fraction=0.5)
    results = []
    for _ in range(2):
        seen.clear()
        model, target = _model_and_target(10)
        loss = PixelMSE(torch.arange(480), target.reshape(3, -1), 480)
        results.append((Fitter(model, loss, 1e-3, sched).finish(), [s for s in seen]))
    (first, draws), (second, draws_again) = results
    assert [d is None for d in draws] == [False] * 9 + [True] * 3  # the last quarter is averaged: whole
    parts = draws[:9]
    assert all(d.numel() == 240 for d in parts)  # half of 480, every step
    assert all(torch.equal(d, d.sort().values) and d.unique().numel() == d.numel() for d in parts)
    assert not torch.equal(parts[0], parts[1])
    assert all(torch.equal(a, b) for a, b in zip(parts, draws_again[:9]))  # repeatable
    assert torch.equal(first.average_render, second.average_render)


@pytest.mark.parametrize("n_columns, fraction", [(480, 0.5), (1000, 0.3), (7, 0.5), (5, 0.01), (9, 0.999)])
def test_drawn_columns_are_a_fixed_number_each_equally_likely(n_columns, fraction):
    """draw_columns: round(fraction * n) positions (at least one), sorted, in range, one per
    stratum (distinct when the strata are whole positions; a position that straddles two can
    come twice); over many draws every position comes up about equally often, repeats counted
    (the loss over the drawn pixels estimates the loss over all of them without bias)."""
    from lotterycli.fitting.losses import draw_columns

    gen = torch.Generator().manual_seed(3)
    n = max(1, round(fraction * n_columns))
    counts = torch.zeros(n_columns)
    draws = 4000
    for _ in range(draws):
        d = draw_columns(n_columns, fraction, gen)
        assert d.dtype == torch.int64 and d.numel() == n
        assert int(d.min()) >= 0 and int(d.max()) < n_columns
        assert torch.all(d[1:] > d[:-1]) if n_columns % n == 0 else torch.all(d[1:] >= d[:-1])
        i = torch.arange(n)
        assert torch.all((d >= i * n_columns // n) & (d * n < (i + 1) * n_columns))  # in stratum i
        counts.index_add_(0, d, torch.ones(n))
    p = n / n_columns
    sd = (draws * p * (1 - p)) ** 0.5
    assert float((counts - draws * p).abs().max()) < 5 * sd + 1
    again = torch.Generator().manual_seed(3)
    assert torch.equal(draw_columns(n_columns, fraction, again), draw_columns(n_columns, fraction,
                                                                               torch.Generator().manual_seed(3)))


def test_average_every_takes_every_nth_render_of_the_window():
    counts = {}
    for every in (1, 3):
        model, target = _model_and_target(8)
        fitter = Fitter(model, squared_error(target), 1e-3, schedule(steps=20, average_fraction=0.5, average_every=every))
        fitter.finish()
        counts[every] = fitter.n_averaged
    assert counts == {1: 10, 3: 4}  # window = steps 10..19; every third: 10, 13, 16, 19


def test_progress_shows_the_arm_refit_and_the_quantization_on_their_own_bars(capsys):
    """The fit's bar keeps its numbers; the refit (stage "arm refit") gets a second bar that shows
    the latent rate and no PSNR (its distortion is unknown: nan), and never crashes on it; the
    quantization search (stage "quantize") a bar whose total follows its reports."""
    import math

    from lotterycli.fitting.loop import StepInfo
    from lotterycli.progress import FitProgress

    with FitProgress(True, label="compress") as progress:
        progress(StepInfo(10, 10, 0.002, 0.001, 0.5, 1.0, "hard"))
        progress(StepInfo(5, 20, 0.6, math.nan, 0.25, 0.5, "arm refit"))
        progress(StepInfo(20, 20, 0.55, math.nan, 0.24, 1.0, "arm refit"))
        progress(StepInfo(40, 60, 0.52, math.nan, 0.222, 1.0, "arm refit, width 8"))  # a bar of its own
        # the quantization search: its total shrinks as it goes, it knows no PSNR or rate
        progress(StepInfo(3, 90, 0.0123, math.nan, math.nan, 0.1, "quantize"))
        progress(StepInfo(37, 37, 0.0101, math.nan, math.nan, 0.4, "quantize"))
    err = capsys.readouterr().err
    assert "compress" in err and "30.00 dB" in err and "0.500 bpp" in err
    assert "ARM refit" in err and "20/20" in err and "0.240 bpp" in err and "nan" not in err
    assert "ARM refit, width 8" in err and "40/60" in err and "0.222 bpp" in err
    assert "quantize networks" in err and "37/37" in err and "loss 0.01010" in err


def test_own_adam_matches_torch_adam_bit_for_bit():
    """lotterycli.fitting.adam.Adam (which avoids torch.optim's 2.4 s import of torch._dynamo) gives
    exactly torch.optim.Adam's CPU updates: groups with their own and changing learning rates,
    a parameter without a gradient at some steps, zero_grad(set_to_none)."""
    from lotterycli.fitting.adam import Adam

    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 7, generator=gen), torch.randn(3, generator=gen), torch.randn(4, 2, generator=gen)]
    runs = []
    for make in (lambda groups: torch.optim.Adam(groups), lambda groups: Adam(groups)):
        params = [t.clone().requires_grad_() for t in start]
        opt = make([{"params": params[:2], "lr": 0.02}, {"params": params[2:], "lr": 0.1}])
        g = torch.Generator().manual_seed(1)
        for step in range(30):
            for group, base in zip(opt.param_groups, (0.02, 0.1)):
                group["lr"] = base * (1.0 - step / 40)
            opt.zero_grad(set_to_none=True)
            loss = (params[0] ** 2).sum() + (params[1] * torch.randn(3, generator=g)).sum()
            if step % 3:  # the third parameter gets no gradient on every third step
                loss = loss + torch.sin(params[2]).sum()
            loss.backward()
            opt.step()
        runs.append([p.detach().clone() for p in params])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    assert not torch.equal(runs[1][0], start[0])  # it did move


def test_fused_adam_matches_torch_fused_adam_and_resumes():
    """The fused path (what a GPU uses; forced here on the CPU, where torch has the same kernel)
    gives torch.optim.Adam(fused=True)'s updates bit for bit, including after its state is
    restored the way a checkpoint restores it (float step counts, no step tensors)."""
    from lotterycli.fitting.adam import Adam

    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 7, generator=gen), torch.randn(3, generator=gen)]
    assert not Adam([start[0].clone().requires_grad_()]).fused  # CPU default: the multi-tensor path

    def run(make, restore_at=None):
        params = [t.clone().requires_grad_() for t in start]
        opt = make(params)
        g = torch.Generator().manual_seed(1)
        for step in range(20):
            if step == restore_at:
                saved = {p: {k: opt.state[p][k] for k in ("step", "exp_avg", "exp_avg_sq")} for p in params}
                opt = make(params)
                opt.state.update({p: dict(st) for p, st in saved.items()})
            opt.param_groups[0]["lr"] = 0.05 * (1.0 - step / 30)
            opt.zero_grad(set_to_none=True)
            ((params[0] ** 2).sum() + (params[1] * torch.randn(3, generator=g)).sum()).backward()
            opt.step()
        return [p.detach() for p in params]

    reference = run(lambda ps: torch.optim.Adam(ps, lr=0.05, fused=True))
    own = run(lambda ps: Adam(ps, lr=0.05, fused=True))
    resumed = run(lambda ps: Adam(ps, lr=0.05, fused=True), restore_at=9)
    plain = run(lambda ps: Adam(ps, lr=0.05))
    for a, b, c, d in zip(reference, own, resumed, plain):
        assert torch.equal(a, b) and torch.equal(a, c)
        assert torch.allclose(a, d, atol=1e-5)  # the same formula, rounded in another order


def test_latent_lr_scale_moves_only_the_latents_learning_rate():
    base, target = _model_and_target(5)
    start = {k: v.clone() for k, v in base.state_dict().items()}
    frozen, _ = _model_and_target(5)
    fit(frozen, squared_error(target), 1e-3, schedule(steps=6, hard_fraction=0.0, latent_lr_scale=0.0))
    for g0, g in zip(base.latents.grids, frozen.latents.grids):
        assert torch.equal(g0, g)  # learning rate 0: the latents never move
    moved = [k for k, v in frozen.state_dict().items() if not torch.equal(v, start[k])]
    assert any(k.startswith("modnet") for k in moved)  # the networks still learn at lr
    same, _ = _model_and_target(5)
    fit(same, squared_error(target), 1e-3, schedule(steps=6, hard_fraction=0.0, latent_lr_scale=1.0))
    plain, _ = _model_and_target(5)
    fit(plain, squared_error(target), 1e-3, schedule(steps=6, hard_fraction=0.0))
    for a, b in zip(same.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)  # scale 1 is the plain schedule, bit for bit


def _step_gradients(rate_thread, distortion_of, mode_steps, average_fraction=0.0):
    """Gradients of every parameter after the last of `mode_steps` steps (the fit's stages)."""
    model, target = _model_and_target(7)
    sched = schedule(steps=mode_steps[1], hard_fraction=1 - mode_steps[0] / mode_steps[1],
                     pixel_fraction=0.5, average_fraction=average_fraction)
    fitter = Fitter(model, distortion_of(target), 2e-3, sched, rate_thread=rate_thread)
    fitter.advance()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, fitter


def test_rate_thread_step_has_the_plain_steps_gradients():
    """rate_thread: the rate's forward and backward on a second thread give every parameter the
    gradient of the plain step (soft and hard stages, whole and partial renders, averaged steps),
    and the fit leaves torch's thread count as it was."""
    cases = [
        (lambda t: squared_error(t), (3, 3), 0.0),  # soft stage, plain distortion
        (lambda t: squared_error(t), (2, 4), 0.0),  # hard steps, plain distortion
        (lambda t: PixelMSE(torch.arange(480), t.reshape(3, -1), 480), (3, 3), 0.0),  # random half
        (lambda t: PixelMSE(torch.arange(480), t.reshape(3, -1), 480), (2, 4), 0.0),  # random half, hard steps
        (lambda t: PixelMSE(torch.arange(0, 480, 3), t.reshape(3, -1)[:, ::3], 480), (2, 4), 0.5),
    ]
    threads = torch.get_num_threads()
    for distortion_of, stages, average in cases:
        plain, _ = _step_gradients(False, distortion_of, stages, average)
        split, fitter = _step_gradients(True, distortion_of, stages, average)
        assert plain.keys() == split.keys() and {"latents.grids.0", "arm.fc1.weight", "synthesis.scores"} <= plain.keys()
        for name in plain:
            assert torch.equal(split[name], plain[name]), name  # same sums, same order
        assert torch.get_num_threads() == threads
    assert fitter.n_averaged == 2  # the averaged renders are taken on split steps too (the last case)


def test_rate_thread_fit_is_repeatable_and_reports_an_error_of_either_branch(monkeypatch):
    from lotterycli.model.arm import Arm

    runs = []
    for _ in range(2):
        model, target = _model_and_target(8)
        fit_result = fit(model, squared_error(target), 2e-3, schedule(steps=10, eval_every=2), rate_thread=True)
        runs.append((fit_result.best_loss, [v.clone() for v in model.state_dict().values()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))

    def broken(self, *args, **kwargs):
        raise RuntimeError("rate branch failed")

    monkeypatch.setattr(Arm, "rate_bits", broken)
    threads = torch.get_num_threads()
    model, target = _model_and_target(8)
    with pytest.raises(RuntimeError, match="rate branch failed"):
        fit(model, squared_error(target), 2e-3, schedule(steps=3), rate_thread=True)
    assert torch.get_num_threads() == threads


def test_rate_thread_pays_on_cpu_with_threads_for_small_images_only():
    from lotterycli.fitting.loop import RATE_THREAD_MAX_PIXELS, rate_thread_pays

    before = torch.get_num_threads()
    cpu = torch.device("cpu")
    try:
        torch.set_num_threads(2)
        assert rate_thread_pays(cpu, 256 * 256) and rate_thread_pays(cpu, RATE_THREAD_MAX_PIXELS)
        assert not rate_thread_pays(cpu, RATE_THREAD_MAX_PIXELS + 1)
        assert not rate_thread_pays(torch.device("cuda"), 256 * 256)
        torch.set_num_threads(1)
        assert not rate_thread_pays(cpu, 256 * 256)
    finally:
        torch.set_num_threads(before)


# -- cancellation -------------------------------------------------------------------------------
@pytest.fixture
def cancel_event():
    """cancel_all() sets a process-wide event; clear it around the test so no other fit stops."""
    loop_module._CANCELLED.clear()
    try:
        yield loop_module._CANCELLED
    finally:
        loop_module._CANCELLED.clear()


@pytest.mark.parametrize("rate_thread", [False, True], ids=["plain", "rate_thread"])
def test_cancel_all_stops_a_running_fit_at_its_next_step(cancel_event, rate_thread):
    """cancel_all() (an interrupted command) makes a fit in progress raise FitCancelled before
    its next step; the steps already run stay run, and torch's thread count is restored."""
    model, target = _model_and_target(11)
    threads = torch.get_num_threads()
    seen = []

    def progress(info):
        seen.append(info.step)
        if info.step == 3:
            cancel_all()

    fitter = Fitter(model, squared_error(target), 1e-3, schedule(steps=10), progress=progress, report_every=1,
                    rate_thread=rate_thread)
    with pytest.raises(FitCancelled):
        fitter.advance()
    assert cancel_event.is_set()
    assert fitter.step == 3 and seen == [1, 2, 3]  # step 4 never ran
    assert torch.get_num_threads() == threads
    other, _ = _model_and_target(12)
    with pytest.raises(FitCancelled):  # a cancelled process starts no more fits either
        fit(other, squared_error(target), 1e-3, schedule(steps=2))


def test_cancel_all_reaches_a_fit_on_another_thread(cancel_event):
    """The case cancel_all exists for: a fit on a worker thread (a restoration member) stops at
    its next step when the main thread cancels, instead of running to its end."""
    import threading

    model, target = _model_and_target(13)
    reached, cancelled, outcome = threading.Event(), threading.Event(), []

    def progress(info):
        if info.step == 2:
            reached.set()
            assert cancelled.wait(30)  # hold the fit here until the main thread has cancelled

    def worker():
        try:
            fit(model, squared_error(target), 1e-3, schedule(steps=50), progress=progress, report_every=1)
            outcome.append("finished")
        except FitCancelled:
            outcome.append("cancelled")

    thread = threading.Thread(target=worker)
    thread.start()
    assert reached.wait(30)
    cancel_all()
    cancelled.set()
    thread.join(30)
    assert not thread.is_alive() and outcome == ["cancelled"]
    # and once the event is cleared (as the fixture does), fits run again
    cancel_event.clear()
    again, _ = _model_and_target(13)
    assert fit(again, squared_error(target), 1e-3, schedule(steps=2)).steps == 2


def test_a_fit_resumed_from_its_saved_state_continues_exactly():
    """What a checkpoint holds (`Fitter.state_dict`) continues the fit step for step in a new model
    and Fitter, as a killed `lottery compress` resumes: the same parameters bit for bit, though the
    new model's first synthesis layer computes every row afresh where the uninterrupted one kept
    most rows from earlier steps (`MaskedSynthesis._first_layer`)."""
    def run(resume_at=None):
        torch.manual_seed(6)
        target = torch.rand(3, 40, 36)
        sched = schedule(steps=10, eval_every=2, score_lr=0.5)

        def start():
            model = LotteryModel(40, 36, arch(), seed=6, mask_ratio=0.3)
            return model, Fitter(model, squared_error(target), 4e-3, sched)

        model, fitter = start()
        if resume_at is not None:
            fitter.advance(resume_at)
            state = fitter.state_dict()
            model, fitter = start()
            fitter.load_state_dict(state)
        return fitter.finish().best_loss, model.state_dict()

    straight = run()
    for at in (4, 7):
        resumed = run(at)
        assert resumed[0] == straight[0]
        for name, value in straight[1].items():
            assert torch.equal(resumed[1][name], value), name
