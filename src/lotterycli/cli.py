"""The `lottery` command line: parse options, call `jobs` (which calls `api`), print the result.

Results go to stdout (one line, or one JSON line with --json); progress, warnings and errors go
to stderr (so does the result line when stdout carries an image: `-o -`). Exit status: 0 success,
1 error (one line naming the file, no traceback), 2 bad usage, 130 / 143 interrupted by
SIGINT / SIGTERM (no output left behind).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import LotteryError
from .images import DEFAULT_MAX_PIXELS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
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
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")) -> None:
    pass


def _default(task: str, key: str, preset: str = "balanced"):
    """A task config's value of `key` for the help text (read from the YAML, no torch)."""
    from .config import parse_yaml, task_config_text

    data = parse_yaml(task_config_text(task))
    return (data.get("presets", {}).get(preset) or {}).get(key, data.get(key))


def _mask_ratio_default() -> str:
    """How compression picks its mask ratio by default, for the help text: "0.3 below lambda
    0.003, else screened per image among 0.3, 0, 0.1"."""
    ratio = float(_default("compress", "mask_ratio"))
    ratios = [ratio, *(_default("compress", "mask_ratio_candidates") or [])]
    listed = ", ".join(f"{float(r):g}" for r in ratios)
    return f"{ratio:g} below lambda {float(_default('compress', 'screen_min_lambda')):g}, else screened per image among {listed}"


# -- output -------------------------------------------------------------------------------------
class Output:
    """Where results and messages go: the result line on stdout (stderr when stdout carries data),
    everything else on stderr, nothing but errors with --quiet."""

    def __init__(self, quiet: bool, as_json: bool, verbose: bool = False, data_on_stdout: bool = False):
        self.quiet, self.as_json, self.data_on_stdout = quiet, as_json, data_on_stdout
        self.show_progress = not quiet and not as_json
        logging.basicConfig(format="%(message)s", stream=sys.stderr,
                            level=logging.INFO if verbose and not quiet else logging.WARNING)

        def show(message, category, filename, lineno, file=None, line=None):
            if not quiet:
                print(f"warning: {message}", file=sys.stderr)

        warnings.showwarning = show

    def note(self, text: str) -> None:
        if self.show_progress:
            print(text, file=sys.stderr)

    def result(self, summary: dict, text: str) -> None:
        stream = sys.stderr if self.data_on_stdout else sys.stdout
        if self.as_json:
            print(json.dumps(summary, sort_keys=True), file=stream)
        elif not self.quiet:
            print(text, file=stream)


def _progress(out: Output, label: str):
    from .progress import FitProgress

    return FitProgress(enabled=out.show_progress, label=label)


def _stdout(path) -> bool:
    return path is not None and str(path) == "-"


_quiet_opt = typer.Option(False, "--quiet", "-q", help="No progress display, result line or warnings (errors are still printed).")
_json_opt = typer.Option(False, "--json", help="Print one machine-readable JSON result line.")
_verbose_opt = typer.Option(False, "--verbose", "-v", help="Also say what was done on the way (e.g. an EXIF rotation applied).")
_force_opt = typer.Option(False, "--force", "-f", help="Overwrite an existing output file (never an input).")
_device_opt = typer.Option(Device.auto, "--device", help="Where to fit: auto (a GPU if present), cpu or cuda.")
_config_opt = typer.Option(None, "--config", help="YAML file whose keys are merged over the task config.", dir_okay=False)
_max_pixels_opt = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Largest image accepted, in pixels.")


def _preset_opt(task: str):
    return typer.Option(None, "--preset", help=f"Step budget: fast, balanced or best (default: {_default(task, 'preset')}).")


_checkpoint_opt = typer.Option(None, "--checkpoint-every", min=0.0, metavar="SECONDS", help="Save the fit's state every SECONDS beside the output (OUTPUT.ckpt): a run of the same command after a crash or kill resumes from it and writes the same bytes (a checkpoint left there is always resumed from; it is removed once the output is written).")

