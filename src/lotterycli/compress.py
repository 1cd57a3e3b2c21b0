"""Compression: fit a model to one image, quantize it, write a real .lottery file, decode it back.

The reported numbers come from the file itself: its size in bytes, and the PSNR of the pixels
that `decompress` will produce (the encoder decodes its own output before returning).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from .adam import Adam
from .bitstream.container import architecture_bytes, decode_file, encode_file
from .bitstream.param_coding import module_bits
from .codec.arm import Arm
from .codec.architecture import Architecture
from .codec.model import LotteryModel, decode_payload, macs_per_pixel
from .codec.params import MODULE_NAMES, QuantizedModule
from .config import TaskConfig
from .fit import Distortion, FitResult, PixelMSE, ProgressCallback, Schedule, StepInfo, fit, mse, rate_thread_pays
from .metrics import psnr

SHIFT_CANDIDATES = range(4, 15)  # power-of-two steps 2**-4 .. 2**-14 tried per module
MIN_TENSOR_SHIFT = 0  # per-tensor steps go up to 1 (the fixed-point ARM takes shifts 0..16)
TENSOR_SEARCH = (4, 2, 2)  # per-tensor search: steps up to 2**4 coarser, 2**2 finer, 2 rounds


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
    fit: FitResult | None = None


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    from .errors import LotteryError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LotteryError("--device cuda: no CUDA GPU is available (use --device auto or cpu)")
    if device not in ("cpu", "cuda"):
        raise LotteryError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def _hard_bpp(model: LotteryModel) -> float:
    """Latent rate (bits per pixel) of the hard-rounded latents under the model's ARM."""
    with torch.no_grad():
        rate_in, _ = model.latents.proxies("hard")
        return float(model.arm.rate_bits(rate_in, model.arch.arm_band_rows)) / model.n_pixels


def _hard_distortion(model: LotteryModel, distortion: Distortion) -> float:
    """Distortion of the hard-rounded render, as `fit.evaluate` measures it (a PixelMSE renders
    only its pixels)."""
    with torch.no_grad():
        if isinstance(distortion, PixelMSE):
            _, _, image = distortion.render(model, "hard")
        else:
            _, synth_in = model.latents.proxies("hard")
            image = model.render_from(synth_in)
        return float(distortion(image))


def install_arm(model: LotteryModel, arm: Arm) -> None:
    """Make `arm` the model's ARM; its width becomes the model's (and the file's) arm_hidden."""
    model.arm = arm
    model.arch = replace(model.arch, arm_hidden=arm.hidden)


def quantize_networks(
    model: LotteryModel, distortion: Distortion, lam: float, per_tensor: bool = True,
    arm_alternatives: list[dict[str, torch.Tensor] | Arm] = (),
) -> dict[str, QuantizedModule]:
    """Pick the small networks' power-of-two steps by rate-distortion search, real code lengths.

    Modules are done in order (ARM, upsampling, ModNet), each search seeing the earlier ones
    already quantized; the model is left holding the quantized values. First one step for the
    whole module (SHIFT_CANDIDATES), then each tensor's own step (TENSOR_SEARCH: two rounds over
    the tensors, each trying a window of steps around its current one): hidden layers take much
    coarser steps than output layers (docs/tuning.md, session 9). The ARM changes only the rate
    and the other modules only the distortion, so each trial computes just the part that moves.
    `per_tensor=False` stops after the module-wide step (for comparisons).
    `arm_alternatives`: other ARMs searched the same way: float states of the model's ARM (state
    dicts, e.g. the ARM before its refit) or `Arm` modules of any width (`install_arm`); the
    cheapest of all is kept, so an alternative can only help.
    """
    chosen: dict[str, QuantizedModule] = {}
    d0, bpp0 = _hard_distortion(model, distortion), _hard_bpp(model)
    for name in MODULE_NAMES:
        module = model.modules_by_name()[name]
        candidates = [(module, module.state_dict())]
        if name == "arm":
            candidates += [(alt, alt.state_dict()) if isinstance(alt, Arm) else (module, alt) for alt in arm_alternatives]
        best_cost, best = float("inf"), None
        for owner, state in candidates:
            state = {k: v.detach().clone() for k, v in state.items()}
            if name == "arm":
                install_arm(model, owner)
            owner.load_state_dict(state)
            cost, q = _search_steps(model, name, state, distortion, lam, d0, bpp0, per_tensor)
            if name == "arm":  # another width can leave the header's architecture presets
                cost += lam * 8 * architecture_bytes(model.arch) / model.n_pixels
            if cost < best_cost:
                best_cost, best = cost, (owner, state, q)
        owner, state, best_q = best
        if name == "arm":
            install_arm(model, owner)
        owner.load_state_dict(state)
        model.load_quantized(name, best_q)
        chosen[name] = best_q
        if name == "arm":
            bpp0 = _hard_bpp(model)
        else:
            d0 = _hard_distortion(model, distortion)
    return chosen


