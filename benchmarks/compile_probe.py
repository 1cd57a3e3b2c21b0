"""Does `torch.compile` pay for a compression fitting step on this machine?

    python -m benchmarks.compile_probe [--size 256] [--steps 60] [--threads 2]

Times the step that `lottery compress` runs (`benchmarks.engine`'s setting: the compression
config's schedule, the rate on a second thread where it pays) in fresh processes: eager, with the
render compiled (`LotteryModel.render_from`, dynamic shapes: the pixels drawn per step vary in
number), and with the rate compiled (`Arm.rate_bits`). Reports the compile time (the first three
steps) and the steps per second after it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

PROBE = r'''
import sys, time, torch
from dataclasses import replace
torch.set_num_threads(THREADS)
from lotterycli.config import load_task_config
from lotterycli.fitting.loop import Fitter, rate_thread_pays
from lotterycli.fitting.losses import fit_distortion
from lotterycli.model.lottery_model import LotteryModel
cfg = load_task_config("compress")
torch.manual_seed(0)
target = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
model = LotteryModel(SIZE, SIZE, cfg.architecture, 0, cfg.mask_ratio)
if MODE == "render":
    model.render_from = torch.compile(model.render_from, dynamic=True)
elif MODE == "rate":
    model.arm.rate_bits = torch.compile(model.arm.rate_bits)
fitter = Fitter(model, fit_distortion(target, cfg.schedule.pixel_fraction), 0.004,
                replace(cfg.schedule, steps=100 * STEPS), rate_thread=rate_thread_pays(torch.device("cpu"), SIZE * SIZE))
t = time.perf_counter(); fitter.advance(3); warm = time.perf_counter() - t
t = time.perf_counter(); fitter.advance(3 + STEPS); rate = STEPS / (time.perf_counter() - t)
print(f"{MODE:7s} {SIZE}x{SIZE}: first 3 steps {warm:6.1f} s, then {rate:6.2f} steps/s", flush=True)
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    for mode in ("eager", "render", "rate", "eager"):
        code = (PROBE.replace("MODE", repr(mode)).replace("SIZE", str(args.size))
                .replace("STEPS", str(args.steps)).replace("THREADS", str(args.threads)))
        res = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True)
        print(res.stdout.strip() if res.returncode == 0 else f"{mode}: failed: {res.stderr.strip().splitlines()[-1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
