"""Many images: a shell loop of `lottery compress` against `lottery batch`, locally and on Ray.

    python -m benchmarks.batch [--steps 1600] [--size 256] [--images 8] [--no-ray] [--json FILE]

On the protocol's Kodak crops (kodim01-08, centre `--size` crops, `benchmarks.data`) at the `fast`
preset (`--steps` shortens it), each as a whole command in a subprocess:

- loop: one `lottery compress` per image, one after the other (what a shell loop does: every
  image pays the process start and the torch import), torch's default thread count (all cores);
- batch --jobs 1: one process, the fits one after the other on every core;
- batch --jobs 2: two worker processes, one thread per fit;
- batch --ray: the same jobs as Ray tasks on a local 2-CPU Ray instance started for the run (one
  thread per fit, as --jobs 2; the instance's start is counted).

Reports images per hour, each run's peak resident memory per worker process (the loop's: its
largest `lottery compress`), whether runs with the same threads per fit wrote the same bytes (a fit's
float sums can depend on its thread count), and the cost of resuming a fit
from its checkpoint: the seconds from a process's start to its first fitting step, fresh and
resumed (the difference is what loading the checkpoint costs; the work since the last checkpoint,
at most --checkpoint-every seconds, is lost on top).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .data import PROTOCOL_IMAGES, center_crop, load_image

CLI = [sys.executable, "-m", "lotterycli"]


def _run(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: {proc.stderr.strip()[-500:]}")
    return time.perf_counter() - start, proc.stdout


def shell_loop(pngs: list[Path], out: Path, fit: list[str]) -> dict:
    """One `lottery compress` per image; peak memory from the children's rusage."""
    out.mkdir()
    start = time.perf_counter()
    for png in pngs:
        _run([*CLI, "compress", str(png), "-o", str(out / f"{png.stem}.lottery"), *fit, "--quiet"])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child, MiB
    import torch

    return {"seconds": seconds, "peak_rss_mb_per_worker": round(peak, 1), "threads_per_fit": torch.get_num_threads()}


def batch(folder: Path, out: Path, fit: list[str], extra: list[str]) -> dict:
    seconds, stdout = _run([*CLI, "batch", "compress", str(folder), "-o", str(out), *fit, "--json", *extra])
    rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    if any(r["status"] != "done" for r in rows):
        raise RuntimeError(f"batch {extra}: {[r.get('error') for r in rows if r['status'] != 'done']}")
    return {"seconds": seconds, "peak_rss_mb_per_worker": max(r["peak_rss_mb"] for r in rows),
            "threads_per_fit": rows[0]["threads"]}


RAY_DRIVER = """
import json, sys, time
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
from lotterycli import api
rows = api.batch("compress", [sys.argv[1]], sys.argv[2], ray="auto", threads=1, preset="fast", device="cpu",
                 steps=int(sys.argv[3]) if sys.argv[3] != "None" else None)
ray.shutdown()
print(json.dumps(rows))
"""


def ray_batch(folder: Path, out: Path, steps: int | None) -> dict:
    """`batch --ray` on a 2-CPU Ray instance this run starts (and stops), through `api.batch`."""
    seconds, stdout = _run([sys.executable, "-c", RAY_DRIVER, str(folder), str(out), str(steps)])
    rows = json.loads(stdout.strip().splitlines()[-1])
    return {"seconds": seconds, "peak_rss_mb_per_worker": max(r["peak_rss_mb"] for r in rows),
            "threads_per_fit": rows[0]["threads"]}


FIRST_STEP = """
import json, sys, time
t0, mark = float(sys.argv[1]), sys.argv[2]
import lotterycli.fitting.loop as loop
advance = loop.Fitter.advance
def first(self, until=None):
    if not getattr(first, "seen", False):
        first.seen = True
        with open(mark, "w") as fh:
            json.dump({"seconds": time.time() - t0, "step": self.step}, fh)
    return advance(self, until)
loop.Fitter.advance = first
sys.argv = ["lottery"] + sys.argv[3:]
from lotterycli.cli import main
main()
"""


