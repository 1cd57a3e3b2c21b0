"""The decoder's renderer: a `Payload` -> uint8 pixels, in exact fixed-point arithmetic.

Every value is a dyadic of bounded size carried in float64 (`fixedpoint`), so every sum is exact
whatever order BLAS adds in: the same pixels on every machine and thread count. The encoder renders
its own file with this function before it reports any number.

The image is rendered in bands of rows, so the memory it takes beyond the latents and the output
is bounded whatever the image size, and the time grows linearly with the pixels: each band
computes the upsampled latents of its rows (`ExactUpsampler`) and the ModNet on them plus two rows
above and below (its two 3x3 layers each reach one row further). All sums being exact, the result
does not depend on the band or block sizes.
"""

from __future__ import annotations

import torch

from .modulation import modnet_exact_pointwise, modnet_exact_residual
from .payload import Payload
from .synthesis import exact_weights, pixel_coordinates, synthesis_exact
from .upsampling import ExactUpsampler

BAND_PIXELS = 1 << 18  # pixels per band of rows (about 60 MB of intermediates with the shipped sizes)
BLOCK_PIXELS = 16384  # pixels per block of the per-pixel layers (their wide intermediates stay in cache)
HALO_ROWS = 2  # rows a band's ModNet needs beyond the band: two 3x3 layers


def render_payload(payload: Payload, band_pixels: int = BAND_PIXELS, block_pixels: int = BLOCK_PIXELS) -> torch.Tensor:
    """Render a payload with exact fixed-point arithmetic -> uint8 image (3, H, W) in the model's frame."""
    arch, h, w = payload.architecture, payload.height, payload.width
    upsampler = ExactUpsampler(payload.latents, payload.modules["upsampling"].dequantized()["kernel"])
    modnet = payload.modules["modnet"].dequantized()
    weights = exact_weights(arch, payload.seed, payload.mask)
    h3, m2 = arch.synth_hidden[2], arch.modulation_channels[1]
    w4_u0 = weights[3][:, h3 + m2 :]
    band = max(1, band_pixels // w)
    out = torch.empty(3, h, w, dtype=torch.uint8)
    for r0 in range(0, h, band):
        r1 = min(h, r0 + band)
        a, b = max(0, r0 - HALO_ROWS), min(h, r1 + HALO_ROWS)
        features = upsampler.rows(a, b).reshape(arch.n_levels, -1)
        n = features.shape[1]
        u1 = features.new_empty(arch.modnet_out, n)
        from_u0 = features.new_empty(3, n)
        for s in range(0, n, block_pixels):
            e = min(n, s + block_pixels)
            u0, u1[:, s:e] = modnet_exact_pointwise(modnet, features[:, s:e])
            from_u0[:, s:e] = w4_u0 @ u0
        del features
        u2, u3 = modnet_exact_residual(modnet, u1, b - a, w)  # exact in rows [r0, r1) (HALO_ROWS)
        core = slice((r0 - a) * w, (r1 - a) * w)
        small = torch.cat([u3[:, core], u2[:, core], u1[:, core]])
        from_u0 = from_u0[:, core]
        coords = pixel_coordinates(h, w, dtype=torch.float64, rows=(r0, r1))
        rgb = small.new_empty(3, small.shape[1])
        for s in range(0, rgb.shape[1], block_pixels):
            e = min(rgb.shape[1], s + block_pixels)
            rgb[:, s:e] = synthesis_exact(arch, weights, coords[:, s:e], small[:, s:e], from_u0[:, s:e])
        # rgb holds multiples of 2**-16 in [0, 1]: x*255 + 0.5 is exact, so floor gives a portable rounding.
        out[:, r0:r1] = torch.floor(rgb.view(3, r1 - r0, w) * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)
    return out