# compress's options, shared with `batch compress`
_c_preset_opt = _preset_opt("compress")
_c_steps_opt = typer.Option(None, "--steps", min=1, max=1_000_000, help="Fitting steps (default: the preset's: fast 1600, balanced 5000, best 10000).")
_c_lambda_opt = typer.Option(None, "--lambda", min=0.0, max=10.0, help=f"Rate weight: larger gives smaller files, typically 1e-4 (large, sharp) to 2e-2 (small) (default: {_default('compress', 'lambda')}).")
_c_mask_ratio_opt = typer.Option(None, "--mask-ratio", min=0.0, max=0.99, help=f"Fraction of the random synthesis weights removed, 0 = no mask (default: {_mask_ratio_default()}; a ratio given here is kept).")
_c_seed_opt = typer.Option(None, "--seed", min=0, max=(1 << 64) - 1, help=f"Seed of the random synthesis network, 0 to 2**64-1 (default: {_default('compress', 'seed')}).")


# -- compress / decompress / info ------------------------------------------------------------------
@app.command()
def compress(
    image: str = typer.Argument(..., help="Image to compress (PNG, JPEG, ...; - reads standard input)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output file (default: IMAGE with the .lottery suffix; - writes standard output)."),
    preset: Optional[Preset] = _c_preset_opt,
    steps: Optional[int] = _c_steps_opt,
    lam: Optional[float] = _c_lambda_opt,
    mask_ratio: Optional[float] = _c_mask_ratio_opt,
    seed: Optional[int] = _c_seed_opt,
    config: Optional[Path] = _config_opt,
    device: Device = _device_opt,
    max_pixels: int = _max_pixels_opt,
    checkpoint_every: Optional[float] = _checkpoint_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _json_opt,
    verbose: bool = _verbose_opt,
    force: bool = _force_opt,
) -> None:
    """Compress an image into a .lottery file, then decode it back and report the real numbers."""
    from .jobs import compress_file, compress_text, plan_compress

    out = Output(quiet, as_json, verbose, data_on_stdout=_stdout(output))
    opts = _compress_options(preset, steps, lam, mask_ratio, seed, config, device, max_pixels, checkpoint_every)
    plan = plan_compress(image, output, opts, force)
    with _progress(out, "compress") as progress:
        summary = compress_file(image, output, opts, force=force, progress=progress, plan=plan, notify=out.note)
    out.result(summary, compress_text(summary))


def _compress_options(preset, steps, lam, mask_ratio, seed, config, device, max_pixels, checkpoint_every):
    from .jobs import CompressOptions

    return CompressOptions(preset=preset.value if preset else None, lam=lam, steps=steps, seed=seed,
                           mask_ratio=mask_ratio, config=str(config) if config else None, device=device.value,
                           max_pixels=max_pixels, checkpoint_every=checkpoint_every)


@app.command()
def decompress(
    file: str = typer.Argument(..., help=".lottery file to decode (- reads standard input)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output PNG (default: FILE.png, or FILE.decoded.png if FILE.png exists; - writes standard output)."),
    max_pixels: int = _max_pixels_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _json_opt,
    force: bool = _force_opt,
) -> None:
    """Decode a .lottery file to a PNG (bit-identical pixels on every machine)."""
    from .jobs import decompress_file, decompress_text, plan_decompress

    out = Output(quiet, as_json, data_on_stdout=_stdout(output))
    plan = plan_decompress(file, output, force)
    summary = decompress_file(file, output, force=force, max_pixels=max_pixels, plan=plan)
    out.result(summary, decompress_text(summary))


