"""The .lottery bitstream (format version 4): varints, mask / parameter coding, header, container
round trips, bad input."""

from __future__ import annotations

import math
import random
import struct
import zlib
from dataclasses import replace

import pytest
import torch
from conftest import arch

from lotterycli.bitstream import mask_coding, param_coding
from lotterycli.bitstream.container import decode_file, encode_file, ratio_units
from lotterycli.bitstream.header import (
    ARCH_PRESETS,
    FORMAT_VERSION,
    MAGIC,
    MAX_PIXELS,
    architecture_bytes,
    architecture_fields,
    describe,
    read_header,
)
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
    module_layout,
)
from lotterycli.model.payload import Payload, QuantizedModule

SMALL = Architecture(
    n_levels=3, latent_gain=16.0, upsample_kernel=4, modnet_hidden=6, modnet_out=2, synth_hidden=(8, 6, 4),
    arm_hidden=24, arm_band_rows=0,
)


class StandInLatentCoder:
    """Codes the grids with the parameter coder (ignores the ARM): enough to test the container."""

    def encode(self, latents, arm, band_rows=0):
        values = [v for t in latents for v in t.reshape(-1).tolist()]
        return param_coding.encode_values(values, [len(values)])

    def decode(self, data, shapes, arm, band_rows=0):
        n = sum(h * w for h, w in shapes)
        values = param_coding.decode_values(data, n, [n])
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
    """(start, end) of each header field of a v4 file (varints: docs/format.md), found by walking
    the bytes, without the reader under test."""
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
    if not layout & 0x03:  # no preset: the architecture fields follow
        take("levels", 1)
        take("gain", 4)
        take("kernel", 1)
        for name in ("mhid", "mout", "s1", "s2", "s3", "ahid"):
            take(name)
    take("bands")
    n_shifts = 6 + 1 + 8  # the ARM's, the upsampling kernel's, the ModNet's
    take("shifts", (n_shifts + 1) // 2 if layout & 0x04 else n_shifts)
    for name in ("len_mask", "len_arm", "len_up", "len_modnet", "len_latents"):
        take(name)
    fields["end"] = (pos, pos)
    return fields


def with_field(data: bytes, field: str, value: bytes) -> bytes:
    """`data` with header field `field` replaced by `value` (any length), CRC recomputed."""
    start, end = header_fields(data)[field]
    return resign(data[:start] + value + data[end:])


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


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


# Mask --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.3, 0.5, 0.9, 1.0])
def test_mask_round_trip(ratio):
    n = arch().n_synth_weights
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(n, generator=g) >= ratio
    if ratio == 0.0:
        mask = torch.ones(n, dtype=torch.bool)
    if ratio == 1.0:
        mask = torch.zeros(n, dtype=torch.bool)
    units = ratio_units(ratio)
    data = mask_coding.encode_mask(mask, units)
    out = mask_coding.decode_mask(data, n, units)
    assert out.dtype == torch.bool and torch.equal(out, mask)
    assert mask_coding.mask_bits(mask, units) == 8 * len(data)
    if ratio in (0.0, 1.0):
        assert data == b"\x00"  # constant and exactly as the ratio implies: the count delta alone


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7])
def test_mask_size_near_binary_entropy(ratio):
    n = arch().n_synth_weights  # 1,723
    mask = torch.rand(n, generator=torch.Generator().manual_seed(7)) >= ratio
    ideal_bits = mask_coding.binary_entropy_bits(n, int(mask.sum()))
    coded = len(mask_coding.encode_mask(mask, ratio_units(ratio)))
    assert coded <= ideal_bits * 1.02 / 8 + 6  # +<=2 bytes count delta, +<=4 bytes coder termination


def test_mask_constant_is_the_count_alone():
    ones, zeros = torch.ones(100, dtype=torch.bool), torch.zeros(100, dtype=torch.bool)
    assert mask_coding.encode_mask(ones, 0) == b"\x00"
    assert mask_coding.encode_mask(zeros, 10000) == b"\x00"
    assert mask_coding.encode_mask(zeros, 0) == encode_varint(2 * 100 - 1)  # zigzag of -100
    for units in (0, 3000, 10000):
        for m in (ones, zeros):
            assert torch.equal(mask_coding.decode_mask(mask_coding.encode_mask(m, units), 100, units), m)


