"""Fuzzing of the .lottery decoder (tests/fuzz_lottery.py) and the regressions it guards.

The fuzz test runs a few hundred deterministic cases in one worker process under the harness's
time and memory limits; a failure names the case, which `python tests/fuzz_lottery.py --replay N`
shows in full. Sizes that pass the pixel limit are capped at 2**18 pixels here (decoding time grows
with the picture); `python tests/fuzz_lottery.py --cases 2000` runs them up to the limit.
"""

from __future__ import annotations

import collections
import copy
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_lottery as fuzz  # noqa: E402

from lotterycli import api  # noqa: E402
from lotterycli.bitstream.header import FORMAT_VERSION, MIN_LATENT_SECTION, SECTION_NAMES, read_header  # noqa: E402
from lotterycli.bitstream.network_section import decode_section  # noqa: E402
from lotterycli.errors import LotteryError  # noqa: E402
from lotterycli.images import DEFAULT_MAX_PIXELS  # noqa: E402

FUZZ_CASES = 300
FUZZ_MAX_ACCEPTED_PIXELS = 1 << 18


@pytest.fixture(scope="module")
def seeds() -> list[fuzz.Seed]:
    return fuzz.build_seeds()


def _refusal(data: bytes) -> str:
    with pytest.raises(LotteryError) as info:
        api.decompress(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_harness_matches_the_library(seeds):
    assert fuzz.DEFAULT_MAX_PIXELS == DEFAULT_MAX_PIXELS
    assert fuzz._SECTIONS == SECTION_NAMES and fuzz._MIN_LATENTS == MIN_LATENT_SECTION
    for seed in seeds:
        info = fuzz.SeedInfo.of(seed)  # its header fields write the writer's header back exactly
        assert info.header + b"".join(info.sections) + seed.data[-4:] == seed.data
        header = read_header(seed.data)
        if header.height * header.width > DEFAULT_MAX_PIXELS:
            assert "--max-pixels" in _refusal(seed.data)
        else:
            pixels = api.decompress(seed.data)
            assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (3, *header.image_size)


def test_cases_are_pure_functions_of_seed_and_index(seeds):
    cfg = fuzz.FuzzConfig(seed=3, max_accepted_pixels=FUZZ_MAX_ACCEPTED_PIXELS)
    first = [fuzz.make_case(seeds, cfg, i) for i in range(60)]
    again = [fuzz.make_case(seeds, cfg, i) for i in reversed(range(60))][::-1]
    assert [(c.kind, c.desc, c.data) for c in first] == [(c.kind, c.desc, c.data) for c in again]
    other = [fuzz.make_case(seeds, fuzz.FuzzConfig(seed=4), i).data for i in range(60)]
    assert other != [c.data for c in first]
    assert len({c.kind for c in first}) >= 8


def test_fuzz_cases_have_no_unexpected_outcome(seeds):
    report = fuzz.run_fuzz(FUZZ_CASES, seed=0, workers=1, max_accepted_pixels=FUZZ_MAX_ACCEPTED_PIXELS)
    kinds = collections.Counter(o["kind"] for o in report.outcomes)
    assert len(report.outcomes) == FUZZ_CASES
    assert kinds["refused"] > FUZZ_CASES // 3 and kinds["decoded"] > FUZZ_CASES // 10, kinds
    assert not report.unexpected, fuzz.format_summary(report)


def test_zero_latent_bomb_is_refused_at_once(seeds):
    """A 8192x8192 file of zero latents, written by encode_file (45 bytes), above the default
    40-megapixel limit: refused from its header, before anything is decoded. (4096x4096, 16.8
    megapixels, is within the limit: it decodes, in about 20 s on one core.)"""
    data = fuzz.zero_latent_bomb(8192, 8192)
    assert data == fuzz.with_size(seeds[0].data, 8192, 8192)  # the header rewrite the fuzzer uses is the writer's
    assert len(data) < 300
    header = read_header(data)
    assert (header.height, header.width) == (8192, 8192)
    start = time.perf_counter()
    message = _refusal(data)
    assert time.perf_counter() - start < 0.25
    assert "--max-pixels" in message and "8192x8192" in message


def test_every_other_version_byte_is_refused(seeds):
    data = seeds[0].data
    assert data[4] == FORMAT_VERSION == 5
    for version in range(256):
        body = data[:4] + bytes([version]) + data[5:-4]
        for candidate in (body + data[-4:], body + zlib.crc32(body).to_bytes(4, "little")):
            if version == FORMAT_VERSION:
                assert api.decompress(candidate).shape == (3, 16, 16)
            else:
                assert _refusal(candidate) == (f"unsupported .lottery format version {version} "
                                               f"(this lottery reads version {FORMAT_VERSION})")


def test_architecture_at_every_limit_decodes_quickly():
    data = fuzz.max_architecture_file(48, 40)
    header = read_header(data)
    assert header.architecture == fuzz.max_architecture()  # every field at its MAX_* (band rows included)
    assert header.seed == (1 << 64) - 1
    start = time.perf_counter()
    pixels = api.decompress(data)
    assert time.perf_counter() - start < 5.0
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 48, 40)


def test_predicted_kernel_beyond_int64_is_refused(seeds):
    """The header allows shifts up to 64; at 64 the predicted upsampling kernel is beyond int64."""
    info = fuzz.SeedInfo.of(seeds[0])
    header = read_header(seeds[0].data)
    section = decode_section(info.sections[0], header.architecture, header.mask_ratio_units)
    assert section.modules["upsampling"].predicted  # the kernel is coded as its difference from the prediction
    fields = copy.deepcopy(info.fields)
    fields.shifts[6] = 64  # the upsampling kernel's shift (after the ARM's 6)
    fields.values["layout"] &= ~0x04  # shifts written as bytes
    data = fuzz.with_crc(fields.pack()[0] + b"".join(info.sections))
    assert read_header(data).shifts["upsampling"] == {"kernel": 64}
    _refusal(data)


def test_small_file_claiming_a_large_size_is_refused_within_memory(seeds):
    """A file with coded latents (660 bytes) whose header claims 6324x6324 (within the default limit)
    cannot hold that many latents: it must be refused, in an address space of 2 GiB."""
    data = fuzz.with_size(seeds[1].data, 6324, 6324)
    outcome = fuzz.decode_isolated(data, "fit-24x40-bands8 claiming 6324x6324", memory_limit_mb=2048)
    assert outcome["kind"] == "refused", (outcome["what"], outcome["message"])
