""".lottery header: layout constants, parsing and `describe`, without torch.

Why a module of its own: `lottery info` reads only the header, and importing torch costs seconds
on a small machine; nothing here (nor in what it imports) needs it. `container` builds on it to
write files and decode their sections. Byte layout: docs/format.md.

Every problem with the bytes being read (wrong magic, other version, truncation, limits, CRC)
raises `LotteryError` with a one-line message, before anything large is allocated.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, fields, replace

from ..errors import LotteryError
from ..model.architecture import MODULE_NAMES, Architecture, check_architecture, macs_per_pixel, module_layout
from .varint import decode_varint, encode_varint

MAGIC = b"LOTR"
FORMAT_VERSION = 5  # the only version written and read

MAX_SIDE = 16384  # image side limit of the format (what a decoder accepts is set by its caller)
MAX_PIXELS = 64 * 1024 * 1024
MAX_ABS_SHIFT = 64
MAX_SECTION = 1 << 32
CHANNELS = 3
RATIO_SCALE = 10000  # the mask ratio is stored in 1/10000 units

SECTION_NAMES = ("network", "latents")  # the network section: mask + networks (`network_section`)
MIN_LATENT_SECTION = 3  # grid flags and two escape-stream lengths (`latent_coding`)
CRC = struct.Struct("<I")
GAIN = struct.Struct("<f")

# Architectures named by one number (part of the format: never edit an entry, only append).
# 1 = the shipped task configs' sizes (configs/*.yaml), 2 = the reference sizes of the method
# (docs/method.md), 3 and 4 = 1 with the 8- and 4-wide ARMs compression may pick
# (schedule.arm_scratch_widths).
# arm_band_rows is stored on its own, since it follows the image height.
ARCH_PRESETS: dict[int, Architecture] = {
    1: Architecture(n_levels=7, latent_gain=16.0, upsample_kernel=8, modnet_hidden=16, modnet_out=3,
                    synth_hidden=(32, 24, 16), arm_hidden=16, arm_band_rows=0),
    2: Architecture(n_levels=7, latent_gain=16.0, upsample_kernel=8, modnet_hidden=48, modnet_out=3,
                    synth_hidden=(32, 24, 16), arm_hidden=24, arm_band_rows=0),
    3: Architecture(n_levels=7, latent_gain=16.0, upsample_kernel=8, modnet_hidden=16, modnet_out=3,
                    synth_hidden=(32, 24, 16), arm_hidden=8, arm_band_rows=0),
    4: Architecture(n_levels=7, latent_gain=16.0, upsample_kernel=8, modnet_hidden=16, modnet_out=3,
                    synth_hidden=(32, 24, 16), arm_hidden=4, arm_band_rows=0),
}
# The layout byte after the mask ratio.
LAYOUT_PRESET = 0x03  # architecture preset, low two bits (0 with LAYOUT_PRESET_HIGH clear = the fields follow)
LAYOUT_PRESET_HIGH = 0x80  # the preset's third bit (presets 4-7)
LAYOUT_NIBBLE_SHIFTS = 0x04  # every shift is 0..15, two per byte
LAYOUT_FRAME = 0x38  # the symmetry of the square the model was fitted in (0-7), undone after rendering
LAYOUT_FRAME_SHIFT = 3
LAYOUT_RESTORATION = 0x40  # the model is one member of a restoration ensemble
_ARCH_FIELDS = ("n_levels", "latent_gain", "upsample_kernel", "modnet_hidden", "modnet_out", "synth_hidden",
                "arm_hidden", "arm_band_rows")
assert max(ARCH_PRESETS) <= 7, "the layout byte holds presets 1..7"
assert LAYOUT_PRESET | LAYOUT_PRESET_HIGH | LAYOUT_NIBBLE_SHIFTS | LAYOUT_FRAME | LAYOUT_RESTORATION == 0xFF
assert tuple(f.name for f in fields(Architecture)) == _ARCH_FIELDS, "the header stores these fields in this order"


@dataclass(frozen=True)
class Header:
    height: int  # of the model's render (in its frame)
    width: int
    seed: int
    mask_ratio_units: int  # mask ratio in 1/RATIO_SCALE
    architecture: Architecture
    shifts: dict[str, dict[str, int]]  # per module (keys MODULE_NAMES), per tensor in layout order
    section_sizes: dict[str, int]  # bytes per section, keys SECTION_NAMES (the latents': what is left)
    header_size: int  # header bytes (not counting the 4-byte CRC trailer)
    frame: int = 0
    restoration: bool = False

    @property
    def mask_ratio(self) -> float:
        return self.mask_ratio_units / RATIO_SCALE

    @property
    def total_size(self) -> int:
        return self.header_size + sum(self.section_sizes.values()) + CRC.size

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the decoded picture (the render's, transposed by frames 4-7)."""
        return (self.width, self.height) if self.frame & 4 else (self.height, self.width)


def corrupt(msg: str) -> LotteryError:
    return LotteryError(f"corrupted .lottery file: {msg}")


