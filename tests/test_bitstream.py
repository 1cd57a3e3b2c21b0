"""The .lottery bitstream: mask / parameter coding, container round trips, bad input."""

from __future__ import annotations

import importlib
import random
import struct
import zlib
from dataclasses import replace

import pytest
import torch

from lotterycli.bitstream import container, mask_coding, param_coding
from lotterycli.bitstream import decode_file, describe, encode_file, read_header
from lotterycli.codec.architecture import Architecture
from lotterycli.codec.params import MODULE_NAMES, Payload, QuantizedModule, latent_shapes
from lotterycli.errors import LotteryError

SMALL = Architecture(
    n_levels=3, upsample_kernel=4, modnet_hidden=6, modnet_out=2, synth_hidden=(8, 6, 4), arm_hidden=24
)


class StandInLatentCoder:
    """Codes the grids with the parameter coder (ignores the ARM): enough to test the container."""

    def encode(self, latents, arm, band_rows=0):
        return param_coding.encode_values([v for t in latents for v in t.reshape(-1).tolist()])

    def decode(self, data, shapes, arm, band_rows=0):
        values = param_coding.decode_values(data, sum(h * w for h, w in shapes))
        out, start = [], 0
        for h, w in shapes:
            out.append(torch.tensor(values[start : start + h * w], dtype=torch.int64).reshape(h, w))
            start += h * w
        return out


CODER = StandInLatentCoder()


def make_payload(arch=SMALL, height=10, width=13, seed=1234567890123, ratio=0.3, gen_seed=0, scale=3.0):
    g = torch.Generator().manual_seed(gen_seed)
    n = arch.n_synth_weights
    mask = torch.rand(n, generator=g) >= ratio
    modules = {}
    for i, name in enumerate(MODULE_NAMES):
        tensors = {}
        for pname, shape in param_coding.module_layout(name, arch):
            tensors[pname] = torch.round(torch.randn(shape, generator=g) * scale * (i + 1)).to(torch.int64)
        modules[name] = QuantizedModule(shift=6 + i, tensors=tensors)
    latents = [
        torch.round(torch.randn(h, w, generator=g) * 2).to(torch.int64) for h, w in latent_shapes(height, width, arch.n_levels)
    ]
    return Payload(height, width, seed, ratio, arch, mask, modules, latents)


def assert_payload_equal(a: Payload, b: Payload):
    assert (a.height, a.width, a.seed, a.mask_ratio, a.architecture) == (
        b.height,
        b.width,
        b.seed,
        b.mask_ratio,
        b.architecture,
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


def patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return resign(bytes(b))


# Mask --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.3, 0.5, 0.9, 1.0])
def test_mask_round_trip(ratio):
    n = Architecture().n_synth_weights
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(n, generator=g) >= ratio
    if ratio == 0.0:
        mask = torch.ones(n, dtype=torch.bool)
    if ratio == 1.0:
        mask = torch.zeros(n, dtype=torch.bool)
    data = mask_coding.encode_mask(mask)
    out = mask_coding.decode_mask(data, n)
    assert out.dtype == torch.bool and torch.equal(out, mask)
    assert mask_coding.mask_bits(mask) == 8 * len(data)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7])
def test_mask_size_near_binary_entropy(ratio):
    n = Architecture().n_synth_weights  # 1,723
    mask = torch.rand(n, generator=torch.Generator().manual_seed(7)) >= ratio
    ideal_bits = mask_coding.binary_entropy_bits(n, int(mask.sum()))
    coded = len(mask_coding.encode_mask(mask))
    assert coded <= ideal_bits * 1.02 / 8 + 8  # +4 bytes count, +<=4 bytes coder termination


def test_mask_constant_is_four_bytes():
    assert len(mask_coding.encode_mask(torch.ones(100, dtype=torch.bool))) == 4
    assert len(mask_coding.encode_mask(torch.zeros(100, dtype=torch.bool))) == 4


def test_mask_bad_data():
    with pytest.raises(LotteryError):
        mask_coding.decode_mask(b"\x01\x00", 10)
    with pytest.raises(LotteryError):
        mask_coding.decode_mask(struct.pack("<I", 11), 10)  # more ones than weights
    with pytest.raises(LotteryError):
        mask_coding.decode_mask(struct.pack("<I", 10) + b"xx", 10)
    with pytest.raises(LotteryError):
        mask_coding.decode_mask(struct.pack("<I", 5) + b"abc", 10)


