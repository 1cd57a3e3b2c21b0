"""YAML task configs and presets -> a validated `TaskConfig`.

Each task (compress, denoise, sr, inpaint) has a YAML file in `configs/` (shipped inside the
package as `lotterycli.configs`). It sets every value the task uses: the dataclasses have no
defaults of their own, so each default lives in exactly one place. A user file given with
`--config` is merged over it key by key, then the chosen preset's values, then command-line
options. Every value is checked for type, finiteness and range when the config is loaded, and a
bad one is refused with one line naming the key and where it came from, before any work starts.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import LotteryError
from .fitting.schedule import Schedule
from .model.architecture import MAX_ARM_HIDDEN, Architecture, check_architecture

TASKS = ("compress", "denoise", "sr", "inpaint")
RESTORATION_TASKS = ("denoise", "sr", "inpaint")
PRESETS = ("fast", "balanced", "best")
MAX_SEED = (1 << 64) - 1  # what a .lottery header stores
MAX_MEMBERS = 64


@dataclass(frozen=True)
class RestorationSettings:
    """How a restoration ensemble is built and combined."""

    ensemble: int  # members K whose results are combined
    candidates: int  # members started (0: K); the K best after screening go on
    screen_fraction: float  # ... ranked by their training loss after this fraction of the steps
    combine: str  # "mean" or "median" of the members
    keep_observed: bool  # put exactly observed pixels back into the result (noiseless inpainting)
    member_transforms: bool  # candidate k fits the image in frame k mod 8 (flips, transposes)
    classical_blend: float  # weight of the operator's classical estimate in the result
    member_batch: str  # "auto" (on a GPU), "always" or "never": members fitted as one batched model
    lambda_by_sigma: dict[float, float]  # lambda at noise levels (0-255 scale), interpolated in log
    lambda_reference_scale: float | None  # sr: lambda_by_sigma holds the values for this factor


@dataclass(frozen=True)
class CompressionSettings:
    """Per-image choices of the compression encoder."""

    mask_ratio_candidates: tuple[float, ...]  # other mask ratios screened beside mask_ratio (0: no mask)
    screen_fraction: float  # ... each fitted for this fraction of the steps; the cheapest goes on
    screen_min_lambda: float  # ... only at lambda >= this: below it, mask_ratio is kept (candidates empty)
    member_batch: str  # "auto" (on a GPU), "always" or "never": images of one size fitted as one batched model


@dataclass(frozen=True)
class TaskConfig:
    task: str
    preset: str
    lam: float  # rate weight
    mask_ratio: float  # fraction of the random synthesis weights removed
    seed: int  # seed of the random synthesis network (restoration: of the first member)
    schedule: Schedule
    architecture: Architecture
    restoration: RestorationSettings | None  # None for compression
    compression: CompressionSettings | None  # None for restoration

    @property
    def steps(self) -> int:
        return self.schedule.steps

    def lambda_for(self, sigma_255: float | None, scale: int | None = None) -> float:
        """Lambda for a noise level (0-255 scale) and, for super-resolution, a scale factor.

        Between the table's noise levels log(lambda) is interpolated linearly in sigma. Why the
        scale: the data term of x`s` super-resolution averages over 1/s^2 as many values as there
        are output pixels, while the rate is counted per output pixel, so the balance between the
        two (the description-length optimum, 2 sigma^2 ln2 s^2 / 3) grows like s^2.
        """
        r = self.restoration
        if r is None or not r.lambda_by_sigma or sigma_255 is None:
            lam = self.lam
        else:
            pts = sorted(r.lambda_by_sigma.items())
            s = sigma_255
            if s <= pts[0][0]:
                lam = pts[0][1]
            elif s >= pts[-1][0]:
                lam = pts[-1][1]
            else:
                (s0, l0), (s1, l1) = next((a, b) for a, b in zip(pts, pts[1:]) if a[0] <= s <= b[0])
                t = (s - s0) / (s1 - s0) if s1 > s0 else 0.0
                lam = math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0)))
        if r is not None and scale and r.lambda_reference_scale:
            lam *= (scale / r.lambda_reference_scale) ** 2
        return lam


# -- value checks ---------------------------------------------------------------------------------
Check = Callable[[Any, str, str], Any]  # (value, key, source) -> checked value


def _fail(source: str, key: str, message: str) -> LotteryError:
    return LotteryError(f"{source}: '{key}' {message}")


def integer(lo: int, hi: int) -> Check:
    """An integer in [lo, hi], compared exactly (never through a float)."""

    def check(value: Any, key: str, source: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, key, f"must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise _fail(source, key, f"= {value} is out of range [{lo}, {hi}]")
        return int(value)

    return check


def number(lo: float, hi: float, lo_open: bool = False) -> Check:
    """A finite number in [lo, hi] (or (lo, hi] with lo_open)."""

    def check(value: Any, key: str, source: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(source, key, f"must be a number, got {value!r}")
        try:
            v = float(value)
        except OverflowError:
            v = math.inf
        if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi:
            raise _fail(source, key, f"= {value!r} is out of range {'(' if lo_open else '['}{lo:g}, {hi:g}]")
        return v

    return check


def boolean(value: Any, key: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(source, key, f"must be true or false, got {value!r}")
    return value


def pair(item: Check) -> Check:
    def check(value: Any, key: str, source: str) -> tuple:
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise _fail(source, key, f"must be a pair [start, end], got {value!r}")
        return tuple(item(v, key, source) for v in value)

    return check


def list_of(item: Check) -> Check:
    def check(value: Any, key: str, source: str) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(source, key, f"must be a list, got {value!r}")
        return tuple(item(v, key, source) for v in value)

    return check


def choice(*options: str) -> Check:
    def check(value: Any, key: str, source: str) -> str:
        if value not in options:
            raise _fail(source, key, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    return check


def sigma_table(value: Any, key: str, source: str) -> dict[float, float]:
    if not isinstance(value, dict):
        raise _fail(source, key, "must map noise levels (0-255 scale) to lambdas, e.g. {25: 0.005} ({}: none)")
    sig, lam = number(0, 255), number(0, 10, lo_open=True)
    return {sig(s, key, source): lam(v, key, source) for s, v in value.items()}


def optional(item: Check) -> Check:
    return lambda value, key, source: None if value is None else item(value, key, source)


def even(item: Check) -> Check:
    def check(value: Any, key: str, source: str) -> int:
        v = item(value, key, source)
        if v % 2:
            raise _fail(source, key, f"= {v} must be even")
        return v

    return check


def float32_exact(item: Check) -> Check:
    """A number the .lottery header stores as a 32-bit float: it must be one exactly."""

    def check(value: Any, key: str, source: str) -> float:
        v = item(value, key, source)
        nearest = struct.unpack("<f", struct.pack("<f", v))[0]
        if nearest != v:
            raise _fail(source, key, f"= {value!r} is not exactly representable as a 32-bit float "
                                     f"(the file stores it so; the nearest one is {nearest!r})")
        return v

    return check


SCHEDULE_CHECKS: dict[str, Check] = {
    "lr": number(0, 1, lo_open=True),
    "latent_lr_scale": number(0, 100, lo_open=True),
    "score_lr": number(0, 10, lo_open=True),
    "lr_floor": number(0, 1),
    "hard_fraction": number(0, 1),
    "temperature": pair(number(0, 10, lo_open=True)),
    "noise": pair(number(0, 100, lo_open=True)),
    "grad_clip": number(0, 1e6),
    "eval_every": integer(1, 1_000_000),
    "average_fraction": number(0, 1),
    "average_every": integer(1, 1_000_000),
    "pixel_fraction": number(0, 1, lo_open=True),
    "arm_refit_steps": integer(0, 100_000),
    "arm_refit_lr": number(0, 1, lo_open=True),
    "arm_scratch_widths": list_of(integer(1, MAX_ARM_HIDDEN)),
    "arm_scratch_steps": integer(0, 100_000),
    "arm_scratch_lr": number(0, 1, lo_open=True),
    "arm_scratch_min_share": number(0, 1),
    "network_refinement": boolean,
}
ARCHITECTURE_CHECKS: dict[str, Check] = {
    "n_levels": integer(1, 8),
    "latent_gain": float32_exact(number(0, 256, lo_open=True)),
    "upsample_kernel": even(integer(2, 16)),
    "modnet_hidden": integer(1, 64),
    "modnet_out": integer(1, 8),
    "synth_hidden": lambda v, k, s: _widths(v, k, s),
    "arm_hidden": integer(1, MAX_ARM_HIDDEN),
    "arm_band_rows": integer(0, 16384),
}
COMMON_CHECKS: dict[str, Check] = {
    "steps": integer(1, 1_000_000),
    "lambda": number(0, 10),
    "mask_ratio": number(0, 0.99),
    "seed": integer(0, MAX_SEED),
}
RESTORATION_CHECKS: dict[str, Check] = {
    "ensemble": integer(1, MAX_MEMBERS),
    "candidates": integer(0, MAX_MEMBERS),
    "screen_fraction": number(0, 1, lo_open=True),
    "combine": choice("mean", "median"),
    "keep_observed": boolean,
    "member_transforms": boolean,
    "classical_blend": number(0, 1),
    "member_batch": choice("auto", "always", "never"),
    "lambda_by_sigma": sigma_table,
    "lambda_reference_scale": optional(number(1, 16)),
}
COMPRESSION_CHECKS: dict[str, Check] = {
    "mask_ratio_candidates": list_of(number(0, 0.99)),
    "screen_fraction": number(0, 1, lo_open=True),
    "screen_min_lambda": number(0, 10),
    "member_batch": choice("auto", "always", "never"),
}
PRESET_KEYS = {"steps", "lambda", "mask_ratio", "ensemble", "candidates"}
assert {f.name for f in fields(Schedule)} == set(SCHEDULE_CHECKS) | {"steps"}
assert {f.name for f in fields(Architecture)} == set(ARCHITECTURE_CHECKS)


def _widths(value: Any, key: str, source: str) -> tuple[int, int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 3):
        raise _fail(source, key, f"must be a list of 3 widths, got {value!r}")
    return tuple(integer(1, 64)(v, key, source) for v in value)


# -- loading --------------------------------------------------------------------------------------
def task_config_text(task: str) -> str:
    """The shipped YAML of `task` (configs/<task>.yaml, inside the installed package)."""
    return resources.files("lotterycli.configs").joinpath(f"{task}.yaml").read_text(encoding="utf-8")


class _Loader(yaml.SafeLoader):
    """YAML as users write it: `2e-3` and `1e300` are numbers (PyYAML's YAML 1.1 rules read a
    number with an exponent but no dot as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """YAML text -> Python values, with the number rules of `_Loader`."""
    return yaml.load(text, Loader=_Loader)


def _parse_yaml(text: str, source: str) -> dict:
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LotteryError(f"{source}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LotteryError(f"{source}: a config must be a mapping of keys to values")
    return data


def read_config_file(path: str | Path) -> dict:
    """A user's YAML config file as a mapping (one-line errors naming the file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise LotteryError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise LotteryError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise LotteryError(f"{path}: a config must be UTF-8 text (YAML)") from None
    return _parse_yaml(text, str(path))


def _allowed_keys(task: str) -> set[str]:
    keys = {"task", "preset", "presets", "schedule", "architecture"} | set(COMMON_CHECKS)
    return keys | set(RESTORATION_CHECKS) if task in RESTORATION_TASKS else keys | set(COMPRESSION_CHECKS)


def _check_shape(d: dict, task: str, source: str) -> None:
    """Refuse unknown keys (by name) and sections that are not mappings."""

    def known(mapping: dict, allowed, where: str) -> None:
        for key in mapping:
            if key not in allowed:
                raise LotteryError(f"{source}: unknown config key '{where}{key}' (allowed: {', '.join(sorted(allowed))})")

    # The task first: another task's file would otherwise be refused for one of its keys.
    if "task" in d and d["task"] != task:
        raise LotteryError(f"{source}: this config is for task '{d['task']}', not '{task}'")
    known(d, _allowed_keys(task), "")
    for section, allowed in (("schedule", set(SCHEDULE_CHECKS)), ("architecture", set(ARCHITECTURE_CHECKS))):
        if d.get(section) is not None:
            if not isinstance(d[section], dict):
                raise LotteryError(f"{source}: '{section}' must be a mapping")
            known(d[section], allowed, f"{section}.")
    presets = d.get("presets")
    if presets is not None:
        if not isinstance(presets, dict):
            raise LotteryError(f"{source}: 'presets' must be a mapping")
        for name, p in presets.items():
            if p is not None and not isinstance(p, dict):
                raise LotteryError(f"{source}: preset '{name}' must be a mapping")
            known(p or {}, PRESET_KEYS & _allowed_keys(task), f"presets.{name}.")


def load_task_config(
    task: str,
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
) -> TaskConfig:
    """The effective config for `task`: configs/<task>.yaml, then --config FILE, then the preset,
    then `overrides` (top-level key names: steps, lambda, mask_ratio, seed, ensemble, candidates;
    None values are ignored)."""
    if task not in TASKS:
        raise LotteryError(f"unknown task '{task}' (choose from {', '.join(TASKS)})")
    base_source = f"configs/{task}.yaml"
    base = _parse_yaml(task_config_text(task), base_source)
    _check_shape(base, task, base_source)
    user: dict = {}
    if config_file is not None:
        user = read_config_file(config_file)
        _check_shape(user, task, str(config_file))

    # Where each value came from, for the error messages: the user's file, the task file, or an option.
    def origin(key: str, section: str | None = None) -> str:
        where = user.get(section) if section else user
        return str(config_file) if isinstance(where, dict) and key in where else base_source

    preset = preset or user.get("preset") or base.get("preset", "balanced")
    presets = {**(base.get("presets") or {})}
    for name, p in (user.get("presets") or {}).items():
        presets[name] = {**(presets.get(name) or {}), **(p or {})}
    if not isinstance(preset, str) or preset not in presets:
        raise LotteryError(f"unknown preset '{preset}' (choose from {', '.join(presets) or ', '.join(PRESETS)})")
    top = {k: v for k, v in base.items() if k not in ("presets", "schedule", "architecture")}
    top.update(presets[preset] or {})
    # The user's file beats the task file's preset values: its top-level steps, lambda, ... then
    # its own entry for the chosen preset (otherwise `steps: 50` in a --config file would be
    # silently ignored, since every preset sets steps).
    top.update({k: v for k, v in user.items() if k not in ("presets", "schedule", "architecture")})
    top.update((user.get("presets") or {}).get(preset) or {})
    user_preset = (user.get("presets") or {}).get(preset) or {}
    sources = {k: str(config_file) if k in user_preset else origin(k) for k in top}
    for k, v in (overrides or {}).items():
        if v is not None:
            top[k] = v
            sources[k] = "option"

    def checked(checks: dict[str, Check], values: dict, source_of: Callable[[str], str], prefix: str = "") -> dict:
        out = {}
        for key, check in checks.items():
            if key not in values:
                raise LotteryError(f"{base_source}: missing config key '{prefix}{key}'")
            out[key] = check(values[key], prefix + key, source_of(key))
        return out

    common = checked(COMMON_CHECKS, top, lambda k: sources.get(k, base_source))
    sched_values = {**(base.get("schedule") or {}), **(user.get("schedule") or {})}
    schedule = Schedule(steps=common["steps"],
                        **checked(SCHEDULE_CHECKS, sched_values, lambda k: origin(k, "schedule"), "schedule."))
    arch_values = {**(base.get("architecture") or {}), **(user.get("architecture") or {})}
    arch = Architecture(**checked(ARCHITECTURE_CHECKS, arch_values, lambda k: origin(k, "architecture"), "architecture."))
    try:
        check_architecture(arch)
    except LotteryError as exc:
        raise LotteryError(f"{origin('latent_gain', 'architecture')}: {exc}") from None
    restoration = None
    if task in RESTORATION_TASKS:
        r = checked(RESTORATION_CHECKS, top, lambda k: sources.get(k, base_source))
        restoration = RestorationSettings(**r)
        if common["seed"] + max(r["ensemble"], r["candidates"]) - 1 > MAX_SEED:
            raise LotteryError(f"{sources.get('seed', base_source)}: 'seed' = {common['seed']} leaves no room for the "
                               f"members' seeds seed + k (at most {MAX_SEED} in all)")
    compression = None
    if task == "compress":
        c = checked(COMPRESSION_CHECKS, top, lambda k: sources.get(k, base_source))
        # No screen for a ratio the user asks for (--mask-ratio, or their file without candidates of
        # its own), nor at high rates, where the mask pays (lambda < screen_min_lambda; docs/design.md).
        user_ratio = sources.get("mask_ratio", base_source) != base_source and sources.get("mask_ratio_candidates") == base_source
        if user_ratio or common["lambda"] < c["screen_min_lambda"]:
            c["mask_ratio_candidates"] = ()
        c["mask_ratio_candidates"] = tuple(r for r in dict.fromkeys(c["mask_ratio_candidates"])
                                           if r != common["mask_ratio"])
        compression = CompressionSettings(**c)
    return TaskConfig(task=task, preset=preset, lam=common["lambda"], mask_ratio=common["mask_ratio"],
                      seed=common["seed"], schedule=schedule, architecture=arch, restoration=restoration,
                      compression=compression)


def with_changes(cfg: TaskConfig, **schedule_changes: Any) -> TaskConfig:
    """`cfg` with some schedule fields changed (tests, benchmarks)."""
    return replace(cfg, schedule=replace(cfg.schedule, **schedule_changes))
