"""The fitting loop for a `MemberBatch`: B members fitted in one step each, one schedule for all.

Step for step what `loop.Fitter` does for one model (the same learning-rate, temperature and noise
schedules, gradient clipping, Adam, hard-rounded evaluations keeping each member's best state,
render averaging), with every per-fit quantity a vector over the members: each member has its
own loss and is clipped, evaluated and kept on its own. Differences from `Fitter`: every step
renders every pixel (no `pixel_fraction` draws: the members' pixel sets would differ), there is no
rate thread (a GPU path) and no checkpointing. `keep` drops members mid-fit (restoration's
screening), with their optimizer state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from ..model.members import MemberBatch
from .adam import Adam
from .loop import FitResult, ProgressCallback, StepInfo, check_cancelled, dropped_info, step_settings
from .losses import Distortion, PixelMSE
from .memory import members_at_once
from .schedule import Schedule


class MemberDistortion:
    """The members' distortions as one function of their renders (B, C, H, W) -> (B,).

    Per-pixel squared errors (`PixelMSE`, one per member, over as many pixels each: a frame only
    permutes them) are computed for all members at once; any other distortion member by member.
    """

    def __init__(self, distortions: Sequence[Distortion | PixelMSE]):
        self.each = list(distortions)
        self.stacked = None
        if all(isinstance(d, PixelMSE) for d in self.each) and len({d.indices.numel() for d in self.each}) == 1:
            targets = torch.stack([d.target for d in self.each])  # (B, C, n)
            index = None
            if not all(d.all_pixels for d in self.each):
                index = torch.stack([d.indices for d in self.each])[:, None].expand(-1, targets.shape[1], -1)
            self.stacked = (targets, index)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.stacked is None:
            return torch.stack([d(image) for d, image in zip(self.each, images)])
        targets, index = self.stacked
        flat = images.reshape(images.shape[0], images.shape[1], -1)
        seen = flat if index is None else flat.gather(2, index)
        return ((seen - targets) ** 2).mean((1, 2))

    def keep(self, indices: list[int]) -> MemberDistortion:
        return MemberDistortion([self.each[i] for i in indices])


class BatchedFitter:
    """B fits of one schedule in one loop: `advance(until)`, `keep(indices)`, `finish()`."""

    def __init__(self, batch: MemberBatch, distortions: Sequence[Distortion | PixelMSE], lam: float,
                 schedule: Schedule, progress: Sequence[ProgressCallback | None] | None = None,
                 report_every: int = 10):
        if len(distortions) != batch.n_members:
            raise ValueError(f"{len(distortions)} distortions for {batch.n_members} members")
        self.batch, self.lam, self.schedule = batch, lam, schedule
        self.distortion = MemberDistortion(distortions)
        n = batch.n_members
        self.progress = list(progress) if progress is not None else [None] * n
        self.report_every = report_every
        groups = batch.parameter_groups()
        self.optimizer = Adam([
            {"params": groups["latents"], "lr": schedule.lr * schedule.latent_lr_scale},
            {"params": groups["networks"], "lr": schedule.lr},
            {"params": groups["scores"], "lr": schedule.score_lr},
        ])
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.total = max(1, schedule.steps)
        self.soft_steps = int(round(self.total * (1.0 - schedule.hard_fraction)))
        if schedule.average_fraction > 0:
            self.average_start = int(round(self.total * (1.0 - schedule.average_fraction)))
        else:
            self.average_start = self.total
        self.step = 0
        self.seconds = 0.0
        self.best_loss = [math.inf] * n
        self.best_step = [0] * n
        self.best_state: list[dict | None] = [None] * n
        self.history: list[list[StepInfo]] = [[] for _ in range(n)]
        self.losses: list[torch.Tensor] = []  # (B,) training losses of every step, on the device
        self.render_sum: torch.Tensor | None = None
        self.n_averaged = 0

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _clip(self, max_norm: float) -> None:
        """`clip_grad_norm_` for each member on its own: its gradients' total 2-norm scaled to at
        most `max_norm`."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        n = self.batch.n_members
        norms = torch.stack([g.reshape(n, -1).norm(dim=1) for g in grads], 1).norm(dim=1)
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(n, *([1] * (g.dim() - 1))))

    def _losses(self, mode: str, temperature: float = 0.3, noise_a: float = 1.0):
        images, bits = self.batch(mode, temperature, noise_a)
        d = self.distortion(images)
        bpp = bits / self.batch.n_pixels
        return images, d, bpp, d + self.lam * bpp

    def evaluate(self) -> list[float]:
        """Each member's loss with hard-rounded latents (no gradients)."""
        with torch.no_grad():
            return self._losses("hard")[3].tolist()

    def advance(self, until: int | None = None) -> None:
        """Run steps [self.step, until) (default: to the end of the schedule)."""
        until = self.total if until is None else min(int(until), self.total)
        start = time.perf_counter()
        sched, optimizer = self.schedule, self.optimizer
        while self.step < until:
            check_cancelled()
            step = self.step
            soft, temperature, noise_a, factor = step_settings(sched, step, self.soft_steps, self.total)
            for g, base in zip(optimizer.param_groups, self.base_lrs):
                g["lr"] = base * factor
            averaged = step >= self.average_start and (step - self.average_start) % max(1, sched.average_every) == 0
            optimizer.zero_grad(set_to_none=True)
            images, d, bpp, loss = self._losses("soft" if soft else "hard", temperature, noise_a)
            loss.sum().backward()  # members share no parameter: each gets its own loss's gradient
            if sched.grad_clip > 0:
                self._clip(sched.grad_clip)
            optimizer.step()
            self.losses.append(loss.detach())
            if averaged:
                self.render_sum = images.detach().clone() if self.render_sum is None else self.render_sum.add_(images.detach())
                self.n_averaged += 1
            last = step == self.total - 1
            tracked = not soft or step >= self.soft_steps // 5  # as Fitter: from 20 % of the soft stage
            if tracked and ((step - self.soft_steps) % sched.eval_every == 0 or last):
                for k, hard in enumerate(self.evaluate()):
                    if hard < self.best_loss[k]:
                        self.best_loss[k], self.best_step[k] = hard, step + 1
                        self.best_state[k] = self.batch.member_state(k)
            self.step += 1
            if any(self.progress) and (step % self.report_every == 0 or last):
                elapsed = self.seconds + time.perf_counter() - start
                values = torch.stack([loss.detach(), d.detach(), bpp.detach()], 1).tolist()
                for k, (lk, dk, bk) in enumerate(values):
                    info = StepInfo(step + 1, self.total, lk, dk, bk, elapsed, "soft" if soft else "hard")
                    self.history[k].append(info)
                    if self.progress[k] is not None:
                        self.progress[k](info)
        self.seconds += time.perf_counter() - start

    def recent_loss(self, fraction: float = 0.25) -> list[float]:
        """Each member's mean training loss over the last `fraction` of the steps run (`Fitter`'s)."""
        if not self.losses:
            return [math.inf] * self.batch.n_members
        n = max(1, int(round(len(self.losses) * fraction)))
        return torch.stack(self.losses[-n:]).mean(0).tolist()

    def keep(self, indices: list[int]) -> None:
        """Go on with these members only (in this order), dropping the others' state; the
        others' progress callbacks get a last "dropped" report (as `Fitter.drop`)."""
        for k, progress in enumerate(self.progress):
            if k not in indices and progress is not None:
                progress(dropped_info(self.history[k], self.step, self.total, self.seconds))
        index = torch.tensor(indices, dtype=torch.long, device=self.batch.w0.device)
        renamed = self.batch.keep(indices)
        for group in self.optimizer.param_groups:
            group["params"] = [renamed[p] for p in group["params"]]
        for old, new in renamed.items():
            state = self.optimizer.state.pop(old, None)
            if state is not None:
                self.optimizer.state[new] = {"step": state["step"], "exp_avg": state["exp_avg"].index_select(0, index),
                                             "exp_avg_sq": state["exp_avg_sq"].index_select(0, index)}
        self.distortion = self.distortion.keep(indices)
        self.progress = [self.progress[i] for i in indices]
        self.best_loss = [self.best_loss[i] for i in indices]
        self.best_step = [self.best_step[i] for i in indices]
        self.best_state = [self.best_state[i] for i in indices]
        self.history = [self.history[i] for i in indices]
        self.losses = [loss.index_select(0, index) for loss in self.losses]
        if self.render_sum is not None:
            self.render_sum = self.render_sum.index_select(0, index)

    def finish(self) -> list[FitResult]:
        """Run the remaining steps, load each member's best hard-rounded state, return the results."""
        self.advance()
        final = None
        for k in range(self.batch.n_members):
            if self.best_state[k] is None:  # no hard stage: the final state, evaluated
                final = self.evaluate() if final is None else final
                self.best_loss[k], self.best_step[k] = final[k], self.total
            else:
                self.batch.load_member_state(k, self.best_state[k])
        average = self.render_sum / self.n_averaged if self.n_averaged else None
        return [FitResult(steps=self.total, seconds=self.seconds, best_loss=self.best_loss[k],
                          best_step=self.best_step[k], history=self.history[k],
                          average_render=None if average is None else average[k])
                for k in range(self.batch.n_members)]


# A batched member's fitting step on a GPU, bytes per pixel: a cautious guess (a single CPU fit at
# 768x512 peaks at 2,086 MB RSS, torch included: docs/benchmarks.md, "Engine"; the batch's autograd
# keeps more), to be replaced by what `benchmarks.gpu_check` measures (`member_batch_cuda`: peak
# bytes per member-pixel).
MEMBER_BYTES_PER_PIXEL = 16 * 1024


def batch_capacity(device: torch.device, height: int, width: int) -> int:
    """How many members one batch may hold, so that a batch that would not fit is split instead of
    failing: on a GPU what its free memory holds at MEMBER_BYTES_PER_PIXEL (at least one); on a
    CPU what the free memory holds by `fitting.memory` (LotteryError if not one member)."""
    n_pixels = height * width
    if device.type == "cpu":
        return members_at_once(height, width, device, 1 << 30, banded=False)  # a batch is fitted whole
    if device.type != "cuda":
        return 1 << 30
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(free // (MEMBER_BYTES_PER_PIXEL * max(1, n_pixels))))