# Parameters ---------------------------------------------------------------------------------
def test_module_layouts_default():
    arch = Architecture()
    arm = param_coding.module_layout("arm", arch)
    assert arm == [
        ("fc1.weight", (24, 24)),
        ("fc1.bias", (24,)),
        ("fc2.weight", (24, 24)),
        ("fc2.bias", (24,)),
        ("fc3.weight", (2, 24)),
        ("fc3.bias", (2,)),
    ]
    assert param_coding.module_layout("upsampling", arch) == [("kernel", (8, 8))]
    modnet = dict(param_coding.module_layout("modnet", arch))
    assert modnet["u0.weight"] == (48, 7) and modnet["u2.weight"] == (3, 3, 3, 3)
    assert [n for n, _ in param_coding.module_layout("modnet", arch)] == [
        "u0.weight", "u0.bias", "u1.weight", "u1.bias", "u2.weight", "u2.bias", "u3.weight", "u3.bias"
    ]
    with pytest.raises(ValueError):
        param_coding.module_layout("nope", arch)


@pytest.mark.parametrize("scale", [0, 0.3, 5, 300, 2**20])
def test_param_round_trip(scale):
    arch = Architecture()
    g = torch.Generator().manual_seed(3)
    for name in MODULE_NAMES:
        layout = param_coding.module_layout(name, arch)
        tensors = {
            p: torch.round(torch.randn(s, generator=g, dtype=torch.float64) * scale).clamp(-(2**20), 2**20).to(torch.int64)
            for p, s in layout
        }
        q = QuantizedModule(shift=9, tensors=tensors)
        data = param_coding.encode_module(q, layout)
        assert param_coding.module_bits(q) == 8 * len(data)
        out = param_coding.decode_module(data, 9, layout)
        assert out.shift == 9 and list(out.tensors) == [p for p, _ in layout]
        for p in tensors:
            assert torch.equal(out.tensors[p], tensors[p])


def test_param_extreme_values():
    values = [0, 1, -1, 2**20, -(2**20), 2**40, -(2**62), 2**63 - 1, -(2**63), 7, 0, 0]
    data = param_coding.encode_values(values)
    assert param_coding.decode_values(data, len(values)) == values


def test_param_size_near_laplace_cost():
    # Laplace(b) integers: ideal cost ~ log2(2 e b) bits each for b >> 1.
    import math

    rng = random.Random(5)
    for b in (30.0, 3000.0):
        vals = [round(rng.expovariate(1 / b) * rng.choice((-1, 1))) for _ in range(1250)]
        ideal = len(vals) * math.log2(2 * math.e * b)
        assert 8 * len(param_coding.encode_values(vals)) < ideal * 1.03 + 64


