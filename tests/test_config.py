"""Task configs: defaults, presets, --config merging, overrides, validation."""

from __future__ import annotations

import math
import textwrap

import pytest
import yaml

from lotterycli.config import CONFIG_DIR, PRESETS, TASKS, load_task_config
from lotterycli.errors import LotteryError
from lotterycli.fit import Schedule


def write(tmp_path, text: str, name: str = "user.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def raw(task: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / f"{task}.yaml").read_text())


# -- defaults and presets -----------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_defaults_load_for_every_task(task):
    data = raw(task)
    cfg = load_task_config(task)
    assert cfg.task == task
    assert cfg.preset == data["preset"]
    assert cfg.steps == data["presets"][cfg.preset]["steps"]
    assert cfg.lam == pytest.approx(data["lambda"])
    assert cfg.mask_ratio == pytest.approx(data["mask_ratio"])
    assert cfg.ensemble == data["presets"][cfg.preset].get("ensemble", 1)
    assert cfg.combine in ("mean", "median")
    assert isinstance(cfg.schedule, Schedule)
    assert cfg.schedule.lr == pytest.approx(data["schedule"]["lr"])
    assert cfg.fitted_schedule().steps == cfg.steps


@pytest.mark.parametrize("task", TASKS)
def test_presets_select_step_budgets(task):
    data = raw(task)
    steps = {p: load_task_config(task, preset=p).steps for p in PRESETS}
    assert steps == {p: data["presets"][p]["steps"] for p in PRESETS}
    assert steps["fast"] < steps["balanced"] < steps["best"]
    for p in PRESETS:
        assert load_task_config(task, preset=p).preset == p


def test_unknown_task_and_preset():
    with pytest.raises(LotteryError, match="unknown task 'deblur'"):
        load_task_config("deblur")
    with pytest.raises(LotteryError, match="unknown preset 'turbo'"):
        load_task_config("compress", preset="turbo")


def test_overrides_win_over_preset_and_file(tmp_path):
    user = write(tmp_path, "steps: 77\nlambda: 0.5\nseed: 3\n")
    cfg = load_task_config(
        "denoise", preset="best", config_file=user,
        overrides={"steps": 12, "lambda": 0.25, "mask_ratio": 0.5, "seed": 9, "ensemble": 2},
    )
    assert (cfg.steps, cfg.lam, cfg.mask_ratio, cfg.seed, cfg.ensemble) == (12, 0.25, 0.5, 9, 2)
    assert cfg.preset == "best"


def test_none_overrides_are_ignored():
    base = load_task_config("compress", preset="fast")
    cfg = load_task_config("compress", preset="fast", overrides={"steps": None, "lambda": None, "seed": None})
    assert cfg == base


def test_preset_values_beat_top_level_but_not_overrides(tmp_path):
    user = write(tmp_path, """
        lambda: 0.004
        presets:
          fast: {lambda: 0.009, steps: 11}
    """)
    assert load_task_config("compress", preset="fast", config_file=user).lam == pytest.approx(0.009)
    assert load_task_config("compress", preset="balanced", config_file=user).lam == pytest.approx(0.004)
    assert load_task_config("compress", preset="fast", config_file=user, overrides={"lambda": 0.1}).lam == pytest.approx(0.1)


# -- --config merging ---------------------------------------------------------------------------
def test_config_file_merges_key_by_key(tmp_path):
    user = write(tmp_path, """
        mask_ratio: 0.5
        preset: fast
        schedule:
          lr: 0.02
        presets:
          fast: {steps: 42}
    """)
    cfg = load_task_config("compress", config_file=user)
    base = raw("compress")
    assert cfg.mask_ratio == 0.5
    assert cfg.preset == "fast" and cfg.steps == 42
    assert cfg.schedule.lr == pytest.approx(0.02)
    # untouched keys keep the task defaults, inside nested mappings too
    assert cfg.schedule.score_lr == pytest.approx(base["schedule"]["score_lr"])
    assert cfg.schedule.temperature == tuple(base["schedule"]["temperature"])
    assert cfg.lam == pytest.approx(base["lambda"])
    assert load_task_config("compress", preset="best", config_file=user).steps == base["presets"]["best"]["steps"]
    # an explicit --preset beats the file's preset
    assert load_task_config("compress", preset="balanced", config_file=user).preset == "balanced"


def test_config_file_top_level_beats_task_presets(tmp_path):
    # every task preset sets steps (and ensemble); a user's top-level value must still win
    user = write(tmp_path, "steps: 50\nensemble: 3\n")
    for preset in PRESETS:
        cfg = load_task_config("denoise", preset=preset, config_file=user)
        assert (cfg.steps, cfg.ensemble) == (50, 3)
    assert load_task_config("denoise", config_file=user, overrides={"steps": 7}).steps == 7


def test_empty_config_file_is_fine(tmp_path):
    user = write(tmp_path, "# nothing\n")
    assert load_task_config("sr", config_file=user) == load_task_config("sr")


def test_missing_config_file(tmp_path):
    with pytest.raises(LotteryError, match="cannot read config"):
        load_task_config("compress", config_file=tmp_path / "nope.yaml")


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, key",
    [
        ("stepz: 10\n", "stepz"),
        ("schedule:\n  learning_rate: 0.1\n", "schedule.learning_rate"),
        ("schedule:\n  steps: 10\n", "schedule.steps"),
        ("presets:\n  fast: {steps: 10, bogus: 1}\n", "presets.fast.bogus"),
        ("presets:\n  turbo: {seed: 1}\n", "presets.turbo.seed"),
        ("architecture:\n  arm_hiden: 8\n", "architecture.arm_hiden"),
    ],
)
def test_unknown_key_is_named(tmp_path, text, key):
    user = write(tmp_path, text)
    with pytest.raises(LotteryError) as info:
        load_task_config("compress", config_file=user)
    msg = str(info.value)
    assert f"'{key}'" in msg
    assert "unknown config key" in msg
    assert str(user) in msg


