"""The network section: the mask and the three small networks in one arithmetic-coded stream.

Order in the stream: the mask (`mask_coding`), then the ARM, the upsampling kernel and ModNet
(`param_coding`), each with its own fresh contexts. Why one stream: each stream of its own would
cost its own length field in the header and its own termination (up to 4 bytes each, and a
32-bit word for a constriction stream); together they end once. No torch: `lottery info` decodes
this section to say how many of its bytes each part took (`part_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LotteryError
from ..model.architecture import MODULE_NAMES, Architecture, module_layout
from .mask_coding import get_mask, put_mask
from .param_coding import PREDICTED_MODULES, ModuleCode, get_module, put_module, tensor_sizes
from .rangecoder import Decoder, Encoder

PARTS = ("mask", *MODULE_NAMES)


@dataclass(frozen=True)
class NetworkSection:
    mask: list[int]  # 0/1 per synthesis weight, layer by layer
    modules: dict[str, ModuleCode]  # keys MODULE_NAMES
    part_bits: dict[str, float]  # keys PARTS: ideal code length of each part (decoding only)


def _sizes(name: str, arch: Architecture) -> list[int]:
    return tensor_sizes(module_layout(name, arch))


def encode_section(mask: list[int], ratio_units: int, modules: dict[str, ModuleCode], arch: Architecture) -> bytes:
    enc = Encoder()
    put_mask(enc, mask, ratio_units)
    for name in MODULE_NAMES:
        put_module(enc, modules[name], _sizes(name, arch), name in PREDICTED_MODULES)
    return enc.finish()


def decode_section(data: bytes, arch: Architecture, ratio_units: int) -> NetworkSection:
    """Inverse of `encode_section`; LotteryError on data that the encoder does not write (the
    decoded content is coded again and must give the same bytes)."""
    dec = Decoder(bytes(data))
    part_bits = {}
    mask = get_mask(dec, arch.n_synth_weights, ratio_units)
    part_bits["mask"] = dec.cost
    modules = {}
    for name in MODULE_NAMES:
        before = dec.cost
        modules[name] = get_module(dec, _sizes(name, arch), name in PREDICTED_MODULES, name)
        part_bits[name] = dec.cost - before
    dec.check_end()
    if encode_section(mask, ratio_units, modules, arch) != bytes(data):
        raise LotteryError("corrupted .lottery file: the network section is not canonical")
    return NetworkSection(mask, modules, part_bits)


def part_bytes(section: NetworkSection, n_bytes: int) -> dict[str, int]:
    """The section's `n_bytes` shared out among its parts in proportion to their code lengths."""
    return share_bytes(section.part_bits, n_bytes)


def share_bytes(bits: dict[str, float], n_bytes: int) -> dict[str, int]:
    """`n_bytes` shared out among the keys of `bits` in proportion to their code lengths (largest
    remainders, so the shares add up to `n_bytes` exactly; evenly when every length is 0)."""
    names = list(bits)
    total = sum(bits.values())
    if total <= 0:
        shares = {p: n_bytes / len(names) for p in names}
    else:
        shares = {p: n_bytes * bits[p] / total for p in names}
    out = {p: int(shares[p]) for p in names}
    rest = n_bytes - sum(out.values())
    for p in sorted(names, key=lambda p: (out[p] - shares[p], names.index(p)))[:rest]:
        out[p] += 1
    return out