def test_param_bad_data():
    layout = param_coding.module_layout("arm", SMALL)
    with pytest.raises(LotteryError):
        param_coding.decode_module(b"", 0, layout)
    with pytest.raises(LotteryError):
        param_coding.decode_module(b"\xff\x00", 0, layout)  # k out of range
    good = param_coding.encode_values(list(range(-300, 300)))
    with pytest.raises(LotteryError):
        param_coding.decode_values(good[: len(good) // 2], 600)  # truncated
    with pytest.raises(LotteryError):
        param_coding.decode_values(good + b"\x01\x02\x03", 600)  # trailing data
    rng = random.Random(0)
    for _ in range(200):  # garbage either decodes to something or raises LotteryError
        junk = bytes([rng.randrange(4)]) + bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        try:
            param_coding.decode_values(junk, 50)
        except LotteryError:
            pass


def test_param_layout_mismatch_is_rejected():
    layout = param_coding.module_layout("upsampling", SMALL)
    q = QuantizedModule(shift=0, tensors={"kernel": torch.zeros(3, 3, dtype=torch.int64)})
    with pytest.raises(ValueError):
        param_coding.encode_module(q, layout)


# Container --------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_file_round_trip_and_determinism(version):
    p = make_payload()
    data = encode_file(p, latent_coder=CODER, version=version)
    assert data[:4] == b"LOTR" and data[4] == version
    assert encode_file(make_payload(), latent_coder=CODER, version=version) == data
    assert_payload_equal(decode_file(data, latent_coder=CODER), p)


def test_version_4_is_written_by_default_and_each_version_is_smaller():
    p = make_payload()
    v4 = encode_file(p, latent_coder=CODER)
    v3, v2, v1 = (encode_file(p, latent_coder=CODER, version=v) for v in (3, 2, 1))
    assert v4[4] == 4 == container.FORMAT_VERSION
    h4, h3, h2, h1 = (read_header(d) for d in (v4, v3, v2, v1))
    assert h1.header_size == container.HEADER_SIZE_V1 == 61
    assert h3.section_sizes == h2.section_sizes == h1.section_sizes
    assert h4.shifts == h3.shifts == h2.shifts == h1.shifts
    # 10x13 image, 41-bit seed: 4+1+1+1+6+2 + 1+4+1+1+1+3+1 + 15 shifts + 5 lengths
    assert h2.header_size == 48 and len(v2) == len(v1) - 13
    assert h3.header_size == 49  # + the band height (0: one byte)
    # v4: + the layout byte, shifts 6..8 as 8 bytes of nibbles instead of 15 (SMALL is no preset)
    assert h4.header_size == 49 + 1 - 7
    assert h4.section_sizes["mask"] == h3.section_sizes["mask"] - 3  # the count: one byte, not four
    assert_payload_equal(decode_file(v4, latent_coder=CODER), p)


def test_version_4_names_a_preset_architecture_in_one_byte():
    arch = replace(container.ARCH_PRESETS[1], arm_band_rows=256)
    p = make_payload(arch=arch, height=20, width=16)
    v4, v3 = encode_file(p, latent_coder=CODER), encode_file(p, latent_coder=CODER, version=3)
    assert v4[15] & 0x03 == 1  # the layout byte, after magic, version, height, width, seed (6 bytes), ratio (2)
    assert read_header(v4).header_size == read_header(v3).header_size + 1 - 12 - 7  # 12 architecture bytes, 7 of the 15 shift bytes
    back = decode_file(v4, latent_coder=CODER)
    assert back.architecture == arch
    assert_payload_equal(back, p)
    narrow = make_payload(arch=replace(container.ARCH_PRESETS[1], arm_hidden=8), height=20, width=16)
    assert encode_file(narrow, latent_coder=CODER)[15] & 0x03 == 3
    assert_payload_equal(decode_file(encode_file(narrow, latent_coder=CODER), latent_coder=CODER), narrow)
    reference = make_payload(arch=Architecture(), height=20, width=16)
    assert encode_file(reference, latent_coder=CODER)[15] & 0x03 == 2
    assert_payload_equal(decode_file(encode_file(reference, latent_coder=CODER), latent_coder=CODER), reference)


def test_version_4_layout_byte_is_checked():
    data = encode_file(make_payload(), latent_coder=CODER)
    pos = _v2_offsets(data)["layout"]
    assert pos == 15 and data[pos] == 0x04  # SMALL: fields in full; shifts as nibbles
    for value, message in ((0x08, "layout flags"),):
        b = bytearray(data)
        b[pos] = value
        with pytest.raises(LotteryError, match=message):
            read_header(resign(bytes(b)))


def test_version_4_falls_back_to_a_byte_per_shift():
    """Shifts outside 0..15 (negative, or fine steps) take one signed byte each, as in v3."""
    p = make_payload()
    p.modules["arm"].shifts = {"fc1.weight": 16, "fc3.bias": -3}
    data = encode_file(p, latent_coder=CODER)
    assert not data[15] & 0x04
    assert read_header(data).header_size == read_header(encode_file(p, latent_coder=CODER, version=3)).header_size + 1
    assert_payload_equal(decode_file(data, latent_coder=CODER), p)


def test_version_4_shift_padding_nibble_must_be_zero():
    data = encode_file(make_payload(), latent_coder=CODER)  # 15 shifts: the 8th byte's high nibble pads
    o = _v2_offsets(data)
    last = o["shifts"] + 7
    b = bytearray(data)
    b[last] |= 0x30
    with pytest.raises(LotteryError, match="padding"):
        read_header(resign(bytes(b)))


def test_version_4_mask_count_is_relative_to_the_ratio():
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
    assert len(mask_coding.encode_mask(mask, 3000)) == len(mask_coding.encode_mask(mask)) - 3
    assert mask_coding.expected_ones(1627, 3000) == 1627 - round(0.3 * 1627)
    for bad in (b"", b"\x80", b"\x80\x00\x01", bytes([0xFF]) * 6):
        with pytest.raises(LotteryError, match="mask"):
            mask_coding.decode_mask(bad, n, 3000)
    with pytest.raises(LotteryError, match="negative"):
        mask_coding.decode_mask(bytes([0xFF, 0x7F]), 10, 3000)


def test_version_4_upsampling_kernel_is_coded_against_bicubic():
    """A kernel near the bicubic start codes to fewer bytes than the same integers as they are,
    and decodes exactly."""
    from lotterycli.codec.upsampling import bicubic_kernel_1d, initial_kernel_integers

    k1 = bicubic_kernel_1d(8).double()
    for shift in range(0, 15):  # the exact rational prediction equals the float one (dyadic taps)
        want = torch.floor(torch.outer(k1, k1) * 2**shift + 0.5).long().reshape(-1).tolist()
        assert list(initial_kernel_integers(8, shift)) == want
    g = torch.Generator().manual_seed(5)
    layout = [("kernel", (8, 8))]
    near = torch.tensor(initial_kernel_integers(8, 9)).view(8, 8) + torch.randint(-3, 4, (8, 8), generator=g)
    q = QuantizedModule(shift=9, tensors={"kernel": near})
    v4, v3 = param_coding.encode_module(q, layout, "upsampling"), param_coding.encode_module(q, layout)
    assert len(v4) < len(v3) * 0.6
    back = param_coding.decode_module(v4, {"kernel": 9}, layout, "upsampling")
    assert torch.equal(back.tensors["kernel"], near)
    assert param_coding.module_bits(q, "upsampling") == 8 * len(v4)
    assert v4[0] & param_coding.PREDICTED
    far = QuantizedModule(shift=9, tensors={"kernel": -near})  # far from bicubic: coded as it is
    plain = param_coding.encode_module(far, layout, "upsampling")
    assert not plain[0] & param_coding.PREDICTED
    assert torch.equal(param_coding.decode_module(plain, 9, layout, "upsampling").tensors["kernel"], -near)
    # the longer of the two codings is refused (only the encoder's choice is canonical)
    pred = torch.tensor(initial_kernel_integers(8, 9)).view(8, 8)
    as_difference = param_coding.encode_values((-near - pred).reshape(-1).tolist(), [64])
    assert len(as_difference) >= len(plain)
    longer = bytes([as_difference[0] | param_coding.PREDICTED]) + as_difference[1:]
    with pytest.raises(LotteryError, match="not canonical"):
        param_coding.decode_module(longer, 9, layout, "upsampling")
    near_as_is = param_coding.encode_values(near.reshape(-1).tolist(), [64])  # plain, though the difference is shorter
    with pytest.raises(LotteryError, match="not canonical"):
        param_coding.decode_module(near_as_is, 9, layout, "upsampling")
    arm_layout = param_coding.module_layout("arm", SMALL)
    arm = param_coding.encode_module(make_payload().modules["arm"], arm_layout, "arm")
    with pytest.raises(LotteryError, match="claims a prediction"):
        param_coding.decode_module(bytes([arm[0] | param_coding.PREDICTED]) + arm[1:], 6, arm_layout, "arm")
    odd = initial_kernel_integers(5, 4)  # odd sizes have non-dyadic taps: still exact and symmetric
    assert len(odd) == 25 and odd == tuple(reversed(odd))


def test_version_4_gives_each_tensor_its_own_zero_and_prefix_contexts():
    """Many zeros in one tensor and none in the next: per-tensor contexts code it smaller."""
    g = torch.Generator().manual_seed(2)
    sparse = [0] * 200 + [1, -1]
    dense = (torch.randint(1, 40, (200,), generator=g) * torch.where(torch.rand(200, generator=g) < 0.5, -1, 1)).tolist()
    values = sparse + dense
    joint, split = param_coding.encode_values(values), param_coding.encode_values(values, [202, 200])
    assert len(split) < len(joint)
    assert param_coding.decode_values(split, 402, [202, 200]) == values
    with pytest.raises(ValueError):
        param_coding.encode_values(values, [100, 100])


def test_latent_bands_round_trip_in_version_3_only():
    p = make_payload(arch=replace(SMALL, arm_band_rows=300))
    data = encode_file(p, latent_coder=CODER)
    back = decode_file(data, latent_coder=CODER)
    assert back.architecture.arm_band_rows == 300
    assert_payload_equal(back, p)
    assert describe(data)["architecture"]["arm_band_rows"] == 300
    for version in (1, 2):
        with pytest.raises(LotteryError, match=f"v{version} has no latent bands"):
            encode_file(p, latent_coder=CODER, version=version)
    old = decode_file(encode_file(make_payload(), latent_coder=CODER, version=2), latent_coder=CODER)
    assert old.architecture.arm_band_rows == 0


def test_band_rows_reach_the_latent_coder():
    seen = []

    class Recording(StandInLatentCoder):
        def encode(self, latents, arm, band_rows=0):
            seen.append(("encode", band_rows))
            return super().encode(latents, arm)

        def decode(self, data, shapes, arm, band_rows=0):
            seen.append(("decode", band_rows))
            return super().decode(data, shapes, arm)

    coder = Recording()
    decode_file(encode_file(make_payload(arch=replace(SMALL, arm_band_rows=4)), latent_coder=coder), latent_coder=coder)
    assert seen == [("encode", 4), ("decode", 4)]


def test_per_tensor_shifts_round_trip_in_version_2_only():
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
    with pytest.raises(LotteryError, match="per-tensor shifts"):
        encode_file(p, latent_coder=CODER, version=1)
    p.modules["modnet"].shifts = {"u3.bias": 65}
    with pytest.raises(LotteryError, match="u3.bias"):
        encode_file(p, latent_coder=CODER)


def _v2_offsets(data: bytes) -> dict[str, int]:
    """Where each v2-v4 header field starts in a make_payload() file (varints: docs/format.md)."""
    offsets, pos = {}, 5

    def skip_varint(name):
        nonlocal pos
        offsets[name] = pos
        while data[pos] & 0x80:
            pos += 1
        pos += 1

    for name in ("height", "width", "seed", "ratio"):
        skip_varint(name)
    nibbles = False
    if data[4] >= 4:  # the layout byte (make_payload's SMALL architecture is no preset)
        offsets["layout"], nibbles = pos, bool(data[pos] & 0x04)
        pos += 1
    offsets["levels"], offsets["gain"], offsets["kernel"] = pos, pos + 1, pos + 5
    pos += 6
    for name in ("mhid", "mout", "s1", "s2", "s3", "ahid") + (("bands",) if data[4] >= 3 else ()):
        skip_varint(name)
    offsets["shifts"] = pos
    pos += 8 if nibbles else 15
    for name in ("len_mask", "len_arm", "len_up", "len_modnet", "len_latents"):
        skip_varint(name)
    offsets["end"] = pos
    return offsets


def test_version_2_header_fields_are_where_documented():
    p = make_payload()
    data = encode_file(p, latent_coder=CODER, version=3)
    o = _v2_offsets(data)
    assert o["end"] == read_header(data).header_size
    assert data[o["height"]] == 10 and data[o["width"]] == 13
    assert struct.unpack_from("<f", data, o["gain"])[0] == SMALL.latent_gain
    assert data[o["levels"]] == SMALL.n_levels and data[o["kernel"]] == SMALL.upsample_kernel
    assert list(data[o["shifts"] : o["shifts"] + 15]) == [6] * 6 + [7] + [8] * 8


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("height", 0, "size"),
        ("width", 0, "size"),
        ("levels", 0, "n_levels"),
        ("levels", 11, "n_levels"),
        ("kernel", 0, "upsample_kernel"),
        ("mhid", 0, "modnet_hidden"),
        ("ahid", 0, "arm_hidden"),
        ("shifts", 0x9C, "shift"),  # -100
        ("len_mask", 0, "mask section"),
        ("len_arm", 0, "arm section"),
        ("len_mask", 0x7F, "truncated"),
    ],
)
def test_version_2_header_limits_are_enforced(field, value, message):
    data = encode_file(make_payload(), latent_coder=CODER, version=3)
    b = bytearray(data)
    b[_v2_offsets(data)[field]] = value
    bad = resign(bytes(b))
    with pytest.raises(LotteryError, match=message):
        read_header(bad)
    with pytest.raises(LotteryError):
        decode_file(bad, latent_coder=CODER)


