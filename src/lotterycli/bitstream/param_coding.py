"""Lossless coding of the small networks' integer parameters (ARM, upsampling, ModNet).

Each module is a `QuantizedModule`: int64 tensors whose names and shapes follow from the
`Architecture` alone (`module_layout`), so only the integers are stored. They are taken in
canonical order (flattened row-major) and coded with the binary arithmetic coder of `rangecoder`
over an adaptive binarisation:

    v == 0 ?                       one bin, adaptive context "zero" (one per tensor)
    sign                           one bin, adaptive context "sign"
    m = |v| - 1                    Exp-Golomb of order k (k chosen by the encoder, 0..MAX_K):
        prefix c = class index     unary (c ones, then a zero), adaptive context per position
                                   (one set per tensor)
        suffix (c + k bits)        MSB first; the first two bits use adaptive contexts indexed by
                                   (c, bit position), the remaining bits are coded at p = 1/2

In a file the three modules share one stream with the mask (`network_section`); a module's
order k (4 bits) and, for the upsampling kernel, whether it is coded as its difference from the
bicubic kernel (1 bit) precede its values. `module_bits` prices one module on its own, which is
what the encoder's quantization search compares. See docs/format.md.

No torch at import: `lottery info` decodes the network section to say where its bytes went.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import LotteryError
from .rangecoder import HALF, Context, Decoder, Encoder

if TYPE_CHECKING:
    from ..model.payload import QuantizedModule

MAX_K = 12  # largest Exp-Golomb order the encoder tries
K_BITS = 4  # k is stored in 4 bits: 13..15 are refused
MAX_SUFFIX = 63  # c + k <= 63 (x < 2**64) covers every int64; more in a stream is corruption
PREDICTED_MODULES = ("upsampling",)  # modules that may be coded against a prediction
_N_PREFIX_CTX = 24  # prefix positions >= this share the last context
_N_SUFFIX_CTX = 2  # leading suffix bits with their own contexts
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass(frozen=True)
class ModuleCode:
    """What the stream holds for one module: its order k, whether the values are differences
    from the module's prediction, and the (possibly predicted) integers in canonical order."""

    k: int
    predicted: bool
    values: tuple[int, ...]


# Layout ------------------------------------------------------------------------------------
def layout_size(name: str, arch) -> int:
    """Number of integers stored for module `name`."""
    from ..model.architecture import module_layout

    return sum(tensor_sizes(module_layout(name, arch)))


def tensor_sizes(layout: list[tuple[str, tuple[int, ...]]]) -> list[int]:
    """Number of integers of each tensor of a layout."""
    sizes = []
    for _, shape in layout:
        n = 1
        for s in shape:
            n *= s
        sizes.append(n)
    return sizes


# Binarisation ------------------------------------------------------------------------------
class _Model:
    def __init__(self) -> None:
        self.zero = Context()
        self.sign = Context()
        self.prefix = [Context() for _ in range(_N_PREFIX_CTX)]
        self.suffix: dict[tuple[int, int], Context] = {}

    def suffix_ctx(self, c: int, j: int) -> Context:
        key = (c, j)
        ctx = self.suffix.get(key)
        if ctx is None:
            ctx = self.suffix[key] = Context()
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


def put_values(enc: Encoder, values: list[int] | tuple[int, ...], k: int, sizes: list[int]) -> None:
    """Code integers of tensors of `sizes` at Exp-Golomb order k (fresh contexts)."""
    model = _Model()  # sign and suffix contexts; zero flag and prefix come from `own`
    for v, own in zip(values, _group_models(len(values), sizes)):
        b = 1 if v != 0 else 0
        enc.adaptive(own.zero, b)
        if not b:
            continue
        enc.adaptive(model.sign, 1 if v < 0 else 0)
        x = (v if v > 0 else -v) - 1 + (1 << k)
        n_bits = x.bit_length() - 1  # suffix length = c + k
        c = n_bits - k
        if n_bits > MAX_SUFFIX:
            raise ValueError(f"parameter value {v} is too large to store")
        for i in range(c + 1):
            enc.adaptive(own.prefix[i if i < _N_PREFIX_CTX else _N_PREFIX_CTX - 1], 1 if i < c else 0)
        for j in range(n_bits):
            b = (x >> (n_bits - 1 - j)) & 1
            if j < _N_SUFFIX_CTX:
                enc.adaptive(model.suffix_ctx(c, j), b)
            else:
                enc.bit(HALF, b)


