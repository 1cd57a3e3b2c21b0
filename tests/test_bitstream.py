"""The .lottery bitstream (format version 5): varints, the range coder, mask / parameter coding,
the network section, header, container round trips, bad input."""

from __future__ import annotations

import math
import random
import struct
import zlib
from dataclasses import replace

import pytest
import torch
from conftest import arch

from lotterycli.bitstream import container, mask_coding, network_section, param_coding
from lotterycli.bitstream.container import decode_file, encode_file, ratio_units
from lotterycli.bitstream.header import (
    ARCH_PRESETS,
    FORMAT_VERSION,
    MAGIC,
    MAX_PIXELS,
    MIN_LATENT_SECTION,
    SECTION_NAMES,
    architecture_bytes,
    architecture_fields,
    describe,
    read_header,
)
from lotterycli.bitstream.network_section import PARTS, NetworkSection, decode_section, encode_section, part_bytes
from lotterycli.bitstream.param_coding import ModuleCode
from lotterycli.bitstream.rangecoder import HALF, Context, Decoder, Encoder, bit_cost
from lotterycli.bitstream.varint import decode_varint, encode_varint
from lotterycli.errors import LotteryError
from lotterycli.model.architecture import (
    MAX_ARM_HIDDEN,
    MAX_KERNEL,
    MAX_LATENT_GAIN,
    MAX_LEVELS,
    MAX_MODNET_HIDDEN,
    MAX_MODNET_OUT,
    MAX_SYNTH_WIDTH,
    MODULE_NAMES,
    Architecture,
    latent_shapes,
    macs_per_pixel,
    module_layout,
)
from lotterycli.model.payload import Payload, QuantizedModule

SMALL = Architecture(
    n_levels=3, latent_gain=16.0, upsample_kernel=4, modnet_hidden=6, modnet_out=2, synth_hidden=(8, 6, 4),
    arm_hidden=24, arm_band_rows=0,
)

STAND_IN_K = 2  # the stand-in latent coder's Exp-Golomb order


def stand_in_bytes(values: list[int]) -> bytes:
    """The stand-in latent section: k (1 byte), the number of values (2 bytes, so that the section
    has the 3 bytes a latent section has at least), then `param_coding`'s values in one stream."""
    enc = Encoder()
    param_coding.put_values(enc, values, STAND_IN_K, [len(values)])
    return bytes([STAND_IN_K]) + struct.pack("<H", len(values) & 0xFFFF) + enc.finish()


class StandInLatentCoder:
    """Codes the grids with the parameter coder (ignores the ARM): enough to test the container.
    Like the real coder it refuses data that it would not write (here: re-encodes and compares)."""

    def encode(self, latents, arm, band_rows=0):
        return stand_in_bytes([v for t in latents for v in t.reshape(-1).tolist()])

    def decode(self, data, shapes, arm, band_rows=0):
        n = sum(h * w for h, w in shapes)
        data = bytes(data)
        if len(data) < 3 or data[0] > param_coding.MAX_K:
            raise LotteryError("stand-in latent data: bad start")
        dec = Decoder(data[3:], "latent section")
        values = param_coding.get_values(dec, n, data[0], [n])
        dec.check_end()
        if stand_in_bytes(values) != data:
            raise LotteryError("stand-in latent data: not canonical")
        out, start = [], 0
        for h, w in shapes:
            out.append(torch.tensor(values[start : start + h * w], dtype=torch.int64).reshape(h, w))
            start += h * w
        return out


CODER = StandInLatentCoder()


def make_payload(arch=SMALL, height=10, width=13, seed=1234567890123, ratio=0.3, gen_seed=0, scale=3.0, frame=0,
                 restoration=False):
    g = torch.Generator().manual_seed(gen_seed)
    n = arch.n_synth_weights
    mask = torch.rand(n, generator=g) >= ratio
    modules = {}
    for i, name in enumerate(MODULE_NAMES):
        tensors = {}
        for pname, shape in module_layout(name, arch):
            tensors[pname] = torch.round(torch.randn(shape, generator=g) * scale * (i + 1)).to(torch.int64)
        modules[name] = QuantizedModule(shift=6 + i, tensors=tensors)
    latents = [
        torch.round(torch.randn(h, w, generator=g) * 2).to(torch.int64) for h, w in latent_shapes(height, width, arch.n_levels)
    ]
    return Payload(height, width, seed, ratio, arch, mask, modules, latents, frame=frame, restoration=restoration)


def assert_payload_equal(a: Payload, b: Payload):
    assert (a.height, a.width, a.seed, a.mask_ratio, a.architecture, a.frame, a.restoration) == (
        b.height, b.width, b.seed, b.mask_ratio, b.architecture, b.frame, b.restoration,
    )
    assert torch.equal(a.mask, b.mask)
    assert set(a.modules) == set(b.modules) == set(MODULE_NAMES)
    for name in MODULE_NAMES:
        ma, mb = a.modules[name], b.modules[name]
        assert ma.tensor_shifts() == mb.tensor_shifts()
        assert list(ma.tensors) == list(mb.tensors)
        for k in ma.tensors:
            assert mb.tensors[k].dtype == torch.int64
            assert torch.equal(ma.tensors[k], mb.tensors[k])
    assert len(a.latents) == len(b.latents)
    for x, y in zip(a.latents, b.latents):
        assert torch.equal(x, y)


