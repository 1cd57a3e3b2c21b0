"""YAML task configs and presets -> a validated `TaskConfig`.

Each task (compress, denoise, sr, inpaint) has a YAML file in `configs/`. A user file given with
`--config` is merged over it key by key, then command-line overrides win. Unknown keys and wrong
types are refused with one clear message naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import LotteryError
from .codec.architecture import MAX_ARM_HIDDEN, Architecture
from .fit import Schedule

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
TASKS = ("compress", "denoise", "sr", "inpaint")
PRESETS = ("fast", "balanced", "best")

_TOP_KEYS = {
    "task", "preset", "lambda", "lambda_by_sigma", "mask_ratio", "seed", "ensemble", "combine", "steps",
    "schedule", "presets", "architecture", "lambda_reference_scale", "keep_observed", "candidates",
    "screen_fraction", "warm_start", "member_transforms",
    "classical_blend",
}
_ARCH_KEYS = {f.name for f in fields(Architecture)}
_PRESET_KEYS = {"steps", "ensemble", "lambda", "mask_ratio", "candidates"}
_SCHEDULE_KEYS = {f.name for f in fields(Schedule) if f.name != "steps"}


@dataclass
class TaskConfig:
    task: str
    preset: str
    steps: int
    lam: float
    mask_ratio: float
    seed: int = 0
    ensemble: int = 1
    combine: str = "mean"
    keep_observed: bool = False  # put exactly observed pixels back into the result (inpainting)
    candidates: int = 0  # restoration: members started; the `ensemble` best after screening go on
    screen_fraction: float = 0.1  # ... ranked by their loss after this fraction of the steps
    warm_start: float = 0.0  # fraction of the steps guided toward the operator's classical estimate (inpainting)
    member_transforms: bool = False  # restoration: candidate k fits in flipped/transposed frame k mod 8
    classical_blend: float = 0.0  # weight of the operator's classical estimate in the result (inpainting)
    lambda_by_sigma: dict[float, float] = field(default_factory=dict)
    lambda_reference_scale: float | None = None  # sr: lambda_by_sigma holds the values for this scale
    schedule: Schedule = field(default_factory=Schedule)
    architecture: Architecture = field(default_factory=Architecture)

    def lambda_for_sigma(self, sigma_255: float | None) -> float:
        """Lambda for a noise level (0-255 scale): log(lambda) interpolated linearly in sigma."""
        if not self.lambda_by_sigma or sigma_255 is None:
            return self.lam
        pts = sorted(self.lambda_by_sigma.items())
        s = sigma_255
        if s <= pts[0][0]:
            return pts[0][1]
        if s >= pts[-1][0]:
            return pts[-1][1]
        for (s0, l0), (s1, l1) in zip(pts, pts[1:]):
            if s0 <= s <= s1:
                t = (s - s0) / (s1 - s0) if s1 > s0 else 0.0
                return math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0)))
        return self.lam

    def lambda_for(self, sigma_255: float | None, scale: int | None = None) -> float:
        """Lambda for a noise level and, for super-resolution, a scale factor.

        Why the scale: the data term of x`s` super-resolution averages over 1/s^2 as many values as
        there are output pixels, while the rate is counted per output pixel, so the balance between
        the two (the description-length optimum, 2 sigma^2 ln2 s^2 / 3) grows like s^2.
        """
        lam = self.lambda_for_sigma(sigma_255)
        if scale and self.lambda_reference_scale:
            lam *= (scale / self.lambda_reference_scale) ** 2
        return lam

    def fitted_schedule(self) -> Schedule:
        return replace(self.schedule, steps=self.steps)


def _load_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise LotteryError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise LotteryError(f"{path}: a config must be UTF-8 text (YAML)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LotteryError(f"{path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LotteryError(f"{path}: a config must be a mapping of keys to values")
    return data


def _check_keys(d: dict, allowed: set[str], where: str, source: str) -> None:
    for key in d:
        if key not in allowed:
            raise LotteryError(f"{source}: unknown config key '{where}{key}' (allowed: {', '.join(sorted(allowed))})")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _number(value: Any, key: str, source: str, *, integer: bool = False, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise LotteryError(f"{source}: '{key}' must be {kind}, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an integer too large for a float
        v = math.inf
    if integer and math.isfinite(v) and not v.is_integer():
        raise LotteryError(f"{source}: '{key}' must be an integer, got {value!r}")
    if not math.isfinite(v) or (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
        rng = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise LotteryError(f"{source}: '{key}' = {value!r} is out of range {rng}")
    return int(v) if integer else v


def load_task_config(task: str, *, preset: str | None = None, config_file: str | Path | None = None, overrides: dict | None = None) -> TaskConfig:
    """The effective config for `task`: configs/<task>.yaml, then --config FILE, then overrides.

    `overrides` uses the top-level key names (steps, lambda, mask_ratio, seed, ensemble); None
    values are ignored.
    """
    if task not in TASKS:
        raise LotteryError(f"unknown task '{task}' (choose from {', '.join(TASKS)})")
    base_path = CONFIG_DIR / f"{task}.yaml"
    data = _load_yaml(base_path)
    source = str(base_path)
    user: dict = {}
    if config_file is not None:
        user = _load_yaml(Path(config_file))
        source = str(config_file)
        _validate_shape(user, source)
        data = _merge(data, user)
    _validate_shape(data, source)

    preset = preset or data.get("preset", "balanced")
    presets = data.get("presets", {})
    if preset not in presets:
        raise LotteryError(f"unknown preset '{preset}' (choose from {', '.join(presets) or ', '.join(PRESETS)})")
    merged = {k: v for k, v in data.items() if k not in ("presets", "preset")}
    merged = _merge(merged, presets[preset] or {})
    # The user's file beats the task file's preset values: its top-level steps/ensemble/lambda/
    # mask_ratio, then its own entry for the chosen preset (otherwise `steps: 50` in a --config
    # file would be silently ignored, since every preset sets steps).
    merged.update({k: user[k] for k in _PRESET_KEYS if k in user})
    merged = _merge(merged, (user.get("presets") or {}).get(preset) or {})
    overridden = set()
    for k, v in (overrides or {}).items():
        if v is not None:
            merged[k] = v
            overridden.add(k)

    def src(key: str) -> str:  # name where a bad value came from: an option, or the config file
        return "option" if key in overridden else source

    schedule_d = dict(merged.get("schedule") or {})
    sched_kwargs: dict[str, Any] = {}
    for k, v in schedule_d.items():
        if k in ("temperature", "noise"):
            if not (isinstance(v, (list, tuple)) and len(v) == 2):
                raise LotteryError(f"{source}: 'schedule.{k}' must be a pair [start, end]")
            sched_kwargs[k] = tuple(_number(x, f"schedule.{k}", source, lo=0, lo_open=True) for x in v)
        elif k in ("eval_every", "average_every"):
            sched_kwargs[k] = _number(v, f"schedule.{k}", source, integer=True, lo=1)
        elif k in ("arm_refit_steps", "arm_scratch_steps"):
            sched_kwargs[k] = _number(v, f"schedule.{k}", source, integer=True, lo=0, hi=100_000)
        elif k == "arm_scratch_widths":
            if not isinstance(v, (list, tuple)):
                raise LotteryError(f"{source}: 'schedule.{k}' must be a list of ARM widths, e.g. [8]")
            sched_kwargs[k] = tuple(_number(x, f"schedule.{k}", source, integer=True, lo=1, hi=MAX_ARM_HIDDEN) for x in v)
        elif k == "pixel_fraction":
            sched_kwargs[k] = _number(v, f"schedule.{k}", source, lo=0, lo_open=True, hi=1)
        else:
            sched_kwargs[k] = _number(v, f"schedule.{k}", source, lo=0)
    for frac in ("hard_fraction", "average_fraction", "lr_floor", "arm_scratch_min_share"):
        if frac in sched_kwargs and sched_kwargs[frac] > 1:
            raise LotteryError(f"{source}: 'schedule.{frac}' must be between 0 and 1")

    lbs = merged.get("lambda_by_sigma") or {}
    if not isinstance(lbs, dict):
        raise LotteryError(f"{source}: 'lambda_by_sigma' must map noise levels to lambdas")
    lambda_by_sigma = {
        _number(s, "lambda_by_sigma", source, lo=0): _number(l, "lambda_by_sigma", source, lo=0, lo_open=True)
        for s, l in lbs.items()
    }
    combine = merged.get("combine", "mean")
    if combine not in ("mean", "median"):
        raise LotteryError(f"{source}: 'combine' must be 'mean' or 'median', got {combine!r}")
    keep_observed = merged.get("keep_observed", False)
    if not isinstance(keep_observed, bool):
        raise LotteryError(f"{source}: 'keep_observed' must be true or false, got {keep_observed!r}")
    member_transforms = merged.get("member_transforms", False)
    if not isinstance(member_transforms, bool):
        raise LotteryError(f"{source}: 'member_transforms' must be true or false, got {member_transforms!r}")
    if "lambda" not in merged:
        raise LotteryError(f"{source}: missing config key 'lambda'")
    return TaskConfig(
        task=task,
        preset=preset,
        steps=_number(merged.get("steps", 1000), "steps", src("steps"), integer=True, lo=1, hi=1_000_000),
        lam=_number(merged["lambda"], "lambda", src("lambda"), lo=0, hi=10),
        mask_ratio=_number(merged.get("mask_ratio", 0.3), "mask_ratio", src("mask_ratio"), lo=0, hi=0.99),
        seed=_number(merged.get("seed", 0), "seed", src("seed"), integer=True, lo=0, hi=2**63 - 1),
        ensemble=_number(merged.get("ensemble", 1), "ensemble", src("ensemble"), integer=True, lo=1, hi=64),
        combine=combine,
        keep_observed=keep_observed,
        member_transforms=member_transforms,
        candidates=_number(merged.get("candidates", 0), "candidates", src("candidates"), integer=True, lo=0, hi=64),
        screen_fraction=_number(merged.get("screen_fraction", 0.1), "screen_fraction", src("screen_fraction"),
                                lo=0, hi=1, lo_open=True),
        warm_start=_number(merged.get("warm_start", 0.0), "warm_start", source, lo=0, hi=1),
        classical_blend=_number(merged.get("classical_blend", 0.0), "classical_blend", source, lo=0, hi=1),
        lambda_by_sigma=lambda_by_sigma,
        lambda_reference_scale=(
            _number(merged["lambda_reference_scale"], "lambda_reference_scale", source, lo=1, hi=16)
            if merged.get("lambda_reference_scale") is not None else None
        ),
        schedule=Schedule(**sched_kwargs),
        architecture=_architecture(merged.get("architecture") or {}, source),
    )


def _architecture(d: dict, source: str) -> Architecture:
    """The `architecture:` mapping (any subset of Architecture's fields) -> a checked Architecture."""
    from .bitstream.container import check_architecture

    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        key = f"architecture.{k}"
        if k == "synth_hidden":
            if not (isinstance(v, (list, tuple)) and len(v) == 3):
                raise LotteryError(f"{source}: '{key}' must be a list of 3 widths")
            kwargs[k] = tuple(_number(x, key, source, integer=True, lo=1) for x in v)
        elif k == "latent_gain":
            kwargs[k] = _number(v, key, source, lo=0, lo_open=True)
        else:  # sizes; a band height of 0 means "no bands"
            kwargs[k] = _number(v, key, source, integer=True, lo=0 if k == "arm_band_rows" else 1)
    arch = Architecture(**kwargs)
    try:
        check_architecture(arch)
    except LotteryError as exc:
        raise LotteryError(f"{source}: {exc}") from None
    return arch


def _validate_shape(d: dict, source: str) -> None:
    _check_keys(d, _TOP_KEYS, "", source)
    sched = d.get("schedule")
    if sched is not None:
        if not isinstance(sched, dict):
            raise LotteryError(f"{source}: 'schedule' must be a mapping")
        _check_keys(sched, _SCHEDULE_KEYS, "schedule.", source)
    arch = d.get("architecture")
    if arch is not None:
        if not isinstance(arch, dict):
            raise LotteryError(f"{source}: 'architecture' must be a mapping")
        _check_keys(arch, _ARCH_KEYS, "architecture.", source)
    presets = d.get("presets")
    if presets is not None:
        if not isinstance(presets, dict):
            raise LotteryError(f"{source}: 'presets' must be a mapping")
        for name, p in presets.items():
            if p is not None and not isinstance(p, dict):
                raise LotteryError(f"{source}: preset '{name}' must be a mapping")
            _check_keys(p or {}, _PRESET_KEYS, f"presets.{name}.", source)
