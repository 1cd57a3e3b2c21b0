"""What every benchmark suite shares: the protocol's settings (`Config`), the restoration tasks,
the reference figures, and small helpers (logging, deadlines, metrics, the machine's description)."""


from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import baselines as B
from .data import REPO_ROOT, list_images
from .suite import *  # noqa: F403 (fixed below)

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


def mean_of(xs) -> float | None:
    xs = [x for x in xs if x is not None and isinstance(x, (int, float)) and math.isfinite(x)]
    return statistics.fmean(xs) if xs else None


def error_text(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}".strip()[:500]


def image_metrics(img: torch.Tensor, gt: torch.Tensor) -> dict:
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


def import_api() -> tuple[Any, str | None]:
    try:
        from lotterycli import api  # noqa: F401

        for name in ("compress", "decompress", "restore"):
            if not hasattr(api, name):
                return None, f"lotterycli.api has no `{name}` yet"
        return api, None
    except Exception as exc:  # ImportError, or an error inside a half-written module
        return None, f"cannot import lotterycli.api ({error_text(exc)})"


def preset_steps(preset: str, task: str = "compress") -> tuple[int, bool]:
    """(steps, known): the preset's step count from the library's task config, else an assumption."""
    try:
        from lotterycli.config import load_task_config

        return int(load_task_config(task, preset=preset).steps), True
    except Exception:
        return ASSUMED_PRESET_STEPS.get(preset, 2000), False


