"""Lossless coding of the binary synthesis mask (True = weight kept), in the network section.

What the stream holds (see docs/format.md): the count of ones `k` minus the count the header's
mask ratio implies, as a signed integer (`param_coding`'s binarisation at order 0: one bit for
every file the encoder writes, whose count is the implied one), then, unless the mask is constant
(k == 0 or k == n), the n bits, each coded at the probability that the remaining weights give:
p(0) = zeros left / weights left. That codes the mask in log2 C(n, k) bits, the least any code
that knows k can spend, plus the arithmetic coder's rounding (well under a byte for 1,627 bits).

No torch: masks are lists of 0/1 here; `container` converts.
"""

from __future__ import annotations

import math

from ..errors import LotteryError
from .param_coding import get_values, put_values
from .rangecoder import PROB_BITS, Decoder, Encoder, clamp_p0


def expected_ones(n: int, ratio_units: int) -> int:
    """Weights a top-k mask keeps at the header's mask ratio (1/10000 units), in integers:
    n - round(ratio * n), as `synthesis.topk_mask` keeps (halves round up)."""
    return n - (ratio_units * n + 5000) // 10000


def _p0(zeros_left: int, left: int) -> int:
    return clamp_p0((zeros_left << PROB_BITS) // left)


def put_mask(enc: Encoder, bits: list[int], ratio_units: int) -> None:
    """Code a mask of n = len(bits) bits; n is not stored (the decoder knows it)."""
    n = len(bits)
    n_ones = sum(bits)
    put_values(enc, [n_ones - expected_ones(n, ratio_units)], 0, [1])
    if n_ones in (0, n):
        return
    zeros = n - n_ones
    for i, b in enumerate(bits):
        enc.bit(_p0(zeros, n - i), b)
        zeros -= 1 - b


def get_mask(dec: Decoder, n: int, ratio_units: int) -> list[int]:
    """Inverse of `put_mask` for a known length n and the same `ratio_units`."""
    (delta,) = get_values(dec, 1, 0, [1])
    n_ones = expected_ones(n, ratio_units) + delta
    if not 0 <= n_ones <= n:
        raise LotteryError(f"corrupted .lottery file: the mask claims {n_ones} kept weights of {n}")
    if n_ones in (0, n):
        return [int(n_ones == n)] * n
    zeros = n - n_ones
    bits = [0] * n
    for i in range(n):
        b = dec.bit(_p0(zeros, n - i))
        if (b and zeros == n - i) or (not b and zeros == 0):  # more ones or zeros than the count
            raise LotteryError("corrupted .lottery file: the mask does not match its count")
        bits[i] = b
        zeros -= 1 - b
    return bits


def mask_bits(n: int, n_ones: int) -> float:
    """log2 C(n, n_ones): the mask's code length in bits, whatever its pattern."""
    return (math.lgamma(n + 1) - math.lgamma(n_ones + 1) - math.lgamma(n - n_ones + 1)) / math.log(2)

