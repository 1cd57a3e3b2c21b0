"""Fit checkpoints: a long fit's whole state, saved now and then beside its output, so that a run
killed at any moment can resume where it stopped and still write the same bytes.

A checkpoint is one file (OUTPUT.ckpt, `torch.save`, read back with weights_only=True) holding
named parts: `Fitter.state_dict()` of each fit (compression: one; restoration: every candidate
member) plus whatever else the caller needs to go on (the screening result). It records the
SHA-256 of the input and of the effective config: one made for another input or config is refused,
never used. It is written atomically (a temporary `.NAME.XXXX.tmp` file renamed over it), so a kill
during a save leaves the previous checkpoint whole.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import LotteryError
from ..files import write_atomically
from .loop import Fitter

FORMAT = 1
TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # the temporary files of atomic writes


def checkpoint_path(output: str | os.PathLike) -> Path:
    """photo.lottery -> photo.lottery.ckpt"""
    out = Path(output)
    return out.with_name(out.name + ".ckpt")


class Checkpoint:
    """The checkpoint of one output: `load()` what an earlier run left, `hook(name)` for each
    Fitter, `put()` other parts, `remove()` once the output is written.

    `every`: seconds between saves (0: after every step; None: never save, only resume). Fits on
    several threads share one Checkpoint: each hook snapshots its own fit between two of its steps
    (a consistent state of that fit), and the file holds each fit's latest snapshot.
    """

    def __init__(self, path: str | os.PathLike, identity: dict[str, str], every: float | None):
        self.path = Path(path)
        self.identity = dict(identity)
        self.every = every
        self.parts: dict[str, Any] = {}
        self.threads = torch.get_num_threads()  # the run's (its members may each use fewer)
        self.saved_threads: int | None = None  # the threads of the run that saved the loaded checkpoint
        self._lock = threading.Lock()
        self._last_save = time.monotonic()
        self.saves = 0

    def load(self, discard_other: bool = False) -> dict[str, Any] | None:
        """The parts saved by an earlier run of the same input and config, or None without a
        checkpoint. One of another input or config (or unreadable) is refused with a one-line
        error, or deleted with `discard_other` (--force). A save that a kill interrupted left a
        temporary file: it is removed."""
        for tmp in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
            if TMP_NAME.match(tmp.name):
                with contextlib.suppress(OSError):
                    tmp.unlink()
        if not self.path.exists():
            return None
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            ok = isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("parts"), dict)
        except Exception:  # noqa: BLE001 - any unreadable file is refused the same way
            ok, data = False, None
        if not ok:
            problem = "is not a readable checkpoint"
        elif data.get("identity") != self.identity:
            saved = data.get("identity") or {}
            which = [k.removesuffix("_sha256") for k in self.identity if saved.get(k) != self.identity[k]]
            problem = f"is the checkpoint of another {' and '.join(which) or 'run'}"
        else:
            self.parts = dict(data["parts"])
            self.saved_threads = data.get("threads")
            return dict(data["parts"])
        if discard_other:
            self.remove()
            return None
        raise LotteryError(f"{self.path}: {problem}; not used (delete it, or use --force, to start this fit over)")

    @property
    def saving(self) -> bool:
        """Whether this checkpoint is ever written (--checkpoint-every given)."""
        return self.every is not None

    def thread_note(self) -> str | None:
        """Why a resumed file may differ from an uninterrupted run's: float sums can depend on the
        thread count, and the loaded checkpoint was saved by a run on another one."""
        if self.saved_threads is None or self.saved_threads == self.threads:
            return None
        return (f"{self.path}: saved by a run on {self.saved_threads} torch thread(s), resumed on {self.threads}: the file "
                "may differ in its last bits from an uninterrupted run's")

    def put(self, name: str, value: Any) -> None:
        """Set part `name` (saved with the next save)."""
        with self._lock:
            self.parts[name] = value

    def drop(self, name: str) -> None:
        with self._lock:
            self.parts.pop(name, None)

    def hook(self, name: str) -> Callable[[Fitter], None] | None:
        """A Fitter `checkpoint` callback that snapshots the fit as part `name` and saves the file
        every `every` seconds (None when this checkpoint never saves)."""
        if self.every is None:
            return None
        last = time.monotonic()

        def snapshot(fitter: Fitter) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < self.every:
                return
            last = now
            self.put(name, fitter.state_dict())
            self.save(only_if_due=True)

        return snapshot

    def save(self, only_if_due: bool = False) -> None:
        """Write every part to the file now (atomically); with `only_if_due`, only when `every`
        seconds have passed since the last save."""
        if self.every is None:
            return
        with self._lock:
            now = time.monotonic()
            if only_if_due and now - self._last_save < self.every:
                return
            buf = io.BytesIO()
            torch.save({"format": FORMAT, "identity": self.identity, "parts": dict(self.parts),
                        "threads": self.threads}, buf)
            write_atomically(self.path, buf.getvalue(), "the checkpoint")
            self._last_save = now
            self.saves += 1

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise LotteryError(f"{self.path}: cannot remove the checkpoint ({exc.strerror or exc})") from None
