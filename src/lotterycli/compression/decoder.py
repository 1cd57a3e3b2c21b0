"""Decompression: .lottery bytes -> uint8 pixels, bit-exact on every machine."""

from __future__ import annotations

import torch

from ..bitstream.container import decode_file
from ..model.exact_render import render_payload
from ..model.frames import dihedral


def decode_bytes(data: bytes) -> torch.Tensor:
    """A .lottery file's bytes -> uint8 image (3, H, W) in the picture's own orientation."""
    payload = decode_file(data)
    pixels = render_payload(payload)
    return dihedral(pixels, payload.frame, inverse=True).contiguous() if payload.frame else pixels
