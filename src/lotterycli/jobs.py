"""What each command does to files: read the input, call `api`, write the outputs atomically, and
return the result as a dict (the JSON line). Shared by the command line and `lottery batch`.

Inputs and output paths are checked first, and the config loaded, before torch is imported: a
mistake is reported in a fraction of a second, and nothing is written when any check fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import LotteryError
from .images import DEFAULT_MAX_PIXELS, check_input_file
from .outputs import (
    bitstream_beside,
    check_output,
    default_compressed,
    default_decoded,
    default_restored,
    is_stdio,
)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in pieces (one line naming the file if it cannot be read)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for piece in iter(lambda: fh.read(1 << 20), b""):
                h.update(piece)
    except OSError as exc:
        raise LotteryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return h.hexdigest()


def effective_config(command: str, cfg, opts) -> dict[str, Any]:
    """What decides a command's output bytes besides its input: the task config (with --config,
    preset and options merged in) and the options outside it. Why: `lottery batch` redoes an input
    when this changes, and a fit checkpoint made under another one is refused. Left out: options
    that only refuse or report (--max-pixels, --reference), thread counts and checkpointing."""
    d: dict[str, Any] = {"command": command}
    if cfg is not None:
        d["config"] = asdict(cfg)
    if command in ("compress", "restore"):
        d["device"] = opts.device
    if command == "restore":
        d.update(task=opts.task, sigma=opts.sigma, scale=opts.scale, bitstream=opts.bitstream,
                 mask_sha256=sha256_file(opts.mask) if opts.mask is not None else None)
    return d


def config_sha256(command: str, cfg, opts) -> str:
    """SHA-256 of `effective_config` as canonical JSON."""
    text = json.dumps(effective_config(command, cfg, opts), sort_keys=True, default=str, separators=(",", ":"))
    return sha256_bytes(text.encode())


def _checkpoint(out, where, command: str, input_sha256: str, cfg, opts):
    """The fit checkpoint of output `out` (at `where`, default OUT.ckpt), or None for standard
    output. It is always looked for (a run resumes whatever its options), saved to only with
    --checkpoint-every."""
    from .fitting.checkpoint import Checkpoint, checkpoint_path

    if where is None and is_stdio(out):
        return None
    path = checkpoint_path(out) if where is None else where
    identity = {"input_sha256": input_sha256, "config_sha256": config_sha256(command, cfg, opts)}
    return Checkpoint(path, identity, opts.checkpoint_every)


def _thread_note(ckpt, notify: Callable[[str], None]) -> None:
    note = ckpt.thread_note()
    if note is not None:
        notify(note)


def _check_checkpointing(out, opts, inputs: list) -> None:
    """--checkpoint-every needs a file to put its checkpoint beside, which must not be an input."""
    if opts.checkpoint_every is None:
        return
    if is_stdio(out):
        raise LotteryError("--checkpoint-every keeps its checkpoint beside the output: give -o FILE, not -")
    from .outputs import same_file

    ckpt = Path(out).with_name(Path(out).name + ".ckpt")
    for src in inputs:
        if src is not None and not is_stdio(src) and same_file(Path(src), ckpt):
            raise LotteryError(f"{ckpt}: refusing to overwrite an input of this command ({src})")


def _named(path, exc: LotteryError) -> LotteryError:
    """The error with the input's name in front, unless it already names it."""
    name = "standard input" if is_stdio(path) else str(path)
    msg = str(exc)
    return exc if msg.startswith(name) else LotteryError(f"{name}: {msg}")


# -- compress -------------------------------------------------------------------------------------
@dataclass
class CompressOptions:
    preset: str | None = None
    lam: float | None = None
    steps: int | None = None
    seed: int | None = None
    mask_ratio: float | None = None
    config: str | None = None
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    checkpoint_every: float | None = None  # seconds between fit checkpoints (None: none saved)


def compress_task_config(opts: CompressOptions):
    """The effective compression config of these options (checked; no torch)."""
    from .config import load_task_config  # as api.compress_config, without api's torch import

    if opts.config is not None:
        check_input_file(opts.config)
    return load_task_config("compress", preset=opts.preset, config_file=opts.config, overrides={
        "lambda": opts.lam, "steps": opts.steps, "seed": opts.seed, "mask_ratio": opts.mask_ratio})


def plan_compress(image: str | Path, output: str | Path | None, opts: CompressOptions, force: bool):
    """(effective config, output path) after every check that needs no torch."""
    check_input_file(image)
    cfg = compress_task_config(opts)
    if output is None and is_stdio(image):
        raise LotteryError("standard input has no name to derive the output's from: give -o FILE (or -o -)")
    out = check_output(output if output is not None else default_compressed(image), [image, opts.config], force)
    _check_checkpointing(out, opts, [image, opts.config])
    return cfg, out


