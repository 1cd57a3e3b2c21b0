"""Put images side by side in one PNG, each with its label above it (the demo's picture).

    python examples/side_by_side.py OUT.png LABEL=IMAGE [LABEL=IMAGE ...]
"""

import sys

from PIL import Image, ImageDraw


def main(out: str, items: list[str]) -> None:
    pairs = [item.split("=", 1) for item in items]
    images = [Image.open(path).convert("RGB") for _, path in pairs]
    height = max(im.height for im in images)
    band = 16
    canvas = Image.new("RGB", (sum(im.width for im in images) + 4 * (len(images) - 1), height + band), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for (label, _), im in zip(pairs, images):
        canvas.paste(im, (x, band))
        draw.text((x + 2, 2), label, fill="black")
        x += im.width + 4
    canvas.save(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
