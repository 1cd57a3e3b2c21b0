"""Which of two equal computations a tensor's device gets.

Several parts of a fitting step can be computed two ways that give the same values: few large
operations, or the way measured fastest on a CPU (often more, smaller operations on less memory,
or a cache whose upkeep reads a value back to the host). On a GPU a step's time is its kernel
launches, dispatches and host synchronisations, not its arithmetic (docs/gpu.md), so every device
but the CPU takes the first way. The choice is this one function so that tests can run the GPU's
way on a CPU (by patching it) and compare it with the CPU's.
"""

from __future__ import annotations

import torch


def launch_bound(t: torch.Tensor) -> bool:
    """True where `t`'s device spends a step on launches and synchronisations: any but the CPU."""
    return t.device.type != "cpu"
