"""What a fitted model is, once quantized: the exact content of a .lottery file.

`Payload` is the boundary between the model (which produces and consumes it) and the bitstream
(which serialises it). Every number in it is an integer or an exact dyadic, so the decoder can
rebuild the model bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .architecture import Architecture, latent_shapes


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


@dataclass
class Payload:
    """Everything the decoder needs: sizes, seed, mask, small networks, latents.

    `frame` and `restoration` describe the picture rather than the model: `frame` (0-7) is the
    symmetry of the square (`model.frames.dihedral`) that the model was fitted in, undone
    after rendering; `restoration` says the file holds one member of a restoration ensemble
    (its render, not the ensemble's restored image)."""

    height: int  # of the model's render (in its own frame)
    width: int
    seed: int  # regenerates the frozen random synthesis weights (see model.prng)
    mask_ratio: float  # fraction of synthesis weights removed (the mask itself is exact)
    architecture: Architecture
    mask: torch.Tensor  # bool (architecture.n_synth_weights,), layer by layer, row-major (out, in)
    modules: dict[str, QuantizedModule]  # keys MODULE_NAMES
    latents: list[torch.Tensor]  # int64 grids, level 0 (full resolution) first
    frame: int = 0
    restoration: bool = False

    def latent_shapes(self) -> list[tuple[int, int]]:
        return latent_shapes(self.height, self.width, self.architecture.n_levels)
