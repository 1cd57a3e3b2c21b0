"""Shared fixtures: tiny images made on the fly, a CLI runner, the optional Kodak set.

Everything here is small on purpose (the suite runs on 2 shared CPU cores). Torch and the CLI
subprocesses run single-threaded unless a test asks otherwise: with several threads on a busy
2-core machine, OpenMP oversubscription makes each tiny op ~10x slower.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from lotterycli.bitstream.header import ARCH_PRESETS
from lotterycli.fitting.schedule import Schedule
from lotterycli.model.architecture import Architecture

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
KODAK_DIR = (REPO / ".." / "shared" / "data" / "kodak").resolve()
LOTTERY = Path(sys.executable).with_name("lottery")


# -- model settings for tests -----------------------------------------------------------------------
def arch(**changes) -> Architecture:
    """The method's reference sizes (format preset 2), with `changes`."""
    from dataclasses import replace

    return replace(ARCH_PRESETS[2], **changes)


def shipped_arch(**changes) -> Architecture:
    """The sizes the shipped task configs use (format preset 1), with `changes`."""
    from dataclasses import replace

    return replace(ARCH_PRESETS[1], **changes)


# The method's reference schedule (Adam 1e-2, scores 1e-1, cosine to 5 %, 10 % hard-rounded steps),
# with every post-fit stage off: what the unit tests of the fitting loop fit with.
TEST_SCHEDULE = dict(
    steps=10, lr=1e-2, latent_lr_scale=1.0, score_lr=1e-1, lr_floor=0.05, hard_fraction=0.1,
    temperature=(0.3, 0.1), noise=(2.0, 1.0), grad_clip=10.0, eval_every=25, average_fraction=0.0,
    average_every=1, pixel_fraction=1.0, arm_refit_steps=0, arm_refit_lr=5e-3, arm_scratch_widths=(),
    arm_scratch_steps=600, arm_scratch_lr=1e-2, arm_scratch_min_share=0.0,
    network_refinement=False,
)


def schedule(**changes) -> Schedule:
    """TEST_SCHEDULE with `changes`."""
    return Schedule(**{**TEST_SCHEDULE, **changes})


# -- image makers (pure functions, usable from tests directly) ---------------------------------
def scene(height: int = 32, width: int = 32) -> torch.Tensor:
    """(3, H, W) float in [0, 1]: smooth colour gradients plus a sharp-edged rectangle."""
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.5 + 0.3 * (xx - yy)], 0)
    img[:, height // 4 : height // 2 + 2, width // 3 : 2 * width // 3 + 2] = np.array([0.85, 0.25, 0.15])[:, None, None]
    return torch.tensor(img, dtype=torch.float32).clamp(0, 1)


def edges_scene(height: int = 32, width: int = 32) -> torch.Tensor:
    """(3, H, W): piecewise-constant channels with straight and diagonal step edges."""
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    img = np.zeros((3, height, width))
    img[0] = xx >= (13 * width) // 32
    img[1] = (yy >= (9 * height) // 32) * 0.8 + 0.1
    img[2] = ((xx + yy) >= (30 * (height + width)) // 64) * 0.7 + 0.2
    return torch.tensor(img, dtype=torch.float32)


def to_uint8_array(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) float -> H x W x 3 uint8."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def save_png(path: Path, x: torch.Tensor) -> Path:
    Image.fromarray(to_uint8_array(x), mode="RGB").save(path)
    return path


def png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def write_png16_rgb(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write RGB;16)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


# -- image fixtures -----------------------------------------------------------------------------
@pytest.fixture
def rgb32(tmp_path) -> Path:
    """32x32 RGB PNG: gradients + edges."""
    return save_png(tmp_path / "rgb32.png", scene(32, 32))


@pytest.fixture
def odd_png(tmp_path) -> Path:
    """An odd-sized RGB PNG: 37 wide, 53 high."""
    return save_png(tmp_path / "odd.png", scene(53, 37))


@pytest.fixture
def gray_png(tmp_path) -> Path:
    arr = to_uint8_array(scene(24, 24))[..., 0]
    path = tmp_path / "gray.png"
    Image.fromarray(arr, mode="L").save(path)
    return path


@pytest.fixture
def rgba_png(tmp_path) -> Path:
    rgb = to_uint8_array(scene(24, 24))
    alpha = np.full(rgb.shape[:2] + (1,), 200, dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA").save(path)
    return path


@pytest.fixture
def gray16_png(tmp_path) -> Path:
    """16-bit grayscale PNG (Pillow mode I;16) with values up to 65535."""
    arr = (scene(24, 24)[1].numpy() * 65535).round().astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def rgb16_png(tmp_path) -> Path:
    arr = (scene(24, 24).permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    return write_png16_rgb(tmp_path / "rgb16.png", arr)


@pytest.fixture
def tiny_png(tmp_path) -> Path:
    """8x8: smaller than the 16x16 minimum."""
    return save_png(tmp_path / "tiny.png", scene(8, 8))


@pytest.fixture
def text_png(tmp_path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    return path


@pytest.fixture
def kodak() -> Path:
    """The Kodak set directory (../shared/data/kodak); skips when it is absent."""
    if not KODAK_DIR.is_dir() or not any(KODAK_DIR.glob("*.png")):
        pytest.skip(f"Kodak images not found at {KODAK_DIR}")
    return KODAK_DIR


# -- running the CLI ----------------------------------------------------------------------------
@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected exactly one stdout line, got {self.stdout!r}"
        return json.loads(lines[0])

    def assert_one_line_error(self) -> str:
        """Non-zero exit, exactly one stderr line starting with 'error:', no traceback."""
        assert self.returncode != 0, (self.stdout, self.stderr)
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert len(lines) == 1, f"expected one stderr line, got {self.stderr!r}"
        assert lines[0].startswith("error: "), lines[0]
        return lines[0]


def run_lottery(*args, cwd: Path | None = None, threads: int = 1, timeout: float = 120) -> CliResult:
    """Run the installed `lottery` console script in a subprocess."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env.pop("LOTTERY_DEBUG", None)
    env["COLUMNS"] = "200"
    cmd = [str(LOTTERY)] if LOTTERY.exists() else [sys.executable, "-c", "from lotterycli.cli import main; main()"]
    proc = subprocess.run(
        cmd + [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_inprocess(*args) -> CliResult:
    """Run `lotterycli.cli.main` in this process, as the console script would (argv, exit status,
    stdout, stderr), without paying a torch import per call. Warnings state is restored after."""
    import contextlib
    import io
    import warnings

    from lotterycli import cli

    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    sys.argv = ["lottery"] + [str(a) for a in args]
    code = 0
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("always")  # a fresh process shows every warning once
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def lottery():
    """The CLI in a subprocess: lottery("compress", path, "--steps", 5) -> CliResult."""
    return run_lottery


@pytest.fixture
def cli():
    """The CLI in-process (same argv/exit/stdout/stderr contract, much cheaper)."""
    return run_inprocess
