"""The C heap keeps the memory torch frees for the next step instead of returning it to the OS.

Why: a fitting step allocates and frees the same large tensors thousands of times. glibc's
malloc serves large blocks with fresh `mmap`s and trims the top of its heap when they are freed,
so every step touches new pages again: a 256x256 compression on one thread took ~4,000 minor
page faults per step, and ~10 % of its time (`lottery compress`, 200 steps, one thread,
alternating with `GLIBC_TUNABLES= lottery compress ...`, which leaves malloc as shipped:
29.1-30.5 s with the heap kept against 32.3-32.8 s, the same file). The
memory kept is what the fit peaks at anyway. Only glibc is tuned (Linux); a user's own MALLOC_*
or GLIBC_TUNABLES settings are left as they are.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below it come from the heap
TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top is returned to the OS above this
TOP_PAD = 64 << 20  # the heap grows in steps of at least this

_USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says; False where it does not apply."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS (glibc's malloc_trim; nothing elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trim(0)


def resident_bytes() -> int | None:
    """This process's resident memory (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class GrowthLimit:
    """Releases the heap's free pages when the resident memory has grown by a quarter (at least
    256 MB) over what it was at the first `check`, or at the first after the last release.

    Why: glibc reused too little of what a fit freed, with malloc tuned as above or as
    shipped, and the resident memory grew step after step: a fit in bands of rows (`model.bands`)
    allocates tensors of many sizes every step (each band's, each latent level's); when fits
    drew a different number of pixels every step (before `fitting.losses.draw_columns`), a
    whole 256x256 compression of 5,000 steps reached 2.7 GB resident, nearly all of it free
    memory the heap kept, and a fixed count still grows slowly. Releasing the free pages after
    every step bounds it but makes every step fault its pages in again; releasing them only when the
    memory has grown bounds it for the cost of reading /proc once a step (the fitting loop
    checks after every step of every fit). The limit is set again after each release: set
    from the first step alone, it lay below what later steps need (at 768x512 the first step
    ends with less resident than the next ones), and most steps released their pages only to
    fault them in again.
    """

    def __init__(self) -> None:
        self.limit: int | None = None

    def _margin(self, rss: int) -> int:
        return max(rss // 4, 256 << 20)

    def check(self) -> None:
        rss = resident_bytes()
        if rss is None:
            return
        if self.limit is None:
            self.limit = rss + self._margin(rss)
        elif rss > self.limit:
            release_free_memory()
            # the next check sets the limit again: a step's own peak, faulted in anew, plus the
            # margin (the memory right after the release is below what any step needs)
            self.limit = None
