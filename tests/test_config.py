"""Task configs: the shipped files, presets, --config merging, overrides, validation at load."""

from __future__ import annotations

import dataclasses
import math
import re
import textwrap

import pytest
import yaml

from lotterycli import config as config_module
from lotterycli.config import (
    MAX_SEED,
    PRESETS,
    RESTORATION_TASKS,
    TASKS,
    RestorationSettings,
    TaskConfig,
    load_task_config,
    task_config_text,
    with_changes,
)
from lotterycli.errors import LotteryError
from lotterycli.fitting.schedule import Schedule
from lotterycli.model.architecture import Architecture


def write(tmp_path, text: str, name: str = "user.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def raw(task: str) -> dict:
    return yaml.safe_load(task_config_text(task))


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
    assert cfg.seed == data["seed"]
    if task in RESTORATION_TASKS:
        assert isinstance(cfg.restoration, RestorationSettings)
        assert cfg.restoration.ensemble == data["presets"][cfg.preset]["ensemble"]
        assert cfg.restoration.combine in ("mean", "median")
    else:
        assert cfg.restoration is None
    assert isinstance(cfg.schedule, Schedule) and isinstance(cfg.architecture, Architecture)
    assert cfg.schedule.lr == pytest.approx(data["schedule"]["lr"])
    assert cfg.schedule.steps == cfg.steps


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
    assert (cfg.steps, cfg.lam, cfg.mask_ratio, cfg.seed, cfg.restoration.ensemble) == (12, 0.25, 0.5, 9, 2)
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
        assert (cfg.steps, cfg.restoration.ensemble) == (50, 3)
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
    assert load_task_config("compress").schedule.arm_scratch_widths == (8, 4)
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
        ("architecture: {arm_hidden: 40}\n", "'architecture.arm_hidden' = 40 is out of range [1, 32]"),
        ("architecture: {arm_hidden: 2.5}\n", "'architecture.arm_hidden' must be an integer"),
        ("architecture: {synth_hidden: [8, 8]}\n", "list of 3 widths"),
        ("architecture: {latent_gain: 0}\n", "architecture.latent_gain"),
        ("architecture: {arm_band_rows: -1}\n", "architecture.arm_band_rows"),
        ("architecture: {arm_band_rows: 20000}\n", "'architecture.arm_band_rows' = 20000 is out of range"),
        ("architecture: {upsample_kernel: 7}\n", "'architecture.upsample_kernel' = 7 must be even"),
        ("architecture: {n_levels: 9}\n", "'architecture.n_levels' = 9 is out of range"),
    ],
)
def test_bad_architecture_values(tmp_path, text, needle):
    user = write(tmp_path, text)
    with pytest.raises(LotteryError) as info:
        load_task_config("compress", config_file=user)
    assert needle in str(info.value)
    assert str(info.value).startswith(f"{user}: ")  # the file that holds the bad value


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
        ("schedule:\n  network_refinement: 1\n", "schedule.network_refinement"),
        ("schedule:\n  network_refinement: 'yes'\n", "schedule.network_refinement"),
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
    pts = sorted(cfg.restoration.lambda_by_sigma.items())
    assert len(pts) >= 2
    for s, lam in pts:  # exact at the configured points
        assert cfg.lambda_for(s, None) == pytest.approx(lam)
    sigmas = [pts[0][0] + i * (pts[-1][0] - pts[0][0]) / 200 for i in range(201)]
    lams = [cfg.lambda_for(s, None) for s in sigmas]
    assert all(b >= a - 1e-15 for a, b in zip(lams, lams[1:]))
    for (s0, l0), (s1, l1) in zip(pts, pts[1:]):
        mid = cfg.lambda_for((s0 + s1) / 2, None)
        assert min(l0, l1) < mid < max(l0, l1)
        assert mid == pytest.approx(math.sqrt(l0 * l1))  # log(lambda) is linear in sigma
    # clamped outside the configured range
    assert cfg.lambda_for(pts[-1][0] + 100, None) == pytest.approx(pts[-1][1])
    assert cfg.lambda_for(max(0.0, pts[0][0] - 10), None) == pytest.approx(pts[0][1])
    assert cfg.lambda_for(None, None) == cfg.lam