def compress_file(image: str | Path, output: str | Path | None, opts: CompressOptions, *, force: bool = False,
                  progress=None, plan=None, notify: Callable[[str], None] | None = None,
                  checkpoint: Path | None = None, discard_checkpoint: bool | None = None) -> dict[str, Any]:
    """`checkpoint`: where the fit checkpoint goes (default OUTPUT.ckpt). One left there by an
    earlier run of the same input and config is resumed from (`notify` says so) and removed once
    the output is written; one of another input or config is refused, or deleted when
    `discard_checkpoint` (default: `force`)."""
    from .compression.encoder import compress_image
    from .images import atomic_write_bytes, read_image, read_input_bytes

    cfg, out = plan if plan is not None else plan_compress(image, output, opts, force)
    data = read_input_bytes(image)
    x = read_image(image, max_pixels=opts.max_pixels, data=data)
    ckpt = _checkpoint(out, checkpoint, "compress", sha256_bytes(data), cfg, opts)
    resume = ckpt.load(force if discard_checkpoint is None else discard_checkpoint) if ckpt is not None else None
    if resume and "fit" in resume and notify is not None:
        notify(f"{ckpt.path}: resuming the fit at step {resume['fit']['step']} of {resume['fit']['total']}")
        _thread_note(ckpt, notify)
    try:  # its own errors (the memory check) are about this image
        result = compress_image(x, cfg, device=opts.device, progress=progress, checkpoint=ckpt, resume=resume)
    except LotteryError as exc:
        raise _named(image, exc) from None
    atomic_write_bytes(out, result.data)
    if ckpt is not None:
        ckpt.remove()
    return compress_summary(image, out, result, cfg)


def compress_summary(image: str | Path, out: str | Path, result, cfg) -> dict[str, Any]:
    """What `compress` reports of a written file (`compression.encoder.CompressResult`)."""
    h, w = result.decoded.shape[1:]
    return {
        "input": str(image), "output": str(out), "width": w, "height": h, "bytes": result.n_bytes,
        "bpp": round(result.bpp, 5), "psnr": round(result.psnr, 3), "macs_per_pixel": round(result.macs_per_pixel, 1),
        "seconds": round(result.seconds, 2), "steps": result.steps, "lambda": cfg.lam, "preset": cfg.preset,
        "mask_ratio": result.mask_ratio, "seed": cfg.seed, "threads": _threads(),
    }


def compress_text(r: dict) -> str:
    return (f"{r['output']}: {r['bytes']} bytes, {r['bpp']:.4f} bpp, PSNR {r['psnr']:.2f} dB, "
            f"{r['macs_per_pixel']:,.0f} MACs/pixel, {r['seconds']:.1f} s ({r['steps']} steps)")


# -- decompress -----------------------------------------------------------------------------------
def plan_decompress(file: str | Path, output: str | Path | None, force: bool):
    check_input_file(file)
    if output is None and is_stdio(file):
        raise LotteryError("standard input has no name to derive the output's from: give -o FILE (or -o -)")
    return check_output(output if output is not None else default_decoded(file), [file], force)


def decompress_file(file: str | Path, output: str | Path | None, *, force: bool = False,
                    max_pixels: int = DEFAULT_MAX_PIXELS, plan=None) -> dict[str, Any]:
    from .compression.decoder import decode_checked
    from .images import read_input_bytes, write_png

    out = plan if plan is not None else plan_decompress(file, output, force)
    data = read_input_bytes(file)
    start = time.perf_counter()
    try:
        pixels = decode_checked(data, max_pixels)
    except LotteryError as exc:
        raise _named(file, exc) from None
    seconds = time.perf_counter() - start
    write_png(out, pixels)
    h, w = pixels.shape[1:]
    return {"input": str(file), "output": str(out), "width": w, "height": h, "seconds": round(seconds, 3)}


def decompress_text(r: dict) -> str:
    return f"{r['output']}: {r['width']}x{r['height']} decoded in {r['seconds']:.2f} s"


# -- restore --------------------------------------------------------------------------------------
@dataclass
class RestoreOptions:
    task: str = "denoise"
    sigma: float | None = None  # 0-255 scale
    scale: int | None = None
    mask: str | None = None
    preset: str | None = None
    steps: int | None = None
    ensemble: int | None = None
    candidates: int | None = None
    workers: int | None = None
    lam: float | None = None
    mask_ratio: float | None = None
    seed: int | None = None
    reference: str | None = None
    bitstream: bool = True
    config: str | None = None
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    checkpoint_every: float | None = None  # seconds between fit checkpoints (None: none saved)


