"""Planning a batch: every check that needs no work, which inputs are done already, and how many
fits run at once with how many threads each."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import LotteryError
from ..jobs import config_sha256, sha256_file
from .inputs import INPUT_SUFFIXES, collect_inputs, job_options, output_names, task_config
from .spec import COMMANDS, FIT_THREADS, BatchSpec, Job, Options, Plan, Settings


def default_jobs(device: str) -> tuple[int, int]:
    """(jobs, GPUs): one job per GPU when fits go to GPUs, else one per FIT_THREADS cores."""
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            return n, n
    return max(1, cores() // FIT_THREADS), 0


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def plan(spec: BatchSpec, stdin: Callable[[], Iterable[str]] | None = None) -> Plan:
    """Every check that needs no work: inputs, output names (two inputs may not share one, no
    output may be an input), options and config. Reads nothing in OUTDIR yet."""
    if spec.command not in COMMANDS:
        raise LotteryError(f"unknown batch command '{spec.command}' (choose from {', '.join(COMMANDS)})")
    outdir = Path(spec.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise LotteryError(f"{outdir}: is not a directory")
    opts = spec.options
    cfg = task_config(spec.command, opts)
    if spec.command == "restore" and opts.reference is not None:
        raise LotteryError("--reference names one clean image: it has no meaning for a batch")
    sources = collect_inputs(spec.command, spec.inputs, outdir, spec.recursive, stdin)
    if not sources:
        raise LotteryError(f"no inputs found ({', '.join(spec.inputs) or 'none given'}; inputs of `batch {spec.command}` "
                           f"end in {', '.join(sorted(INPUT_SUFFIXES[spec.command]))})")
    owner: dict[str, str] = {}
    todo: list[Job] = []
    seen: set[tuple[str, str]] = set()
    for path, rel in sources:
        names = output_names(spec.command, rel, opts)
        key = (str(Path(path).resolve()), names[0].as_posix())
        if key in seen:  # the same file named twice for the same output
            continue
        seen.add(key)
        for name in names:
            other = owner.setdefault(name.as_posix(), path)
            if other != path:
                raise LotteryError(f"{outdir / name}: both {other} and {path} would be written there "
                                   "(rename one, or give their folders separately with another -o)")
        job_opts = job_options(spec.command, opts, path)
        todo.append(Job(index=len(todo), input=path, outputs=[str(outdir / n) for n in names],
                        names=[n.as_posix() for n in names], options=job_opts))
    _check_outputs_are_not_inputs(todo, opts)
    for job in todo:
        if spec.command == "restore" and job.options.mask is not None and not Path(job.options.mask).is_file():
            job.config_sha256 = ""  # the job fails alone, on its missing mask
        else:
            job.config_sha256 = config_sha256(spec.command, cfg, job.options)
    return Plan(spec, outdir, todo, [], [j.names[0] for j in todo], Settings(spec.command, 1, spec.force), config=cfg)


def size_workers(p: Plan) -> None:
    """Worker processes and torch threads per fit, once the inputs to run are known. Locally: one
    worker per GPU, or one per FIT_THREADS cores, sharing the cores; on Ray FIT_THREADS per fit
    (the cluster's cores are not this machine's). --jobs and --threads override."""
    spec = p.spec
    device = getattr(spec.options, "device", "cpu")
    if spec.ray is not None:
        p.jobs, p.gpus = 1, 0
        p.settings.threads = spec.threads or FIT_THREADS
        return
    auto, p.gpus = default_jobs(device)
    # From the jobs asked for, not those left to run: a fit's bytes can depend on its thread count
    # (float sums), and a resumed batch must write what an uninterrupted one would have.
    p.settings.threads = spec.threads or max(1, cores() // (spec.jobs or auto))
    p.jobs = max(1, min(spec.jobs or auto, len(p.todo)))
    if p.jobs > 1 and p.gpus == 0 and spec.command in ("compress", "restore"):
        _fit_jobs_to_memory(p)


def _fit_size(command: str, job: Job) -> tuple[int, int, bool] | None:
    """(height, width, banded) of the render a job's fit makes, from the input's header (None if
    unreadable: the job then fails alone, with its own message); banded: its loss is per pixel
    (all but super-resolution), so a large render is fitted in bands (`fitting.memory`)."""
    from ..images import image_size

    try:
        height, width = image_size(job.input)
    except LotteryError:
        return None
    scale = job.options.scale if command == "restore" and job.options.task == "sr" else None
    return height * (scale or 1), width * (scale or 1), scale is None


def _fit_jobs_to_memory(p: Plan) -> None:
    """Fewer CPU fits at once when the free memory cannot hold `p.jobs` fits of the largest input
    (`fitting.memory`): each fit checks its own memory as it starts, but fits starting together
    would all see the same free memory. The threads per fit stay as sized (the files do not change)."""
    from ..fitting import memory

    available = memory.available_bytes()
    if available is None or not memory.checked():
        return
    sizes = [s for s in (_fit_size(p.spec.command, job) for job in p.todo) if s is not None]
    if not sizes:
        return
    height, width, banded = max(sizes, key=lambda s: memory.one_fit_bytes(*s))
    hold = max(1, memory.fits_in(available, height, width, banded))
    if hold < p.jobs:
        p.notes.append(f"{hold} fit(s) at once instead of {p.jobs}: the largest input's fit ({width}x{height}) "
                       f"needs about {memory.size_text(memory.fit_bytes(height, width, 1, banded))} and "
                       f"{memory.size_text(available)} is free")
        p.jobs = hold


def _check_outputs_are_not_inputs(todo: list[Job], opts: Options) -> None:
    inputs: dict[str, str] = {}
    ids: dict[tuple[int, int], str] = {}
    extra = [getattr(opts, "config", None), getattr(opts, "mask", None)]
    for path in [j.input for j in todo] + [j.options.mask for j in todo if getattr(j.options, "mask", None)] + extra:
        if path is None:
            continue
        inputs[str(Path(path).resolve())] = path
        with contextlib.suppress(OSError):
            st = os.stat(path)
            ids[(st.st_dev, st.st_ino)] = path
    for job in todo:
        for out in job.outputs + [o + ".ckpt" for o in job.outputs[:1]]:
            src = inputs.get(str(Path(out).resolve()))
            if src is None:
                with contextlib.suppress(OSError):
                    st = os.stat(out)
                    src = ids.get((st.st_dev, st.st_ino))
            if src is not None:
                raise LotteryError(f"{out}: refusing to overwrite an input of this batch ({src})")


def decide(p: Plan, rows: list[dict]) -> None:
    """Split `p.todo` into the inputs to run and those skipped (outputs in place, manifest line
    "done" with the same input and config hashes), given the manifest's rows. An existing output
    no line mentions is refused, before any work, unless --force."""
    last: dict[str, dict] = {}
    mentioned: set[str] = set()
    for row in rows:
        mentioned.update(str(o) for o in row["outputs"])
        if row.get("status") in ("done", "failed"):
            last[str(row["outputs"][0])] = row
    todo, foreign = [], []
    for job in p.todo:
        try:
            job.input_sha256 = sha256_file(job.input)
        except LotteryError:
            job.input_sha256 = None  # the job fails alone, on its unreadable input
        row = last.get(job.names[0])
        if (not p.spec.force and row is not None and row.get("status") == "done"
                and job.input_sha256 is not None and row.get("input_sha256") == job.input_sha256
                and row.get("config_sha256") == job.config_sha256 and _outputs_intact(job, row)):
            p.skipped.append({**row, "status": "skipped"})
            continue
        foreign.extend(o for o, n in zip(job.outputs, job.names) if n not in mentioned and os.path.lexists(o))
        todo.append(job)
    if foreign and not p.spec.force:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise LotteryError(f"{foreign[0]}{more}: already exists and was not written by a batch into {p.outdir} "
                           "(use --force to overwrite, or choose another -o)")
    p.todo = todo


def _outputs_intact(job: Job, row: dict) -> bool:
    sizes = row.get("output_bytes") or []
    if len(sizes) != len(job.outputs):
        return False
    try:
        return all(os.path.getsize(o) == n for o, n in zip(job.outputs, sizes))
    except OSError:
        return False


GROUP_MAX = 16  # images per member batch of `batch compress` (a batch the device cannot hold is split further)


def batches_images(p: Plan) -> bool:
    """Whether `batch compress` fits images of one size together as member batches
    (`fitting.device.use_member_batch`, the config's `member_batch`: auto = on a GPU): locally
    only (a Ray task is one image), and not with --checkpoint-every (the batched loop keeps none)."""
    spec = p.spec
    if spec.command != "compress" or spec.ray is not None or p.config is None or len(p.todo) < 2:
        return False
    if spec.options.checkpoint_every is not None:
        return False
    from ..fitting.device import use_member_batch

    device = spec.options.device
    kind = "cuda" if device == "cuda" or (device == "auto" and p.gpus > 0) else "cpu"
    return use_member_batch(p.config.compression.member_batch, kind, len(p.todo), False)


def units(p: Plan) -> list[list[Job]]:
    """The jobs to run as units of work, in input order: one job each, or with member batches
    (`batches_images`) the images of one size (by their headers) together, GROUP_MAX at most."""
    if not batches_images(p):
        return [[job] for job in p.todo]
    from ..images import image_size

    groups: dict[object, list[list[Job]]] = {}
    order: list[list[Job]] = []
    for job in p.todo:
        try:
            key: object = image_size(job.input)
        except LotteryError:
            key = ("alone", job.index)  # fails on its own
        chunks = groups.setdefault(key, [])
        if not chunks or len(chunks[-1]) >= GROUP_MAX:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(job)
    return order
