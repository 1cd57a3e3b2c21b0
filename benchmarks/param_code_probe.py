"""How short the small networks' integers could be coded: today's per-tensor adaptive contexts
against contexts on neighbouring magnitudes and a parametric code per tensor.

    python -m benchmarks.param_code_probe DIR/*.lottery

Prints the mean bytes per file of each coding of the ARM, upsampling and ModNet integers (ideal
code lengths under the range coder's adaptive contexts, the order k that codes each module
shortest), and the tensors' empirical zero-order entropy (no model cost) for scale.
"""

from __future__ import annotations

import math
import sys
from collections import Counter

from lotterycli.bitstream import param_coding as pc
from lotterycli.bitstream.container import decode_file
from lotterycli.bitstream.rangecoder import Context, bit_cost
from lotterycli.model.architecture import MODULE_NAMES, module_layout


def _row_length(shape) -> int:
    n = 1
    for s in shape[1:]:
        n *= s
    return n if len(shape) > 1 else 1 << 30


def _magnitude_class(v: int) -> int:
    return 0 if v == 0 else (1 if abs(v) <= 2 else 2)


def _context_set(name: str, i: int, shape, vals) -> int:
    """Which set of zero/prefix contexts value i of a tensor uses, for each variant."""
    row = _row_length(shape)
    if name == "previous in row":
        return 0 if i % row == 0 else _magnitude_class(vals[i - 1])
    if name == "value above":
        return 0 if len(shape) != 2 or i < shape[1] else _magnitude_class(vals[i - shape[1]])
    if name == "column mean":
        if len(shape) != 2 or i < shape[1]:
            return 0
        col = [abs(vals[j]) for j in range(i % shape[1], i, shape[1])]
        m = sum(col) / len(col)
        return 0 if m < 0.5 else (1 if m < 2 else 2)
    return 0


VARIANTS = ("today", "previous in row", "value above", "column mean")


def coded_bits(values: list[int], shapes, k: int, variant: str) -> float:
    """Ideal bits of `values` under today's binarisation (param_coding) with the variant's contexts."""
    bits, sign, suffix, start = 0.0, Context(), {}, 0

    def code(ctx: Context, b: int) -> None:
        nonlocal bits
        bits += bit_cost(ctx.p0(), b)
        ctx.update(b)

    for shape in shapes:
        n = math.prod(shape)
        sets = [(Context(), [Context() for _ in range(24)]) for _ in range(3)]
        vals = values[start:start + n]
        start += n
        for i, v in enumerate(vals):
            zero, prefix = sets[_context_set(variant, i, shape, vals)]
            code(zero, int(v != 0))
            if v == 0:
                continue
            code(sign, int(v < 0))
            x = abs(v) - 1 + (1 << k)
            nb = x.bit_length() - 1
            c = nb - k
            for j in range(c + 1):
                code(prefix[min(j, 23)], int(j < c))
            for j in range(nb):
                b = (x >> (nb - 1 - j)) & 1
                if j < 2:
                    code(suffix.setdefault((c, j), Context()), b)
                else:
                    bits += 1.0
    return bits


def geometric_bits(values: list[int], shapes) -> float:
    """A two-sided geometric code per tensor, its parameter on a 48-value grid (5.6 bits each)."""
    grid = [2 ** (i / 4) for i in range(-8, 40)]
    bits, start = 0.0, 0
    for shape in shapes:
        n = math.prod(shape)
        t = values[start:start + n]
        start += n
        best = math.inf
        for m in grid:
            th = m / (1 + m)
            c0, lt = math.log2((1 - th) / (1 + th)), math.log2(th)
            best = min(best, -sum(c0 + abs(v) * lt for v in t))
        bits += best + math.log2(len(grid))
    return bits


def main() -> None:
    files = sys.argv[1:]
    if not files:
        sys.exit(__doc__)
    totals = {v: 0.0 for v in (*VARIANTS, "geometric per tensor", "entropy (no model cost)")}
    for f in files:
        payload = decode_file(open(f, "rb").read())
        for name in MODULE_NAMES:
            layout = module_layout(name, payload.architecture)
            values = list(pc.module_code(payload.modules[name], name, layout)[0].values)
            shapes = [s for _, s in layout]
            for v in VARIANTS:
                totals[v] += min(coded_bits(values, shapes, k, v) for k in range(6)) / 8
            totals["geometric per tensor"] += geometric_bits(values, shapes) / 8
            start = 0
            for shape in shapes:
                n = math.prod(shape)
                counts = Counter(values[start:start + n])
                start += n
                totals["entropy (no model cost)"] += -sum(c * math.log2(c / n) for c in counts.values()) / 8
    print(f"{len(files)} files; networks' bytes per file (ideal code lengths):")
    for v, b in totals.items():
        print(f"  {v:26s} {b / len(files):7.1f}")


if __name__ == "__main__":
    main()