def _search_steps(model: LotteryModel, name: str, state: dict[str, torch.Tensor], distortion: Distortion,
                  lam: float, d0: float, bpp0: float, per_tensor: bool) -> tuple[float, QuantizedModule]:
    """(cost, quantized module) of the best steps for module `name` holding float `state`."""
    module = model.modules_by_name()[name]

    def cost_of(q: QuantizedModule) -> float:
        model.load_quantized(name, q)
        if name == "arm":
            d, bpp = d0, _hard_bpp(model)
        else:
            d, bpp = _hard_distortion(model, distortion), bpp0
        module.load_state_dict(state)
        return d + lam * (bpp + module_bits(q, name) / model.n_pixels)

    best_cost, best_q = float("inf"), None
    for shift in SHIFT_CANDIDATES:
        q = model.quantize_module(name, shift)
        cost = cost_of(q)
        if cost < best_cost:
            best_cost, best_q = cost, q
    shifts = best_q.tensor_shifts()
    coarser, finer, rounds = TENSOR_SEARCH
    for _ in range(rounds if per_tensor else 0):
        changed = False
        for tensor in list(shifts):
            now = shifts[tensor]
            for s in range(max(MIN_TENSOR_SHIFT, now - coarser), min(SHIFT_CANDIDATES[-1], now + finer) + 1):
                if s == now:
                    continue
                trial = dict(shifts, **{tensor: s})
                q = model.quantize_module(name, best_q.shift, trial)
                cost = cost_of(q)
                if cost < best_cost:
                    best_cost, best_q, shifts, changed = cost, q, trial, True
        if not changed:
            break
    return best_cost, best_q


def refit_arm(model: LotteryModel, steps: int, lr: float, progress: ProgressCallback | None = None,
              report_every: int = 10, arm: Arm | None = None) -> float:
    """Fit the ARM alone to the final integer latents, minimising their bits plus its own.

    Why: during the fit the ARM learns from soft-rounded, noisy latents and pays nothing for its
    parameters, yet the file codes the hard-rounded integers and stores the ARM. With the latents
    frozen the ARM changes only the rate, so this stage cannot cost PSNR; its objective is the
    latents' bits plus a smooth estimate of the ARM's parameter bits (`Arm.parameter_bits`), which
    keeps it from growing more parameter bits than it saves. Adam at a constant learning rate;
    the best state seen is kept. The network quantization that follows still prices every
    candidate by its real code length. Returns the objective (bits) of the kept state.
    `progress` gets a `StepInfo` with stage "arm refit" every `report_every` steps (loss and bpp
    are the objective and the latent rate, in bits per pixel; the distortion is not known here: nan).
    `arm`: fit this ARM (e.g. a narrower one, from scratch) instead of the model's; its progress
    stage is then "arm refit, width W".
    """
    stage = "arm refit" if arm is None else f"arm refit, width {arm.hidden}"
    arm = model.arm if arm is None else arm
    band_rows = model.arch.arm_band_rows
    device = next(arm.parameters()).device
    latents = [q.to(device=device, dtype=torch.float32) for q in model.latents.quantized()]
    contexts, values = arm.fixed_contexts(latents, band_rows)  # the latents are frozen: built once

    if steps <= 0:
        with torch.no_grad():
            return float(arm.rate_bits_from_contexts(contexts, values) + arm.parameter_bits())
    optimizer = Adam(arm.parameters(), lr=lr)
    best_bits, best_state = float("inf"), None
    start = time.perf_counter()
    for step in range(steps + 1):
        optimizer.zero_grad(set_to_none=True)
        latent_bits = arm.rate_bits_from_contexts(contexts, values)
        bits = latent_bits + arm.parameter_bits()
        value = float(bits.detach())
        if value < best_bits:  # the state before this step's update
            best_bits, best_state = value, {k: v.detach().clone() for k, v in arm.state_dict().items()}
        if progress is not None and (step % report_every == 0 or step == steps):
            n = model.n_pixels
            progress(StepInfo(step, steps, value / n, math.nan, float(latent_bits.detach()) / n,
                              time.perf_counter() - start, stage))
        if step == steps:
            break
        bits.backward()
        optimizer.step()
    arm.load_state_dict(best_state)
    return best_bits