def test_mask_count_is_relative_to_the_ratio():
    n = 1000
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:700] = True  # exactly what ratio 0.3 keeps: count delta 0, one byte
    for ones in (700, 640, 1000, 0):
        m = torch.zeros(n, dtype=torch.bool)
        m[torch.randperm(n, generator=torch.Generator().manual_seed(ones))[:ones]] = True
        data = mask_coding.encode_mask(m, 3000)
        assert torch.equal(mask_coding.decode_mask(data, n, 3000), m)
        if ones in (0, 1000):
            assert len(data) <= 3  # a constant mask: the count alone
    assert mask_coding.encode_mask(mask, 3000)[0] == 0
    # the same mask under another ratio needs a larger count delta (and decodes only with that ratio)
    other = mask_coding.encode_mask(mask, 5000)
    assert other[:2] == encode_varint(2 * 200) and other[2:] == mask_coding.encode_mask(mask, 3000)[1:]
    assert torch.equal(mask_coding.decode_mask(other, n, 5000), mask)
    with pytest.raises(LotteryError, match="mask"):  # read under another ratio: another count, refused
        mask_coding.decode_mask(other, n, 3000)
    assert mask_coding.expected_ones(1627, 3000) == 1627 - round(0.3 * 1627)
    assert mask_coding.expected_ones(10, 5000) == 5
    assert mask_coding.expected_ones(3, 5000) == 1  # half a weight removed rounds up


def test_mask_bad_data():
    n = 1000
    for bad in (b"", b"\x80", b"\x80\x00\x01", bytes([0xFF]) * 6):
        with pytest.raises(LotteryError, match="mask"):
            mask_coding.decode_mask(bad, n, 3000)
    with pytest.raises(LotteryError, match="negative"):
        mask_coding.decode_mask(b"\x01", 10, 10000)  # one fewer than none
    with pytest.raises(LotteryError, match="mask count 21 is out of range"):
        mask_coding.decode_mask(encode_varint(21), 10, 0)
    with pytest.raises(LotteryError, match="11 ones for 10 weights"):
        mask_coding.decode_mask(b"\x02", 10, 0)  # one more than all ten
    with pytest.raises(LotteryError, match="trailing data"):
        mask_coding.decode_mask(b"\x00xx", 10, 0)  # a constant mask has no body
    with pytest.raises(LotteryError, match="bad length"):
        mask_coding.decode_mask(b"\x00abc", 10, 5000)
    with pytest.raises(LotteryError, match="bad length"):
        mask_coding.decode_mask(b"\x00", 10, 5000)
    with pytest.raises(LotteryError, match="shortest form"):
        mask_coding.decode_mask(b"\x80\x00", 10, 0)


def test_mask_non_canonical_body_is_refused():
    n = 300
    m = torch.rand(n, generator=torch.Generator().manual_seed(3)) >= 0.4
    units = 4000
    data = mask_coding.encode_mask(m, units)
    assert len(data) > 5
    rng = random.Random(1)
    refused = 0
    for _ in range(60):  # a flipped body bit: refused, or the canonical coding of another mask
        flipped = bytearray(data)
        flipped[rng.randrange(1, len(data))] ^= 1 << rng.randrange(8)
        b = bytes(flipped)
        try:
            out = mask_coding.decode_mask(b, n, units)
        except LotteryError:
            refused += 1
            continue
        assert not torch.equal(out, m) and mask_coding.encode_mask(out, units) == b
    assert refused >= 50
    with pytest.raises(LotteryError):
        mask_coding.decode_mask(data + b"\0\0\0\0", n, units)


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
    with pytest.raises(ValueError):
        module_layout("nope", a)


@pytest.mark.parametrize("scale", [0, 0.3, 5, 300, 2**20])
def test_param_round_trip(scale):
    a = arch()
    g = torch.Generator().manual_seed(3)
    for name in MODULE_NAMES:
        layout = module_layout(name, a)
        tensors = {
            p: torch.round(torch.randn(s, generator=g, dtype=torch.float64) * scale).clamp(-(2**20), 2**20).to(torch.int64)
            for p, s in layout
        }
        q = QuantizedModule(shift=9, tensors=tensors)
        data = param_coding.encode_module(q, name, layout)
        assert param_coding.encode_module(q, name) == data  # the layout only checks
        assert param_coding.module_bits(q, name) == 8 * len(data)
        out = param_coding.decode_module(data, q.tensor_shifts(), layout, name)
        assert out.shift == 9 and out.tensor_shifts() == q.tensor_shifts()
        assert list(out.tensors) == [p for p, _ in layout]
        for p in tensors:
            assert torch.equal(out.tensors[p], tensors[p])