def restore_task_config(opts: RestoreOptions, need_mask: bool = True, files: tuple = ()):
    """The effective restoration config of these options, after checking that they fit the task
    and that `files` and the option's files can be read (no torch). `need_mask`: inpainting
    without --mask is an error (`lottery batch` finds each image's own)."""
    from .config import load_task_config  # as api.restore_config, without api's torch import

    if opts.task not in ("denoise", "sr", "inpaint"):
        raise LotteryError(f"--task must be denoise, sr or inpaint, got {opts.task!r}")
    if opts.task != "sr" and opts.scale is not None:
        raise LotteryError("--scale is only for --task sr")
    if opts.task != "inpaint" and opts.mask is not None:
        raise LotteryError("--mask is only for --task inpaint")
    if opts.task == "sr" and opts.scale is None:
        raise LotteryError("--task sr needs --scale 2, 3 or 4")
    if opts.task == "inpaint" and opts.mask is None and need_mask:
        raise LotteryError("--task inpaint needs --mask MASK.png (white = known, black = missing)")
    for path in (*files, opts.reference, opts.config):
        if path is not None:
            check_input_file(path)
    return load_task_config(opts.task, preset=opts.preset, config_file=opts.config, overrides={
        "steps": opts.steps, "ensemble": opts.ensemble, "candidates": opts.candidates, "lambda": opts.lam,
        "seed": opts.seed, "mask_ratio": opts.mask_ratio})


def plan_restore(image: str | Path, output: str | Path | None, opts: RestoreOptions, force: bool):
    """(config, image output, bitstream output or None) after every check that needs no torch."""
    cfg = restore_task_config(opts, files=(image, opts.mask))
    if output is None and is_stdio(image):
        raise LotteryError("standard input has no name to derive the output's from: give -o FILE (or -o -)")
    inputs = [image, opts.mask, opts.reference, opts.config]
    out = check_output(output if output is not None else default_restored(image), inputs, force)
    bits = None
    if opts.bitstream and not is_stdio(out):
        bits = check_output(bitstream_beside(out), inputs + [out], force)
    _check_checkpointing(out, opts, inputs)
    return cfg, out, bits


def restore_file(image: str | Path, output: str | Path | None, opts: RestoreOptions, *, force: bool = False,
                 progress=None, on_member: Callable | None = None, notify: Callable[[str], None] | None = None,
                 plan=None, checkpoint: Path | None = None, discard_checkpoint: bool | None = None) -> dict[str, Any]:
    """`notify(text)`: told about choices made on the user's behalf (the estimated noise level) and
    about a resumed fit. `checkpoint`, `discard_checkpoint`: as `compress_file`'s (the checkpoint
    holds every member's fit and the screening's outcome)."""
    from .bitstream.container import encode_file
    from .images import atomic_write_bytes, check_size, read_image, read_input_bytes, write_png
    from .metrics import psnr, ssim
    from .restoration.ensemble import restore_image
    from .restoration.masks import read_mask
    from .restoration.tasks import restoration_operator, restore_lambda

    cfg, out, bits_out = plan if plan is not None else plan_restore(image, output, opts, force)
    data = read_input_bytes(image)
    y = read_image(image, allow_float=True, min_side=4 if opts.task == "sr" else 16, max_pixels=opts.max_pixels,
                   data=data)
    mask = read_mask(opts.mask, max_pixels=opts.max_pixels) if opts.mask is not None else None
    try:
        operator, sigma_255, estimated = restoration_operator(opts.task, y, sigma=opts.sigma, scale=opts.scale, mask=mask)
    except LotteryError as exc:
        raise _named(image, exc) from None
    if estimated and notify is not None:
        notify(f"estimated noise level: sigma = {sigma_255:.1f} (0-255 scale; give --sigma to set it)")
    out_h, out_w = operator.output_shape(tuple(y.shape))
    check_size(out_h, out_w, what="the restored image", max_pixels=opts.max_pixels)
    clean = None
    if opts.reference is not None:
        clean = read_image(opts.reference, max_pixels=opts.max_pixels)
        if tuple(clean.shape[1:]) != (out_h, out_w):
            raise LotteryError(f"{opts.reference}: reference is {clean.shape[2]}x{clean.shape[1]}, "
                               f"the result will be {out_w}x{out_h}")
    lam = restore_lambda(cfg, operator, opts.lam)
    ckpt = _checkpoint(out, checkpoint, "restore", sha256_bytes(data), cfg, opts)
    resume = ckpt.load(force if discard_checkpoint is None else discard_checkpoint) if ckpt is not None else None
    if resume and notify is not None:
        steps = [v["step"] for k, v in resume.items() if k.startswith("member ")]
        notify(f"{ckpt.path}: resuming {len(steps)} member fit(s) at steps {', '.join(map(str, steps))} of {cfg.steps}")
        _thread_note(ckpt, notify)
    try:  # its own errors (the memory check) are about this image
        result = restore_image(y, operator, cfg, lam=lam, device=opts.device, progress=progress, on_member=on_member,
                               bitstream=bits_out is not None, workers=opts.workers, checkpoint=ckpt, resume=resume)
    except LotteryError as exc:
        raise _named(image, exc) from None
    write_png(out, result.image)
    if bits_out is not None:
        atomic_write_bytes(bits_out, encode_file(result.payload))
    if ckpt is not None:
        ckpt.remove()
    r = cfg.restoration
    summary: dict[str, Any] = {
        "input": str(image), "output": str(out), "task": opts.task, "sigma": round(sigma_255, 3),
        "sigma_estimated": estimated, "scale": opts.scale, "lambda": lam, "preset": cfg.preset,
        "steps": cfg.steps, "ensemble": r.ensemble, "seed": cfg.seed, "member_seeds": result.seeds,
        "screened_out_seeds": result.dropped_seeds, "seconds": round(result.seconds, 2),
        "threads": _threads(), "bitstream": str(bits_out) if bits_out else None,
        "bitstream_holds": (f"the render of the best member (seed {result.seeds[result.best_member]}), "
                            "not the ensemble's restored image") if bits_out else None,
        "classical_blend": r.classical_blend if result.classical_image is not None else 0.0,
    }
    if clean is not None:
        summary["psnr"] = round(psnr(result.image, clean), 3)
        summary["ssim"] = round(ssim(result.image, clean), 4)
        summary["member_psnr"] = [round(psnr(m, clean), 3) for m in result.members]
        summary["member_ssim"] = [round(ssim(m, clean), 4) for m in result.members]
        if result.classical_image is not None:  # the result mixes the ensemble with a classical estimate
            summary["ensemble_psnr"] = round(psnr(result.ensemble_image, clean), 3)
            summary["classical_psnr"] = round(psnr(result.classical_image, clean), 3)
    return summary