def resume_cost(png: Path, tmp: Path, fit: list[str], every: float, repeats: int = 3) -> dict:
    """Seconds from process start to the first fitting step (median of `repeats`): fresh, and
    resumed from the checkpoint of a run killed (SIGKILL) in the middle of its fit."""

    def first_step(out: Path, extra: list[str]) -> tuple[dict, subprocess.Popen]:
        mark = tmp / f"first-{out.stem}.json"
        mark.unlink(missing_ok=True)
        cmd = [sys.executable, "-c", FIRST_STEP, repr(time.time()), str(mark), "compress", str(png), "-o", str(out),
               *fit, "--quiet", "--force", *extra]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while not mark.exists() and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.05)
        if not mark.exists():
            raise RuntimeError(f"no fitting step seen: {proc.communicate()[1].strip()[-500:]}")
        return json.loads(mark.read_text()), proc

    out = tmp / "resumed.lottery"
    ckpt = out.with_name(out.name + ".ckpt")
    _, proc = first_step(out, ["--checkpoint-every", str(every)])
    while not ckpt.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the checkpointed run ended first: {proc.stderr.read()}")
        time.sleep(0.05)
    time.sleep(2 * every)  # a checkpoint from the middle of the fit
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = tmp / "saved.ckpt"
    shutil.copy(ckpt, saved)
    fresh, resumed = [], []
    for _ in range(repeats):  # each stopped at its first step
        for times, target, extra in ((fresh, tmp / "fresh.lottery", []),
                                     (resumed, out, ["--checkpoint-every", str(every)])):
            if target == out:
                shutil.copy(saved, ckpt)
            mark, proc = first_step(target, extra)
            proc.kill()
            proc.wait()
            times.append(mark)
    fresh_s = statistics.median(m["seconds"] for m in fresh)
    resumed_s = statistics.median(m["seconds"] for m in resumed)
    return {"fresh_s": round(fresh_s, 2), "resumed_s": round(resumed_s, 2), "resumed_at_step": resumed[0]["step"],
            "lost_to_resume_s": round(resumed_s - fresh_s, 2), "checkpoint_every_s": every,
            "checkpoint_bytes": saved.stat().st_size, "repeats": repeats}


def measure(steps: int | None = None, size: int = 256, n_images: int = 8, ray: bool = True,
            checkpoint_every: float = 2.0, log=print) -> dict:
    """The runs above, their throughput, bytes and the resume cost, as one dict."""
    fit = ["--preset", "fast", "--device", "cpu"] + (["--steps", str(steps)] if steps else [])
    results: dict = {"size": size, "steps": steps or "fast preset", "images": n_images,
                     "cpu_count": os.cpu_count(), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="lottery-batch-bench-") as d:
        tmp = Path(d)
        folder = tmp / "crops"
        folder.mkdir()
        from lotterycli.images import write_png

        for name in PROTOCOL_IMAGES[:n_images]:
            write_png(folder / f"{name}.png", center_crop(load_image(name), size))
        pngs = sorted(folder.glob("*.png"))
        runs = {
            "loop": lambda out: shell_loop(pngs, out, fit),
            "batch --jobs 1": lambda out: batch(folder, out, fit, ["--jobs", "1"]),
            "batch --jobs 2": lambda out: batch(folder, out, fit, ["--jobs", "2"]),
        }
        if ray:
            runs["batch --ray (2 CPUs)"] = lambda out: ray_batch(folder, out, steps)
        files = {}
        for label, go in runs.items():
            out = tmp / label.replace(" ", "_").replace("-", "")
            r = go(out)
            r["images_per_hour"] = round(len(pngs) * 3600 / r["seconds"], 1)
            r["seconds"] = round(r["seconds"], 1)
            results["runs"][label] = r
            files[label] = {f.name: f.read_bytes() for f in sorted(out.glob("*.lottery"))}
            log(f"{label:24s} {r['seconds']:8.1f} s  {r['images_per_hour']:7.1f} images/h  "
                f"peak {r['peak_rss_mb_per_worker']:.0f} MiB per worker  threads/fit {r['threads_per_fit']}")
        # float sums can depend on the thread count: runs are compared with those of equal threads
        groups: dict = {}
        for label, r in results["runs"].items():
            groups.setdefault(str(r["threads_per_fit"]), []).append(label)
        results["same_bytes"] = {", ".join(labels): all(files[x] == files[labels[0]] for x in labels)
                                 for labels in groups.values()}
        results["same_bytes_across_thread_counts"] = all(f == files["loop"] for f in files.values())
        results["resume"] = resume_cost(pngs[0], tmp, fit, checkpoint_every)
        shutil.rmtree(folder)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="fitting steps (default: the fast preset's)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--no-ray", action="store_true", help="skip the Ray run (ray not installed)")
    p.add_argument("--checkpoint-every", type=float, default=2.0, help="seconds between checkpoints (resume part)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    results = measure(args.steps, args.size, args.images, not args.no_ray, args.checkpoint_every,
                      log=lambda m: print(m, flush=True))
    rs = results["resume"]
    print(f"same bytes (runs with equal threads per fit): {results['same_bytes']}; across thread counts: "
          f"{results['same_bytes_across_thread_counts']}")
    print(f"process start to first fitting step: fresh {rs['fresh_s']} s, resumed (at step {rs['resumed_at_step']}) "
          f"{rs['resumed_s']} s: {rs['lost_to_resume_s']} s lost to the resume, plus up to "
          f"{rs['checkpoint_every_s']} s of steps since the last checkpoint ({rs['checkpoint_bytes']:,} bytes)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
