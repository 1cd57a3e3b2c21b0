"""After the fit: the ARM fitted again, alone, to the final integer latents (and narrower ARMs
fitted from scratch to them), so the file codes the same latents in fewer bytes."""

from __future__ import annotations

import math
import time

import torch

from ..fitting.adam import Adam
from ..fitting.loop import ProgressCallback, StepInfo
from ..model.arm import Arm
from ..model.lottery_model import LotteryModel

REFIT_CHUNK = 1 << 20  # distinct (context, value) pairs per forward and backward of a refit step


def _latent_bits(arm: Arm, contexts: torch.Tensor, values: torch.Tensor, counts: torch.Tensor,
                 backward: bool) -> torch.Tensor:
    """The latents' bits under `arm` (detached), from their distinct contexts, values and counts
    (`Arm.distinct_contexts`), with their gradient added to the ARM's when `backward`: in chunks
    of REFIT_CHUNK pairs, so that a large image's refit holds one chunk's activations."""
    n = values.numel()
    total = values.new_zeros(())
    for s in range(0, n, REFIT_CHUNK):
        end = s + REFIT_CHUNK
        bits = arm.rate_bits_from_contexts(contexts[:, s:end], values[s:end], counts[s:end])
        if backward:
            bits.backward()
        total += bits.detach()
    return total


Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # contexts (24, U), values (U,), counts (U,)


def latent_pairs(model: LotteryModel, device: torch.device | str = "cpu") -> Pairs:
    """The distinct (context, value) pairs of the model's integer latents and their counts
    (`Arm.distinct_contexts`), on `device`: found once after the fit, they serve every ARM fitted
    or priced on those latents."""
    latents = [q.to(device=device, dtype=torch.float32) for q in model.latents.quantized()]
    return Arm.distinct_contexts(latents, model.arch.arm_band_rows)


def refit_arm(model: LotteryModel, steps: int, lr: float, progress: ProgressCallback | None = None,
              report_every: int = 10, arm: Arm | None = None, pairs: Pairs | None = None) -> float:
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
    stage is then "arm refit, width W". `pairs`: the latents' `latent_pairs`, if already found.
    """
    stage = "arm refit" if arm is None else f"arm refit, width {arm.hidden}"
    arm = model.arm if arm is None else arm
    device = next(arm.parameters()).device
    # the latents are frozen: each distinct (context, value) pair is priced once, times its count
    contexts, values, counts = (t.to(device) for t in (latent_pairs(model, device) if pairs is None else pairs))

    if steps <= 0:
        with torch.no_grad():
            return float(_latent_bits(arm, contexts, values, counts, backward=False) + arm.parameter_bits())
    optimizer = Adam(arm.parameters(), lr=lr)
    best_bits, best_state = float("inf"), None
    start = time.perf_counter()
    chunked = values.numel() > REFIT_CHUNK
    for step in range(steps + 1):
        optimizer.zero_grad(set_to_none=True)
        if chunked:  # each chunk's backward at once; the parameters' bits follow
            latent_bits = _latent_bits(arm, contexts, values, counts, backward=step < steps)
        else:
            latent_bits = arm.rate_bits_from_contexts(contexts, values, counts)
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
                progress: ProgressCallback | None = None, pairs: Pairs | None = None) -> Arm:
    """A new ARM of `width`, fitted from its seeded start to the model's final latents (`refit_arm`).

    Why: at low rates the ARM's parameters cost about as much as the latents they code (kodim04
    at lambda 1.6e-2: 305 of 1,025 bytes); a narrower ARM fitted to the same integers can code
    them in fewer bytes all told. The model is not changed; `quantize_networks` decides.
    """
    with torch.random.fork_rng(devices=[]):  # its own start, whatever the RNG's state
        torch.manual_seed(seed)
        arm = Arm(width)
    arm = arm.to(next(model.arm.parameters()).device)
    refit_arm(model, steps, lr, progress, arm=arm, pairs=pairs)
    return arm


def arm_parameter_share(model: LotteryModel, refit_bits: float) -> float:
    """The ARM's estimated share of its own cost: parameter bits / (latent + parameter bits).

    Why: a narrower ARM only pays where the ARM's parameters are a large part of what it costs
    (docs/design.md). `Arm.parameter_bits` is well below the coded size but orders files alike. `refit_bits` is `refit_arm`'s result (latent
    plus parameter bits of the ARM the model now holds).
    """
    if not refit_bits > 0:
        return 1.0
    with torch.no_grad():
        return float(model.arm.parameter_bits()) / refit_bits
