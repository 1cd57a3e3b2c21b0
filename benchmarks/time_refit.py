"""Time of the ARM refit (`compress.refit_arm`) on the latents of an existing .lottery file.

    python benchmarks/time_refit.py FILE.lottery [--steps 300] [--lr 0.005] [--threads 2]

The encoder refits the ARM of its float model right after the fit; here the ARM starts from the
file's dequantized one, so the time is the same (same grids, same steps) while the bits saved are
only indicative. Prints the seconds and the objective (latent bits + ARM parameter estimate)
before and after.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lotterycli.bitstream.container import decode_file
    from lotterycli.codec.model import model_from_payload
    from lotterycli.compress import refit_arm

    payload = decode_file(Path(args.file).read_bytes())
    model = model_from_payload(payload)
    before = refit_arm(model, 0, args.lr)
    start = time.perf_counter()
    after = refit_arm(model, args.steps, args.lr)
    seconds = time.perf_counter() - start
    print(f"{payload.width}x{payload.height}, {args.steps} steps, {args.threads} thread(s): {seconds:.1f} s; "
          f"objective {before:.0f} -> {after:.0f} bits ({100 * (after / before - 1):+.1f} %)")


if __name__ == "__main__":
    main()
