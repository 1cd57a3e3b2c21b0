"""How much a per-layer mask code could save: each synthesis layer's kept fraction in .lottery files.

    python benchmarks/mask_stats.py FILE.lottery [FILE ...]

The mask section codes all weights with one global ratio (docs/format.md, 2.1); coding each layer
with its own ratio would cost sum over layers of n_l * H_b(k_l / n_l) bits instead of n * H_b(k / n).
Prints both (bytes, without the coder's termination and the count) and each layer's kept count.
"""
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def entropy_bytes(kept: int, n: int) -> float:
    """n * H_b(kept / n) / 8."""
    if kept in (0, n):
        return 0.0
    p = kept / n
    return -n * (p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8


def main() -> None:
    import torch

    from lotterycli.bitstream.container import decode_file
    from lotterycli.codec.synthesis import split_layers

    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        payload = decode_file(Path(path).read_bytes())
        mask = payload.mask.to(torch.float64)
        layers = [(int(m.sum()), m.numel()) for m in split_layers(mask, payload.architecture)]
        whole = entropy_bytes(int(mask.sum()), mask.numel())
        per_layer = sum(entropy_bytes(k, n) for k, n in layers)
        kept = ", ".join(f"{k}/{n} ({100 * k / n:.0f} %)" for k, n in layers)
        print(f"{path}: one ratio {whole:.1f} B, per layer {per_layer:.1f} B; kept per layer: {kept}")


if __name__ == "__main__":
    main()
