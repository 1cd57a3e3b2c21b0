"""A large photograph-like test image: the Kodak images tiled row by row, for multi-megapixel runs.

    python -m benchmarks.mosaic OUT.png [--size 3840x3072] [--crop 2048x1536]

Why: the project ships no image above 0.8 megapixels, and an upscaled one is too smooth to
stress a fit. Tiles of 768x512 (portrait images turned a quarter), kodim01 first, repeated until
the width x height canvas is full; `--crop` keeps its top left. docs/design.md ("Freed memory
stays in the heap") times `lottery compress` on the 3840x3072 mosaic and its 2048x1536 crop.
"""

from __future__ import annotations

import argparse

from PIL import Image

from .data import kodak_dir

TILE_W, TILE_H = 768, 512


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def mosaic(width: int, height: int) -> Image.Image:
    """The width x height mosaic of kodim01..kodim24, repeated as needed."""
    files = sorted(kodak_dir().glob("kodim*.png"))
    if not files:
        raise SystemExit(f"no kodim*.png in {kodak_dir()}")
    canvas = Image.new("RGB", (width, height))
    k = 0
    for y in range(0, height, TILE_H):
        for x in range(0, width, TILE_W):
            with Image.open(files[k % len(files)]) as im:
                tile = im.convert("RGB")
            if tile.size != (TILE_W, TILE_H):
                tile = tile.rotate(90, expand=True)
            canvas.paste(tile, (x, y))
            k += 1
    return canvas


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--size", type=_size, default=(3840, 3072), help="WIDTHxHEIGHT of the mosaic")
    ap.add_argument("--crop", type=_size, default=None, help="keep the top left WIDTHxHEIGHT")
    args = ap.parse_args(argv)
    image = mosaic(*args.size)
    if args.crop:
        image = image.crop((0, 0, *args.crop))
    image.save(args.out)
    print(f"wrote {args.out}: {image.width}x{image.height}")


if __name__ == "__main__":
    main()
