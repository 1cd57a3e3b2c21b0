"""Layout of the results JSON (`benchmarks/results/{quick,full}.json`) and its validator.

Schema "lottery-bench/1". Numbers that are not finite (an identical image's PSNR, a failed
measurement) are stored as null. Top level:

    schema        "lottery-bench/1"
    mode          "quick" | "full"
    command       the command line that produced the file
    created       ISO 8601 time the run finished
    machine       {cpu_model, cores, torch_version, torch_threads, device, date, git_commit,
                   python, platform}                       (all required)
    budget        {estimated_seconds, limit_seconds|null, wall_seconds|null, breakdown{part: s}}
    config        the suite settings used (free-form dict)
    parts         {"compress"?, "restore"?, "speed"?}: only the parts that were run; each has
                  status "ok" | "partial" | "skipped", reason (str|null), machine (as above, the
                  run that produced this part), notes [str], and:
      compress    images [str], crop int|null,
                  points  [{method, image, setting, bpp, psnr, seconds, n_bytes, ...}]
                          method "lottery" | "jpeg" | "webp" | "avif"; setting e.g. "lam=0.002", "q=50"
                  curves  {method: [{setting, bpp, psnr, seconds, n}]}  (means over images)
                  bd_rate [{anchor, test, bd_rate_percent|null, bd_psnr_db|null,
                            psnr_range [lo, hi]|null, per_image {image: percent|null}}]
                  reference {label: {points [[bpp, psnr], ...], source}}  (published, not measured)
      restore     images [str], crop int|null,
                  tasks   [{name, task, sigma255, scale|null, missing_ratio|null}]
                  rows    [{task (a tasks[].name), method, image, psnr, ssim, seconds, ...}]
                  summary [{task, method, psnr, ssim, seconds, n}]   (means over images)
                  grids   {task name: [{label, path}]}   (PNG tiles, paths relative to the repo root)
      speed       torch_threads int,
                  step_rate [{height, width, steps, steps_per_second|null, error|null}]
                  presets   [{preset, height, width, seconds|null, steps|null, bpp|null, psnr|null, error|null}]
                  decode    {height, width, n_bytes|null, seconds|null, repeats, error|null} | null
                  rss       [{command, argv [str], max_rss_mb|null, seconds|null, returncode|null,
                              method, error|null}]
    skipped       [{part, reason}]     parts or items skipped, with the reason
    wall_seconds  float                 wall time of the whole run
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

SCHEMA = "lottery-bench/1"
MODES = ("quick", "full")
PARTS = ("compress", "restore", "speed", "engine", "load", "batch")
STATUSES = ("ok", "partial", "skipped")
MACHINE_KEYS = ("cpu_model", "cores", "torch_version", "torch_threads", "device", "date", "git_commit", "python", "platform")


class SchemaError(ValueError):
    """The results dict does not follow the schema; `.problems` lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid benchmark results:\n  " + "\n  ".join(problems))


_REPO = str(Path(__file__).resolve().parent.parent) + "/"
_ABSOLUTE = re.compile(r"(?<![\w.$])/(?:[\w.+-]+/)*([\w.+-]+)")


def portable(text: str) -> str:
    """A string with no absolute path of the machine that wrote it: paths in the repository become
    relative, a `lottery` console script becomes `lottery`, any other absolute path `$DIR/name`."""
    text = re.sub(r"[\w./+-]*bin/lottery\b", "lottery", text.replace(_REPO, ""))

    def repl(m: re.Match) -> str:
        return "lottery" if m.group(0).endswith("/bin/lottery") else f"$DIR/{m.group(1)}"

    return _ABSOLUTE.sub(repl, text)


