"""Could a file skip its ARM? A generic ARM, fitted to other images' latents, against each file's own.

A file's ARM costs 100-480 bytes (at lambda 1.6e-2 a third of a 256x256 file's fixed cost), so
an ARM fixed in the format (a prior the decoder knows) would save them wherever it codes the
latents nearly as well. For each image of a folder of .lottery files, an ARM of the shipped width
is fitted to the latents of the *other* images' files (leave one image out, so no file is coded
by an ARM that saw it), then each of the image's files is priced: its latent bytes scaled by the
generic ARM's estimated bits over its own ARM's, with no ARM bytes.

    python -m benchmarks.arm_prior DIR [--hidden 16] [--steps 300] [--sample 300000]

DIR holds files named IMAGE-lam=LAMBDA.lottery, as `python -m benchmarks --keep-files DIR` writes.
Prints one line per file and the change of all files' bytes together (positive: the generic ARM
loses).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from lotterycli.bitstream.container import decode_file
from lotterycli.bitstream.header import read_header
from lotterycli.fitting.adam import Adam
from lotterycli.model.arm import Arm


def load(path: Path) -> dict:
    data = path.read_bytes()
    header, payload = read_header(data), decode_file(data)
    latents = [g.to(torch.float32) for g in payload.latents]
    contexts, values = Arm.fixed_contexts(latents, payload.architecture.arm_band_rows)
    own = Arm.from_quantized(payload.modules["arm"])
    with torch.no_grad():
        own_bits = float(own.rate_bits_from_contexts(contexts, values))
    return {"name": path.name, "image": re.sub(r"-lam=.*", "", path.stem), "contexts": contexts, "values": values,
            "own_bits": own_bits, "own_width": own.hidden, "bytes": len(data),
            "latent_bytes": header.section_sizes["latents"], "arm_bytes": header.section_sizes["arm"]}


def fit_generic(files: list[dict], hidden: int, steps: int, sample: int) -> Arm:
    """An ARM fitted to a random sample of the files' latents (their bits only: it is not stored)."""
    contexts = torch.cat([f["contexts"] for f in files], 1)
    values = torch.cat([f["values"] for f in files])
    pick = torch.randperm(values.numel(), generator=torch.Generator().manual_seed(1))[:sample]
    contexts, values = contexts[:, pick].contiguous(), values[pick].contiguous()
    torch.manual_seed(0)
    arm = Arm(hidden)
    optimizer = Adam(arm.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        arm.rate_bits_from_contexts(contexts, values).backward()
        optimizer.step()
    return arm


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.arm_prior", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--hidden", type=int, default=16, help="width of the generic ARM")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--sample", type=int, default=300_000, help="latents the generic ARM is fitted to")
    args = p.parse_args(argv)
    files = [load(path) for path in sorted(args.folder.glob("*.lottery"))]
    images = sorted({f["image"] for f in files})
    if len(images) < 2:
        p.error(f"{args.folder}: files of at least two images are needed (leave one image out)")
    total_own = total_generic = 0.0
    for image in images:
        arm = fit_generic([f for f in files if f["image"] != image], args.hidden, args.steps, args.sample)
        for f in (f for f in files if f["image"] == image):
            with torch.no_grad():
                ratio = float(arm.rate_bits_from_contexts(f["contexts"], f["values"])) / f["own_bits"]
            own = f["latent_bytes"] + f["arm_bytes"]
            generic = f["latent_bytes"] * ratio
            total_own += f["bytes"]
            total_generic += f["bytes"] - own + generic
            print(f"{f['name']:28s} {f['bytes']:6d} bytes: latents {f['latent_bytes']:5d} + ARM {f['arm_bytes']:4d} "
                  f"(width {f['own_width']:2d}); generic ARM: latents {generic:7.0f} ({100 * (ratio - 1):+5.1f} %), "
                  f"file {100 * (generic - own) / f['bytes']:+5.1f} %", flush=True)
    print(f"all {len(files)} files: {total_own:.0f} -> {total_generic:.0f} bytes "
          f"({100 * (total_generic / total_own - 1):+.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
