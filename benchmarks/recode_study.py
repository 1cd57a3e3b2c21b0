"""Kept .lottery files written again in another format version: same payload and pixels, new bytes.

    python benchmarks/recode_study.py DIR [--version 4] [--protocol benchmarks/results/full.json]

DIR holds the files of a protocol run made with `--keep-files DIR` (`<image>-lam=<lambda>.lottery`).
Each file is decoded and encoded again as `--version`; the script checks that both decode to the
same pixels and prints the bytes of every section before and after. With `--protocol` (the run's
results JSON) it also prints the BD-rate of the lottery curve against each codec anchor of that run,
with the files' own sizes and with the re-coded ones (the PSNRs are the run's: the pixels do not
change). A lower bound of what a fit written in that version gains: its encoder also prices the
networks under the new coding when it picks their quantization steps.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable when run as a script


def recode(data: bytes, version: int) -> tuple[bytes, bool]:
    """(the payload written as `version`, whether both files decode to the same pixels)."""
    import torch

    from lotterycli import api
    from lotterycli.bitstream.container import decode_file, encode_file

    new = encode_file(decode_file(data), version=version)
    return new, bool(torch.equal(api.decompress(new), api.decompress(data)))


def main() -> None:
    from lotterycli.bitstream.header import describe

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--version", type=int, default=4)
    p.add_argument("--protocol", type=Path, help="results JSON of the run that wrote the files")
    args = p.parse_args()
    files = sorted(args.dir.glob("*-lam=*.lottery"))
    if not files:
        raise SystemExit(f"no <image>-lam=<lambda>.lottery files in {args.dir}")
    new_bytes: dict[tuple[str, str], int] = {}
    changes = []
    for f in files:
        image, setting = f.stem.split("-", 1)
        data = f.read_bytes()
        new, same = recode(data, args.version)
        if not same:
            raise SystemExit(f"{f.name}: the re-coded file decodes to other pixels")
        a, b = describe(data), describe(new)
        parts = ["header", "mask", "arm", "upsampling", "modnet", "latents"]

        def sizes(d: dict) -> list[int]:
            s = d["sizes"]
            return [s["header"], s["mask"], *(s["networks"][m] for m in ("arm", "upsampling", "modnet")), s["latents"]]

        delta = ", ".join(f"{n} {x}->{y}" for n, x, y in zip(parts, sizes(a), sizes(b)) if x != y)
        change = len(new) / len(data) - 1
        changes.append(change)
        new_bytes[(image, setting)] = len(new)
        print(f"{f.name}: v{a['format_version']} {len(data)} B -> v{b['format_version']} {len(new)} B "
              f"({100 * change:+.2f} %; {delta or 'no section changed'}); same pixels")
    print(f"{len(files)} files: bytes {100 * sum(changes) / len(changes):+.2f} % on average "
          f"({100 * min(changes):+.2f} to {100 * max(changes):+.2f} %)")
    if args.protocol:
        old_sizes = {(f.stem.split("-", 1)[0], f.stem.split("-", 1)[1]): f.stat().st_size for f in files}
        for line in bd_lines(args.protocol, [("files as written", old_sizes),
                                             (f"re-coded as v{args.version}", new_bytes)], check=old_sizes):
            print(line)


def bd_lines(protocol: Path, curves: list[tuple[str, dict]], check: dict | None = None) -> list[str]:
    """One line per (label, {(image, setting): bytes}): BD-rates against every codec anchor of the
    protocol run, its lottery points with these sizes (same PSNR: the pixels do not change).
    `check`: the files' own sizes, which must be the ones the run measured."""
    from benchmarks.runner import _bd_table, _curves

    points = json.loads(protocol.read_text())["parts"]["compress"]["points"]
    ours = {(q["image"], q["setting"]): q for q in points if q["method"] == "lottery"}
    images = sorted({img for img, _ in curves[0][1]})
    keys = [k for k in ours if k[0] in images]
    if not all(k in sizes for k in keys for _, sizes in curves):
        raise SystemExit("the protocol has lottery points whose file is not in DIR")
    if check is not None and any(ours[k]["n_bytes"] != check[k] for k in keys):
        raise SystemExit("the files in DIR are not the ones this protocol run measured (sizes differ)")
    anchors = [q for q in points if q["method"] != "lottery" and q["image"] in images]
    out = []
    for label, sizes in curves:
        pts = anchors + [dict(ours[k], bpp=ours[k]["bpp"] * sizes[k] / ours[k]["n_bytes"]) for k in keys]
        table = _bd_table(pts, _curves(pts))
        bds = ", ".join(f"{t['anchor']} {t['bd_rate_percent']:+.1f} %" for t in table if t["bd_rate_percent"] is not None)
        out.append(f"{label}: BD-rate vs {bds} ({len(images)} images)")
    return out

if __name__ == "__main__":
    main()