def test_version_2_varints_must_be_short_and_bounded():
    data = encode_file(make_payload(), latent_coder=CODER, version=3)
    o = _v2_offsets(data)
    # height 10 written in two bytes (0x8A 0x00): valid LEB128, but not the canonical form
    long_form = data[: o["height"]] + b"\x8a\x00" + data[o["height"] + 1 :]
    with pytest.raises(LotteryError, match="shortest form"):
        read_header(resign(long_form))
    # height 16385 (0x81 0x80 0x01)
    too_big = data[: o["height"]] + b"\x81\x80\x01" + data[o["height"] + 1 :]
    with pytest.raises(LotteryError, match="height"):
        read_header(resign(too_big))
    # band height 16385, beyond the largest image side
    too_tall = data[: o["bands"]] + b"\x81\x80\x01" + data[o["bands"] + 1 :]
    with pytest.raises(LotteryError, match="arm_band_rows"):
        read_header(resign(too_tall))
    endless = data[:5] + b"\xff" * 40
    with pytest.raises(LotteryError):
        read_header(resign(endless))


def test_file_round_trip_default_arch_edge_values():
    p = make_payload(arch=Architecture(), height=1, width=1, seed=2**64 - 1, ratio=0.0, scale=2000.0)
    p.mask[:] = True
    data = encode_file(p, latent_coder=CODER)
    assert_payload_equal(decode_file(data, latent_coder=CODER), p)


