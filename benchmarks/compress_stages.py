"""Wall time of each stage of one `compress_image` call (fit, ARM refit, scratch ARMs, quantization).

    python benchmarks/compress_stages.py IMAGE [--steps 600] [--lambda 0.004] [--threads 2]

Stages are timed from the progress callback (a stage starts with its first report) and around
`quantize_networks`; the last line is encoding the file and decoding it back. Run it on a quiet
machine: docs/tuning.md (session 13) quotes it.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lambda", dest="lam", type=float, default=0.004)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from lotterycli import compress
    from lotterycli.config import load_task_config
    from lotterycli.images import read_image

    torch.set_num_threads(args.threads)
    cfg = load_task_config("compress", overrides={"steps": args.steps, "lambda": args.lam})
    image = read_image(args.image)
    marks: list[tuple[str, float]] = []

    def progress(info) -> None:
        if not marks or marks[-1][0] != info.stage:
            marks.append((info.stage, time.perf_counter()))

    quantize = compress.quantize_networks

    def timed_quantize(*a, **k):
        marks.append(("quantize networks", time.perf_counter()))
        out = quantize(*a, **k)
        marks.append(("encode + decode", time.perf_counter()))
        return out

    compress.quantize_networks = timed_quantize
    start = time.perf_counter()
    result = compress.compress_image(image, cfg, device="cpu", progress=progress)
    end = time.perf_counter()
    print(f"{args.image}: {args.steps} steps, lambda {args.lam}, {args.threads} thread(s): "
          f"{end - start:.1f} s, {result.n_bytes} bytes, {result.psnr:.2f} dB")
    names = ["set-up"] + [name for name, _ in marks]
    times = [start] + [t for _, t in marks] + [end]
    for name, a, b in zip(names, times, times[1:]):
        print(f"  {name:>24}: {b - a:7.1f} s")


if __name__ == "__main__":
    main()
