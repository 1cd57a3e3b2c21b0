""".lottery file: header, network section (mask and networks), latent section, CRC32. Byte layout
in docs/format.md; the header's parsing and `describe` live in `header` (no torch).

    encode_file(payload) -> bytes          decode_file(data) -> Payload

Every problem with the bytes being read (wrong magic, other version, truncation, limits, CRC,
undecodable section) raises `LotteryError` with a one-line message, before anything large is
allocated. The latent section is produced by a *latent coder* (by default the ARM-driven coder in
`latent_coding`); tests can inject a stand-in with the same two methods.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import torch

from ..errors import LotteryError
from ..model.architecture import MODULE_NAMES, latent_shapes, module_layout
from ..model.payload import Payload, QuantizedModule
from . import param_coding
from .header import CRC, RATIO_SCALE, SECTION_NAMES, Header, corrupt, pack_header, read_header
from .network_section import decode_section, encode_section


class LatentCoder(Protocol):
    """Codes the integer latent grids given the (quantized) ARM."""

    def encode(self, latents: list[torch.Tensor], arm: QuantizedModule, band_rows: int = 0) -> bytes: ...

    def decode(
        self, data: bytes, shapes: list[tuple[int, int]], arm: QuantizedModule, band_rows: int = 0
    ) -> list[torch.Tensor]: ...


class DefaultLatentCoder:
    """The real coder: `latent_coding` driven by the fixed-point ARM."""

    def encode(self, latents: list[torch.Tensor], arm: QuantizedModule, band_rows: int = 0) -> bytes:
        from ..model.arm import ArmExact
        from .latent_coding import encode_latents

        return encode_latents(latents, ArmExact(arm), band_rows)

    def decode(
        self, data: bytes, shapes: list[tuple[int, int]], arm: QuantizedModule, band_rows: int = 0
    ) -> list[torch.Tensor]:
        from ..model.arm import ArmExact
        from .latent_coding import decode_latents

        return decode_latents(data, shapes, ArmExact(arm), band_rows)


def ratio_units(mask_ratio: float) -> int:
    """The mask ratio as the header stores it (1/10000 units)."""
    ratio = float(mask_ratio)
    if not 0.0 <= ratio <= 1.0:
        raise LotteryError(f"mask ratio {ratio} is outside [0, 1]")
    return round(ratio * RATIO_SCALE)


def encode_file(payload: Payload, latent_coder: LatentCoder | None = None) -> bytes:
    """Serialise a Payload into .lottery bytes (deterministic: same payload, same bytes)."""
    coder = latent_coder if latent_coder is not None else DefaultLatentCoder()
    arch = payload.architecture
    if set(payload.modules) != set(MODULE_NAMES):
        raise ValueError(f"payload modules {sorted(payload.modules)} differ from {list(MODULE_NAMES)}")
    mask = payload.mask
    if mask.dtype != torch.bool or mask.dim() != 1 or mask.numel() != arch.n_synth_weights:
        raise ValueError(f"mask must be a bool vector of {arch.n_synth_weights} values")
    shapes = latent_shapes(payload.height, payload.width, arch.n_levels)
    got = [tuple(t.shape) for t in payload.latents]
    if got != shapes:
        raise ValueError(f"latent grid shapes {got} differ from the expected {shapes}")
    units = ratio_units(payload.mask_ratio)
    shifts, codes = {}, {}
    for name in MODULE_NAMES:
        q = payload.modules[name]
        layout = module_layout(name, arch)
        if list(q.tensors) != [t for t, _ in layout]:
            raise ValueError(f"{name} tensors {list(q.tensors)} differ from the layout {layout}")
        shifts[name] = q.tensor_shifts()
        codes[name] = param_coding.module_code(q, name, layout)[0]
    sections = [encode_section(mask.to(torch.uint8).tolist(), units, codes, arch),
                bytes(coder.encode(payload.latents, payload.modules["arm"], band_rows=arch.arm_band_rows))]
    header = Header(
        height=payload.height, width=payload.width, seed=int(payload.seed), mask_ratio_units=units,
        architecture=arch, shifts=shifts, section_sizes=dict(zip(SECTION_NAMES, (len(s) for s in sections))),
        header_size=0, frame=payload.frame, restoration=payload.restoration,
    )
    body = pack_header(header) + b"".join(sections)
    return body + CRC.pack(zlib.crc32(body))


def _sections(data: bytes, header: Header) -> dict[str, bytes]:
    out = {}
    off = header.header_size
    for name in SECTION_NAMES:
        size = header.section_sizes[name]
        out[name] = bytes(data[off : off + size])
        off += size
    return out


def describe_latents(data: bytes) -> list[dict]:
    """Per latent grid (level 0 first): its size, how many of its values are not zero, and the
    bytes of the latent section it takes, shared out by each grid's code length (`grid_bits`).
    Decodes the whole file (so it checks it all); the caller bounds the image size first."""
    from ..model.arm import ArmExact
    from .latent_coding import grid_bits
    from .network_section import share_bytes

    header = read_header(data)
    payload = decode_file(data, header=header)
    bits = grid_bits(payload.latents, ArmExact(payload.modules["arm"]), header.architecture.arm_band_rows)
    shares = share_bytes({str(i): b for i, b in enumerate(bits)}, header.section_sizes["latents"])
    return [{"level": i, "height": int(g.shape[0]), "width": int(g.shape[1]), "nonzero": int(g.count_nonzero()),
             "bytes": shares[str(i)]} for i, g in enumerate(payload.latents)]


def decode_file(data: bytes, latent_coder: LatentCoder | None = None, header: Header | None = None) -> Payload:
    """Parse .lottery bytes back into the exact Payload that was written (`header`: the already
    parsed header of `data`, to skip parsing it twice)."""
    coder = latent_coder if latent_coder is not None else DefaultLatentCoder()
    header = read_header(data) if header is None else header
    arch = header.architecture
    secs = _sections(data, header)
    section = decode_section(secs["network"], arch, header.mask_ratio_units)
    mask = torch.tensor(section.mask, dtype=torch.bool)
    modules = {name: param_coding.quantized_module(section.modules[name], header.shifts[name],
                                                   module_layout(name, arch), name) for name in MODULE_NAMES}
    shapes = latent_shapes(header.height, header.width, arch.n_levels)
    try:
        latents = coder.decode(secs["latents"], shapes, modules["arm"], band_rows=arch.arm_band_rows)
    except LotteryError:
        raise
    except (ValueError, RuntimeError, IndexError, KeyError, OverflowError, ZeroDivisionError) as exc:
        raise corrupt(f"latent section cannot be decoded ({type(exc).__name__}: {exc})") from None
    latents = list(latents)
    if [tuple(t.shape) for t in latents] != shapes:
        raise corrupt("latent grids have the wrong shapes")
    return Payload(
        height=header.height, width=header.width, seed=header.seed, mask_ratio=header.mask_ratio,
        architecture=arch, mask=mask, modules=modules, latents=latents, frame=header.frame,
        restoration=header.restoration,
    )
