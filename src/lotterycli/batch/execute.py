"""One unit of work: what the single command does to one input (`jobs.compress_file`,
`restore_file`, `decompress_file`), or `compress` of several images of one size as member
batches; each input's failure is kept as its own result."""

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
    except Exception as exc:  # noqa: BLE001 - an input's failure stays that input's
        status = _failed(job, exc)
    status["seconds"] = round(time.perf_counter() - start, 3)
    status["peak_rss_mb"] = _peak_rss_mb()
    return status


def execute_unit(settings: Settings, unit: list[Job], reporter: Reporter | None = None) -> list[dict]:
    """Run a unit of work (`planning.units`): one job as `execute`, or several `compress` jobs as
    member batches, one result per job in the unit's order."""
    if len(unit) == 1:
        return [execute(settings, unit[0], reporter)]
    return _compress_together(unit, reporter or Reporter())


def _failed(job: Job, exc: Exception) -> dict:
    """The result of a job that failed: a LotteryError's message naming the input, anything else
    with its type."""
    from .. import jobs

    if isinstance(exc, LotteryError):
        return {"status": "failed", "error": jobs._named(job.input, exc).args[0]}
    return {"status": "failed", "error": f"{job.input}: {exc.__class__.__name__}: {exc}"}


def _compress_together(unit: list[Job], reporter: Reporter) -> list[dict]:
    """`compress` of images of one size fitted as member batches (`compression.member_batches`):
    each image is read, checked and written as `jobs.compress_file` does, and fails alone where
    it can (an unreadable image, one whose decoded size differs from its header's); a failure of
    the batched fit fails the images it held. The bar shows the first image's fit."""
    from .. import jobs
    from ..compression.member_batches import compress_images
    from ..images import atomic_write_bytes, read_image, read_input_bytes

    start = time.perf_counter()
    results: list[dict | None] = [None] * len(unit)
    by_size: dict[tuple[int, ...], list[tuple[int, Any, Any, Any]]] = {}
    for pos, job in enumerate(unit):
        try:
            cfg, out = jobs.plan_compress(job.input, job.outputs[0], job.options, force=True)
            x = read_image(job.input, max_pixels=job.options.max_pixels, data=read_input_bytes(job.input))
            by_size.setdefault(tuple(x.shape), []).append((pos, x, cfg, out))
        except Exception as exc:  # noqa: BLE001 - an input's failure stays that input's
            results[pos] = _failed(job, exc)
    shown = reporter.progress()
    for members in by_size.values():
        cfg = members[0][2]
        try:
            fitted = compress_images([x for _, x, _, _ in members], cfg, device=unit[0].options.device,
                                     progress=lambda i, bar=shown: bar if i == 0 else None)
            shown = None  # one bar: the first batch's first image
            for (pos, _, _, out), result in zip(members, fitted):
                Path(out).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(out, result.data)
                summary = jobs.compress_summary(unit[pos].input, out, result, cfg)
                summary["batched_with"] = len(members)  # images fitted in the same member batches
                results[pos] = {"status": "done", "summary": summary}
        except Exception as exc:  # noqa: BLE001 - the batch's failure stays its images'
            for pos, _, _, _ in members:
                results[pos] = results[pos] or _failed(unit[pos], exc)
    seconds, rss = round(time.perf_counter() - start, 3), _peak_rss_mb()
    for result in results:
        result.update(seconds=seconds, peak_rss_mb=rss)
    return results


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
