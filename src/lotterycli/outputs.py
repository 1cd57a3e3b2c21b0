"""Where a command writes: default output names, and the rules every output path obeys.

An output never replaces an input of the same command (image, config, mask, reference,
observation), with or without --force: paths are compared resolved, and as files (hard links and
symbolic links count as the same file). An existing output needs --force. "-" is standard output.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LotteryError

STDIO = "-"


def is_stdio(path: str | os.PathLike | None) -> bool:
    return path is not None and str(path) == STDIO


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: equal when resolved, or the same inode (hard links)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out: str | os.PathLike, inputs: list, force: bool) -> str | Path:
    """`out` checked against the rules above; returns it ("-" as is, else a Path)."""
    if is_stdio(out):
        return STDIO
    out = Path(out)
    for src in inputs:
        if src is None or is_stdio(src):
            continue
        if same_file(Path(src), out):
            raise LotteryError(f"{out}: refusing to overwrite an input of this command ({src})")
    if out.is_dir():
        raise LotteryError(f"{out}: is a directory")
    if out.exists() and not force:
        raise LotteryError(f"{out}: already exists (use --force to overwrite, or -o to choose another name)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise LotteryError(f"{out}: directory {parent} does not exist")
    return out


def stem(path: str | os.PathLike) -> str:
    """The file name without its last suffix."""
    p = Path(path)
    return p.name[: -len(p.suffix)] if p.suffix else p.name


def default_compressed(image: str | os.PathLike) -> Path:
    """img.png -> img.lottery"""
    return Path(image).with_suffix(".lottery")


def default_decoded(file: str | os.PathLike) -> Path:
    """img.lottery -> img.png, or img.decoded.png if img.png exists (most likely the original)."""
    png = Path(file).with_suffix(".png")
    return Path(file).with_suffix(".decoded.png") if png.exists() else png


def default_restored(image: str | os.PathLike) -> Path:
    """noisy.png -> noisy.restored.png"""
    p = Path(image)
    return p.with_name(f"{stem(p)}.restored.png")


def bitstream_beside(image_out: str | os.PathLike) -> Path:
    """noisy.restored.png -> noisy.restored.lottery"""
    return Path(image_out).with_suffix(".lottery")
