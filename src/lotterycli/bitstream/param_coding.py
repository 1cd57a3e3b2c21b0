"""Lossless coding of the small networks' integer parameters (ARM, upsampling, ModNet).

Each module is a `QuantizedModule`: int64 tensors whose names and shapes follow from the
`Architecture` alone (`module_layout`), so only the integers are stored. They are concatenated in
canonical order (flattened row-major) and coded with a small, fully specified binary arithmetic
coder (LZMA-style 32-bit range coder, 16-bit probabilities) over an adaptive binarisation:

    v == 0 ?                       one bin, adaptive context "zero" (one per tensor)
    sign                           one bin, adaptive context "sign"
    m = |v| - 1                    Exp-Golomb of order k (k chosen by the encoder, 0..MAX_K):
        prefix c = class index     unary (c ones, then a zero), adaptive context per position
                                   (one set per tensor)
        suffix (c + k bits)        MSB first; the first two bits use adaptive contexts indexed by
                                   (c, bit position), the remaining bits are coded at p = 1/2

Adaptive contexts are count based (Krichevsky-Trofimov): p(0) = (2 n0 + 1) / (2 (n0 + n1) + 2),
quantized to 16 bits, counts halved when they reach 4096. Everything is integer arithmetic, so
encoder and decoder agree bit-exactly on every machine. The upsampling kernel is coded as its
difference from the bicubic kernel when that is shorter. See docs/format.md for the byte layout.
"""

from __future__ import annotations

import torch

from ..errors import LotteryError
from ..model.architecture import Architecture, module_layout
from ..model.payload import QuantizedModule
from ..model.upsampling import initial_kernel_integers

MAX_K = 12  # largest Exp-Golomb order the encoder tries
PREDICTED = 0x80  # first byte of a section: coded as the difference from a prediction
MAX_SUFFIX = 63  # c + k <= 63 (x < 2**64) covers every int64; more in a stream is corruption
_N_PREFIX_CTX = 24  # prefix positions >= this share the last context
_N_SUFFIX_CTX = 2  # leading suffix bits with their own contexts
_COUNT_LIMIT = 4096
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

_PROB_BITS = 16
_PROB_ONE = 1 << _PROB_BITS
_HALF = _PROB_ONE >> 1
_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF


# Layout ------------------------------------------------------------------------------------
def layout_size(name: str, arch: Architecture) -> int:
    """Number of integers stored for module `name`."""
    return sum(_sizes(module_layout(name, arch)))


def _sizes(layout: list[tuple[str, tuple[int, ...]]]) -> list[int]:
    """Number of integers of each tensor of a layout."""
    sizes = []
    for _, shape in layout:
        n = 1
        for s in shape:
            n *= s
        sizes.append(n)
    return sizes


def _flatten(qmodule: QuantizedModule, layout=None) -> list[int]:
    """All integers of a module in canonical order (checked against `layout` when given)."""
    if layout is not None:
        names = list(qmodule.tensors)
        want = [n for n, _ in layout]
        if names != want:
            raise ValueError(f"module parameters {names} do not match the layout {want}")
        for n, shape in layout:
            got = tuple(qmodule.tensors[n].shape)
            if got != tuple(shape):
                raise ValueError(f"parameter {n} has shape {got}, the layout says {tuple(shape)}")
    values: list[int] = []
    for t in qmodule.tensors.values():
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError("quantized parameters must be integer tensors")
        values.extend(t.detach().to("cpu", torch.int64).reshape(-1).tolist())
    return values


# Range coder -------------------------------------------------------------------------------
class _Ctx:
    """Adaptive binary probability: counts of zeros and ones."""

    __slots__ = ("n0", "n1")

    def __init__(self) -> None:
        self.n0 = 0
        self.n1 = 0

    def p0(self) -> int:
        p = ((2 * self.n0 + 1) << _PROB_BITS) // (2 * (self.n0 + self.n1) + 2)
        return 1 if p < 1 else (_PROB_ONE - 1 if p >= _PROB_ONE else p)

    def update(self, bit: int) -> None:
        if bit:
            self.n1 += 1
        else:
            self.n0 += 1
        if self.n0 + self.n1 >= _COUNT_LIMIT:
            self.n0 = (self.n0 + 1) >> 1
            self.n1 = (self.n1 + 1) >> 1


class _Encoder:
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
        bound = (self.range >> _PROB_BITS) * p0
        if bit:
            self.low += bound
            self.range -= bound
        else:
            self.range = bound
        while self.range < _TOP:
            self.range <<= 8
            self._shift_low()

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


