""".lottery file format, version 4 (versions 1-3 still read): header, sections, CRC32. Byte
layout in docs/format.md; the header's parsing and `describe` live in `header` (no torch).

    encode_file(payload) -> bytes          decode_file(data) -> Payload
    read_header(data) -> Header            describe(data) -> dict (used by `lottery info`)

Every problem with the bytes being read (wrong magic, other version, truncation, limits, CRC,
undecodable section) raises `LotteryError` with a one-line message, before anything large is
allocated. The latent section is produced by a *latent coder* (by default the ARM-driven coder in
`codec.entropy`, imported lazily); tests can inject a stand-in with the same two methods.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import fields, replace
from pathlib import Path
from typing import Protocol

import torch

from ..codec.architecture import Architecture
from ..codec.params import MODULE_NAMES, Payload, QuantizedModule, latent_shapes
from ..errors import LotteryError
from . import mask_coding, param_coding
from .header import (  # re-exported: the header's names have always been reachable from here
    _ARCH,
    _ARCH_FIELDS,
    _CRC,
    _FIXED,
    _GAIN,
    _LENGTHS,
    _RATIO_SCALE,
    _SHIFTS,
    ARCH_PRESETS,
    CHANNELS,
    FORMAT_VERSION,
    HEADER_SIZE_V1,
    MAGIC,
    MAX_ABS_SHIFT,
    MAX_KERNEL,
    MAX_LATENT_GAIN,
    MAX_LEVELS,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_WIDTH,
    READ_VERSIONS,
    SECTION_NAMES,
    V4_NIBBLE_SHIFTS,
    Header,
    _check_image,
    _corrupt,
    check_architecture,
    describe,
    read_header,
)
from .varint import encode_varint

__all__ = [  # this module's API, with the header names it re-exports
    "CHANNELS", "FORMAT_VERSION", "HEADER_SIZE_V1", "MAGIC", "MAX_ABS_SHIFT", "MAX_KERNEL", "MAX_LATENT_GAIN",
    "MAX_LEVELS", "MAX_PIXELS", "MAX_SIDE", "MAX_WIDTH", "READ_VERSIONS", "SECTION_NAMES", "Architecture",
    "DefaultLatentCoder", "Header", "LatentCoder", "check_architecture", "decode_file", "describe", "encode_file",
    "read_file", "read_header", "write_file",
]


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


def _arch_preset(arch: Architecture) -> int:
    """The v4 preset number of `arch` (its band height aside), 0 when it is none of them."""
    bare = replace(arch, arm_band_rows=0)
    return next((k for k, p in ARCH_PRESETS.items() if p == bare), 0)


def _architecture_fields(arch: Architecture) -> bytes:
    """The architecture fields of a v2-v4 header, band height aside (v4 leaves them out for a preset)."""
    v = encode_varint
    return b"".join([bytes([arch.n_levels]), _GAIN.pack(float(arch.latent_gain)), bytes([arch.upsample_kernel]),
                     v(arch.modnet_hidden), v(arch.modnet_out), *(v(w) for w in arch.synth_hidden),
                     v(arch.arm_hidden)])


def architecture_bytes(arch: Architecture) -> int:
    """Header bytes the architecture takes in a v4 file (band height aside): 0 for a preset.

    The encoder prices them when it chooses between ARMs of different widths."""
    return 0 if _arch_preset(arch) else len(_architecture_fields(arch))


def _pack_header_v2(payload: Payload, sizes: list[int], version: int = 2) -> bytes:
    """Versions 2-4: variable-length integers and one shift per tensor; version 3 adds the
    latent band height after arm_hidden; version 4 a layout byte, so that a preset architecture
    takes no bytes and shifts 0..15 half a byte each (docs/format.md, section 1)."""
    gain, seed, ratio, shifts = _checked_fields(payload, version)
    arch = payload.architecture
    v = encode_varint
    all_shifts = [sh for name in MODULE_NAMES for sh in shifts[name].values()]
    preset = _arch_preset(arch) if version >= 4 else 0
    nibbles = version >= 4 and all(0 <= sh <= 15 for sh in all_shifts)
    if nibbles:
        padded = all_shifts + [0] * (len(all_shifts) % 2)
        shift_bytes = bytes(padded[i] | padded[i + 1] << 4 for i in range(0, len(padded), 2))
    else:
        shift_bytes = bytes(sh & 0xFF for sh in all_shifts)
    fields_ = [] if preset else [_architecture_fields(arch)]
    return b"".join(
        [
            MAGIC,
            bytes([version]),
            v(payload.height),
            v(payload.width),
            v(seed),
            v(ratio),
            bytes([preset | (V4_NIBBLE_SHIFTS if nibbles else 0)]) if version >= 4 else b"",
            *fields_,
            v(arch.arm_band_rows) if version >= 3 else b"",
            shift_bytes,
            *(v(n) for n in sizes),  # the latents' too, so that a cut file is told from a corrupted one
        ]
    )


def encode_file(payload: Payload, latent_coder: LatentCoder | None = None, version: int = FORMAT_VERSION) -> bytes:
    """Serialise a Payload into .lottery bytes (deterministic: same payload, same bytes).

    Versions 1 (fixed-size header, one shift per module), 2 (no latent bands) and 3 (every
    architecture field and shift in full, the mask count as a u32, the upsampling kernel coded as
    it is) are kept for the readers' tests and re-coding studies.
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

    v4 = version >= 4
    ratio_units = _checked_fields(payload, version)[2] if v4 else None
    sections = [mask_coding.encode_mask(mask, ratio_units)]
    for name in MODULE_NAMES:
        layout = param_coding.module_layout(name, arch)
        sections.append(param_coding.encode_module(payload.modules[name], layout, name if v4 else None))
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
    v4 = header.version >= 4
    ratio_units = round(header.mask_ratio * _RATIO_SCALE) if v4 else None
    mask = mask_coding.decode_mask(secs["mask"], arch.n_synth_weights, ratio_units)
    modules = {}
    for name in MODULE_NAMES:
        layout = param_coding.module_layout(name, arch)
        modules[name] = param_coding.decode_module(secs[name], header.shifts[name], layout, name if v4 else None)
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