def test_keep_observed_defaults(tmp_path):
    assert load_task_config("inpaint").restoration.keep_observed is True
    assert load_task_config("denoise").restoration.keep_observed is False
    assert load_task_config("inpaint", config_file=write(tmp_path, "keep_observed: false\n")).restoration.keep_observed is False


def test_lambda_for_sigma_without_table():
    cfg = load_task_config("inpaint")
    assert cfg.restoration.lambda_by_sigma == {}
    assert cfg.lambda_for(25.0, None) == cfg.lam


def test_lambda_by_sigma_from_user_file(tmp_path):
    user = write(tmp_path, "lambda_by_sigma: {10: 0.001, 30: 0.004}\n")
    cfg = load_task_config("inpaint", config_file=user)
    assert cfg.lambda_for(10, None) == pytest.approx(0.001)
    assert cfg.lambda_for(20, None) == pytest.approx(0.002)
    assert cfg.lambda_for(30, None) == pytest.approx(0.004)


def test_sr_lambda_scales_with_the_square_of_the_factor():
    cfg = load_task_config("sr")
    ref = cfg.restoration.lambda_reference_scale
    assert ref == 4
    base = cfg.lambda_for(5.0, int(ref))
    assert base == pytest.approx(cfg.lambda_for(5.0, None))
    assert cfg.lambda_for(5.0, 2) == pytest.approx(base / 4)
    assert load_task_config("denoise").lambda_for(25.0, 2) == load_task_config("denoise").lambda_for(25.0, None)


def test_candidates_from_presets_files_and_overrides(tmp_path):
    cfg = load_task_config("denoise", preset="fast")
    assert cfg.restoration.candidates == raw("denoise")["presets"]["fast"]["candidates"]
    assert cfg.restoration.screen_fraction == pytest.approx(raw("denoise")["screen_fraction"])
    f = write(tmp_path, "candidates: 5\nscreen_fraction: 0.2\n")
    cfg = load_task_config("denoise", config_file=f)
    assert (cfg.restoration.candidates, cfg.restoration.screen_fraction) == (5, pytest.approx(0.2))
    assert load_task_config("denoise", config_file=f, overrides={"candidates": 0}).restoration.candidates == 0


# -- the shipped files are complete: no silent defaults ----------------------------------------
@pytest.mark.parametrize("cls", [Schedule, Architecture, TaskConfig, RestorationSettings])
def test_config_dataclasses_have_no_defaults(cls):
    """Every default lives in configs/<task>.yaml; a field with a default of its own would be a
    second place (and silently used where a file forgets the key)."""
    for f in dataclasses.fields(cls):
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f.name
    with pytest.raises(TypeError):
        cls()


@pytest.mark.parametrize("task", TASKS)
def test_every_shipped_config_sets_every_field(task):
    """Each task file sets every Schedule and Architecture field and every restoration setting,
    each preset sets the step budget (and, for restoration, ensemble and candidates), and every
    task/preset pair loads to exactly the file's values."""
    data = raw(task)
    schedule_fields = {f.name for f in dataclasses.fields(Schedule)}
    arch_fields = {f.name for f in dataclasses.fields(Architecture)}
    assert set(data["schedule"]) == schedule_fields - {"steps"}  # steps come from the presets
    assert set(data["architecture"]) == arch_fields
    assert data["task"] == task and data["preset"] in PRESETS
    assert set(data["presets"]) == set(PRESETS)
    for key in ("lambda", "mask_ratio", "seed"):
        assert key in data, key
    restoration_fields = {f.name for f in dataclasses.fields(RestorationSettings)}
    for preset in PRESETS:
        entry = data["presets"][preset]
        assert "steps" in entry
        if task in RESTORATION_TASKS:
            assert {"ensemble", "candidates"} <= set(entry)
            assert restoration_fields <= set(data) | set(entry), restoration_fields - set(data) - set(entry)
        cfg = load_task_config(task, preset=preset)
        assert cfg.preset == preset and cfg.steps == entry["steps"]
        for name in schedule_fields - {"steps"}:
            value = data["schedule"][name]
            assert getattr(cfg.schedule, name) == (tuple(value) if isinstance(value, list) else value), name
        for name in arch_fields:
            value = data["architecture"][name]
            assert getattr(cfg.architecture, name) == (tuple(value) if isinstance(value, list) else value), name
        if task in RESTORATION_TASKS:
            for name in restoration_fields:
                assert getattr(cfg.restoration, name) == entry.get(name, data.get(name)), name
        else:
            assert cfg.restoration is None


