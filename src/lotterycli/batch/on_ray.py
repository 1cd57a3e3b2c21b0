"""`lottery batch --ray`: the batch's jobs as Ray tasks (imported only then; `pip install
lotterycli[ray]`).

Each task gets its input's bytes (and its mask's), runs the same `execute.execute` as a local
worker in a temporary folder of the node it lands on (`execute.execute_detached`), and returns the
outputs' bytes; the driver (this process) writes them atomically into OUTDIR and appends the
manifest, so the cluster's nodes need lotterycli installed but no shared filesystem, and a stopped
batch resumes as a local one. Fit
checkpoints (--checkpoint-every) are kept beside the outputs when the node sees OUTDIR at the same
path (a shared filesystem), else in the task's temporary folder, where they do not outlive it.

A task asks for the CPUs its fit uses (torch threads, `Settings.threads`, the same number as a local
run's so that the bytes are the same) or, when fits go to GPUs, one GPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import LotteryError
from ..images import atomic_write_bytes, read_input_bytes


def _connect(address: str):
    """ray, connected: "local" starts (or joins, with RAY_ADDRESS set) a Ray instance of this
    machine, "auto" joins the cluster of RAY_ADDRESS or the one running here, HOST:PORT that one.
    A process already connected (a notebook, a test) keeps its connection."""
    try:
        import ray
    except ImportError:
        raise LotteryError("--ray needs the ray package: pip install 'lotterycli[ray]'") from None
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=True)
    except Exception as exc:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError...
        raise LotteryError(f"--ray {address}: cannot connect to a Ray cluster ({' '.join(str(exc).split())})") from None
    return ray, True


class Cluster:
    """A connection to a Ray cluster and what a batch's tasks ask of it."""

    def __init__(self, p, remote_job: Callable):
        """Connect for plan `p` (`spec.Plan`), whose tasks run `remote_job(settings, job, input
        bytes, mask bytes)` (`execute.execute_detached`). Refuses, before any work, a cluster that
        cannot run them (too few CPUs for one fit, no GPU for --device cuda)."""
        self.ray, self.started_here = _connect(p.spec.ray)
        try:
            device = getattr(p.spec.options, "device", "cpu")
            resources = self.ray.cluster_resources()
            self.gpu = device != "cpu" and resources.get("GPU", 0) >= 1
            if device == "cuda" and not self.gpu:
                raise LotteryError(f"--device cuda: the Ray cluster at {p.spec.ray} has no GPU")
            threads = p.settings.threads
            if not self.gpu and resources.get("CPU", 0) < threads:
                raise LotteryError(f"--ray: the cluster has {resources.get('CPU', 0):g} CPUs, a fit asks for "
                                   f"{threads} (--threads)")
        except BaseException:
            self.close()
            raise
        self.task = self.ray.remote(remote_job).options(num_cpus=1 if self.gpu else threads,
                                                        num_gpus=1 if self.gpu else 0)
        slots = int(resources.get("GPU", 0)) if self.gpu else int(resources.get("CPU", 1) // threads)
        self.window = max(2, 2 * slots)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False


def run_on_ray(cluster: Cluster, p, events, begin: Callable, end: Callable) -> None:
    """Submit every job of plan `p` as a task, at most two per free slot of the cluster in flight
    so that the inputs' bytes do not all sit in the object store at once; write each result as it
    comes back and tell `end` (`begin` as each is submitted, `events` the batch's)."""
    ray, task, window = cluster.ray, cluster.task, cluster.window
    pending = list(p.todo)
    running: dict = {}
    try:
        while pending or running:
            while pending and len(running) < window:
                job = pending.pop(0)
                begin(job)
                mask = getattr(job.options, "mask", None)
                try:
                    data = read_input_bytes(job.input)
                    mask_bytes = read_input_bytes(mask) if mask is not None else None
                except LotteryError as exc:
                    end(job, {"status": "failed", "error": str(exc), "seconds": 0.0})
                    continue
                events.started(job, len(running))
                running[task.remote(p.settings, job, data, mask_bytes)] = (job, time.perf_counter())
            if not running:
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                job, _t = running.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost node or worker: this input fails alone
                    result = {"status": "failed", "seconds": 0.0,
                              "error": f"{job.input}: the Ray task failed ({exc.__class__.__name__}: "
                                       f"{' '.join(str(exc).split())[:300]})"}
                if result["status"] == "done":
                    for out, data in zip(job.outputs, result.pop("outputs")):
                        Path(out).parent.mkdir(parents=True, exist_ok=True)
                        atomic_write_bytes(out, data)
                    _real_paths(result["summary"], job)
                end(job, result)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        cluster.close()


def _real_paths(summary: dict, job) -> None:
    """The summary as a local run gives it: the job's own paths, not the task's temporary ones."""
    summary["input"] = job.input
    summary["output"] = job.outputs[0]
    if summary.get("bitstream"):
        summary["bitstream"] = job.outputs[1]