def resign(data: bytes) -> bytes:
    """Recompute the CRC so that a doctored file reaches the field checks."""
    body = data[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def header_fields(data: bytes) -> dict[str, tuple[int, int]]:
    """(start, end) of each header field of a v5 file (varints: docs/format.md), found by walking
    the bytes, without the reader under test. The header ends with one length, the network
    section's; the latent section's is what the file leaves before its CRC."""
    fields, pos = {}, 5

    def take(name, n=None):
        nonlocal pos
        start = pos
        if n is None:  # a varint
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        else:
            pos += n
        fields[name] = (start, pos)

    for name in ("height", "width", "seed", "ratio"):
        take(name)
    take("layout", 1)
    layout = data[fields["layout"][0]]
    if not layout & 0x83:  # no preset: the architecture fields follow
        take("levels", 1)
        take("gain", 4)
        take("kernel", 1)
        for name in ("mhid", "mout", "s1", "s2", "s3", "ahid"):
            take(name)
    take("bands")
    n_shifts = 6 + 1 + 8  # the ARM's, the upsampling kernel's, the ModNet's
    take("shifts", (n_shifts + 1) // 2 if layout & 0x04 else n_shifts)
    take("len_network")
    fields["end"] = (pos, pos)
    return fields


def with_field(data: bytes, field: str, value: bytes) -> bytes:
    """`data` with header field `field` replaced by `value` (any length), CRC recomputed."""
    start, end = header_fields(data)[field]
    return resign(data[:start] + value + data[end:])


def network_bytes(data: bytes) -> bytes:
    """The network section of a file, located by `header_fields` alone."""
    start, end = header_fields(data)["len_network"]
    n, _ = decode_varint(data, start, "len", 2**32)
    return data[end : end + n]


def with_network(data: bytes, section: bytes) -> bytes:
    """`data` with its network section replaced by `section` (length field and CRC updated)."""
    start, end = header_fields(data)["len_network"]
    old = len(network_bytes(data))
    return resign(data[:start] + encode_varint(len(section)) + section + data[end + old :])


def payload_codes(p: Payload) -> dict[str, ModuleCode]:
    return {name: param_coding.module_code(p.modules[name], name, module_layout(name, p.architecture))[0]
            for name in MODULE_NAMES}


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def coded(put, *args) -> bytes:
    """The bytes of one `put_*` call on a fresh range encoder."""
    enc = Encoder()
    put(enc, *args)
    return enc.finish()


def mask_bytes(bits: list[int], units: int) -> bytes:
    return coded(mask_coding.put_mask, bits, units)


def read_mask(data: bytes, n: int, units: int) -> tuple[list[int], Decoder]:
    dec = Decoder(data)
    bits = mask_coding.get_mask(dec, n, units)
    dec.check_end()
    return bits, dec


def module_bytes(code: ModuleCode, sizes: list[int], may_predict: bool = False) -> bytes:
    return coded(param_coding.put_module, code, sizes, may_predict)


def read_module(data: bytes, sizes: list[int], may_predict: bool = False, name: str = "arm") -> ModuleCode:
    dec = Decoder(data)
    code = param_coding.get_module(dec, sizes, may_predict, name)
    dec.check_end()
    return code


def values_bytes(values, k: int, sizes: list[int]) -> bytes:
    return coded(param_coding.put_values, values, k, sizes)


def read_values(data: bytes, n: int, k: int, sizes: list[int]) -> list[int]:
    dec = Decoder(data)
    values = param_coding.get_values(dec, n, k, sizes)
    dec.check_end()
    return values


def random_mask(n: int, n_ones: int, seed: int) -> list[int]:
    ones = set(random.Random(seed).sample(range(n), n_ones))
    return [int(i in ones) for i in range(n)]


# Varints -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**64 - 1])
def test_varint_round_trip(value):
    data = encode_varint(value)
    assert len(data) == max(1, math.ceil(value.bit_length() / 7))
    assert all(b & 0x80 for b in data[:-1]) and not data[-1] & 0x80
    assert decode_varint(b"xy" + data + b"z", 2, "field", 2**64 - 1) == (value, 2 + len(data))
    assert decode_varint(data, 0, "field", value) == (value, len(data))  # the limit itself is allowed


def test_varint_refuses_negative_values():
    with pytest.raises(ValueError):
        encode_varint(-1)


@pytest.mark.parametrize("data", [b"\x80\x00", b"\x81\x00", b"\xff\x80\x00", b"\x8a\x80\x80\x00"])
def test_varint_refuses_non_shortest_forms(data):
    with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: the height is not in its shortest form$"):
        decode_varint(data, 0, "height", 2**64 - 1)


def test_varint_refuses_values_above_the_limit():
    with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: the width 101 is out of range \(at most 100\)$"):
        decode_varint(encode_varint(101), 0, "width", 100)
    with pytest.raises(LotteryError, match="width 16385 is out of range"):
        decode_varint(b"\x81\x80\x01", 0, "width", 16384)
    # an endless run of continuation bytes is refused once it exceeds what the limit allows
    with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: the width is out of range$"):
        decode_varint(b"\xff" * 100, 0, "width", 16384)
    with pytest.raises(LotteryError, match="out of range"):
        decode_varint(encode_varint(2**64), 0, "seed", 2**64 - 1)


def test_varint_truncation_names_the_field():
    for data in (b"", b"\x80", b"\xff\xff"):
        with pytest.raises(LotteryError, match=r"^truncated \.lottery file: it ends inside the seed$"):
            decode_varint(data, 0, "seed", 2**64 - 1)
    with pytest.raises(LotteryError, match="truncated"):
        decode_varint(b"\x05", 1, "seed", 10)


# Range coder --------------------------------------------------------------------------------
def test_range_coder_round_trip_and_cost():
    rng = random.Random(4)
    for n in (0, 1, 2, 7, 40, 900):
        probs = [rng.choice((1, 2, HALF, 65534, 65535, rng.randrange(1, 65536))) for _ in range(n)]
        bits = [int(rng.random() >= p / 65536) for p in probs]
        enc = Encoder()
        for p, b in zip(probs, bits):
            enc.bit(p, b)
        data = enc.finish()
        dec = Decoder(data)
        assert [dec.bit(p) for p in probs] == bits
        dec.check_end()
        ideal = sum(bit_cost(p, b) for p, b in zip(probs, bits))
        assert dec.cost == pytest.approx(ideal)
        assert len(data) <= math.ceil(ideal / 8) + 2  # the stream ends on a byte, not a word
        # past its end the decoder reads zeros (at most 4 bytes' worth): zeros that are there are extra
        dec = Decoder(data + bytes(5))
        assert [dec.bit(p) for p in probs] == bits
        with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: trailing data in the network section$"):
            dec.check_end()
    # nothing but zeros at p(0) = 1/2 (or no bit at all) needs no byte: the decoder reads zeros past the end
    assert Encoder().finish() == b""
    assert coded(lambda enc: enc.bits(0, 5)) == b""
    assert Decoder(b"").bits(5) == 0
    # adaptive contexts: Krichevsky-Trofimov counts
    ctx = Context()
    assert ctx.p0() == HALF
    for b in (0, 0, 1):
        ctx.update(b)
    assert ctx.p0() == (5 << 16) // 8  # (2 * 2 + 1) / (2 * 3 + 2)


def test_range_coder_refuses_reading_far_past_the_end():
    enc = Encoder()
    enc.bits(0x5A5A5A5A, 32)
    data = enc.finish()
    assert len(data) == 4
    dec = Decoder(data[:1], "mask")
    with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: the mask is truncated$"):
        dec.bits(32)


# Mask --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.3, 0.5, 0.9, 1.0])
def test_mask_round_trip(ratio):
    n = arch().n_synth_weights
    g = torch.Generator().manual_seed(1)
    bits = (torch.rand(n, generator=g) >= ratio).to(torch.uint8).tolist()
    if ratio == 0.0:
        bits = [1] * n
    if ratio == 1.0:
        bits = [0] * n
    units = ratio_units(ratio)
    data = mask_bytes(bits, units)
    out, dec = read_mask(data, n, units)
    assert out == bits and all(b in (0, 1) for b in out)
    assert dec.cost >= mask_coding.mask_bits(n, sum(bits)) - 1  # the count, then log2 C(n, k)
    assert len(data) <= math.ceil(dec.cost / 8) + 2
    if ratio in (0.0, 1.0):
        # constant and exactly as the ratio implies: the count delta alone, one bit, no byte
        assert data == b"" and dec.cost == 1.0


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7])
def test_mask_size_near_log2_binomial(ratio):
    n = arch().n_synth_weights  # 1,723
    units = ratio_units(ratio)
    k = mask_coding.expected_ones(n, units)
    bits = random_mask(n, k, seed=7)  # what the encoder writes: the count the ratio implies
    ideal = mask_coding.mask_bits(n, k)
    p = k / n
    assert ideal <= -n * (p * math.log2(p) + (1 - p) * math.log2(1 - p))  # at most n H_b(k / n)
    data = mask_bytes(bits, units)
    out, dec = read_mask(data, n, units)
    assert out == bits
    assert dec.cost == pytest.approx(ideal + 1, abs=0.5)  # + the count bit; 16-bit probabilities round
    assert math.floor(ideal / 8) - 1 <= len(data) <= (ideal + 1) / 8 + 2
    # another count costs its signed delta (a few bits) on top of log2 C(n, k')
    other = random_mask(n, k - 37, seed=8)
    out, dec = read_mask(mask_bytes(other, units), n, units)
    assert out == other
    extra = dec.cost - mask_coding.mask_bits(n, k - 37)
    assert 3 < extra < 2 * math.log2(37) + 4


def test_mask_bits_is_log2_binomial():
    assert mask_coding.mask_bits(10, 3) == pytest.approx(math.log2(120))
    assert mask_coding.mask_bits(1723, 0) == pytest.approx(0, abs=1e-9)
    assert mask_coding.mask_bits(1723, 1723) == pytest.approx(0, abs=1e-9)
    assert mask_coding.mask_bits(1723, 1206) == pytest.approx(math.log2(math.comb(1723, 1206)))


def test_mask_constant_is_the_count_alone():
    ones, zeros = [1] * 100, [0] * 100
    assert mask_bytes(ones, 0) == b""
    assert mask_bytes(zeros, 10000) == b""
    # all zeros where the ratio keeps all: the count delta -100 and nothing else
    assert mask_bytes(zeros, 0) == values_bytes([-100], 0, [1]) != b""
    assert mask_bytes(ones, 10000) == values_bytes([100], 0, [1])
    for units in (0, 3000, 10000):
        for m in (ones, zeros):
            assert read_mask(mask_bytes(m, units), 100, units)[0] == m


def test_mask_count_is_relative_to_the_ratio():
    n = 1000
    mask = random_mask(n, 700, seed=3)  # exactly what ratio 0.3 keeps: count delta 0, one bit
    for ones in (700, 640, 1000, 0):
        m = random_mask(n, ones, seed=ones)
        data = mask_bytes(m, 3000)
        assert read_mask(data, n, 3000)[0] == m
        if ones in (0, 1000):
            assert len(data) <= 3  # a constant mask: the count alone
    at_ratio = mask_bytes(mask, 3000)
    assert read_mask(at_ratio, n, 3000)[1].cost == pytest.approx(mask_coding.mask_bits(n, 700) + 1, abs=0.5)
    # the same mask under another ratio needs a larger count delta (and decodes only with that ratio)
    other = mask_bytes(mask, 5000)
    out, dec = read_mask(other, n, 5000)
    assert out == mask
    assert dec.cost > mask_coding.mask_bits(n, 700) + 10  # +200: sign, Exp-Golomb prefix and suffix
    assert len(other) > len(at_ratio)
    try:  # read under another ratio: another count, so another mask or a refusal
        assert read_mask(other, n, 3000)[0] != mask
    except LotteryError:
        pass
    assert mask_coding.expected_ones(1627, 3000) == 1627 - round(0.3 * 1627)
    assert mask_coding.expected_ones(10, 5000) == 5
    assert mask_coding.expected_ones(3, 5000) == 1  # half a weight removed rounds up