class _Decoder:
    MAX_OVERRUN = 4  # the encoder trims at most 4 zero bytes

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
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
            raise LotteryError("corrupted .lottery file: a network section is truncated")
        return 0

    def bit(self, p0: int) -> int:
        if self.code >= self.range:
            raise LotteryError("corrupted .lottery file: invalid network section data")
        bound = (self.range >> _PROB_BITS) * p0
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
        return b

    def check_end(self) -> None:
        if self.pos < len(self.data):
            raise LotteryError("corrupted .lottery file: trailing data in a network section")


class _Model:
    def __init__(self) -> None:
        self.zero = _Ctx()
        self.sign = _Ctx()
        self.prefix = [_Ctx() for _ in range(_N_PREFIX_CTX)]
        self.suffix: dict[tuple[int, int], _Ctx] = {}

    def suffix_ctx(self, c: int, j: int) -> _Ctx:
        key = (c, j)
        ctx = self.suffix.get(key)
        if ctx is None:
            ctx = self.suffix[key] = _Ctx()
        return ctx


def _group_models(n: int, sizes: list[int]) -> list[_Model]:
    """The model each value's zero flag and prefix use: a fresh one per tensor (`sizes`); the sign
    and suffix contexts stay shared."""
    if sum(sizes) != n:
        raise ValueError(f"tensor sizes {sizes} do not add up to {n} values")
    models = []
    for size in sizes:
        models += [_Model()] * size
    return models


def _encode_values(values: list[int], k: int, sizes: list[int]) -> bytes:
    enc = _Encoder()
    model = _Model()  # sign and suffix contexts; zero flag and prefix come from `own`
    for v, own in zip(values, _group_models(len(values), sizes)):
        ctx = own.zero
        b = 1 if v != 0 else 0
        enc.bit(ctx.p0(), b)
        ctx.update(b)
        if not b:
            continue
        ctx = model.sign
        b = 1 if v < 0 else 0
        enc.bit(ctx.p0(), b)
        ctx.update(b)
        x = (v if v > 0 else -v) - 1 + (1 << k)
        n_bits = x.bit_length() - 1  # suffix length = c + k
        c = n_bits - k
        if n_bits > MAX_SUFFIX:
            raise ValueError(f"parameter value {v} is too large to store")
        for i in range(c + 1):
            ctx = own.prefix[i if i < _N_PREFIX_CTX else _N_PREFIX_CTX - 1]
            b = 1 if i < c else 0
            enc.bit(ctx.p0(), b)
            ctx.update(b)
        for j in range(n_bits):
            b = (x >> (n_bits - 1 - j)) & 1
            if j < _N_SUFFIX_CTX:
                ctx = model.suffix_ctx(c, j)
                enc.bit(ctx.p0(), b)
                ctx.update(b)
            else:
                enc.bit(_HALF, b)
    return enc.finish()


def _decode_values(data: bytes, n: int, k: int, sizes: list[int]) -> list[int]:
    dec = _Decoder(data)
    model = _Model()
    values = [0] * n
    for idx, own in enumerate(_group_models(n, sizes)):
        ctx = own.zero
        b = dec.bit(ctx.p0())
        ctx.update(b)
        if not b:
            continue
        ctx = model.sign
        neg = dec.bit(ctx.p0())
        ctx.update(neg)
        c = 0
        while True:
            ctx = own.prefix[c if c < _N_PREFIX_CTX else _N_PREFIX_CTX - 1]
            b = dec.bit(ctx.p0())
            ctx.update(b)
            if not b:
                break
            c += 1
            if c + k > MAX_SUFFIX:
                raise LotteryError("corrupted .lottery file: invalid network section data")
        n_bits = c + k
        x = 1
        for j in range(n_bits):
            if j < _N_SUFFIX_CTX:
                ctx = model.suffix_ctx(c, j)
                b = dec.bit(ctx.p0())
                ctx.update(b)
            else:
                b = dec.bit(_HALF)
            x = (x << 1) | b
        mag = x - (1 << k) + 1
        v = -mag if neg else mag
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise LotteryError("corrupted .lottery file: network parameter beyond int64")
        values[idx] = v
    dec.check_end()
    return values


# Public API --------------------------------------------------------------------------------
def encode_values(values: list[int], sizes: list[int]) -> bytes:
    """Code a list of integers: one byte k, then the range-coded stream.

    k is the best Exp-Golomb order among up to five around log2(mean |v|) (0..MAX_K). The values
    are tensors of `sizes`, each with its own zero-flag and prefix contexts (biases and weights
    differ in how many zeros and how large).
    """
    values = [int(v) for v in values]
    if any(v >= (1 << 63) or v < -(1 << 63) for v in values):
        raise ValueError("parameter values must fit in int64")
    if not values:
        return bytes([0])
    best = None
    # The adaptive contexts make the order matter little: try a window around log2(mean |v|).
    mean_abs = sum(abs(v) for v in values) // len(values)
    centre = min(MAX_K, max(0, mean_abs.bit_length() - 1))
    for k in range(max(0, centre - 2), min(MAX_K, centre + 2) + 1):
        coded = bytes([k]) + _encode_values(values, k, sizes)
        if best is None or len(coded) < len(best):
            best = coded
    return best


