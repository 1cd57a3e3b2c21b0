"""A batch's inputs and the names of their outputs under OUTDIR."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from ..errors import LotteryError
from ..outputs import bitstream_beside, default_restored, stem
from .spec import Options

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"}
INPUT_SUFFIXES = {"compress": IMAGE_SUFFIXES, "restore": IMAGE_SUFFIXES | {".npy"}, "decompress": {".lottery"}}


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


def job_options(command: str, options: Options, path: str) -> Options:
    """Restoration by inpainting without --mask uses each image's own STEM.mask.png (what
    `lottery degrade --task inpaint` writes beside it)."""
    if command == "restore" and options.task == "inpaint" and options.mask is None:
        return dataclasses.replace(options, mask=str(Path(path).with_name(f"{stem(path)}.mask.png")))
    return options


def task_config(command: str, options: Options):
    """The effective task config (None for decompress): bad options and config files are refused
    here, once, before any work."""
    from ..jobs import compress_task_config, restore_task_config

    if command == "compress":
        return compress_task_config(options)
    if command == "restore":
        return restore_task_config(options, need_mask=False, files=(options.mask,))
    return None
