"""Quantization of the small networks: a power-of-two step per tensor, chosen by real code lengths.

After the fit, the ARM, the upsampling kernel and ModNet are rounded to integers times 2**-shift
for the file. Each module's steps are searched against the rate-distortion cost J = distortion +
lambda * (latent bits + the module's coded bits) / pixels, with the bits of its real section;
then, optionally, each integer is tried one step towards zero (`_refine_integers`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from ..bitstream.header import architecture_bytes
from ..bitstream.param_coding import estimated_value_bits, module_bits, module_code
from ..fitting.loop import ProgressCallback, StepInfo
from ..fitting.losses import Distortion, PixelMSE
from ..model.architecture import MODULE_NAMES
from ..model.arm import Arm
from ..model.lottery_model import LotteryModel
from ..model.payload import QuantizedModule
from ..model.upsampling import feature_channel
from .arm_refit import Pairs, latent_pairs

SHIFT_CANDIDATES = range(4, 15)  # power-of-two steps 2**-4 .. 2**-14 tried per module
MIN_TENSOR_SHIFT = 0  # per-tensor steps go up to 1 (the fixed-point ARM takes shifts 0..16)
TENSOR_SEARCH = (4, 2, 2)  # per-tensor search: steps up to 2**4 coarser, 2**2 finer, 2 rounds
# The integer refinement renders the image once per ModNet or upsampling integer (~400 renders):
# ~10 s for a 256x256 image, ~65 s at 768x512 on one core, and in proportion above. Larger images
# skip it: their networks are a small part of their files.
REFINE_MAX_PIXELS = 1 << 20


def _hard_bpp(model: LotteryModel, pairs: Pairs) -> float:
    """Latent rate (bits per pixel) of the integer latents (their `latent_pairs`) under the
    model's ARM."""
    with torch.no_grad():
        return float(model.arm.rate_bits_from_contexts(*pairs)) / model.n_pixels


def _hard_distortion(model: LotteryModel, distortion: Distortion, features: torch.Tensor | None = None) -> float:
    """Distortion of the hard-rounded render, as `fit.evaluate` measures it (a PixelMSE renders
    only its pixels). `features`: the upsampled hard-rounded latents, when they are known
    (`_fixed_features`)."""
    with torch.no_grad():
        if features is not None:
            image = model.render_features(features)
        elif isinstance(distortion, PixelMSE):
            _, _, image = distortion.render(model, "hard")
        else:
            _, synth_in = model.latents.proxies("hard")
            image = model.render_from(synth_in)
        return float(distortion(image))


def _fixed_features(model: LotteryModel, distortion: Distortion) -> torch.Tensor | None:
    """The upsampled hard-rounded latents, which stay the same while ModNet's steps are searched
    (the renders then start after the upsampling: the same values, a third less work); None for
    a PixelMSE, and for a model rendered in bands of rows, whose whole upsampled latents would
    cost more memory than the render itself (`model.bands`)."""
    if isinstance(distortion, PixelMSE) or len(model.row_bands()) > 1:
        return None
    with torch.no_grad():
        _, synth_in = model.latents.proxies("hard")
        return model.upsampling(synth_in)


class _Trials:
    """Counts the search's trials for its progress bar (stage "quantize"). `total` starts as an
    upper bound (every per-tensor round run in full) and drops when a search stops early, so
    the bar ends full and its ETA improves as it goes.

    Why: after the fit, a multi-megapixel image spends minutes here (each trial of the upsampling
    or ModNet renders the whole image) and the display would otherwise sit still."""

    def __init__(self, total: int, progress: ProgressCallback | None):
        self.done, self.total, self.progress = 0, total, progress
        self.start = time.perf_counter()
        self.best = math.inf

    def tick(self, cost: float) -> None:
        self.done += 1
        self.best = min(self.best, cost)
        self.report()

    def skip(self, n: int) -> None:
        """n trials of the upper bound that will not be run."""
        if n:
            self.total -= n
            self.report()

    def report(self) -> None:
        if self.progress is not None:
            best = self.best if self.done else math.nan
            self.progress(StepInfo(self.done, self.total, best, math.nan, math.nan,
                                   time.perf_counter() - self.start, "quantize"))


def _max_trials(n_tensors: int, per_tensor: bool) -> int:
    """Trials of one `_search_steps` if every per-tensor round runs in full."""
    coarser, finer, rounds = TENSOR_SEARCH
    return len(SHIFT_CANDIDATES) + (rounds * n_tensors * (coarser + finer) if per_tensor else 0)