def check_image_size(height: int, width: int) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise LotteryError(f"image size {width}x{height} is outside the supported 1..{MAX_SIDE} pixels per side")
    if height * width > MAX_PIXELS:
        raise LotteryError(f"image size {width}x{height} exceeds the supported {MAX_PIXELS} pixels")


# Writing -------------------------------------------------------------------------------------
def architecture_preset(arch: Architecture) -> int:
    """The preset number of `arch` (its band height aside), 0 when it is none of them."""
    bare = replace(arch, arm_band_rows=0)
    return next((k for k, p in ARCH_PRESETS.items() if p == bare), 0)


def architecture_fields(arch: Architecture) -> bytes:
    """The architecture fields of a header that names no preset (band height aside)."""
    v = encode_varint
    return b"".join([bytes([arch.n_levels]), GAIN.pack(float(arch.latent_gain)), bytes([arch.upsample_kernel]),
                     v(arch.modnet_hidden), v(arch.modnet_out), *(v(w) for w in arch.synth_hidden),
                     v(arch.arm_hidden)])


def architecture_bytes(arch: Architecture) -> int:
    """Header bytes the architecture takes (band height aside): 0 for a preset.

    The encoder prices them when it chooses between ARMs of different widths."""
    return 0 if architecture_preset(arch) else len(architecture_fields(arch))


def pack_header(header: Header) -> bytes:
    """The header bytes (without the CRC trailer, which covers the whole file)."""
    arch = header.architecture
    check_image_size(header.height, header.width)
    check_architecture(arch)
    if not 0 <= header.seed < 1 << 64:
        raise LotteryError(f"seed {header.seed} does not fit in 64 bits")
    if not 0 <= header.mask_ratio_units <= RATIO_SCALE:
        raise LotteryError(f"mask ratio {header.mask_ratio} is outside [0, 1]")
    if not 0 <= header.frame < 8:
        raise ValueError(f"frame {header.frame} is not 0..7")
    all_shifts = [sh for name in MODULE_NAMES for sh in header.shifts[name].values()]
    for name in MODULE_NAMES:
        for t, sh in header.shifts[name].items():
            if not -MAX_ABS_SHIFT <= sh <= MAX_ABS_SHIFT:
                raise LotteryError(f"quantization shift {sh} of {name}.{t} is outside -{MAX_ABS_SHIFT}..{MAX_ABS_SHIFT}")
    preset = architecture_preset(arch)
    nibbles = all(0 <= sh <= 15 for sh in all_shifts)
    if nibbles:
        padded = all_shifts + [0] * (len(all_shifts) % 2)
        shift_bytes = bytes(padded[i] | padded[i + 1] << 4 for i in range(0, len(padded), 2))
    else:
        shift_bytes = bytes(sh & 0xFF for sh in all_shifts)
    layout = ((preset & LAYOUT_PRESET) | (LAYOUT_PRESET_HIGH if preset & 4 else 0)
              | (LAYOUT_NIBBLE_SHIFTS if nibbles else 0) | header.frame << LAYOUT_FRAME_SHIFT
              | (LAYOUT_RESTORATION if header.restoration else 0))
    v = encode_varint
    for name in SECTION_NAMES:
        if header.section_sizes[name] >= MAX_SECTION:
            raise LotteryError(f"the {name} section exceeds 4 GiB")
    # the latent section's length is not stored: it is what is left before the CRC
    return b"".join([
        MAGIC, bytes([FORMAT_VERSION]), v(header.height), v(header.width), v(header.seed), v(header.mask_ratio_units),
        bytes([layout]), b"" if preset else architecture_fields(arch), v(arch.arm_band_rows), shift_bytes,
        v(header.section_sizes["network"]),
    ])


