"""OUTDIR/manifest.jsonl and the folder's housekeeping: what each input was and gave, appended one
fsynced line at a time; the lock that keeps one batch per folder; leftovers of killed writes."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import LotteryError
from .spec import Job

MANIFEST = "manifest.jsonl"
TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # files.write_atomically's temporary files


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


def cut_torn_line(path: Path) -> None:
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
def locked(outdir: Path):
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