def decode_values(data: bytes, n: int, sizes: list[int]) -> list[int]:
    """Inverse of `encode_values` for a known count `n` (and the same `sizes`); LotteryError on bad data."""
    if len(data) < 1:
        raise LotteryError("corrupted .lottery file: empty network section")
    k = data[0]
    if k > MAX_K:
        raise LotteryError(f"corrupted .lottery file: invalid Exp-Golomb order {k} in a network section")
    body = bytes(data[1:])
    values = _decode_values(body, n, k, sizes)
    # Only the canonical stream is accepted (catches trailing or altered bytes that the
    # arithmetic decoder would silently absorb).
    if _encode_values(values, k, sizes) != body:
        raise LotteryError("corrupted .lottery file: invalid network section data")
    return values


def _prediction(name: str, shifts: dict[str, int], layout) -> list[int] | None:
    """What is subtracted before coding: the upsampling kernel's initial (bicubic) value at its
    step; None for the other modules (their random initial values are not worth predicting)."""
    if name != "upsampling":
        return None
    (tensor, shape), = layout
    return list(initial_kernel_integers(shape[-1], int(shifts[tensor])))


def encode_module(qmodule: QuantizedModule, name: str, layout=None) -> bytes:
    """Code module `name`'s integers in canonical order (the shifts are stored in the header).

    `layout` (from `module_layout`) is checked against the tensors when given. The upsampling
    kernel is coded as its difference from the bicubic kernel when that is shorter (the first
    byte's PREDICTED bit says so).
    """
    values = _flatten(qmodule, layout)
    layout = layout if layout is not None else [(t, tuple(v.shape)) for t, v in qmodule.tensors.items()]
    plain = encode_values(values, _sizes(layout))
    pred = _prediction(name, qmodule.tensor_shifts(), layout)
    if pred is None:
        return plain
    try:
        predicted = encode_values([v - p for v, p in zip(values, pred)], _sizes(layout))
    except ValueError:  # a difference beyond int64 (extreme shifts): only the plain coding exists
        return plain
    if len(predicted) < len(plain):  # a kernel far from bicubic codes better as it is
        return bytes([predicted[0] | PREDICTED]) + predicted[1:]
    return plain


def decode_module(data: bytes, shifts: dict[str, int], layout: list[tuple[str, tuple[int, ...]]],
                  name: str) -> QuantizedModule:
    """Rebuild module `name` as a `QuantizedModule` from its section bytes, per-tensor shifts and
    layout; the module's `shift` is the first tensor's, with the others that differ in `shifts`."""
    sizes = _sizes(layout)
    original = bytes(data)
    pred = _prediction(name, shifts, layout)
    predicted = bool(data) and bool(data[0] & PREDICTED)
    if predicted:
        if pred is None:
            raise LotteryError(f"corrupted .lottery file: the {name} section claims a prediction")
        data = bytes([data[0] & ~PREDICTED]) + bytes(data[1:])
    values = decode_values(data, sum(sizes), sizes)
    if predicted:
        values = [v + p for v, p in zip(values, pred)]
        if any(not _INT64_MIN <= v <= _INT64_MAX for v in values):
            raise LotteryError(f"corrupted .lottery file: a {name} parameter is beyond int64")
    tensors: dict[str, torch.Tensor] = {}
    start = 0
    for (tensor, shape), n in zip(layout, sizes):
        tensors[tensor] = torch.tensor(values[start : start + n], dtype=torch.int64).reshape(shape)
        start += n
    base = int(shifts[layout[0][0]]) if layout else 0
    overrides = {k: int(v) for k, v in shifts.items() if int(v) != base}
    module = QuantizedModule(shift=base, tensors=tensors, shifts=overrides)
    # Only the encoder's own coding is accepted: its order k, and for the kernel the shorter of
    # the plain and predicted codings (one byte string per payload).
    if encode_module(module, name, layout) != original:
        raise LotteryError(f"corrupted .lottery file: the {name} section is not canonical")
    return module


def module_bits(qmodule: QuantizedModule, name: str) -> int:
    """Exact size in bits of this module's section in a .lottery file (a multiple of 8).

    The shifts and the section length live in the header and are not included.
    """
    return 8 * len(encode_module(qmodule, name))
