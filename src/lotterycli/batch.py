"""`lottery batch`: one command over many inputs, resumable, in local worker processes or on Ray.

The work of each input is what the single command does (`jobs.compress_file`, `restore_file`,
`decompress_file`); this module decides which inputs to run, where their outputs go, and keeps
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import LotteryError
from .images import DEFAULT_MAX_PIXELS
from .jobs import CompressOptions, RestoreOptions, config_sha256, sha256_file
from .outputs import bitstream_beside, default_restored, stem

COMMANDS = ("compress", "restore", "decompress")
MANIFEST = "manifest.jsonl"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"}
INPUT_SUFFIXES = {"compress": IMAGE_SUFFIXES, "restore": IMAGE_SUFFIXES | {".npy"}, "decompress": {".lottery"}}
TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # images.atomic_write_bytes' temporary files
FIT_THREADS = 2  # torch threads one CPU fit uses well (the rate on a second thread: fitting.loop)


@dataclass
class DecompressOptions:
    max_pixels: int = DEFAULT_MAX_PIXELS


Options = CompressOptions | RestoreOptions | DecompressOptions


@dataclass
class BatchSpec:
    """What `lottery batch COMMAND` was asked to do."""

    command: str
    inputs: list[str]
    outdir: str
    options: Options
    recursive: bool = False
    jobs: int | None = None  # local worker processes (None: one per FIT_THREADS cores, one per GPU)
    threads: int | None = None  # torch threads per fit (None: the cores shared among the jobs)
    ray: str | None = None  # None: local; "local": a Ray instance of this machine; "auto" or HOST:PORT
    force: bool = False


@dataclass
class Job:
    """One input's work, as sent to a worker (picklable)."""

    index: int
    input: str
    outputs: list[str]  # where the outputs go; the first is the main one
    names: list[str]  # the same, relative to OUTDIR (POSIX): the manifest's names; names[0] is the key
    options: Options  # this input's options (restore: its own mask)
    input_sha256: str | None = None
    config_sha256: str = ""


@dataclass
class Settings:
    """What every job of a batch shares (picklable)."""

    command: str
    threads: int
    force: bool  # discard checkpoints of another input or config


@dataclass
class Plan:
    spec: BatchSpec
    outdir: Path
    todo: list[Job]
    skipped: list[dict]  # the manifest rows of the inputs skipped, with status "skipped"
    keys: list[str]  # every input's manifest key (its main output's name), in input order
    settings: Settings
    jobs: int = 1  # worker processes (1: this process)
    gpus: int = 0  # GPUs the workers are spread over
    notes: list[str] = field(default_factory=list)  # choices made on the user's behalf, told before any work


# -- inputs and output names ---------------------------------------------------------------------------
def _is_input(command: str, path: Path) -> bool:
    name = path.name.lower()
    if name.startswith(".") or path.suffix.lower() not in INPUT_SUFFIXES[command]:
        return False
    # restore's own outputs and `lottery degrade`'s masks are not observations
    return not (command == "restore" and (name.endswith(".restored.png") or name.endswith(".mask.png")))


def _folder_files(command: str, folder: Path, recursive: bool, outdir: Path) -> list[Path]:
    """The inputs in `folder` in sorted order; with `recursive` its subfolders' too, except OUTDIR's."""
    found: list[Path] = []
    out_resolved = outdir.resolve()
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and _is_input(command, p))
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(root, d).resolve() != out_resolved)
        found.extend(Path(root, f) for f in files if _is_input(command, Path(root, f)))
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _relative_name(path: Path) -> PurePosixPath:
    """Where a file given by name lands under OUTDIR: its path as given when that is relative and
    stays inside the current folder (photos/a.png -> OUTDIR/photos/a.*), else its name."""
    parts = [p for p in path.parts if p != "."]
    if path.is_absolute() or ".." in parts or not parts:
        return PurePosixPath(path.name)
    return PurePosixPath(*parts)


def collect_inputs(command: str, inputs: Iterable[str], outdir: Path, recursive: bool = False,
                   stdin: Callable[[], Iterable[str]] | None = None) -> list[tuple[str, PurePosixPath]]:
    """(input path, name relative to OUTDIR) of every input, in order. A folder gives its inputs
    (by suffix) named relative to it; a file, or a line of the list read from standard input for
    `-`, is named as `_relative_name` says. A missing input is an error, before any work."""
    found: list[tuple[str, PurePosixPath]] = []
    for arg in inputs:
        if arg == "-":
            read = stdin if stdin is not None else (lambda: sys.stdin)
            for line in read():
                line = line.rstrip("\r\n")
                if line.strip():
                    found.append(_one_file(Path(line), "standard input's list"))
            continue
        path = Path(arg)
        if path.is_dir():
            for f in _folder_files(command, path, recursive, outdir):
                found.append((str(f), PurePosixPath(*f.relative_to(path).parts)))
        else:
            found.append(_one_file(path, "the command line"))
    return found