# Reading -------------------------------------------------------------------------------------
class _Cursor:
    """Reads the header front to back; running out of bytes is reported as truncation."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise LotteryError(f"truncated .lottery file ({len(self.data)} bytes, it ends inside the header)")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self, what: str, limit: int) -> int:
        value, self.pos = decode_varint(self.data, self.pos, what, limit)
        return value


def layout_preset(layout: int) -> int:
    """The architecture preset a layout byte names (0: the architecture fields follow)."""
    return layout & LAYOUT_PRESET | (4 if layout & LAYOUT_PRESET_HIGH else 0)


def _read_architecture(c: _Cursor, preset: int) -> Architecture:
    if preset:
        if preset not in ARCH_PRESETS:
            raise corrupt(f"unknown architecture preset {preset}")
        base = ARCH_PRESETS[preset]
    else:
        n_levels = c.byte()
        (gain,) = GAIN.unpack(c.take(GAIN.size))
        kernel = c.byte()
        m_hid = c.varint("modnet_hidden", 1 << 16)
        m_out = c.varint("modnet_out", 1 << 16)
        synth = tuple(c.varint("synth_hidden", 1 << 16) for _ in range(3))
        a_hid = c.varint("arm_hidden", 1 << 16)
        base = Architecture(n_levels=n_levels, latent_gain=float(gain), upsample_kernel=kernel, modnet_hidden=m_hid,
                            modnet_out=m_out, synth_hidden=synth, arm_hidden=a_hid, arm_band_rows=0)
    arch = replace(base, arm_band_rows=c.varint("arm_band_rows", MAX_SIDE))
    try:
        check_architecture(arch)
    except LotteryError as exc:
        raise corrupt(str(exc)) from None
    return arch


def read_header(data: bytes, check_crc: bool = True) -> Header:
    """Parse and validate the header (limits, section lengths against the file size, CRC)."""
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    n = len(data)
    head = bytes(data[:4])
    if head != MAGIC[: len(head)] or n == 0:
        raise LotteryError("not a .lottery file (bad magic bytes)")
    if n < 5:
        raise LotteryError(f"truncated .lottery file ({n} bytes)")
    if data[4] != FORMAT_VERSION:
        raise LotteryError(f"unsupported .lottery format version {data[4]} (this lottery reads version {FORMAT_VERSION})")
    c = _Cursor(data)
    c.take(5)
    height = c.varint("height", MAX_SIDE)
    width = c.varint("width", MAX_SIDE)
    try:
        check_image_size(height, width)
    except LotteryError as exc:
        raise corrupt(str(exc)) from None
    seed = c.varint("seed", (1 << 64) - 1)
    ratio = c.varint("mask ratio", RATIO_SCALE)
    layout = c.byte()
    # every bit of the layout byte has a meaning; a preset number with no entry is refused below
    arch = _read_architecture(c, layout_preset(layout))
    names = [(name, t) for name in MODULE_NAMES for t, _ in module_layout(name, arch)]
    if layout & LAYOUT_NIBBLE_SHIFTS:
        packed = c.take((len(names) + 1) // 2)
        values = [packed[i // 2] >> (4 * (i % 2)) & 0x0F for i in range(len(names))]
        if len(names) % 2 and packed[-1] >> 4:
            raise corrupt("the shifts' padding nibble is not zero")
    else:
        values = [b - 256 if b >= 128 else b for b in c.take(len(names))]
    shifts: dict[str, dict[str, int]] = {name: {} for name in MODULE_NAMES}
    for (name, t), value in zip(names, values):
        if abs(value) > MAX_ABS_SHIFT:
            raise corrupt(f"quantization shift {value} of {name}.{t} is out of range")
        shifts[name][t] = value
    network = c.varint("network section length", MAX_SECTION)
    if network < 1:
        raise corrupt("the network section is empty")
    latents = n - c.pos - network - CRC.size
    if latents < MIN_LATENT_SECTION:
        raise LotteryError(f"truncated .lottery file ({n} bytes, the header and network section take "
                           f"{c.pos + network})")
    header = Header(height=height, width=width, seed=seed, mask_ratio_units=ratio, architecture=arch, shifts=shifts,
                    section_sizes={"network": network, "latents": latents}, header_size=c.pos,
                    frame=(layout & LAYOUT_FRAME) >> LAYOUT_FRAME_SHIFT, restoration=bool(layout & LAYOUT_RESTORATION))
    if check_crc:
        (stored,) = CRC.unpack_from(data, n - CRC.size)
        if zlib.crc32(data[: n - CRC.size]) != stored:
            raise corrupt("checksum mismatch (CRC32): the file is damaged or truncated")
    return header


def _compact_shifts(per_tensor: dict[str, int]) -> int | dict[str, int]:
    """One number when every tensor of a module shares its shift, else the per-tensor dict."""
    values = set(per_tensor.values())
    return next(iter(values)) if len(values) == 1 else dict(per_tensor)


def describe(data: bytes) -> dict:
    """Header fields and a size breakdown in bytes (header includes the 4-byte CRC trailer).

    header + mask + sum(networks.values()) + latents == total. The mask and the networks share
    one arithmetic-coded section, which is decoded here and shared out among them by their code
    lengths (`network_section.part_bytes`). Only the header and this section are checked here;
    decoding the whole file (`container.decode_file`) checks the rest.
    """
    from .network_section import decode_section, part_bytes

    h = read_header(data)
    s = h.section_sizes
    start = h.header_size
    section = decode_section(data[start : start + s["network"]], h.architecture, h.mask_ratio_units)
    parts = part_bytes(section, s["network"])
    height, width = h.image_size
    return {
        "format_version": FORMAT_VERSION,
        "height": height,
        "width": width,
        "channels": CHANNELS,
        "content": "restoration member" if h.restoration else "compressed image",
        "frame": h.frame,
        "seed": h.seed,
        "mask_ratio": h.mask_ratio,
        "architecture": h.architecture.to_dict(),
        "architecture_preset": architecture_preset(h.architecture),
        "shifts": {name: _compact_shifts(per_tensor) for name, per_tensor in h.shifts.items()},
        "sizes": {
            "header": h.header_size + CRC.size,
            "mask": parts["mask"],
            "networks": {name: parts[name] for name in MODULE_NAMES},
            "latents": s["latents"],
            "total": h.total_size,
        },
        "bpp": 8.0 * h.total_size / (height * width),
        "decoder_macs_per_pixel": round(macs_per_pixel(h.architecture, sum(section.mask), h.height, h.width), 1),
    }

