"""Entropy coding of integer latents: exact round trips, sizes, robustness, pinned table."""

import math

import numpy as np
import pytest
import torch

from lotterycli.bitstream import latent_coding as entropy
from lotterycli.bitstream.latent_coding import (
    decode_latents,
    encode_latents,
    estimate_bits,
    grid_bits,
    table_fingerprint,
)
from lotterycli.bitstream.varint import encode_varint
from lotterycli.errors import LotteryError
from lotterycli.model.architecture import latent_shapes
from lotterycli.model.arm import Arm, ArmExact

PINNED_TABLE = "3cc779380c8890697bab1970026b6e399cd678c25f925bbbf5e69c066feb38b6"


def _exact_arm(seed, std=0.2, shift=12, hidden=24):
    torch.manual_seed(seed)
    arm = Arm(hidden)
    with torch.no_grad():
        for p in arm.parameters():
            p.normal_(0, std)
    q = arm.quantize(shift)
    return arm.load_quantized(q), ArmExact(q)


def _laplace_latents(shapes, seed, scale=2.0, big=0):
    rng = np.random.default_rng(seed)
    out = []
    for i, s in enumerate(shapes):
        v = np.round(rng.laplace(0, scale / (1 + i), size=s)).astype(np.int64)
        if big and v.size:
            idx = rng.integers(0, v.size, size=min(big, v.size))
            v.reshape(-1)[idx] = rng.integers(-5000, 5000, size=idx.size)
        out.append(torch.from_numpy(v))
    return out


def _roundtrip(lat, ex):
    data = encode_latents(lat, ex)
    out = decode_latents(data, [tuple(g.shape) for g in lat], ex)
    assert len(out) == len(lat)
    for a, b in zip(lat, out):
        assert b.dtype == torch.int64 and torch.equal(a, b)
    return data


def test_table_pinned_and_well_formed():
    assert table_fingerprint() == PINNED_TABLE
    t = entropy._table_ints()
    assert t.shape == (entropy.MU_STEPS * entropy.N_LS, entropy.N_SYMBOLS)
    assert (t >= 1).all() and (t.sum(1) == entropy.FREQ_TOTAL).all()


def test_portable_exp_is_accurate():
    x = np.linspace(-60, 6, 10001)
    ours = entropy._exp(x)
    ref = np.array([math.exp(v) for v in x])
    assert np.max(np.abs(ours - ref) / ref) < 1e-14


def test_roundtrip_odd_sizes_several_seeds():
    shapes = latent_shapes(37, 53, 7)
    assert shapes[-1] == (1, 1)
    for seed in range(4):
        _, ex = _exact_arm(seed, hidden=(24, 8)[seed % 2])  # the reference width and a narrow ARM
        _roundtrip(_laplace_latents(shapes, seed, scale=3.0), ex)


def test_roundtrip_large_values_need_escapes():
    shapes = latent_shapes(37, 53, 7)
    _, ex = _exact_arm(7)
    lat = _laplace_latents(shapes, 7, scale=2.0, big=40)
    lat[0][0, 0] = entropy.LATENT_LIMIT
    lat[1][3, 3] = -entropy.LATENT_LIMIT
    lat[2][0, 1] = 64 + 1
    _roundtrip(lat, ex)
    lat[0][0, 0] = entropy.LATENT_LIMIT + 1
    with pytest.raises(LotteryError):
        encode_latents(lat, ex)


@pytest.mark.parametrize("band_rows", [0, 8])
def test_grid_bits_are_each_grids_own_code_length(band_rows):
    """`grid_bits` (what `info --latents` shares the section out by): each grid's code length,
    escapes included, adding up to the whole estimate; an all-zero grid (not coded) takes 0."""
    shapes = latent_shapes(37, 53, 7)
    _, ex = _exact_arm(4)
    lat = _laplace_latents(shapes, 4, big=12)
    lat[3].zero_()
    bits = grid_bits(lat, ex, band_rows)
    assert len(bits) == 7 and bits[3] == 0.0 and min(bits[:3]) > 0
    assert sum(bits) == pytest.approx(estimate_bits(lat, ex, band_rows), rel=1e-12)
    for i, g in enumerate(lat):  # contexts stay inside a grid: coded alone, the same length
        alone = [g if j == i else torch.zeros_like(h) for j, h in enumerate(lat)]
        assert bits[i] == pytest.approx(estimate_bits(alone, ex, band_rows), rel=1e-12)