def _one_file(path: Path, where: str) -> tuple[str, PurePosixPath]:
    if not path.exists():
        raise LotteryError(f"{path}: no such file (named on {where})")
    if path.is_dir():
        raise LotteryError(f"{path}: is a directory (folders are given as arguments, not in a list)")
    return str(path), _relative_name(path)


def output_names(command: str, rel: PurePosixPath, options: Options) -> list[PurePosixPath]:
    """The outputs of input `rel`: compress -> .lottery, decompress -> .png, restore ->
    .restored.png (+ .restored.lottery with the bitstream)."""
    if command == "compress":
        return [rel.with_suffix(".lottery")]
    if command == "decompress":
        return [rel.with_suffix(".png")]
    image = PurePosixPath(default_restored(rel).as_posix())
    return [image] + ([PurePosixPath(bitstream_beside(image).as_posix())] if options.bitstream else [])


def _job_options(command: str, options: Options, path: str) -> Options:
    """Restoration by inpainting without --mask uses each image's own STEM.mask.png (what
    `lottery degrade --task inpaint` writes beside it)."""
    if command == "restore" and options.task == "inpaint" and options.mask is None:
        return dataclasses.replace(options, mask=str(Path(path).with_name(f"{stem(path)}.mask.png")))
    return options


def _config(command: str, options: Options):
    """The effective task config (None for decompress): bad options and config files are refused
    here, once, before any work."""
    from .jobs import compress_task_config, restore_task_config

    if command == "compress":
        return compress_task_config(options)
    if command == "restore":
        return restore_task_config(options, need_mask=False, files=(options.mask,))
    return None


# -- the manifest ----------------------------------------------------------------------------------------
def read_manifest(path: Path) -> list[dict]:
    """Its rows; a torn or unreadable line (a kill during an append) is skipped."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("outputs"), list) and row["outputs"]:
            rows.append(row)
    return rows


def _cut_torn_line(path: Path) -> None:
    """Cut a last line without its newline (a kill during an append): the next append starts clean."""
    try:
        with open(path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)
                fh.flush()
                os.fsync(fh.fileno())
    except FileNotFoundError:
        pass


class Manifest:
    """OUTDIR/manifest.jsonl, appended one fsynced line at a time."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def append(self, row: dict) -> None:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            except OSError as exc:
                raise LotteryError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        os.write(self._fd, (json.dumps(row, sort_keys=True) + "\n").encode())
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def _locked(outdir: Path):
    """Hold a lock on OUTDIR for the batch: a second batch into the same folder is refused (the lock
    goes with the process, even when it is killed)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(outdir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LotteryError(f"{outdir}: another `lottery batch` is writing into this folder") from None
        yield
    finally:
        os.close(fd)


def remove_leftovers(outdir: Path) -> int:
    """Delete the temporary files of writes a kill interrupted (`.NAME.XXXX.tmp`) in OUTDIR."""
    n = 0
    for root, _dirs, files in os.walk(outdir):
        for name in files:
            if TMP_NAME.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(root, name))
                    n += 1
    return n


# -- planning ------------------------------------------------------------------------------------------------
def default_jobs(device: str) -> tuple[int, int]:
    """(jobs, GPUs): one job per GPU when fits go to GPUs, else one per FIT_THREADS cores."""
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            return n, n
    return max(1, _cores() // FIT_THREADS), 0


def _cores() -> int:
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
    cfg = _config(spec.command, opts)
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
        job_opts = _job_options(spec.command, opts, path)
        todo.append(Job(index=len(todo), input=path, outputs=[str(outdir / n) for n in names],
                        names=[n.as_posix() for n in names], options=job_opts))
    _check_outputs_are_not_inputs(todo, opts)
    for job in todo:
        if spec.command == "restore" and job.options.mask is not None and not Path(job.options.mask).is_file():
            job.config_sha256 = ""  # the job fails alone, on its missing mask
        else:
            job.config_sha256 = config_sha256(spec.command, cfg, job.options)
    return Plan(spec, outdir, todo, [], [j.names[0] for j in todo], Settings(spec.command, 1, spec.force))


def _size_workers(p: Plan) -> None:
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
    p.settings.threads = spec.threads or max(1, _cores() // (spec.jobs or auto))
    p.jobs = max(1, min(spec.jobs or auto, len(p.todo)))
    if p.jobs > 1 and p.gpus == 0 and spec.command in ("compress", "restore"):
        _fit_jobs_to_memory(p)


def _fit_pixels(command: str, job: Job) -> int | None:
    """The pixels of the render a job's fit makes, from the input's header (None if unreadable:
    the job then fails alone, with its own message)."""
    from .images import image_size

    try:
        height, width = image_size(job.input)
    except LotteryError:
        return None
    scale = job.options.scale if command == "restore" and job.options.task == "sr" else None
    return height * width * (scale or 1) ** 2


def _fit_jobs_to_memory(p: Plan) -> None:
    """Fewer CPU fits at once when the free memory cannot hold `p.jobs` fits of the largest input
    (`fitting.memory`): each fit checks its own memory as it starts, but fits starting together
    would all see the same free memory. The threads per fit stay as sized (the files do not change)."""
    from .fitting import memory

    available = memory.available_bytes()
    if available is None or not memory.checked():
        return
    sizes = [n for n in (_fit_pixels(p.spec.command, job) for job in p.todo) if n is not None]
    if not sizes:
        return
    largest = max(sizes)
    hold = max(1, memory.fits_in(available, largest))
    if hold < p.jobs:
        p.notes.append(f"{hold} fit(s) at once instead of {p.jobs}: the largest input's fit ({largest:,} pixels) "
                       f"needs about {memory.size_text(memory.fit_bytes(largest))} and "
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


def _decide(p: Plan, rows: list[dict]) -> None:
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


# -- one job -----------------------------------------------------------------------------------------------
class Reporter:
    """Where a running job's progress goes (the batch display, a pipe to the driver, nowhere)."""

    def progress(self):  # a fitting ProgressCallback, with .member(k, n, total) for restoration
        return None

    def note(self, text: str) -> None:
        pass