def _mask_stream(delta: int, bits: list[int], n_ones: int) -> bytes:
    """A mask stream as `put_mask` writes it, but with any count delta and with the bits coded at
    the probabilities that the count `n_ones` gives (what a decoder uses), consistent or not."""
    enc = Encoder()
    param_coding.put_values(enc, [delta], 0, [1])
    zeros, n = len(bits) - n_ones, len(bits)
    for i, b in enumerate(bits):
        enc.bit(max(1, min(65535, (max(zeros, 0) << 16) // (n - i))), b)
        zeros -= 1 - b
    return enc.finish()


def test_mask_bad_data():
    n = 1000
    for bad in (b"", b"\x80", b"\x80\x00\x01", bytes([0xFF]) * 6):
        with pytest.raises(LotteryError, match="network section"):
            read_mask(bad, n, 3000)
    # counts outside 0..n
    with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: the mask claims -1 kept weights of 10$"):
        read_mask(values_bytes([-1], 0, [1]), 10, 10000)  # one fewer than none
    with pytest.raises(LotteryError, match="the mask claims 21 kept weights of 10"):
        read_mask(values_bytes([11], 0, [1]), 10, 0)
    with pytest.raises(LotteryError, match="the mask claims 11 kept weights of 10"):
        read_mask(values_bytes([1], 0, [1]), 10, 0)  # one more than all ten
    with pytest.raises(LotteryError, match="kept weights"):
        read_mask(values_bytes([2**62], 0, [1]), 10, 5000)
    # bits that disagree with the count: six ones, or six zeros, where the count says five of ten
    assert read_mask(_mask_stream(0, [1] * 5 + [0] * 5, 5), 10, 5000)[0] == [1] * 5 + [0] * 5
    for bits in ([1] * 6 + [0] * 4, [0] * 6 + [1] * 4):
        with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: the mask does not match its count$"):
            read_mask(_mask_stream(0, bits, 5), 10, 5000)
    # a constant mask has no body: what follows the count is not the mask's
    with pytest.raises(LotteryError, match="trailing data"):
        read_mask(b"\x00xxxxx", 10, 0)  # (the decoder reads 4 bytes ahead)
    rng = random.Random(0)
    for _ in range(200):  # garbage decodes to a mask of n bits or is refused
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        try:
            out, _ = read_mask(junk, 60, 5000)
        except LotteryError:
            continue
        assert len(out) == 60 and set(out) <= {0, 1}


# Parameters ---------------------------------------------------------------------------------
def test_module_layouts_reference():
    a = arch()
    assert module_layout("arm", a) == [
        ("fc1.weight", (24, 24)),
        ("fc1.bias", (24,)),
        ("fc2.weight", (24, 24)),
        ("fc2.bias", (24,)),
        ("fc3.weight", (2, 24)),
        ("fc3.bias", (2,)),
    ]
    assert module_layout("upsampling", a) == [("kernel", (8, 8))]
    modnet = dict(module_layout("modnet", a))
    assert modnet["u0.weight"] == (48, 7) and modnet["u2.weight"] == (3, 3, 3, 3)
    assert [n for n, _ in module_layout("modnet", a)] == [
        "u0.weight", "u0.bias", "u1.weight", "u1.bias", "u2.weight", "u2.bias", "u3.weight", "u3.bias"
    ]
    assert param_coding.layout_size("arm", a) == 24 * 24 + 24 + 24 * 24 + 24 + 48 + 2
    assert param_coding.tensor_sizes(module_layout("arm", a)) == [576, 24, 576, 24, 48, 2]
    assert param_coding.tensor_sizes([]) == []
    with pytest.raises(ValueError):
        module_layout("nope", a)


@pytest.mark.parametrize("scale", [0, 0.3, 5, 300, 2**20])
def test_param_round_trip(scale):
    a = arch()
    g = torch.Generator().manual_seed(3)
    for name in MODULE_NAMES:
        layout = module_layout(name, a)
        sizes = param_coding.tensor_sizes(layout)
        may_predict = name in param_coding.PREDICTED_MODULES
        tensors = {
            p: torch.round(torch.randn(s, generator=g, dtype=torch.float64) * scale).clamp(-(2**20), 2**20).to(torch.int64)
            for p, s in layout
        }
        q = QuantizedModule(shift=9, tensors=tensors)
        code, n_bytes = param_coding.module_code(q, name, layout)
        assert param_coding.module_code(q, name) == (code, n_bytes)  # the layout only checks
        assert param_coding.module_bits(q, name) == 8 * n_bytes
        assert 0 <= code.k <= param_coding.MAX_K and len(code.values) == sum(sizes)
        data = module_bytes(code, sizes, may_predict)
        assert len(data) == n_bytes
        if not code.predicted:
            flat = [v for p in tensors for v in tensors[p].reshape(-1).tolist()]
            assert code.values == tuple(flat)
            assert param_coding.best_order(flat, sizes, may_predict) == (code.k, n_bytes)
        assert read_module(data, sizes, may_predict, name) == code
        out = param_coding.quantized_module(code, q.tensor_shifts(), layout, name)
        assert out.shift == 9 and out.tensor_shifts() == q.tensor_shifts()
        assert list(out.tensors) == [p for p, _ in layout]
        for p in tensors:
            assert out.tensors[p].dtype == torch.int64 and torch.equal(out.tensors[p], tensors[p])


def test_module_stream_layout():
    """k in 4 raw bits, the prediction flag (1 raw bit) for the upsampling kernel only, then the
    values with fresh contexts."""
    sizes = [3, 2]
    code = ModuleCode(5, False, (7, 0, -40, 1, 2))
    enc = Encoder()
    enc.bits(5, param_coding.K_BITS)
    param_coding.put_values(enc, code.values, 5, sizes)
    assert module_bytes(code, sizes) == enc.finish()
    for flag in (False, True):
        enc = Encoder()
        enc.bits(5, 4)
        enc.bit(HALF, int(flag))
        param_coding.put_values(enc, code.values, 5, sizes)
        data = module_bytes(replace(code, predicted=flag), sizes, may_predict=True)
        assert data == enc.finish()
        assert read_module(data, sizes, True, "upsampling") == replace(code, predicted=flag)
    assert param_coding.K_BITS == 4 and param_coding.MAX_K == 12 and param_coding.PREDICTED_MODULES == ("upsampling",)


def test_best_order_is_the_shortest_nearby():
    rng = random.Random(8)
    for b in (0.0, 1.0, 40.0, 5000.0):
        vals = [round(rng.expovariate(1 / b) * rng.choice((-1, 1))) if b else 0 for _ in range(300)]
        k, n_bytes = param_coding.best_order(vals, [300])
        assert n_bytes == len(module_bytes(ModuleCode(k, False, tuple(vals)), [300]))
        centre = max(0, (sum(abs(v) for v in vals) // 300).bit_length() - 1)
        assert abs(k - min(centre, param_coding.MAX_K)) <= 2
        for other in range(max(0, k - 2), min(param_coding.MAX_K, k + 2) + 1):
            assert n_bytes <= len(module_bytes(ModuleCode(other, False, tuple(vals)), [300]))
    with pytest.raises(ValueError, match="int64"):
        param_coding.best_order([2**63], [1])


def test_param_per_tensor_shifts_round_trip():
    layout = module_layout("arm", SMALL)
    q = make_payload().modules["arm"]
    q.shifts = {"fc1.weight": 3, "fc3.bias": 11}
    code, _ = param_coding.module_code(q, "arm", layout)
    out = param_coding.quantized_module(code, q.tensor_shifts(), layout, "arm")
    assert out.tensor_shifts() == q.tensor_shifts()
    assert out.shift == 3 and out.shift_of("fc1.bias") == 6  # the first tensor's shift is the base
    assert all(torch.equal(out.tensors[k], q.tensors[k]) for k in q.tensors)


def test_param_extreme_values():
    values = [0, 1, -1, 2**20, -(2**20), 2**40, -(2**62), 2**63 - 1, -(2**63), 7, 0, 0]
    for k in (0, 5, param_coding.MAX_K):
        assert read_values(values_bytes(values, k, [len(values)]), len(values), k, [len(values)]) == values
        assert read_values(values_bytes(values, k, [5, 7]), 12, k, [5, 7]) == values
    with pytest.raises(ValueError):
        values_bytes([2**64], 0, [1])
    # a stream may hold a magnitude past int64 (put_values does not check): the decoder refuses it
    for v in (2**63, -(2**63) - 1, 2**64 - 1):
        with pytest.raises(LotteryError, match="beyond int64"):
            read_values(values_bytes([v], 0, [1]), 1, 0, [1])
    # int64 extremes in a module: plain coding only (their difference from bicubic overflows)
    layout = [("kernel", (4, 4))]
    kernel = torch.zeros(4, 4, dtype=torch.int64)
    kernel[0, 0], kernel[1, 1], kernel[3, 2] = 2**63 - 1, -(2**63), -(2**63)
    for name in ("upsampling", "arm"):
        q = QuantizedModule(shift=12, tensors={"kernel": kernel})
        code, _ = param_coding.module_code(q, name, layout)
        assert not code.predicted and code.values == tuple(kernel.reshape(-1).tolist())
        back = param_coding.quantized_module(code, {"kernel": 12}, layout, name)
        assert torch.equal(back.tensors["kernel"], kernel)
    # a predicted code whose sum with the prediction leaves int64 is refused
    from lotterycli.model.upsampling import initial_kernel_integers

    pred = initial_kernel_integers(4, 12)
    top = max(range(16), key=lambda i: pred[i])
    assert pred[top] > 0
    values = [0] * 16
    values[top] = 2**63 - 1
    with pytest.raises(LotteryError, match="beyond int64"):
        param_coding.quantized_module(ModuleCode(12, True, tuple(values)), {"kernel": 12}, layout, "upsampling")


def test_param_size_near_laplace_cost():
    # Laplace(b) integers: ideal cost ~ log2(2 e b) bits each for b >> 1.
    rng = random.Random(5)
    for b in (30.0, 3000.0):
        vals = [round(rng.expovariate(1 / b) * rng.choice((-1, 1))) for _ in range(1250)]
        ideal = len(vals) * math.log2(2 * math.e * b)
        k, n_bytes = param_coding.best_order(vals, [len(vals)])
        assert 8 * n_bytes < ideal * 1.03 + 64
        dec = Decoder(module_bytes(ModuleCode(k, False, tuple(vals)), [len(vals)]))
        param_coding.get_module(dec, [len(vals)], False, "arm")
        assert abs(dec.cost - 8 * n_bytes) < 24  # `cost` is the code length, to the termination


def _bad_k_stream(k: int, may_predict: bool = False) -> bytes:
    enc = Encoder()
    enc.bits(k, 4)
    if may_predict:
        enc.bit(HALF, 0)
    param_coding.put_values(enc, [1, -2, 3], 0, [3])
    return enc.finish()


def test_param_bad_data():
    sizes = [3]
    for k in (13, 14, 15):  # 4 bits hold up to 15; orders past MAX_K are refused
        for may_predict, name in ((False, "arm"), (True, "upsampling")):
            with pytest.raises(LotteryError, match=rf"^corrupted \.lottery file: invalid Exp-Golomb order {k} in the {name} network$"):
                read_module(_bad_k_stream(k, may_predict), sizes, may_predict, name)
        with pytest.raises(ValueError, match="Exp-Golomb order"):
            module_bytes(ModuleCode(k, False, (1, -2, 3)), sizes)
    with pytest.raises(ValueError, match="Exp-Golomb order"):
        module_bytes(ModuleCode(-1, False, (1, -2, 3)), sizes)
    assert read_module(_bad_k_stream(12), sizes).k == 12
    good = values_bytes(list(range(-300, 300)), 3, [600])
    assert read_values(good, 600, 3, [600]) == list(range(-300, 300))
    with pytest.raises(LotteryError):
        read_values(good[: len(good) // 2], 600, 3, [600])  # truncated
    with pytest.raises(LotteryError, match="trailing data"):
        read_values(good + b"\x01\x02\x03\x04\x05", 600, 3, [600])
    try:  # other contexts (or another order): other values
        assert read_values(good, 600, 3, [300, 300]) != list(range(-300, 300))
    except LotteryError:
        pass
    try:
        assert read_values(good, 600, 4, [600]) != list(range(-300, 300))
    except LotteryError:
        pass
    # a prefix longer than any int64 needs is refused as it is read, not after
    enc = Encoder()
    zero, sign, prefix = Context(), Context(), [Context() for _ in range(param_coding._N_PREFIX_CTX)]
    enc.adaptive(zero, 1)
    enc.adaptive(sign, 0)
    for i in range(200):
        enc.adaptive(prefix[min(i, len(prefix) - 1)], 1)
    with pytest.raises(LotteryError, match="invalid network section data"):
        read_values(enc.finish(), 1, 0, [1])
    rng = random.Random(0)
    for _ in range(200):  # garbage either decodes to something or raises LotteryError
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        try:
            out = read_module(junk, [20, 30])
        except LotteryError:
            continue
        assert 0 <= out.k <= param_coding.MAX_K and len(out.values) == 50 and not out.predicted


def test_param_non_canonical_codes_are_refused():
    """`quantized_module` takes only the encoder's own choice of k (and of the kernel's coding),
    so that one payload has one byte string."""
    layout = module_layout("arm", SMALL)
    q = make_payload().modules["arm"]
    code, _ = param_coding.module_code(q, "arm", layout)
    for k in range(param_coding.MAX_K + 1):
        other = replace(code, k=k)
        if k == code.k:
            assert torch.equal(param_coding.quantized_module(other, q.tensor_shifts(), layout, "arm").tensors["fc1.weight"],
                               q.tensors["fc1.weight"])
            continue
        with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: the arm network is not coded as the encoder codes it$"):
            param_coding.quantized_module(other, q.tensor_shifts(), layout, "arm")


def test_param_layout_mismatch_is_rejected():
    layout = module_layout("upsampling", SMALL)
    for q in (QuantizedModule(shift=0, tensors={"kernel": torch.zeros(3, 3, dtype=torch.int64)}),
              QuantizedModule(shift=0, tensors={"weights": torch.zeros(4, 4, dtype=torch.int64)}),
              QuantizedModule(shift=0, tensors={"kernel": torch.zeros(4, 4)}),  # float
              QuantizedModule(shift=0, tensors={"kernel": torch.zeros(4, 4, dtype=torch.bool)})):
        with pytest.raises(ValueError):
            param_coding.module_code(q, "upsampling", layout)
    with pytest.raises(ValueError, match="do not add up"):
        values_bytes([1, 2, 3], 0, [1, 1])
    with pytest.raises(ValueError, match="do not add up"):
        param_coding.get_values(Decoder(b""), 3, 0, [2, 2])


def test_upsampling_kernel_is_coded_against_bicubic():
    """A kernel near the bicubic start is coded as its difference from it (prediction flag set),
    in fewer bytes than the same integers as they are, and decodes exactly."""
    from lotterycli.model.upsampling import bicubic_kernel_1d, initial_kernel_integers

    k1 = bicubic_kernel_1d(8).double()
    for shift in range(0, 15):  # the exact rational prediction equals the float one (dyadic taps)
        want = torch.floor(torch.outer(k1, k1) * 2**shift + 0.5).long().reshape(-1).tolist()
        assert list(initial_kernel_integers(8, shift)) == want
    g = torch.Generator().manual_seed(5)
    layout = [("kernel", (8, 8))]
    pred = torch.tensor(initial_kernel_integers(8, 9)).view(8, 8)
    near = pred + torch.randint(-3, 4, (8, 8), generator=g)
    q = QuantizedModule(shift=9, tensors={"kernel": near})
    code, n_bytes = param_coding.module_code(q, "upsampling", layout)
    assert code.predicted and code.values == tuple((near - pred).reshape(-1).tolist())
    plain_k, plain_bytes = param_coding.best_order(near.reshape(-1).tolist(), [64], True)
    assert n_bytes < plain_bytes * 0.6
    data = module_bytes(code, [64], may_predict=True)
    assert len(data) == n_bytes and param_coding.module_bits(q, "upsampling") == 8 * n_bytes
    assert read_module(data, [64], True, "upsampling") == code
    back = param_coding.quantized_module(code, {"kernel": 9}, layout, "upsampling")
    assert torch.equal(back.tensors["kernel"], near) and back.shift == 9
    far = QuantizedModule(shift=9, tensors={"kernel": -near})  # far from bicubic: coded as it is
    plain, _ = param_coding.module_code(far, "upsampling", layout)
    assert not plain.predicted and plain.values == tuple((-near).reshape(-1).tolist())
    assert torch.equal(param_coding.quantized_module(plain, {"kernel": 9}, layout, "upsampling").tensors["kernel"], -near)
    # the longer of the two codings is refused (only the encoder's choice is canonical)
    diff = (-near - pred).reshape(-1).tolist()
    diff_k, diff_bytes = param_coding.best_order(diff, [64], True)
    assert diff_bytes >= len(module_bytes(plain, [64], True))
    with pytest.raises(LotteryError, match="not coded as the encoder codes it"):
        param_coding.quantized_module(ModuleCode(diff_k, True, tuple(diff)), {"kernel": 9}, layout, "upsampling")
    with pytest.raises(LotteryError, match="not coded as the encoder codes it"):  # plain, though the difference is shorter
        param_coding.quantized_module(ModuleCode(plain_k, False, tuple(near.reshape(-1).tolist())), {"kernel": 9},
                                      layout, "upsampling")
    # the prediction depends on the shift: the same code under another shift is another kernel
    other = param_coding.quantized_module(code, {"kernel": 8}, layout, "upsampling")
    assert not torch.equal(other.tensors["kernel"], near)
    # the other modules have no prediction: no flag in their stream, and a code claiming one is refused
    arm_layout = module_layout("arm", SMALL)
    arm_q = make_payload().modules["arm"]
    arm, _ = param_coding.module_code(arm_q, "arm", arm_layout)
    assert not arm.predicted
    with pytest.raises(ValueError, match="only the upsampling kernel"):
        module_bytes(replace(arm, predicted=True), param_coding.tensor_sizes(arm_layout), False)
    with pytest.raises(LotteryError, match="claims a prediction"):
        param_coding.quantized_module(replace(arm, predicted=True), arm_q.tensor_shifts(), arm_layout, "arm")
    odd = initial_kernel_integers(5, 4)  # odd sizes have non-dyadic taps: still exact and symmetric
    assert len(odd) == 25 and odd == tuple(reversed(odd))


def test_each_tensor_has_its_own_zero_and_prefix_contexts():
    """Many zeros in one tensor and none in the next: per-tensor contexts code it smaller."""
    g = torch.Generator().manual_seed(2)
    sparse = [0] * 200 + [1, -1]
    dense = (torch.randint(1, 40, (200,), generator=g) * torch.where(torch.rand(200, generator=g) < 0.5, -1, 1)).tolist()
    values = sparse + dense
    joint, split = values_bytes(values, 3, [402]), values_bytes(values, 3, [202, 200])
    assert len(split) < len(joint)
    assert read_values(split, 402, 3, [202, 200]) == values
    assert read_values(joint, 402, 3, [402]) == values
    with pytest.raises(ValueError):
        values_bytes(values, 3, [100, 100])
    # module_code passes the layout's tensor sizes: a module split so codes smaller than one tensor
    two = QuantizedModule(shift=0, tensors={"a": torch.tensor(sparse), "b": torch.tensor(dense)})
    one = QuantizedModule(shift=0, tensors={"a": torch.tensor(values)})
    assert param_coding.module_code(two, "arm")[1] < param_coding.module_code(one, "arm")[1]


# Network section ----------------------------------------------------------------------------
def _section(p: Payload | None = None) -> tuple[bytes, list[int], dict[str, ModuleCode], Payload]:
    p = make_payload() if p is None else p
    mask = p.mask.to(torch.uint8).tolist()
    codes = payload_codes(p)
    return encode_section(mask, ratio_units(p.mask_ratio), codes, p.architecture), mask, codes, p


def test_network_section_round_trip():
    data, mask, codes, p = _section()
    section = decode_section(data, SMALL, 3000)
    assert section.mask == mask and section.modules == codes
    assert list(section.part_bits) == list(PARTS) == ["mask", *MODULE_NAMES]
    assert all(bits > 0 for bits in section.part_bits.values())
    assert sum(section.part_bits.values()) == pytest.approx(8 * len(data), abs=32)
    # one stream: the mask, then the ARM, the upsampling kernel and ModNet, each with fresh contexts
    enc = Encoder()
    mask_coding.put_mask(enc, mask, 3000)
    for name in MODULE_NAMES:
        param_coding.put_module(enc, codes[name], param_coding.tensor_sizes(module_layout(name, SMALL)),
                                name in param_coding.PREDICTED_MODULES)
    assert enc.finish() == data
    # what the file holds, right after the header
    f = encode_file(p, latent_coder=CODER)
    h = read_header(f)
    assert f[h.header_size : h.header_size + h.section_sizes["network"]] == data == network_bytes(f)
    # one stream ends once: shorter than the parts coded on their own
    alone = len(mask_bytes(mask, 3000)) + sum(param_coding.module_code(p.modules[n], n)[1] for n in MODULE_NAMES)
    assert len(data) <= alone
    # the mask ratio sets the expected count: the same bytes under another ratio are another section
    try:
        assert decode_section(data, SMALL, 5000).mask != mask
    except LotteryError:
        pass


def test_part_bytes_share_the_section_by_code_length():
    data, mask, codes, p = _section()
    section = decode_section(data, SMALL, 3000)
    parts = part_bytes(section, len(data))
    assert list(parts) == list(PARTS) and sum(parts.values()) == len(data)
    total = sum(section.part_bits.values())
    for name in PARTS:
        assert abs(parts[name] - len(data) * section.part_bits[name] / total) < 1  # largest remainders
    # roughly what each part takes on its own
    assert abs(parts["mask"] - len(mask_bytes(mask, 3000))) <= 3
    for name in MODULE_NAMES:
        assert abs(parts[name] - param_coding.module_code(p.modules[name], name)[1]) <= 3
    # exact sharing: ties go to the earlier part, nothing is lost or made up
    even = NetworkSection([], {}, dict.fromkeys(PARTS, 1.0))
    assert part_bytes(even, 10) == {"mask": 3, "arm": 3, "upsampling": 2, "modnet": 2}
    assert part_bytes(even, 0) == dict.fromkeys(PARTS, 0)
    nothing = NetworkSection([], {}, dict.fromkeys(PARTS, 0.0))
    assert sum(part_bytes(nothing, 7).values()) == 7
    skewed = NetworkSection([], {}, {"mask": 0.4, "arm": 1000.0, "upsampling": 0.3, "modnet": 10.0})
    assert part_bytes(skewed, 100) == {"mask": 0, "arm": 99, "upsampling": 0, "modnet": 1}


def test_network_section_refuses_trailing_and_non_canonical_bytes():
    data, mask, codes, _ = _section()
    for extra in (b"\x00", b"\x01", b"\x00" * 4, b"\xff" * 8):
        with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: .*network section"):
            decode_section(data + extra, SMALL, 3000)
    # the same content with a byte string the encoder does not write: decodes, but is refused
    last = data[-1]
    for alt in (data[:-1] + bytes([last + 1]) if last < 255 else None, data[:-1] + bytes([last ^ 0x40])):
        if alt is None:
            continue
        try:
            section = decode_section(alt, SMALL, 3000)
        except LotteryError:
            continue
        assert encode_section(section.mask, 3000, section.modules, SMALL) == alt != data
    # orders 13..15 inside the section
    enc = Encoder()
    mask_coding.put_mask(enc, mask, 3000)
    enc.bits(13, 4)
    param_coding.put_values(enc, codes["arm"].values, 0, param_coding.tensor_sizes(module_layout("arm", SMALL)))
    with pytest.raises(LotteryError, match="invalid Exp-Golomb order 13 in the arm network"):
        decode_section(enc.finish(), SMALL, 3000)
    with pytest.raises(ValueError):
        encode_section(mask, 3000, {**codes, "modnet": replace(codes["modnet"], k=13)}, SMALL)
    with pytest.raises(ValueError):
        encode_section(mask, 3000, {**codes, "arm": replace(codes["arm"], predicted=True)}, SMALL)


NARROW = replace(SMALL, arm_hidden=4)  # a shorter section, for the exhaustive tests


def test_every_truncation_of_the_section_is_refused_or_another_section():
    data, mask, codes, _ = _section(make_payload(arch=NARROW))
    assert 100 < len(data) < 300
    accepted = 0
    for n in range(len(data)):
        try:
            section = decode_section(data[:n], NARROW, 3000)
        except LotteryError as exc:
            assert "\n" not in str(exc)
            continue
        accepted += 1  # the canonical coding of other content (the file's CRC is what guards it)
        assert (section.mask, section.modules) != (mask, codes)
        assert encode_section(section.mask, 3000, section.modules, NARROW) == data[:n]
    assert accepted <= 4


def test_section_flips_are_refused_or_canonical():
    """A flipped bit anywhere in the section (every bit of the mask's bytes, others at random):
    refused, or the canonical coding of other content."""
    data, mask, codes, _ = _section(make_payload(arch=NARROW))
    mask_end = part_bytes(decode_section(data, NARROW, 3000), len(data))["mask"]
    assert mask_end >= 15
    rng = random.Random(1)
    flips = [(i, bit) for i in range(mask_end) for bit in range(8)]
    flips += [(rng.randrange(mask_end, len(data)), rng.randrange(8)) for _ in range(150)]
    refused = 0
    for i, bit in flips:
        b = bytearray(data)
        b[i] ^= 1 << bit
        try:
            section = decode_section(bytes(b), NARROW, 3000)
        except LotteryError:
            refused += 1
            continue
        assert (section.mask, section.modules) != (mask, codes)
        assert encode_section(section.mask, 3000, section.modules, NARROW) == bytes(b)
    assert refused >= 0.9 * len(flips)
    for _ in range(100):  # garbage: refused or canonical
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        try:
            section = decode_section(junk, NARROW, 3000)
        except LotteryError:
            continue
        assert encode_section(section.mask, 3000, section.modules, NARROW) == junk


def test_non_canonical_order_in_a_file_is_refused():
    """A section coded at another order k is a valid stream, but decode_file refuses it: only the
    encoder's choice is accepted."""
    p = make_payload()
    data = encode_file(p, latent_coder=CODER)
    mask = p.mask.to(torch.uint8).tolist()
    codes = payload_codes(p)
    for name in MODULE_NAMES:
        other = {**codes, name: replace(codes[name], k=codes[name].k + 1)}
        bad = with_network(data, encode_section(mask, 3000, other, SMALL))
        assert decode_section(network_bytes(bad), SMALL, 3000).modules[name].k == codes[name].k + 1
        with pytest.raises(LotteryError, match=f"the {name} network is not coded as the encoder codes it"):
            decode_file(bad, latent_coder=CODER)
    assert_payload_equal(decode_file(with_network(data, encode_section(mask, 3000, codes, SMALL)), latent_coder=CODER), p)


# Container: round trips ---------------------------------------------------------------------
def test_file_round_trip_and_determinism():
    p = make_payload()
    data = encode_file(p, latent_coder=CODER)
    assert data[:4] == MAGIC == b"LOTR" and data[4] == FORMAT_VERSION == 5
    assert encode_file(make_payload(), latent_coder=CODER) == data
    assert_payload_equal(decode_file(data, latent_coder=CODER), p)
    assert zlib.crc32(data[:-4]) == struct.unpack("<I", data[-4:])[0]


def test_header_size_and_fields_are_where_documented():
    p = make_payload()
    data = encode_file(p, latent_coder=CODER)
    h = read_header(data)
    f = header_fields(data)
    assert f["end"][0] == h.header_size
    # 10x13, 41-bit seed, ratio 3000: 4+1 + 1+1+6+2 + layout 1 + architecture 1+4+1+1+1+3+1 + bands 1
    # + 15 shifts as 8 bytes of nibbles + the network section's length (695: two bytes); no other length
    assert h.header_size == 5 + 10 + 1 + 12 + 1 + 8 + 2 == 39
    assert architecture_bytes(SMALL) == len(architecture_fields(SMALL)) == 12
    at = lambda name: data[f[name][0] : f[name][1]]  # noqa: E731
    assert at("height") == b"\x0a" and at("width") == b"\x0d"
    assert at("seed") == encode_varint(p.seed) and at("ratio") == encode_varint(3000)
    assert at("layout") == b"\x04"  # no preset, shifts as nibbles, frame 0, no restoration
    assert struct.unpack("<f", at("gain"))[0] == SMALL.latent_gain
    assert at("levels")[0] == SMALL.n_levels and at("kernel")[0] == SMALL.upsample_kernel
    assert (at("s1")[0], at("s2")[0], at("s3")[0]) == SMALL.synth_hidden
    assert at("bands") == b"\x00"
    # shifts 6 (x6), 7, 8 (x8): two per byte, low nibble first, padded with a zero nibble
    assert list(at("shifts")) == [0x66, 0x66, 0x66, 0x87, 0x88, 0x88, 0x88, 0x08]
    assert at("len_network") == encode_varint(h.section_sizes["network"]) and h.section_sizes["network"] == 695
    assert list(h.section_sizes) == list(SECTION_NAMES) == ["network", "latents"]
    assert h.section_sizes["latents"] == len(data) - 39 - 695 - 4
    # the network section follows the header, the latent section follows it, then the CRC
    mask = p.mask.to(torch.uint8).tolist()
    assert data[39 : 39 + 695] == encode_section(mask, 3000, payload_codes(p), SMALL)
    assert data[39 + 695 : -4] == CODER.encode(p.latents, p.modules["arm"])


def test_latent_section_length_is_implied():
    """v5 stores no length for the latent section: it is what the file leaves between the network
    section and the CRC, so a byte more (with a valid CRC) reaches the latent decoder, which
    refuses it; without a new CRC the file's checksum refuses it."""
    p = make_payload()
    data = encode_file(p, latent_coder=CODER)
    h = read_header(data)
    assert header_fields(data)["end"][0] == h.header_size  # the network length is the last field
    latents = data[h.header_size + h.section_sizes["network"] : -4]
    assert len(latents) == h.section_sizes["latents"] >= MIN_LATENT_SECTION
    assert h.total_size == len(data)
    for extra in (b"\x00", b"\x01", b"\x00" * 4):
        longer = data[:-4] + extra + data[-4:]
        with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: checksum mismatch \(CRC32\)") as exc:
            decode_file(longer, latent_coder=CODER)
        one_line(exc)
        with pytest.raises(LotteryError, match="checksum mismatch"):
            describe(longer)
        resigned = resign(longer)
        assert read_header(resigned).section_sizes["latents"] == len(latents) + len(extra)
        with pytest.raises(LotteryError):
            decode_file(resigned, latent_coder=CODER)
    with pytest.raises(LotteryError, match="checksum mismatch"):
        read_header(data + b"\x00")
    # a latent section shorter than any latent coder writes is a cut file
    for short in range(MIN_LATENT_SECTION):
        cut = resign(data[: h.header_size + h.section_sizes["network"] + short] + bytes(4))
        with pytest.raises(LotteryError, match=r"^truncated \.lottery file \(\d+ bytes, the header and network section take \d+\)$"):
            read_header(cut)
    assert read_header(resign(data[: h.header_size + h.section_sizes["network"] + 3] + bytes(4))).section_sizes["latents"] == 3


def test_preset_architecture_takes_no_header_bytes():
    a = replace(ARCH_PRESETS[1], arm_band_rows=256)
    p = make_payload(arch=a, height=20, width=16)
    data = encode_file(p, latent_coder=CODER)
    f = header_fields(data)
    assert data[f["layout"][0]] & 0x03 == 1 and data[f["bands"][0] : f["bands"][1]] == encode_varint(256)
    # the same sizes with another gain are no preset: 12 more bytes, everything else alike
    not_preset = replace(a, latent_gain=15.0)
    q = make_payload(arch=not_preset, height=20, width=16)
    assert architecture_bytes(a) == 0 and architecture_bytes(not_preset) == 12
    assert read_header(data).header_size == read_header(encode_file(q, latent_coder=CODER)).header_size - 12
    back = decode_file(data, latent_coder=CODER)
    assert back.architecture == a
    assert_payload_equal(back, p)
    assert_payload_equal(decode_file(encode_file(q, latent_coder=CODER), latent_coder=CODER), q)
    for preset, a in ((3, replace(ARCH_PRESETS[1], arm_hidden=8)), (2, arch()), (4, replace(ARCH_PRESETS[1], arm_hidden=4))):
        p = make_payload(arch=a, height=20, width=16)
        data = encode_file(p, latent_coder=CODER)
        layout = data[header_fields(data)["layout"][0]]
        assert (layout & 0x03) | (layout >> 7) << 2 == preset
        assert describe(data)["architecture_preset"] == preset
        assert_payload_equal(decode_file(data, latent_coder=CODER), p)


def test_falls_back_to_a_byte_per_shift():
    """Shifts outside 0..15 (negative, or fine steps) take one signed byte each."""
    p = make_payload()
    nibbles = read_header(encode_file(p, latent_coder=CODER)).header_size
    p.modules["arm"].shifts = {"fc1.weight": 16, "fc3.bias": -3}
    data = encode_file(p, latent_coder=CODER)
    f = header_fields(data)
    assert not data[f["layout"][0]] & 0x04
    assert read_header(data).header_size == nibbles + 15 - 8
    assert list(data[f["shifts"][0] : f["shifts"][1]]) == [16, 6, 6, 6, 6, 0xFD, 7] + [8] * 8
    assert_payload_equal(decode_file(data, latent_coder=CODER), p)


def test_shift_padding_nibble_must_be_zero():
    data = encode_file(make_payload(), latent_coder=CODER)  # 15 shifts: the 8th byte's high nibble pads
    last = header_fields(data)["shifts"][1] - 1
    b = bytearray(data)
    b[last] |= 0x30
    with pytest.raises(LotteryError, match="padding"):
        read_header(resign(bytes(b)))


def test_layout_byte_unknown_preset_is_refused():
    """Bit 7 of the layout byte is the preset's third bit: presets 5-7 have no entry yet."""
    data = encode_file(make_payload(), latent_coder=CODER)
    pos = header_fields(data)["layout"][0]
    assert pos == 15 and data[pos] == 0x04
    b = bytearray(data)
    b[pos] |= 0x81
    bad = resign(bytes(b))
    with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: unknown architecture preset 5$") as exc:
        read_header(bad)
    one_line(exc)
    with pytest.raises(LotteryError, match="preset 5"):
        decode_file(bad, latent_coder=CODER)
    with pytest.raises(LotteryError, match="preset 5"):
        describe(bad)


def test_latent_bands_round_trip():
    p = make_payload(arch=replace(SMALL, arm_band_rows=300))
    data = encode_file(p, latent_coder=CODER)
    back = decode_file(data, latent_coder=CODER)
    assert back.architecture.arm_band_rows == 300
    assert_payload_equal(back, p)
    assert describe(data)["architecture"]["arm_band_rows"] == 300
    assert data[slice(*header_fields(data)["bands"])] == encode_varint(300)


def test_band_rows_reach_the_latent_coder():
    seen = []

    class Recording(StandInLatentCoder):
        def encode(self, latents, arm, band_rows=0):
            seen.append(("encode", band_rows))
            return super().encode(latents, arm)

        def decode(self, data, shapes, arm, band_rows=0):
            seen.append(("decode", band_rows, shapes))
            return super().decode(data, shapes, arm)

    coder = Recording()
    decode_file(encode_file(make_payload(arch=replace(SMALL, arm_band_rows=4)), latent_coder=coder), latent_coder=coder)
    assert seen == [("encode", 4), ("decode", 4, latent_shapes(10, 13, 3))]


def test_per_tensor_shifts_round_trip():
    p = make_payload()
    p.modules["arm"].shifts = {"fc1.weight": 1, "fc2.weight": 0, "fc3.bias": -3}
    p.modules["modnet"].shifts = {"u3.bias": 40}
    data = encode_file(p, latent_coder=CODER)
    back = decode_file(data, latent_coder=CODER)
    assert_payload_equal(back, p)
    assert back.modules["arm"].tensor_shifts()["fc1.weight"] == 1
    assert back.modules["arm"].tensor_shifts()["fc1.bias"] == 6
    info = describe(data)
    assert info["shifts"]["upsampling"] == 7  # uniform: one number
    assert info["shifts"]["arm"]["fc3.bias"] == -3 and info["shifts"]["arm"]["fc2.bias"] == 6
    assert info["shifts"]["modnet"]["u3.bias"] == 40 and info["shifts"]["modnet"]["u0.weight"] == 8
    p.modules["modnet"].shifts = {"u3.bias": 65}
    with pytest.raises(LotteryError, match=r"quantization shift 65 of modnet\.u3\.bias"):
        encode_file(p, latent_coder=CODER)
    p.modules["modnet"].shifts = {"u3.bias": -65}
    with pytest.raises(LotteryError, match="u3.bias"):
        encode_file(p, latent_coder=CODER)


def test_file_round_trip_reference_arch_edge_values():
    p = make_payload(arch=arch(), height=1, width=1, seed=2**64 - 1, ratio=0.0, scale=2000.0)
    p.mask[:] = True
    data = encode_file(p, latent_coder=CODER)
    assert_payload_equal(decode_file(data, latent_coder=CODER), p)
    assert read_header(data).seed == 2**64 - 1


def test_largest_architecture_round_trips():
    """Every size at its limit is accepted by the writer and the reader."""
    big = Architecture(n_levels=MAX_LEVELS, latent_gain=MAX_LATENT_GAIN, upsample_kernel=MAX_KERNEL,
                       modnet_hidden=MAX_MODNET_HIDDEN, modnet_out=MAX_MODNET_OUT,
                       synth_hidden=(MAX_SYNTH_WIDTH,) * 3, arm_hidden=MAX_ARM_HIDDEN, arm_band_rows=16384)
    p = make_payload(arch=big, height=9, width=7, scale=1.0)
    data = encode_file(p, latent_coder=CODER)
    assert_payload_equal(decode_file(data, latent_coder=CODER), p)
    small = Architecture(n_levels=1, latent_gain=2.0**-20, upsample_kernel=2, modnet_hidden=1, modnet_out=1,
                         synth_hidden=(1, 1, 1), arm_hidden=1, arm_band_rows=0)
    p = make_payload(arch=small, height=3, width=2, scale=1.0)
    assert_payload_equal(decode_file(encode_file(p, latent_coder=CODER), latent_coder=CODER), p)


# Container: frame and restoration flags ------------------------------------------------------
@pytest.mark.parametrize("frame", range(8))
@pytest.mark.parametrize("restoration", [False, True])
def test_frame_and_restoration_round_trip(frame, restoration):
    p = make_payload(frame=frame, restoration=restoration)
    data = encode_file(p, latent_coder=CODER)
    layout = data[header_fields(data)["layout"][0]]
    assert (layout >> 3) & 7 == frame and bool(layout & 0x40) == restoration and layout & 0x07 == 0x04
    back = decode_file(data, latent_coder=CODER)
    assert back.frame == frame and back.restoration is restoration
    assert (back.height, back.width) == (10, 13)  # the render's size, in the model's frame
    assert_payload_equal(back, p)
    h = read_header(data)
    assert (h.frame, h.restoration, h.height, h.width) == (frame, restoration, 10, 13)
    assert h.image_size == ((13, 10) if frame >= 4 else (10, 13))  # frames 4-7 transpose
    info = describe(data)
    assert info["frame"] == frame
    assert info["content"] == ("restoration member" if restoration else "compressed image")
    assert (info["height"], info["width"]) == h.image_size
    assert info["bpp"] == pytest.approx(8 * len(data) / 130)
    # the flags live in the layout byte alone: everything else is the frame-0 file's
    plain = encode_file(make_payload(), latent_coder=CODER)
    pos = header_fields(data)["layout"][0]
    assert len(plain) == len(data) and plain[:pos] == data[:pos] and plain[pos + 1 : -4] == data[pos + 1 : -4]


def test_frame_and_restoration_with_a_preset_architecture():
    a = replace(ARCH_PRESETS[3], arm_band_rows=8)
    p = make_payload(arch=a, height=17, width=20, frame=7, restoration=True)
    data = encode_file(p, latent_coder=CODER)
    layout = data[header_fields(data)["layout"][0]]
    assert layout == 3 | 0x04 | 7 << 3 | 0x40 == 0x7F
    back = decode_file(data, latent_coder=CODER)
    assert_payload_equal(back, p)
    info = describe(data)
    assert (info["height"], info["width"], info["frame"], info["architecture_preset"]) == (20, 17, 7, 3)
    assert info["content"] == "restoration member"


@pytest.mark.parametrize("frame", [-1, 8, 9])
def test_frame_outside_0_to_7_is_refused_by_the_writer(frame):
    with pytest.raises(ValueError, match="frame"):
        encode_file(make_payload(frame=frame), latent_coder=CODER)


# Container: describe ------------------------------------------------------------------------
def test_describe_breakdown_sums_to_total():
    p = make_payload()
    data = encode_file(p, latent_coder=CODER)
    info = describe(data)
    s = info["sizes"]
    assert s["total"] == len(data)
    assert s["header"] + s["mask"] + sum(s["networks"].values()) + s["latents"] == len(data)
    assert s["header"] == 39 + 4  # the CRC trailer counts as header
    assert list(s["networks"]) == list(MODULE_NAMES)
    # the mask and the networks share the network section, by their code lengths
    h = read_header(data)
    assert s["mask"] + sum(s["networks"].values()) == h.section_sizes["network"]
    assert s["latents"] == h.section_sizes["latents"]
    section = decode_section(data[h.header_size : h.header_size + h.section_sizes["network"]], SMALL, 3000)
    assert {"mask": s["mask"], **s["networks"]} == part_bytes(section, h.section_sizes["network"])
    assert s["networks"]["arm"] > s["networks"]["modnet"] > s["networks"]["upsampling"] > 0 and s["mask"] > 0
    assert info["format_version"] == 5 and info["channels"] == 3
    assert info["height"] == 10 and info["width"] == 13 and info["seed"] == p.seed
    assert info["content"] == "compressed image" and info["frame"] == 0 and info["architecture_preset"] == 0
    assert info["architecture"] == SMALL.to_dict()
    assert info["shifts"] == {"arm": 6, "upsampling": 7, "modnet": 8}
    assert info["mask_ratio"] == 0.3
    assert info["bpp"] == pytest.approx(8 * len(data) / (10 * 13))
    assert h.architecture == SMALL and h.mask_ratio == 0.3 and h.mask_ratio_units == 3000
    assert h.total_size == len(data) and h.image_size == (10, 13)
    assert info["decoder_macs_per_pixel"] == round(macs_per_pixel(SMALL, int(p.mask.sum()), 10, 13), 1)


def test_describe_mask_part_follows_the_mask():
    """The mask's share is its code length: nothing for a constant mask, about log2 C(n, k) bits
    for a random one (more for a less compressible mask), and the decoder cost counts the mask's
    real ones, whatever the ratio says."""
    n = SMALL.n_synth_weights
    sizes = {}
    for ones in (n, n - 18, n // 2):
        p = make_payload(ratio=0.0)
        p.mask = torch.tensor(random_mask(n, ones, seed=ones), dtype=torch.bool)
        data = encode_file(p, latent_coder=CODER)
        info = describe(data)
        s = info["sizes"]
        assert s["header"] + s["mask"] + sum(s["networks"].values()) + s["latents"] == s["total"] == len(data)
        sizes[ones] = s["mask"]
        if ones < n:
            assert abs(s["mask"] - mask_coding.mask_bits(n, ones) / 8) <= 3
        assert info["decoder_macs_per_pixel"] == round(macs_per_pixel(SMALL, ones, 10, 13), 1)
        assert_payload_equal(decode_file(data, latent_coder=CODER), p)
    assert sizes[n] == 0 < sizes[n - 18] < sizes[n // 2]


def test_ratio_units():
    assert ratio_units(0.3) == 3000 and ratio_units(0.0) == 0 and ratio_units(1.0) == 10000
    assert ratio_units(0.05) == 500 and ratio_units(0.99999) == 10000
    for bad in (-0.01, 1.5, float("nan")):
        with pytest.raises(LotteryError):
            ratio_units(bad)


# Container: bad input -----------------------------------------------------------------------
def test_every_truncation_is_rejected():
    """A cut file is refused with one line: as truncated while the header, the network section
    and the shortest latent section do not fit, else by the CRC (the latent section's length is
    implied, so the cut cannot be told from damage)."""
    data = encode_file(make_payload(), latent_coder=CODER)
    h = read_header(data)
    shortest = h.header_size + h.section_sizes["network"] + MIN_LATENT_SECTION + 4
    with pytest.raises(LotteryError, match="bad magic"):
        decode_file(b"", latent_coder=CODER)
    for n in range(1, len(data)):
        want = "checksum mismatch" if n >= shortest else "truncated"
        for read in (read_header, describe, lambda d: decode_file(d, latent_coder=CODER)):
            with pytest.raises(LotteryError, match=want) as exc:
                read(data[:n])
            one_line(exc)
    with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: checksum mismatch \(CRC32\): the file is damaged or truncated$"):
        read_header(data[:-1])


def test_random_byte_flips_are_rejected():
    data = encode_file(make_payload(), latent_coder=CODER)
    rng = random.Random(42)
    for _ in range(400):
        b = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 5))):
            b[rng.randrange(len(b))] ^= rng.randrange(1, 256)
        with pytest.raises(LotteryError):
            decode_file(bytes(b), latent_coder=CODER)


def test_section_flips_with_valid_crc_never_crash():
    """A doctored file with a recomputed CRC must decode or give LotteryError, nothing else."""
    data = encode_file(make_payload(), latent_coder=CODER)
    rng = random.Random(9)
    start = read_header(data).header_size
    refused = 0
    for _ in range(200):
        b = bytearray(data)
        b[rng.randrange(start, len(b) - 4)] ^= 1 << rng.randrange(8)
        try:
            decode_file(resign(bytes(b)), latent_coder=CODER)
        except LotteryError:
            refused += 1
    assert refused > 150  # the sections' own checks catch most flips, not only the CRC


def test_header_flips_with_valid_crc_never_crash():
    data = encode_file(make_payload(), latent_coder=CODER)
    end = read_header(data).header_size
    for pos in range(end):
        for bit in (0, 2, 5, 7):
            b = bytearray(data)
            b[pos] ^= 1 << bit
            try:
                decode_file(resign(bytes(b)), latent_coder=CODER)
            except LotteryError:
                pass


def test_wrong_magic_trailing_crc():
    data = encode_file(make_payload(), latent_coder=CODER)
    for bad in (b"PNG\x89" + data[4:], b"LOTX" + data[4:], b"\x89PNG\r\n\x1a\n", b"L\x00"):
        with pytest.raises(LotteryError, match=r"^not a \.lottery file \(bad magic bytes\)$"):
            decode_file(bad, latent_coder=CODER)
    with pytest.raises(LotteryError, match="checksum mismatch"):  # the last 4 bytes are the CRC
        decode_file(data + b"\x00", latent_coder=CODER)
    with pytest.raises(LotteryError, match="CRC"):
        decode_file(data[:-1] + bytes([data[-1] ^ 1]), latent_coder=CODER)
    with pytest.raises(LotteryError, match="CRC"):
        decode_file(data[:100] + bytes([data[100] ^ 1]) + data[101:], latent_coder=CODER)
    with pytest.raises(LotteryError):
        decode_file(b"", latent_coder=CODER)
    with pytest.raises(LotteryError, match="truncated"):
        decode_file(b"LOTR", latent_coder=CODER)
    with pytest.raises(LotteryError):
        describe(data[:30])
    # read_header can skip the CRC (a caller that checked it already)
    assert read_header(data[:-1] + bytes([data[-1] ^ 1]), check_crc=False).header_size == 39


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4, 6, 255])
def test_other_format_versions_are_refused(version):
    data = encode_file(make_payload(), latent_coder=CODER)
    bad = resign(data[:4] + bytes([version]) + data[5:])
    want = rf"^unsupported \.lottery format version {version} \(this lottery reads version 5\)$"
    for read in (read_header, describe, lambda d: decode_file(d, latent_coder=CODER)):
        with pytest.raises(LotteryError, match=want) as exc:
            read(bad)
        one_line(exc)
    with pytest.raises(LotteryError, match=want):  # told before anything else, even in a stub
        read_header(b"LOTR" + bytes([version]))


def _refused_before_decoding(bad: bytes, message: str, monkeypatch) -> None:
    """`bad` is refused by read_header, describe and decode_file with `message`, and decode_file
    never reaches the decoding of a section."""

    def must_not_run(*args, **kwargs):
        raise AssertionError("a section was decoded")

    class Untouchable:
        encode = decode = staticmethod(must_not_run)

    monkeypatch.setattr(network_section, "decode_section", must_not_run)  # describe's
    monkeypatch.setattr(container, "decode_section", must_not_run)  # decode_file's
    monkeypatch.setattr(mask_coding, "get_mask", must_not_run)
    monkeypatch.setattr(param_coding, "get_module", must_not_run)
    for read in (read_header, describe):
        with pytest.raises(LotteryError, match=message) as exc:
            read(bad)
        one_line(exc)
    with pytest.raises(LotteryError, match=message):
        decode_file(bad, latent_coder=Untouchable())
    monkeypatch.undo()


def long_form(value: int) -> bytes:
    """`value` as a valid LEB128 varint one byte longer than its shortest form."""
    short = encode_varint(value)
    return short[:-1] + bytes([short[-1] | 0x80, 0])


def u8(v: int) -> bytes:
    return bytes([v])


def f32(v: float) -> bytes:
    return struct.pack("<f", v)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("levels", u8(0), "n_levels 0"),
        ("levels", u8(MAX_LEVELS + 1), "n_levels 9"),
        ("levels", u8(11), "n_levels 11"),
        ("gain", f32(float("nan")), "latent_gain"),
        ("gain", f32(float("inf")), "latent_gain"),
        ("gain", f32(-1.0), "latent_gain"),
        ("gain", f32(0.0), "latent_gain"),
        ("gain", f32(MAX_LATENT_GAIN * 2), "latent_gain"),
        ("kernel", u8(0), "upsample_kernel 0"),
        ("kernel", u8(5), "upsample_kernel 5"),  # odd
        ("kernel", u8(3), "upsample_kernel 3"),
        ("kernel", u8(MAX_KERNEL + 2), "upsample_kernel 18"),
        ("mhid", encode_varint(0), "modnet_hidden 0"),
        ("mhid", encode_varint(MAX_MODNET_HIDDEN + 1), "modnet_hidden 65"),
        ("mhid", encode_varint(513), "modnet_hidden 513"),
        ("mhid", encode_varint(70000), "modnet_hidden"),  # beyond the varint's own limit
        ("mout", encode_varint(0), "modnet_out 0"),
        ("mout", encode_varint(MAX_MODNET_OUT + 1), "modnet_out 9"),
        ("s1", encode_varint(0), "synth_hidden width 0"),
        ("s2", encode_varint(MAX_SYNTH_WIDTH + 1), "synth_hidden width 65"),
        ("s3", encode_varint(513), "synth_hidden width 513"),
        ("ahid", encode_varint(0), "arm_hidden 0"),
        ("ahid", encode_varint(MAX_ARM_HIDDEN + 1), "arm_hidden 33"),
        ("bands", encode_varint(16385), "arm_band_rows"),
    ],
)
def test_architecture_limits_are_refused_on_read(field, value, message, monkeypatch):
    """A header that names no preset is checked against the (tighter) limits before anything is
    decoded, as a corrupted file."""
    data = encode_file(make_payload(), latent_coder=CODER)
    bad = with_field(data, field, value)
    _refused_before_decoding(bad, r"^corrupted \.lottery file: .*" + message, monkeypatch)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("height", encode_varint(0), "corrupted .*image size 13x0"),
        ("width", encode_varint(0), "corrupted .*image size 0x10"),
        ("height", encode_varint(16385), "height 16385 is out of range"),
        ("width", encode_varint(16385), "width 16385 is out of range"),
        ("height", b"\x8a\x00", "height is not in its shortest form"),  # 10, valid LEB128 but not canonical
        ("seed", encode_varint(2**64), "seed"),
        ("seed", long_form(1234567890123), "seed is not in its shortest form"),
        ("ratio", encode_varint(10001), "mask ratio 10001 is out of range"),
        ("mhid", b"\x86\x00", "modnet_hidden is not in its shortest form"),
        ("bands", b"\x80\x00", "arm_band_rows is not in its shortest form"),
        ("len_network", encode_varint(0), r"^corrupted \.lottery file: the network section is empty$"),
        ("len_network", encode_varint(2**32 + 1), "network section length 4294967297 is out of range"),
        ("len_network", b"\xb7\x85\x00", "network section length is not in its shortest form"),  # 695
        ("len_network", encode_varint(5000), r"^truncated \.lottery file \(\d+ bytes, the header and network section take \d+\)$"),
        ("len_network", encode_varint(695 + 74 - 2), "truncated .lottery file"),  # a latent section of 2 bytes
        ("layout", u8(0x85), "unknown architecture preset 5"),
        ("layout", u8(0x87), "unknown architecture preset 7"),
    ],
)
def test_header_fields_are_checked(field, value, message, monkeypatch):
    data = encode_file(make_payload(), latent_coder=CODER)
    bad = with_field(data, field, value)
    _refused_before_decoding(bad, message, monkeypatch)