def test_describe_breakdown_sums_to_total():
    p = make_payload()
    data = encode_file(p, latent_coder=CODER)
    info = describe(data)
    s = info["sizes"]
    assert s["total"] == len(data)
    assert s["header"] + s["mask"] + sum(s["networks"].values()) + s["latents"] == len(data)
    assert set(s["networks"]) == set(MODULE_NAMES)
    assert info["height"] == 10 and info["width"] == 13 and info["seed"] == p.seed
    assert info["architecture"] == SMALL.to_dict()
    assert info["shifts"] == {"arm": 6, "upsampling": 7, "modnet": 8}
    h = read_header(data)
    assert h.architecture == SMALL and h.mask_ratio == 0.3 and h.total_size == len(data)


def test_every_truncation_is_rejected():
    data = encode_file(make_payload(), latent_coder=CODER)
    for n in range(len(data)):
        with pytest.raises(LotteryError):
            decode_file(data[:n], latent_coder=CODER)


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
    for _ in range(200):
        b = bytearray(data)
        b[rng.randrange(start, len(b) - 4)] ^= 1 << rng.randrange(8)
        try:
            decode_file(resign(bytes(b)), latent_coder=CODER)
        except LotteryError:
            pass


def test_wrong_magic_version_trailing():
    data = encode_file(make_payload(), latent_coder=CODER)
    with pytest.raises(LotteryError, match="not a .lottery file"):
        decode_file(b"PNG\x89" + data[4:], latent_coder=CODER)
    with pytest.raises(LotteryError, match=r"unsupported \.lottery format version 5 \(this lottery reads 1, 2, 3 and 4\)"):
        decode_file(data[:4] + b"\x05" + data[5:], latent_coder=CODER)
    with pytest.raises(LotteryError):
        decode_file(data + b"\x00", latent_coder=CODER)
    with pytest.raises(LotteryError, match="CRC"):
        decode_file(data[:-1] + bytes([data[-1] ^ 1]), latent_coder=CODER)
    with pytest.raises(LotteryError):
        decode_file(b"", latent_coder=CODER)
    with pytest.raises(LotteryError):
        describe(data[:30])


