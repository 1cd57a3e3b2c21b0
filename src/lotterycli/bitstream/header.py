""".lottery header: layout constants, limits, parsing and `describe`, without torch.

Why a module of its own: `lottery info` reads only the header, and importing torch costs seconds
on a small machine; nothing here (nor in what it imports) needs it. `container` builds on it to
write files and decode their sections. Byte layout in docs/format.md.

Every problem with the bytes being read (wrong magic, other version, truncation, limits, CRC)
raises `LotteryError` with a one-line message, before anything large is allocated.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

from ..codec.architecture import MAX_ARM_HIDDEN, MODULE_NAMES, Architecture, module_layout
from ..errors import LotteryError

MAGIC = b"LOTR"
FORMAT_VERSION = 4  # what encode_file writes
READ_VERSIONS = (1, 2, 3, 4)

# Limits checked before anything is allocated (also enforced when writing).
MAX_SIDE = 16384
MAX_PIXELS = 64 * 1024 * 1024
MAX_LEVELS = 8  # the latent coder handles at most 8 grids
MAX_WIDTH = 512
MAX_KERNEL = 64
MAX_ABS_SHIFT = 64
MAX_LATENT_GAIN = 65536.0
CHANNELS = 3

SECTION_NAMES = ("mask",) + tuple(MODULE_NAMES) + ("latents",)
_CRC = struct.Struct("<I")
# Version 1: fixed-size fields.
# magic, version, height, width, channels, seed, mask ratio (1/10000 units)
_FIXED = struct.Struct("<4sBHHBQH")
# n_levels, latent_gain, upsample_kernel, modnet_hidden, modnet_out, synth_hidden x3, arm_hidden
_ARCH = struct.Struct("<BfBHHHHHH")
_SHIFTS = struct.Struct("<" + "b" * len(MODULE_NAMES))
_LENGTHS = struct.Struct("<" + "I" * len(SECTION_NAMES))
HEADER_SIZE_V1 = _FIXED.size + _ARCH.size + _SHIFTS.size + _LENGTHS.size  # 61 bytes
_GAIN = struct.Struct("<f")
_ARCH_FIELDS = (
    "n_levels",
    "latent_gain",
    "upsample_kernel",
    "modnet_hidden",
    "modnet_out",
    "synth_hidden",
    "arm_hidden",
    "arm_band_rows",
)
_RATIO_SCALE = 10000

# Version 4: architectures named by one number (part of the format: never edit an entry, only
# append). 1 = every shipped task config's sizes (configs/*.yaml), 2 = the reference defaults
# (METHOD.md), 3 = 1 with the 8-wide ARM compression may pick (schedule.arm_scratch_widths);
# arm_band_rows is stored on its own, since it follows the image height.
ARCH_PRESETS: dict[int, Architecture] = {
    1: Architecture(n_levels=7, latent_gain=16.0, upsample_kernel=8, modnet_hidden=16, modnet_out=3,
                    synth_hidden=(32, 24, 16), arm_hidden=16),
    2: Architecture(n_levels=7, latent_gain=16.0, upsample_kernel=8, modnet_hidden=48, modnet_out=3,
                    synth_hidden=(32, 24, 16), arm_hidden=24),
    3: Architecture(n_levels=7, latent_gain=16.0, upsample_kernel=8, modnet_hidden=16, modnet_out=3,
                    synth_hidden=(32, 24, 16), arm_hidden=8),  # 1 with compression's narrower ARM
}
V4_ARCH_BITS = 0x03  # layout byte: architecture preset (0 = the fields follow)
V4_NIBBLE_SHIFTS = 0x04  # layout byte: every shift is 0..15, two per byte


@dataclass(frozen=True)
class Header:
    version: int
    height: int
    width: int
    channels: int
    seed: int
    mask_ratio: float
    architecture: Architecture
    shifts: dict[str, dict[str, int]]  # per module (keys MODULE_NAMES), per tensor in layout order
    section_sizes: dict[str, int]  # bytes per section, keys SECTION_NAMES
    header_size: int  # header bytes (not counting the 4-byte CRC trailer)

    @property
    def total_size(self) -> int:
        return self.header_size + sum(self.section_sizes.values()) + _CRC.size


# Validation ----------------------------------------------------------------------------------
def _check_image(height: int, width: int) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise LotteryError(f"image size {width}x{height} is outside the supported 1..{MAX_SIDE} pixels per side")
    if height * width > MAX_PIXELS:
        raise LotteryError(f"image size {width}x{height} exceeds the supported {MAX_PIXELS} pixels")


def check_architecture(arch: Architecture) -> None:
    """Refuse sizes the format or the exact decoder cannot handle (LotteryError naming the field)."""
    if not 1 <= arch.n_levels <= MAX_LEVELS:
        raise LotteryError(f"n_levels {arch.n_levels} is outside the supported range 1..{MAX_LEVELS}")
    if not 1 <= arch.upsample_kernel <= MAX_KERNEL:
        raise LotteryError(f"upsample_kernel {arch.upsample_kernel} is outside the supported range 1..{MAX_KERNEL}")
    if len(arch.synth_hidden) != 3:
        raise LotteryError(f"synth_hidden must have 3 widths, got {len(arch.synth_hidden)}")
    widths = {
        "modnet_hidden": arch.modnet_hidden,
        "modnet_out": arch.modnet_out,
        "synth_hidden": None,
        "arm_hidden": arch.arm_hidden,
    }
    for name, w in widths.items():
        for v in arch.synth_hidden if w is None else (w,):
            if not 1 <= v <= MAX_WIDTH:
                raise LotteryError(f"{name} width {v} is outside the supported range 1..{MAX_WIDTH}")
    if arch.arm_hidden > MAX_ARM_HIDDEN:  # exactness bound of the fixed-point ARM
        raise LotteryError(f"arm_hidden {arch.arm_hidden} is outside the supported range 1..{MAX_ARM_HIDDEN}")
    if not 0 <= arch.arm_band_rows <= MAX_SIDE:
        raise LotteryError(f"arm_band_rows {arch.arm_band_rows} is outside the supported range 0..{MAX_SIDE}")
    g = arch.latent_gain
    if not (math.isfinite(g) and 0.0 < g <= MAX_LATENT_GAIN):
        raise LotteryError(f"latent_gain {g} is outside the supported range (0, {MAX_LATENT_GAIN:g}]")


def _corrupt(msg: str) -> LotteryError:
    return LotteryError(f"corrupted .lottery file: {msg}")


# Reading -------------------------------------------------------------------------------------
class _Cursor:
    """Reads a v2, v3 or v4 header front to back; running out of bytes is reported as truncation."""

    def __init__(self, data: bytes, n_file: int) -> None:
        self.data, self.pos, self.n_file = data, 0, n_file

    def _truncated(self) -> LotteryError:
        return LotteryError(f"truncated .lottery file ({self.n_file} bytes, it ends inside the header)")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self._truncated()
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self, what: str, limit: int) -> int:
        """An unsigned LEB128 value <= limit, in its shortest form (anything else is corruption)."""
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= 70:
                raise _corrupt(f"{what} is not a valid variable-length integer")
        if (b == 0 and shift > 7) or value > limit:
            raise _corrupt(f"{what} {value} is out of range" if value > limit else f"{what} is not in its shortest form")
        return value


def _read_v1(data: bytes, n: int) -> tuple:
    if n < HEADER_SIZE_V1 + _CRC.size:
        raise LotteryError(f"truncated .lottery file ({n} bytes, the header alone is {HEADER_SIZE_V1 + _CRC.size})")
    _, _, height, width, channels, seed, ratio = _FIXED.unpack_from(data, 0)
    off = _FIXED.size
    n_levels, gain, kernel, m_hid, m_out, h1, h2, h3, a_hid = _ARCH.unpack_from(data, off)
    off += _ARCH.size
    module_shifts = dict(zip(MODULE_NAMES, _SHIFTS.unpack_from(data, off)))
    off += _SHIFTS.size
    sizes = dict(zip(SECTION_NAMES, _LENGTHS.unpack_from(data, off)))
    arch = _architecture(height, width, n_levels, gain, kernel, m_hid, m_out, (h1, h2, h3), a_hid)
    if channels != CHANNELS:
        raise _corrupt(f"{channels} channels (only {CHANNELS} are supported)")
    shifts = {
        name: {t: module_shifts[name] for t, _ in module_layout(name, arch)} for name in MODULE_NAMES
    }
    return height, width, seed, ratio, arch, shifts, sizes, HEADER_SIZE_V1


def _read_v2(data: bytes, n: int, version: int = 2) -> tuple:
    """Versions 2, 3 (adds the band height after arm_hidden) and 4 (a layout byte: architecture
    preset and nibble shifts)."""
    c = _Cursor(data, n)
    c.take(5)  # magic and version, checked by the caller
    height = c.varint("height", MAX_SIDE)
    width = c.varint("width", MAX_SIDE)
    seed = c.varint("seed", (1 << 64) - 1)
    ratio = c.varint("mask ratio", _RATIO_SCALE)
    layout = c.byte() if version >= 4 else 0
    if layout & ~(V4_ARCH_BITS | V4_NIBBLE_SHIFTS):
        raise _corrupt(f"unknown header layout flags 0x{layout:02x}")
    preset = layout & V4_ARCH_BITS
    if preset:
        if preset not in ARCH_PRESETS:
            raise _corrupt(f"unknown architecture preset {preset}")
        p = ARCH_PRESETS[preset]
        n_levels, gain, kernel, m_hid, m_out = p.n_levels, p.latent_gain, p.upsample_kernel, p.modnet_hidden, p.modnet_out
        synth, a_hid = p.synth_hidden, p.arm_hidden
    else:
        n_levels = c.byte()
        (gain,) = _GAIN.unpack(c.take(_GAIN.size))
        kernel = c.byte()
        m_hid = c.varint("modnet_hidden", MAX_WIDTH)
        m_out = c.varint("modnet_out", MAX_WIDTH)
        synth = tuple(c.varint("synth_hidden", MAX_WIDTH) for _ in range(3))
        a_hid = c.varint("arm_hidden", MAX_WIDTH)
    bands = c.varint("arm_band_rows", MAX_SIDE) if version >= 3 else 0
    arch = _architecture(height, width, n_levels, gain, kernel, m_hid, m_out, synth, a_hid, bands)
    names = [(name, t) for name in MODULE_NAMES for t, _ in module_layout(name, arch)]
    if layout & V4_NIBBLE_SHIFTS:
        packed = c.take((len(names) + 1) // 2)
        values = [packed[i // 2] >> (4 * (i % 2)) & 0x0F for i in range(len(names))]
        if len(names) % 2 and packed[-1] >> 4:
            raise _corrupt("the shifts' padding nibble is not zero")
    else:
        values = [b - 256 if b >= 128 else b for b in c.take(len(names))]
    shifts: dict[str, dict[str, int]] = {name: {} for name in MODULE_NAMES}
    for (name, t), value in zip(names, values):
        shifts[name][t] = value
    sizes = {name: c.varint(f"{name} section length", 1 << 32) for name in SECTION_NAMES}
    return height, width, seed, ratio, arch, shifts, sizes, c.pos


def _architecture(height, width, n_levels, gain, kernel, m_hid, m_out, synth, a_hid, bands=0) -> Architecture:
    try:
        _check_image(height, width)
        arch = Architecture(
            n_levels=n_levels,
            latent_gain=float(gain),
            upsample_kernel=kernel,
            modnet_hidden=m_hid,
            modnet_out=m_out,
            synth_hidden=tuple(synth),
            arm_hidden=a_hid,
            arm_band_rows=bands,
        )
        check_architecture(arch)
    except LotteryError as exc:
        raise _corrupt(str(exc)) from None
    return arch


def read_header(data: bytes, check_crc: bool = True) -> Header:
    """Parse and validate the header (limits, section lengths vs file size, CRC)."""
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    n = len(data)
    head = bytes(data[:4])
    if head != MAGIC[: len(head)]:
        raise LotteryError("not a .lottery file (bad magic bytes)")
    if n < 5:
        raise LotteryError(f"truncated .lottery file ({n} bytes)")
    version = data[4]
    if version not in READ_VERSIONS:
        known = ", ".join(str(v) for v in READ_VERSIONS[:-1]) + f" and {READ_VERSIONS[-1]}"
        raise LotteryError(f"unsupported .lottery format version {version} (this lottery reads {known})")
    if version == 1:
        height, width, seed, ratio, arch, shifts, sizes, header_size = _read_v1(data, n)  # v2-v4 below
    else:
        height, width, seed, ratio, arch, shifts, sizes, header_size = _read_v2(data, n, version)

    if ratio > _RATIO_SCALE:
        raise _corrupt(f"mask ratio {ratio / _RATIO_SCALE} is above 1")
    for name, per_tensor in shifts.items():
        for t, s in per_tensor.items():
            if abs(s) > MAX_ABS_SHIFT:
                raise _corrupt(f"quantization shift {s} of {name}.{t} is out of range")
    if sizes["mask"] < (1 if version >= 4 else 4):
        raise _corrupt("mask section is too short")
    for name in MODULE_NAMES:
        if sizes[name] < 1:
            raise _corrupt(f"{name} section is empty")

    header = Header(
        version=version,
        height=height,
        width=width,
        channels=CHANNELS,
        seed=seed,
        mask_ratio=ratio / _RATIO_SCALE,
        architecture=arch,
        shifts=shifts,
        section_sizes=sizes,
        header_size=header_size,
    )
    expected = header.total_size
    if n < expected:
        raise LotteryError(f"truncated .lottery file ({n} bytes, the header says {expected})")
    if n > expected:
        raise _corrupt(f"{n - expected} unexpected bytes after the end (the header says {expected} bytes)")
    if check_crc:
        (stored,) = _CRC.unpack_from(data, n - _CRC.size)
        if zlib.crc32(data[: n - _CRC.size]) != stored:
            raise _corrupt("checksum mismatch (CRC32)")
    return header


def _compact_shifts(per_tensor: dict[str, int]) -> int | dict[str, int]:
    """One number when every tensor of a module shares its shift, else the per-tensor dict."""
    values = set(per_tensor.values())
    return next(iter(values)) if len(values) == 1 else dict(per_tensor)


def describe(data: bytes) -> dict:
    """Header fields and a size breakdown in bytes (header includes the 4-byte CRC trailer).

    header + mask + sum(networks.values()) + latents == total.
    """
    h = read_header(data)
    s = h.section_sizes
    total = h.total_size
    return {
        "format_version": h.version,
        "height": h.height,
        "width": h.width,
        "channels": h.channels,
        "seed": h.seed,
        "mask_ratio": h.mask_ratio,
        "architecture": h.architecture.to_dict(),
        "shifts": {name: _compact_shifts(per_tensor) for name, per_tensor in h.shifts.items()},
        "sizes": {
            "header": h.header_size + _CRC.size,
            "mask": s["mask"],
            "networks": {name: s[name] for name in MODULE_NAMES},
            "latents": s["latents"],
            "total": total,
        },
        "bpp": 8.0 * total / (h.height * h.width),
    }
