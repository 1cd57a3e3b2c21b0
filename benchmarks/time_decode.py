"""Decode time of a 768x512 .lottery file in a warm process, per torch thread count.

    python benchmarks/time_decode.py [FILE.lottery] [--repeats 7] [--threads 1,2]

Without FILE, kodim01 (../shared/data/kodak) is compressed with 100 steps first (as the speed part
of `python -m benchmarks` does). Prints the median and minimum of the repeats for each thread
count, and checks that every decode gives the same pixels. Run it on a quiet machine.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable when run as a script


def main() -> None:
    import torch

    from lotterycli import api

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", help=".lottery file (default: kodim01 compressed with 100 steps)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", default="1,2")
    args = p.parse_args()
    if args.file:
        data = Path(args.file).read_bytes()
    else:
        from benchmarks.data import load_image

        print("compressing kodim01 (100 steps) ...", file=sys.stderr)
        data = api.compress(load_image("kodim01"), preset="fast", steps=100, seed=0, device="cpu").data
    reference = api.decompress(data)  # warm-up: tables, allocator
    print(f"file: {len(data)} bytes, {reference.shape[2]}x{reference.shape[1]}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            pixels = api.decompress(data)
            times.append(time.perf_counter() - start)
            assert torch.equal(pixels, reference), "decoding is not deterministic"
        print(f"threads {threads}: median {statistics.median(times):.3f} s, min {min(times):.3f} s "
              f"({args.repeats} decodes)")


if __name__ == "__main__":
    main()