def sanitize(obj: Any) -> Any:
    """Deep copy with non-finite floats replaced by None, tuples by lists (JSON-safe) and absolute
    paths made portable (`portable`)."""
    if isinstance(obj, str):
        return portable(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return sanitize(obj.item())
        except (TypeError, ValueError):
            pass
    return obj


class _Checker:
    def __init__(self):
        self.problems: list[str] = []

    def fail(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def dict_(self, obj, where) -> bool:
        if not isinstance(obj, dict):
            self.fail(where, f"expected an object, got {type(obj).__name__}")
            return False
        return True

    def list_(self, obj, where) -> bool:
        if not isinstance(obj, list):
            self.fail(where, f"expected a list, got {type(obj).__name__}")
            return False
        return True

    def keys(self, obj, keys, where) -> bool:
        if not self.dict_(obj, where):
            return False
        missing = [k for k in keys if k not in obj]
        if missing:
            self.fail(where, f"missing keys {missing}")
        return not missing

    def num(self, obj, key, where, *, nullable=True, positive=False) -> None:
        v = obj.get(key) if isinstance(obj, dict) else None
        if v is None:
            if not nullable or (isinstance(obj, dict) and key not in obj):
                self.fail(where, f"{key!r} must be a number" + ("" if nullable else " (not null)"))
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(where, f"{key!r} must be a finite number or null, got {v!r}")
        elif positive and v <= 0:
            self.fail(where, f"{key!r} must be positive, got {v!r}")

    def str_(self, obj, key, where, *, nullable=False, choices=None) -> None:
        v = obj.get(key) if isinstance(obj, dict) else None
        if v is None and nullable and isinstance(obj, dict) and key in obj:
            return
        if not isinstance(v, str):
            self.fail(where, f"{key!r} must be a string, got {v!r}")
        elif choices and v not in choices:
            self.fail(where, f"{key!r} must be one of {list(choices)}, got {v!r}")


def _machine(c: _Checker, m, where) -> None:
    if c.keys(m, MACHINE_KEYS, where):
        c.num(m, "cores", where, nullable=True)
        c.num(m, "torch_threads", where, nullable=True)
        for k in ("cpu_model", "torch_version", "device", "date", "git_commit"):
            c.str_(m, k, where)


def _compress(c: _Checker, p, where) -> None:
    if not c.keys(p, ("images", "crop", "points", "curves", "bd_rate", "reference"), where):
        return
    if c.list_(p["points"], f"{where}.points"):
        for i, pt in enumerate(p["points"]):
            w = f"{where}.points[{i}]"
            if c.keys(pt, ("method", "image", "setting", "bpp", "psnr", "seconds", "n_bytes"), w):
                c.str_(pt, "method", w)
                c.str_(pt, "image", w)
                c.num(pt, "bpp", w, positive=True)
                c.num(pt, "psnr", w)
                c.num(pt, "seconds", w)
    if c.dict_(p["curves"], f"{where}.curves"):
        for method, curve in p["curves"].items():
            w = f"{where}.curves.{method}"
            if c.list_(curve, w):
                for i, pt in enumerate(curve):
                    if c.keys(pt, ("setting", "bpp", "psnr", "n"), f"{w}[{i}]"):
                        c.num(pt, "bpp", f"{w}[{i}]", positive=True)
                        c.num(pt, "psnr", f"{w}[{i}]")
    if c.list_(p["bd_rate"], f"{where}.bd_rate"):
        for i, r in enumerate(p["bd_rate"]):
            w = f"{where}.bd_rate[{i}]"
            if c.keys(r, ("anchor", "test", "bd_rate_percent", "bd_psnr_db"), w):
                c.num(r, "bd_rate_percent", w)
                c.num(r, "bd_psnr_db", w)
    if c.dict_(p["reference"], f"{where}.reference"):
        for label, ref in p["reference"].items():
            w = f"{where}.reference.{label}"
            if c.keys(ref, ("points", "source"), w) and c.list_(ref["points"], w):
                for pt in ref["points"]:
                    if not (isinstance(pt, list) and len(pt) == 2 and all(isinstance(v, (int, float)) for v in pt)):
                        c.fail(w, f"points must be [bpp, psnr] pairs, got {pt!r}")


def _restore(c: _Checker, p, where) -> None:
    if not c.keys(p, ("images", "crop", "tasks", "rows", "summary"), where):
        return
    names = set()
    if c.list_(p["tasks"], f"{where}.tasks"):
        for i, t in enumerate(p["tasks"]):
            w = f"{where}.tasks[{i}]"
            if c.keys(t, ("name", "task", "sigma255"), w):
                c.str_(t, "name", w)
                c.str_(t, "task", w, choices=("denoise", "sr", "inpaint"))
                names.add(t.get("name"))
    for key in ("rows", "summary"):
        if not c.list_(p[key], f"{where}.{key}"):
            continue
        for i, r in enumerate(p[key]):
            w = f"{where}.{key}[{i}]"
            if c.keys(r, ("task", "method", "psnr", "ssim", "seconds") + (("image",) if key == "rows" else ("n",)), w):
                if r["task"] not in names:
                    c.fail(w, f"task {r['task']!r} is not in tasks")
                c.str_(r, "method", w)
                for k in ("psnr", "ssim", "seconds"):
                    c.num(r, k, w)
    if "grids" in p and c.dict_(p["grids"], f"{where}.grids"):
        for name, tiles in p["grids"].items():
            if c.list_(tiles, f"{where}.grids.{name}"):
                for i, t in enumerate(tiles):
                    c.keys(t, ("label", "path"), f"{where}.grids.{name}[{i}]")


def _speed(c: _Checker, p, where) -> None:
    if not c.keys(p, ("torch_threads", "step_rate", "presets", "decode", "rss"), where):
        return
    if c.list_(p["step_rate"], f"{where}.step_rate"):
        for i, r in enumerate(p["step_rate"]):
            w = f"{where}.step_rate[{i}]"
            if c.keys(r, ("height", "width", "steps", "steps_per_second"), w):
                c.num(r, "steps_per_second", w)
    if c.list_(p["presets"], f"{where}.presets"):
        for i, r in enumerate(p["presets"]):
            w = f"{where}.presets[{i}]"
            if c.keys(r, ("preset", "height", "width", "seconds"), w):
                c.num(r, "seconds", w)
    if p["decode"] is not None and c.keys(p["decode"], ("height", "width", "seconds"), f"{where}.decode"):
        c.num(p["decode"], "seconds", f"{where}.decode")
    if c.list_(p["rss"], f"{where}.rss"):
        for i, r in enumerate(p["rss"]):
            w = f"{where}.rss[{i}]"
            if c.keys(r, ("command", "argv", "max_rss_mb", "method"), w):
                c.num(r, "max_rss_mb", w)


def _engine(c: _Checker, p, where) -> None:
    if c.keys(p, ("rows", "baseline"), where) and c.list_(p["rows"], f"{where}.rows"):
        for i, r in enumerate(p["rows"]):
            w = f"{where}.rows[{i}]"
            if c.keys(r, ("tree", "width", "height", "threads", "steps_per_second", "ops_per_step"), w):
                c.num(r, "steps_per_second", w)


def _load(c: _Checker, p, where) -> None:
    if c.keys(p, ("solo_s", "pair_ratio", "beside_busy_ratio", "same_file"), where):
        for key in ("solo_s", "pair_ratio", "beside_busy_ratio"):
            c.num(p, key, where)


def _batch(c: _Checker, p, where) -> None:
    if c.keys(p, ("runs", "resume"), where) and c.dict_(p["runs"], f"{where}.runs"):
        for label, r in p["runs"].items():
            if c.keys(r, ("seconds", "images_per_hour", "peak_rss_mb_per_worker", "threads_per_fit"), f"{where}.runs.{label}"):
                c.num(r, "images_per_hour", f"{where}.runs.{label}")


def validate_results(d: Any) -> dict:
    """Return `d` unchanged if it follows the schema, else raise SchemaError listing the problems."""
    c = _Checker()
    if not c.keys(d, ("schema", "mode", "command", "created", "machine", "budget", "config", "parts", "skipped", "wall_seconds"), "results"):
        raise SchemaError(c.problems)
    if d["schema"] != SCHEMA:
        c.fail("results.schema", f"expected {SCHEMA!r}, got {d['schema']!r}")
    c.str_(d, "mode", "results", choices=MODES)
    c.str_(d, "command", "results")
    c.str_(d, "created", "results")
    _machine(c, d["machine"], "results.machine")
    if c.dict_(d["budget"], "results.budget"):
        c.num(d["budget"], "estimated_seconds", "results.budget")
    c.dict_(d["config"], "results.config")
    c.num(d, "wall_seconds", "results")
    if c.list_(d["skipped"], "results.skipped"):
        for i, s in enumerate(d["skipped"]):
            c.keys(s, ("part", "reason"), f"results.skipped[{i}]")
    if c.dict_(d["parts"], "results.parts"):
        for name, part in d["parts"].items():
            where = f"results.parts.{name}"
            if name not in PARTS:
                c.fail(where, f"unknown part (expected one of {list(PARTS)})")
                continue
            if not c.keys(part, ("status",), where):
                continue
            c.str_(part, "status", where, choices=STATUSES)
            if part.get("status") == "skipped":
                c.str_(part, "reason", where)
                continue
            if "machine" in part:
                _machine(c, part["machine"], f"{where}.machine")
            {"compress": _compress, "restore": _restore, "speed": _speed, "engine": _engine, "load": _load,
             "batch": _batch}[name](c, part, where)
    if c.problems:
        raise SchemaError(c.problems)
    return d
