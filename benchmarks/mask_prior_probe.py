"""Experiment: how far a fitted mask is from the one the fit started from, and what coding it
against that start would cost.

    python -m benchmarks.mask_prior_probe FILE.lottery [FILE.lottery ...]

The mask scores start at |W0| over each layer's bound (`model.synthesis.MaskedSynthesis`), which a
decoder could compute from the seed. For each masked file: the share of mask bits equal to the
initial top-k mask (chance is r^2 + (1 - r)^2 at ratio r), today's cost (log2 C(n, k) bits), and
the ideal adaptive code length of the bits ordered by initial score with one binary context per
rank bin (16 and 32 bins).
"""

from __future__ import annotations

import argparse
import math


def rank_bin_bytes(bits: list[int], bins: int) -> float:
    """Adaptive (Krichevsky-Trofimov) code length in bytes, one context per bin of consecutive bits."""
    n, total = len(bits), 0.0
    for b in range(bins):
        counts = [0.5, 0.5]
        for x in bits[b * n // bins:(b + 1) * n // bins]:
            total -= math.log2(counts[x] / (counts[0] + counts[1]))
            counts[x] += 1
    return total / 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    import torch

    from lotterycli.bitstream.container import decode_file
    from lotterycli.bitstream.mask_coding import mask_bits
    from lotterycli.model.synthesis import random_weights, topk_mask

    for path in sorted(args.files):
        with open(path, "rb") as fh:
            p = decode_file(fh.read())
        if p.mask_ratio == 0:
            print(f"{path}: no mask")
            continue
        weights = random_weights(p.architecture, p.seed)
        bounds = torch.cat([w.abs().max().expand(w.numel()) for w in weights])
        initial = torch.cat([w.reshape(-1) for w in weights]).abs() / bounds
        mask = p.mask.bool()
        agree = (mask == topk_mask(initial, p.mask_ratio)).float().mean().item()
        chance = p.mask_ratio**2 + (1 - p.mask_ratio) ** 2
        ordered = mask[torch.argsort(initial, descending=True, stable=True)].int().tolist()
        now = mask_bits(mask.numel(), int(mask.sum())) / 8
        print(f"{path}: ratio {p.mask_ratio:g}, agree {agree:.3f} (chance {chance:.3f}), now {now:.0f} B, "
              f"rank contexts 16 bins {rank_bin_bytes(ordered, 16):.0f} B, 32 bins {rank_bin_bytes(ordered, 32):.0f} B")


if __name__ == "__main__":
    main()
