"""What a batch is asked to do and how it was planned: the picklable records sent to workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..images import DEFAULT_MAX_PIXELS
from ..jobs import CompressOptions, RestoreOptions

COMMANDS = ("compress", "restore", "decompress")
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
    config: Any = None  # the effective task config (None for decompress)


