"""Latent grids and the quantization proxies used while fitting.

The grids hold continuous parameters; the coded integers are round(parameter * gain). During
fitting, rounding is replaced by soft-rounding plus Kumaraswamy noise (both annealed), then by
hard rounding with a straight-through gradient.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .architecture import latent_shapes


def soft_round(y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Differentiable approximation of round(); tends to round() as temperature -> 0."""
    m = torch.floor(y) + 0.5
    r = y - m
    alpha = 1.0 / temperature
    return m + torch.tanh(alpha * r) / (2.0 * math.tanh(alpha / 2.0))


def kumaraswamy_noise(shape, a: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Noise in [-0.5, 0.5] from Kumaraswamy(a, b) with b making the mode sit at 0.5; a = 1 is uniform."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-6, 1 - 1e-6)
    b = (2.0**a * (a - 1.0) + 1.0) / a
    return (1.0 - (1.0 - u).pow(1.0 / b)).pow(1.0 / a) - 0.5


class LatentGrids(nn.Module):
    """`n_levels` single-channel grids, level 0 at full resolution, zero-initialised."""

    def __init__(self, height: int, width: int, n_levels: int, gain: float, noise_seed: int = 0):
        super().__init__()
        self.gain = gain
        self.shapes = latent_shapes(height, width, n_levels)
        self.grids = nn.ParameterList([nn.Parameter(torch.zeros(h, w)) for h, w in self.shapes])
        # The quantization noise has its own generator: fits running side by side in threads (the
        # ensemble members of a restoration) must not share, and race on, torch's global one.
        self.noise_seed = noise_seed
        self._generator: torch.Generator | None = None

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.noise_seed)
        return self._generator

    def noise_state(self) -> torch.Tensor | None:
        """The noise generator's state (None before the first draw): a resumed fit restores it."""
        return None if self._generator is None else self._generator.get_state()

    def set_noise_state(self, state: torch.Tensor | None, device: torch.device) -> None:
        self._generator = None
        if state is not None:
            self._noise_generator(device).set_state(state)

    def scaled(self) -> list[torch.Tensor]:
        return [g * self.gain for g in self.grids]

    def quantized(self) -> list[torch.Tensor]:
        """The integers the file will hold."""
        return [torch.round(g.detach() * self.gain).to(torch.int64) for g in self.grids]

    def proxies(self, mode: str, temperature: float = 0.3, noise_a: float = 1.0):
        """(values for the rate, values for the synthesis) under a quantization mode.

        mode "soft": soft-round + noise (rate), soft-round again (synthesis);
        mode "hard": round with straight-through gradients (both).
        """
        # every grid in one flat tensor: each operation below runs once per step, not once per
        # grid (the same values: all are elementwise, and one draw of the noise generator for
        # the whole tensor gives the numbers the per-grid draws gave, in the same order)
        y = torch.cat([g.reshape(-1) for g in self.grids]) * self.gain
        if mode == "hard":
            q = self._split(y + (torch.round(y) - y).detach())
            return q, list(q)
        noise = kumaraswamy_noise(y.shape, noise_a, generator=self._noise_generator(y.device), device=y.device)
        noisy = soft_round(y, temperature) + noise
        return self._split(noisy), self._split(soft_round(noisy, temperature))

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """A flat tensor of every grid's values (level 0 first) -> views shaped as the grids."""
        return [v.view(h, w) for v, (h, w) in zip(flat.split([h * w for h, w in self.shapes]), self.shapes)]

    def set_from_integers(self, values: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for g, v in zip(self.grids, values):
                g.copy_(v.to(g.dtype) / self.gain)
