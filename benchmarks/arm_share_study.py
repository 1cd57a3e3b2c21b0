"""The ARM's parameter share of kept protocol files, beside what the 8-wide ARM did for them.

    python benchmarks/arm_share_study.py DIR [--log benchmarks/results/tuning-compress-scratcharm-session12.log]

For each `.lottery` file in DIR: the share `compress.arm_parameter_share` computes (estimated
parameter bits / (latent bits + parameter bits) of the file's ARM on the file's latents), the
coded ARM and latent bytes, and, from a `scratch_arm_study.py --log` file, whether the 8-wide ARM
made that file smaller. Sorted by share: the threshold `schedule.arm_scratch_min_share` (the
share below which compression does not try narrower ARMs) comes from this table.
"""
import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--log", help="scratch_arm_study.py log of the same files")
    args = p.parse_args()

    import torch

    from lotterycli.bitstream.container import decode_file
    from lotterycli.bitstream.header import describe
    from lotterycli.codec.model import model_from_payload
    from lotterycli.compress import arm_parameter_share

    outcome = {}
    if args.log:
        for line in Path(args.log).read_text().splitlines():
            m = re.match(r"(\S+\.lottery): .*kept \d+ B \(([-+0-9.]+) %\)", line)
            if m:
                outcome[m.group(1)] = float(m.group(2))
    rows = []
    for path in sorted(Path(args.dir).glob("*.lottery")):
        data = path.read_bytes()
        model = model_from_payload(decode_file(data))
        with torch.no_grad():
            latents = [q.float() for q in model.latents.quantized()]
            bits = float(model.arm.rate_bits(latents, model.arch.arm_band_rows) + model.arm.parameter_bits())
        sizes = describe(data)["sizes"]
        rows.append((arm_parameter_share(model, bits), path.name, sizes["networks"]["arm"], sizes["latents"]))
    print(f"{'file':28} {'share':>6} {'ARM B':>6} {'latent B':>8}  8-wide ARM")
    for share, name, arm_bytes, latent_bytes in sorted(rows):
        change = outcome.get(name)
        verdict = "" if change is None else ("kept, %+.2f %%" % change if change < 0 else "not kept")
        print(f"{name:28} {share:6.3f} {arm_bytes:6d} {latent_bytes:8d}  {verdict}")


if __name__ == "__main__":
    main()
