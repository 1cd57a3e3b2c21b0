"""The fitting engine against its limits: steps per second, operations per step, arithmetic per
second against the machine's matmul peak, peak memory; this checkout beside a baseline commit.

    python -m benchmarks.engine [--baseline b9769d4] [--threads 2] [--sizes 256x256,768x512] [--steps 40]
                                [--json OUT.json]

Each measurement runs in a fresh process (`python -c PROBE` with the tree's `src` first on the path),
for this checkout and for the baseline commit (extracted with `git archive` into a temporary
directory), one after the other in the same sitting: absolute times wander on shared machines,
ratios of one sitting do not. A step is what `lottery compress` runs: the compression config's
schedule (a random half of the pixels per step, the rate on a second thread where it pays),
timed over `--steps` steps after warm-up steps, in the soft stage. Operations are ATen calls
dispatched per step, counted with a `TorchDispatchMode` (on a GPU each is a kernel launch, views
aside), also for the step as a GPU runs it (`model.device_policy`), on the meta device; FLOPs
are those of matrix products and convolutions (`torch.utils.flop_counter`), against the measured
peak of one large float32 matrix product on the same threads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from .data import REPO_ROOT

# Counts the ATen operations dispatched inside it; pasted into both probes below.
COUNT_MODE = """class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__(); self.n = 0; self.views = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1; self.views += bool(func.is_view)
        return func(*args, **(kwargs or {}))
