"""Where a decode's time goes: file parsing and the latent wavefront loop, then each rendering part.

    python benchmarks/decode_profile.py FILE.lottery [--threads 2] [--repeats 5]

Wraps the decoder's functions with timers (the latent loop `entropy._decode_values`, upsampling,
ModNet's per-pixel and 3x3 parts, synthesis) and prints one line per decode after a warm-up.
Run it on a quiet machine; docs/tuning.md (session 13) quotes it.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import torch

    from lotterycli.bitstream import container
    from lotterycli.codec import entropy
    from lotterycli.codec import model as model_module

    torch.set_num_threads(args.threads)
    data = Path(args.file).read_bytes()
    spent: dict[str, float] = {}

    def timed(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
            return out

        setattr(owner, name, wrapper)

    timed(entropy, "_decode_values", "latent loop")
    timed(model_module, "upsampling_exact", "upsampling")
    timed(model_module, "modnet_exact_pointwise", "modnet 1x1")
    timed(model_module, "modnet_exact_residual", "modnet 3x3")
    timed(model_module, "synthesis_exact", "synthesis")
    for run in range(args.repeats + 1):
        spent.clear()
        t0 = time.perf_counter()
        payload = container.decode_file(data)
        t1 = time.perf_counter()
        model_module.decode_payload(payload)
        t2 = time.perf_counter()
        if run:  # the first decode warms up tables and the allocator
            parts = ", ".join(f"{k} {v:.3f}" for k, v in spent.items())
            print(f"total {t2 - t0:.3f} s = file {t1 - t0:.3f} + render {t2 - t1:.3f}; {parts}")


if __name__ == "__main__":
    main()
