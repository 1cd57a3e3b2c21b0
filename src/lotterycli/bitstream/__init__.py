"""The .lottery bitstream: container (header, sections, CRC), mask coding, parameter coding."""

from .container import (
    FORMAT_VERSION,
    MAGIC,
    DefaultLatentCoder,
    Header,
    LatentCoder,
    decode_file,
    describe,
    encode_file,
    read_file,
    read_header,
    write_file,
)
from .mask_coding import decode_mask, encode_mask, mask_bits
from .param_coding import decode_module, encode_module, module_bits, module_layout

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "DefaultLatentCoder",
    "Header",
    "LatentCoder",
    "decode_file",
    "describe",
    "encode_file",
    "read_file",
    "read_header",
    "write_file",
    "decode_mask",
    "encode_mask",
    "mask_bits",
    "decode_module",
    "encode_module",
    "module_bits",
    "module_layout",
]