@app.command()
def info(
    file: str = typer.Argument(..., help=".lottery file to describe (- reads standard input)."),
    latents: bool = typer.Option(False, "--latents", help="Also decode the latents: bytes and nonzero values per grid (loads torch; the whole file is checked)."),
    max_pixels: int = _max_pixels_opt,
    as_json: bool = _json_opt,
) -> None:
    """Show what a .lottery file holds and where its bytes went (reads the header only; --latents decodes the latents too)."""
    from .bitstream.header import describe  # no torch: the header is all `info` reads
    from .images import check_input_file, read_input_bytes

    check_input_file(file)
    try:
        data = read_input_bytes(file)
        d = describe(data)
        if latents:
            from .api import describe_latents

            d["latent_grids"] = describe_latents(data, max_pixels=max_pixels)
    except LotteryError as exc:
        raise LotteryError(f"{'standard input' if file == '-' else file}: {exc}") from None
    if as_json:
        typer.echo(json.dumps(d, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    a, s = d["architecture"], d["sizes"]
    total = s["total"]
    table = Table(title=f"{file}", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    content = d["content"] + (f", fitted in frame {d['frame']} (flipped/transposed back on decoding)" if d["frame"] else "")
    table.add_row("image", f"{d['width']} x {d['height']} pixels, RGB: {content}")
    table.add_row("format", f".lottery version {d['format_version']}")
    table.add_row("seed", str(d["seed"]))
    table.add_row("mask ratio", f"{d['mask_ratio']:.2%} of the random weights removed" if d["mask_ratio"] > 0
                  else "0: no mask, every random weight kept")
    preset = f"preset {d['architecture_preset']}: " if d["architecture_preset"] else ""
    bands = f", bands of {a['arm_band_rows']} rows" if a["arm_band_rows"] else ""
    table.add_row("architecture", f"{preset}{a['n_levels']} latent grids (gain {a['latent_gain']:g}), "
                  f"{a['upsample_kernel']}x{a['upsample_kernel']} upsampling, ModNet {a['modnet_hidden']}/{a['modnet_out']}, "
                  f"synthesis {'-'.join(str(w) for w in a['synth_hidden'])}, ARM {a['arm_hidden']} wide{bands}")

    def shifts(v) -> str:
        return f"2^-{v}" if isinstance(v, int) else ", ".join(f"{k} 2^-{x}" for k, x in v.items())

    table.add_row("quantization", "; ".join(f"{name} {shifts(v)}" for name, v in d["shifts"].items()))
    table.add_row("decoder", f"about {d['decoder_macs_per_pixel']:,.0f} multiply-adds per pixel")
    table.add_row("size", f"{total:,} bytes, {d['bpp']:.4f} bits per pixel")
    parts = [("header", s["header"]), ("mask", s["mask"]), *((f"network: {k}", v) for k, v in s["networks"].items()),
             ("latents", s["latents"])]
    for name, n in parts:
        table.add_row(f"  {name}", f"{n:,} bytes ({n / total:.0%})")
    for g in d.get("latent_grids", []):
        table.add_row(f"    grid {g['level']}", f"{g['bytes']:,} bytes, {g['height']} x {g['width']}, "
                      f"{g['nonzero']:,} nonzero ({g['nonzero'] / max(1, g['height'] * g['width']):.0%})")
    Console().print(table)


# -- restore / degrade -----------------------------------------------------------------------------
# restore's options, shared with `batch restore`
_r_task_opt = typer.Option(..., "--task", help="denoise, sr (super-resolution) or inpaint.")
_r_sigma_opt = typer.Option(None, "--sigma", min=0.0, max=255.0, help="Noise level on the 0-255 scale (default: denoise estimates it from the image; sr and inpaint 0).")
_r_scale_opt = typer.Option(None, "--scale", help="Super-resolution factor: 2, 3 or 4.")
_r_preset_opt = typer.Option(None, "--preset", help="Budget: fast, balanced or best (default: balanced).")
_r_steps_opt = typer.Option(None, "--steps", min=1, max=1_000_000, help="Fitting steps per member (default: the preset's, configs/TASK.yaml).")
_r_ensemble_opt = typer.Option(None, "--ensemble", "-k", min=1, max=64, help="Members (seeds) combined (default: the preset's: fast 1, balanced 4, best 6).")
_r_candidates_opt = typer.Option(None, "--candidates", min=0, max=64, help="Seeds started; the --ensemble with the lowest loss after screening go on (default: the preset's; inpaint balanced 6).")
_r_workers_opt = typer.Option(None, "--workers", min=1, max=64, help="Members fitted at once on the CPU, one torch thread each (default: one per core).")
_r_lambda_opt = typer.Option(None, "--lambda", min=0.0, max=10.0, help="Rate weight, the prior's strength, typically 1e-4 to 1e-1 (default: follows the noise level, configs/TASK.yaml).")
_r_mask_ratio_opt = typer.Option(None, "--mask-ratio", min=0.0, max=0.99, help=f"Fraction of the random synthesis weights removed (default: {_default('denoise', 'mask_ratio')}).")
_r_seed_opt = typer.Option(None, "--seed", min=0, max=(1 << 64) - 1, help="Seed of the first member; member k uses seed + k (default: 0).")
_r_bitstream_opt = typer.Option(True, "--bitstream/--no-bitstream", help="Also write the best member's model as OUTPUT.lottery (it decodes to that member's render).")


@app.command()
def restore(
    image: str = typer.Argument(..., help="Degraded observation: PNG/JPEG, or .npy float (0-1 scale, from `lottery degrade --float`); - reads standard input."),
    task: Task = _r_task_opt,
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output PNG (default: IMAGE.restored.png; - writes standard output)."),
    sigma: Optional[float] = _r_sigma_opt,
    scale: Optional[int] = _r_scale_opt,
    mask: Optional[Path] = typer.Option(None, "--mask", help="Inpainting mask PNG: white (>=128) = known pixel, black = missing."),
    preset: Optional[Preset] = _r_preset_opt,
    steps: Optional[int] = _r_steps_opt,
    ensemble: Optional[int] = _r_ensemble_opt,
    candidates: Optional[int] = _r_candidates_opt,
    workers: Optional[int] = _r_workers_opt,
    lam: Optional[float] = _r_lambda_opt,
    mask_ratio: Optional[float] = _r_mask_ratio_opt,
    seed: Optional[int] = _r_seed_opt,
    reference: Optional[Path] = typer.Option(None, "--reference", help="Clean image: report PSNR and SSIM of the result and of each member."),
    bitstream: bool = _r_bitstream_opt,
    config: Optional[Path] = _config_opt,
    device: Device = _device_opt,
    max_pixels: int = _max_pixels_opt,
    checkpoint_every: Optional[float] = _checkpoint_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _json_opt,
    verbose: bool = _verbose_opt,
    force: bool = _force_opt,
) -> None:
    """Restore a degraded image with no training data (denoise, super-resolve, inpaint)."""
    from .jobs import RestoreOptions, plan_restore, restore_file, restore_text

    out = Output(quiet, as_json, verbose, data_on_stdout=_stdout(output))
    opts = RestoreOptions(
        task=task.value, sigma=sigma, scale=scale, mask=str(mask) if mask else None,
        preset=preset.value if preset else None, steps=steps, ensemble=ensemble, candidates=candidates,
        workers=workers, lam=lam, mask_ratio=mask_ratio, seed=seed, reference=str(reference) if reference else None,
        bitstream=bitstream, config=str(config) if config else None, device=device.value, max_pixels=max_pixels,
        checkpoint_every=checkpoint_every,
    )
    plan = plan_restore(image, output, opts, force)
    with _progress(out, "restore") as progress:
        summary = restore_file(image, output, opts, force=force, progress=progress, plan=plan, notify=out.note,
                               on_member=lambda k, n: progress.member(k, n, plan[0].steps))
    out.result(summary, restore_text(summary))


@app.command()
def degrade(
    image: str = typer.Argument(..., help="Clean image (PNG, JPEG, ...)."),
    task: Task = typer.Option(..., "--task", help="denoise, sr or inpaint."),
    output: str = typer.Option(..., "-o", "--output", help="Observation to write (.png, or .npy for a lossless float observation; - writes standard output)."),
    sigma: float = typer.Option(0.0, "--sigma", min=0.0, max=255.0, help="Gaussian noise level, 0-255 scale."),
    scale: Optional[int] = typer.Option(None, "--scale", help="sr: downsampling factor 2, 3 or 4."),
    missing_ratio: Optional[float] = typer.Option(None, "--missing-ratio", min=0.0, max=0.99, help="inpaint: fraction of the pixels removed at random."),
    seed: int = typer.Option(0, "--seed", min=0, max=(1 << 64) - 1, help="Seed of the noise and of the random inpainting mask."),
    as_float: bool = typer.Option(False, "--float", help="Write a lossless float .npy (no 8-bit rounding or clipping of the noise)."),
    max_pixels: int = _max_pixels_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _json_opt,
    force: bool = _force_opt,
) -> None:
    """Simulate a degraded observation of a clean image (to try `restore`, and for benchmarks)."""
    from .jobs import degrade_file, degrade_text

    out = Output(quiet, as_json, data_on_stdout=_stdout(output))
    summary = degrade_file(image, output, task=task.value, sigma=sigma, scale=scale, missing_ratio=missing_ratio,
                           seed=seed, as_float=as_float, force=force, max_pixels=max_pixels)
    out.result(summary, degrade_text(summary))


# -- batch -----------------------------------------------------------------------------------------
batch_app = typer.Typer(
    no_args_is_help=True,
    help="Run compress, restore or decompress over many images: resumable, in parallel, or on a Ray cluster.",
)
app.add_typer(batch_app, name="batch")

_b_inputs_arg = typer.Argument(..., help="Files, folders (their images, sorted) or - (a list of paths on standard input, one a line).")
_b_outdir_opt = typer.Option(..., "-o", "--output", help="Output folder: a folder's images keep their path relative to that folder there, a file its path as given (its name when that is absolute or leaves the current folder); OUTDIR/manifest.jsonl records each input. A re-run skips the inputs done with the same input and config.")
_b_recursive_opt = typer.Option(False, "--recursive", "-r", help="Also take the images of the folders' subfolders.")
_b_jobs_opt = typer.Option(None, "--jobs", "-j", min=1, max=1024, help="Fits at once, each in a worker process (default: one per GPU, else one per 2 cores; 1 runs in this process).")
_b_threads_opt = typer.Option(None, "--threads", min=1, max=1024, help="torch threads per fit (default: the cores shared among the jobs; 2 with --ray). Give the same number to compare runs.")
_b_ray_opt = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run the fits as Ray tasks: --ray alone (last, or before another option) uses a Ray instance of this machine, --ray auto the cluster of RAY_ADDRESS, --ray HOST:PORT that one (pip install 'lotterycli[ray]').")
_b_checkpoint_opt = typer.Option(None, "--checkpoint-every", min=0.0, metavar="SECONDS", help="Save each fit's state every SECONDS beside its output (OUTPUT.ckpt): a re-run after a crash resumes it and writes the same bytes.")
_b_force_opt = typer.Option(False, "--force", "-f", help="Redo every input, and overwrite files in OUTDIR that no batch wrote (never an input).")
_b_json_opt = typer.Option(False, "--json", help="Print one JSON line per finished input (its manifest line).")


class _BatchOutput:
    """The command line's side of a batch (`batch.Events`): the images bar above each running
    fit's bar, a result line per input (stdout), an error line per failed one (stderr)."""

    def __init__(self, out: Output, command: str):
        from .batch import Events
        from .progress import BatchProgress

        self.out, self.command = out, command
        self.display = BatchProgress(enabled=out.show_progress, label=f"batch {command}")
        self.fits: dict[int, object] = {}  # worker slot -> its fit's bars (entered)
        self.members: dict[tuple[int, int], object] = {}
        self.slots: dict[int, int] = {}  # job index -> slot
        self.counts = {"done": 0, "failed": 0}
        outer = self

        class Sink(Events):
            def planned(self, todo: int, skipped: int) -> None:
                outer.display.start(todo, skipped)
                if skipped:
                    outer.out.note(f"{skipped} input(s) already done (see the manifest): skipped")

            def note(self, text: str) -> None:
                outer.out.note(text)

            def started(self, job, slot: int):
                return outer.started(job, slot)

            def remote(self, slot: int, event: tuple) -> None:
                outer.remote(slot, event)

            def finished(self, job, row: dict, summary) -> None:
                outer.finished(job, row, summary)

        self.events = Sink()

    def started(self, job, slot: int):
        from .batch import Reporter

        self._close(slot)
        fit = self.display.fit(job.input).__enter__()
        self.fits[slot], self.slots[job.index] = fit, slot
        note = self.out.note

        class Local(Reporter):
            def progress(self):
                return fit

            def note(self, text: str) -> None:
                note(text)

        return Local()

    def remote(self, slot: int, event: tuple) -> None:
        from .fitting.loop import StepInfo

        kind, fit = event[0], self.fits.get(slot)
        if kind == "note":
            self.out.note(event[1])
        elif fit is None:
            return
        elif kind == "step":
            fit(StepInfo(**event[1]))
        elif kind == "member":
            self.members[(slot, event[1])] = fit.member(*event[1:])
        elif kind == "mstep" and (slot, event[1]) in self.members:
            self.members[(slot, event[1])](StepInfo(**event[2]))

    def _close(self, slot: int) -> None:
        fit = self.fits.pop(slot, None)
        if fit is not None:
            fit.close()
        for key in [k for k in self.members if k[0] == slot]:
            del self.members[key]

    def finished(self, job, row: dict, summary) -> None:
        from .jobs import compress_text, decompress_text, restore_text

        slot = self.slots.pop(job.index, None)
        if slot is not None:
            self._close(slot)
        self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
        self.display.finished(row["status"])
        if row["status"] != "done":
            print(f"error: {row['error']}", file=sys.stderr)
        if self.out.as_json:
            print(json.dumps(row, sort_keys=True), flush=True)
        elif row["status"] == "done" and summary is not None and not self.out.quiet:
            text = {"compress": compress_text, "restore": restore_text, "decompress": decompress_text}[self.command]
            print(text(summary), flush=True)


def _run_batch(command: str, inputs: list[str], outdir: str, options, *, recursive: bool, jobs, threads, ray,
               quiet: bool, as_json: bool, verbose: bool, force: bool) -> None:
    import time

    from .batch import BatchSpec, run

    out = Output(quiet, as_json, verbose)
    show = _BatchOutput(out, command)
    spec = BatchSpec(command=command, inputs=inputs, outdir=outdir, options=options, recursive=recursive, jobs=jobs,
                     threads=threads, ray=ray, force=force)
    start = time.perf_counter()

    def summary(extra: str = "") -> str:
        c = show.counts
        return (f"batch {command}: {c['done']} done, {show.display.counts['skipped']} skipped, {c['failed']} failed "
                f"in {time.perf_counter() - start:.1f} s{extra}")

    try:
        with show.display:
            outcome = run(spec, show.events)
    except (KeyboardInterrupt, Terminated) as exc:
        name, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("SIGINT", 130)
        print(f"error: interrupted ({name}): {summary()}; finished outputs are kept: "
              "run the same command again to go on", file=sys.stderr)
        sys.exit(code)
    if not quiet:
        print(summary(f"; manifest {outcome.manifest}"), file=sys.stderr)
    if outcome.failed:
        sys.exit(1)


@batch_app.command("compress")
def batch_compress(
    inputs: list[str] = _b_inputs_arg,
    outdir: str = _b_outdir_opt,
    preset: Optional[Preset] = _c_preset_opt,
    steps: Optional[int] = _c_steps_opt,
    lam: Optional[float] = _c_lambda_opt,
    mask_ratio: Optional[float] = _c_mask_ratio_opt,
    seed: Optional[int] = _c_seed_opt,
    config: Optional[Path] = _config_opt,
    device: Device = _device_opt,
    max_pixels: int = _max_pixels_opt,
    recursive: bool = _b_recursive_opt,
    jobs: Optional[int] = _b_jobs_opt,
    threads: Optional[int] = _b_threads_opt,
    checkpoint_every: Optional[float] = _b_checkpoint_opt,
    ray: Optional[str] = _b_ray_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _b_json_opt,
    verbose: bool = _verbose_opt,
    force: bool = _b_force_opt,
) -> None:
    """Compress many images: OUTDIR/NAME.lottery for each."""
    opts = _compress_options(preset, steps, lam, mask_ratio, seed, config, device, max_pixels, checkpoint_every)
    _run_batch("compress", inputs, outdir, opts, recursive=recursive, jobs=jobs, threads=threads, ray=ray,
               quiet=quiet, as_json=as_json, verbose=verbose, force=force)


@batch_app.command("restore")
def batch_restore(
    inputs: list[str] = _b_inputs_arg,
    outdir: str = _b_outdir_opt,
    task: Task = _r_task_opt,
    sigma: Optional[float] = _r_sigma_opt,
    scale: Optional[int] = _r_scale_opt,
    mask: Optional[Path] = typer.Option(None, "--mask", help="Inpainting mask PNG for every image (default: each image's own IMAGE.mask.png, as `lottery degrade` writes)."),
    preset: Optional[Preset] = _r_preset_opt,
    steps: Optional[int] = _r_steps_opt,
    ensemble: Optional[int] = _r_ensemble_opt,
    candidates: Optional[int] = _r_candidates_opt,
    workers: Optional[int] = _r_workers_opt,
    lam: Optional[float] = _r_lambda_opt,
    mask_ratio: Optional[float] = _r_mask_ratio_opt,
    seed: Optional[int] = _r_seed_opt,
    bitstream: bool = _r_bitstream_opt,
    config: Optional[Path] = _config_opt,
    device: Device = _device_opt,
    max_pixels: int = _max_pixels_opt,
    recursive: bool = _b_recursive_opt,
    jobs: Optional[int] = _b_jobs_opt,
    threads: Optional[int] = _b_threads_opt,
    checkpoint_every: Optional[float] = _b_checkpoint_opt,
    ray: Optional[str] = _b_ray_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _b_json_opt,
    verbose: bool = _verbose_opt,
    force: bool = _b_force_opt,
) -> None:
    """Restore many observations: OUTDIR/NAME.restored.png (+ NAME.restored.lottery) for each."""
    from .jobs import RestoreOptions

    opts = RestoreOptions(
        task=task.value, sigma=sigma, scale=scale, mask=str(mask) if mask else None,
        preset=preset.value if preset else None, steps=steps, ensemble=ensemble, candidates=candidates,
        workers=workers, lam=lam, mask_ratio=mask_ratio, seed=seed, bitstream=bitstream,
        config=str(config) if config else None, device=device.value, max_pixels=max_pixels,
        checkpoint_every=checkpoint_every,
    )
    _run_batch("restore", inputs, outdir, opts, recursive=recursive, jobs=jobs, threads=threads, ray=ray,
               quiet=quiet, as_json=as_json, verbose=verbose, force=force)


@batch_app.command("decompress")
def batch_decompress(
    inputs: list[str] = _b_inputs_arg,
    outdir: str = _b_outdir_opt,
    max_pixels: int = _max_pixels_opt,
    recursive: bool = _b_recursive_opt,
    jobs: Optional[int] = _b_jobs_opt,
    ray: Optional[str] = _b_ray_opt,
    quiet: bool = _quiet_opt,
    as_json: bool = _b_json_opt,
    force: bool = _b_force_opt,
) -> None:
    """Decode many .lottery files: OUTDIR/NAME.png for each."""
    from .batch import DecompressOptions

    _run_batch("decompress", inputs, outdir, DecompressOptions(max_pixels=max_pixels), recursive=recursive, jobs=jobs,
               threads=None, ray=ray, quiet=quiet, as_json=as_json, verbose=False, force=force)


# -- entry point ------------------------------------------------------------------------------------
def _bare_ray(argv: list[str]) -> list[str]:
    """`--ray` with no address (last, or before another option) means --ray=local: click options
    cannot take an optional value."""
    if "batch" not in argv[:1]:
        return argv
    return [("--ray=local" if a == "--ray" and (i + 1 == len(argv) or argv[i + 1].startswith("-")) else a)
            for i, a in enumerate(argv)]
class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt for SIGINT."""


def _on_signal(signum, frame) -> None:
    _stop_fits()  # first: a fit on another thread must not run on to its end
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _stop_fits() -> None:
    """Tell fits running on other threads to stop at their next step."""
    module = sys.modules.get("lotterycli.fitting.loop")
    cancel = getattr(module, "cancel_all", None)  # None too while the module is still being imported (no fit yet)
    if cancel is not None:
        cancel()


def main() -> None:
    """Console entry point: every error becomes one line on stderr and a non-zero exit."""
    try:
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    except ValueError:  # not the main thread (tests calling main from a thread)
        pass
    try:
        code = app(args=_bare_ray(sys.argv[1:]), standalone_mode=False)
    except LotteryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted (SIGINT); no output was written", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("error: terminated (SIGTERM); no output was written", file=sys.stderr)
        sys.exit(143)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and anything unexpected: one line, no traceback
        # typer vendors click as typer._click in recent versions (there may be no `click` module at
        # all), so its exceptions are recognised through typer's public names and by duck typing.
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
    # Without standalone mode typer returns the code of an Exit instead of exiting, and it turns a
    # KeyboardInterrupt (SIGINT) into Exit(130): that one must not end as a silent exit 0.
    if code == 130:
        print("error: interrupted (SIGINT); no output was written", file=sys.stderr)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
