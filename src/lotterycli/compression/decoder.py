"""Decompression: .lottery bytes -> uint8 pixels, bit-exact on every machine."""

from __future__ import annotations

import torch

from ..bitstream.container import decode_file
from ..errors import LotteryError
from ..model.exact_render import render_payload
from ..model.frames import dihedral


def decode_bytes(data: bytes) -> torch.Tensor:
    """A .lottery file's bytes -> uint8 image (3, H, W) in the picture's own orientation."""
    payload = decode_file(data)
    pixels = render_payload(payload)
    return dihedral(pixels, payload.frame, inverse=True).contiguous() if payload.frame else pixels


def check_max_pixels(data: bytes, max_pixels: int) -> None:
    """Refuse a file whose image is larger than `max_pixels` (read from the header, before anything
    is decoded or allocated)."""
    from ..bitstream.header import read_header

    height, width = read_header(data).image_size
    if height * width > max_pixels:
        raise LotteryError(f"the file's image is {width}x{height} ({height * width / 1e6:.1f} megapixels): above the "
                           f"limit of {max_pixels / 1e6:g} megapixels (raise it with --max-pixels)")


def decode_checked(data: bytes, max_pixels: int) -> torch.Tensor:
    """`decode_bytes` of a file whose image is at most `max_pixels` (`check_max_pixels`)."""
    check_max_pixels(data, max_pixels)
    return decode_bytes(data)
