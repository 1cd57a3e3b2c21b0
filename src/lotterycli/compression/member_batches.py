"""Several images of one size compressed as member batches: how `lottery batch compress` uses a GPU.

A GPU step is launch-bound (docs/gpu.md), so B images fitted as one batched model
(`model.members`, `fitting.batched`) cost about one image's kernel launches per step. Each image
keeps what `compress_image` gives it: its own latents, networks, mask scores and optimizer state,
the screening of the mask ratios (each ratio's fits batched together; every image goes on with
its own cheapest ratio), and its own quantization, file and decoded check after the fit.

Two differences from `compress_image`, both of the batched loop: every step renders every pixel
(no `pixel_fraction` draws: on a GPU a whole render costs the same launches), and no checkpoints
are kept. A file therefore differs from the one `lottery compress` writes for the same image, and
an image's numbers depend on which images share its batch within float noise only
(docs/design.md, "Members batched"), so its file can differ in a few bytes between batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from ..config import TaskConfig
from ..fitting.batched import BatchedFitter, batch_capacity
from ..fitting.device import resolve_device
from ..fitting.loop import ProgressCallback
from ..fitting.losses import PixelMSE
from ..fitting.memory import check_fit_memory
from ..model.lottery_model import LotteryModel
from ..model.members import MemberBatch
from .encoder import CompressResult, file_result, mask_cost_bpp


def compress_images(images: Sequence[torch.Tensor], cfg: TaskConfig, *, device: str = "auto",
                    progress: Callable[[int], ProgressCallback | None] | None = None) -> list[CompressResult]:
    """Compress (3, H, W) float images of one size, in member batches of what the device holds;
    `progress(i)` may give image i's progress callback. Results in the images' order."""
    if not images:
        return []
    shape = tuple(images[0].shape)
    if any(tuple(x.shape) != shape for x in images):
        raise ValueError("compress_images: the images of one call must share their size")
    dev = resolve_device(device)
    _, height, width = shape
    check_fit_memory(height, width, dev, banded=False)  # member batches are fitted whole
    size = batch_capacity(dev, height, width)
    results: list[CompressResult] = []
    for first in range(0, len(images), size):
        chunk = list(images[first: first + size])
        callbacks = [progress(first + i) if progress is not None else None for i in range(len(chunk))]
        results.extend(_compress_batch(chunk, cfg, dev, callbacks))
    return results


def _compress_batch(images: list[torch.Tensor], cfg: TaskConfig, dev: torch.device,
                    progress: list[ProgressCallback | None]) -> list[CompressResult]:
    start = time.perf_counter()
    _, height, width = images[0].shape
    targets = [PixelMSE.whole(x.to(dev)) for x in images]
    candidates = cfg.compression.mask_ratio_candidates if cfg.compression is not None else ()
    ratios = (cfg.mask_ratio, *candidates)

    def fit_ratio(ratio: float, members: list[int]) -> tuple[list[LotteryModel], BatchedFitter]:
        models = []
        for _ in members:  # as compress_image: each model starts from the seeded global generator
            torch.manual_seed(cfg.seed)
            models.append(LotteryModel(height, width, cfg.architecture, cfg.seed, ratio).to(dev))
        fitter = BatchedFitter(MemberBatch(models), [targets[i] for i in members], cfg.lam, cfg.schedule)
        return models, fitter

    everyone = list(range(len(images)))
    fits = {ratio: fit_ratio(ratio, everyone) for ratio in ratios}
    choice = [0] * len(images)  # index into ratios
    if len(ratios) > 1:
        until = max(1, round(cfg.compression.screen_fraction * cfg.schedule.steps))
        costs = []
        for ratio in ratios:
            models, fitter = fits[ratio]
            # each image's bar shows "screen: mask ratio R" up to the screening step, as compress_image's
            fitter.progress = [None if show is None else
                               (lambda info, r=ratio, show=show: show(replace(info, stage=f"screen: mask ratio {r:g}",
                                                                              total=until)))
                               for show in progress]
            fitter.advance(until)
            fitter.progress = [None] * len(images)
            mask = cfg.lam * mask_cost_bpp(models[0].arch.n_synth_weights, ratio, height * width)
            costs.append([loss + mask for loss in fitter.recent_loss()])
        choice = [min(range(len(ratios)), key=lambda r, i=i: (costs[r][i], r)) for i in everyone]
        for r, ratio in enumerate(ratios):
            if r not in choice:  # no image goes on with it: free its batch now
                del fits[ratio]
    results: dict[int, CompressResult] = {}
    for r, ratio in enumerate(ratios):
        if ratio not in fits:
            continue
        models, fitter = fits.pop(ratio)
        chosen = [i for i in everyone if choice[i] == r]
        if len(chosen) < len(everyone):
            fitter.keep(chosen)
        fitter.progress = [progress[i] for i in chosen]
        for pos, (i, fit) in enumerate(zip(chosen, fitter.finish())):
            fitter.batch.write_member(pos, models[i])  # the best state, into the image's own model
            results[i] = file_result(models[i], images[i], cfg, fit, start, progress[i])
    return [results[i] for i in everyone]
