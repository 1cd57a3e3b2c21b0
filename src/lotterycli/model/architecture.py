"""The model's sizes: one frozen dataclass, stored in every .lottery header, and their limits.

No torch here: the header reader (`lottery info`) needs these names and must stay fast.
The sizes a task uses come from its YAML config (`configs/`); `ARCH_PRESETS` in
`bitstream.header` names the common ones so that a file spends no bytes on them.
"""

from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass

from ..errors import LotteryError

MODULE_NAMES = ("arm", "upsampling", "modnet")  # the small learned networks, in file order
ARM_CONTEXT_SIZE = 24  # causal neighbours fed to the ARM (fixed by the method)

# What the encoder can produce, with margin. The decoder's cost grows with every size, so a
# file asking for more is refused before anything is allocated (docs/format.md, "Limits").
MAX_LEVELS = 8  # latent grids (the latent coder handles at most 8)
MAX_KERNEL = 16  # upsampling kernel side (even)
MAX_MODNET_HIDDEN = 64
MAX_MODNET_OUT = 8
MAX_SYNTH_WIDTH = 64
MAX_ARM_HIDDEN = 32  # also the exactness bound of the fixed-point ARM (sums of <= 32 products < 2**53)
MAX_BAND_ROWS = 16384
MAX_LATENT_GAIN = 256.0


@dataclass(frozen=True)
class Architecture:
    n_levels: int  # latent grids at 1, 1/2, ..., 1/2**(n_levels-1) resolution
    latent_gain: float  # latents are multiplied by this before rounding to integers
    upsample_kernel: int  # side of the learned transposed-convolution kernel (stride 2)
    modnet_hidden: int  # channels of ModNet's U0
    modnet_out: int  # channels of U1, U2, U3
    synth_hidden: tuple[int, int, int]  # widths of the three hidden synthesis layers
    arm_hidden: int  # ARM hidden width (its context is always 24 neighbours)
    arm_band_rows: int  # ARM contexts restart every this many latent rows (0 = never)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["synth_hidden"] = list(self.synth_hidden)
        return d

    # Derived sizes -------------------------------------------------------------------------
    @property
    def modulation_channels(self) -> tuple[int, int, int]:
        """Channels of M1 = [U3,U2], M2 = [U3,U2,U1], M3 = [U3,U2,U1,U0]."""
        o = self.modnet_out
        return (2 * o, 3 * o, 3 * o + self.modnet_hidden)

    @property
    def synth_layer_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of the four bias-free synthesis layers, in order."""
        h1, h2, h3 = self.synth_hidden
        m1, m2, m3 = self.modulation_channels
        return [(h1, 2), (h2, h1 + m1), (h3, h2 + m2), (3, h3 + m3)]

    @property
    def n_synth_weights(self) -> int:
        return sum(o * i for o, i in self.synth_layer_shapes)


def check_architecture(arch: Architecture) -> None:
    """Refuse sizes outside the limits above (LotteryError naming the field)."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise LotteryError(what)

    def integer(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    need(integer(arch.n_levels) and 1 <= arch.n_levels <= MAX_LEVELS,
         f"n_levels {arch.n_levels} is outside the supported range 1..{MAX_LEVELS}")
    k = arch.upsample_kernel
    need(integer(k) and 2 <= k <= MAX_KERNEL and k % 2 == 0,
         f"upsample_kernel {k} must be an even size from 2 to {MAX_KERNEL}")
    need(integer(arch.modnet_hidden) and 1 <= arch.modnet_hidden <= MAX_MODNET_HIDDEN,
         f"modnet_hidden {arch.modnet_hidden} is outside the supported range 1..{MAX_MODNET_HIDDEN}")
    need(integer(arch.modnet_out) and 1 <= arch.modnet_out <= MAX_MODNET_OUT,
         f"modnet_out {arch.modnet_out} is outside the supported range 1..{MAX_MODNET_OUT}")
    need(isinstance(arch.synth_hidden, tuple) and len(arch.synth_hidden) == 3,
         f"synth_hidden must have 3 widths, got {arch.synth_hidden!r}")
    for w in arch.synth_hidden:
        need(integer(w) and 1 <= w <= MAX_SYNTH_WIDTH, f"synth_hidden width {w} is outside the supported range 1..{MAX_SYNTH_WIDTH}")
    need(integer(arch.arm_hidden) and 1 <= arch.arm_hidden <= MAX_ARM_HIDDEN,
         f"arm_hidden {arch.arm_hidden} is outside the supported range 1..{MAX_ARM_HIDDEN}")
    need(integer(arch.arm_band_rows) and 0 <= arch.arm_band_rows <= MAX_BAND_ROWS,
         f"arm_band_rows {arch.arm_band_rows} is outside the supported range 0..{MAX_BAND_ROWS}")
    g = arch.latent_gain
    need(isinstance(g, float) and math.isfinite(g) and 0.0 < g <= MAX_LATENT_GAIN,
         f"latent_gain {g!r} is outside the supported range (0, {MAX_LATENT_GAIN:g}]")
    need(struct.unpack("<f", struct.pack("<f", g))[0] == g,
         f"latent_gain {g!r} is not exactly representable as a 32-bit float (the file stores it so)")


def module_layout(name: str, arch: Architecture) -> list[tuple[str, tuple[int, ...]]]:
    """Canonical (parameter name, shape) list of one learned module, in storage order."""
    if name == "arm":
        h = arch.arm_hidden
        return [
            ("fc1.weight", (h, ARM_CONTEXT_SIZE)),
            ("fc1.bias", (h,)),
            ("fc2.weight", (h, h)),
            ("fc2.bias", (h,)),
            ("fc3.weight", (2, h)),
            ("fc3.bias", (2,)),
        ]
    if name == "upsampling":
        k = arch.upsample_kernel
        return [("kernel", (k, k))]
    if name == "modnet":
        hid, out = arch.modnet_hidden, arch.modnet_out
        return [
            ("u0.weight", (hid, arch.n_levels)),
            ("u0.bias", (hid,)),
            ("u1.weight", (out, hid)),
            ("u1.bias", (out,)),
            ("u2.weight", (out, out, 3, 3)),
            ("u2.bias", (out,)),
            ("u3.weight", (out, out, 3, 3)),
            ("u3.bias", (out,)),
        ]
    raise ValueError(f"unknown module {name!r} (expected one of {MODULE_NAMES})")


def latent_shapes(height: int, width: int, n_levels: int) -> list[tuple[int, int]]:
    """Grid i has ceil(H / 2**i) x ceil(W / 2**i) values."""
    return [(-(-height // (1 << i)), -(-width // (1 << i))) for i in range(n_levels)]


def macs_per_pixel(arch: Architecture, kept_weights: int, height: int, width: int) -> float:
    """Decoder multiply-accumulates per pixel: synthesis (kept weights), ModNet, upsampling, ARM.

    Also what the decoder checks a file's cost against before decoding it."""
    n, hid, out = arch.n_levels, arch.modnet_hidden, arch.modnet_out
    modnet = n * hid + hid * out + 2 * 9 * out * out
    shapes = latent_shapes(height, width, n)
    k = arch.upsample_kernel
    # each transposed-conv output value takes (k/2)**2 taps; level i is upsampled i times
    up = sum((k // 2) ** 2 * sum(shapes[j][0] * shapes[j][1] for j in range(i)) for i in range(1, n))
    a = arch.arm_hidden
    arm_per_latent = ARM_CONTEXT_SIZE * a + a * a + a * 2
    n_latents = sum(h * w for h, w in shapes)
    return kept_weights + modnet + (up + arm_per_latent * n_latents) / (height * width)
