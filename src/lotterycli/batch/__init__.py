"""`lottery batch`: one command over many inputs, resumable, in local worker processes or on Ray.

The work of each input is what the single command does (`jobs.compress_file`, `restore_file`,
`decompress_file`); this package decides which inputs to run, where their outputs go, and keeps
OUTDIR/manifest.jsonl, so that a batch stopped at any moment (even by SIGKILL) and run again ends
as an uninterrupted one:

- Outputs mirror the inputs' names under OUTDIR and are written atomically (`.NAME.XXXX.tmp`
  files renamed into place); a run first removes such leftovers of a killed one.
- Before an input's work starts, a "started" line naming its outputs is appended to the manifest
  and fsynced; after its outputs are in place, a "done" (or "failed") line with the SHA-256 of the
  input and of the effective config (`jobs.config_sha256`). A later run skips an input whose
  outputs exist and whose last line is "done" with both hashes equal, and redoes the others. A
  torn last line (a kill during the append) is cut off.
- An existing file at an output's name that no line of the manifest mentions was not written by a
  batch: it is not replaced without --force.
- Fits save checkpoints with --checkpoint-every; a redone input resumes from its checkpoint.
- One batch at a time per OUTDIR (a lock on the folder).

torch is imported only where work is done (in this process for one local job, else in each worker
process, once): the plan and its errors come first.

In the order a batch runs: `spec` (what was asked, the records sent to workers), `inputs` (inputs
and output names), `planning` (checks, what is done, how many fits at once), `manifest` (the
manifest, the folder's lock and leftovers), `execute` (one job), `workers` (jobs in this process
or in worker processes) or `on_ray` (jobs as Ray tasks), `events` (what the caller is told);
`run` here ties them together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .events import Events, Reporter
from .execute import execute, execute_detached
from .manifest import MANIFEST, Manifest, cut_torn_line, locked, manifest_row, read_manifest, remove_leftovers
from .planning import decide, plan, size_workers
from .spec import COMMANDS, BatchSpec, DecompressOptions, Job, Options, Plan, Settings
from .workers import run_here, run_processes

__all__ = ["COMMANDS", "BatchSpec", "DecompressOptions", "Events", "Job", "Options", "Outcome", "Plan", "Reporter",
           "Settings", "execute", "plan", "run"]


@dataclass
class Outcome:
    rows: list[dict] = field(default_factory=list)  # one per input, in input order
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    manifest: str = ""


def run(spec: BatchSpec, events: Events | None = None, stdin: Callable[[], Iterable[str]] | None = None) -> Outcome:
    """Plan, then run what is not done yet; returns every input's manifest row (skipped ones with
    status "skipped"). A failed input is reported and the batch goes on."""
    t0 = time.perf_counter()
    events = events or Events()
    p = plan(spec, stdin)
    p.outdir.mkdir(parents=True, exist_ok=True)
    outcome = Outcome(manifest=str(p.outdir / MANIFEST))
    with locked(p.outdir):
        remove_leftovers(p.outdir)
        manifest_path = p.outdir / MANIFEST
        cut_torn_line(manifest_path)
        decide(p, read_manifest(manifest_path))
        size_workers(p)
        cluster = None
        if spec.ray is not None and p.todo:  # connected before any work: its errors come first
            from .on_ray import Cluster

            cluster = Cluster(p, execute_detached)
        outcome.skipped = len(p.skipped)
        rows: dict[str, dict] = {row["outputs"][0]: row for row in p.skipped}
        events.planned(len(p.todo), len(p.skipped))
        for text in p.notes:
            events.note(text)
        manifest = Manifest(manifest_path)

        def begin(job: Job) -> None:
            manifest.append({"status": "started", "input": job.input, "input_sha256": job.input_sha256,
                             "config_sha256": job.config_sha256, "outputs": job.names})

        def end(job: Job, result: dict) -> None:
            row = manifest_row(job, result)
            manifest.append(row)
            rows[job.names[0]] = row
            if row["status"] == "done":
                outcome.done += 1
            else:
                outcome.failed += 1
            events.finished(job, row, result.get("summary"))

        try:
            if not p.todo:
                pass
            elif cluster is not None:
                from .on_ray import run_on_ray

                run_on_ray(cluster, p, events, begin, end)
            elif p.jobs == 1:
                run_here(p, events, begin, end)
            else:
                run_processes(p, events, begin, end)
        finally:
            manifest.close()
            if cluster is not None:
                cluster.close()
            outcome.seconds = time.perf_counter() - t0
    outcome.rows = [rows[key] for key in p.keys if key in rows]
    return outcome