# Offsets of the version-1 header fields (docs/format.md, appendix).
OFF_H, OFF_W, OFF_C, OFF_RATIO = 5, 7, 9, 18
OFF_LEVELS, OFF_GAIN, OFF_KERNEL, OFF_MHID, OFF_MOUT, OFF_S1, OFF_AHID = 20, 21, 25, 26, 28, 30, 36
OFF_SHIFTS, OFF_LENGTHS = 38, 41


@pytest.mark.parametrize(
    "offset,fmt,value",
    [
        (OFF_H, "<H", 0),
        (OFF_W, "<H", 0),
        (OFF_H, "<H", 16385),
        (OFF_W, "<H", 65535),
        (OFF_C, "<B", 1),
        (OFF_RATIO, "<H", 10001),
        (OFF_LEVELS, "<B", 0),
        (OFF_LEVELS, "<B", 11),
        (OFF_GAIN, "<f", float("nan")),
        (OFF_GAIN, "<f", -1.0),
        (OFF_KERNEL, "<B", 0),
        (OFF_MHID, "<H", 0),
        (OFF_MHID, "<H", 513),
        (OFF_MOUT, "<H", 60000),
        (OFF_S1, "<H", 513),
        (OFF_AHID, "<H", 0),
        (OFF_SHIFTS, "<b", -100),
        (OFF_LENGTHS, "<I", 0),
        (OFF_LENGTHS, "<I", 2**32 - 1),
        (OFF_LENGTHS + 4, "<I", 2**31),
        (OFF_LENGTHS + 16, "<I", 5),
    ],
)
def test_version_1_header_limits_are_enforced(offset, fmt, value):
    data = encode_file(make_payload(), latent_coder=CODER, version=1)
    bad = patch(data, offset, fmt, value)
    with pytest.raises(LotteryError):
        read_header(bad)
    with pytest.raises(LotteryError):
        decode_file(bad, latent_coder=CODER)