def test_compress_config_sets_bands_and_zero_turns_them_off(tmp_path):
    assert load_task_config("compress").architecture.arm_band_rows == 256
    user = write(tmp_path, "architecture:\n  arm_band_rows: 0\n")
    assert load_task_config("compress", config_file=user).architecture.arm_band_rows == 0


def test_compress_config_refits_the_arm_and_zero_turns_it_off(tmp_path):
    assert load_task_config("compress").schedule.arm_refit_steps == 300
    assert load_task_config("denoise").schedule.arm_refit_steps == 0  # restoration: no refit by default
    user = write(tmp_path, "schedule:\n  arm_refit_steps: 0\n")
    assert load_task_config("compress", config_file=user).schedule.arm_refit_steps == 0
    assert load_task_config("compress").schedule.arm_scratch_widths == (8,)
    assert load_task_config("denoise").schedule.arm_scratch_widths == ()
    user = write(tmp_path, "schedule:\n  arm_scratch_widths: []\n")
    assert load_task_config("compress", config_file=user).schedule.arm_scratch_widths == ()


def test_architecture_section_overrides_sizes(tmp_path):
    user = write(tmp_path, "architecture:\n  arm_hidden: 8\n  synth_hidden: [16, 12, 8]\n")
    arch = load_task_config("denoise", config_file=user).architecture
    assert arch.arm_hidden == 8 and arch.synth_hidden == (16, 12, 8)
    assert arch.n_levels == load_task_config("denoise").architecture.n_levels  # the rest untouched


@pytest.mark.parametrize(
    "text, needle",
    [
        ("architecture: 3\n", "'architecture' must be a mapping"),
        ("architecture: {arm_hidden: 40}\n", "arm_hidden 40 is outside"),
        ("architecture: {arm_hidden: 2.5}\n", "'architecture.arm_hidden' must be an integer"),
        ("architecture: {synth_hidden: [8, 8]}\n", "list of 3 widths"),
        ("architecture: {latent_gain: 0}\n", "architecture.latent_gain"),
        ("architecture: {arm_band_rows: -1}\n", "architecture.arm_band_rows"),
        ("architecture: {arm_band_rows: 20000}\n", "arm_band_rows 20000 is outside"),
    ],
)
def test_bad_architecture_values(tmp_path, text, needle):
    with pytest.raises(LotteryError, match=needle.replace("(", "\\(")):
        load_task_config("compress", config_file=write(tmp_path, text))


@pytest.mark.parametrize("text", ["steps: [1, 2\n", "a: b: c\n", "key: 'unterminated\n"])
def test_bad_yaml(tmp_path, text):
    user = write(tmp_path, text)
    with pytest.raises(LotteryError, match="invalid YAML"):
        load_task_config("compress", config_file=user)


def test_non_utf8_config(tmp_path):
    user = tmp_path / "bin.yaml"
    user.write_bytes(b"\xff\xfe\x00steps: 3")
    with pytest.raises(LotteryError, match="bin.yaml"):
        load_task_config("compress", config_file=user)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"])
