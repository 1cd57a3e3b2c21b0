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