def _task_text(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def _shipped_keys(task: str) -> list[tuple[str, ...]]:
    """Every value the task file must set, as key paths (the preset name and `task` are optional)."""
    data = raw(task)
    paths = [(k,) for k in data if k not in ("task", "preset", "presets", "schedule", "architecture")]
    paths += [(section, k) for section in ("schedule", "architecture") for k in data[section]]
    paths += [("presets", p, k) for p in data["presets"] for k in data["presets"][p]]
    return paths


@pytest.mark.parametrize("task", TASKS)
def test_a_task_file_missing_any_key_is_reported(task, monkeypatch):
    """Remove each key in turn from the shipped file: the load names the file and the key."""
    shipped = load_task_config(task)
    paths = _shipped_keys(task)
    assert len(paths) > 30
    for path in paths:
        data = raw(task)
        where = data
        for part in path[:-1]:
            where = where[part]
        del where[path[-1]]
        monkeypatch.setattr(config_module, "task_config_text", lambda t, text=_task_text(data): text)
        preset = path[1] if path[0] == "presets" else None
        key = path[-1] if path[0] == "presets" else ".".join(path)
        with pytest.raises(LotteryError) as info:
            load_task_config(task, preset=preset)
        assert str(info.value) == f"configs/{task}.yaml: missing config key '{key}'", path
    # and the whole file, dumped the same way, loads as the shipped one
    monkeypatch.setattr(config_module, "task_config_text", lambda t: _task_text(raw(task)))
    assert load_task_config(task) == shipped


def test_a_missing_key_may_come_from_the_users_file(tmp_path, monkeypatch):
    data = raw("compress")
    del data["schedule"]["grad_clip"]
    monkeypatch.setattr(config_module, "task_config_text", lambda t: _task_text(data))
    with pytest.raises(LotteryError, match=r"configs/compress.yaml: missing config key 'schedule.grad_clip'"):
        load_task_config("compress")
    user = write(tmp_path, "schedule:\n  grad_clip: 3.0\n")
    assert load_task_config("compress", config_file=user).schedule.grad_clip == 3.0


@pytest.mark.parametrize(
    "text, key, why",
    [
        ("schedule:\n  lr: 1e300\n", "schedule.lr", "out of range"),  # an exponent without a dot is a number too
        ("schedule:\n  lr: 1.0e+300\n", "schedule.lr", "out of range"),
        ("schedule:\n  lr: .nan\n", "schedule.lr", "out of range"),
        ("schedule:\n  lr: .inf\n", "schedule.lr", "out of range"),
        ("lambda: .nan\n", "lambda", "out of range"),
        ("lambda: -.inf\n", "lambda", "out of range"),
        ("schedule:\n  lr: '0.01'\n", "schedule.lr", "must be a number"),
        ("schedule:\n  grad_clip: ten\n", "schedule.grad_clip", "must be a number"),
        ("mask_ratio: a lot\n", "mask_ratio", "must be a number"),
        ("schedule:\n  temperature: [0.3, 'x']\n", "schedule.temperature", "must be a number"),
        ("architecture:\n  latent_gain: 0.1\n", "architecture.latent_gain", "not exactly representable as a 32-bit float"),
        ("architecture:\n  latent_gain: 1000\n", "architecture.latent_gain", "out of range"),
        ("architecture:\n  latent_gain: '16'\n", "architecture.latent_gain", "must be a number"),
        ("architecture:\n  latent_gain: .nan\n", "architecture.latent_gain", "out of range"),
        ("architecture:\n  n_levels: 7.0\n", "architecture.n_levels", "must be an integer"),
    ],
)
def test_bad_values_are_refused_naming_the_key_and_the_file(tmp_path, text, key, why):
    user = write(tmp_path, text)
    with pytest.raises(LotteryError) as info:
        load_task_config("compress", config_file=user)
    msg = str(info.value)
    assert msg.startswith(f"{user}: '{key}' "), msg
    assert why in msg


def test_float32_exact_latent_gains_are_accepted(tmp_path):
    for gain, expected in (("0.125", 0.125), ("16", 16.0), ("256.0", 256.0), ("0.1000000014901161193847656250", 0.10000000149011612)):
        user = write(tmp_path, f"architecture:\n  latent_gain: {gain}\n")
        arch = load_task_config("compress", config_file=user).architecture
        assert arch.latent_gain == expected and isinstance(arch.latent_gain, float)


def test_a_bad_value_in_the_task_file_names_the_task_file(monkeypatch):
    data = raw("denoise")
    data["schedule"]["lr"] = float("nan")
    monkeypatch.setattr(config_module, "task_config_text", lambda t: _task_text(data))
    with pytest.raises(LotteryError, match=r"^configs/denoise.yaml: 'schedule.lr' "):
        load_task_config("denoise")


def test_a_bad_value_in_the_users_preset_entry_names_the_users_file(tmp_path):
    user = write(tmp_path, "presets:\n  fast: {steps: 0, lambda: .nan}\n")
    with pytest.raises(LotteryError, match=rf"^{user}: 'steps' "):
        load_task_config("compress", preset="fast", config_file=user)
    # the other presets do not read that entry
    assert load_task_config("compress", preset="best", config_file=user).steps == raw("compress")["presets"]["best"]["steps"]


@pytest.mark.parametrize("text", ["preset: [fast]\n", "preset: {fast: 1}\n", "preset: 3\n"])
def test_a_preset_that_is_not_a_name_is_refused(tmp_path, text):
    with pytest.raises(LotteryError, match="unknown preset"):
        load_task_config("compress", config_file=write(tmp_path, text))


# -- seeds are exact integers -------------------------------------------------------------------
@pytest.mark.parametrize("task", ["compress", "denoise"])
def test_seeds_are_kept_exactly(tmp_path, task):
    big = 9007199254740993  # 2**53 + 1: a float would make it 2**53
    cfg = load_task_config(task, overrides={"seed": big})
    assert cfg.seed == big and type(cfg.seed) is int
    cfg = load_task_config(task, config_file=write(tmp_path, f"seed: {big}\n"))
    assert cfg.seed == big and type(cfg.seed) is int


def test_the_largest_seed_is_two_to_the_64_minus_one(tmp_path):
    assert MAX_SEED == 2**64 - 1 == 18446744073709551615
    assert load_task_config("compress", overrides={"seed": 2**64 - 1}).seed == 2**64 - 1
    assert load_task_config("compress", config_file=write(tmp_path, f"seed: {2**64 - 1}\n")).seed == 2**64 - 1
    assert load_task_config("denoise", preset="fast", overrides={"seed": 2**64 - 1}).seed == 2**64 - 1  # one member
    with pytest.raises(LotteryError) as info:
        load_task_config("compress", overrides={"seed": 2**64})
    assert str(info.value) == "option: 'seed' = 18446744073709551616 is out of range [0, 18446744073709551615]"
    user = write(tmp_path, f"seed: {2**64}\n")
    with pytest.raises(LotteryError) as info:
        load_task_config("compress", config_file=user)
    assert str(info.value).startswith(f"{user}: 'seed' ") and "18446744073709551615]" in str(info.value)


@pytest.mark.parametrize("text", ["seed: 2.0\n", "seed: 1.0e+3\n", "seed: '5'\n", "seed: true\n", "seed: null\n"])
def test_a_seed_must_be_an_integer(tmp_path, text):
    user = write(tmp_path, text)
    with pytest.raises(LotteryError, match=rf"^{user}: 'seed' must be an integer"):
        load_task_config("compress", config_file=user)


@pytest.mark.parametrize(
    "task, preset, members", [("denoise", "balanced", 4), ("sr", "best", 6), ("inpaint", "balanced", 6)]
)
def test_a_restoration_seed_leaves_room_for_every_members_seed(task, preset, members):
    """Member (or candidate) k uses seed + k, and each must fit a .lottery header's 64 bits."""
    last = 2**64 - members  # seeds last .. 2**64 - 1
    cfg = load_task_config(task, preset=preset, overrides={"seed": last})
    assert cfg.seed == last and max(cfg.restoration.ensemble, cfg.restoration.candidates) == members
    with pytest.raises(LotteryError) as info:
        load_task_config(task, preset=preset, overrides={"seed": last + 1})
    msg = str(info.value)
    assert msg.startswith("option: 'seed' ") and "leaves no room" in msg and "18446744073709551615" in msg
    # the candidates count: more members need more room
    with pytest.raises(LotteryError, match="leaves no room"):
        load_task_config(task, preset=preset, overrides={"seed": last, "candidates": members + 1})


# -- another task's file, bools -----------------------------------------------------------------
def test_a_config_for_another_task_is_refused(tmp_path):
    user = write(tmp_path, "task: sr\n")
    with pytest.raises(LotteryError) as info:
        load_task_config("compress", config_file=user)
    assert str(info.value) == f"{user}: this config is for task 'sr', not 'compress'"
    # a whole copy of another task's file says so too (not just that one of its keys is unknown here)
    other = tmp_path / "sr.yaml"
    other.write_text(task_config_text("sr"))
    with pytest.raises(LotteryError, match=rf"^{other}: this config is for task 'sr', not 'compress'$"):
        load_task_config("compress", config_file=other)
    with pytest.raises(LotteryError, match=rf"^{other}: this config is for task 'sr', not 'denoise'$"):
        load_task_config("denoise", config_file=other)
    # its own task's name is fine, and so is a full copy of the task's file
    assert load_task_config("compress", config_file=write(tmp_path, "task: compress\n")).task == "compress"
    own = tmp_path / "compress.yaml"
    own.write_text(task_config_text("compress"))
    assert load_task_config("compress", config_file=own) == load_task_config("compress")


@pytest.mark.parametrize(
    "text, key",
    [
        ("keep_observed: 1\n", "keep_observed"),
        ("keep_observed: 0\n", "keep_observed"),
        ("keep_observed: 'true'\n", "keep_observed"),
        ("keep_observed: null\n", "keep_observed"),
        ("member_transforms: 1\n", "member_transforms"),
        ("member_transforms: []\n", "member_transforms"),
    ],
)
def test_bools_must_be_bools(tmp_path, text, key):
    user = write(tmp_path, text)
    with pytest.raises(LotteryError, match=rf"^{user}: '{key}' must be true or false"):
        load_task_config("inpaint", config_file=user)


@pytest.mark.parametrize(
    "text, key",
    [
        ("lambda: true\n", "lambda"),
        ("mask_ratio: false\n", "mask_ratio"),
        ("ensemble: true\n", "ensemble"),
        ("schedule:\n  lr: true\n", "schedule.lr"),
        ("schedule:\n  eval_every: true\n", "schedule.eval_every"),
        ("schedule:\n  arm_scratch_widths: [true]\n", "schedule.arm_scratch_widths"),
        ("architecture:\n  n_levels: true\n", "architecture.n_levels"),
        ("architecture:\n  latent_gain: true\n", "architecture.latent_gain"),
    ],
)
def test_bools_are_not_numbers(tmp_path, text, key):
    user = write(tmp_path, text)
    with pytest.raises(LotteryError, match=rf"^{user}: '{key}' must be an? (integer|number)"):
        load_task_config("denoise", config_file=user)


def test_bools_load_as_bools(tmp_path):
    cfg = load_task_config("inpaint", config_file=write(tmp_path, "keep_observed: false\nmember_transforms: false\n"))
    assert cfg.restoration.keep_observed is False and cfg.restoration.member_transforms is False


# -- TaskConfig ----------------------------------------------------------------------------------
def test_task_config_is_frozen_and_with_changes_returns_a_copy():
    cfg = load_task_config("compress", preset="fast")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lam = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.schedule.lr = 1.0
    changed = with_changes(cfg, steps=7, lr=0.5)
    assert (changed.steps, changed.schedule.lr) == (7, 0.5)
    assert (cfg.steps, cfg.schedule.lr) == (raw("compress")["presets"]["fast"]["steps"], raw("compress")["schedule"]["lr"])
    assert dataclasses.replace(changed, schedule=cfg.schedule) == cfg
    assert cfg.lambda_for(25.0, 4) == cfg.lam  # compression: no table, no scale


def test_numbers_with_an_exponent_and_no_dot_are_numbers(tmp_path):
    """`lambda: 2e-3` as users write it (PyYAML alone would read a string there)."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lambda: 2e-3\nschedule:\n  lr: 1E-2\n  grad_clip: 1e1\n")
    cfg = load_task_config("compress", config_file=cfg_file)
    assert cfg.lam == 0.002 and cfg.schedule.lr == 0.01 and cfg.schedule.grad_clip == 10.0


def test_compress_screens_mask_ratios_unless_one_is_asked_for(tmp_path):
    """`mask_ratio_candidates` are screened beside `mask_ratio` at lambda >= `screen_min_lambda`;
    a ratio the user sets (--mask-ratio, or in their file without candidates of their own) is kept;
    a candidate equal to the ratio, or given twice, is screened once."""
    cfg = load_task_config("compress", overrides={"lambda": 0.016})
    assert cfg.compression.mask_ratio_candidates == (0.0, 0.1) and cfg.compression.screen_fraction == 0.1
    # below the threshold (high rates) the shipped ratio is kept; a user's threshold of 0 screens always
    threshold = cfg.compression.screen_min_lambda
    assert 0.001 < threshold <= 0.016
    assert load_task_config("compress", overrides={"lambda": threshold}).compression.mask_ratio_candidates == (0.0, 0.1)
    assert load_task_config("compress", overrides={"lambda": threshold * 0.99}).compression.mask_ratio_candidates == ()
    always = write(tmp_path, "screen_min_lambda: 0\nlambda: 0.0001\n")
    assert load_task_config("compress", config_file=always).compression.mask_ratio_candidates == (0.0, 0.1)
    assert load_task_config("denoise").compression is None
    assert load_task_config("compress", overrides={"mask_ratio": 0.3}).compression.mask_ratio_candidates == ()
    user = write(tmp_path, "mask_ratio: 0.2\nmask_ratio_candidates: [0.2, 0.5, 0.5, 0.0]\nlambda: 0.016\n")
    assert load_task_config("compress", config_file=user).compression.mask_ratio_candidates == (0.5, 0.0)
    user = write(tmp_path, "mask_ratio_candidates: []\nlambda: 0.016\n")
    assert load_task_config("compress", config_file=user).compression.mask_ratio_candidates == ()
    user = write(tmp_path, "mask_ratio: 0.4\nlambda: 0.016\n")  # the user's own ratio, no candidates of theirs: kept
    assert load_task_config("compress", config_file=user).compression.mask_ratio_candidates == ()
    user = write(tmp_path, "steps: 5\nlambda: 0.016\n")  # the shipped ratio and candidates
    assert load_task_config("compress", config_file=user).compression.mask_ratio_candidates == (0.0, 0.1)


@pytest.mark.parametrize(
    "text, key",
    [
        ("mask_ratio_candidates: 0.0\n", "mask_ratio_candidates"),
        ("mask_ratio_candidates: [1.0]\n", "mask_ratio_candidates"),
        ("mask_ratio_candidates: [nan]\n", "mask_ratio_candidates"),
        ("screen_fraction: 0\n", "screen_fraction"),
        ("screen_fraction: 1.5\n", "screen_fraction"),
        ("screen_min_lambda: -1\n", "screen_min_lambda"),
        ("screen_min_lambda: [0.1]\n", "screen_min_lambda"),
    ],
)
def test_bad_screening_values_are_refused_naming_key_and_file(tmp_path, text, key):
    user = write(tmp_path, text)
    with pytest.raises(LotteryError, match=rf"^{re.escape(str(user))}: .*'{key}'"):
        load_task_config("compress", config_file=user)


def test_restoration_configs_know_no_compression_keys(tmp_path):
    user = write(tmp_path, "mask_ratio_candidates: [0.0]\n")
    with pytest.raises(LotteryError, match="unknown config key 'mask_ratio_candidates'"):
        load_task_config("denoise", config_file=user)
