"""Lossless coding of the binary synthesis mask (True = weight kept).

Section layout (see docs/format.md): the count of ones `k` as a zigzag varint of k minus the count
the header's mask ratio implies (one byte for every file the encoder writes), then, unless the
mask is constant (k == 0 or k == n), the words of a constriction `queue.RangeEncoder` (uint32,
little-endian) that codes every bit i.i.d. under `Bernoulli(p = k / n, perfect=False)`. The
probability is a correctly rounded float64 division of two integers stored in the file, so the
encoder and decoder build the same model. Size is n * H_b(k / n) bits plus under 32 bits of
range-coder termination and the count.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import LotteryError
from .varint import decode_varint, encode_varint


def expected_ones(n: int, ratio_units: int) -> int:
    """Weights a top-k mask keeps at the header's mask ratio (1/10000 units), in integers:
    n - round(ratio * n), as `synthesis.topk_mask` keeps (halves round up)."""
    return n - (ratio_units * n + 5000) // 10000


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(z: int) -> int:
    return z >> 1 if not z & 1 else -((z + 1) >> 1)


def _model(n_ones: int, n: int):
    import constriction

    return constriction.stream.model.Bernoulli(n_ones / n, perfect=False)


def encode_mask(mask: torch.Tensor, ratio_units: int) -> bytes:
    """Code a 1-D bool mask. The length n is not stored (the decoder knows it); the count of ones
    is stored relative to what the header's mask ratio (`ratio_units`, 1/10000) implies."""
    bits = mask.detach().to("cpu").reshape(-1).to(torch.bool).numpy()
    n = int(bits.size)
    n_ones = int(bits.sum())
    if n >= 1 << 32:
        raise ValueError("mask too large")
    head = encode_varint(_zigzag(n_ones - expected_ones(n, ratio_units)))
    if n_ones == 0 or n_ones == n:
        return head
    import constriction

    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(bits.astype(np.int32), _model(n_ones, n))
    return head + enc.get_compressed().astype("<u4").tobytes()


def decode_mask(data: bytes, n: int, ratio_units: int) -> torch.Tensor:
    """Inverse of `encode_mask` for a known length n and the same `ratio_units`; LotteryError on bad data."""
    z, pos = decode_varint(data, 0, "mask count", 2 * n)
    n_ones = expected_ones(n, ratio_units) + _unzigzag(z)
    if n_ones < 0:
        raise LotteryError("corrupted .lottery file: mask count is negative")
    body = bytes(data[pos:])
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



def mask_bits(mask: torch.Tensor, ratio_units: int) -> int:
    """Exact size in bits of the mask section."""
    return 8 * len(encode_mask(mask, ratio_units))


def binary_entropy_bits(n: int, n_ones: int) -> float:
    """n * H_b(n_ones / n): the ideal cost of the mask bits under the stored model."""
    if n_ones in (0, n):
        return 0.0
    p = n_ones / n
    return -n * (p * math.log2(p) + (1 - p) * math.log2(1 - p))