def test_too_many_pixels_is_rejected():
    data = encode_file(make_payload(), latent_coder=CODER, version=1)
    bad = patch(patch(data, OFF_H, "<H", 16384), OFF_W, "<H", 8192)  # 128 M pixels
    with pytest.raises(LotteryError, match="pixels"):
        read_header(bad)


def test_version_1_header_offsets_match_documentation():
    data = encode_file(make_payload(), latent_coder=CODER, version=1)
    assert struct.unpack_from("<HH", data, OFF_H) == (10, 13)
    assert struct.unpack_from("<B", data, OFF_LEVELS)[0] == SMALL.n_levels
    assert struct.unpack_from("<f", data, OFF_GAIN)[0] == SMALL.latent_gain
    assert struct.unpack_from("<HHH", data, OFF_S1) == SMALL.synth_hidden
    assert struct.unpack_from("<bbb", data, OFF_SHIFTS) == (6, 7, 8)
    assert container.HEADER_SIZE_V1 == OFF_LENGTHS + 20 == 61


def test_encoder_refuses_what_the_decoder_would_reject():
    with pytest.raises(LotteryError):
        encode_file(make_payload(arch=Architecture(n_levels=11), height=4, width=4), latent_coder=CODER)
    p = make_payload()
    with pytest.raises(LotteryError):
        encode_file(Payload(p.height, p.width, -1, p.mask_ratio, p.architecture, p.mask, p.modules, p.latents), CODER)
    with pytest.raises(ValueError):
        encode_file(Payload(p.height, p.width, 1, 0.3, p.architecture, p.mask[:-1], p.modules, p.latents), CODER)


# Real latent coder (codec.entropy + codec.arm), when available ------------------------------
def _real_coder_available() -> str | None:
    for mod in ("lotterycli.codec.entropy", "lotterycli.codec.arm"):
        try:
            m = importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - any import problem means "not ready yet"
            return f"{mod} not importable: {type(exc).__name__}"
        for attr in {"lotterycli.codec.entropy": ("encode_latents", "decode_latents"), "lotterycli.codec.arm": ("ArmExact",)}[mod]:
            if not hasattr(m, attr):
                return f"{mod}.{attr} missing"
    return None


@pytest.mark.skipif(_real_coder_available() is not None, reason=str(_real_coder_available()))
def test_file_round_trip_real_latent_coder():
    p = make_payload(height=12, width=9, scale=1.0)
    # A plausible ARM: small weights (shift 8) so predicted scales stay moderate.
    g = torch.Generator().manual_seed(11)
    arm = {n: torch.randint(-20, 21, s, generator=g) for n, s in param_coding.module_layout("arm", SMALL)}
    p.modules["arm"] = QuantizedModule(shift=8, tensors=arm)
    data = encode_file(p)
    assert encode_file(p) == data
    assert_payload_equal(decode_file(data), p)
    with pytest.raises(LotteryError):
        decode_file(data[:-5])


@pytest.mark.skipif(_real_coder_available() is not None, reason=str(_real_coder_available()))
def test_real_latent_section_flips_never_crash():
    p = make_payload(height=8, width=8, scale=1.0)
    data = encode_file(p)
    s = read_header(data).section_sizes
    start = len(data) - 4 - s["latents"]
    rng = random.Random(3)
    for _ in range(60):
        b = bytearray(data)
        b[rng.randrange(start, len(b) - 4)] ^= 1 << rng.randrange(8)
        try:
            decode_file(resign(bytes(b)))
        except LotteryError:
            pass
    for n in range(0, len(data), 7):
        with pytest.raises(LotteryError):
            decode_file(data[:n])
