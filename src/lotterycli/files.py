"""Atomic file writes, shared by every layer (outputs, checkpoints).

A file appears whole or not at all: `data` goes to a temporary file beside the target (named
`.NAME.XXXXXXXX.tmp`, which `lottery batch` removes after a killed run), is flushed to disk, then
renamed over the target. It gets the permissions of a normally created file (the umask applies).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import LotteryError


def write_atomically(path: str | os.PathLike, data: bytes, what: str = "") -> None:
    """Write `data` to `path` atomically; an OSError becomes a LotteryError naming the path
    ("PATH: cannot write WHAT (reason)")."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    label = f"cannot write {what}" if what else "cannot write"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise LotteryError(f"{path}: {label} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise LotteryError(f"{path}: {label} ({exc.strerror or exc})") from None
        raise
