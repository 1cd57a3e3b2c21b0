"""Unsigned LEB128 integers (7 bits per byte, low bits first, high bit = more bytes follow): the
variable-length fields of the .lottery header, of the mask count and of the latent section.

One reader for all of them: a value must be in its shortest form and within the caller's limit,
anything else is corruption (so every file has exactly one byte string).
"""

from __future__ import annotations

from ..errors import LotteryError


def encode_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"a varint holds non-negative integers, got {n}")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(data: bytes, pos: int, what: str, limit: int) -> tuple[int, int]:
    """(value, position after it) of the varint at data[pos]; LotteryError naming `what` when it
    runs past the end, is not in its shortest form or exceeds `limit`."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise LotteryError(f"truncated .lottery file: it ends inside the {what}")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
        if shift > limit.bit_length() + 7:
            raise LotteryError(f"corrupted .lottery file: the {what} is out of range")
    if b == 0 and shift > 7:
        raise LotteryError(f"corrupted .lottery file: the {what} is not in its shortest form")
    if value > limit:
        raise LotteryError(f"corrupted .lottery file: the {what} {value} is out of range (at most {limit})")
    return value, pos