def scratch_arm(model: LotteryModel, width: int, steps: int, lr: float, seed: int,
                progress: ProgressCallback | None = None) -> Arm:
    """A new ARM of `width`, fitted from its seeded start to the model's final latents (`refit_arm`).

    Why: at low rates the ARM's parameters cost about as much as the latents they code (kodim04
    at lambda 1.6e-2: 305 of 1,025 bytes); a narrower ARM fitted to the same integers can code
    them in fewer bytes all told. The model is not changed; `quantize_networks` decides.
    """
    with torch.random.fork_rng(devices=[]):  # its own start, whatever the RNG's state
        torch.manual_seed(seed)
        arm = Arm(width)
    arm = arm.to(next(model.arm.parameters()).device)
    refit_arm(model, steps, lr, progress, arm=arm)
    return arm


def arm_parameter_share(model: LotteryModel, refit_bits: float) -> float:
    """The ARM's estimated share of its own cost: parameter bits / (latent + parameter bits).

    Why: a narrower ARM only pays where the ARM's parameters are a large part of what it costs;
    on the 24 session-12 protocol files the 8-wide ARM won only where this share was 0.083 or
    more, and never below 0.06 (`benchmarks/arm_share_study.py`). `Arm.parameter_bits` is well
    below the coded size but orders files alike. `refit_bits` is `refit_arm`'s result (latent
    plus parameter bits of the ARM the model now holds).
    """
    if not refit_bits > 0:
        return 1.0
    with torch.no_grad():
        return float(model.arm.parameter_bits()) / refit_bits


def fit_distortion(target: torch.Tensor, schedule: Schedule) -> Distortion:
    """The MSE the fit minimises: over every pixel, or, with `schedule.pixel_fraction` < 1, as a
    `PixelMSE` so that each step synthesises and scores a fresh random part of the pixels."""
    if schedule.pixel_fraction >= 1.0:
        return mse(target)
    n = target.shape[-2] * target.shape[-1]
    return PixelMSE(torch.arange(n, device=target.device), target.reshape(target.shape[0], n), n)


def compress_image(
    image: torch.Tensor,
    cfg: TaskConfig,
    *,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    arch: Architecture | None = None,
) -> CompressResult:
    """Fit, quantize, write and re-decode. `image` is (3, H, W) float in [0, 1].

    `arch` overrides the config's architecture (cfg.architecture)."""
    start = time.perf_counter()
    dev = resolve_device(device)
    _, height, width = image.shape
    torch.manual_seed(cfg.seed)
    model = LotteryModel(height, width, arch or cfg.architecture, cfg.seed, cfg.mask_ratio).to(dev)
    schedule = cfg.fitted_schedule()
    fit_result = fit(model, fit_distortion(image.to(dev), schedule), cfg.lam, schedule, progress,
                     rate_thread=rate_thread_pays(dev, height * width))
    fitted_arm = {k: v.detach().cpu().clone() for k, v in model.arm.state_dict().items()}
    # never more refit steps than fit steps: a quick fit (tests, trials) stays quick
    refit_steps = min(schedule.arm_refit_steps, schedule.steps)
    refit_bits = refit_arm(model, refit_steps, schedule.arm_refit_lr, progress)
    # the fitted ARM is priced too: the file is never larger than it would be without the refit
    alternatives: list = [fitted_arm] if refit_steps > 0 else []
    try_narrower = arm_parameter_share(model, refit_bits) >= schedule.arm_scratch_min_share
    for arm_width in schedule.arm_scratch_widths if try_narrower else ():  # docs/tuning.md, sessions 12-13
        if arm_width != model.arch.arm_hidden:
            alternatives.append(scratch_arm(model, arm_width, min(schedule.arm_scratch_steps, schedule.steps),
                                            schedule.arm_scratch_lr, cfg.seed, progress).cpu())
    model = model.cpu()
    distortion = mse(image)
    modules = quantize_networks(model, distortion, cfg.lam, arm_alternatives=alternatives)
    payload = model.to_payload(modules)
    data = encode_file(payload)
    decoded = decode_payload(decode_file(data))
    n_pixels = height * width
    return CompressResult(
        data=data,
        decoded=decoded,
        n_bytes=len(data),
        bpp=len(data) * 8 / n_pixels,
        psnr=psnr(decoded, image),
        macs_per_pixel=macs_per_pixel(payload.architecture, payload.mask, height, width),
        seconds=time.perf_counter() - start,
        steps=fit_result.steps,
        fit=fit_result,
    )


def decompress_bytes(data: bytes) -> torch.Tensor:
    """A .lottery file's bytes -> uint8 image (3, H, W), bit-exact on every machine."""
    return decode_payload(decode_file(data))