"""

PROBE = r'''
import json, resource, sys, time
if LAYOUT != "current":  # only the baseline tree: an editable install's finder would fill in what it lacks
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
import torch
torch.set_num_threads(THREADS)
from collections import Counter
from dataclasses import replace
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
if LAYOUT == "current":
    from lotterycli.config import load_task_config
    from lotterycli.fitting.loop import Fitter, rate_thread_pays
    from lotterycli.fitting.losses import fit_distortion
    from lotterycli.model.lottery_model import LotteryModel
    cfg = load_task_config("compress")
    schedule = lambda steps: replace(cfg.schedule, steps=steps)
    distortion = lambda target: fit_distortion(target, cfg.schedule.pixel_fraction)
else:  # the layout before it (lotterycli.fit, lotterycli.codec)
    from lotterycli.config import load_task_config
    from lotterycli.fit import Fitter, rate_thread_pays
    from lotterycli.compress import fit_distortion
    from lotterycli.codec.model import LotteryModel
    cfg = load_task_config("compress")
    schedule = lambda steps: replace(cfg.schedule, steps=steps)
    distortion = lambda target: fit_distortion(target, cfg.schedule)

COUNT_MODE

h, w, steps = HEIGHT, WIDTH, STEPS
torch.manual_seed(0)
target = torch.rand(3, h, w, generator=torch.Generator().manual_seed(1))
model = LotteryModel(h, w, cfg.architecture, 0, cfg.mask_ratio)
fitter = Fitter(model, distortion(target), 0.004, schedule(100 * steps + 100),
                rate_thread=rate_thread_pays(torch.device("cpu"), h * w))
fitter.advance(5)
start = time.perf_counter()
fitter.advance(5 + steps)
seconds = (time.perf_counter() - start) / steps
# Dispatch modes see only their own thread: count a plain step (the same operations, on one thread).
plain = Fitter(model, distortion(target), 0.004, schedule(100 * steps + 100))
plain.advance(2)
with Count() as count:
    plain.advance(3)
with FlopCounterMode(display=False) as flops:
    plain.advance(4)
# A GPU's way of the same step (`model.device_policy`), counted on the meta device, which needs no
# GPU: operations dispatched, and those that are not views (on a GPU, kernel launches).
gpu_ops = gpu_kernels = None
if LAYOUT == "current":
    try:
        import lotterycli.model.latents as latents_module
        latents_module.LatentGrids._noise_generator = lambda self, device: None  # meta has no generator
        meta = LotteryModel(h, w, cfg.architecture, 0, cfg.mask_ratio).to("meta")
        on_meta = Fitter(meta, distortion(target.to("meta")), 0.004, replace(schedule(100), eval_every=10 ** 6),
                         rate_thread=False)
        on_meta.advance(2)
        with Count() as meta_count:
            on_meta.advance(3)
        gpu_ops, gpu_kernels = meta_count.n, meta_count.n - meta_count.views
    except Exception as exc:  # a tree whose fit cannot run on meta: reported as not measured
        print("meta count failed:", exc, file=sys.stderr)
a = torch.rand(2048, 2048); b = torch.rand(2048, 2048)
a @ b
t = time.perf_counter(); reps = 5
for _ in range(reps):
    a @ b
peak = reps * 2 * 2048 ** 3 / (time.perf_counter() - t)
def peak_rss_mb():
    # VmHWM is this process's own peak: ru_maxrss keeps the high-water mark of the process it was
    # forked from (a benchmark run that grew to 5 GB reported 5 GB for every probe)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import lotterycli
print(json.dumps({"source": lotterycli.__file__, "steps_per_second": 1 / seconds, "ops_per_step": count.n, "views_per_step": count.views,
                  "gpu_way_ops_per_step": gpu_ops, "gpu_way_kernels_per_step": gpu_kernels, "flops_per_step": flops.get_total_flops(),
                  "matmul_peak_flops": peak, "peak_rss_mb": peak_rss_mb()}))
'''


MEMBER_PROBE = r'''
import json, time
import torch
torch.set_num_threads(THREADS)
from dataclasses import replace
from torch.utils._python_dispatch import TorchDispatchMode
from lotterycli.config import load_task_config
from lotterycli.fitting.batched import BatchedFitter
from lotterycli.fitting.losses import PixelMSE
from lotterycli.model.lottery_model import LotteryModel
from lotterycli.model.members import MemberBatch

COUNT_MODE

cfg = load_task_config("denoise")
dev = torch.device(DEVICE)
h, w, b, steps = HEIGHT, WIDTH, MEMBERS, STEPS
target = torch.rand(3, h, w, generator=torch.Generator().manual_seed(1)).to(dev)
models = []
for k in range(b):
    torch.manual_seed(k)
    models.append(LotteryModel(h, w, cfg.architecture, k, cfg.mask_ratio).to(dev))
fitter = BatchedFitter(MemberBatch(models), [PixelMSE.whole(target)] * b, 0.004,
                       replace(cfg.schedule, steps=100 * steps + 100, average_fraction=0.0))
fitter.advance(3)
with Count() as count:
    fitter.advance(4)
def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()
sync()
start = time.perf_counter()
fitter.advance(4 + steps)
sync()
seconds = (time.perf_counter() - start) / steps
if dev.type == "cuda":
    peak = torch.cuda.max_memory_allocated(dev)
else:
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
# the same step as a GPU runs it (`model.device_policy`), counted on the meta device
MemberBatch._noise = lambda self, shape, a, device: torch.zeros(shape, device=device)  # meta has no generator
BatchedFitter.evaluate = lambda self: [0.0] * self.batch.n_members
meta = MemberBatch([LotteryModel(h, w, cfg.architecture, k, cfg.mask_ratio).to("meta") for k in range(b)])
on_meta = BatchedFitter(meta, [PixelMSE.whole(target.to("meta"))] * b, 0.004,
                        replace(cfg.schedule, steps=100, average_fraction=0.0, eval_every=10 ** 6))
on_meta.advance(2)
with Count() as meta_count:
    on_meta.advance(3)
print(json.dumps({"members": b, "ops_per_step": count.n, "views_per_step": count.views,
                  "gpu_way_ops_per_step": meta_count.n, "gpu_way_kernels_per_step": meta_count.n - meta_count.views,
                  "member_steps_per_second": b / seconds, "peak_bytes_per_member_pixel": peak / (b * h * w)}))
'''


def member_probe(height: int, width: int, members: int, steps: int, threads: int, device: str = "cpu") -> dict:
    """A batched fit of `members` (`fitting.batched`, restoration's member batch) in a fresh process
    of this checkout: operations dispatched per step (all members), member-steps per second and
    peak memory per member and pixel (the GPU's allocations there, else the process's peak RSS,
    which includes torch itself)."""
    code = (MEMBER_PROBE.replace("COUNT_MODE", COUNT_MODE).replace("THREADS", str(threads)).replace("HEIGHT", str(height)).replace("WIDTH", str(width))
            .replace("MEMBERS", str(members)).replace("STEPS", str(steps)).replace("DEVICE", repr(device)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600,
                         env={"OMP_WAIT_POLICY": "PASSIVE", **__import__("os").environ,
                              "PYTHONPATH": str(REPO_ROOT / "src")})
    if out.returncode != 0:
        raise RuntimeError(f"member probe failed: {out.stderr.strip().splitlines()[-1:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(width=width, height=height, threads=threads, device=device)
    return row


def probe(src: Path, height: int, width: int, steps: int, threads: int) -> dict:
    """One tree's step rate, operations, FLOPs and peak RSS, in a fresh process.

    Every tree runs with OMP_WAIT_POLICY=PASSIVE (unless the caller's environment sets it), the
    policy that today's `import lotterycli` sets: older trees did not set it, and spinning threads
    change a step's time by themselves, so the ratio would not be the code's alone.
    """
    layout = "before" if (Path(src) / "lotterycli" / "fit.py").exists() else "current"
    code = (PROBE.replace("COUNT_MODE", COUNT_MODE).replace("THREADS", str(threads)).replace("HEIGHT", str(height)).replace("WIDTH", str(width))
            .replace("STEPS", str(steps)).replace("LAYOUT", repr(layout)))
    env_path = str(src)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600,
                         env={"OMP_WAIT_POLICY": "PASSIVE", **__import__("os").environ, "PYTHONPATH": env_path})
    if out.returncode != 0:
        raise RuntimeError(f"probe failed for {src}: {out.stderr.strip().splitlines()[-1:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["achieved_fraction_of_peak"] = row["flops_per_step"] * row["steps_per_second"] / row["matmul_peak_flops"]
    return row


def baseline_tree(commit: str, into: Path) -> Path:
    """`src` (and `configs`, which older trees read from beside it) of `commit`, extracted with git archive."""
    data = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit, "src", "configs"], capture_output=True,
                          check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=data, check=True)
    return into / "src"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="b9769d4", help="commit to compare with ('' for none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", default="256x256,768x512", help="WIDTHxHEIGHT, comma separated")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two trees (the median is kept)")
    p.add_argument("--members", default="4,16", help="member batches also probed, at the first size ('' for none)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lottery-engine-") as tmp:
        trees = {"this checkout": REPO_ROOT / "src"}
        if args.baseline:
            trees[args.baseline] = baseline_tree(args.baseline, Path(tmp))
        for width, height in sizes:
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, src in trees.items():
                    runs[name].append(probe(src, height, width, args.steps, args.threads))
            for name, results in runs.items():
                best = sorted(results, key=lambda r: r["steps_per_second"])[len(results) // 2]
                rows.append({"tree": name, "width": width, "height": height, "threads": args.threads, **best})
    by = {(r["tree"], r["width"], r["height"]): r for r in rows}
    print("| tree | size | steps/s | ops/step | GPU's way: ops (kernels) | GFLOP/step | achieved / matmul peak "
          "| peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        gpu = "-" if r["gpu_way_ops_per_step"] is None else f"{r['gpu_way_ops_per_step']} ({r['gpu_way_kernels_per_step']})"
        print(f"| {r['tree']} | {r['width']}x{r['height']} | {r['steps_per_second']:.2f} | {r['ops_per_step']} | {gpu} | "
              f"{r['flops_per_step'] / 1e9:.3f} | {100 * r['achieved_fraction_of_peak']:.1f} % | {r['peak_rss_mb']:.0f} |")
    if args.baseline:
        for width, height in sizes:
            new, old = by[("this checkout", width, height)], by[(args.baseline, width, height)]
            print(f"{width}x{height}: {new['steps_per_second'] / old['steps_per_second']:.2f}x the steps/s of "
                  f"{args.baseline}, {new['ops_per_step'] / old['ops_per_step']:.2f}x its operations per step")
    member_rows = [member_probe(sizes[0][1], sizes[0][0], int(b), max(3, args.steps // 4), args.threads)
                   for b in args.members.split(",") if b]
    for r in member_rows:
        print(f"{r['members']} members batched at {r['width']}x{r['height']}: {r['ops_per_step']} operations per step "
              f"({r['ops_per_step'] / r['members']:.0f} per member), a GPU's way {r['gpu_way_ops_per_step']} "
              f"({r['gpu_way_ops_per_step'] / r['members']:.0f} per member; {r['gpu_way_kernels_per_step']} not views), "
              f"{r['member_steps_per_second']:.2f} member-steps/s")
    if args.json:
        args.json.write_text(json.dumps(rows + member_rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
