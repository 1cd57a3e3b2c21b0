"""Zero-shot restoration: fit the codec through a degradation operator, K seeds, combined.

Each ensemble member is a full model with its own seed (its own random synthesis network, mask
scores and noise); members' errors are largely independent, so their mean is better than any one.

Screening: some seeds are bad tickets (on the benchmark crops seed 1 ended 0.6-2.1 dB below the
others on 6 of 8 inpainting crops, and on kodim01 its loss was already the worst after 100 of 900
steps), so with
`candidates` > K the restorer starts that many members, ranks them by their training loss after
`screen_fraction` of the steps, and continues only the K best (docs/tuning.md, session 5).

Inpainting also fits its members in different orientations of the image (`member_transforms`) and
mixes the classical biharmonic fill into the result (`classical_blend`; docs/tuning.md, session 6).
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from .codec.architecture import Architecture
from .codec.model import LotteryModel
from .codec.params import Payload
from .compress import quantize_networks, refit_arm, resolve_device
from .config import TaskConfig
from .fit import Fitter, FitResult, PixelMSE, ProgressCallback
from .operators import Operator


@dataclass
class RestoreResult:
    image: torch.Tensor  # float (3, H, W) in [0, 1]: the result (ensemble, mixed with the classical estimate)
    members: list[torch.Tensor]  # each member's render (observed pixels put back if cfg.keep_observed)
    fits: list[FitResult]
    seconds: float
    lam: float
    best_member: int  # index of the member with the lowest final loss
    payloads: list[Payload] = field(default_factory=list)  # when bitstreams were asked for
    seeds: list[int] = field(default_factory=list)  # each member's seed
    dropped_seeds: list[int] = field(default_factory=list)  # candidates screened out
    screen_losses: list[float] = field(default_factory=list)  # every candidate's screening loss (seed order)
    ensemble_image: torch.Tensor | None = None  # the members combined, before any classical blend
    classical_image: torch.Tensor | None = None  # the operator's classical estimate, when it was used


def combine(members: list[torch.Tensor], how: str = "mean") -> torch.Tensor:
    stack = torch.stack(members)
    return stack.median(dim=0).values if how == "median" else stack.mean(dim=0)


def blend_classical(ensemble: torch.Tensor, classical: torch.Tensor | None, weight: float) -> torch.Tensor:
    """(1 - weight) * ensemble + weight * classical, in [0, 1]; the ensemble alone without one.

    Why: for inpainting, the biharmonic fill is as good as the random-network ensemble on smooth
    crops and worse on textured ones, and their errors are only partly alike: 30 % of the fill in
    the mean of four members gained 0.09-0.12 dB on kodim01-08 (docs/tuning.md, session 6).
    """
    if classical is None or weight <= 0:
        return ensemble.clamp(0, 1)
    # lerp: ensemble + weight * (classical - ensemble), exact where the two agree (kept pixels)
    return torch.lerp(ensemble, classical.to(ensemble), weight).clamp(0, 1)


def dihedral(image: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """Element k (0-7) of the square's symmetry group on a (..., H, W) tensor: transpose if k & 4,
    then mirror left-right if k & 1 and top-bottom if k & 2; `inverse` undoes it."""
    k %= 8
    flips = [d for bit, d in ((1, -1), (2, -2)) if k & bit]
    if not inverse and k & 4:
        image = image.transpose(-1, -2)
    if flips:
        image = image.flip(flips)
    if inverse and k & 4:
        image = image.transpose(-1, -2)
    return image


def default_workers(ensemble: int, device: torch.device) -> int:
    """Members fitted at once: on a CPU one per core (up to K), each on one torch thread.

    Why: at 256x256, two single-thread fits side by side made 16.7 steps/s in all against 12.5 for
    one fit on two threads (docs/tuning.md, "Members side by side"). On a GPU members run one
    after the other: four members in threads on their own CUDA streams were only 4 % faster on an
    H200, the Python launch overhead being shared (docs/gpu.md).
    """
    if device.type != "cpu" or ensemble < 2:
        return 1
    return max(1, min(ensemble, torch.get_num_threads()))


@contextlib.contextmanager
def _member_stream(dev: torch.device, workers: int):
    """On a GPU with concurrent members, give each member its own CUDA stream so their many small
    kernels can overlap; elsewhere a no-op."""
    if dev.type != "cuda" or workers < 2:
        yield
        return
    stream = torch.cuda.Stream(device=dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        yield
    stream.synchronize()


def _warm_start_guide(operator: Operator, y: torch.Tensor, fraction: float, steps: int):
    """Training-loss term pulling the render toward the operator's classical estimate (inpainting:
    the biharmonic fill of the holes) with a weight falling linearly from 1 to 0 over the first
    `fraction` of the steps; None when off or when the operator has no such estimate.

    Why: the holes start from a smooth fill instead of the untrained model's guess; on the smooth
    benchmark crops this gained 0.1-0.5 dB per member, but with 4 members it was level on the mean of
    kodim01-08 (textured crops lost), so it is off by default (docs/tuning.md, session 5).
    """
    if fraction <= 0:
        return None
    target = operator.warm_start_target(y)
    if target is None:
        return None
    fill, weight = target
    until = max(1.0, fraction * steps)

    def guide(image: torch.Tensor, step: int):
        w = 1.0 - step / until
        if w <= 0:
            return None
        return w * torch.mean(weight * (image - fill) ** 2)

    return guide


def restore_image(
    y: torch.Tensor,
    operator: Operator,
    cfg: TaskConfig,
    *,
    lam: float,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    on_member=None,
    keep_payloads: bool = False,
    arch: Architecture | None = None,
    workers: int | None = None,
) -> RestoreResult:
    """Fit `cfg.ensemble` members to observation `y` (3, h, w) through `operator`.

    With `cfg.candidates` > `cfg.ensemble`, that many candidates (seeds seed .. seed + C - 1) run
    the first `cfg.screen_fraction` of the steps; the `cfg.ensemble` with the lowest recent training
    loss (ties: lower seed) continue to the end, the others are dropped.
    `on_member(k, C)` is called as candidate k starts; it may return a progress callback for it
    (used instead of `progress`, so concurrent members can show separate bars).
    With `cfg.member_transforms`, candidate k fits the image seen in frame k mod 8 of the square's
    symmetries (`dihedral`; frame 0 = as given) and its render is mapped back; not with
    `keep_payloads`, whose files must decode to the image as given.
    `workers`: fits run concurrently in threads (default: `default_workers`). Candidate k always
    uses seed + k and its own noise generator, so concurrent fits compute exactly what they
    would one after another on one thread (float sums may differ in the last bit with more threads).
    """
    start = time.perf_counter()
    dev = resolve_device(device)
    operator.check_observation(tuple(y.shape))
    height, width = operator.output_shape(tuple(y.shape))
    y_dev = y.to(dev)
    n = cfg.ensemble
    n_candidates = max(n, cfg.candidates)
    workers = default_workers(n_candidates, dev) if workers is None else max(1, min(int(workers), n_candidates))
    # Candidate k fits in frame k of the square's symmetries (with member_transforms): the seeded
    # network, the latent grids and the ARM's causal order then meet the image in another
    # orientation, which makes the members' errors less alike.
    # A .lottery file has no orientation, so members that must yield one (keep_payloads) fit in
    # the image's own frame.
    frames = [k % 8 if cfg.member_transforms and not keep_payloads else 0 for k in range(n_candidates)]
    models = []
    for k in range(n_candidates):  # built in order: initialisation draws from torch's global generator
        torch.manual_seed(cfg.seed + k)
        h_k, w_k = (width, height) if frames[k] & 4 else (height, width)
        models.append(LotteryModel(h_k, w_k, arch or cfg.architecture, cfg.seed + k, cfg.mask_ratio).to(dev))

    schedule = cfg.fitted_schedule()
    classical = operator.classical_estimate(y) if cfg.classical_blend > 0 else None
    warm_guide = _warm_start_guide(operator, y_dev, cfg.warm_start, schedule.steps)

    def seen_from(frame: int, fn):
        """`fn` (image first) for a render made in `frame`: the image goes back to frame 0 first."""
        if fn is None or frame == 0:
            return fn
        return lambda image, *rest: fn(dihedral(image, frame, inverse=True), *rest)

    def distortion(image):
        return operator.loss(image, y_dev)

    # Where the loss is a per-pixel mean squared error (denoising, inpainting), members get it as a
    # PixelMSE: they synthesise only the pixels it reads, or a random part of them per step
    # (schedule.pixel_fraction); a guide term needs whole renders.
    loss_map = operator.loss_pixels(y_dev) if warm_guide is None else None

    def pixel_loss(frame: int) -> PixelMSE:
        """operator.loss, pixel for pixel, for a render made in frame `frame`."""
        h, w = loss_map.shape
        original = dihedral(torch.arange(h * w, device=dev).view(h, w), frame).reshape(-1)
        pixels = torch.nonzero(loss_map.reshape(-1)[original]).squeeze(1)
        target = y_dev.reshape(y_dev.shape[0], -1).index_select(1, original[pixels])
        return PixelMSE(pixels, target, h * w)

    fitters: list[Fitter | None] = [None] * n_candidates
    screen_until = max(1, int(round(cfg.screen_fraction * schedule.steps)))

    def start_fit(k: int) -> Fitter:
        member_progress = on_member(k, n_candidates) if on_member is not None else None
        member_distortion = pixel_loss(frames[k]) if loss_map is not None else seen_from(frames[k], distortion)
        fitters[k] = Fitter(models[k], member_distortion, lam, schedule, member_progress or progress,
                            guide=seen_from(frames[k], warm_guide))
        return fitters[k]

    def screen_candidate(k: int) -> float:
        fitter = start_fit(k)
        with _member_stream(dev, workers):
            fitter.advance(screen_until)
        return fitter.recent_loss()

    def finish_member(k: int) -> tuple[torch.Tensor, FitResult, Payload | None]:
        if fitters[k] is None:  # no screening: the member starts here
            start_fit(k)
        model = models[k]
        with _member_stream(dev, workers):
            result = fitters[k].finish()
        fitters[k] = None
        if result.average_render is not None:
            image = result.average_render
        else:
            with torch.no_grad():
                image, _ = model("hard")
        payload = None
        if keep_payloads:
            model = model.cpu()
            y_cpu = y.cpu()
            refit_arm(model, min(schedule.arm_refit_steps, schedule.steps), schedule.arm_refit_lr)
            modules = quantize_networks(model, lambda im: operator.loss(im, y_cpu), lam)  # frame 0 (see above)
            payload = model.to_payload(modules)
        models[k] = None  # free the member's memory once done
        image = dihedral(image.detach(), frames[k], inverse=True).clamp(0, 1)
        if cfg.keep_observed:
            image = operator.keep_observed(image, y_dev)
        return image.cpu(), result, payload

    def run_all(fn, items: list[int]) -> list:
        if workers == 1:
            return [fn(k) for k in items]
        with ThreadPoolExecutor(max_workers=min(workers, len(items)), initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(fn, items))

    threads_before = torch.get_num_threads()
    if workers > 1 and dev.type == "cpu":
        torch.set_num_threads(1)  # process-wide: each member's ops run on its own worker thread
    try:
        screen_losses: list[float] = []
        kept = list(range(n))
        if n_candidates > n:
            screen_losses = run_all(screen_candidate, list(range(n_candidates)))
            kept = sorted(sorted(range(n_candidates), key=lambda k: (screen_losses[k], k))[:n])
            for k in range(n_candidates):
                if k not in kept:
                    fitters[k].drop()
                    fitters[k] = models[k] = None
        outputs = run_all(finish_member, kept)
    finally:
        torch.set_num_threads(threads_before)
    members = [o[0] for o in outputs]
    fits = [o[1] for o in outputs]
    payloads = [o[2] for o in outputs if o[2] is not None]
    best = min(range(len(fits)), key=lambda i: fits[i].best_loss)
    ensemble = combine(members, cfg.combine).clamp(0, 1)
    return RestoreResult(
        image=blend_classical(ensemble, classical, cfg.classical_blend),
        ensemble_image=ensemble,
        classical_image=classical.cpu() if classical is not None else None,
        members=members,
        fits=fits,
        seconds=time.perf_counter() - start,
        lam=lam,
        best_member=best,
        payloads=payloads,
        seeds=[cfg.seed + k for k in kept],
        dropped_seeds=[cfg.seed + k for k in range(n_candidates) if k not in kept],
        screen_losses=screen_losses,
    )
