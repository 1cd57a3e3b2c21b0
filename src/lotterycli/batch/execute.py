"""One job: what the single command does to one input (`jobs.compress_file`, `restore_file`,
`decompress_file`), with its failure kept as its own result."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import LotteryError
from .events import Reporter
from .spec import Job, Settings


def execute(settings: Settings, job: Job, reporter: Reporter | None = None,
            checkpoint: Path | None = None) -> dict:
    """Run one job; never raises for the job's own failure (a bad image, any error of its work):
    returns {"status": "done", "summary", ...} or {"status": "failed", "error"}. KeyboardInterrupt
    and SystemExit (a stopped batch) go through."""
    from .. import jobs

    reporter = reporter or Reporter()
    start = time.perf_counter()
    try:
        progress = reporter.progress()
        common = dict(force=True, checkpoint=checkpoint, discard_checkpoint=settings.force, notify=reporter.note)
        for out in job.outputs:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
        opts = job.options
        if settings.command == "compress":
            plan = jobs.plan_compress(job.input, job.outputs[0], opts, force=True)
            summary = jobs.compress_file(job.input, job.outputs[0], opts, progress=progress, plan=plan, **common)
        elif settings.command == "restore":
            plan = jobs.plan_restore(job.input, job.outputs[0], opts, force=True)
            on_member = (lambda k, n: progress.member(k, n, plan[0].steps)) if progress is not None else None
            summary = jobs.restore_file(job.input, job.outputs[0], opts, progress=progress, on_member=on_member,
                                        plan=plan, **common)
        else:
            plan = jobs.plan_decompress(job.input, job.outputs[0], force=True)
            summary = jobs.decompress_file(job.input, job.outputs[0], force=True, max_pixels=opts.max_pixels,
                                           plan=plan)
        status: dict[str, Any] = {"status": "done", "summary": summary}
    except LotteryError as exc:
        status = {"status": "failed", "error": jobs._named(job.input, exc).args[0]}
    except Exception as exc:  # noqa: BLE001 - an input's failure stays that input's
        status = {"status": "failed", "error": f"{job.input}: {exc.__class__.__name__}: {exc}"}
    status["seconds"] = round(time.perf_counter() - start, 3)
    status["peak_rss_mb"] = _peak_rss_mb()
    return status


def execute_detached(settings: Settings, job: Job, data: bytes, mask: bytes | None) -> dict:
    """`execute` on a machine that may not see this one's files (a Ray node): the input's (and
    mask's) bytes are written to a temporary folder, the outputs' bytes come back in
    result["outputs"]. The fit checkpoint goes beside the real output when that folder is there
    (a shared filesystem), else into the temporary folder."""
    import torch

    torch.set_num_threads(settings.threads)
    with tempfile.TemporaryDirectory(prefix="lottery-") as tmp:
        here = Path(tmp)
        local_input = here / "in" / Path(job.input).name
        local_input.parent.mkdir()
        local_input.write_bytes(data)
        options = job.options
        if mask is not None:
            (here / "mask.png").write_bytes(mask)
            options = dataclasses.replace(options, mask=str(here / "mask.png"))
        outputs = [str(here / "out" / name) for name in job.names]
        real = Path(job.outputs[0])
        checkpoint = real.with_name(real.name + ".ckpt") if real.parent.is_dir() else None
        local = dataclasses.replace(job, input=str(local_input), outputs=outputs, options=options)
        result = execute(settings, local, None, checkpoint=checkpoint)
        if result["status"] == "done":
            result["outputs"] = [Path(o).read_bytes() for o in outputs]
        else:
            result["error"] = result["error"].replace(str(local_input), job.input)
    return result


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(kb / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)
