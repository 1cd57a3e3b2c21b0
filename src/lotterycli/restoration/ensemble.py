"""Zero-shot restoration: fit the model through a degradation operator, K seeds, combined.

Each ensemble member is a full model with its own seed (its own random synthesis network, mask
scores and noise); members' errors are largely independent, so their mean is better than any one.

Screening: some seeds are bad tickets, and a bad ticket already shows in its training loss after a
tenth of the steps; with `candidates` > K the restorer starts that many members, ranks them by their
training loss after `screen_fraction` of the steps, and continues only the K best.

Members may fit the image in different orientations (`member_transforms`), and inpainting mixes
the classical biharmonic fill into the result (`classical_blend`); docs/design.md gives the
measured effect of each.

How members run: on a CPU side by side, one per core (`default_workers`); on a GPU as one member
batch (`member_batch`: `model.members`, `fitting.batched`), one kernel launch serving them all.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..compression.encoder import quantized_payload
from ..config import TaskConfig
from ..fitting.batched import BatchedFitter
from ..fitting.checkpoint import Checkpoint
from ..fitting.device import resolve_device
from ..fitting.loop import FitResult, Fitter, ProgressCallback, StepInfo
from ..fitting.losses import PixelMSE
from ..model.frames import N_FRAMES, dihedral, frame_shape
from ..model.lottery_model import LotteryModel
from ..model.members import MemberBatch
from ..model.payload import Payload
from .operators import Operator


@dataclass
class RestoreResult:
    image: torch.Tensor  # float (3, H, W) in [0, 1]: the result (ensemble, mixed with the classical estimate)
    members: list[torch.Tensor]  # each member's render (observed pixels put back if keep_observed)
    fits: list[FitResult]
    seconds: float
    lam: float
    best_member: int  # index of the member with the lowest final loss
    payload: Payload | None = None  # the best member's model, when a bitstream was asked for
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
    images and worse on textured ones, and their errors are only partly alike (docs/design.md).
    """
    if classical is None or weight <= 0:
        return ensemble.clamp(0, 1)
    # lerp: ensemble + weight * (classical - ensemble), exact where the two agree (kept pixels)
    return torch.lerp(ensemble, classical.to(ensemble), weight).clamp(0, 1)


def default_workers(ensemble: int, device: torch.device) -> int:
    """Members fitted at once when they are not a member batch: on a CPU one per core (up to K),
    each on one torch thread.

    Why: at 256x256, two single-thread fits side by side make more steps per second in all than
    one fit on two threads. On a GPU (without the batch) members run one after the other: in
    threads on their own CUDA streams they were only 4 % faster, the Python launch overhead being
    shared (docs/gpu.md).
    """
    if device.type != "cpu" or ensemble < 2:
        return 1
    return max(1, min(ensemble, torch.get_num_threads()))


def use_member_batch(setting: str, device: torch.device, n_candidates: int, checkpointing: bool) -> bool:
    """Whether the members are fitted as one batched model (`model.members`).

    "auto": on a GPU, where a step is launch-bound and B members batched cost about one
    member's launches; not on a CPU, where a batched product costs more per member than one fit
    per core (docs/design.md). Never with one member, nor when checkpoints are saved or resumed
    (the batched loop keeps none): the members are then fitted one by one as usual.
    """
    if n_candidates < 2 or checkpointing or setting == "never":
        return False
    return setting == "always" or device.type == "cuda"


# A batched member's fitting step on a GPU, bytes per pixel: a cautious guess (a single CPU fit at
# 768x512 peaks at 2,086 MB RSS, torch included: docs/benchmarks.md, "Engine"; the batch's autograd
# keeps more), to be
# replaced by what `benchmarks.gpu_check` measures (`member_batch_cuda`: peak bytes per member-pixel).
MEMBER_BYTES_PER_PIXEL = 16 * 1024