def restore_text(r: dict) -> str:
    text = f"{r['output']}: {r['task']}, {r['ensemble']} member(s) x {r['steps']} steps, {r['seconds']:.1f} s"
    if r["screened_out_seeds"]:
        text += f" (best {r['ensemble']} of {r['ensemble'] + len(r['screened_out_seeds'])} candidates after screening)"
    if "psnr" in r:
        text += f", PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}"
        if r["ensemble"] > 1:
            text += " (members: " + ", ".join(f"{p:.2f}" for p in r["member_psnr"]) + " dB)"
    if r["bitstream"]:
        text += f"; {r['bitstream']} holds the best member's render"
    return text


# -- degrade --------------------------------------------------------------------------------------
def degrade_file(image: str | Path, output: str | Path, *, task: str, sigma: float = 0.0, scale: int | None = None,
                 missing_ratio: float | None = None, seed: int = 0, as_float: bool = False, force: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    check_input_file(image)
    if task == "inpaint" and missing_ratio is None:
        raise LotteryError("--task inpaint needs --missing-ratio (e.g. 0.5)")
    if task != "inpaint" and missing_ratio is not None:
        raise LotteryError("--missing-ratio is only for --task inpaint")
    if as_float and not is_stdio(output) and Path(output).suffix.lower() != ".npy":
        output = Path(output).with_suffix(".npy")
    out = check_output(output, [image], force)
    mask_out = None
    if task == "inpaint":
        if is_stdio(out):
            raise LotteryError("inpainting writes a mask beside the observation: give -o FILE, not -")
        from .outputs import stem

        mask_out = check_output(out.with_name(f"{stem(out)}.mask.png"), [image, out], force)
    from .images import atomic_write_bytes, encode_npy, encode_png, read_image
    from .restoration.masks import write_mask
    from .restoration.tasks import degrade

    x = read_image(image, max_pixels=max_pixels)
    try:
        d = degrade(x, task, sigma=sigma, scale=scale, missing_ratio=missing_ratio, seed=seed)
    except LotteryError as exc:
        raise _named(image, exc) from None
    y = d.observation
    npy = as_float or (not is_stdio(out) and out.suffix.lower() == ".npy")
    atomic_write_bytes(out, encode_npy(y) if npy else encode_png(y.clamp(0, 1)))
    if mask_out is not None:
        write_mask(mask_out, d.operator.observed(tuple(y.shape)))
    return {"input": str(image), "output": str(out), "task": task, "sigma": sigma, "seed": seed,
            "width": int(y.shape[2]), "height": int(y.shape[1]), "mask": str(mask_out) if mask_out else None}


def degrade_text(r: dict) -> str:
    return f"{r['output']}: {r['task']} observation {r['width']}x{r['height']}" + (f", mask {r['mask']}" if r["mask"] else "")