def test_network_length_that_moves_the_boundary_is_refused():
    """A network length a few bytes off (with a valid CRC) moves bytes between the two sections:
    the header cannot tell, the section decoders refuse it. (`describe` decodes the network
    section only: a prefix of it may be the canonical coding of other content, as in
    test_every_truncation_of_the_section_is_refused_or_another_section.)"""
    data = encode_file(make_payload(), latent_coder=CODER)
    n = read_header(data).section_sizes["network"]
    for delta in (-3, -1, 1, 2, 60):
        bad = with_field(data, "len_network", encode_varint(n + delta))
        h = read_header(bad)
        assert h.section_sizes["network"] == n + delta and h.total_size == len(bad)
        with pytest.raises(LotteryError) as exc:
            decode_file(bad, latent_coder=CODER)
        one_line(exc)
        try:
            s = describe(bad)["sizes"]
        except LotteryError as exc:
            assert "\n" not in str(exc)
            continue
        assert delta < 0 and s["mask"] + sum(s["networks"].values()) == n + delta


def test_byte_per_shift_out_of_range_is_refused(monkeypatch):
    p = make_payload()
    p.modules["arm"].shifts = {"fc3.bias": -3}
    data = encode_file(p, latent_coder=CODER)
    start = header_fields(data)["shifts"][0]
    assert data[start + 5] == 0xFD
    b = bytearray(data)
    b[start + 5] = 0x9C  # -100
    _refused_before_decoding(resign(bytes(b)), r"corrupted .*shift -100 of arm\.fc3\.bias", monkeypatch)
    b[start + 5] = 65
    _refused_before_decoding(resign(bytes(b)), r"shift 65 of arm\.fc3\.bias", monkeypatch)
    b[start + 5] = 64  # the limit itself: the header is fine
    assert read_header(resign(bytes(b))).shifts["arm"]["fc3.bias"] == 64


