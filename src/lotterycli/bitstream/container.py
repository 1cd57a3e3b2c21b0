""".lottery file format, version 3 (versions 1 and 2 still read): header, sections, CRC32. Byte
layout in docs/format.md.

    encode_file(payload) -> bytes          decode_file(data) -> Payload
    read_header(data) -> Header            describe(data) -> dict (used by `lottery info`)

Every problem with the bytes being read (wrong magic, other version, truncation, limits, CRC,
undecodable section) raises `LotteryError` with a one-line message, before anything large is
allocated. The latent section is produced by a *latent coder* (by default the ARM-driven coder in
`codec.entropy`, imported lazily); tests can inject a stand-in with the same two methods.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import torch

from ..codec.architecture import Architecture
from ..codec.params import MODULE_NAMES, Payload, QuantizedModule, latent_shapes
from ..errors import LotteryError
from . import mask_coding, param_coding
from .varint import encode_varint

MAGIC = b"LOTR"
FORMAT_VERSION = 3  # what encode_file writes
READ_VERSIONS = (1, 2, 3)

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


class LatentCoder(Protocol):
    """Codes the integer latent grids given the (quantized) ARM."""

    def encode(self, latents: list[torch.Tensor], arm: QuantizedModule, band_rows: int = 0) -> bytes: ...

    def decode(
        self, data: bytes, shapes: list[tuple[int, int]], arm: QuantizedModule, band_rows: int = 0
    ) -> list[torch.Tensor]: ...


class DefaultLatentCoder:
    """The real coder: `codec.entropy` driven by `codec.arm.ArmExact` (imported on first use)."""

    def encode(self, latents: list[torch.Tensor], arm: QuantizedModule, band_rows: int = 0) -> bytes:
        from ..codec import arm as arm_mod
        from ..codec import entropy

        return entropy.encode_latents(latents, arm_mod.ArmExact(arm), band_rows)

    def decode(
        self, data: bytes, shapes: list[tuple[int, int]], arm: QuantizedModule, band_rows: int = 0
    ) -> list[torch.Tensor]:
        from ..codec import arm as arm_mod
        from ..codec import entropy

        return entropy.decode_latents(data, shapes, arm_mod.ArmExact(arm), band_rows)


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
    from ..codec.arm import MAX_HIDDEN as max_arm_hidden  # exactness bound of the fixed-point ARM

    if arch.arm_hidden > max_arm_hidden:
        raise LotteryError(f"arm_hidden {arch.arm_hidden} is outside the supported range 1..{max_arm_hidden}")
    if not 0 <= arch.arm_band_rows <= MAX_SIDE:
        raise LotteryError(f"arm_band_rows {arch.arm_band_rows} is outside the supported range 0..{MAX_SIDE}")
    g = arch.latent_gain
    if not (math.isfinite(g) and 0.0 < g <= MAX_LATENT_GAIN):
        raise LotteryError(f"latent_gain {g} is outside the supported range (0, {MAX_LATENT_GAIN:g}]")


def _corrupt(msg: str) -> LotteryError:
    return LotteryError(f"corrupted .lottery file: {msg}")


# Writing -------------------------------------------------------------------------------------
def _checked_fields(payload: Payload, version: int) -> tuple[float, int, int, dict[str, dict[str, int]]]:
    """(latent gain, seed, mask ratio in 1/10000, per-tensor shifts), refusing what no reader accepts."""
    arch = payload.architecture
    names = tuple(f.name for f in fields(Architecture))
    if names != _ARCH_FIELDS:
        raise ValueError(f"Architecture fields {names} differ from those .lottery v{version} stores")
    gain = float(arch.latent_gain)
    if struct.unpack("<f", struct.pack("<f", gain))[0] != gain:
        raise LotteryError(f"latent_gain {gain} is not exactly representable as float32")
    ratio = float(payload.mask_ratio)
    if not 0.0 <= ratio <= 1.0:
        raise LotteryError(f"mask ratio {ratio} is outside [0, 1]")
    seed = int(payload.seed)
    if not 0 <= seed < 1 << 64:
        raise LotteryError(f"seed {seed} does not fit in 64 bits")
    shifts = {}
    for name in MODULE_NAMES:
        q = payload.modules[name]
        layout = [t for t, _ in param_coding.module_layout(name, arch)]
        if list(q.tensors) != layout:
            raise ValueError(f"{name} tensors {list(q.tensors)} differ from the layout {layout}")
        shifts[name] = q.tensor_shifts()
        for t, sh in shifts[name].items():
            if not -MAX_ABS_SHIFT <= sh <= MAX_ABS_SHIFT:
                raise LotteryError(f"quantization shift {sh} of {name}.{t} is outside -{MAX_ABS_SHIFT}..{MAX_ABS_SHIFT}")
        if version == 1 and len(set(shifts[name].values())) > 1:
            raise LotteryError(f".lottery v1 stores one shift per module; {name} has per-tensor shifts")
    if version < 3 and arch.arm_band_rows:
        raise LotteryError(f".lottery v{version} has no latent bands; arm_band_rows is {arch.arm_band_rows}")
    return gain, seed, round(ratio * _RATIO_SCALE), shifts


def _pack_header_v1(payload: Payload, sizes: list[int]) -> bytes:
    gain, seed, ratio, shifts = _checked_fields(payload, 1)
    for s in sizes:
        if s >= 1 << 32:
            raise LotteryError("a .lottery section exceeds 4 GiB")
    arch = payload.architecture
    h1, h2, h3 = arch.synth_hidden
    return (
        _FIXED.pack(MAGIC, 1, payload.height, payload.width, CHANNELS, seed, ratio)
        + _ARCH.pack(
            arch.n_levels, gain, arch.upsample_kernel, arch.modnet_hidden, arch.modnet_out, h1, h2, h3, arch.arm_hidden
        )
        + _SHIFTS.pack(*(next(iter(shifts[name].values())) for name in MODULE_NAMES))
        + _LENGTHS.pack(*sizes)
    )


def _pack_header_v2(payload: Payload, sizes: list[int], version: int = 2) -> bytes:
    """Versions 2 and 3: variable-length integers and one shift per tensor; version 3 adds the
    latent band height after arm_hidden (docs/format.md, section 1)."""
    gain, seed, ratio, shifts = _checked_fields(payload, version)
    arch = payload.architecture
    v = encode_varint
    return b"".join(
        [
            MAGIC,
            bytes([version]),
            v(payload.height),
            v(payload.width),
            v(seed),
            v(ratio),
            bytes([arch.n_levels]),
            _GAIN.pack(gain),
            bytes([arch.upsample_kernel]),
            v(arch.modnet_hidden),
            v(arch.modnet_out),
            *(v(w) for w in arch.synth_hidden),
            v(arch.arm_hidden),
            v(arch.arm_band_rows) if version >= 3 else b"",
            bytes(sh & 0xFF for name in MODULE_NAMES for sh in shifts[name].values()),
            *(v(n) for n in sizes),  # the latents' too, so that a cut file is told from a corrupted one
        ]
    )


def encode_file(payload: Payload, latent_coder: LatentCoder | None = None, version: int = FORMAT_VERSION) -> bytes:
    """Serialise a Payload into .lottery bytes (deterministic: same payload, same bytes).

    Versions 1 (fixed-size header, one shift per module) and 2 (no latent bands) are kept for
    the readers' tests.
    """
    if version not in READ_VERSIONS:
        raise ValueError(f"cannot write .lottery version {version}")
    coder = latent_coder if latent_coder is not None else DefaultLatentCoder()
    arch = payload.architecture
    _check_image(payload.height, payload.width)
    check_architecture(arch)
    if set(payload.modules) != set(MODULE_NAMES):
        raise ValueError(f"payload modules {sorted(payload.modules)} differ from {list(MODULE_NAMES)}")
    mask = payload.mask
    if mask.dtype != torch.bool or mask.dim() != 1 or mask.numel() != arch.n_synth_weights:
        raise ValueError(f"mask must be a bool vector of {arch.n_synth_weights} values")
    shapes = latent_shapes(payload.height, payload.width, arch.n_levels)
    got = [tuple(t.shape) for t in payload.latents]
    if got != shapes:
        raise ValueError(f"latent grid shapes {got} differ from the expected {shapes}")

    sections = [mask_coding.encode_mask(mask)]
    for name in MODULE_NAMES:
        layout = param_coding.module_layout(name, arch)
        sections.append(param_coding.encode_module(payload.modules[name], layout))
    sections.append(bytes(coder.encode(payload.latents, payload.modules["arm"], band_rows=arch.arm_band_rows)))
    sizes = [len(s) for s in sections]
    header = _pack_header_v1(payload, sizes) if version == 1 else _pack_header_v2(payload, sizes, version)
    body = header + b"".join(sections)
    return body + _CRC.pack(zlib.crc32(body))


def write_file(path: str | Path, payload: Payload, latent_coder: LatentCoder | None = None) -> int:
    """Write a .lottery file; returns its size in bytes."""
    data = encode_file(payload, latent_coder)
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise LotteryError(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(data)


# Reading -------------------------------------------------------------------------------------
class _Cursor:
    """Reads a v2 or v3 header front to back; running out of bytes is reported as truncation."""

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
        name: {t: module_shifts[name] for t, _ in param_coding.module_layout(name, arch)} for name in MODULE_NAMES
    }
    return height, width, seed, ratio, arch, shifts, sizes, HEADER_SIZE_V1


def _read_v2(data: bytes, n: int, version: int = 2) -> tuple:
    """Versions 2 and 3 (3 adds the band height after arm_hidden)."""
    c = _Cursor(data, n)
    c.take(5)  # magic and version, checked by the caller
    height = c.varint("height", MAX_SIDE)
    width = c.varint("width", MAX_SIDE)
    seed = c.varint("seed", (1 << 64) - 1)
    ratio = c.varint("mask ratio", _RATIO_SCALE)
    n_levels = c.byte()
    (gain,) = _GAIN.unpack(c.take(_GAIN.size))
    kernel = c.byte()
    m_hid = c.varint("modnet_hidden", MAX_WIDTH)
    m_out = c.varint("modnet_out", MAX_WIDTH)
    synth = tuple(c.varint("synth_hidden", MAX_WIDTH) for _ in range(3))
    a_hid = c.varint("arm_hidden", MAX_WIDTH)
    bands = c.varint("arm_band_rows", MAX_SIDE) if version >= 3 else 0
    arch = _architecture(height, width, n_levels, gain, kernel, m_hid, m_out, synth, a_hid, bands)
    shifts = {}
    for name in MODULE_NAMES:
        shifts[name] = {}
        for t, _ in param_coding.module_layout(name, arch):
            b = c.byte()
            shifts[name][t] = b - 256 if b >= 128 else b
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
        height, width, seed, ratio, arch, shifts, sizes, header_size = _read_v1(data, n)
    else:
        height, width, seed, ratio, arch, shifts, sizes, header_size = _read_v2(data, n, version)

    if ratio > _RATIO_SCALE:
        raise _corrupt(f"mask ratio {ratio / _RATIO_SCALE} is above 1")
    for name, per_tensor in shifts.items():
        for t, s in per_tensor.items():
            if abs(s) > MAX_ABS_SHIFT:
                raise _corrupt(f"quantization shift {s} of {name}.{t} is out of range")
    if sizes["mask"] < 4:
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


def _sections(data: bytes, header: Header) -> dict[str, bytes]:
    out = {}
    off = header.header_size
    for name in SECTION_NAMES:
        size = header.section_sizes[name]
        out[name] = bytes(data[off : off + size])
        off += size
    return out


def decode_file(data: bytes, latent_coder: LatentCoder | None = None) -> Payload:
    """Parse .lottery bytes (any version in READ_VERSIONS) back into the exact Payload that was written."""
    coder = latent_coder if latent_coder is not None else DefaultLatentCoder()
    header = read_header(data)
    arch = header.architecture
    secs = _sections(data, header)
    mask = mask_coding.decode_mask(secs["mask"], arch.n_synth_weights)
    modules = {}
    for name in MODULE_NAMES:
        layout = param_coding.module_layout(name, arch)
        modules[name] = param_coding.decode_module(secs[name], header.shifts[name], layout)
    shapes = latent_shapes(header.height, header.width, arch.n_levels)
    try:
        latents = coder.decode(secs["latents"], shapes, modules["arm"], band_rows=arch.arm_band_rows)
    except LotteryError:
        raise
    except (ValueError, RuntimeError, IndexError, KeyError, OverflowError, ZeroDivisionError) as exc:
        raise _corrupt(f"latent section cannot be decoded ({type(exc).__name__}: {exc})") from None
    latents = list(latents)
    if [tuple(t.shape) for t in latents] != shapes:
        raise _corrupt("latent grids have the wrong shapes")
    return Payload(
        height=header.height,
        width=header.width,
        seed=header.seed,
        mask_ratio=header.mask_ratio,
        architecture=arch,
        mask=mask,
        modules=modules,
        latents=latents,
    )


def read_file(path: str | Path, latent_coder: LatentCoder | None = None) -> Payload:
    """Read and decode a .lottery file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LotteryError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_file(data, latent_coder)


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