def test_config_must_be_mapping(tmp_path, text):
    with pytest.raises(LotteryError, match="mapping"):
        load_task_config("compress", config_file=write(tmp_path, text))


@pytest.mark.parametrize(
    "text, key",
    [
        ("steps: ten\n", "steps"),
        ("steps: 1.5\n", "steps"),
        ("steps: 0\n", "steps"),
        ("steps: true\n", "steps"),
        ("lambda: -0.1\n", "lambda"),
        ("lambda: '0.1'\n", "lambda"),
        ("lambda: .nan\n", "lambda"),
        ("lambda: 11\n", "lambda"),
        ("mask_ratio: 1.0\n", "mask_ratio"),
        ("mask_ratio: -0.1\n", "mask_ratio"),
        ("seed: -1\n", "seed"),
        ("seed: 2.5\n", "seed"),
        ("seed: 1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\n", "seed"),
        ("ensemble: 0\n", "ensemble"),
        ("ensemble: 65\n", "ensemble"),
        ("combine: max\n", "combine"),
        ("keep_observed: 1\n", "keep_observed"),
        ("keep_observed: 'yes'\n", "keep_observed"),
        ("candidates: -1\n", "candidates"),
        ("candidates: 2.5\n", "candidates"),
        ("screen_fraction: 0\n", "screen_fraction"),
        ("screen_fraction: 1.5\n", "screen_fraction"),
        ("classical_blend: 1.5\n", "classical_blend"),
        ("classical_blend: lots\n", "classical_blend"),
        ("member_transforms: 1\n", "member_transforms"),
        ("schedule:\n  lr: fast\n", "schedule.lr"),
        ("schedule:\n  lr: -1\n", "schedule.lr"),
        ("schedule:\n  temperature: 0.3\n", "schedule.temperature"),
        ("schedule:\n  temperature: [0.3, 0]\n", "schedule.temperature"),
        ("schedule:\n  noise: [1, 2, 3]\n", "schedule.noise"),
        ("schedule:\n  eval_every: 0\n", "schedule.eval_every"),
        ("schedule:\n  hard_fraction: 1.5\n", "schedule.hard_fraction"),
        ("schedule:\n  average_fraction: 2\n", "schedule.average_fraction"),
        ("schedule:\n  average_every: 0\n", "schedule.average_every"),
        ("schedule:\n  average_every: 1.5\n", "schedule.average_every"),
        ("schedule:\n  pixel_fraction: 0\n", "schedule.pixel_fraction"),
        ("schedule:\n  pixel_fraction: 1.5\n", "schedule.pixel_fraction"),
        ("schedule:\n  arm_refit_steps: -1\n", "schedule.arm_refit_steps"),
        ("schedule:\n  arm_refit_steps: 2.5\n", "schedule.arm_refit_steps"),
        ("schedule:\n  arm_refit_steps: 1000000\n", "schedule.arm_refit_steps"),
        ("schedule:\n  arm_refit_lr: -0.1\n", "schedule.arm_refit_lr"),
        ("schedule:\n  arm_scratch_widths: 8\n", "schedule.arm_scratch_widths"),
        ("schedule:\n  arm_scratch_widths: [0]\n", "schedule.arm_scratch_widths"),
        ("schedule:\n  arm_scratch_widths: [33]\n", "schedule.arm_scratch_widths"),
        ("schedule:\n  arm_scratch_widths: [8.5]\n", "schedule.arm_scratch_widths"),
        ("schedule:\n  arm_scratch_steps: -1\n", "schedule.arm_scratch_steps"),
        ("schedule:\n  arm_scratch_min_share: 1.5\n", "schedule.arm_scratch_min_share"),
        ("schedule:\n  arm_scratch_min_share: -0.1\n", "schedule.arm_scratch_min_share"),
        ("schedule: 5\n", "schedule"),
        ("presets: [fast]\n", "presets"),
        ("presets:\n  fast: 300\n", "fast"),
        ("lambda_by_sigma: 3\n", "lambda_by_sigma"),
        ("lambda_by_sigma: {10: -1}\n", "lambda_by_sigma"),
        ("lambda_by_sigma: {10: 0}\n", "lambda_by_sigma"),
        ("lambda_by_sigma: {abc: 0.1}\n", "lambda_by_sigma"),
    ],
)
def test_wrong_types_and_ranges(tmp_path, text, key):
    user = write(tmp_path, text)
    with pytest.raises(LotteryError) as info:
        load_task_config("denoise", config_file=user)
    msg = str(info.value)
    assert f"'{key}'" in msg or f" {key} " in msg or key in msg
    assert str(user) in msg, "the message must say which file holds the bad value"


