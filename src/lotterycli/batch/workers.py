"""Running a batch's jobs locally: one at a time in this process, or in worker processes that each
import torch once."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .events import Events, Reporter
from .execute import execute_unit
from .planning import units
from .spec import Job, Plan, Settings


def run_here(p: Plan, events: Events, begin: Callable[[Job], None], end: Callable[[Job, dict], None]) -> None:
    """One unit of work (`planning.units`) at a time in this process (torch imported once, here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(p.settings.threads)
    try:
        for unit in units(p):
            for job in unit:
                begin(job)
            for job, result in zip(unit, execute_unit(p.settings, unit, events.started(unit[0], 0))):
                end(job, result)
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
        from ..fitting import loop

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
            unit = conn.recv()
        except (EOFError, OSError):
            return
        if unit is None:
            return
        results = execute_unit(settings, unit, reporter)
        with reporter.lock:
            conn.send(("result", results))


@dataclass
class _Worker:
    slot: int
    process: Any = None
    conn: Any = None
    unit: list[Job] | None = None  # the jobs it runs now


def run_processes(p: Plan, events: Events, begin: Callable[[Job], None], end: Callable[[Job, dict], None]) -> None:
    """`p.jobs` worker processes, each importing torch once and running one unit of work at a time."""
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch's threads

    def start(w: _Worker) -> None:
        parent_conn, child_conn = ctx.Pipe()
        gpu = w.slot % p.gpus if p.gpus else None
        w.process = ctx.Process(target=_worker_main, args=(child_conn, p.settings, os.getpid(), gpu),
                                name=f"lottery-batch-{w.slot}", daemon=True)
        w.process.start()
        child_conn.close()
        w.conn, w.unit = parent_conn, None

    def died(w: _Worker) -> None:
        unit, w.unit = w.unit, None
        w.process.join(1.0)
        code = w.process.exitcode
        for job in unit or []:
            end(job, {"status": "failed", "seconds": 0.0,
                      "error": f"{job.input}: the worker process died (exit status {code}) during its work"})
        with contextlib.suppress(OSError):
            w.conn.close()
        start(w)

    def handle(w: _Worker, msg) -> None:
        kind, payload = msg
        if kind == "event":
            events.remote(w.slot, payload)
        elif kind == "result" and w.unit is not None:
            unit, w.unit = w.unit, None
            for job, result in zip(unit, payload):
                end(job, result)

    workers = [_Worker(slot) for slot in range(p.jobs)]
    pending = deque(units(p))
    try:
        for w in workers:
            start(w)
        while pending or any(w.unit is not None for w in workers):
            for w in workers:
                if w.unit is None and pending:
                    unit = pending.popleft()
                    for job in unit:
                        begin(job)
                    events.started(unit[0], w.slot)
                    w.unit = unit
                    try:
                        w.conn.send(unit)
                    except (OSError, EOFError):
                        died(w)
            busy = [w for w in workers if w.unit is not None]
            by_handle = {**{w.conn: w for w in busy}, **{w.process.sentinel: w for w in busy}}
            for ready in wait(list(by_handle), timeout=1.0):
                w = by_handle[ready]
                if w.unit is None and ready is not w.conn:
                    continue
                try:
                    while w.conn.poll():
                        handle(w, w.conn.recv())
                except (EOFError, OSError):
                    died(w)
                    continue
                if ready is w.process.sentinel and w.unit is not None:
                    died(w)
    finally:
        _stop_workers(workers)


def _stop_workers(workers: list[_Worker]) -> None:
    """Idle workers are told to end; busy ones (an interrupted batch) get SIGTERM, which stops their
    fit at its next step and removes any partial file; any still there after 10 s is killed."""
    for w in workers:
        if w.process is None or not w.process.is_alive():
            continue
        if w.unit is None:
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