def test_too_many_pixels_is_rejected(monkeypatch):
    data = encode_file(make_payload(), latent_coder=CODER)
    bad = with_field(with_field(data, "height", encode_varint(16384)), "width", encode_varint(8192))  # 128 M pixels
    assert 16384 * 8192 > MAX_PIXELS
    _refused_before_decoding(bad, f"corrupted .*exceeds the supported {MAX_PIXELS} pixels", monkeypatch)


def test_endless_varints_are_refused():
    data = encode_file(make_payload(), latent_coder=CODER)
    for n in (3, 40, 4000):
        with pytest.raises(LotteryError):
            read_header(resign(data[:5] + b"\xff" * n))


def test_encoder_refuses_what_the_decoder_would_reject():
    for bad in (replace(SMALL, n_levels=9), replace(SMALL, modnet_hidden=65), replace(SMALL, upsample_kernel=5),
                replace(SMALL, arm_hidden=33), replace(SMALL, synth_hidden=(8, 65, 4)), replace(SMALL, latent_gain=0.1)):
        with pytest.raises(LotteryError):
            encode_file(make_payload(arch=bad, height=4, width=4), latent_coder=CODER)
    p = make_payload()
    with pytest.raises(LotteryError, match="seed"):
        encode_file(Payload(p.height, p.width, -1, p.mask_ratio, p.architecture, p.mask, p.modules, p.latents), CODER)
    with pytest.raises(LotteryError, match="seed"):
        encode_file(Payload(p.height, p.width, 2**64, p.mask_ratio, p.architecture, p.mask, p.modules, p.latents), CODER)
    with pytest.raises(LotteryError, match="mask ratio"):
        encode_file(Payload(p.height, p.width, 1, 1.5, p.architecture, p.mask, p.modules, p.latents), CODER)
    with pytest.raises(ValueError):
        encode_file(Payload(p.height, p.width, 1, 0.3, p.architecture, p.mask[:-1], p.modules, p.latents), CODER)
    with pytest.raises(ValueError):
        encode_file(Payload(p.height, p.width, 1, 0.3, p.architecture, p.mask, p.modules, p.latents[:-1]), CODER)
    with pytest.raises(ValueError):
        encode_file(Payload(p.height, p.width, 1, 0.3, p.architecture, p.mask,
                            {k: v for k, v in p.modules.items() if k != "arm"}, p.latents), CODER)