def test_all_zero_grids_are_skipped():
    shapes = latent_shapes(37, 53, 7)
    _, ex = _exact_arm(2)
    zeros = [torch.zeros(s, dtype=torch.int64) for s in shapes]
    data = _roundtrip(zeros, ex)
    assert len(data) <= 8
    lat = _laplace_latents(shapes, 2)
    for i in (1, 3, 5):
        lat[i].zero_()
    lat[6][0, 0] = 1
    mixed = _roundtrip(lat, ex)
    assert mixed[0] == 0b1010101
    _roundtrip([torch.zeros(0, 5, dtype=torch.int64), torch.ones(1, 1, dtype=torch.int64)], ex)


def test_decode_same_with_one_or_two_threads():
    shapes = latent_shapes(40, 31, 7)
    _, ex = _exact_arm(11, std=0.4)
    lat = _laplace_latents(shapes, 11, scale=4.0, big=5)
    data = encode_latents(lat, ex)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = decode_latents(data, shapes, ex)
        data1 = encode_latents(lat, ex)
        torch.set_num_threads(2)
        b = decode_latents(data, shapes, ex)
        data2 = encode_latents(lat, ex)
    finally:
        torch.set_num_threads(old)
    assert data1 == data2 == data
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_size_matches_estimate_and_float_rate():
    # Constant model (context weights zero): latents drawn from the model's own Laplace.
    torch.manual_seed(0)
    arm = Arm()
    with torch.no_grad():
        for p in arm.parameters():
            p.zero_()
        arm.fc3.bias.copy_(torch.tensor([0.25, 0.75]))
    q = arm.quantize(12)
    arm.load_quantized(q)
    ex = ArmExact(q)
    shapes = latent_shapes(96, 128, 7)
    rng = np.random.default_rng(0)
    lat = [torch.from_numpy(np.round(0.25 + rng.laplace(0, math.exp(0.75), size=s)).astype(np.int64)) for s in shapes]
    data = _roundtrip(lat, ex)
    est = estimate_bits(lat, ex)
    with torch.no_grad():
        rate = float(arm.rate_bits([g.float() for g in lat]))
    assert abs(len(data) * 8 - est) <= 0.02 * est + 64
    assert abs(est - rate) <= 0.02 * rate
    # random ARM weights: estimate still predicts the real size
    arm2, ex2 = _exact_arm(4, std=0.1)
    lat2 = _laplace_latents(shapes, 4, scale=3.0)
    est2 = estimate_bits(lat2, ex2)
    assert abs(len(encode_latents(lat2, ex2)) * 8 - est2) <= 0.02 * est2 + 64
    with torch.no_grad():
        rate2 = float(arm2.rate_bits([g.float() for g in lat2]))
    assert abs(est2 - rate2) <= 0.05 * rate2


