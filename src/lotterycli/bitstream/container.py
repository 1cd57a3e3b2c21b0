""".lottery file format, version 1: header, sections, CRC32. Byte layout in docs/format.md.

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

MAGIC = b"LOTR"
FORMAT_VERSION = 1

# Limits checked before anything is allocated (also enforced when writing).
MAX_SIDE = 16384
MAX_PIXELS = 64 * 1024 * 1024
MAX_LEVELS = 8  # the latent coder handles at most 8 grids
MAX_WIDTH = 512
MAX_KERNEL = 64
MAX_ABS_SHIFT = 64
MAX_LATENT_GAIN = 65536.0
CHANNELS = 3

# magic, version, height, width, channels, seed, mask ratio (1/10000 units)
_FIXED = struct.Struct("<4sBHHBQH")
# n_levels, latent_gain, upsample_kernel, modnet_hidden, modnet_out, synth_hidden x3, arm_hidden
_ARCH = struct.Struct("<BfBHHHHHH")
_SHIFTS = struct.Struct("<" + "b" * len(MODULE_NAMES))
SECTION_NAMES = ("mask",) + tuple(MODULE_NAMES) + ("latents",)
_LENGTHS = struct.Struct("<" + "I" * len(SECTION_NAMES))
_CRC = struct.Struct("<I")
HEADER_SIZE = _FIXED.size + _ARCH.size + _SHIFTS.size + _LENGTHS.size  # 61 bytes
_ARCH_FIELDS = (
    "n_levels",
    "latent_gain",
    "upsample_kernel",
    "modnet_hidden",
    "modnet_out",
    "synth_hidden",
    "arm_hidden",
)
_RATIO_SCALE = 10000


class LatentCoder(Protocol):
    """Codes the integer latent grids given the (quantized) ARM."""

    def encode(self, latents: list[torch.Tensor], arm: QuantizedModule) -> bytes: ...

    def decode(self, data: bytes, shapes: list[tuple[int, int]], arm: QuantizedModule) -> list[torch.Tensor]: ...


class DefaultLatentCoder:
    """The real coder: `codec.entropy` driven by `codec.arm.ArmExact` (imported on first use)."""

    def encode(self, latents: list[torch.Tensor], arm: QuantizedModule) -> bytes:
        from ..codec import arm as arm_mod
        from ..codec import entropy

        return entropy.encode_latents(latents, arm_mod.ArmExact(arm))

    def decode(self, data: bytes, shapes: list[tuple[int, int]], arm: QuantizedModule) -> list[torch.Tensor]:
        from ..codec import arm as arm_mod
        from ..codec import entropy

        return entropy.decode_latents(data, shapes, arm_mod.ArmExact(arm))


@dataclass(frozen=True)
class Header:
    version: int
    height: int
    width: int
    channels: int
    seed: int
    mask_ratio: float
    architecture: Architecture
    shifts: dict[str, int]  # per module, keys MODULE_NAMES
    section_sizes: dict[str, int]  # bytes per section, keys SECTION_NAMES
    header_size: int  # fixed header bytes (not counting the 4-byte CRC trailer)

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
    g = arch.latent_gain
    if not (math.isfinite(g) and 0.0 < g <= MAX_LATENT_GAIN):
        raise LotteryError(f"latent_gain {g} is outside the supported range (0, {MAX_LATENT_GAIN:g}]")


def _corrupt(msg: str) -> LotteryError:
    return LotteryError(f"corrupted .lottery file: {msg}")


# Writing -------------------------------------------------------------------------------------
def _pack_header(payload: Payload, sizes: list[int]) -> bytes:
    arch = payload.architecture
    names = tuple(f.name for f in fields(Architecture))
    if names != _ARCH_FIELDS:
        raise ValueError(f"Architecture fields {names} differ from those .lottery v{FORMAT_VERSION} stores")
    gain = float(arch.latent_gain)
    if struct.unpack("<f", struct.pack("<f", gain))[0] != gain:
        raise LotteryError(f"latent_gain {gain} is not exactly representable as float32")
    ratio = float(payload.mask_ratio)
    if not 0.0 <= ratio <= 1.0:
        raise LotteryError(f"mask ratio {ratio} is outside [0, 1]")
    seed = int(payload.seed)
    if not 0 <= seed < 1 << 64:
        raise LotteryError(f"seed {seed} does not fit in 64 bits")
    shifts = []
    for name in MODULE_NAMES:
        s = int(payload.modules[name].shift)
        if not -MAX_ABS_SHIFT <= s <= min(MAX_ABS_SHIFT, 127):
            raise LotteryError(f"quantization shift {s} of {name} is outside -{MAX_ABS_SHIFT}..{min(MAX_ABS_SHIFT, 127)}")
        shifts.append(s)
    for s in sizes:
        if s >= 1 << 32:
            raise LotteryError("a .lottery section exceeds 4 GiB")
    h1, h2, h3 = arch.synth_hidden
    return (
        _FIXED.pack(MAGIC, FORMAT_VERSION, payload.height, payload.width, CHANNELS, seed, round(ratio * _RATIO_SCALE))
        + _ARCH.pack(
            arch.n_levels, gain, arch.upsample_kernel, arch.modnet_hidden, arch.modnet_out, h1, h2, h3, arch.arm_hidden
        )
        + _SHIFTS.pack(*shifts)
        + _LENGTHS.pack(*sizes)
    )


def encode_file(payload: Payload, latent_coder: LatentCoder | None = None) -> bytes:
    """Serialise a Payload into .lottery v1 bytes (deterministic: same payload, same bytes)."""
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
    sections.append(bytes(coder.encode(payload.latents, payload.modules["arm"])))
    body = _pack_header(payload, [len(s) for s in sections]) + b"".join(sections)
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
    if version != FORMAT_VERSION:
        raise LotteryError(f"unsupported .lottery format version {version} (this lottery reads {FORMAT_VERSION})")
    if n < HEADER_SIZE + _CRC.size:
        raise LotteryError(f"truncated .lottery file ({n} bytes, the header alone is {HEADER_SIZE + _CRC.size})")

    _, _, height, width, channels, seed, ratio = _FIXED.unpack_from(data, 0)
    off = _FIXED.size
    n_levels, gain, kernel, m_hid, m_out, h1, h2, h3, a_hid = _ARCH.unpack_from(data, off)
    off += _ARCH.size
    shifts = dict(zip(MODULE_NAMES, _SHIFTS.unpack_from(data, off)))
    off += _SHIFTS.size
    sizes = dict(zip(SECTION_NAMES, _LENGTHS.unpack_from(data, off)))

    try:
        _check_image(height, width)
        arch = Architecture(
            n_levels=n_levels,
            latent_gain=float(gain),
            upsample_kernel=kernel,
            modnet_hidden=m_hid,
            modnet_out=m_out,
            synth_hidden=(h1, h2, h3),
            arm_hidden=a_hid,
        )
        check_architecture(arch)
    except LotteryError as exc:
        raise _corrupt(str(exc)) from None
    if channels != CHANNELS:
        raise _corrupt(f"{channels} channels (only {CHANNELS} are supported)")
    if ratio > _RATIO_SCALE:
        raise _corrupt(f"mask ratio {ratio / _RATIO_SCALE} is above 1")
    for name, s in shifts.items():
        if abs(s) > MAX_ABS_SHIFT:
            raise _corrupt(f"quantization shift {s} of {name} is out of range")
    if sizes["mask"] < 4:
        raise _corrupt("mask section is too short")
    for name in MODULE_NAMES:
        if sizes[name] < 1:
            raise _corrupt(f"{name} section is empty")

    header = Header(
        version=version,
        height=height,
        width=width,
        channels=channels,
        seed=seed,
        mask_ratio=ratio / _RATIO_SCALE,
        architecture=arch,
        shifts=shifts,
        section_sizes=sizes,
        header_size=HEADER_SIZE,
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
    """Parse .lottery v1 bytes back into the exact Payload that was written."""
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
        latents = coder.decode(secs["latents"], shapes, modules["arm"])
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
        "shifts": dict(h.shifts),
        "sizes": {
            "header": h.header_size + _CRC.size,
            "mask": s["mask"],
            "networks": {name: s[name] for name in MODULE_NAMES},
            "latents": s["latents"],
            "total": total,
        },
        "bpp": 8.0 * total / (h.height * h.width),
    }