def test_param_per_tensor_shifts_round_trip():
    layout = module_layout("arm", SMALL)
    q = make_payload().modules["arm"]
    q.shifts = {"fc1.weight": 3, "fc3.bias": 11}
    data = param_coding.encode_module(q, "arm", layout)
    out = param_coding.decode_module(data, q.tensor_shifts(), layout, "arm")
    assert out.tensor_shifts() == q.tensor_shifts()
    assert out.shift == 3 and out.shift_of("fc1.bias") == 6  # the first tensor's shift is the base
    assert all(torch.equal(out.tensors[k], q.tensors[k]) for k in q.tensors)


def test_param_extreme_values():
    values = [0, 1, -1, 2**20, -(2**20), 2**40, -(2**62), 2**63 - 1, -(2**63), 7, 0, 0]
    data = param_coding.encode_values(values, [len(values)])
    assert param_coding.decode_values(data, len(values), [len(values)]) == values
    assert param_coding.decode_values(param_coding.encode_values(values, [5, 7]), 12, [5, 7]) == values
    with pytest.raises(ValueError):
        param_coding.encode_values([2**64], [1])


def test_param_size_near_laplace_cost():
    # Laplace(b) integers: ideal cost ~ log2(2 e b) bits each for b >> 1.
    rng = random.Random(5)
    for b in (30.0, 3000.0):
        vals = [round(rng.expovariate(1 / b) * rng.choice((-1, 1))) for _ in range(1250)]
        ideal = len(vals) * math.log2(2 * math.e * b)
        assert 8 * len(param_coding.encode_values(vals, [len(vals)])) < ideal * 1.03 + 64


