"""Compression: fit a model to one image, quantize it, write a real .lottery file, decode it back.

The reported numbers come from the file itself: its size in bytes, and the PSNR of the pixels
that `decompress` will produce (the encoder decodes its own output before returning).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ..bitstream.container import encode_file, ratio_units
from ..bitstream.mask_coding import expected_ones, mask_bits
from ..config import TaskConfig
from ..fitting.checkpoint import Checkpoint
from ..fitting.device import resolve_device
from ..fitting.loop import FitResult, Fitter, ProgressCallback, rate_thread_pays
from ..fitting.losses import Distortion, fit_distortion, squared_error
from ..fitting.memory import check_fit_memory
from ..fitting.schedule import Schedule
from ..metrics import psnr
from ..model.architecture import macs_per_pixel
from ..model.lottery_model import LotteryModel
from ..model.payload import Payload
from .arm_refit import arm_parameter_share, latent_pairs, refit_arm, scratch_arm
from .decoder import decode_bytes
from .quantize import REFINE_MAX_PIXELS, quantize_networks


@dataclass
class CompressResult:
    data: bytes
    decoded: torch.Tensor  # uint8 (3, H, W): exactly what decompress gives
    n_bytes: int
    bpp: float
    psnr: float
    macs_per_pixel: float
    seconds: float
    steps: int
    mask_ratio: float  # the ratio of the file's mask (the screened choice, when several were screened)
    fit: FitResult | None = None


def quantized_payload(model: LotteryModel, distortion: Distortion, lam: float, schedule: Schedule, seed: int,
                      progress: ProgressCallback | None = None) -> Payload:
    """What goes into the file for a fitted model: the ARM refitted to the final latents (and
    narrower ARMs fitted from scratch, per `schedule`), the networks quantized by their real code
    lengths. The model ends on the CPU holding the quantized values. `distortion` scores a whole
    render of the model (in its own frame)."""
    fitted_arm = {k: v.detach().cpu().clone() for k, v in model.arm.state_dict().items()}
    # never more refit steps than fit steps: a quick fit (tests, trials) stays quick
    refit_steps = min(schedule.arm_refit_steps, schedule.steps)
    pairs = latent_pairs(model, next(model.arm.parameters()).device)
    refit_bits = refit_arm(model, refit_steps, schedule.arm_refit_lr, progress, pairs=pairs)
    # the fitted ARM is priced too: the file is never larger than it would be without the refit
    alternatives: list = [fitted_arm] if refit_steps > 0 else []
    try_narrower = arm_parameter_share(model, refit_bits) >= schedule.arm_scratch_min_share
    for arm_width in schedule.arm_scratch_widths if try_narrower else ():
        if arm_width != model.arch.arm_hidden:
            alternatives.append(scratch_arm(model, arm_width, min(schedule.arm_scratch_steps, schedule.steps),
                                            schedule.arm_scratch_lr, seed, progress, pairs).cpu())
    model.cpu()
    pairs = tuple(t.cpu() for t in pairs)
    modules = quantize_networks(model, distortion, lam, arm_alternatives=alternatives, pairs=pairs,
                                progress=progress,
                                refine=schedule.network_refinement and model.n_pixels <= REFINE_MAX_PIXELS)
    return model.to_payload(modules)


def mask_cost_bpp(n_weights: int, mask_ratio: float, n_pixels: int) -> float:
    """The mask's code length at `mask_ratio`, in bits per pixel (`bitstream.mask_coding`)."""
    return mask_bits(n_weights, expected_ones(n_weights, ratio_units(mask_ratio))) / n_pixels