def execute(settings: Settings, job: Job, reporter: Reporter | None = None,
            checkpoint: Path | None = None) -> dict:
    """Run one job; never raises for the job's own failure (a bad image, any error of its work):
    returns {"status": "done", "summary", ...} or {"status": "failed", "error"}. KeyboardInterrupt
    and SystemExit (a stopped batch) go through."""
    from . import jobs

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


def manifest_row(job: Job, result: dict) -> dict:
    """The manifest line of a finished job: what it was (input, hashes, outputs) and what it gave."""
    row: dict[str, Any] = {}
    if result["status"] == "done":
        summary = dict(result["summary"])
        for key in ("input", "output", "bitstream", "bitstream_holds", "seconds"):
            summary.pop(key, None)
        row.update(summary)
        row["output_bytes"] = [os.path.getsize(o) for o in job.outputs]
    else:
        row["error"] = result["error"]
    row.update(status=result["status"], input=job.input, input_sha256=job.input_sha256,
               config_sha256=job.config_sha256, outputs=job.names, seconds=result["seconds"],
               peak_rss_mb=result.get("peak_rss_mb"))
    return row


# -- the events of a batch --------------------------------------------------------------------------------------
class Events:
    """What a batch tells its caller (the command line shows it; `api.batch` may listen)."""

    def planned(self, todo: int, skipped: int) -> None:
        pass

    def note(self, text: str) -> None:
        """A choice made on the user's behalf (fewer fits at once for lack of memory)."""

    def started(self, job: Job, slot: int) -> Reporter | None:
        """Job starts on worker `slot`; may return where its progress goes (local jobs)."""
        return None

    def remote(self, slot: int, event: tuple) -> None:
        """A progress event of a worker process's job: ("step", info dict), ("member", k, n, total),
        ("mstep", k, info dict), ("note", text)."""

    def finished(self, job: Job, row: dict, summary: dict | None) -> None:
        pass


