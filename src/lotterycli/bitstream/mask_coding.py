"""Lossless coding of the binary synthesis mask (True = weight kept).

Section layout (see docs/format.md): u32 little-endian count of ones `k`, then, unless the mask
is constant (k == 0 or k == n), the words of a constriction `queue.RangeEncoder` (uint32,
little-endian) that codes every bit i.i.d. under `Bernoulli(p = k / n, perfect=False)`. The
probability is a correctly rounded float64 division of two integers stored in the file, so the
encoder and decoder build the same model. Size is n * H_b(k / n) bits plus under 32 bits of
range-coder termination and the 4-byte count.
"""

from __future__ import annotations

import struct

import numpy as np
import torch

from ..errors import LotteryError

_COUNT = struct.Struct("<I")


def _model(n_ones: int, n: int):
    import constriction

    return constriction.stream.model.Bernoulli(n_ones / n, perfect=False)


def encode_mask(mask: torch.Tensor) -> bytes:
    """Code a 1-D bool mask. The length n is not stored (the decoder knows it)."""
    bits = mask.detach().to("cpu").reshape(-1).to(torch.bool).numpy()
    n = int(bits.size)
    n_ones = int(bits.sum())
    if n >= 1 << 32:
        raise ValueError("mask too large")
    head = _COUNT.pack(n_ones)
    if n_ones == 0 or n_ones == n:
        return head
    import constriction

    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(bits.astype(np.int32), _model(n_ones, n))
    return head + enc.get_compressed().astype("<u4").tobytes()


def decode_mask(data: bytes, n: int) -> torch.Tensor:
    """Inverse of `encode_mask` for a known length n; LotteryError on bad data."""
    if len(data) < _COUNT.size:
        raise LotteryError("corrupted .lottery file: mask section is truncated")
    (n_ones,) = _COUNT.unpack_from(data, 0)
    body = bytes(data[_COUNT.size :])
    if n_ones > n:
        raise LotteryError(f"corrupted .lottery file: mask has {n_ones} ones for {n} weights")
    if n_ones == 0 or n_ones == n:
        if body:
            raise LotteryError("corrupted .lottery file: trailing data in the mask section")
        return torch.full((n,), n_ones == n, dtype=torch.bool)
    if not body or len(body) % 4:
        raise LotteryError("corrupted .lottery file: mask section has a bad length")
    import constriction

    words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
        bits = dec.decode(_model(n_ones, n), n)
    except Exception as exc:  # constriction reports invalid data with its own exception types
        raise LotteryError(f"corrupted .lottery file: mask section cannot be decoded ({exc})") from None
    bits = np.asarray(bits)
    if int(bits.sum()) != n_ones:
        raise LotteryError("corrupted .lottery file: mask does not match its stored count")
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(bits.astype(np.int32), _model(n_ones, n))
    if enc.get_compressed().astype("<u4").tobytes() != body:
        raise LotteryError("corrupted .lottery file: mask section is not canonical")
    return torch.from_numpy(bits.astype(np.bool_))


def mask_bits(mask: torch.Tensor) -> int:
    """Exact size in bits of the mask section."""
    return 8 * len(encode_mask(mask))


def binary_entropy_bits(n: int, n_ones: int) -> float:
    """n * H_b(n_ones / n): the ideal cost of the mask bits under the stored model."""
    import math

    if n_ones in (0, n):
        return 0.0
    p = n_ones / n
    return -n * (p * math.log2(p) + (1 - p) * math.log2(1 - p))
