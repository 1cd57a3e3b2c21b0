"""Unsigned LEB128 integers (7 bits per byte, low bits first, high bit = more bytes follow):
the variable-length fields of the .lottery v2 header and of the latent section."""


def encode_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"a varint holds non-negative integers, got {n}")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