def without_unread_inputs(model: LotteryModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ModNet's float `state` with its first layer's weights on all-zero latent grids set to 0.

    Why: at high lambda the finest grids often end empty (no nonzero integer), and ModNet's first
    layer then multiplies an all-zero feature channel: its weights there change no pixel, yet a
    file would pay for them. Zeroed before the quantization search, they cost only their zero flags
    and leave the search free to choose the other weights' steps. The hard-rounded latents decide
    it, the same integers the file holds.
    """
    grids = model.latents.quantized()
    unread = [feature_channel(level, len(grids)) for level, grid in enumerate(grids) if not bool(grid.any())]
    if not unread:
        return state
    weight = state["u0.weight"].clone()
    weight[:, unread] = 0
    return dict(state, **{"u0.weight": weight})


def install_arm(model: LotteryModel, arm: Arm) -> None:
    """Make `arm` the model's ARM; its width becomes the model's (and the file's) arm_hidden."""
    model.arm = arm
    model.arch = replace(model.arch, arm_hidden=arm.hidden)


def quantize_networks(
    model: LotteryModel, distortion: Distortion, lam: float, per_tensor: bool = True,
    arm_alternatives: list[dict[str, torch.Tensor] | Arm] = (), pairs: Pairs | None = None,
    progress: ProgressCallback | None = None, refine: bool = False,
) -> dict[str, QuantizedModule]:
    """Pick the small networks' power-of-two steps by rate-distortion search, real code lengths.

    Modules are done in order (ARM, upsampling, ModNet), each search seeing the earlier ones
    already quantized; the model is left holding the quantized values. First one step for the
    whole module (SHIFT_CANDIDATES), then each tensor's own step (TENSOR_SEARCH: two rounds over
    the tensors, each trying a window of steps around its current one): hidden layers take much
    coarser steps than output layers (docs/design.md). The ARM changes only the rate
    and the other modules only the distortion, so each trial computes just the part that moves.
    `per_tensor=False` stops after the module-wide step (for comparisons).
    `arm_alternatives`: other ARMs searched the same way: float states of the model's ARM (state
    dicts, e.g. the ARM before its refit) or `Arm` modules of any width (`install_arm`); the
    cheapest of all is kept, so an alternative can only help. `pairs`: the latents'
    `latent_pairs` (on the CPU), if already found: every ARM is priced on them. `progress` gets
    a `StepInfo` with stage "quantize" after each trial (step: trials done; loss: the cheapest
    cost seen). `refine`: then each module's integers are refined (`_refine_integers`).
    """
    chosen: dict[str, QuantizedModule] = {}
    pairs = latent_pairs(model) if pairs is None else pairs
    searches = [len(model.arm.state_dict())] * (1 + len(arm_alternatives))
    searches += [len(model.modules_by_name()[name].state_dict()) for name in MODULE_NAMES if name != "arm"]
    bound = sum(_max_trials(n, per_tensor) for n in searches)
    if refine:  # at most one trial per parameter of the module kept (the widest ARM's, as a bound)
        arms = [model.arm] + [a for a in arm_alternatives if isinstance(a, Arm)]
        bound += max(_n_params(a) for a in arms)
        bound += sum(_n_params(model.modules_by_name()[name]) for name in MODULE_NAMES if name != "arm")
    trials = _Trials(bound, progress)
    d0, bpp0 = _hard_distortion(model, distortion), _hard_bpp(model, pairs)
    for name in MODULE_NAMES:
        module = model.modules_by_name()[name]
        candidates = [(module, module.state_dict())]
        if name == "arm":
            candidates += [(alt, alt.state_dict()) if isinstance(alt, Arm) else (module, alt) for alt in arm_alternatives]
        best_cost, best = float("inf"), None
        for owner, state in candidates:
            state = {k: v.detach().clone() for k, v in state.items()}
            if name == "modnet":
                state = without_unread_inputs(model, state)
            if name == "arm":
                install_arm(model, owner)
            owner.load_state_dict(state)
            cost, q = _search_steps(model, name, state, distortion, lam, d0, bpp0, per_tensor, pairs, trials)
            if name == "arm":  # another width can leave the header's architecture presets
                cost += lam * 8 * architecture_bytes(model.arch) / model.n_pixels
            if cost < best_cost:
                best_cost, best = cost, (owner, state, q)
        owner, state, best_q = best
        if name == "arm":
            install_arm(model, owner)
            if refine:
                trials.skip(max(_n_params(a) for a in arms) - _n_params(owner))
        owner.load_state_dict(state)
        if refine:
            best_q = _refine_integers(model, name, best_q, _parts(model, name, state, distortion, d0, bpp0, pairs),
                                      lam, trials)
        model.load_quantized(name, best_q)
        chosen[name] = best_q
        if name == "arm":
            bpp0 = _hard_bpp(model, pairs)
        else:
            d0 = _hard_distortion(model, distortion)
    return chosen


def _search_steps(model: LotteryModel, name: str, state: dict[str, torch.Tensor], distortion: Distortion,
                  lam: float, d0: float, bpp0: float, per_tensor: bool,
                  pairs: Pairs, trials: _Trials) -> tuple[float, QuantizedModule]:
    """(cost, quantized module) of the best steps for module `name` holding float `state`
    (`pairs`: the latents' `latent_pairs`, which price an ARM; `trials` counts the trials)."""
    parts = _parts(model, name, state, distortion, d0, bpp0, pairs)

    def cost_of(q: QuantizedModule) -> float:
        d, bpp = parts(q)
        cost = d + lam * (bpp + module_bits(q, name) / model.n_pixels)
        trials.tick(cost)
        return cost

    best_cost, best_q = float("inf"), None
    for shift in SHIFT_CANDIDATES:
        q = model.quantize_module(name, shift)
        cost = cost_of(q)
        if cost < best_cost:
            best_cost, best_q = cost, q
    shifts = best_q.tensor_shifts()
    coarser, finer, rounds = TENSOR_SEARCH
    for done_rounds in range(1, rounds + 1 if per_tensor else 1):
        changed = False
        for tensor in list(shifts):
            now = shifts[tensor]
            window = [s for s in range(max(MIN_TENSOR_SHIFT, now - coarser), min(SHIFT_CANDIDATES[-1], now + finer) + 1)
                      if s != now]
            trials.skip(coarser + finer - len(window))
            for s in window:
                trial = dict(shifts, **{tensor: s})
                q = model.quantize_module(name, best_q.shift, trial)
                cost = cost_of(q)
                if cost < best_cost:
                    best_cost, best_q, shifts, changed = cost, q, trial, True
        if not changed:
            trials.skip((rounds - done_rounds) * len(shifts) * (coarser + finer))
            break
    return best_cost, best_q


def _n_params(module: torch.nn.Module) -> int:
    return sum(int(t.numel()) for t in module.state_dict().values())


def _parts(model: LotteryModel, name: str, state: dict[str, torch.Tensor], distortion: Distortion,
           d0: float, bpp0: float, pairs: Pairs) -> Callable[[QuantizedModule], tuple[float, float]]:
    """parts(q) -> (distortion, latent bpp) of the model with module `name` quantized as q, the
    module's float `state` put back after. The ARM changes only the rate and the other modules
    only the distortion, so each computes just the part that moves (ModNet from the upsampled
    latents, found once)."""
    module = model.modules_by_name()[name]
    features = _fixed_features(model, distortion) if name == "modnet" else None

    def parts(q: QuantizedModule) -> tuple[float, float]:
        model.load_quantized(name, q)
        if name == "arm":
            d, bpp = d0, _hard_bpp(model, pairs)
        else:
            d, bpp = _hard_distortion(model, distortion, features), bpp0
        module.load_state_dict(state)
        return d, bpp

    return parts


def _refine_integers(model: LotteryModel, name: str, q: QuantizedModule,
                     parts: Callable[[QuantizedModule], tuple[float, float]], lam: float,
                     trials: _Trials) -> QuantizedModule:
    """q with its integers moved one step towards zero wherever that lowers the RD cost.

    Why: the steps' search rounds every parameter to its nearest integer, but the nearest is
    not the cheapest: the fit never saw the rounding, and a smaller integer codes shorter. Each
    nonzero integer in canonical order is tried one step towards zero and kept there if the cost
    falls (distortion or latent rate measured, the module's bits estimated by
    `param_coding.estimated_value_bits`); the result is kept only if its real cost, with the
    module's real code length, is below q's. Measured on real files: docs/design.md.
    """
    n = model.n_pixels

    def real_cost(module_q: QuantizedModule) -> float:
        d, bpp = parts(module_q)
        return d + lam * (bpp + module_bits(module_q, name) / n)

    k = module_code(q, name)[0].k
    refined = QuantizedModule(q.shift, {t: v.clone() for t, v in q.tensors.items()}, dict(q.shifts))
    bits = float(module_bits(q, name))
    d, bpp = parts(refined)
    best = d + lam * (bpp + bits / n)
    for tensor in refined.tensors.values():
        flat = tensor.view(-1)
        bits_of = estimated_value_bits(flat.tolist(), k)
        nonzero = flat.nonzero().flatten().tolist()
        trials.skip(flat.numel() - len(nonzero))
        for i in nonzero:
            v = int(flat[i])
            w = v - 1 if v > 0 else v + 1
            delta = bits_of(w) - bits_of(v)
            flat[i] = w
            d, bpp = parts(refined)
            cost = d + lam * (bpp + (bits + delta) / n)
            trials.tick(cost)
            if cost < best:
                best, bits = cost, bits + delta
            else:
                flat[i] = v
    return refined if real_cost(refined) < real_cost(q) else q