def batch_capacity(device: torch.device, n_pixels: int) -> int:
    """How many members one batch may hold: on a GPU what its free memory holds at
    MEMBER_BYTES_PER_PIXEL (at least one), so that a batch that would not fit is split instead of
    failing; elsewhere no limit."""
    if device.type != "cuda":
        return 1 << 30
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(free // (MEMBER_BYTES_PER_PIXEL * max(1, n_pixels))))


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


def restore_image(
    y: torch.Tensor,
    operator: Operator,
    cfg: TaskConfig,
    *,
    lam: float,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    on_member: Callable[[int, int], ProgressCallback | None] | None = None,
    bitstream: bool = False,
    workers: int | None = None,
    checkpoint: Checkpoint | None = None,
    resume: dict | None = None,
) -> RestoreResult:
    """Fit `cfg.restoration.ensemble` members to observation `y` (3, h, w) through `operator`.

    With `cfg.restoration.candidates` > `cfg.restoration.ensemble`, that many candidates (seeds seed .. seed + C - 1) run
    the first `cfg.restoration.screen_fraction` of the steps; the `cfg.restoration.ensemble` with the lowest recent training
    loss (ties: lower seed) continue to the end, the others are dropped.
    `on_member(k, C)` is called as candidate k starts; it may return a progress callback for it
    (used instead of `progress`, so concurrent members can show separate bars).
    With `cfg.restoration.member_transforms`, candidate k fits the image seen in frame k mod 8 of the square's
    symmetries (`model.frames.dihedral`; frame 0 = as given) and its render is mapped back.
    `bitstream`: also quantize the best member into `result.payload` (its file records its frame).
    With `cfg.restoration.member_batch` ("auto": on a GPU; `use_member_batch`) the candidates are
    fitted as member batches, one per frame shape (`model.members`, `fitting.batched`), screened
    and kept the same way; each member's result is that of its own fit within float noise.
    `workers`: otherwise, fits run concurrently in threads (default: `default_workers`). Candidate k always
    uses seed + k and its own noise generator, so concurrent fits compute exactly what they
    would one after another on one thread (float sums may differ in the last bit with more threads).
    `checkpoint`: saves each candidate's fit now and then (part "member K"), the screening's
    outcome ("screen") and each member's state when its fit ends. `resume`: such parts from an
    earlier run of this observation and config; the members go on from them, screening is not run
    again once decided, and the result is the one an uninterrupted run gives.
    """
    start = time.perf_counter()
    settings = cfg.restoration
    if settings is None:
        raise ValueError(f"{cfg.task} is not a restoration task")
    dev = resolve_device(device)
    operator.check_observation(tuple(y.shape))
    height, width = operator.output_shape(tuple(y.shape))
    y_dev = y.to(dev)
    n = settings.ensemble
    n_candidates = max(n, settings.candidates)
    workers = default_workers(n_candidates, dev) if workers is None else max(1, min(int(workers), n_candidates))
    # Candidate k fits in frame k of the square's symmetries (with member_transforms): the seeded
    # network, the latent grids and the ARM's causal order then meet the image in another
    # orientation, which makes the members' errors less alike.
    frames = [k % N_FRAMES if settings.member_transforms else 0 for k in range(n_candidates)]
    models: list[LotteryModel | None] = []
    for k in range(n_candidates):  # built in order: initialisation draws from torch's global generator
        torch.manual_seed(cfg.seed + k)
        h_k, w_k = frame_shape(height, width, frames[k])
        models.append(LotteryModel(h_k, w_k, cfg.architecture, cfg.seed + k, cfg.mask_ratio).to(dev))

    schedule = cfg.schedule
    classical = operator.classical_estimate(y) if settings.classical_blend > 0 else None

    def loss_in_frame(frame: int, target: torch.Tensor):
        """operator.loss against `target` for a render made in `frame`."""
        if frame == 0:
            return lambda image: operator.loss(image, target)
        return lambda image: operator.loss(dihedral(image, frame, inverse=True), target)

    # Where the loss is a per-pixel mean squared error (denoising, inpainting), members get it as a
    # PixelMSE: they synthesise only the pixels it reads, or a random part of them per step
    # (schedule.pixel_fraction).
    loss_map = operator.loss_pixels(y_dev)

    def pixel_loss(frame: int) -> PixelMSE:
        """operator.loss, pixel for pixel, for a render made in frame `frame`."""
        h, w = loss_map.shape
        original = dihedral(torch.arange(h * w, device=dev).view(h, w), frame).reshape(-1)
        pixels = torch.nonzero(loss_map.reshape(-1)[original]).squeeze(1)
        target = y_dev.reshape(y_dev.shape[0], -1).index_select(1, original[pixels])
        return PixelMSE(pixels, target, h * w)

    fitters: list[Fitter | None] = [None] * n_candidates
    screen_until = max(1, int(round(settings.screen_fraction * schedule.steps)))
    resume = resume or {}

    def start_fit(k: int) -> Fitter:
        member_progress = on_member(k, n_candidates) if on_member is not None else None
        distortion = pixel_loss(frames[k]) if loss_map is not None else loss_in_frame(frames[k], y_dev)
        hook = checkpoint.hook(f"member {k}") if checkpoint is not None else None
        fitters[k] = Fitter(models[k], distortion, lam, schedule, member_progress or progress, checkpoint=hook)
        if f"member {k}" in resume:
            fitters[k].load_state_dict(resume[f"member {k}"])
        return fitters[k]

    def screen_candidate(k: int) -> float:
        fitter = start_fit(k)
        with _member_stream(dev, workers):
            fitter.advance(screen_until)
        return fitter.recent_loss()

    def member_image(k: int, result: FitResult) -> torch.Tensor:
        """Member k's result in the observation's frame: its averaged or its hard-rounded render."""
        if result.average_render is not None:
            image = result.average_render
        else:
            with torch.no_grad():
                image, _ = models[k]("hard")
        image = dihedral(image.detach(), frames[k], inverse=True).clamp(0, 1)
        if settings.keep_observed:
            image = operator.keep_observed(image, y_dev)
        return image.cpu()

    def finish_member(k: int) -> tuple[torch.Tensor, FitResult]:
        if fitters[k] is None:  # no screening: the member starts here
            start_fit(k)
        with _member_stream(dev, workers):
            if checkpoint is not None and checkpoint.saving:  # a finished member is kept whole: a resumed run only renders it
                fitters[k].advance()
                checkpoint.put(f"member {k}", fitters[k].state_dict())
                checkpoint.save(only_if_due=True)
            result = fitters[k].finish()
        fitters[k] = None
        return member_image(k, result), result

    def fit_batched() -> tuple[list[float], list[int], list[tuple[torch.Tensor, FitResult]]]:
        """Every candidate in member batches (one per frame shape, split to `batch_capacity`),
        screened as `run_all` screens them: (screening losses, kept candidates, (image, fit) of
        each kept one)."""
        shapes: dict[tuple[int, int], list[int]] = {}
        for k in range(n_candidates):
            shapes.setdefault(frame_shape(height, width, frames[k]), []).append(k)
        size = batch_capacity(dev, height * width)
        chunks = [ks[i: i + size] for ks in shapes.values() for i in range(0, len(ks), size)]
        groups = []
        for ks in chunks:
            progress_of = [(on_member(k, n_candidates) if on_member is not None else None) or progress for k in ks]
            distortions = [pixel_loss(frames[k]) if loss_map is not None else loss_in_frame(frames[k], y_dev) for k in ks]
            batch = MemberBatch([models[k] for k in ks])
            groups.append((ks, batch, BatchedFitter(batch, distortions, lam, schedule, progress_of)))
        losses: list[float] = []
        kept = list(range(n))
        if n_candidates > n:
            by_candidate = {}
            for ks, _, fitter in groups:
                fitter.advance(screen_until)
                by_candidate.update(zip(ks, fitter.recent_loss()))
            losses = [by_candidate[k] for k in range(n_candidates)]
            kept = sorted(sorted(range(n_candidates), key=lambda k: (losses[k], k))[:n])
            for i, (ks, batch, fitter) in enumerate(groups):
                for pos, k in enumerate(ks):
                    if k not in kept and fitter.progress[pos] is not None:
                        last = fitter.history[pos][-1] if fitter.history[pos] else None
                        fitter.progress[pos](StepInfo(fitter.step, fitter.total, last.loss if last else math.nan,
                                                      last.distortion if last else math.nan,
                                                      last.bpp if last else math.nan, fitter.seconds, "dropped"))
                stay = [pos for pos, k in enumerate(ks) if k in kept]
                fitter.keep(stay)
                groups[i] = ([ks[pos] for pos in stay], batch, fitter)
        finished = {}
        for ks, batch, fitter in groups:
            if not ks:
                continue
            for pos, (k, result) in enumerate(zip(ks, fitter.finish())):
                batch.write_member(pos, models[k])  # the best state, into the member's own model
                finished[k] = (member_image(k, result), result)
        for k in range(n_candidates):
            if k not in kept:
                models[k] = None
        return losses, kept, [finished[k] for k in kept]

    def run_all(fn, items: list[int]) -> list:
        if workers == 1:
            return [fn(k) for k in items]
        with ThreadPoolExecutor(max_workers=min(workers, len(items)), initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(fn, items))

    checkpointing = (checkpoint is not None and checkpoint.saving) or bool(resume)
    batched = use_member_batch(settings.member_batch, dev, n_candidates, checkpointing)
    threads_before = torch.get_num_threads()
    if workers > 1 and dev.type == "cpu" and not batched:
        torch.set_num_threads(1)  # process-wide: each member's ops run on its own worker thread
    try:
        screen_losses: list[float] = []
        kept = list(range(n))
        if batched:
            screen_losses, kept, outputs = fit_batched()
        elif n_candidates > n and "screen" in resume:  # decided before the run stopped
            screen_losses, kept = list(resume["screen"]["losses"]), list(resume["screen"]["kept"])
            for k in range(n_candidates):
                if k not in kept:
                    models[k] = None
        elif n_candidates > n:
            screen_losses = run_all(screen_candidate, list(range(n_candidates)))
            kept = sorted(sorted(range(n_candidates), key=lambda k: (screen_losses[k], k))[:n])
            if checkpoint is not None:
                checkpoint.put("screen", {"losses": screen_losses, "kept": kept})
            for k in range(n_candidates):
                if k not in kept:
                    fitters[k].drop()
                    fitters[k] = models[k] = None
                    if checkpoint is not None:
                        checkpoint.drop(f"member {k}")
        if not batched:
            outputs = run_all(finish_member, kept)
        fits = [o[1] for o in outputs]
        best = min(range(len(fits)), key=lambda i: fits[i].best_loss)
        payload = None
        if bitstream:  # on the same thread count as the member's fit
            k = kept[best]
            payload = quantized_payload(models[k], loss_in_frame(frames[k], y.cpu()), lam, schedule, cfg.seed + k)
            payload.frame, payload.restoration = frames[k], True
    finally:
        torch.set_num_threads(threads_before)
    members = [o[0] for o in outputs]
    ensemble = combine(members, settings.combine).clamp(0, 1)
    return RestoreResult(
        image=blend_classical(ensemble, classical, settings.classical_blend),
        ensemble_image=ensemble,
        classical_image=classical.cpu() if classical is not None else None,
        members=members,
        fits=fits,
        seconds=time.perf_counter() - start,
        lam=lam,
        best_member=best,
        payload=payload,
        seeds=[cfg.seed + k for k in kept],
        dropped_seeds=[cfg.seed + k for k in range(n_candidates) if k not in kept],
        screen_losses=screen_losses,
    )