# -- running locally -----------------------------------------------------------------------------------------
def _run_here(p: Plan, events: Events, begin: Callable[[Job], None], end: Callable[[Job, dict], None]) -> None:
    """One job at a time in this process (torch imported once, here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(p.settings.threads)
    try:
        for job in p.todo:
            begin(job)
            end(job, execute(p.settings, job, events.started(job, 0)))
    finally:
        torch.set_num_threads(before)


class _PipeReporter(Reporter):
    """A worker's progress, sent to the driver over the worker's pipe (fits on several threads
    share it: one lock)."""

    def __init__(self, conn):
        self.conn, self.lock = conn, threading.Lock()

    def send(self, *event) -> None:
        with self.lock:
            self.conn.send(("event", event))

    def progress(self):
        reporter = self

        class Progress:
            def __call__(self, info) -> None:
                reporter.send("step", vars(info))

            def member(self, k: int, n: int, total: int):
                reporter.send("member", k, n, total)
                return lambda info: reporter.send("mstep", k, vars(info))

        return Progress()

    def note(self, text: str) -> None:
        self.send("note", text)


def _exit_with_parent(parent: int) -> None:
    """A worker must not outlive its batch (a SIGKILLed driver cannot stop it): Linux kills it when
    the parent dies; elsewhere a thread watches the parent."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker_main(conn, settings: Settings, parent: int, gpu: int | None) -> None:
    """A local worker process: imports torch once, then runs the jobs the driver sends until None."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    os.environ["OMP_NUM_THREADS"] = str(settings.threads)
    _exit_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the driver decides

    def stop(signum, frame) -> None:
        from .fitting import loop

        loop.cancel_all()
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, stop)
    reporter = _PipeReporter(conn)
    import warnings

    warnings.showwarning = lambda message, *a, **k: reporter.note(f"warning: {message}")
    import torch

    torch.set_num_threads(settings.threads)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        result = execute(settings, job, reporter)
        with reporter.lock:
            conn.send(("result", result))


@dataclass
class _Worker:
    slot: int
    process: Any = None
    conn: Any = None
    job: Job | None = None


def _run_processes(p: Plan, events: Events, begin: Callable[[Job], None], end: Callable[[Job, dict], None]) -> None:
    """`p.jobs` worker processes, each importing torch once and running one job at a time."""
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch's threads

    def start(w: _Worker) -> None:
        parent_conn, child_conn = ctx.Pipe()
        gpu = w.slot % p.gpus if p.gpus else None
        w.process = ctx.Process(target=_worker_main, args=(child_conn, p.settings, os.getpid(), gpu),
                                name=f"lottery-batch-{w.slot}", daemon=True)
        w.process.start()
        child_conn.close()
        w.conn, w.job = parent_conn, None

    def died(w: _Worker) -> None:
        job, w.job = w.job, None
        w.process.join(1.0)
        code = w.process.exitcode
        if job is not None:
            end(job, {"status": "failed", "seconds": 0.0,
                      "error": f"{job.input}: the worker process died (exit status {code}) during its work"})
        with contextlib.suppress(OSError):
            w.conn.close()
        start(w)

    def handle(w: _Worker, msg) -> None:
        kind, payload = msg
        if kind == "event":
            events.remote(w.slot, payload)
        elif kind == "result" and w.job is not None:
            job, w.job = w.job, None
            end(job, payload)

    workers = [_Worker(slot) for slot in range(p.jobs)]
    pending = deque(p.todo)
    try:
        for w in workers:
            start(w)
        while pending or any(w.job is not None for w in workers):
            for w in workers:
                if w.job is None and pending:
                    job = pending.popleft()
                    begin(job)
                    events.started(job, w.slot)
                    w.job = job
                    try:
                        w.conn.send(job)
                    except (OSError, EOFError):
                        died(w)
            busy = [w for w in workers if w.job is not None]
            by_handle = {**{w.conn: w for w in busy}, **{w.process.sentinel: w for w in busy}}
            for ready in wait(list(by_handle), timeout=1.0):
                w = by_handle[ready]
                if w.job is None and ready is not w.conn:
                    continue
                try:
                    while w.conn.poll():
                        handle(w, w.conn.recv())
                except (EOFError, OSError):
                    died(w)
                    continue
                if ready is w.process.sentinel and w.job is not None:
                    died(w)
    finally:
        _stop_workers(workers)


def _stop_workers(workers: list[_Worker]) -> None:
    """Idle workers are told to end; busy ones (an interrupted batch) get SIGTERM, which stops their
    fit at its next step and removes any partial file; any still there after 10 s is killed."""
    for w in workers:
        if w.process is None or not w.process.is_alive():
            continue
        if w.job is None:
            with contextlib.suppress(OSError, EOFError):
                w.conn.send(None)
        else:
            w.process.terminate()
    deadline = time.monotonic() + 10.0
    for w in workers:
        if w.process is not None:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
        with contextlib.suppress(Exception):
            w.conn.close()


# -- the batch ------------------------------------------------------------------------------------------------
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
    with _locked(p.outdir):
        remove_leftovers(p.outdir)
        manifest_path = p.outdir / MANIFEST
        _cut_torn_line(manifest_path)
        _decide(p, read_manifest(manifest_path))
        _size_workers(p)
        cluster = None
        if spec.ray is not None and p.todo:  # connected before any work: its errors come first
            from .ray_runner import Cluster

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
                from .ray_runner import run_on_ray

                run_on_ray(cluster, p, events, begin, end)
            elif p.jobs == 1:
                _run_here(p, events, begin, end)
            else:
                _run_processes(p, events, begin, end)
        finally:
            manifest.close()
            if cluster is not None:
                cluster.close()
            outcome.seconds = time.perf_counter() - t0
    outcome.rows = [rows[key] for key in p.keys if key in rows]
    return outcome
