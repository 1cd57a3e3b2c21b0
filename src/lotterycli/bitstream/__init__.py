"""The .lottery bitstream: container (header, sections, CRC), mask coding, parameter coding.

The header's names load at once and without torch (`header`); the rest on first use, so that
`from lotterycli.bitstream import describe` (what `lottery info` needs) does not pay for the
torch import.
"""

from .header import FORMAT_VERSION, MAGIC, Header, describe, read_header

_LAZY = {
    "DefaultLatentCoder": "container",
    "LatentCoder": "container",
    "decode_file": "container",
    "encode_file": "container",
    "read_file": "container",
    "write_file": "container",
    "decode_mask": "mask_coding",
    "encode_mask": "mask_coding",
    "mask_bits": "mask_coding",
    "decode_module": "param_coding",
    "encode_module": "param_coding",
    "module_bits": "param_coding",
    "module_layout": "param_coding",
}

__all__ = ["FORMAT_VERSION", "MAGIC", "Header", "describe", "read_header", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
