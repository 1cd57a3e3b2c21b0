"""The speed part: fitting steps/s, wall time per preset, decode time of a 768x512 file, peak RSS
of `lottery compress|decompress|restore` subprocesses."""


from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .data import REPO_ROOT, center_crop, load_image
from .suite import Config, Deadline, error_text, image_metrics, import_api, log


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
        out["error"] = error_text(exc)
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
                    row["error"] = error_text(exc)
                    part["status"] = "partial"
                part["step_rate"].append(row)

    api, why = import_api()
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
                        row["error"] = error_text(exc)
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
                    dec["error"] = error_text(exc)
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
        row.update(seconds=time.perf_counter() - t0, steps=cfg_d.steps, psnr=image_metrics(res.image, x)["psnr"])
        log(f"speed:   -> {row['seconds']:.1f} s")
    except Exception as exc:
        row["error"] = error_text(exc)
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


