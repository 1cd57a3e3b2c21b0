"""A small, fully specified binary arithmetic coder, in integers only (no torch).

LZMA-style 32-bit range coder with 16-bit probabilities: the probability of a 0 is an integer
`p0` in 1..65535 out of 65536, given by the caller for every bit, either fixed or from an
adaptive `Context`. Everything is integer arithmetic, so encoder and decoder agree bit-exactly on
every machine. It codes the file's network section (`network_section`: the mask and the three
small networks in one stream). Why not constriction, which codes the latents: one stream of
binary decisions with adaptive contexts is what those parts need, and a stream of our own ends
on a byte, not on a 32-bit word.

Adaptive contexts are count based (Krichevsky-Trofimov): p(0) = (2 n0 + 1) / (2 (n0 + n1) + 2),
quantized to 16 bits, counts halved when they reach 4096.
"""

from __future__ import annotations

import math

from ..errors import LotteryError

PROB_BITS = 16
PROB_ONE = 1 << PROB_BITS
HALF = PROB_ONE >> 1
_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF
_COUNT_LIMIT = 4096


def clamp_p0(p0: int) -> int:
    """A probability the coder can use: 1..PROB_ONE - 1."""
    return 1 if p0 < 1 else (PROB_ONE - 1 if p0 >= PROB_ONE else p0)


def bit_cost(p0: int, bit: int) -> float:
    """Ideal code length in bits of `bit` coded at probability p0 / 65536 of a zero."""
    return -math.log2((PROB_ONE - p0 if bit else p0) / PROB_ONE)


class Context:
    """Adaptive binary probability: counts of zeros and ones."""

    __slots__ = ("n0", "n1")

    def __init__(self) -> None:
        self.n0 = 0
        self.n1 = 0

    def p0(self) -> int:
        return clamp_p0(((2 * self.n0 + 1) << PROB_BITS) // (2 * (self.n0 + self.n1) + 2))

    def update(self, bit: int) -> None:
        if bit:
            self.n1 += 1
        else:
            self.n0 += 1
        if self.n0 + self.n1 >= _COUNT_LIMIT:
            self.n0 = (self.n0 + 1) >> 1
            self.n1 = (self.n1 + 1) >> 1


class Encoder:
    """Bits in, bytes out (`finish`)."""

    def __init__(self) -> None:
        self.low = 0
        self.range = _MASK32
        self.cache = 0
        self.cache_size = 1
        self.out = bytearray()

    def _shift_low(self) -> None:
        low = self.low
        if low < 0xFF000000 or low > _MASK32:
            carry = low >> 32
            temp = self.cache
            while True:
                self.out.append((temp + carry) & 0xFF)
                temp = 0xFF
                self.cache_size -= 1
                if self.cache_size == 0:
                    break
            self.cache = (low >> 24) & 0xFF
        self.cache_size += 1
        self.low = (low & 0x00FFFFFF) << 8

    def bit(self, p0: int, bit: int) -> None:
        bound = (self.range >> PROB_BITS) * p0
        if bit:
            self.low += bound
            self.range -= bound
        else:
            self.range = bound
        while self.range < _TOP:
            self.range <<= 8
            self._shift_low()

    def adaptive(self, ctx: Context, bit: int) -> None:
        """Code `bit` under `ctx`, then update it."""
        self.bit(ctx.p0(), bit)
        ctx.update(bit)

    def bits(self, value: int, n: int) -> None:
        """`n` raw bits of `value`, most significant first, each at p = 1/2."""
        for j in range(n - 1, -1, -1):
            self.bit(HALF, (value >> j) & 1)

    def finish(self) -> bytes:
        # Pick the value in [low, low + range) with the most trailing zero bits, so that the flush
        # ends in zero bytes, which are dropped (the decoder reads zeros past the end).
        low, rng = self.low, self.range
        for shift in range(32, -1, -1):
            step = 1 << shift
            v = -(-low // step) * step
            if v < low + rng:
                self.low = v
                break
        n_before = len(self.out)
        for _ in range(5):
            self._shift_low()
        out = self.out
        # Bytes written by the flush may be trimmed if zero; never the data bytes before them.
        keep = len(out)
        while keep > max(n_before, len(out) - 4) and out[keep - 1] == 0:
            keep -= 1
        # The first byte is always 0 (initial cache, no carry is possible before it): omit it.
        return bytes(out[1:keep])


class Decoder:
    """Bytes in, bits out; `cost` adds up the ideal code length of what was read (for `info`)."""

    MAX_OVERRUN = 4  # the encoder trims at most 4 zero bytes

    def __init__(self, data: bytes, what: str = "network section") -> None:
        self.data = data
        self.what = what
        self.pos = 0
        self.cost = 0.0
        code = 0
        for _ in range(4):
            code = (code << 8) | self._byte()
        self.code = code
        self.range = _MASK32

    def _byte(self) -> int:
        pos = self.pos
        self.pos = pos + 1
        if pos < len(self.data):
            return self.data[pos]
        if pos - len(self.data) >= self.MAX_OVERRUN:
            raise LotteryError(f"corrupted .lottery file: the {self.what} is truncated")
        return 0

    def bit(self, p0: int) -> int:
        if self.code >= self.range:
            raise LotteryError(f"corrupted .lottery file: invalid {self.what} data")
        bound = (self.range >> PROB_BITS) * p0
        if self.code < bound:
            self.range = bound
            b = 0
        else:
            self.code -= bound
            self.range -= bound
            b = 1
        while self.range < _TOP:
            self.range <<= 8
            self.code = ((self.code << 8) | self._byte()) & _MASK32
        self.cost += bit_cost(p0, b)
        return b

    def adaptive(self, ctx: Context) -> int:
        b = self.bit(ctx.p0())
        ctx.update(b)
        return b

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit(HALF)
        return value

    def check_end(self) -> None:
        """The stream must end where the encoder's did (no bytes beyond what was read)."""
        if self.pos < len(self.data):
            raise LotteryError(f"corrupted .lottery file: trailing data in the {self.what}")
