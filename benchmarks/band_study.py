"""What ARM bands (format v3, `arm_band_rows`) cost in latent bits and save in decoding time.

    python benchmarks/band_study.py FILE.lottery [FILE ...] [--bands 0,256,128,64] [--repeats 3]

For each file, its decoded latents are coded again under its own ARM with each band height, as the
encoder would code them: latent bytes (the real coder's output) against the file's own band
height, the decoder's serial steps (wavefronts), and the median time of decoding the latent
section alone (`entropy.decode_latents`, which checks that the values come back). The ARM is not
refitted, so the bit cost is an upper bound of what a fit that knows the bands pays. Timing runs
the band heights in turn, `--repeats` rounds, so that a machine's drift touches all of them alike.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable when run as a script


def main() -> None:
    import torch

    from lotterycli.bitstream.container import decode_file, describe
    from lotterycli.codec import entropy
    from lotterycli.codec.arm import ArmExact

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help=".lottery files")
    p.add_argument("--bands", default="0,256,128,64", help="band heights to try (0 = no bands)")
    p.add_argument("--repeats", type=int, default=3, help="timing rounds (0: no timing)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bands = [int(b) for b in args.bands.split(",")]
    for path in args.files:
        data = Path(path).read_bytes()
        payload = decode_file(data)
        arm = ArmExact(payload.modules["arm"])
        shapes = [tuple(g.shape) for g in payload.latents]
        active = [i for i, g in enumerate(payload.latents) if bool(g.any())]
        coded = {b: entropy.encode_latents(payload.latents, arm, band_rows=b) for b in bands}
        own = describe(data)["sizes"]["latents"]
        times: dict[int, list[float]] = {b: [] for b in bands}
        for _ in range(args.repeats):
            for b in bands:
                start = time.perf_counter()
                out = entropy.decode_latents(coded[b], shapes, arm, band_rows=b)
                times[b].append(time.perf_counter() - start)
                assert all(torch.equal(x, y) for x, y in zip(out, payload.latents))
        print(f"{path}: {payload.width}x{payload.height}, band height in the file "
              f"{payload.architecture.arm_band_rows}, latent section {own} bytes")
        for b in bands:
            steps = entropy._plan(shapes, active, b).bounds.shape[0] - 1
            line = (f"  bands {b:>5}: latents {len(coded[b]):>7} bytes ({100 * (len(coded[b]) / own - 1):+.2f} %), "
                    f"{steps} wavefronts")
            if times[b]:
                line += f", latent decode median {statistics.median(times[b]):.3f} s (min {min(times[b]):.3f})"
            print(line)


if __name__ == "__main__":
    main()
