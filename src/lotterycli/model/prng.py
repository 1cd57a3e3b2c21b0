"""A portable seeded generator for the frozen random synthesis weights.

Why our own: torch's and numpy's generators are implementation details that may change between
versions; the decoder must regenerate the exact weights from the seed stored in the file, on any
machine, forever. SplitMix64 in Python integers is tiny, fast enough for a few thousand weights
and fully specified by this file.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1


def splitmix64(seed: int, count: int) -> list[int]:
    """`count` 64-bit outputs of SplitMix64 started from `seed` (mod 2**64)."""
    state = seed & _MASK64
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        out.append(z ^ (z >> 31))
    return out


def uniform_odd_integers(seed: int, count: int, bits: int = 13) -> list[int]:
    """Odd integers uniform in [-(2**bits - 1), 2**bits - 1]: symmetric, never zero.

    Each uses the top `bits` bits of one SplitMix64 output: u in [0, 2**bits) -> 2u + 1 - 2**bits.
    """
    return [2 * (z >> (64 - bits)) + 1 - (1 << bits) for z in splitmix64(seed, count)]
