"""The `lottery` command line: thin wrappers that parse options, call the library and print.

Results go to stdout (one line, or one JSON line with --json); progress, warnings and errors go
to stderr. Exit status: 0 success, 1 error (one line, no traceback), 2 bad usage.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import LotteryError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Zero-shot image restoration and neural image compression with random networks.",
)


class Preset(str, Enum):
    fast = "fast"
    balanced = "balanced"
    best = "best"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Task(str, Enum):
    denoise = "denoise"
    sr = "sr"
    inpaint = "inpaint"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lottery {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit.")) -> None:
    pass


# -- helpers ---------------------------------------------------------------------------------------
def _output_path(requested: Optional[Path], default: Path, inputs: list[Path], force: bool) -> Path:
    """Resolve the output path: refuse to overwrite an input ever, or an existing file without --force."""
    out = requested if requested is not None else default
    for src in inputs:
        if src.exists() and out.exists() and os.path.samefile(src, out):
            raise LotteryError(f"{out}: refusing to overwrite the input file")
    if out.exists() and not force:
        raise LotteryError(f"{out}: already exists (use --force to overwrite, or -o to choose another name)")
    if out.is_dir():
        raise LotteryError(f"{out}: is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise LotteryError(f"{out}: directory {parent} does not exist")
    return out


def _emit(result: dict, as_json: bool, text: str, quiet: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    elif not quiet or text:
        typer.echo(text)


def _configure_warnings(quiet: bool) -> None:
    def show(message, category, filename, lineno, file=None, line=None):
        if not quiet:
            print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def _threads() -> int:
    import torch

    return torch.get_num_threads()


_quiet_opt = typer.Option(False, "--quiet", "-q", help="No progress display or warnings (errors are still printed).")
_json_opt = typer.Option(False, "--json", help="Print one machine-readable JSON line on stdout.")
_force_opt = typer.Option(False, "--force", "-f", help="Overwrite an existing output file.")
_device_opt = typer.Option(Device.auto, "--device", help="Where to fit: auto (GPU if present), cpu or cuda.")
_config_opt = typer.Option(None, "--config", help="YAML file whose keys override the task config.", dir_okay=False)
_preset_opt = typer.Option(None, "--preset", help="Step budget: fast, balanced (default) or best.")


# -- compress / decompress / info ------------------------------------------------------------------
@app.command()
def compress(
    image: Path = typer.Argument(..., help="PNG or JPEG image to compress."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (default: IMAGE with .lottery suffix)."),
    preset: Optional[Preset] = _preset_opt,
    steps: Optional[int] = typer.Option(None, "--steps", min=1, max=1_000_000, help="Fitting steps (overrides the preset)."),
    lam: Optional[float] = typer.Option(None, "--lambda", min=0.0, max=10.0, help="Rate weight: larger gives smaller files."),
    mask_ratio: Optional[float] = typer.Option(None, "--mask-ratio", min=0.0, max=0.99, help="Fraction of random weights removed."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed of the random synthesis network."),
    config: Optional[Path] = _config_opt,
    device: Device = _device_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _json_opt,
    force: bool = _force_opt,
) -> None:
    """Compress an image into a .lottery file, then decode it back and report the real numbers."""
    from .compress import compress_image
    from .config import load_task_config
    from .images import atomic_write_bytes, read_image
    from .progress import FitProgress

    _configure_warnings(quiet)
    cfg = load_task_config(
        "compress", preset=preset.value if preset else None, config_file=config,
        overrides={"steps": steps, "lambda": lam, "mask_ratio": mask_ratio, "seed": seed},
    )
    x = read_image(image)
    out = _output_path(output, image.with_suffix(".lottery"), [image], force)
    with FitProgress(enabled=not quiet and not as_json, label="compress") as progress:
        result = compress_image(x, cfg, device=device.value, progress=progress)
    atomic_write_bytes(out, result.data)
    h, w = x.shape[1:]
    summary = {
        "input": str(image), "output": str(out), "width": w, "height": h, "bytes": result.n_bytes,
        "bpp": round(result.bpp, 5), "psnr": round(result.psnr, 3), "macs_per_pixel": round(result.macs_per_pixel, 1),
        "seconds": round(result.seconds, 2), "steps": result.steps, "lambda": cfg.lam, "preset": cfg.preset,
        "mask_ratio": cfg.mask_ratio, "seed": cfg.seed, "threads": _threads(),
    }
    text = (f"{out}: {result.n_bytes} bytes, {result.bpp:.4f} bpp, PSNR {result.psnr:.2f} dB, "
            f"{result.macs_per_pixel:,.0f} MACs/pixel, {result.seconds:.1f} s ({result.steps} steps)")
    _emit(summary, as_json, text, quiet)


@app.command()
def decompress(
    file: Path = typer.Argument(..., help=".lottery file to decode."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output PNG (default: FILE.png, or FILE.decoded.png if FILE.png exists)."),
    quiet: bool = _quiet_opt,
    as_json: bool = _json_opt,
    force: bool = _force_opt,
) -> None:
    """Decode a .lottery file to a PNG (bit-identical pixels on every machine)."""
    import time

    from .compress import decompress_bytes
    from .images import write_png

    data = _read_bytes(file)
    default = file.with_suffix(".png")
    if output is None and default.exists():  # most likely the original image: never the default target
        default = file.with_suffix(".decoded.png")
    out = _output_path(output, default, [file], force)
    start = time.perf_counter()
    pixels = decompress_bytes(data)
    seconds = time.perf_counter() - start
    write_png(out, pixels)
    h, w = pixels.shape[1:]
    summary = {"input": str(file), "output": str(out), "width": w, "height": h, "seconds": round(seconds, 3)}
    _emit(summary, as_json, f"{out}: {w}x{h} decoded in {seconds:.2f} s", quiet)


def _read_bytes(file: Path) -> bytes:
    if not file.exists():
        raise LotteryError(f"{file}: no such file")
    if file.is_dir():
        raise LotteryError(f"{file}: is a directory")
    try:
        return file.read_bytes()
    except OSError as exc:
        raise LotteryError(f"{file}: cannot read ({exc.strerror})") from None


@app.command()
def info(
    file: Path = typer.Argument(..., help=".lottery file to describe."),
    as_json: bool = _json_opt,
) -> None:
    """Show a .lottery file's header and a size breakdown (header, mask, networks, latents)."""
    from .bitstream.header import describe  # no torch: the header is all `info` reads

    d = describe(_read_bytes(file))
    if as_json:
        typer.echo(json.dumps(d, sort_keys=True, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=str(file), show_header=False)
    for key, value in d.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(str(key), str(value))
    console.print(table)


# -- restore / degrade -----------------------------------------------------------------------------
@app.command()
def restore(
    image: Path = typer.Argument(..., help="Degraded observation: PNG/JPEG, or .npy float (0-1 scale, from `lottery degrade --float`)."),
    task: Task = typer.Option(..., "--task", help="denoise, sr (super-resolution) or inpaint."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output PNG (default: IMAGE.restored.png)."),
    sigma: Optional[float] = typer.Option(None, "--sigma", min=0.0, max=255.0, help="Noise level on the 0-255 scale (denoise: estimated if not given; sr: 0)."),
    scale: Optional[int] = typer.Option(None, "--scale", help="Super-resolution factor: 2, 3 or 4."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Inpainting mask PNG: white (>=128) = known pixel, black = missing."),
    preset: Optional[Preset] = _preset_opt,
    steps: Optional[int] = typer.Option(None, "--steps", min=1, max=1_000_000, help="Fitting steps per ensemble member."),
    ensemble: Optional[int] = typer.Option(None, "--ensemble", "-k", min=1, max=64, help="Number of models (seeds) averaged."),
    candidates: Optional[int] = typer.Option(
        None, "--candidates", min=0, max=64,
        help="Seeds started; the --ensemble with the lowest loss after screening go on (config screen_fraction, 10 % of the steps).",
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, max=64,
        help="Members fitted at once on the CPU, one torch thread each (default: one per core).",
    ),
    lam: Optional[float] = typer.Option(None, "--lambda", min=0.0, max=10.0, help="Rate weight (the prior's strength)."),
    mask_ratio: Optional[float] = typer.Option(None, "--mask-ratio", min=0.0, max=0.99, help="Fraction of random weights removed."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed of the first member (member k uses seed + k)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Clean image: report PSNR and SSIM of the result and each member."),
    save_bitstream: bool = typer.Option(False, "--save-bitstream", help="Also write the best member as OUTPUT.lottery (members then fit the image in its own orientation)."),
    config: Optional[Path] = _config_opt,
    device: Device = _device_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _json_opt,
    force: bool = _force_opt,
) -> None:
    """Restore a degraded image with no training data (denoise, super-resolve, inpaint)."""
    from .bitstream.container import encode_file
    from .config import load_task_config
    from .images import atomic_write_bytes, check_size, read_image, write_png
    from .metrics import psnr, ssim
    from .operators import estimate_sigma, make_operator, read_mask
    from .progress import FitProgress
    from .restore import restore_image

    _configure_warnings(quiet)
    cfg = load_task_config(
        task.value, preset=preset.value if preset else None, config_file=config,
        overrides={"steps": steps, "ensemble": ensemble, "lambda": lam, "mask_ratio": mask_ratio, "seed": seed,
                   "candidates": candidates},
    )
    if task is not Task.sr and scale is not None:
        raise LotteryError("--scale is only for --task sr")
    if task is not Task.inpaint and mask is not None:
        raise LotteryError("--mask is only for --task inpaint")
    y = read_image(image, allow_float=True, min_side=4 if task is Task.sr else 16)
    sigma_estimated = False
    if task is Task.denoise and sigma is None:
        sigma = estimate_sigma(y) * 255.0
        sigma_estimated = True
        if not quiet and not as_json:
            print(f"estimated noise level: sigma = {sigma:.1f} (0-255 scale; give --sigma to set it)", file=sys.stderr)
    if task is Task.sr and scale is None:
        raise LotteryError("--task sr needs --scale 2, 3 or 4")
    if task is Task.inpaint and mask is None:
        raise LotteryError("--task inpaint needs --mask MASK.png (white = known, black = missing)")
    sigma_255 = sigma or 0.0
    operator = make_operator(
        task.value, sigma=sigma_255 / 255.0, scale=scale, mask=read_mask(mask) if mask is not None else None
    )
    operator.check_observation(tuple(y.shape))
    out_h, out_w = operator.output_shape(tuple(y.shape))
    check_size(out_h, out_w, what="the restored image")  # an sr observation may be small, not its result
    clean = None
    if reference is not None:
        clean = read_image(reference)
        out_hw = operator.output_shape(tuple(y.shape))
        if tuple(clean.shape[1:]) != tuple(out_hw):
            raise LotteryError(f"{reference}: reference is {clean.shape[2]}x{clean.shape[1]}, the result will be {out_hw[1]}x{out_hw[0]}")
    stem = image.name[: -len(image.suffix)] if image.suffix else image.name
    out = _output_path(output, image.with_name(f"{stem}.restored.png"), [image] + ([reference] if reference else []), force)
    bitstream_out = _output_path(None, out.with_suffix(".lottery"), [image], force) if save_bitstream else None
    chosen_lam = lam if lam is not None else cfg.lambda_for(sigma_255 if task is not Task.inpaint else None, scale)

    with FitProgress(enabled=not quiet and not as_json) as progress:
        result = restore_image(
            y, operator, cfg, lam=chosen_lam, device=device.value, progress=progress,
            on_member=lambda k, n: progress.member(k, n, cfg.steps), keep_payloads=save_bitstream, workers=workers,
        )
    write_png(out, result.image)
    if bitstream_out is not None:
        atomic_write_bytes(bitstream_out, encode_file(result.payloads[result.best_member]))

    summary = {
        "input": str(image), "output": str(out), "task": task.value, "sigma": round(sigma_255, 3),
        "sigma_estimated": sigma_estimated, "scale": scale, "lambda": chosen_lam, "preset": cfg.preset,
        "steps": cfg.steps, "ensemble": cfg.ensemble, "seed": cfg.seed, "member_seeds": result.seeds,
        "screened_out_seeds": result.dropped_seeds, "seconds": round(result.seconds, 2),
        "threads": _threads(), "bitstream": str(bitstream_out) if bitstream_out else None,
        "classical_blend": cfg.classical_blend if result.classical_image is not None else 0.0,
    }
    text = f"{out}: {task.value}, {cfg.ensemble} member(s) x {cfg.steps} steps, {result.seconds:.1f} s"
    if result.dropped_seeds:
        text += f" (best {cfg.ensemble} of {cfg.ensemble + len(result.dropped_seeds)} candidates after screening)"
    if clean is not None:
        summary["psnr"] = round(psnr(result.image, clean), 3)
        summary["ssim"] = round(ssim(result.image, clean), 4)
        summary["member_psnr"] = [round(psnr(m, clean), 3) for m in result.members]
        summary["member_ssim"] = [round(ssim(m, clean), 4) for m in result.members]
        if result.classical_image is not None:  # the result mixes the ensemble with a classical estimate
            summary["ensemble_psnr"] = round(psnr(result.ensemble_image, clean), 3)
            summary["classical_psnr"] = round(psnr(result.classical_image, clean), 3)
        text += f", PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.4f}"
        if cfg.ensemble > 1:
            text += " (members: " + ", ".join(f"{p:.2f}" for p in summary["member_psnr"]) + " dB)"
    _emit(summary, as_json, text, quiet)


@app.command()
def degrade(
    image: Path = typer.Argument(..., help="Clean PNG/JPEG image."),
    task: Task = typer.Option(..., "--task", help="denoise, sr or inpaint."),
    output: Path = typer.Option(..., "-o", "--output", help="Observation to write (.png, or .npy for a lossless float observation)."),
    sigma: float = typer.Option(0.0, "--sigma", min=0.0, max=255.0, help="Gaussian noise level, 0-255 scale."),
    scale: Optional[int] = typer.Option(None, "--scale", help="sr: downsampling factor 2, 3 or 4."),
    missing_ratio: Optional[float] = typer.Option(None, "--missing-ratio", min=0.0, max=0.99, help="inpaint: fraction of pixels removed at random."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the noise and of the random inpainting mask."),
    as_float: bool = typer.Option(False, "--float", help="Write a lossless float .npy (no 8-bit rounding or clipping of the noise)."),
    quiet: bool = _quiet_opt,
    as_json: bool = _json_opt,
    force: bool = _force_opt,
) -> None:
    """Simulate a degraded observation (so you can try restore, and benchmarks build inputs)."""
    from .images import read_image, write_npy, write_png
    from .operators import Inpaint, make_operator, write_mask

    _configure_warnings(quiet)
    if as_float and output.suffix.lower() != ".npy":
        output = output.with_suffix(".npy")
    x = read_image(image)
    out = _output_path(output, output, [image], force)
    mask_out = None
    if task is Task.inpaint:
        if missing_ratio is None:
            raise LotteryError("--task inpaint needs --missing-ratio (e.g. 0.5)")
        operator = Inpaint.random(x.shape[1], x.shape[2], missing_ratio, seed, sigma=sigma / 255.0)
        stem = out.name[: -len(out.suffix)] if out.suffix else out.name
        mask_out = _output_path(None, out.with_name(f"{stem}.mask.png"), [image], force)
    else:
        operator = make_operator(task.value, sigma=sigma / 255.0, scale=scale)
    operator.check_image(tuple(x.shape))
    y = operator.simulate(x, seed)
    if out.suffix.lower() == ".npy":
        write_npy(out, y)
    else:
        write_png(out, y.clamp(0, 1))
    if mask_out is not None:
        write_mask(mask_out, operator.observed(tuple(y.shape)))
    summary = {"input": str(image), "output": str(out), "task": task.value, "sigma": sigma, "seed": seed,
               "width": int(y.shape[2]), "height": int(y.shape[1]), "mask": str(mask_out) if mask_out else None}
    text = f"{out}: {task.value} observation {y.shape[2]}x{y.shape[1]}" + (f", mask {mask_out}" if mask_out else "")
    _emit(summary, as_json, text, quiet)


def main() -> None:
    """Console entry point: every error becomes one line on stderr and a non-zero exit."""
    try:
        app(standalone_mode=False)
    except LotteryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and anything unexpected: one line, no traceback
        # typer >= 0.2x vendors click as typer._click (there may be no `click` module at all), so
        # recognise its exceptions through typer's public names and by duck typing.
        if isinstance(exc, typer.Exit) or type(exc).__name__ == "Exit":
            sys.exit(getattr(exc, "exit_code", 0))
        if isinstance(exc, typer.Abort) or type(exc).__name__ == "Abort":
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        code = getattr(exc, "exit_code", None)
        if isinstance(code, int) and callable(getattr(exc, "format_message", None)):
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `lottery`: show the help
                exc.show()
                sys.exit(code)
            message = " ".join(str(exc.format_message()).split())  # always one line
            print(f"error: {message}", file=sys.stderr)
            sys.exit(code)
        if os.environ.get("LOTTERY_DEBUG"):
            raise
        print(f"error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        sys.exit(1)

if __name__ == "__main__":
    main()
