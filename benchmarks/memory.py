"""Peak memory of a fit against the image's size: what `fitting.memory` budgets with.

    python -m benchmarks.memory [--sizes 256x256,512x512,768x512] [--steps 30] [--threads 1] [--json OUT]
    python -m benchmarks.memory --sizes 1536x2048,1920x2560 --steps 10 --cases compress   # fitted in bands
    python -m benchmarks.memory --fractions 0.125,0.5,1 [--sizes 768x512]


Each point runs in a fresh process: a whole `compress_image` (fit, ARM refit, quantization, writing
and decoding the file), and a denoising `restore_image` of two members fitted one after the other
and side by side. The peak is the process's VmHWM less what it held before the work (torch and
the package imported). Per pixel: the slope between the two largest sizes, which is what
`fitting.memory.FIT_BYTES_PER_PIXEL` must cover (the smallest sizes carry a fixed part). Sizes
above 2 megapixels are fitted in bands of rows (`model.bands`): there the slope is what
`fitting.memory.BANDED_BYTES_PER_PIXEL` must cover. `--cases` picks some of compress, denoise,
denoise x2.
`--fractions`: instead, the compression fit alone (3 steps) with each `pixel_fraction`: how much
of the peak the pixels synthesised per step account for.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from .data import REPO_ROOT

# Both probes start so: the process's peak resident memory (VmHWM), in bytes.
PROBE_HEAD = r'''
import json, torch
from dataclasses import replace
torch.set_num_threads(THREADS)
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
from lotterycli.config import load_task_config
'''

PROBE = PROBE_HEAD + r'''
from lotterycli.compression.encoder import compress_image
from lotterycli.restoration.ensemble import restore_image
from lotterycli.restoration.operators import Denoise
x = torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
op = Denoise(sigma=0.1)
y = op.simulate(x, 0)
base = hwm()
if TASK == "compress":
    compress_image(x, load_task_config("compress", overrides={"steps": STEPS}), device="cpu")
else:
    cfg = load_task_config("denoise", overrides={"steps": STEPS, "ensemble": 2, "candidates": 0})
    restore_image(y, op, cfg, lam=5e-3, device="cpu", workers=WORKERS, bitstream=True)
print(json.dumps({"peak_bytes": hwm() - base}))
'''

FRACTION_PROBE = PROBE_HEAD + r'''
from lotterycli.fitting.loop import Fitter
from lotterycli.fitting.losses import fit_distortion
from lotterycli.model.lottery_model import LotteryModel
x = torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
cfg = load_task_config("compress", overrides={"steps": 100})
torch.manual_seed(0)
model = LotteryModel(HEIGHT, WIDTH, cfg.architecture, 0, 0.3)
base = hwm()
Fitter(model, fit_distortion(x, FRACTION), cfg.lam, replace(cfg.schedule, pixel_fraction=FRACTION), None,
       rate_thread=False).advance(3)
print(json.dumps({"peak_bytes": hwm() - base}))
'''

CASES = {"compress": ("compress", 1), "denoise": ("denoise", 1), "denoise x2": ("denoise", 2)}  # (task, members at once)


def _run(code: str) -> int:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def measure_fraction(fraction: float, height: int, width: int, threads: int) -> int:
    return _run(FRACTION_PROBE.replace("THREADS", str(threads)).replace("HEIGHT", str(height))
                .replace("WIDTH", str(width)).replace("FRACTION", repr(fraction)))


def measure(task: str, workers: int, height: int, width: int, steps: int, threads: int) -> int:
    code = (PROBE.replace("THREADS", str(threads)).replace("HEIGHT", str(height)).replace("WIDTH", str(width))
            .replace("STEPS", str(steps)).replace("TASK", repr(task)).replace("WORKERS", str(workers)))
    return _run(code)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256x256,512x512,768x512")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--fractions", default=None, help="comma-separated pixel fractions: the fit alone, 3 steps")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    args = ap.parse_args(argv)
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}: choose from {', '.join(CASES)}")
    cases = [CASES[c] for c in args.cases.split(",")]
    sizes = sorted((tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")), key=lambda s: s[0] * s[1])
    if args.fractions:
        print("| size | pixel_fraction | peak MB of 3 fitting steps |")
        print("|---|---:|---:|")
        for h, w in sizes:
            for fraction in (float(f) for f in args.fractions.split(",")):
                peak = measure_fraction(fraction, h, w, args.threads)
                print(f"| {h}x{w} | {fraction:g} | {peak / 2**20:.0f} |", flush=True)
        return
    rows = []
    print("| task | members at once | size | peak MB | KB per pixel |")
    print("|---|---:|---|---:|---:|")
    for task, workers in cases:
        for h, w in sizes:
            peak = measure(task, workers, h, w, args.steps, args.threads)
            rows.append({"task": task, "members_at_once": workers, "height": h, "width": w, "peak_bytes": peak})
            print(f"| {task} | {workers} | {h}x{w} | {peak / 2**20:.0f} | {peak / (h * w) / 1024:.2f} |", flush=True)
    slopes = {}
    if len(sizes) >= 2:
        (h0, w0), (h1, w1) = sizes[-2], sizes[-1]
        for task, workers in cases:
            p = {(r["height"], r["width"]): r["peak_bytes"] for r in rows
                 if r["task"] == task and r["members_at_once"] == workers}
            slope = (p[(h1, w1)] - p[(h0, w0)]) / (h1 * w1 - h0 * w0)
            slopes[f"{task} x{workers}"] = slope
            print(f"{task}, {workers} member(s) at once: {slope:.0f} bytes per pixel between {h0}x{w0} and {h1}x{w1}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": args.steps, "threads": args.threads, "points": rows, "bytes_per_pixel": slopes}, f,
                      indent=1)


if __name__ == "__main__":
    main()
