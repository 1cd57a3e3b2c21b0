"""The settings of one fit: its step budget and optimiser settings.

Every value comes from a task config (`configs/<task>.yaml`, loaded by `lotterycli.config`):
the dataclass has no defaults of its own, so there is one place where a default is set.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    steps: int
    lr: float  # Adam learning rate of the latents and the small networks
    latent_lr_scale: float  # the latents' learning rate is lr times this
    score_lr: float  # Adam learning rate of the mask scores
    lr_floor: float  # the cosine decay ends at lr * lr_floor
    hard_fraction: float  # final fraction of the steps with hard-rounded latents
    temperature: tuple[float, float]  # soft-round temperature, start and end (annealed linearly)
    noise: tuple[float, float]  # Kumaraswamy noise parameter, start and end (1 = uniform)
    grad_clip: float  # gradient-norm clipping (0: none)
    eval_every: int  # how often the hard-rounded loss is checked for best-state keeping
    average_fraction: float  # restoration: average the renders of this last fraction of the steps
    average_every: int  # ... taking the render of every n-th step of that window
    pixel_fraction: float  # fraction of the loss's pixels drawn at random for each step (1: all)
    arm_refit_steps: int  # after the fit: Adam steps fitting the ARM alone to the final integer latents
    arm_refit_lr: float  # ... at this learning rate
    arm_scratch_widths: tuple[int, ...]  # ARMs of these widths also fitted, from scratch, to those latents
    arm_scratch_steps: int  # ... with this many Adam steps
    arm_scratch_lr: float  # ... at this learning rate (the cheapest ARM goes in the file)
    arm_scratch_min_share: float  # ... only when the ARM's parameters are this share of its cost
    network_refinement: bool  # after the steps' search, each network integer tried one step towards zero
