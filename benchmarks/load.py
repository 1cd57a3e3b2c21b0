"""Speed under load: one `lottery compress` alone, two side by side, and one beside a busy process.

    python -m benchmarks.load [--image kodim01] [--size 256] [--steps 300] [--repeats 2] [--env K=V ...]

Each compression is a whole `lottery compress` command (process start, torch import, fit, refit,
quantization, file, decode), as a shell loop or `xargs -P 2` would run it, with the machine's
default thread count. Reports the wall seconds of each run and the ratios to the solo time; the
target is at most 2.5x for both loaded cases on a 2-core machine. `--env K=V` sets an environment
variable for the compressions (e.g. OMP_WAIT_POLICY=ACTIVE to see what spinning threads cost).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .data import center_crop, load_image
from .speed_suite import lottery_cli


def _compress(png: Path, out: Path, steps: int, env: dict) -> subprocess.Popen:
    cmd = [*lottery_cli(), "compress", str(png), "-o", str(out), "--steps", str(steps), "--force", "--quiet", "--json"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen, start: float) -> float:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"lottery compress failed: {err.strip()}")
    return time.perf_counter() - start


def measure(png: Path, tmp: Path, steps: int, env: dict) -> dict:
    """Seconds of: one compression alone; each of two started together; one beside a busy loop."""
    start = time.perf_counter()
    solo = _wait(_compress(png, tmp / "solo.lottery", steps, env), start)
    start = time.perf_counter()
    pair = [_compress(png, tmp / f"pair{k}.lottery", steps, env) for k in range(2)]
    both = [_wait(p, start) for p in pair]
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        start = time.perf_counter()
        beside = _wait(_compress(png, tmp / "busy.lottery", steps, env), start)
    finally:
        busy.kill()
        busy.wait()
    same = len({(tmp / name).read_bytes() for name in ("solo.lottery", "pair0.lottery", "pair1.lottery", "busy.lottery")}) == 1
    return {"solo_s": solo, "pair_s": both, "beside_busy_s": beside, "same_file": same}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="kodim01")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    env = dict(os.environ)
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    from lotterycli.images import write_png

    with tempfile.TemporaryDirectory(prefix="lottery-load-") as d:
        tmp = Path(d)
        png = tmp / "crop.png"
        write_png(png, center_crop(load_image(args.image), args.size or None))
        runs = [measure(png, tmp, args.steps, env) for _ in range(args.repeats)]
    solo = statistics.median(r["solo_s"] for r in runs)
    pair = statistics.median(max(r["pair_s"]) for r in runs)
    beside = statistics.median(r["beside_busy_s"] for r in runs)
    result = {
        "image": args.image, "size": args.size, "steps": args.steps, "env": args.env, "cpu_count": os.cpu_count(),
        "runs": runs, "solo_s": solo, "pair_ratio": pair / solo, "beside_busy_ratio": beside / solo,
        "same_file": all(r["same_file"] for r in runs),
    }
    print(f"{args.image} {args.size}x{args.size}, {args.steps} steps, env {args.env or 'as is'}: "
          f"solo {solo:.1f} s; two side by side {pair:.1f} s ({pair / solo:.2f}x); "
          f"beside a busy process {beside:.1f} s ({beside / solo:.2f}x); same file every time: {result['same_file']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
