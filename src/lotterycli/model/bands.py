"""Which images are fitted in bands of rows, and how tall the bands are (no torch here: the memory
check sizes a fit before torch is imported)."""

from __future__ import annotations

BANDS_ABOVE_PIXELS = 1 << 21  # larger images are rendered and fitted in bands of rows
BAND_PIXELS = 1 << 19  # pixels per band (about 2 GB of a fit step's intermediates on a CPU)
MIN_BAND_ROWS = 16


def fit_band_rows(height: int, width: int) -> int:
    """Rows per band for an image of this size; 0: one band, the whole image.

    Why bands: a fit step keeps ~4 KB per pixel of intermediates for its backward pass (the
    full-resolution upsampled latents, ModNet, synthesis and ARM activations), 48 GB for a
    12-megapixel photograph. Fitted a band of rows at a time, with the gradients summed, it keeps
    one band's. A function of the size alone, so a file does not depend on the machine's memory;
    images up to BANDS_ABOVE_PIXELS (1920x1080 included) are fitted whole, as before.
    """
    if height * width <= BANDS_ABOVE_PIXELS:
        return 0
    rows = max(MIN_BAND_ROWS, BAND_PIXELS // width)
    return 0 if rows >= height else rows


def share_rows(sizes: list[tuple[int, int]], parts: int) -> list[list[tuple[int, int, int]]]:
    """Rows of grids of `sizes` (rows, columns) shared out among `parts` in order, each part about
    the same number of values: per part a list of (grid index, first row, end row).

    Why: a fitting step split between threads gives each the same share of the rate's work
    (`fitting.loop`); a grid is cut between rows wherever a share ends. A function of the sizes
    alone, so the split, and the step's float sums, do not depend on the machine.
    """
    total = sum(h * w for h, w in sizes)
    ends = [total * (i + 1) // parts for i in range(parts)]  # the count of values part i ends at
    shares: list[list[tuple[int, int, int]]] = [[] for _ in range(parts)]
    part, filled = 0, 0
    for index, (h, w) in enumerate(sizes):
        row = 0
        while row < h:
            while part < parts - 1 and filled >= ends[part]:
                part += 1
            end = h if part == parts - 1 else min(h, row - (filled - ends[part]) // w)  # ceil
            shares[part].append((index, row, end))
            filled += (end - row) * w
            row = end
    return shares