def get_values(dec: Decoder, n: int, k: int, sizes: list[int]) -> list[int]:
    """Inverse of `put_values`; LotteryError on data no encoder writes."""
    model = _Model()
    values = [0] * n
    for idx, own in enumerate(_group_models(n, sizes)):
        if not dec.adaptive(own.zero):
            continue
        neg = dec.adaptive(model.sign)
        c = 0
        while True:
            if not dec.adaptive(own.prefix[c if c < _N_PREFIX_CTX else _N_PREFIX_CTX - 1]):
                break
            c += 1
            if c + k > MAX_SUFFIX:
                raise LotteryError("corrupted .lottery file: invalid network section data")
        n_bits = c + k
        x = 1
        for j in range(n_bits):
            b = dec.adaptive(model.suffix_ctx(c, j)) if j < _N_SUFFIX_CTX else dec.bit(HALF)
            x = (x << 1) | b
        mag = x - (1 << k) + 1
        v = -mag if neg else mag
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise LotteryError("corrupted .lottery file: network parameter beyond int64")
        values[idx] = v
    return values


def put_module(enc: Encoder, code: ModuleCode, sizes: list[int], may_predict: bool) -> None:
    """One module as the network section holds it: k (4 bits), the prediction flag (1 bit, only
    for `PREDICTED_MODULES`), the values."""
    if not 0 <= code.k <= MAX_K:
        raise ValueError(f"Exp-Golomb order {code.k} is outside 0..{MAX_K}")
    if code.predicted and not may_predict:
        raise ValueError("only the upsampling kernel is coded against a prediction")
    enc.bits(code.k, K_BITS)
    if may_predict:
        enc.bit(HALF, int(code.predicted))
    put_values(enc, code.values, code.k, sizes)


def get_module(dec: Decoder, sizes: list[int], may_predict: bool, name: str) -> ModuleCode:
    k = dec.bits(K_BITS)
    if k > MAX_K:
        raise LotteryError(f"corrupted .lottery file: invalid Exp-Golomb order {k} in the {name} network")
    predicted = bool(dec.bit(HALF)) if may_predict else False
    return ModuleCode(k, predicted, tuple(get_values(dec, sum(sizes), k, sizes)))


def _coded_length(values: list[int], k: int, sizes: list[int], may_predict: bool) -> int:
    enc = Encoder()
    put_module(enc, ModuleCode(k, False, tuple(values)), sizes, may_predict)
    return len(enc.finish())


def best_order(values: list[int], sizes: list[int], may_predict: bool = False) -> tuple[int, int]:
    """(k, bytes): the Exp-Golomb order that codes `values` shortest on their own, among up to
    five around log2(mean |v|) (the adaptive contexts make the order matter little)."""
    values = [int(v) for v in values]
    if any(v > _INT64_MAX or v < _INT64_MIN for v in values):
        raise ValueError("parameter values must fit in int64")
    mean_abs = sum(abs(v) for v in values) // max(1, len(values))
    centre = min(MAX_K, max(0, mean_abs.bit_length() - 1))
    best = None
    for k in range(max(0, centre - 2), min(MAX_K, centre + 2) + 1):
        n = _coded_length(values, k, sizes, may_predict)
        if best is None or n < best[1]:
            best = (k, n)
    return best