def screen_mask_ratios(start_fit: Callable[[float], Fitter], ratios: tuple[float, ...], fraction: float,
                       lam: float) -> Fitter:
    """Fit each mask ratio for `fraction` of the steps; the one with the lowest recent training
    loss plus lambda times its mask's bits goes on (the first on a tie), the others stop.

    Why: the mask costs ~180 bytes at ratio 0.3, whatever the image. On some images it buys more
    than it costs, on others a file without a mask is cheaper for the same quality
    (docs/design.md); a tenth of the steps ranks them as their full fits do on most images measured
    at low rates (at high rates it undervalues the mask, so the config keeps it there without a
    screen: `screen_min_lambda`). Only the best so far is kept while the next is screened: at most
    two fits' state at once.
    """
    best: tuple[float, Fitter] | None = None
    for ratio in ratios:
        fitter = start_fit(ratio)
        until = max(1, round(fraction * fitter.total))
        shown = fitter.progress
        if shown is not None:  # its own bar, "screen: mask ratio R", ending at the screening step
            fitter.progress = lambda info, r=ratio, n=until, show=shown: show(
                replace(info, stage=f"screen: mask ratio {r:g}", total=n))
        fitter.advance(until)
        if shown is not None and fitter.history and fitter.history[-1].step < until:
            # the bar ends full: the fit reports every few steps, the screening step may fall between
            fitter.progress(replace(fitter.history[-1], step=until, elapsed=fitter.seconds))
        fitter.progress = shown
        n = fitter.model.arch.n_synth_weights
        cost = fitter.recent_loss() + lam * mask_cost_bpp(n, ratio, fitter.model.n_pixels)
        if best is None or cost < best[0]:  # the first on a tie
            best = (cost, fitter)
        del fitter
    return best[1]


def compress_image(
    image: torch.Tensor,
    cfg: TaskConfig,
    *,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    checkpoint: Checkpoint | None = None,
    resume: dict | None = None,
) -> CompressResult:
    """Fit, quantize, write and re-decode. `image` is (3, H, W) float in [0, 1].

    `checkpoint`: saves the fit's state as part "fit" now and then, and once more when the fit ends
    (what follows it, the ARM refit and quantization, then starts from there). `resume`: the parts
    of a checkpoint of this image and config: the fit goes on from its state, and the file is the
    one an uninterrupted run writes."""
    start = time.perf_counter()
    dev = resolve_device(device)
    _, height, width = image.shape
    check_fit_memory(height, width, dev)
    schedule = cfg.schedule
    target = image.to(dev)

    def start_fit(mask_ratio: float) -> Fitter:
        torch.manual_seed(cfg.seed)
        model = LotteryModel(height, width, cfg.architecture, cfg.seed, mask_ratio).to(dev)
        return Fitter(model, fit_distortion(target, schedule.pixel_fraction), cfg.lam, schedule, progress,
                      rate_thread=rate_thread_pays(dev, height * width))

    candidates = cfg.compression.mask_ratio_candidates if cfg.compression is not None else ()
    if resume is not None and "mask ratio" in resume:  # screened before the run stopped
        fitter = start_fit(float(resume["mask ratio"]))
    elif candidates and not (resume is not None and "fit" in resume):
        fitter = screen_mask_ratios(start_fit, (cfg.mask_ratio, *candidates), cfg.compression.screen_fraction, cfg.lam)
    else:
        fitter = start_fit(cfg.mask_ratio)
    model = fitter.model
    if checkpoint is not None:
        fitter.checkpoint = checkpoint.hook("fit")
        checkpoint.put("mask ratio", model.mask_ratio)
    if resume is not None and "fit" in resume:
        fitter.load_state_dict(resume["fit"])
    if checkpoint is not None and checkpoint.saving:
        fitter.advance()
        checkpoint.put("fit", fitter.state_dict())
        checkpoint.save()
    return file_result(model, image, cfg, fitter.finish(), start, progress)


def file_result(model: LotteryModel, image: torch.Tensor, cfg: TaskConfig, fit: FitResult, start: float,
                progress: ProgressCallback | None = None) -> CompressResult:
    """What follows a fit: quantize the fitted `model` of `image`, write the file, decode it back
    and report its real size and PSNR (`start`: perf_counter when this image's work began)."""
    payload = quantized_payload(model, squared_error(image), cfg.lam, cfg.schedule, cfg.seed, progress)
    data = encode_file(payload)
    decoded = decode_bytes(data)
    _, height, width = image.shape
    return CompressResult(
        data=data,
        decoded=decoded,
        n_bytes=len(data),
        bpp=len(data) * 8 / (height * width),
        psnr=psnr(decoded, image),
        macs_per_pixel=macs_per_pixel(payload.architecture, int(payload.mask.sum()), height, width),
        seconds=time.perf_counter() - start,
        steps=fit.steps,
        mask_ratio=model.mask_ratio,
        fit=fit,
    )