def test_param_bad_data():
    layout = module_layout("arm", SMALL)
    shifts = {t: 0 for t, _ in layout}
    with pytest.raises(LotteryError, match="empty"):
        param_coding.decode_module(b"", shifts, layout, "arm")
    with pytest.raises(LotteryError, match="Exp-Golomb order"):
        param_coding.decode_module(b"\x7f\x00", shifts, layout, "arm")  # k out of range
    good = param_coding.encode_values(list(range(-300, 300)), [600])
    with pytest.raises(LotteryError):
        param_coding.decode_values(good[: len(good) // 2], 600, [600])  # truncated
    with pytest.raises(LotteryError):
        param_coding.decode_values(good + b"\x01\x02\x03", 600, [600])  # trailing data
    with pytest.raises(LotteryError):
        param_coding.decode_values(good, 600, [300, 300])  # other contexts: other values, not canonical
    rng = random.Random(0)
    for _ in range(200):  # garbage either decodes to something or raises LotteryError
        junk = bytes([rng.randrange(4)]) + bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        try:
            out = param_coding.decode_values(junk, 50, [50])
        except LotteryError:
            continue
        # only the canonical stream of the stored Exp-Golomb order is accepted
        assert len(out) == 50 and param_coding._encode_values(out, junk[0], [50]) == junk[1:]


def test_param_layout_mismatch_is_rejected():
    layout = module_layout("upsampling", SMALL)
    q = QuantizedModule(shift=0, tensors={"kernel": torch.zeros(3, 3, dtype=torch.int64)})
    with pytest.raises(ValueError):
        param_coding.encode_module(q, "upsampling", layout)
    q = QuantizedModule(shift=0, tensors={"weights": torch.zeros(4, 4, dtype=torch.int64)})
    with pytest.raises(ValueError):
        param_coding.encode_module(q, "upsampling", layout)
    q = QuantizedModule(shift=0, tensors={"kernel": torch.zeros(4, 4)})  # float
    with pytest.raises(ValueError):
        param_coding.encode_module(q, "upsampling", layout)


def test_upsampling_kernel_is_coded_against_bicubic():
    """A kernel near the bicubic start codes to fewer bytes than the same integers as they are,
    and decodes exactly."""
    from lotterycli.model.upsampling import bicubic_kernel_1d, initial_kernel_integers

    k1 = bicubic_kernel_1d(8).double()
    for shift in range(0, 15):  # the exact rational prediction equals the float one (dyadic taps)
        want = torch.floor(torch.outer(k1, k1) * 2**shift + 0.5).long().reshape(-1).tolist()
        assert list(initial_kernel_integers(8, shift)) == want
    g = torch.Generator().manual_seed(5)
    layout = [("kernel", (8, 8))]
    near = torch.tensor(initial_kernel_integers(8, 9)).view(8, 8) + torch.randint(-3, 4, (8, 8), generator=g)
    q = QuantizedModule(shift=9, tensors={"kernel": near})
    predicted = param_coding.encode_module(q, "upsampling", layout)
    as_is = param_coding.encode_values(near.reshape(-1).tolist(), [64])
    assert len(predicted) < len(as_is) * 0.6
    back = param_coding.decode_module(predicted, {"kernel": 9}, layout, "upsampling")
    assert torch.equal(back.tensors["kernel"], near) and back.shift == 9
    assert param_coding.module_bits(q, "upsampling") == 8 * len(predicted)
    assert predicted[0] & param_coding.PREDICTED
    far = QuantizedModule(shift=9, tensors={"kernel": -near})  # far from bicubic: coded as it is
    plain = param_coding.encode_module(far, "upsampling", layout)
    assert not plain[0] & param_coding.PREDICTED
    assert plain == param_coding.encode_values((-near).reshape(-1).tolist(), [64])
    assert torch.equal(param_coding.decode_module(plain, {"kernel": 9}, layout, "upsampling").tensors["kernel"], -near)
    # the longer of the two codings is refused (only the encoder's choice is canonical)
    pred = torch.tensor(initial_kernel_integers(8, 9)).view(8, 8)
    as_difference = param_coding.encode_values((-near - pred).reshape(-1).tolist(), [64])
    assert len(as_difference) >= len(plain)
    longer = bytes([as_difference[0] | param_coding.PREDICTED]) + as_difference[1:]
    with pytest.raises(LotteryError, match="not canonical"):
        param_coding.decode_module(longer, {"kernel": 9}, layout, "upsampling")
    with pytest.raises(LotteryError, match="not canonical"):  # plain, though the difference is shorter
        param_coding.decode_module(as_is, {"kernel": 9}, layout, "upsampling")
    # the prediction depends on the shift: the same bytes under another shift are another kernel
    other = param_coding.decode_module(predicted, {"kernel": 8}, layout, "upsampling")
    assert not torch.equal(other.tensors["kernel"], near)
    arm_layout = module_layout("arm", SMALL)
    arm_q = make_payload().modules["arm"]
    arm = param_coding.encode_module(arm_q, "arm", arm_layout)
    with pytest.raises(LotteryError, match="claims a prediction"):
        param_coding.decode_module(bytes([arm[0] | param_coding.PREDICTED]) + arm[1:], arm_q.tensor_shifts(), arm_layout, "arm")
    odd = initial_kernel_integers(5, 4)  # odd sizes have non-dyadic taps: still exact and symmetric
    assert len(odd) == 25 and odd == tuple(reversed(odd))


def test_each_tensor_has_its_own_zero_and_prefix_contexts():
    """Many zeros in one tensor and none in the next: per-tensor contexts code it smaller."""
    g = torch.Generator().manual_seed(2)
    sparse = [0] * 200 + [1, -1]
    dense = (torch.randint(1, 40, (200,), generator=g) * torch.where(torch.rand(200, generator=g) < 0.5, -1, 1)).tolist()
    values = sparse + dense
    joint, split = param_coding.encode_values(values, [402]), param_coding.encode_values(values, [202, 200])
    assert len(split) < len(joint)
    assert param_coding.decode_values(split, 402, [202, 200]) == values
    assert param_coding.decode_values(joint, 402, [402]) == values
    with pytest.raises(ValueError):
        param_coding.encode_values(values, [100, 100])


# Container: round trips ---------------------------------------------------------------------
def test_file_round_trip_and_determinism():
    p = make_payload()
    data = encode_file(p, latent_coder=CODER)
    assert data[:4] == MAGIC == b"LOTR" and data[4] == FORMAT_VERSION == 4
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
    # + 15 shifts as 8 bytes of nibbles + lengths (the arm's 580 takes two bytes)
    assert h.header_size == 5 + 10 + 1 + 12 + 1 + 8 + 6 == 43
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
    assert at("len_arm") == encode_varint(h.section_sizes["arm"]) and h.section_sizes["arm"] == 580


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
    assert s["header"] == 43 + 4  # the CRC trailer counts as header
    assert set(s["networks"]) == set(MODULE_NAMES)
    assert info["format_version"] == 4 and info["channels"] == 3
    assert info["height"] == 10 and info["width"] == 13 and info["seed"] == p.seed
    assert info["content"] == "compressed image" and info["frame"] == 0 and info["architecture_preset"] == 0
    assert info["architecture"] == SMALL.to_dict()
    assert info["shifts"] == {"arm": 6, "upsampling": 7, "modnet": 8}
    assert info["mask_ratio"] == 0.3
    assert info["bpp"] == pytest.approx(8 * len(data) / (10 * 13))
    h = read_header(data)
    assert h.architecture == SMALL and h.mask_ratio == 0.3 and h.mask_ratio_units == 3000
    assert h.total_size == len(data) and h.image_size == (10, 13)


def test_ratio_units():
    assert ratio_units(0.3) == 3000 and ratio_units(0.0) == 0 and ratio_units(1.0) == 10000
    assert ratio_units(0.05) == 500 and ratio_units(0.99999) == 10000
    for bad in (-0.01, 1.5, float("nan")):
        with pytest.raises(LotteryError):
            ratio_units(bad)


# Container: bad input -----------------------------------------------------------------------
def test_every_truncation_is_rejected():
    data = encode_file(make_payload(), latent_coder=CODER)
    for n in range(len(data)):
        with pytest.raises(LotteryError):
            decode_file(data[:n], latent_coder=CODER)
    header_size = read_header(data).header_size
    for n in range(5, len(data)):
        with pytest.raises(LotteryError, match="truncated"):
            read_header(data[:n])
        if n >= header_size:  # past the header the size it states is known
            with pytest.raises(LotteryError, match=f"header says {len(data)}"):
                read_header(data[:n])


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
    with pytest.raises(LotteryError, match="1 unexpected bytes after the end"):
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
    assert read_header(data[:-1] + bytes([data[-1] ^ 1]), check_crc=False).header_size == 43


@pytest.mark.parametrize("version", [0, 1, 2, 3, 5, 255])
def test_other_format_versions_are_refused(version):
    data = encode_file(make_payload(), latent_coder=CODER)
    bad = resign(data[:4] + bytes([version]) + data[5:])
    want = rf"^unsupported \.lottery format version {version} \(this lottery reads version 4\)$"
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

    for read in (read_header, describe):
        with pytest.raises(LotteryError, match=message) as exc:
            read(bad)
        one_line(exc)
    monkeypatch.setattr(mask_coding, "decode_mask", must_not_run)
    monkeypatch.setattr(param_coding, "decode_module", must_not_run)
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
        ("len_mask", encode_varint(0), "mask section is too short"),
        ("len_arm", encode_varint(0), "arm section is empty"),
        ("len_up", encode_varint(0), "upsampling section is empty"),
        ("len_modnet", encode_varint(0), "modnet section is empty"),
        ("len_mask", encode_varint(2**32 + 1), "mask section length"),
        ("len_latents", b"\xc8\x80\x00", "latents section length is not in its shortest form"),
        ("len_latents", encode_varint(5000), "truncated .lottery file .*header says"),
        ("len_latents", encode_varint(5), "unexpected bytes after the end"),
        ("layout", u8(0x85), "unknown architecture preset 5"),
        ("layout", u8(0x87), "unknown architecture preset 7"),
    ],
)
def test_header_fields_are_checked(field, value, message, monkeypatch):
    data = encode_file(make_payload(), latent_coder=CODER)
    bad = with_field(data, field, value)
    _refused_before_decoding(bad, message, monkeypatch)


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
    p = _real_payload(8, 8)
    data = encode_file(p)
    s = read_header(data).section_sizes
    start = len(data) - 4 - s["latents"]
    rng = random.Random(3)
    for _ in range(60):
        b = bytearray(data)
        b[rng.randrange(start, len(b) - 4)] ^= 1 << rng.randrange(8)
        try:
            back = decode_file(resign(bytes(b)))
        except LotteryError:
            continue
        # a flip may only survive if it did not change the decoded values (the section's checksum)
        assert all(torch.equal(x, y) for x, y in zip(back.latents, p.latents))
    for n in range(0, len(data), 7):
        with pytest.raises(LotteryError):
            decode_file(data[:n])