# Real latent coder (bitstream.latent_coding + model.arm) --------------------------------------
def _real_payload(height, width, **kw):
    p = make_payload(height=height, width=width, scale=1.0, **kw)
    # A plausible ARM: small weights (shift 8) so predicted scales stay moderate.
    g = torch.Generator().manual_seed(11)
    arm = {n: torch.randint(-20, 21, s, generator=g) for n, s in module_layout("arm", SMALL)}
    p.modules["arm"] = QuantizedModule(shift=8, tensors=arm)
    return p


def test_file_round_trip_real_latent_coder():
    p = _real_payload(12, 9, frame=5, restoration=True)
    data = encode_file(p)
    assert encode_file(p) == data
    assert_payload_equal(decode_file(data), p)
    assert describe(data)["height"] == 9 and describe(data)["width"] == 12
    with pytest.raises(LotteryError):
        decode_file(data[:-5])


def test_real_latent_section_flips_never_crash():
    """The latent section has no checksum of its own (v5): the file's CRC refuses every flip; with
    a recomputed CRC a flip decodes (perhaps to other latents) or is refused, never crashes."""
    p = _real_payload(8, 8)
    data = encode_file(p)
    s = read_header(data).section_sizes
    start = len(data) - 4 - s["latents"]
    rng = random.Random(3)
    refused = 0
    for _ in range(60):
        b = bytearray(data)
        b[rng.randrange(start, len(b) - 4)] ^= 1 << rng.randrange(8)
        with pytest.raises(LotteryError, match="checksum mismatch"):
            decode_file(bytes(b))
        try:
            back = decode_file(resign(bytes(b)))
        except LotteryError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        assert [tuple(t.shape) for t in back.latents] == [tuple(t.shape) for t in p.latents]
    assert refused >= 45  # the streams must end where the encoder's did: most flips break that
    for n in range(0, len(data), 7):
        with pytest.raises(LotteryError):
            decode_file(data[:n])


