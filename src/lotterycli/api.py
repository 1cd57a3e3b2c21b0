"""The library's front door: compress, decompress, restore and degrade images from Python.

    from lotterycli import api
    from lotterycli.images import read_image
    result = api.compress(read_image("img.png"), preset="fast")     # result.data: .lottery bytes
    pixels = api.decompress(result.data)                              # uint8 (3, H, W) == result.decoded
    results = api.compress_many([a, b, c], preset="fast")             # images of one size, batched on a GPU
    noisy, op = api.degrade(read_image("img.png"), "denoise", sigma=25, seed=0)
    restored = api.restore(noisy, op).image                           # float (3, H, W) in [0, 1]

Every option left as None takes its value from the task's config (`configs/<task>.yaml`, or
`config_file` merged over it, then the preset).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .bitstream import container
from .compression.decoder import check_max_pixels, decode_checked
from .compression.encoder import CompressResult, compress_image
from .compression.member_batches import compress_images
from .config import TaskConfig, load_task_config
from .errors import LotteryError
from .fitting.loop import ProgressCallback
from .images import DEFAULT_MAX_PIXELS
from .restoration.ensemble import RestoreResult, restore_image
from .restoration.operators import Operator
from .restoration.tasks import Degraded, degrade, restoration_operator, restore_lambda

__all__ = ["compress", "compress_many", "decompress", "restore", "degrade", "batch", "restoration_operator", "compress_config",
           "restore_config", "CompressResult", "RestoreResult", "Degraded"]


def compress_config(*, preset: str | None = None, lam: float | None = None, steps: int | None = None,
                    seed: int | None = None, mask_ratio: float | None = None,
                    config_file: str | Path | None = None) -> TaskConfig:
    """The effective compression config for these options."""
    return load_task_config("compress", preset=preset, config_file=config_file,
                            overrides={"lambda": lam, "steps": steps, "seed": seed, "mask_ratio": mask_ratio})


def compress(
    image: torch.Tensor,
    *,
    preset: str | None = None,
    lam: float | None = None,
    steps: int | None = None,
    seed: int | None = None,
    mask_ratio: float | None = None,
    device: str = "auto",
    config_file: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> CompressResult:
    """Compress a (3, H, W) float image in [0, 1] into .lottery bytes (`result.data`), decoded back
    as a self-check (`result.decoded`, `result.psnr`)."""
    cfg = compress_config(preset=preset, lam=lam, steps=steps, seed=seed, mask_ratio=mask_ratio,
                          config_file=config_file)
    return compress_image(image, cfg, device=device, progress=progress)


def compress_many(
    images: list[torch.Tensor],
    *,
    preset: str | None = None,
    lam: float | None = None,
    steps: int | None = None,
    seed: int | None = None,
    mask_ratio: float | None = None,
    device: str = "auto",
    config_file: str | Path | None = None,
) -> list[CompressResult]:
    """Compress (3, H, W) images of one size together, as member batches: on a GPU one kernel
    launch serves them all (`compression.member_batches`, what `batch compress` does there). Each
    image gets its own file; it differs in its last bits from the one `compress` makes (every
    pixel is fitted each step, and the batch's float sums are its own)."""
    cfg = compress_config(preset=preset, lam=lam, steps=steps, seed=seed, mask_ratio=mask_ratio,
                          config_file=config_file)
    return compress_images(images, cfg, device=device)


def decompress(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """.lottery bytes -> uint8 image (3, H, W), bit-exact on every machine.

    A file whose image is larger than `max_pixels` is refused before anything is decoded."""
    return decode_checked(data, max_pixels)


def describe_latents(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[dict]:
    """Where a .lottery file's latent bytes go: per grid (level 0 first) its height, width, the
    count of nonzero values and its share of the latent section's bytes (by code length). Decodes
    the latents (the whole file is checked); an image above `max_pixels` is refused first."""
    check_max_pixels(data, max_pixels)
    return container.describe_latents(data)


def restore_config(task: str, *, preset: str | None = None, steps: int | None = None, ensemble: int | None = None,
                   candidates: int | None = None, lam: float | None = None, seed: int | None = None,
                   mask_ratio: float | None = None, config_file: str | Path | None = None) -> TaskConfig:
    """The effective restoration config of `task` (denoise, sr, inpaint) for these options."""
    return load_task_config(task, preset=preset, config_file=config_file, overrides={
        "steps": steps, "ensemble": ensemble, "candidates": candidates, "lambda": lam, "seed": seed,
        "mask_ratio": mask_ratio})


def restore(
    y: torch.Tensor,
    operator: Operator,
    *,
    preset: str | None = None,
    steps: int | None = None,
    ensemble: int | None = None,
    candidates: int | None = None,
    lam: float | None = None,
    seed: int | None = None,
    mask_ratio: float | None = None,
    device: str = "auto",
    config_file: str | Path | None = None,
    progress: ProgressCallback | None = None,
    on_member=None,
    bitstream: bool = False,
    workers: int | None = None,
) -> RestoreResult:
    """Restore an observation `y` through `operator` (Denoise, SuperResolution, Inpaint: see
    `restoration_operator`). Lambda follows the operator's noise level (and scale) per the task
    config unless `lam` is given. `bitstream`: also quantize the best member (`result.payload`;
    `bitstream.container.encode_file` makes it a .lottery file)."""
    cfg = restore_config(operator.task, preset=preset, steps=steps, ensemble=ensemble, candidates=candidates,
                         lam=lam, seed=seed, mask_ratio=mask_ratio, config_file=config_file)
    return restore_image(y, operator, cfg, lam=restore_lambda(cfg, operator, lam), device=device,
                         progress=progress, on_member=on_member, bitstream=bitstream, workers=workers)


def batch(
    command: str,
    inputs: list[str | Path] | str | Path,
    outdir: str | Path,
    *,
    recursive: bool = False,
    jobs: int | None = None,
    threads: int | None = None,
    ray: str | None = None,
    force: bool = False,
    on_result=None,
    **options,
) -> list[dict]:
    """Run `command` (compress, restore, decompress) over files and folders of images into `outdir`,
    as `lottery batch` does (resumable: inputs already done are skipped; see `lotterycli.batch`).
    `options`: the command's options by their field names (`jobs.CompressOptions`,
    `jobs.RestoreOptions`: preset="fast", steps=..., task="denoise", checkpoint_every=...).
    `on_result(row)`: called as each input finishes. Returns every input's manifest row, in input
    order; skipped inputs have status "skipped", failed ones "failed" and an "error"."""
    from . import batch as batch_module
    from .jobs import CompressOptions, RestoreOptions

    kinds = {"compress": CompressOptions, "restore": RestoreOptions, "decompress": batch_module.DecompressOptions}
    if command not in kinds:
        raise LotteryError(f"unknown batch command '{command}' (choose from {', '.join(kinds)})")
    try:
        opts = kinds[command](**options)
    except TypeError as exc:
        raise LotteryError(f"batch {command}: {exc}") from None
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    spec = batch_module.BatchSpec(command=command, inputs=[str(i) for i in inputs], outdir=str(outdir), options=opts,
                                  recursive=recursive, jobs=jobs, threads=threads, ray=ray, force=force)

    class Listener(batch_module.Events):
        def finished(self, job, row, summary) -> None:
            if on_result is not None:
                on_result(row)

    return batch_module.run(spec, Listener()).rows
