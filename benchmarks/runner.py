"""The benchmark suites and the command line (`python -m benchmarks`).

    python -m benchmarks --quick                 smoke scale (< 20 min on 2 CPU cores)
    python -m benchmarks --full                  the protocol (hours on a CPU; budget printed first)
    python -m benchmarks --quick --only compress [--only restore ...]
    python -m benchmarks --results benchmarks/results/protocol.json    re-render docs, no computing
    python -m benchmarks --full --budget         print the plan and its estimated budget, run nothing

Parts:
- compress: `lotterycli.api.compress` at several lambdas vs JPEG / WebP / AVIF quality sweeps on
  Kodak centre crops; bpp from real file bytes, PSNR of the decoded image (the lottery file is also
  decoded again by `decompress` and checked bit-exact); BD-rate / BD-PSNR of lottery vs each codec.
- restore: kodim01-08 crops, observation by `op.simulate(x, seed=1234 + i)` for kodimNN with i = NN
  (float, not clipped); denoise sigma 15/25/50, inpaint 50 % random pixels, SR x2 / x4 with sigma 5;
  PSNR / SSIM (clamped to [0, 1], vs the 8-bit ground truth) and seconds per image for each method.
- speed: fitting steps/s (`benchmarks.profile_step.measure_step_rate`), wall time per preset, decode time of a
  768x512 file, peak RSS of `lottery compress|decompress|restore` subprocesses.
- engine: steps/s, operations per step, arithmetic against the matmul peak and peak memory of this
  checkout beside the baseline commit (`benchmarks.engine`).
- load: one `lottery compress` alone, two side by side, one beside a busy process (`benchmarks.load`).
- batch: images per hour of a shell loop, `lottery batch --jobs 1/2` and `--ray` (`benchmarks.batch`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import baselines as B
from . import bdrate
from .data import REPO_ROOT, center_crop, image_index, list_images, load_image
from .schema import SCHEMA, sanitize, validate_results

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DOCS_DIR = REPO_ROOT / "docs"

# Published Kodak results (24 full 768x512 images, docs/method.md): not measured here.
REFERENCE = {
    "LotteryCodec (published)": {
        "points": [[0.126, 28.49], [0.197, 30.08], [0.520, 34.53], [0.736, 36.60], [1.093, 39.26], [1.429, 41.18]],
        "source": "Wu et al., ICML 2025 (arXiv 2507.01204), Kodak 24 full images, 5,100 MACs/px budget",
    },
    "VTM-19.1 (published)": {
        "points": [[0.029, 24.89], [0.057, 26.61], [0.081, 27.54], [0.113, 28.51], [0.287, 31.84], [0.492, 34.28],
                   [0.877, 37.40], [1.074, 38.58], [1.187, 39.18], [1.433, 40.32], [1.730, 41.46]],
        "source": "as reported in the LotteryCodec paper, Kodak 24 full images",
    },
}

# Restoration protocol task list.
ALL_TASKS = [
    {"name": "denoise-s15", "task": "denoise", "sigma255": 15, "scale": None, "missing_ratio": None},
    {"name": "denoise-s25", "task": "denoise", "sigma255": 25, "scale": None, "missing_ratio": None},
    {"name": "denoise-s50", "task": "denoise", "sigma255": 50, "scale": None, "missing_ratio": None},
    {"name": "inpaint-50", "task": "inpaint", "sigma255": 0, "scale": None, "missing_ratio": 0.5},
    {"name": "sr-x2-s5", "task": "sr", "sigma255": 5, "scale": 2, "missing_ratio": None},
    {"name": "sr-x4-s5", "task": "sr", "sigma255": 5, "scale": 4, "missing_ratio": None},
]
TASKS_BY_NAME = {t["name"]: t for t in ALL_TASKS}

# Seconds per fitting step at 256x256 on 2 CPU cores (a slow machine), scaled with pixel count; used
# only for the up-front budget estimate. Steps assumed for a preset when the library does not say.
STEP_SECONDS_256 = 0.115
ASSUMED_PRESET_STEPS = {"fast": 1600, "balanced": 5000, "best": 10000}


@dataclass
class Config:
    mode: str
    images: list[str]
    crop: int | None
    device: str = "cpu"
    # compression
    lambdas: list[float] = field(default_factory=lambda: [2e-4, 1e-3, 4e-3, 2e-2])
    compress_preset: str = "balanced"
    compress_steps: int | None = None
    codecs: list[str] = field(default_factory=lambda: list(B.CODECS))
    # restoration
    tasks: list[str] = field(default_factory=lambda: [t["name"] for t in ALL_TASKS])
    ensembles: list[int] = field(default_factory=lambda: [1, 4])
    restore_preset: str = "balanced"
    restore_steps: int | None = None
    restore_lam: float | None = None
    dip_iters: int = 1000
    dip_channels: int = 64
    grid_image: int = 0  # index into images of the image shown in the grids
    # speed
    step_rate_sizes: list[tuple[int, int, int]] = field(default_factory=lambda: [(256, 256, 20), (512, 768, 10)])
    presets: list[str] = field(default_factory=lambda: ["fast", "balanced", "best"])
    preset_crop: int = 256
    decode_steps: int | None = 100
    decode_repeats: int = 3
    rss_crop: int = 256
    rss_steps: int = 100
    # engine (benchmarks.engine) and load (benchmarks.load)
    engine_baseline: str = "b9769d4"
    engine_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(256, 256), (768, 512)])
    engine_steps: int = 80  # a 256x256 probe then times ~5 s: 30 steps (~2 s) swung 0.95-1.26x between runs
    engine_rounds: int = 3
    engine_members: list[int] = field(default_factory=lambda: [1, 4, 16])  # batched fits probed (this checkout)
    load_crop: int = 256
    load_steps: int = 300
    load_repeats: int = 2
    batch_steps: int | None = None  # None: the fast preset's
    # run control
    time_limit_s: float | None = None
    keep_files: str | None = None  # write each compression point's .lottery file here


def quick_config() -> Config:
    return Config(
        mode="quick", images=["kodim01", "kodim03"], crop=128,
        lambdas=[1e-3, 8e-3], compress_preset="fast", compress_steps=300,
        tasks=["denoise-s25", "inpaint-50", "sr-x2-s5"], ensembles=[1, 2],
        restore_preset="fast", restore_steps=300, dip_iters=300, dip_channels=32,
        step_rate_sizes=[(256, 256, 5), (512, 768, 3)], presets=["fast"], preset_crop=128,
        decode_steps=10, decode_repeats=2, rss_crop=128, rss_steps=20, time_limit_s=17 * 60,
    )


def full_config() -> Config:
    return Config(mode="full", images=list_images(8), crop=256)


# --------------------------------------------------------------------------- small utilities

def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Deadline:
    """Soft time limit: items are skipped (and recorded as such) once it has passed."""

    def __init__(self, limit_s: float | None):
        self.start = time.monotonic()
        self.limit_s = limit_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def passed(self) -> bool:
        return self.limit_s is not None and self.elapsed() > self.limit_s


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and isinstance(x, (int, float)) and math.isfinite(x)]
    return statistics.fmean(xs) if xs else None


def _err(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}".strip()[:500]


def _metrics(img: torch.Tensor, gt: torch.Tensor) -> dict:
    from lotterycli.metrics import psnr, ssim

    img = img.detach().cpu().float().clamp(0, 1)
    return {"psnr": psnr(img, gt), "ssim": ssim(img, gt)}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def machine_info(device: str) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name(0)})"
    commit = "unknown"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                   capture_output=True, text=True, timeout=10)
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += " (uncommitted changes)"
        else:
            commit = "unknown (no commit)"
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_model": cpu,
        "cores": affinity,
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": dev,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": commit,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def _import_api() -> tuple[Any, str | None]:
    try:
        from lotterycli import api  # noqa: F401

        for name in ("compress", "decompress", "restore"):
            if not hasattr(api, name):
                return None, f"lotterycli.api has no `{name}` yet"
        return api, None
    except Exception as exc:  # ImportError, or an error inside a half-written module
        return None, f"cannot import lotterycli.api ({_err(exc)})"


def preset_steps(preset: str, task: str = "compress") -> tuple[int, bool]:
    """(steps, known): the preset's step count from the library's task config, else an assumption."""
    try:
        from lotterycli.config import load_task_config

        return int(load_task_config(task, preset=preset).steps), True
    except Exception:
        return ASSUMED_PRESET_STEPS.get(preset, 2000), False


# --------------------------------------------------------------------------- budget

def _step_s(h: int, w: int) -> float:
    return max(0.012, STEP_SECONDS_256 * h * w / 65536)


def estimate_budget(cfg: Config, parts: list[str]) -> dict:
    """Seconds per part on 2 CPU cores (step times scaled by pixels); a rough plan."""
    c = cfg.crop or 512
    side_h, side_w = (c, c) if cfg.crop else (512, 768)
    n_img = len(cfg.images)
    notes = []
    est: dict[str, float] = {}
    # Per-file cost beyond the fitting steps (parameter quantisation, entropy coding, decode self-check):
    # ~5 s at 64x64 and ~100 s at 768x512 measured on a loaded 2-core machine; halved here.
    def overhead(h: int, w: int) -> float:
        return 3.0 + 8.0 * h * w / 65536

    fit_overhead = overhead(side_h, side_w)
    if "compress" in parts:
        steps = cfg.compress_steps
        if steps is None:
            steps, known = preset_steps(cfg.compress_preset, "compress")
            if not known:
                notes.append(f"compress: preset {cfg.compress_preset!r} assumed to run {steps} steps")
        fit = steps * _step_s(side_h, side_w) + fit_overhead
        est["compress"] = n_img * (len(cfg.lambdas) * fit + 2.0 * len(cfg.codecs))
    if "restore" in parts:
        steps = cfg.restore_steps
        if steps is None:
            steps, known = preset_steps(cfg.restore_preset, "denoise")
            if not known:
                notes.append(f"restore: preset {cfg.restore_preset!r} assumed to run {steps} steps per member")
        px = side_h * side_w / 65536
        dip_iter = max(0.004, 0.21 * px * (cfg.dip_channels / 64) ** 2)
        per_img = 0.0
        for name in cfg.tasks:
            t = TASKS_BY_NAME[name]
            members = max(cfg.ensembles)  # one run of the largest K (smaller K are its prefixes)
            per_img += members * steps * _step_s(side_h, side_w) + len(cfg.ensembles) * 2.0
            per_img += cfg.dip_iters * dip_iter
            per_img += {"denoise": 8.0 * px + 1.0, "inpaint": 1.0 * px, "sr": 6.0 * px}[t["task"]]
        est["restore"] = n_img * per_img
    if "speed" in parts:
        s = sum(steps * _step_s(h, w) * 1.5 + 5 for h, w, steps in cfg.step_rate_sizes)
        for p in cfg.presets:
            steps, _ = preset_steps(p, "compress")
            s += steps * _step_s(cfg.preset_crop, cfg.preset_crop) + overhead(cfg.preset_crop, cfg.preset_crop)
        dsteps = cfg.decode_steps if cfg.decode_steps is not None else preset_steps("fast")[0]
        s += dsteps * _step_s(512, 768) + overhead(512, 768) + cfg.decode_repeats * 6
        s += 2 * cfg.rss_steps * _step_s(cfg.rss_crop, cfg.rss_crop) + overhead(cfg.rss_crop, cfg.rss_crop) + 3 * 8
        est["speed"] = s
    if "engine" in parts:
        est["engine"] = sum(2 * (cfg.engine_steps + 20) * _step_s(h, w) + 20 for w, h in cfg.engine_sizes)
        w0, h0 = cfg.engine_sizes[0]  # member batches: ~1.5x a single step's time per member on a CPU
        est["engine"] += sum(1.5 * b * (cfg.engine_steps // 8 + 7) * _step_s(h0, w0) + 10 for b in cfg.engine_members)
    if "load" in parts:
        est["load"] = cfg.load_repeats * 5 * (cfg.load_steps * _step_s(cfg.load_crop, cfg.load_crop) + 15)
    if "batch" in parts:
        steps = cfg.batch_steps or preset_steps("fast")[0]
        est["batch"] = 3.5 * len(cfg.images) * (steps * _step_s(cfg.crop or 256, cfg.crop or 256) + 15)
    total = sum(est.values())
    return {"estimated_seconds": total, "breakdown": est, "notes": notes,
            "limit_seconds": cfg.time_limit_s, "wall_seconds": None}


def format_budget(cfg: Config, budget: dict) -> str:
    lines = [f"Benchmark plan ({cfg.mode}): {len(cfg.images)} images {', '.join(cfg.images)}, "
             f"crop {cfg.crop or 'full'}, device {cfg.device}"]
    for part, s in budget["breakdown"].items():
        lines.append(f"  {part:9s} ~{s / 60:6.1f} min")
    lines.append(f"  estimated total ~{budget['estimated_seconds'] / 60:.1f} min on 2 CPU cores "
                 "(rough step times; faster on a GPU, slower on a loaded machine)")
    if cfg.time_limit_s:
        lines.append(f"  hard budget: items still pending after {cfg.time_limit_s / 60:.0f} min are skipped and recorded")
    for n in budget["notes"]:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- compression suite

def _curves(points: list[dict]) -> dict[str, list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        if p.get("bpp") is None or p.get("psnr") is None:
            continue
        groups.setdefault((p["method"], p["setting"]), []).append(p)
    curves: dict[str, list[dict]] = {}
    for (method, setting), ps in groups.items():
        curves.setdefault(method, []).append({
            "setting": setting, "bpp": _mean(p["bpp"] for p in ps), "psnr": _mean(p["psnr"] for p in ps),
            "seconds": _mean(p.get("seconds") for p in ps), "n": len(ps), "images": sorted(p["image"] for p in ps),
        })
    for c in curves.values():
        c.sort(key=lambda r: r["bpp"])
    return curves


def _bd_table(points: list[dict], curves: dict, test: str = "lottery") -> list[dict]:
    rows = []
    if test not in curves:
        return rows
    images = sorted({p["image"] for p in points if p["method"] == test})
    for anchor in [m for m in curves if m != test]:
        # Mean curves over the images that both methods have, so the averages are comparable.
        both = [img for img in images if any(p["image"] == img and p["method"] == anchor for p in points)]
        sub = [p for p in points if p["image"] in both and p["method"] in (anchor, test)]
        cv = _curves(sub)
        row = {"anchor": anchor, "test": test, "bd_rate_percent": None, "bd_psnr_db": None, "psnr_range": None,
               "per_image": {}, "images": both}
        if anchor in cv and test in cv:
            a, t = cv[anchor], cv[test]
            ra, pa = [r["bpp"] for r in a], [r["psnr"] for r in a]
            rt, pt = [r["bpp"] for r in t], [r["psnr"] for r in t]
            row["bd_rate_percent"] = bdrate.bd_rate(ra, pa, rt, pt)
            row["bd_psnr_db"] = bdrate.bd_psnr(ra, pa, rt, pt)
            rng = bdrate.overlap(pa, pt)
            row["psnr_range"] = list(rng) if rng else None
        for img in both:
            pa_ = [p for p in points if p["image"] == img and p["method"] == anchor and p["psnr"] is not None]
            pt_ = [p for p in points if p["image"] == img and p["method"] == test and p["psnr"] is not None]
            try:
                row["per_image"][img] = bdrate.bd_rate([p["bpp"] for p in pa_], [p["psnr"] for p in pa_],
                                                      [p["bpp"] for p in pt_], [p["psnr"] for p in pt_])
            except ValueError:
                row["per_image"][img] = None
        row["per_image_mean"] = _mean(row["per_image"].values())
        rows.append(row)
    return rows


def _file_sizes(data: bytes) -> dict[str, int]:
    """Bytes per part of a .lottery file: header (with its CRC), mask, arm, upsampling, modnet, latents."""
    from lotterycli.bitstream.header import describe

    sizes = describe(data)["sizes"]
    return {"header": sizes["header"], "mask": sizes["mask"], **sizes["networks"], "latents": sizes["latents"]}


def run_compress(cfg: Config, deadline: Deadline) -> dict:
    part: dict[str, Any] = {"status": "ok", "reason": None, "notes": [], "images": cfg.images, "crop": cfg.crop,
                            "points": [], "curves": {}, "bd_rate": [], "reference": REFERENCE,
                            "codec_settings": {c: B.CODEC_SETTINGS[c] for c in cfg.codecs},
                            "lottery_settings": {"preset": cfg.compress_preset, "steps": cfg.compress_steps,
                                                 "lambdas": cfg.lambdas, "seed": 0}}
    avail = B.available()
    crops = {name: center_crop(load_image(name), cfg.crop) for name in cfg.images}
    for codec in cfg.codecs:
        if avail.get(codec):
            part["notes"].append(f"{codec} skipped: {avail[codec]}")
            continue
        for name, x in crops.items():
            for r in B.codec_sweep(x, codec):
                r = dict(r)
                part["points"].append({"method": codec, "image": name, "setting": f"q={r['quality']}", **r})
    log(f"compress: codec sweeps done ({len(part['points'])} points)")

    api, why = _import_api()
    if api is None:
        part["status"] = "partial"
        part["notes"].append(f"lottery points skipped: {why}")
        log(f"compress: SKIP lottery: {why}")
    else:
        from lotterycli.images import to_uint8

        for name, x in crops.items():
            gt8 = to_uint8(x)
            h, w = x.shape[-2:]
            for lam in cfg.lambdas:
                setting = f"lam={lam:g}"
                if deadline.passed():
                    part["status"] = "partial"
                    part["notes"].append(f"lottery {name} {setting} skipped: time budget exhausted")
                    continue
                log(f"compress: lottery {name} {setting} (preset {cfg.compress_preset}, steps {cfg.compress_steps})")
                try:
                    t0 = time.perf_counter()
                    res = api.compress(x, preset=cfg.compress_preset, lam=lam, steps=cfg.compress_steps, seed=0,
                                       device=cfg.device)
                    wall = time.perf_counter() - t0
                    data = bytes(res.data)
                    if cfg.keep_files is not None:
                        Path(cfg.keep_files).mkdir(parents=True, exist_ok=True)
                        (Path(cfg.keep_files) / f"{name}-{setting}.lottery").write_bytes(data)
                    t1 = time.perf_counter()
                    dec = api.decompress(data)
                    dec_s = time.perf_counter() - t1
                    from lotterycli.metrics import psnr

                    pt = {
                        "method": "lottery", "image": name, "setting": setting, "lam": lam,
                        "n_bytes": len(data), "bpp": 8.0 * len(data) / (h * w), "psnr": psnr(dec, gt8),
                        "seconds": float(res.seconds), "wall_seconds": wall, "decode_seconds": dec_s,
                        "decode_matches_encoder": bool(torch.equal(dec.cpu(), res.decoded.cpu())),
                        "reported_bpp": float(res.bpp), "reported_psnr": float(res.psnr),
                        "macs_per_pixel": float(res.macs_per_pixel), "steps": int(res.steps),
                        "sizes": _file_sizes(data),
                    }
                    part["points"].append(pt)
                    log(f"compress:   -> {pt['bpp']:.3f} bpp, {pt['psnr']:.2f} dB, {pt['seconds']:.1f} s, "
                        f"decode {dec_s:.2f} s, bit-exact {pt['decode_matches_encoder']}")
                except Exception as exc:
                    part["status"] = "partial"
                    part["notes"].append(f"lottery {name} {setting} failed: {_err(exc)}")
                    log(f"compress:   FAILED {_err(exc)}")
                    traceback.print_exc(file=sys.stderr)
    part["curves"] = _curves(part["points"])
    part["bd_rate"] = _bd_table(part["points"], part["curves"])
    return part


# --------------------------------------------------------------------------- restoration suite

def _make_operator(spec: dict, x: torch.Tensor, seed: int):
    from lotterycli.restoration.operators import Denoise, Inpaint, SuperResolution

    sigma = spec["sigma255"] / 255.0
    if spec["task"] == "denoise":
        return Denoise(sigma=sigma)
    if spec["task"] == "sr":
        return SuperResolution(scale=spec["scale"], sigma=sigma)
    return Inpaint.random(x.shape[-2], x.shape[-1], spec["missing_ratio"], seed=seed, sigma=sigma)


def _observed_mask(op, y: torch.Tensor) -> torch.Tensor:
    m = getattr(op, "mask", None)
    if isinstance(m, torch.Tensor):
        return m.bool()
    return op.forward(torch.ones_like(y)) > 0.5


def _display_observation(spec: dict, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    y = y.detach().cpu().float().clamp(0, 1)
    if spec["task"] == "sr":
        y = torch.nn.functional.interpolate(y[None], size=size, mode="nearest")[0]
    return y


def _save_tile(img: torch.Tensor, path: Path) -> str:
    from lotterycli.images import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, img.detach().cpu().float().clamp(0, 1))
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _baseline_methods(spec: dict, cfg: Config, op, y: torch.Tensor, size: tuple[int, int]) -> list[tuple[str, Callable]]:
    sigma = spec["sigma255"] / 255.0
    avail = B.available()
    methods: list[tuple[str, Callable | str]] = []
    if spec["task"] == "denoise":
        methods.append(("BM3D", (lambda: B.bm3d_denoise(y, sigma)) if not avail["bm3d"] else avail["bm3d"]))
        methods.append(("NL-means", (lambda: B.nlmeans_denoise(y, sigma)) if not avail["skimage"] else avail["skimage"]))
    elif spec["task"] == "inpaint":
        mask = _observed_mask(op, y)
        methods.append(("biharmonic", (lambda: B.biharmonic_inpaint(y, mask)) if not avail["skimage"] else avail["skimage"]))
    else:
        methods.append(("bicubic", lambda: B.bicubic_upsample(y, size)))
        methods.append(("BM3D+bicubic", (lambda: B.bm3d_then_bicubic(y, sigma, size)) if not avail["bm3d"] else avail["bm3d"]))
    if cfg.dip_iters > 0:  # --dip-iters 0 leaves the (slow) deep image prior out
        methods.append((f"DIP ({cfg.dip_iters} it)", lambda: B.dip_restore(
            y, op.loss, size, iters=cfg.dip_iters, channels=cfg.dip_channels, seed=0, device=cfg.device)))
    return methods


def run_restore(cfg: Config, deadline: Deadline) -> dict:
    tasks = [TASKS_BY_NAME[n] for n in cfg.tasks]
    part: dict[str, Any] = {"status": "ok", "reason": None, "notes": [], "images": cfg.images, "crop": cfg.crop,
                            "tasks": tasks, "rows": [], "summary": [], "grids": {},
                            "lottery_settings": {"preset": cfg.restore_preset, "steps": cfg.restore_steps,
                                                 "lam": cfg.restore_lam, "ensembles": cfg.ensembles, "seed": 0},
                            "protocol": "y = op.simulate(x, seed=1234 + i) for kodim<i>; float observation, not "
                                        "clipped; metrics on the output clamped to [0, 1] vs the 8-bit ground truth"}
    try:
        import lotterycli.restoration.operators  # noqa: F401
    except Exception as exc:
        return {"status": "skipped", "reason": f"cannot import lotterycli.restoration.operators ({_err(exc)})", "notes": []}
    api, why = _import_api()
    if api is None:
        part["status"] = "partial"
        part["notes"].append(f"lottery rows skipped: {why}")
        log(f"restore: SKIP lottery: {why}")
    tiles_root = RESULTS_DIR / "tiles" / cfg.mode
    for idx, name in enumerate(cfg.images):
        i = image_index(name)
        x = center_crop(load_image(name), cfg.crop)
        size = (x.shape[-2], x.shape[-1])
        for spec in tasks:
            op = _make_operator(spec, x, seed=1234 + i)
            y = op.simulate(x, seed=1234 + i)
            grid = idx == cfg.grid_image
            tiles: list[dict] = []

            def record(method: str, img: torch.Tensor | None, seconds: float | None, extra: dict | None = None,
                       error: str | None = None):
                row = {"task": spec["name"], "method": method, "image": name, "psnr": None, "ssim": None,
                       "seconds": seconds, "error": error}
                if img is not None:
                    row.update(_metrics(img, x))
                    if grid:
                        slug = "".join(ch if ch.isalnum() else "_" for ch in method).strip("_").lower()
                        tiles.append({"label": method, "path": _save_tile(
                            img, tiles_root / spec["name"] / f"{len(tiles) + 1:02d}_{slug}.png")})
                row.update(extra or {})
                part["rows"].append(row)
                if error is None:
                    log(f"restore: {name} {spec['name']:12s} {method:16s} {row['psnr'] or float('nan'):6.2f} dB "
                        f"SSIM {row['ssim'] or float('nan'):.4f} {seconds or 0:7.1f} s")
                else:
                    log(f"restore: {name} {spec['name']:12s} {method:16s} FAILED {error}")

            if grid:
                tiles.append({"label": "observation", "path": _save_tile(
                    _display_observation(spec, y, size), tiles_root / spec["name"] / "00_observation.png")})
            if spec["task"] in ("denoise", "inpaint"):
                # The observation itself, as a reference row (not added to the grid twice).
                m = _metrics(y, x)
                part["rows"].append({"task": spec["name"], "method": "observation", "image": name,
                                     "seconds": 0.0, "error": None, **m})

            for method, fn in _baseline_methods(spec, cfg, op, y, size):
                if isinstance(fn, str):
                    part["notes"].append(f"{method} skipped: {fn}")
                    continue
                if deadline.passed():
                    part["status"] = "partial"
                    part["notes"].append(f"{name} {spec['name']} {method} skipped: time budget exhausted")
                    continue
                try:
                    img, secs = fn()
                    record(method, img, secs)
                except Exception as exc:
                    part["status"] = "partial"
                    record(method, None, None, error=_err(exc))

            if api is not None:
                _restore_ensembles(api, spec, cfg, op, y, x, deadline, part, name, record)
            if grid:
                tiles.append({"label": "ground truth", "path": _save_tile(x, tiles_root / spec["name"] / "99_ground_truth.png")})
                part["grids"][spec["name"]] = tiles
    part["summary"] = summarize_restore(part["rows"])
    return part


def _restore_ensembles(api, spec, cfg, op, y, x, deadline, part, name, record) -> None:
    """Fit the largest ensemble once; report K = k for every k asked as its first k members.

    Members use seeds seed, seed+1, ..., so without screening the first k members of a K-member
    run are exactly a k-member run (same fits), combined the same way. With screening (a preset's
    `candidates`), they are the first k of the K kept members: the K=max row is what the preset
    gives; a real k-member run would keep its own k best candidates. One run of max(K) members
    instead of sum(K).
    Members may run side by side (restore's default on a CPU), so the time reported for K = k is
    the pro-rata share k / K of the whole run's time.
    """
    from lotterycli.restoration.ensemble import blend_classical, combine

    k_max = max(cfg.ensembles)
    if deadline.passed():
        part["status"] = "partial"
        part["notes"].append(f"{name} {spec['name']} lottery skipped: time budget exhausted")
        return
    try:
        t0 = time.perf_counter()
        res = api.restore(y, op, preset=cfg.restore_preset, steps=cfg.restore_steps,
                          ensemble=k_max, lam=cfg.restore_lam, seed=0, device=cfg.device)
        wall = time.perf_counter() - t0
    except Exception as exc:
        part["status"] = "partial"
        for k in cfg.ensembles:
            record(f"lottery K={k}", None, None, error=_err(exc))
        traceback.print_exc(file=sys.stderr)
        return
    members = [_metrics(m, x)["psnr"] for m in res.members]
    note = "lottery K=k rows are the first k members of one K=max run; their time is k/max of that run's"
    if note not in part["notes"]:
        part["notes"].append(note)
    from lotterycli.config import load_task_config

    task_cfg = load_task_config(spec["task"]).restoration
    if getattr(res, "classical_image", None) is not None and task_cfg.classical_blend > 0:
        blend_note = (f"{spec['name']} rows: the result mixes {task_cfg.classical_blend:.0%} of the classical estimate "
                      f"into the members' mean (classical_blend); 'ensemble' in the member line means that result")
        if blend_note not in part["notes"]:
            part["notes"].append(blend_note)
    for k in sorted(cfg.ensembles):
        image = blend_classical(combine(res.members[:k], task_cfg.combine), getattr(res, "classical_image", None),
                                task_cfg.classical_blend)
        record(f"lottery K={k}", image, float(res.seconds) * k / k_max,
               {"wall_seconds": wall * k / k_max, "member_psnr": members[:k], "member_psnr_mean": _mean(members[:k]),
                "lam": getattr(res, "lam", None), "member_seeds": list(getattr(res, "seeds", []))[:k],
                "screened_out_seeds": list(getattr(res, "dropped_seeds", []))})


def summarize_restore(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("error") or r.get("psnr") is None:
            continue
        groups.setdefault((r["task"], r["method"]), []).append(r)
    return [{"task": t, "method": m, "psnr": _mean(r["psnr"] for r in rs), "ssim": _mean(r["ssim"] for r in rs),
             "seconds": _mean(r["seconds"] for r in rs), "n": len(rs)} for (t, m), rs in groups.items()]


# --------------------------------------------------------------------------- speed / memory suite

def lottery_cli() -> list[str]:
    """How to start the `lottery` command: the console script beside this Python, else the module."""
    exe = Path(sys.executable).parent / "lottery"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("lottery")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from lotterycli.cli import main; sys.argv[0] = 'lottery'; sys.exit(main())"]


def _subprocess_env() -> dict:
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def measure_rss(argv: list[str], timeout: float = 1800) -> dict:
    """Run argv; peak resident set size in MiB via `/usr/bin/time -v`, else getrusage in a wrapper."""
    out: dict[str, Any] = {"argv": argv, "max_rss_mb": None, "seconds": None, "returncode": None, "error": None}
    gnu_time = Path("/usr/bin/time")
    t0 = time.perf_counter()
    try:
        if gnu_time.exists():
            out["method"] = "/usr/bin/time -v"
            proc = subprocess.run([str(gnu_time), "-v", *argv], capture_output=True, text=True, timeout=timeout,
                                  env=_subprocess_env(), cwd=REPO_ROOT)
            for line in proc.stderr.splitlines():
                if "Maximum resident set size" in line:
                    out["max_rss_mb"] = int(line.rsplit(":", 1)[1]) / 1024.0
        else:
            out["method"] = "resource.getrusage(RUSAGE_CHILDREN) in a wrapper process"
            wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                       "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
                       "sys.exit(r.returncode)")
            proc = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True,
                                  timeout=timeout, env=_subprocess_env(), cwd=REPO_ROOT)
            for line in proc.stderr.splitlines():
                if line.startswith("MAXRSS"):
                    kb = int(line.split()[1])
                    out["max_rss_mb"] = (kb / 1024.0 / 1024.0) if sys.platform == "darwin" else kb / 1024.0
        out["returncode"] = proc.returncode
        if proc.returncode != 0:
            tail = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("\t")]
            out["error"] = f"exit {proc.returncode}: " + " | ".join(tail[-3:])[:400]
    except subprocess.TimeoutExpired:
        out["error"] = f"timed out after {timeout} s"
    except OSError as exc:
        out["error"] = _err(exc)
    out["seconds"] = time.perf_counter() - t0
    return out


def run_speed(cfg: Config, deadline: Deadline) -> dict:
    part: dict[str, Any] = {"status": "ok", "reason": None, "notes": [], "torch_threads": torch.get_num_threads(),
                            "step_rate": [], "presets": [], "decode": None, "rss": []}
    # 1. fitting steps per second
    from lotterycli.bitstream.header import ARCH_PRESETS

    from .profile_step import measure_step_rate

    if True:
        # the compression config's architecture (what users fit) and the method's reference sizes
        for label, arch in (("configs/compress.yaml", None), ("reference (docs/method.md)", ARCH_PRESETS[2])):
            for h, w, steps in cfg.step_rate_sizes:
                row = {"height": h, "width": w, "steps": steps, "steps_per_second": None, "error": None, "arch": label}
                try:
                    log(f"speed: step rate at {w}x{h} ({steps} steps, {label} architecture)")
                    row["steps_per_second"] = float(measure_step_rate(h, w, steps, cfg.device, arch=arch))
                    log(f"speed:   -> {row['steps_per_second']:.2f} steps/s")
                except Exception as exc:
                    row["error"] = _err(exc)
                    part["status"] = "partial"
                part["step_rate"].append(row)

    api, why = _import_api()
    if api is None:
        part["status"] = "partial"
        part["notes"].append(f"preset timing and decode time skipped: {why}")
    x_full = load_image("kodim01")
    lottery_file: Path | None = None
    tmp = Path(tempfile.mkdtemp(prefix="lottery-bench-"))
    try:
        # 2. wall time per preset
        if api is not None:
            x = center_crop(x_full, cfg.preset_crop)
            for preset in cfg.presets:
                row = {"preset": preset, "height": x.shape[-2], "width": x.shape[-1], "seconds": None, "steps": None,
                       "bpp": None, "psnr": None, "error": None}
                if deadline.passed():
                    row["error"] = "skipped: time budget exhausted"
                else:
                    try:
                        log(f"speed: compress preset {preset} at {x.shape[-1]}x{x.shape[-2]}")
                        t0 = time.perf_counter()
                        res = api.compress(x, preset=preset, seed=0, device=cfg.device)
                        row.update(seconds=time.perf_counter() - t0, steps=int(res.steps), bpp=float(res.bpp),
                                   psnr=float(res.psnr), fit_seconds=float(res.seconds))
                        log(f"speed:   -> {row['seconds']:.1f} s, {row['steps']} steps")
                    except Exception as exc:
                        row["error"] = _err(exc)
                        part["status"] = "partial"
                part["presets"].append(row)
            part["presets"].append(_restore_preset_row(cfg, x, deadline))
            # 3. decode time of a 768x512 file
            h, w = x_full.shape[-2:]
            dec = {"height": h, "width": w, "n_bytes": None, "seconds": None, "all_seconds": [],
                   "repeats": cfg.decode_repeats, "encode_steps": cfg.decode_steps, "error": None}
            if deadline.passed():
                dec["error"] = "skipped: time budget exhausted"
            else:
                try:
                    log(f"speed: encode kodim01 {w}x{h} ({cfg.decode_steps} steps) for the decode timing")
                    res = api.compress(x_full, preset="fast", steps=cfg.decode_steps, seed=0, device=cfg.device)
                    data = bytes(res.data)
                    dec["n_bytes"] = len(data)
                    lottery_file = tmp / "kodim01.lottery"
                    lottery_file.write_bytes(data)
                    times = []
                    for _ in range(cfg.decode_repeats):
                        t0 = time.perf_counter()
                        api.decompress(data)
                        times.append(time.perf_counter() - t0)
                    dec["all_seconds"] = times
                    dec["seconds"] = statistics.median(times)
                    log(f"speed:   -> decode {dec['seconds']:.2f} s (median of {len(times)})")
                    # the same file through the command line: a fresh process (imports, tables) each time
                    cli_times = []
                    for _ in range(cfg.decode_repeats):
                        t0 = time.perf_counter()
                        subprocess.run([*lottery_cli(), "decompress", str(lottery_file), "-o", str(tmp / "k.png"),
                                        "--quiet", "--force"], check=True, capture_output=True)
                        cli_times.append(time.perf_counter() - t0)
                    dec["cli_seconds"] = statistics.median(cli_times)
                    log(f"speed:   -> lottery decompress (whole process) {dec['cli_seconds']:.2f} s")
                except Exception as exc:
                    dec["error"] = _err(exc)
                    part["status"] = "partial"
            part["decode"] = dec
        # 4. peak RSS of the CLI commands
        part["rss"] = _rss_commands(cfg, tmp, x_full, lottery_file, deadline)
        if any(r.get("error") for r in part["rss"]):
            part["status"] = "partial"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    part["notes"].append(f"torch threads in the benchmark process: {torch.get_num_threads()}; CLI subprocesses "
                         f"inherit OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')!r}")
    return part


def _restore_preset_row(cfg: Config, x: torch.Tensor, deadline: Deadline) -> dict:
    """Wall time of `restore` with the balanced preset (denoise sigma 25, protocol noise for kodim01)."""
    from lotterycli.api import restore
    from lotterycli.config import load_task_config
    from lotterycli.restoration.operators import Denoise

    cfg_d = load_task_config("denoise", preset="balanced")
    row = {"preset": f"restore denoise-s25 balanced (K={cfg_d.restoration.ensemble})", "height": x.shape[-2], "width": x.shape[-1],
           "seconds": None, "steps": None, "bpp": None, "psnr": None, "error": None}
    if deadline.passed():
        row["error"] = "skipped: time budget exhausted"
        return row
    try:
        op = Denoise(25 / 255)
        y = op.simulate(x, 1234 + 1)
        log(f"speed: restore preset balanced at {x.shape[-1]}x{x.shape[-2]}")
        t0 = time.perf_counter()
        res = restore(y, op, preset="balanced", seed=0, device=cfg.device)
        row.update(seconds=time.perf_counter() - t0, steps=cfg_d.steps, psnr=_metrics(res.image, x)["psnr"])
        log(f"speed:   -> {row['seconds']:.1f} s")
    except Exception as exc:
        row["error"] = _err(exc)
    return row


def _rss_commands(cfg: Config, tmp: Path, x_full: torch.Tensor, lottery_file: Path | None, deadline: Deadline) -> list[dict]:
    from lotterycli.images import write_npy, write_png

    cli = lottery_cli()
    crop = center_crop(x_full, cfg.rss_crop)
    png = tmp / "crop.png"
    write_png(png, crop)
    out_lottery = tmp / "crop.lottery"
    rows = []
    steps = str(cfg.rss_steps)
    dev = ["--device", cfg.device]
    # Noisy observation for `lottery restore` (sigma 25, seed 1234 + 1), stored losslessly as float .npy.
    try:
        from lotterycli.restoration.operators import Denoise

        noisy = Denoise(sigma=25 / 255).simulate(crop, seed=1235)
    except Exception:
        g = torch.Generator().manual_seed(1235)
        noisy = crop + torch.randn(crop.shape, generator=g) * (25 / 255)
    npy = tmp / "noisy.npy"
    write_npy(npy, noisy)
    commands = [
        ("compress", [*cli, "compress", str(png), "-o", str(out_lottery), "--preset", "fast", "--steps", steps,
                      "--quiet", "--force", *dev]),
        ("decompress", None),
        ("restore", [*cli, "restore", str(npy), "--task", "denoise", "--sigma", "25", "-o", str(tmp / "restored.png"),
                     "--preset", "fast", "--steps", steps, "--ensemble", "1", "--quiet", "--force", *dev]),
    ]
    for name, argv in commands:
        if name == "decompress":
            src = out_lottery if out_lottery.exists() else lottery_file
            if src is None or not src.exists():
                rows.append({"command": name, "argv": [], "max_rss_mb": None, "seconds": None, "returncode": None,
                             "method": "", "error": "no .lottery file to decode (compress failed)"})
                continue
            argv = [*cli, "decompress", str(src), "-o", str(tmp / "decoded.png"), "--quiet", "--force"]
        if deadline.passed():
            rows.append({"command": name, "argv": argv, "max_rss_mb": None, "seconds": None, "returncode": None,
                         "method": "", "error": "skipped: time budget exhausted"})
            continue
        log(f"speed: peak RSS of `lottery {name}`")
        r = measure_rss(argv)
        r["command"] = name
        r["argv"] = [a.replace(str(tmp), "$TMP") for a in argv]
        rows.append(r)
        if r["error"]:
            log(f"speed:   FAILED {r['error']}")
        else:
            log(f"speed:   -> {r['max_rss_mb']:.0f} MiB peak RSS, {r['seconds']:.1f} s")
    return rows


# --------------------------------------------------------------------------- orchestration

def run_engine(cfg: Config, deadline: Deadline) -> dict:
    """benchmarks.engine: this checkout and the baseline commit, at 256x256 and 768x512."""
    from . import engine

    part: dict[str, Any] = {"status": "ok", "reason": None, "notes": [], "baseline": cfg.engine_baseline, "rows": []}
    import tempfile as _tempfile

    with _tempfile.TemporaryDirectory(prefix="lottery-engine-") as tmp:
        trees = {"this checkout": REPO_ROOT / "src"}
        try:
            trees[cfg.engine_baseline] = engine.baseline_tree(cfg.engine_baseline, Path(tmp))
        except Exception as exc:
            part["status"] = "partial"
            part["notes"].append(f"baseline {cfg.engine_baseline} not measured: {_err(exc)}")
        for width, height in cfg.engine_sizes:
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for _ in range(cfg.engine_rounds):  # alternate the trees: ratios of one sitting
                for name, src in trees.items():
                    if deadline.passed():
                        part["status"] = "partial"
                        break
                    log(f"engine: {name} at {width}x{height}")
                    try:
                        runs[name].append(engine.probe(src, height, width, cfg.engine_steps, torch.get_num_threads()))
                    except Exception as exc:
                        part["status"] = "partial"
                        part["notes"].append(f"{name} {width}x{height}: {_err(exc)}")
            for name, rows in runs.items():
                if rows:
                    median = sorted(rows, key=lambda r: r["steps_per_second"])[len(rows) // 2]
                    part["rows"].append({"tree": name, "width": width, "height": height, "threads": torch.get_num_threads(),
                                         "rounds": len(rows), "all_steps_per_second": [r["steps_per_second"] for r in rows],
                                         **median})
    # restoration's member batch (this checkout only): operations per member, member-steps/s
    width, height = cfg.engine_sizes[0]
    part["members"] = []
    for members in cfg.engine_members:
        if deadline.passed():
            part["status"] = "partial"
            break
        log(f"engine: {members} members batched at {width}x{height}")
        try:
            part["members"].append(engine.member_probe(height, width, members, max(3, cfg.engine_steps // 8),
                                                       torch.get_num_threads()))
        except Exception as exc:
            part["status"] = "partial"
            part["notes"].append(f"{members} members batched: {_err(exc)}")
    return part


def run_load(cfg: Config, deadline: Deadline) -> dict:
    """benchmarks.load on the kodim01 crop."""
    from lotterycli.images import write_png

    from . import load

    with tempfile.TemporaryDirectory(prefix="lottery-load-") as tmp:
        png = Path(tmp) / "crop.png"
        write_png(png, center_crop(load_image("kodim01"), cfg.load_crop))
        runs = [load.measure(png, Path(tmp), cfg.load_steps, dict(os.environ)) for _ in range(cfg.load_repeats)]
    solo = statistics.median(r["solo_s"] for r in runs)
    return {"status": "ok", "reason": None, "notes": [], "crop": cfg.load_crop, "steps": cfg.load_steps, "runs": runs,
            "solo_s": solo, "pair_ratio": statistics.median(max(r["pair_s"]) for r in runs) / solo,
            "beside_busy_ratio": statistics.median(r["beside_busy_s"] for r in runs) / solo,
            "same_file": all(r["same_file"] for r in runs)}


def run_batch(cfg: Config, deadline: Deadline) -> dict:
    """benchmarks.batch: a shell loop, `batch --jobs 1/2` and `batch --ray` on the protocol's crops."""
    from . import batch

    try:
        import ray  # noqa: F401

        has_ray = True
    except ImportError:
        has_ray = False
    result = batch.measure(cfg.batch_steps, cfg.crop or 256, len(cfg.images), has_ray, log=lambda m: log(f"batch: {m}"))
    notes = [] if has_ray else ["the Ray run was skipped: ray is not installed (pip install 'lotterycli[ray]')"]
    return {"status": "ok", "reason": None, "notes": notes, **result}


PART_RUNNERS = {"compress": run_compress, "restore": run_restore, "speed": run_speed, "engine": run_engine,
                "load": run_load, "batch": run_batch}


def _two_sittings(new: dict, old: dict, **merged_fields) -> dict:
    """`new` with `merged_fields`, and the bookkeeping of a part measured in two sittings: seconds
    summed, notes and commands of both, partial if either was."""
    merged = dict(new, **merged_fields, seconds=old.get("seconds", 0.0) + new.get("seconds", 0.0),
                  notes=list(dict.fromkeys(old.get("notes", []) + new.get("notes", []))),
                  command="; ".join(c for c in (old.get("command"), new.get("command")) if c))
    if "partial" in (old.get("status"), new.get("status")):
        merged["status"] = "partial"
    return merged


def add_restore_images(new: dict, old: dict) -> dict:
    """The restore part of a run on more images: `old`'s rows for images not in `new`, then `new`'s.

    For running the protocol's images in several sittings (`--add-images`); tasks, crop and
    settings must match. The image grids of the first sitting are kept.
    """
    same = all(new.get(k) == old.get(k) for k in ("crop", "tasks", "lottery_settings"))
    if not same:
        raise ValueError("--add-images: crop, tasks and lottery settings must match the earlier restore part")
    kept = [r for r in old["rows"] if r["image"] not in new["images"]]
    images = sorted(set(old["images"]) | set(new["images"]))
    return _two_sittings(new, old, rows=kept + new["rows"], images=images, summary=summarize_restore(kept + new["rows"]),
                         grids=old.get("grids") or new.get("grids", {}))


def add_restore_tasks(new: dict, old: dict) -> dict:
    """The restore part with some tasks re-run (`--add-tasks`): `old`'s rows, task list and image
    grids for the tasks not in `new`, then `new`'s. Crop, images and lottery settings must match.

    Why: re-measuring one task after a change to its config (about 30 minutes for inpainting on
    kodim01-08) without re-running the others; the part's command then names both runs.
    """
    same = all(new.get(k) == old.get(k) for k in ("crop", "images", "lottery_settings"))
    if not same:
        raise ValueError("--add-tasks: crop, images and lottery settings must match the earlier restore part")
    names = {t["name"] for t in new["tasks"]}
    rows = [r for r in old["rows"] if r["task"] not in names] + new["rows"]
    tasks = [t for t in old["tasks"] if t["name"] not in names] + new["tasks"]
    grids = {k: v for k, v in (old.get("grids") or {}).items() if k not in names}
    grids.update(new.get("grids") or {})
    return _two_sittings(new, old, rows=rows, tasks=tasks, grids=grids, summary=summarize_restore(rows))


def add_compress_images(new: dict, old: dict) -> dict:
    """The compress part of a run on more images: `old`'s points for images not in `new`, then
    `new`'s, with curves and BD-rates recomputed (settings must match)."""
    if new.get("crop") != old.get("crop") or new.get("lottery_settings") != old.get("lottery_settings"):
        raise ValueError("--add-images: crop and lottery settings must match the earlier compress part")
    kept = [p for p in old["points"] if p["image"] not in new["images"]]
    points = kept + new["points"]
    images = sorted(set(old["images"]) | set(new["images"]))
    curves = _curves(points)
    return _two_sittings(new, old, points=points, images=images, curves=curves, bd_rate=_bd_table(points, curves))


def run_merge(results: dict, previous: dict, parts: list[str], add_images: bool = False,
              add_tasks: bool = False) -> dict:
    """Add the parts of an earlier results dict of the same mode that were not re-run now.

    add_images: the restore part re-run now covers other images; combine it with the earlier one.
    add_tasks: the restore part re-run now covers some of its tasks; keep the earlier rows of the others.
    """
    if previous.get("mode") != results["mode"]:
        return results
    if add_tasks and "restore" in parts and isinstance(previous.get("parts", {}).get("restore"), dict):
        results["parts"]["restore"] = add_restore_tasks(results["parts"]["restore"], previous["parts"]["restore"])
    if add_images and "restore" in parts and isinstance(previous.get("parts", {}).get("restore"), dict):
        results["parts"]["restore"] = add_restore_images(results["parts"]["restore"], previous["parts"]["restore"])
    if add_images and "compress" in parts and isinstance(previous.get("parts", {}).get("compress"), dict):
        results["parts"]["compress"] = add_compress_images(results["parts"]["compress"], previous["parts"]["compress"])
    for name, p in previous.get("parts", {}).items():
        if name not in parts:
            results["parts"][name] = p
            results["skipped"].extend(s for s in previous.get("skipped", []) if s.get("part") == name)
    results["merged_from_previous"] = sorted(set(previous.get("parts", {})) - set(parts))
    return validate_results(sanitize(results))


def run(cfg: Config, parts: list[str], command: str, previous: dict | None = None) -> dict:
    machine = machine_info(cfg.device)
    budget = estimate_budget(cfg, parts)
    deadline = Deadline(cfg.time_limit_s)
    results: dict[str, Any] = {
        "schema": SCHEMA, "mode": cfg.mode, "command": command, "created": "", "machine": machine,
        "budget": budget, "config": dataclasses.asdict(cfg), "parts": {}, "skipped": [], "wall_seconds": 0.0,
    }
    for name in parts:
        log(f"=== part {name} ===")
        t0 = time.perf_counter()
        try:
            part = PART_RUNNERS[name](cfg, deadline)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            part = {"status": "skipped", "reason": f"crashed: {_err(exc)}", "notes": []}
        part["machine"] = machine
        part["command"] = command
        part["seconds"] = time.perf_counter() - t0
        results["parts"][name] = part
        if part["status"] == "skipped":
            results["skipped"].append({"part": name, "reason": part["reason"]})
            log(f"part {name} SKIPPED: {part['reason']}")
        else:
            for n in part.get("notes", []):
                if "skipped" in n or "failed" in n:
                    results["skipped"].append({"part": name, "reason": n})
        budget["breakdown_measured"] = {**budget.get("breakdown_measured", {}), name: part["seconds"]}
    results["wall_seconds"] = deadline.elapsed()
    budget["wall_seconds"] = results["wall_seconds"]
    results["created"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    if previous is not None:
        return run_merge(results, previous, parts)
    return validate_results(sanitize(results))


def write_json(d: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(sanitize(d), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


def load_json(path: Path) -> dict:
    return validate_results(json.loads(Path(path).read_text()))


def results_path(mode: str) -> Path:
    """Where a run's results go by default: the protocol's (`--full`) or a smoke run's (`--quick`)."""
    return RESULTS_DIR / ("protocol.json" if mode == "full" else "quick.json")


def default_docs_path(mode: str) -> Path:
    """docs/benchmarks.md, except that a quick run never replaces the page of a full run."""
    main = DOCS_DIR / "benchmarks.md"
    if mode == "quick" and main.exists() and "lottery-bench mode=full" in main.read_text(errors="replace")[:2000]:
        return DOCS_DIR / "benchmarks-quick.md"
    return main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke scale, designed for < 20 min on 2 CPU cores")
    mode.add_argument("--full", action="store_true", help="the full protocol (8 images, 256x256, all tasks)")
    p.add_argument("--only", action="append", choices=list(PART_RUNNERS), metavar="PART",
                   help="run only this part (compress, restore, speed, engine, load, batch); repeatable; other parts of an existing "
                        "results file of the same mode are kept")
    p.add_argument("--results", type=Path, metavar="FILE", help="re-render the docs from this results JSON, no computing")
    p.add_argument("--out", type=Path, metavar="FILE", help="results JSON (default benchmarks/results/<mode>.json)")
    p.add_argument("--docs", type=Path, metavar="FILE", help="markdown page (default docs/benchmarks.md)")
    p.add_argument("--img-dir", type=Path, metavar="DIR", help="plot directory (default docs/img)")
    p.add_argument("--no-docs", action="store_true", help="write the JSON only")
    p.add_argument("--budget", action="store_true", help="print the plan and its estimated budget, then exit")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--images", type=int, metavar="N", help="use the first N of kodim01-08")
    p.add_argument("--image-names", metavar="A,B", help="comma-separated image names, e.g. kodim01,kodim05")
    p.add_argument("--crop", type=int, help="centre crop size (0 = full image)")
    p.add_argument("--tasks", metavar="A,B", help=f"restoration tasks, from {','.join(TASKS_BY_NAME)}")
    p.add_argument("--steps", type=int, help="lottery fitting steps for compress and restore (default: mode's)")
    p.add_argument("--lambdas", metavar="L1,L2", help="compression lambdas")
    p.add_argument("--ensembles", metavar="K1,K2", help="restoration ensemble sizes, e.g. 1,4")
    p.add_argument("--presets", metavar="A,B", help="compression presets timed by the speed part (default fast,balanced,best)")
    p.add_argument("--add-images", action="store_true",
                   help="with --only restore or compress: add this run's images to that part already in the results file")
    p.add_argument("--add-tasks", action="store_true",
                   help="with --only restore: this run's tasks replace those tasks' rows in the results file, "
                        "the other tasks' rows are kept")
    p.add_argument("--dip-iters", type=int, help="deep image prior iterations (0 = leave DIP out)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for this process")
    p.add_argument("--keep-files", type=Path, metavar="DIR",
                   help="write each lottery compression point's file to DIR/<image>-lam=<lambda>.lottery")
    p.add_argument("--time-limit", type=float, metavar="MIN", help="skip items still pending after MIN minutes "
                   "(quick default 17, full none)")
    return p


def config_from_args(args) -> Config:
    cfg = full_config() if args.full else quick_config()
    cfg.device = resolve_device(args.device)
    if args.images is not None:
        cfg.images = list_images(args.images)
    if args.image_names:
        cfg.images = [s.strip() for s in args.image_names.split(",") if s.strip()]
    if args.crop is not None:
        cfg.crop = args.crop or None
    if args.tasks:
        names = [s.strip() for s in args.tasks.split(",") if s.strip()]
        bad = [n for n in names if n not in TASKS_BY_NAME]
        if bad:
            raise SystemExit(f"unknown task(s) {bad}; choose from {', '.join(TASKS_BY_NAME)}")
        cfg.tasks = names
    if args.steps is not None:
        cfg.compress_steps = cfg.restore_steps = args.steps
    if args.lambdas:
        cfg.lambdas = [float(s) for s in args.lambdas.split(",")]
    if args.ensembles:
        cfg.ensembles = [int(s) for s in args.ensembles.split(",")]
    if args.dip_iters is not None:
        cfg.dip_iters = args.dip_iters
    if args.presets:
        cfg.presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    if args.keep_files is not None:
        cfg.keep_files = str(args.keep_files.resolve())
    if args.time_limit is not None:
        cfg.time_limit_s = args.time_limit * 60 if args.time_limit > 0 else None
    return cfg


def render(d: dict, args) -> None:
    from . import report

    docs = args.docs or default_docs_path(d["mode"])
    img_dir = args.img_dir or (DOCS_DIR / "img")
    written = report.render_docs(d, docs, img_dir, results_path=getattr(args, "_results_path", None))
    for w in written:
        log(f"wrote {w}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.results:
        d = load_json(args.results)
        args._results_path = args.results
        render(d, args)
        return 0
    if not (args.quick or args.full):
        build_parser().print_usage(sys.stderr)
        print("choose --quick or --full (or --results FILE to re-render docs)", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    parts = args.only or list(PART_RUNNERS)
    parts = [p for p in PART_RUNNERS if p in parts]
    budget = estimate_budget(cfg, parts)
    print(format_budget(cfg, budget), file=sys.stderr, flush=True)
    if args.budget:
        return 0
    out = args.out or results_path(cfg.mode)
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    d = run(cfg, parts, command.strip())
    if args.only and out.exists():
        # Read the earlier results only now, so two --only runs of different parts started side by
        # side both end up in the file (the later writer keeps the earlier one's part).
        try:
            d = run_merge(d, load_json(out), parts, add_images=args.add_images, add_tasks=args.add_tasks)
        except Exception as exc:
            log(f"not merging with {out}: {_err(exc)}")
    write_json(d, out)
    log(f"wrote {out}")
    args._results_path = out
    if not args.no_docs:
        render(d, args)
    log(f"done in {d['wall_seconds'] / 60:.1f} min (estimated {budget['estimated_seconds'] / 60:.1f} min)")
    return 0