def estimated_value_bits(values: list[int], k: int) -> Callable[[int], float]:
    """bits(v): an estimate of what one more value v costs among `values` (one tensor) at order k.

    The binarisation's costs under the tensor's own frequencies, held fixed: the zero flag, a
    sign bit, the Exp-Golomb class (prefix) and its c + k suffix bits; frequencies smoothed by one
    half. Why: the encoder's integer refinement (`compression.quantize`) compares hundreds of one-value
    changes, and the adaptive code's exact length (`module_bits`) needs the whole module coded
    again; this ranks the changes, and the refinement keeps its result only if the real length agrees.
    """
    def cls(v: int) -> int:
        return (abs(v) - 1 + (1 << k)).bit_length() - 1 - k

    n, zeros = len(values), sum(1 for v in values if v == 0)
    counts: dict[int, int] = {}
    for v in values:
        if v:
            counts[cls(v)] = counts.get(cls(v), 0) + 1
    top = max(counts, default=0) + 1
    total = (n - zeros) + 0.5 * (top + 1)
    zero_bits = -math.log2((zeros + 0.5) / (n + 1))
    nonzero_bits = -math.log2((n - zeros + 0.5) / (n + 1)) + 1.0  # and the sign
    class_bits = {c: -math.log2((counts.get(c, 0) + 0.5) / total) for c in range(top + 1)}

    def bits(v: int) -> float:
        if v == 0:
            return zero_bits
        c = cls(v)
        return nonzero_bits + class_bits.get(c, class_bits[top]) + c + k

    return bits


# Modules -----------------------------------------------------------------------------------
def _flatten(qmodule: QuantizedModule, layout=None) -> list[int]:
    """All integers of a module in canonical order (checked against `layout` when given)."""
    import torch

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


def _prediction(name: str, shifts: dict[str, int], layout) -> list[int] | None:
    """What is subtracted before coding: the upsampling kernel's initial (bicubic) value at its
    step; None for the other modules (a fitted ARM or ModNet ends far from its random start:
    differences from it code no shorter)."""
    if name not in PREDICTED_MODULES:
        return None
    from ..model.upsampling import initial_kernel_integers

    (tensor, shape), = layout
    return list(initial_kernel_integers(shape[-1], int(shifts[tensor])))


def module_code(qmodule: QuantizedModule, name: str, layout=None) -> tuple[ModuleCode, int]:
    """(code, bytes on its own): how module `name` is written, the shorter of its plain coding
    and, for the upsampling kernel, its difference from the bicubic kernel."""
    values = _flatten(qmodule, layout)
    layout = layout if layout is not None else [(t, tuple(v.shape)) for t, v in qmodule.tensors.items()]
    sizes = tensor_sizes(layout)
    may_predict = name in PREDICTED_MODULES
    k, n = best_order(values, sizes, may_predict)
    best = (ModuleCode(k, False, tuple(values)), n)
    pred = _prediction(name, qmodule.tensor_shifts(), layout)
    if pred is not None:
        diff = [v - p for v, p in zip(values, pred)]
        if all(_INT64_MIN <= d <= _INT64_MAX for d in diff):  # else only the plain coding exists
            k, n = best_order(diff, sizes, may_predict)
            if n < best[1]:  # a kernel far from bicubic codes better as it is
                best = (ModuleCode(k, True, tuple(diff)), n)
    return best


def quantized_module(code: ModuleCode, shifts: dict[str, int], layout, name: str) -> QuantizedModule:
    """Rebuild module `name` from its code, per-tensor shifts and layout; the module's `shift` is
    the first tensor's, with the others that differ in `shifts`. Only the encoder's own choice
    (its order k, and for the kernel the shorter of the plain and predicted codings) is
    accepted, so one payload has one byte string."""
    import torch

    from ..model.payload import QuantizedModule

    sizes = tensor_sizes(layout)
    values = list(code.values)
    if code.predicted:
        pred = _prediction(name, shifts, layout)
        if pred is None:
            raise LotteryError(f"corrupted .lottery file: the {name} network claims a prediction")
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
    if module_code(module, name, layout)[0] != code:
        raise LotteryError(f"corrupted .lottery file: the {name} network is not coded as the encoder codes it")
    return module


def module_bits(qmodule: QuantizedModule, name: str) -> int:
    """Size in bits of module `name` coded on its own (order, flag, values; a multiple of 8):
    what the encoder's quantization search prices. In a file it shares the network section's
    stream, which ends once for all parts. The shifts live in the header and are not included."""
    return 8 * module_code(qmodule, name)[1]
