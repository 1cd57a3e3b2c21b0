"""What a fitted model is, once quantized: the exact content of a .lottery file.

`Payload` is the boundary between the model (which produces and consumes it) and the bitstream
(which serialises it). Every number in it is an integer or an exact dyadic, so the decoder can
rebuild the model bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .architecture import MODULE_NAMES, Architecture

__all__ = ["MODULE_NAMES", "Payload", "QuantizedModule", "latent_shapes"]  # MODULE_NAMES: re-exported


@dataclass
class QuantizedModule:
    """The parameters of one small learned network, as integers times a power of two.

    `tensors` maps parameter names to int64 tensors; its insertion order is the canonical order
    used by the bitstream. The real value of parameter p is tensors[p] * 2**-shift_of(p): each
    tensor may have its own step (`shifts`; tensors not named there use `shift`), because the
    layers of one network tolerate very different steps (an ARM's output layer needs a finer one
    than its hidden layers, and the hidden layers hold most of the parameters).
    """

    shift: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    shifts: dict[str, int] = field(default_factory=dict)

    def shift_of(self, name: str) -> int:
        return int(self.shifts.get(name, self.shift))

    def tensor_shifts(self) -> dict[str, int]:
        """Every tensor's shift, in canonical order."""
        return {k: self.shift_of(k) for k in self.tensors}

    def dequantized(self) -> dict[str, torch.Tensor]:
        """Exact float64 values (integers times a power of two)."""
        return {k: v.to(torch.float64) * 2.0 ** -self.shift_of(k) for k, v in self.tensors.items()}

    def n_params(self) -> int:
        return sum(int(t.numel()) for t in self.tensors.values())


def smooth_parameter_bits(named_parameters, step_of) -> torch.Tensor:
    """A smooth estimate of the bits a network's quantized parameters will cost in the file:
    log2(1 + |w| / step) per parameter, `step_of(name)` being the step the quantizer typically
    picks for that tensor. About the Exp-Golomb length of |w| / step, and zero for a zero weight,
    so as a loss term its gradient pulls parameters that do not pay for themselves towards zero."""
    total = None
    for name, p in named_parameters:
        bits = torch.log2(1.0 + p.abs() / step_of(name)).sum()
        total = bits if total is None else total + bits
    return total


# Names of the learned modules, in the order they are stored.


@dataclass
class Payload:
    """Everything the decoder needs: sizes, seed, mask, small networks, latents."""

    height: int
    width: int
    seed: int  # regenerates the frozen random synthesis weights (see codec.prng)
    mask_ratio: float  # fraction of synthesis weights removed (informational; the mask is exact)
    architecture: Architecture
    mask: torch.Tensor  # bool (architecture.n_synth_weights,), layer by layer, row-major (out, in)
    modules: dict[str, QuantizedModule]  # keys MODULE_NAMES
    latents: list[torch.Tensor]  # int64 grids, level 0 (full resolution) first

    def latent_shapes(self) -> list[tuple[int, int]]:
        return latent_shapes(self.height, self.width, self.architecture.n_levels)


def latent_shapes(height: int, width: int, n_levels: int) -> list[tuple[int, int]]:
    """Grid i has ceil(H / 2**i) x ceil(W / 2**i) values."""
    return [(-(-height // (1 << i)), -(-width // (1 << i))) for i in range(n_levels)]
