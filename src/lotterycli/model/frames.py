"""The eight symmetries of the square (flips and transposes) applied to (..., H, W) tensors.

Why: restoration fits its ensemble members in different orientations of the image, so that the
seeded network, the latent grids and the ARM's causal order meet it differently and the members'
errors are less alike; a `.lottery` file records the frame its model was fitted in, and the
decoder undoes it.
"""

from __future__ import annotations

import torch

N_FRAMES = 8


def dihedral(image: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """Element k (0-7) of the square's symmetry group on a (..., H, W) tensor: transpose if k & 4,
    then mirror left-right if k & 1 and top-bottom if k & 2; `inverse` undoes it."""
    k %= N_FRAMES
    flips = [d for bit, d in ((1, -1), (2, -2)) if k & bit]
    if not inverse and k & 4:
        image = image.transpose(-1, -2)
    if flips:
        image = image.flip(flips)
    if inverse and k & 4:
        image = image.transpose(-1, -2)
    return image


def frame_shape(height: int, width: int, k: int) -> tuple[int, int]:
    """(H, W) of an image of `height` x `width` seen in frame k."""
    return (width, height) if k % N_FRAMES & 4 else (height, width)