@pytest.mark.parametrize(
    "overrides",
    [{"steps": 0}, {"steps": 2_000_000}, {"lambda": -1.0}, {"mask_ratio": 1.5}, {"seed": -3}, {"ensemble": 100}],
)
def test_bad_override_values(overrides):
    key = next(iter(overrides))
    with pytest.raises(LotteryError, match=f"option: '{key}'"):
        load_task_config("denoise", overrides=overrides)


def test_bad_file_value_names_the_file_even_with_overrides(tmp_path):
    user = write(tmp_path, "steps: -5\n")
    with pytest.raises(LotteryError, match=f"{user}: 'steps'"):
        load_task_config("compress", config_file=user, overrides={"lambda": 0.1, "seed": None})


# -- lambda by sigma ----------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["denoise", "sr"])
def test_lambda_for_sigma_interpolates_monotonically(task):
    cfg = load_task_config(task)
    pts = sorted(cfg.lambda_by_sigma.items())
    assert len(pts) >= 2
    for s, lam in pts:  # exact at the configured points
        assert cfg.lambda_for_sigma(s) == pytest.approx(lam)
    sigmas = [pts[0][0] + i * (pts[-1][0] - pts[0][0]) / 200 for i in range(201)]
    lams = [cfg.lambda_for_sigma(s) for s in sigmas]
    assert all(b >= a - 1e-15 for a, b in zip(lams, lams[1:]))
    for (s0, l0), (s1, l1) in zip(pts, pts[1:]):
        mid = cfg.lambda_for_sigma((s0 + s1) / 2)
        assert min(l0, l1) < mid < max(l0, l1)
        assert mid == pytest.approx(math.sqrt(l0 * l1))  # log(lambda) is linear in sigma
    # clamped outside the configured range
    assert cfg.lambda_for_sigma(pts[-1][0] + 100) == pytest.approx(pts[-1][1])
    assert cfg.lambda_for_sigma(max(0.0, pts[0][0] - 10)) == pytest.approx(pts[0][1])
    assert cfg.lambda_for_sigma(None) == cfg.lam


def test_keep_observed_defaults(tmp_path):
    assert load_task_config("inpaint").keep_observed is True
    assert load_task_config("denoise").keep_observed is False
    assert load_task_config("inpaint", config_file=write(tmp_path, "keep_observed: false\n")).keep_observed is False


def test_lambda_for_sigma_without_table():
    cfg = load_task_config("inpaint")
    assert cfg.lambda_by_sigma == {}
    assert cfg.lambda_for_sigma(25.0) == cfg.lam


def test_lambda_by_sigma_from_user_file(tmp_path):
    user = write(tmp_path, "lambda_by_sigma: {10: 0.001, 30: 0.004}\n")
    cfg = load_task_config("inpaint", config_file=user)
    assert cfg.lambda_for_sigma(10) == pytest.approx(0.001)
    assert cfg.lambda_for_sigma(20) == pytest.approx(0.002)
    assert cfg.lambda_for_sigma(30) == pytest.approx(0.004)


def test_sr_lambda_scales_with_the_square_of_the_factor():
    cfg = load_task_config("sr")
    ref = cfg.lambda_reference_scale
    assert ref == 4
    base = cfg.lambda_for(5.0, int(ref))
    assert base == pytest.approx(cfg.lambda_for_sigma(5.0))
    assert cfg.lambda_for(5.0, 2) == pytest.approx(base / 4)
    assert load_task_config("denoise").lambda_for(25.0, 2) == load_task_config("denoise").lambda_for_sigma(25.0)


def test_candidates_from_presets_files_and_overrides(tmp_path):
    cfg = load_task_config("denoise", preset="fast")
    assert cfg.candidates == raw("denoise")["presets"]["fast"].get("candidates", 0)
    assert cfg.screen_fraction == pytest.approx(raw("denoise").get("screen_fraction", 0.1))
    f = write(tmp_path, "candidates: 5\nscreen_fraction: 0.2\n")
    cfg = load_task_config("denoise", config_file=f)
    assert (cfg.candidates, cfg.screen_fraction) == (5, pytest.approx(0.2))
    assert load_task_config("denoise", config_file=f, overrides={"candidates": 0}).candidates == 0