def test_real_latent_section_refuses_bytes_after_the_last_latent():
    """v5 implies the latent section's length, so bytes added before the CRC (with a new CRC) reach
    the latent decoder, which must find its streams exhausted."""
    p = _real_payload(8, 8)
    data = encode_file(p)
    with pytest.raises(LotteryError, match="checksum mismatch"):
        decode_file(data[:-4] + b"\x00" + data[-4:])
    for extra in (bytes([0xA5]) * 5, b"\x01" * 8, bytes(12)):
        with pytest.raises(LotteryError, match="corrupted latent data") as exc:
            decode_file(resign(data[:-4] + extra + data[-4:]))
        one_line(exc)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8])
def test_bytes_after_the_last_latent(n):
    """What docs/format.md (2.5) says: each latent stream must be exhausted after the last latent,
    as far as constriction can tell; it cannot see up to one 32-bit word more. So a hostile file
    (CRC recomputed) with up to 4 bytes appended decodes to the same payload; more is refused."""
    payload = _real_payload(8, 8)
    data = encode_file(payload)
    doctored = resign(data[:-4] + bytes([0xA5]) * n + data[-4:])
    if n > 4:
        with pytest.raises(LotteryError, match="bytes left"):
            decode_file(doctored)
    else:
        try:
            back = decode_file(doctored)
        except LotteryError:
            return
        assert_payload_equal(back, payload)