def test_truncated_or_corrupted_data_raises():
    shapes = latent_shapes(37, 53, 7)
    _, ex = _exact_arm(3)
    lat = _laplace_latents(shapes, 3, scale=3.0, big=3)
    data = encode_latents(lat, ex)
    for cut in (0, 1, 3, 6, len(data) // 2, len(data) - 5, len(data) - 1):
        with pytest.raises(LotteryError):
            decode_latents(data[:cut], shapes, ex)
    rng = np.random.default_rng(0)
    for _ in range(12):
        bad = bytearray(data)
        i = int(rng.integers(0, len(bad)))
        bad[i] ^= int(rng.integers(1, 256))
        try:
            out = decode_latents(bytes(bad), shapes, ex)
        except LotteryError:
            continue
        # no checksum here (the file's CRC covers the section): a flip that decodes gives grids of
        # the right shapes and values within the latent limit
        assert [tuple(g.shape) for g in out] == shapes
        assert all(int(g.abs().max()) <= entropy.LATENT_LIMIT for g in out)
    with pytest.raises(LotteryError):
        decode_latents(bytes(rng.integers(0, 256, size=300, dtype=np.uint8)), shapes, ex)
    with pytest.raises(LotteryError):
        decode_latents(b"\x7f" + b"\xff" * 40, shapes, ex)


# Bands --------------------------------------------------------------------------
def _split_bands(lat, band_rows):
    return [b for g in lat for b in g.split(band_rows, dim=0)]


def _separate_grid_bits(grids, ex):
    """Table code length of each grid coded on its own (any number of grids; `_plan` directly)."""
    active = [i for i, g in enumerate(grids) if bool(g.any())]
    plan = entropy._plan([tuple(g.shape) for g in grids], active)
    syms, _ = entropy._symbols(grids, ex, plan)
    escapes = math.log2(entropy.ESC_K_SIZE) * syms.esc_k.shape[0] + float(syms.esc_k.sum())
    return float(entropy._table_bits()[syms.rows, syms.sym].sum()) + escapes


@pytest.mark.parametrize("band_rows", [1, 5, 16, 40])
def test_bands_code_like_separate_grids_and_round_trip(band_rows):
    """A band's contexts see zeros above it: the same code length as coding each band as its own grid."""
    shapes = latent_shapes(37, 53, 5)
    arm, ex = _exact_arm(6, std=0.15)
    lat = _laplace_latents(shapes, 6, scale=3.0, big=3)
    banded = estimate_bits(lat, ex, band_rows=band_rows)
    assert banded == pytest.approx(_separate_grid_bits(_split_bands(lat, band_rows), ex), rel=1e-12)
    with torch.no_grad():  # the fitting loop's rate model cuts the contexts at the same rows
        rate = float(arm.rate_bits([g.float() for g in lat], band_rows=band_rows))
        rate_split = float(arm.rate_bits([g.float() for g in _split_bands(lat, band_rows)]))
    assert rate == pytest.approx(rate_split, rel=1e-5)
    data = encode_latents(lat, ex, band_rows=band_rows)
    out = decode_latents(data, shapes, ex, band_rows=band_rows)
    assert all(torch.equal(a, b) for a, b in zip(lat, out))
    if band_rows < 37:  # cutting the contexts changes the code: the other band height cannot read it
        assert estimate_bits(lat, ex) != banded
        try:  # other values come out, or the streams do not end where they should
            out = decode_latents(data, shapes, ex)
        except LotteryError:
            pass
        else:
            assert not all(torch.equal(a, b) for a, b in zip(lat, out))


def test_bands_taller_than_every_grid_change_nothing():
    shapes = latent_shapes(37, 53, 5)
    _, ex = _exact_arm(7)
    lat = _laplace_latents(shapes, 7)
    assert encode_latents(lat, ex, band_rows=37) == encode_latents(lat, ex)


def test_bands_cut_the_number_of_wavefronts():
    shapes = latent_shapes(512, 768, 7)
    active = list(range(7))
    assert entropy._plan(shapes, active).bounds.shape[0] - 1 == 4 * 511 + 767 + 1
    assert entropy._plan(shapes, active, 256).bounds.shape[0] - 1 == 4 * 255 + 767 + 1
    assert entropy._plan(shapes, active, 128).bounds.shape[0] - 1 == 4 * 127 + 767 + 1


def test_bad_band_rows_are_refused():
    _, ex = _exact_arm(1)
    lat = _laplace_latents(latent_shapes(16, 16, 2), 1)
    with pytest.raises(LotteryError, match="band rows"):
        encode_latents(lat, ex, band_rows=-1)
    with pytest.raises(LotteryError, match="band rows"):
        decode_latents(b"\0" * 16, [(16, 16), (8, 8)], ex, band_rows=1 << 20)


# Byte layout: grid flags, escape stream lengths (varints), streams ------------------------
def _with_escapes():
    shapes = latent_shapes(37, 53, 7)
    _, ex = _exact_arm(5)
    lat = _laplace_latents(shapes, 5, scale=2.0, big=30)
    data = encode_latents(lat, ex)
    return shapes, ex, lat, data


def _leb128(data, pos):
    """(value, end) of the LEB128 integer at data[pos], read by hand."""
    value = shift = 0
    while True:
        b = data[pos]
        value |= (b & 0x7F) << shift
        shift += 7
        pos += 1
        if not b & 0x80:
            return value, pos


def _long_form(n):
    short = encode_varint(n)
    return short[:-1] + bytes([short[-1] | 0x80, 0])


def test_escape_stream_lengths_are_shortest_form_varints():
    shapes, ex, lat, data = _with_escapes()
    n1, p1 = _leb128(data, 1)
    n2, p2 = _leb128(data, p1)
    assert data[0] == 0b1111111 and n1 > 0 and n2 > 0
    assert data[1:p2] == encode_varint(n1) + encode_varint(n2)
    # the same lengths written one byte longer (valid LEB128, not the shortest form)
    for start, end, n in ((1, p1, n1), (p1, p2, n2)):
        long = data[:start] + _long_form(n) + data[end:]
        with pytest.raises(LotteryError, match="latent escape stream length is not in its shortest form"):
            decode_latents(long, shapes, ex)
    # a length beyond the section's size is refused by the varint's limit, or as truncation
    too_long = data[:1] + encode_varint(len(data) + 1000) + data[p1:]
    with pytest.raises(LotteryError, match="latent escape stream length .*out of range"):
        decode_latents(too_long, shapes, ex)
    with pytest.raises(LotteryError, match="truncated"):
        decode_latents(data[:1] + encode_varint(len(data) - 5) + data[p1:], shapes, ex)
    with pytest.raises(LotteryError, match=r"^corrupted \.lottery file: the latent escape stream length is out of range$"):
        decode_latents(data[:1] + b"\xff\xff\xff\xff\xff\xff", shapes, ex)
    assert [torch.equal(a, b) for a, b in zip(decode_latents(data, shapes, ex), lat)] == [True] * 7


def test_grid_flags_and_stream_ends_are_checked():
    shapes, ex, lat, data = _with_escapes()
    with pytest.raises(LotteryError, match="grid flags"):  # a grid beyond the 7 shapes
        decode_latents(bytes([data[0] | 0x80]) + data[1:], shapes, ex)
    with pytest.raises(LotteryError, match="grid flags"):
        decode_latents(data, shapes[:6], ex)
    with pytest.raises(LotteryError):  # one grid less: other values come out
        decode_latents(bytes([data[0] & ~0b10]) + data[1:], shapes, ex)
    assert data[-1] != 0  # trailing zero bytes are dropped by the writer
    with pytest.raises(LotteryError, match="bytes left"):  # whole words after the last latent
        decode_latents(data + b"\xff" * 8, shapes, ex)
    with pytest.raises(LotteryError):  # other shapes: other values (or a failure), never the same
        decode_latents(data, latent_shapes(37, 52, 7), ex)


def test_bad_latents_and_shapes_are_refused():
    _, ex = _exact_arm(1)
    shapes = latent_shapes(16, 16, 2)
    lat = _laplace_latents(shapes, 1)
    as_float = [g.double() for g in lat]
    assert encode_latents(as_float, ex) == encode_latents(lat, ex)  # integer-valued floats are fine
    as_float[0][0, 0] += 0.5
    with pytest.raises(LotteryError, match="integers"):
        encode_latents(as_float, ex)
    with pytest.raises(LotteryError, match="at most 8"):
        decode_latents(b"\0" * 16, [(1, 1)] * 9, ex)
    with pytest.raises(LotteryError, match="shape"):
        decode_latents(b"\0" * 16, [(-1, 4)], ex)
    with pytest.raises(LotteryError, match="too large"):
        decode_latents(b"\0" * 16, [(1 << 15, 1 << 14)], ex)
