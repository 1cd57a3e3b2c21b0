#!/usr/bin/env python
"""Deterministic fuzzing of the .lottery decoder (`lotterycli.api.decompress`).

    python tests/fuzz_lottery.py --cases 10000 [--seed 0] [--workers 2] [--time-limit 10]
                                 [--memory-limit-mb 3072] [--replay INDEX [--dump FILE]]

Seed files are written by the project's own encoder (`compression.encoder.compress_image` on tiny
synthetic images, `LotteryModel(...).to_payload` + `bitstream.container.encode_file` for other
architectures, header rewrites of zero-latent files for decompression bombs), then mutated. Case i
is a pure function of (seed, i) and the options (its generator is `random.Random("...:seed:i")`),
so a failure is replayed with `--replay i` (same --seed and --max-accepted-pixels).

Every case runs in a worker process (multiprocessing, "spawn" by default) that limits its own
address space (RLIMIT_AS) and arms a wall-clock timer (setitimer) around the decode; the parent
kills a worker that does not answer in time and restarts it. Expected outcomes: a `LotteryError`
with a one-line message, or a uint8 (3, H, W) tensor of the size the header says. Anything else is
unexpected: another exception type, a timeout, MemoryError (or the process dying), a message with a
newline, a LotteryError that hides an allocation failure, a file above `max_pixels` that is not
refused by that limit within a second.

The time limit of a case is `--time-limit` plus `--seconds-per-megapixel` for each megapixel its
header claims (when the header parses and is within `max_pixels`): the decoder's work grows
linearly with the picture (1.3 s per megapixel on one idle core, ~3 s with two workers on two
shared cores), so a legitimate 40-megapixel file takes a minute or more, and the limit catches work
out of proportion with the claimed size instead.
`--max-accepted-pixels` caps the pixel count of the cases that would be accepted by size (a size
edit above it and within `max_pixels` is scaled down), to keep short runs short.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import math
import os
import random
import re
import signal
import struct
import sys
import time
import traceback
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:  # run from a checkout without an installed package
    sys.path.insert(0, str(_SRC))

DEFAULT_TIME_LIMIT = 10.0
DEFAULT_SECONDS_PER_MEGAPIXEL = 5.0
DEFAULT_MEMORY_LIMIT_MB = 3072
DEFAULT_MAX_PIXELS = 40_000_000  # lotterycli.images.DEFAULT_MAX_PIXELS (checked by the tests)
QUICK_REFUSAL_S = 1.0  # a file above max_pixels must be refused this fast
UINT64_MAX = (1 << 64) - 1


# Options ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FuzzConfig:
    seed: int = 0
    time_limit: float = DEFAULT_TIME_LIMIT  # seconds per case, plus the per-megapixel allowance
    seconds_per_megapixel: float = DEFAULT_SECONDS_PER_MEGAPIXEL
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB  # RLIMIT_AS of each worker (0: none)
    max_accepted_pixels: int = DEFAULT_MAX_PIXELS  # cap on the size of cases that pass the size limit
    max_pixels: int = DEFAULT_MAX_PIXELS  # what decompress is called with (its default)

    def case_limit(self, pixels: int | None) -> float:
        """Wall-clock seconds a case gets: the base limit, plus an allowance for the pixels its
        header claims when the decoder would accept that size."""
        extra = 0.0
        if pixels is not None and pixels <= self.max_pixels:
            extra = self.seconds_per_megapixel * pixels / 1e6
        return self.time_limit + extra


# Seeds -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    note: str = ""


def _image(height: int, width: int, k: int):
    """A small synthetic (3, H, W) float image in [0, 1]: gradients, a rectangle, a diagonal edge."""
    import numpy as np
    import torch

    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.5 + 0.3 * (xx - yy)], 0)
    img[:, height // 4 : height // 2 + 2, width // 3 : 2 * width // 3 + 2] = np.array([0.85, 0.25, 0.15])[:, None, None]
    img[1] = np.where(xx + yy * (1 + k) > 1.1, 0.9 - 0.3 * img[1], img[1])
    return torch.tensor(img, dtype=torch.float32).clamp(0, 1)


def _random_latents(shapes, gen, *, density: float = 0.5, spread: int = 3, escapes: int = 2,
                    zero_levels: tuple[int, ...] = ()):
    """Integer grids with mostly small values, a few escaped ones (|v| far beyond 63), some grids zero."""
    import torch

    out = []
    for level, (h, w) in enumerate(shapes):
        g = torch.randint(-spread, spread + 1, (h, w), generator=gen, dtype=torch.int64)
        g = g * (torch.rand((h, w), generator=gen) < density)
        if level in zero_levels:
            g.zero_()
        elif escapes and h * w > 4:
            for e in range(escapes):
                y = int(torch.randint(0, h, (1,), generator=gen))
                x = int(torch.randint(0, w, (1,), generator=gen))
                g[y, x] = (-1) ** e * (100 + 997 * (e + 1) * (level + 1))
        out.append(g)
    return out


def _model_payload(height: int, width: int, arch, seed: int, ratio: float, shifts=(8, 8, 8)):
    """A payload of the project's own model (random initial networks), quantized at fixed steps."""
    from lotterycli.model.lottery_model import LotteryModel

    model = LotteryModel(height, width, arch, seed % (1 << 63), ratio)
    modules = {
        "arm": model.quantize_module("arm", shifts[0], {"fc3.bias": min(16, shifts[0] + 2)}),
        "upsampling": model.quantize_module("upsampling", shifts[1]),
        "modnet": model.quantize_module("modnet", shifts[2], {"u2.weight": shifts[2] + 3}),
    }
    # A fitted ARM predicts from its contexts; the initial one has a zero output layer. Give it
    # random weights (well inside the decoder's range) so that the contexts matter.
    import torch

    gen = torch.Generator().manual_seed(seed % (1 << 62) + 1)
    arm = modules["arm"]
    for name, t in arm.tensors.items():
        bound = max(1, (1 << arm.shift_of(name)) // (2 if "weight" in name else 8))
        arm.tensors[name] = torch.randint(-bound, bound + 1, tuple(t.shape), generator=gen, dtype=torch.int64)
    payload = model.to_payload(modules)
    payload.seed = seed
    return payload


def max_architecture():
    """Every architecture field at its limit (model.architecture MAX_*)."""
    from lotterycli.model import architecture as A

    return A.Architecture(n_levels=A.MAX_LEVELS, latent_gain=A.MAX_LATENT_GAIN, upsample_kernel=A.MAX_KERNEL,
                          modnet_hidden=A.MAX_MODNET_HIDDEN, modnet_out=A.MAX_MODNET_OUT,
                          synth_hidden=(A.MAX_SYNTH_WIDTH,) * 3, arm_hidden=A.MAX_ARM_HIDDEN,
                          arm_band_rows=A.MAX_BAND_ROWS)


def max_architecture_file(height: int = 16, width: int = 16) -> bytes:
    """A valid file whose header claims every architecture field at its limit, seed 2**64 - 1."""
    from dataclasses import replace

    import torch

    from lotterycli.bitstream.container import encode_file

    arch = max_architecture()
    payload = _model_payload(height, width, arch, UINT64_MAX, 0.3, shifts=(10, 8, 8))
    payload.architecture = arch  # LotteryModel writes a band taller than the image as 0; keep the limit
    gen = torch.Generator().manual_seed(4)
    payload = replace(payload, latents=_random_latents(payload.latent_shapes(), gen, escapes=1))
    return encode_file(payload)


def with_size(data: bytes, height: int, width: int) -> bytes:
    """`data` with the header's render size replaced (CRC recomputed). For a file whose latents are
    all zero this is exactly what `encode_file` writes for zero latents of the new shapes (the latent
    section of all-zero grids does not depend on their shapes)."""
    from dataclasses import replace

    from lotterycli.bitstream.header import CRC, pack_header, read_header

    h = read_header(data)
    body = pack_header(replace(h, height=height, width=width)) + bytes(data[h.header_size : -CRC.size])
    return body + CRC.pack(zlib.crc32(body))


def zero_latent_bomb(height: int, width: int) -> bytes:
    """A decompression bomb written by the project's writer: a tiny fitted file's payload with the
    size set to height x width and zero latents of the new shapes, through `encode_file` (the grids
    are zero-stride views, so this costs no memory of the new size)."""
    from dataclasses import replace

    import torch

    from lotterycli.bitstream.container import decode_file, encode_file
    from lotterycli.model.architecture import latent_shapes

    payload = decode_file(build_seeds()[0].data)
    zero = torch.zeros((), dtype=torch.int64)
    shapes = latent_shapes(height, width, payload.architecture.n_levels)
    return encode_file(replace(payload, height=height, width=width, latents=[zero.expand(s) for s in shapes]))


_SEEDS: list[Seed] | None = None


def build_seeds() -> list[Seed]:
    """The seed files (built once per process; ~6 s on one core, mostly two short fits)."""
    global _SEEDS
    if _SEEDS is not None:
        return _SEEDS
    from dataclasses import replace

    import torch

    torch.set_num_threads(1)
    from lotterycli.bitstream.container import decode_file, encode_file
    from lotterycli.bitstream.header import ARCH_PRESETS
    from lotterycli.compression.encoder import compress_image
    from lotterycli.config import load_task_config
    from lotterycli.model.architecture import Architecture

    seeds: list[Seed] = []
    cfg = load_task_config("compress", overrides={"steps": 3})
    # 0: a real compressed file (shipped preset, fitted 3 steps: its latents are all zero)
    fitted = compress_image(_image(16, 16, 0), cfg, device="cpu").data
    seeds.append(Seed("fit-16x16", fitted, "compress_image, shipped architecture"))
    # 1: fitted with 8-row ARM bands, then random latents (so the bands code something)
    cfg_b = replace(cfg, architecture=replace(cfg.architecture, arm_band_rows=8),
                    schedule=replace(cfg.schedule, steps=2))
    p = decode_file(compress_image(_image(24, 40, 1), cfg_b, device="cpu").data)
    gen = torch.Generator().manual_seed(1)
    p = replace(p, latents=_random_latents(p.latent_shapes(), gen, zero_levels=(5,)))
    seeds.append(Seed("fit-24x40-bands8", encode_file(p), "compress_image with arm_band_rows 8, random latents"))
    # 2: preset 2 (24-wide ARM: fc1 has the identity residual)
    p = _model_payload(24, 24, replace(ARCH_PRESETS[2], arm_band_rows=0), 12345, 0.25)
    gen = torch.Generator().manual_seed(2)
    p = replace(p, latents=_random_latents(p.latent_shapes(), gen, density=0.8, spread=6, escapes=3))
    seeds.append(Seed("preset2-24x24", encode_file(p), "architecture preset 2"))
    # 3: no preset (architecture fields in the header), bands of 3 rows, frame 6, restoration member
    arch = Architecture(n_levels=4, latent_gain=8.0, upsample_kernel=4, modnet_hidden=6, modnet_out=2,
                        synth_hidden=(8, 12, 6), arm_hidden=5, arm_band_rows=3)
    p = _model_payload(20, 28, arch, 987654321987654321, 0.5, shifts=(6, 9, 7))
    gen = torch.Generator().manual_seed(3)
    p = replace(p, latents=_random_latents(p.latent_shapes(), gen, density=0.3), frame=6, restoration=True)
    seeds.append(Seed("custom-20x28", encode_file(p), "explicit architecture, bands 3, frame 6, restoration"))
    # 4: every architecture field at its limit
    seeds.append(Seed("max-arch-16x16", max_architecture_file(), "architecture at every MAX_*, seed 2**64-1"))
    # 5, 6: decompression bombs from the zero-latent file: above max_pixels, and an accepted one
    seeds.append(Seed("bomb-8192x8192", with_size(fitted, 8192, 8192), "zero latents, 67 Mpx: above max_pixels"))
    seeds.append(Seed("bomb-1024x768", with_size(fitted, 768, 1024), "zero latents, 0.8 Mpx: accepted"))
    _SEEDS = seeds
    return seeds


def seeds_digest(seeds: list[Seed]) -> str:
    h = hashlib.sha256()
    for s in seeds:
        h.update(s.name.encode() + b"\0" + s.data)
    return h.hexdigest()[:16]


# Header as fields (to edit any field, in or out of its limits) ----------------------------------
_ARCH_KEYS = ("n_levels", "latent_gain", "upsample_kernel", "modnet_hidden", "modnet_out", "synth0", "synth1",
              "synth2", "arm_hidden")
_SECTIONS = ("network", "latents")  # header.SECTION_NAMES: the header stores the network's length only
_MIN_LATENTS = 3  # header.MIN_LATENT_SECTION: the latents' implied length below this is truncation


def _varint(n: int) -> bytes:
    if n < 0:  # a varint is unsigned: an edit must never ask for a negative one (it would never end)
        raise ValueError(f"varint of a negative value {n}")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _as_int(v) -> int:
    """A field's value: an int, or the value of a raw (possibly not shortest) varint."""
    if isinstance(v, int):
        return v
    return sum((b & 0x7F) << (7 * i) for i, b in enumerate(v))


@dataclass
class HeaderFields:
    """Every header field of a file, editable; `pack` writes them back whatever their values.

    Integers go out as varints (any size) or bytes (& 0xFF); a `bytes` value is written as is (e.g. a
    varint not in its shortest form). `gain` is the raw 4 bytes of the f32. The header's last field
    is the network section's length; the latent section's is not stored (what the file leaves
    between the network section and the 4-byte CRC)."""

    magic: bytes
    version: int
    values: dict  # height, width, seed, ratio, layout, band_rows, n_levels, ..., arm_hidden
    gain: bytes
    shifts: list[int]
    network_length: int | bytes

    @classmethod
    def parse(cls, data: bytes) -> HeaderFields:
        from lotterycli.bitstream.header import GAIN, read_header

        h = read_header(data)
        a = h.architecture
        layout = data[_layout_offset(data)]
        v = dict(height=h.height, width=h.width, seed=h.seed, ratio=h.mask_ratio_units, layout=layout,
                 band_rows=a.arm_band_rows, n_levels=a.n_levels, upsample_kernel=a.upsample_kernel,
                 modnet_hidden=a.modnet_hidden, modnet_out=a.modnet_out, synth0=a.synth_hidden[0],
                 synth1=a.synth_hidden[1], synth2=a.synth_hidden[2], arm_hidden=a.arm_hidden)
        shifts = [s for name in ("arm", "upsampling", "modnet") for s in h.shifts[name].values()]
        f = cls(bytes(data[:4]), data[4], v, GAIN.pack(a.latent_gain), shifts, h.section_sizes["network"])
        assert f.pack()[0] == bytes(data[: h.header_size]), "HeaderFields must reproduce the writer's header"
        return f

    def pack(self) -> tuple[bytes, list[tuple[str, int, int]]]:
        """(header bytes, [(field, start, end)])."""
        out = bytearray()
        spans = []

        def put(name: str, b: bytes) -> None:
            spans.append((name, len(out), len(out) + len(b)))
            out.extend(b)

        def var(name: str, value) -> None:
            put(name, value if isinstance(value, bytes) else _varint(int(value)))

        v = self.values
        put("magic", self.magic)
        put("version", bytes([self.version & 0xFF]))
        var("height", v["height"])
        var("width", v["width"])
        var("seed", v["seed"])
        var("ratio", v["ratio"])
        layout = v["layout"] if isinstance(v["layout"], int) else v["layout"][0]
        put("layout", bytes([layout & 0xFF]))
        if not layout & 0x03:
            put("n_levels", bytes([v["n_levels"] & 0xFF]))
            put("latent_gain", self.gain)
            put("upsample_kernel", bytes([v["upsample_kernel"] & 0xFF]))
            for k in ("modnet_hidden", "modnet_out", "synth0", "synth1", "synth2", "arm_hidden"):
                var(k, v[k])
        var("band_rows", v["band_rows"])
        if layout & 0x04:
            s = [x & 0x0F for x in self.shifts] + [0] * (len(self.shifts) % 2)
            put("shifts", bytes(s[i] | s[i + 1] << 4 for i in range(0, len(s), 2)))
        else:
            put("shifts", bytes(x & 0xFF for x in self.shifts))
        var("len_network", self.network_length)
        return bytes(out), spans


def _layout_offset(data: bytes) -> int:
    from lotterycli.bitstream.varint import decode_varint

    pos = 5
    for limit in (1 << 20, 1 << 20, UINT64_MAX, 1 << 20):
        _, pos = decode_varint(data, pos, "field", limit)
    return pos


def crc_tail(body: bytes) -> bytes:
    return struct.pack("<I", zlib.crc32(body))


def with_crc(body: bytes) -> bytes:
    return bytes(body) + crc_tail(body)


@dataclass
class SeedInfo:
    """A seed file taken apart: header fields, sections (network, latents), field and section byte
    ranges."""

    seed: Seed
    fields: HeaderFields
    header: bytes
    spans: list[tuple[str, int, int]]
    sections: list[bytes]

    @classmethod
    def of(cls, seed: Seed) -> SeedInfo:
        f = HeaderFields.parse(seed.data)
        header, spans = f.pack()
        start = len(header)
        end = start + _as_int(f.network_length)
        secs = [seed.data[start:end], seed.data[end:-4]]
        assert len(secs[1]) >= _MIN_LATENTS
        return cls(seed, f, header, spans, secs)

    def section_spans(self) -> list[tuple[str, int, int]]:
        out, off = [], len(self.header)
        for name, s in zip(_SECTIONS, self.sections):
            out.append((name, off, off + len(s)))
            off += len(s)
        out.append(("crc", off, off + 4))
        return out


# Cases -----------------------------------------------------------------------------------------
@dataclass
class Case:
    index: int
    kind: str
    desc: str
    data: bytes
    skipped: str = ""  # the project's writer refused the mutated payload (not a decoder outcome)


_INFO_CACHE: dict[int, list[SeedInfo]] = {}
_PAYLOAD_CACHE: dict[int, object] = {}

# (kind, weight): how often each mutation is drawn
MUTATIONS = (
    ("valid", 3), ("byte_flip", 8), ("bit_flip", 8), ("insert", 5), ("delete", 5), ("truncate", 7),
    ("header_field", 19), ("section_lengths", 7), ("section_edit", 10), ("payload", 7), ("module_values", 7),
    ("after_magic", 4), ("version", 3), ("splice", 4), ("size_bomb", 3),
)

_SIZE_VALUES = (0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257,
                511, 513, 1000, 1023, 1025, 2049, 4096, 6324, 6325, 8192, 16383, 16384, 16385, 1 << 20, 1 << 32)
_INTERESTING = (0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 63, 64, 65, 127, 128, 255, 256,
                10000, 10001, 16383, 16384, 16385, 65535, 65536, 65537, 1 << 31, (1 << 32) - 1, 1 << 32,
                UINT64_MAX, 1 << 64)


def _infos(seeds: list[Seed]) -> list[SeedInfo]:
    key = id(seeds)
    if key not in _INFO_CACHE:
        _INFO_CACHE.clear()
        _INFO_CACHE[key] = [SeedInfo.of(s) for s in seeds]
    return _INFO_CACHE[key]


def _payload(seeds: list[Seed], k: int):
    import copy

    from lotterycli.bitstream.container import decode_file

    key = (id(seeds), k)
    if key not in _PAYLOAD_CACHE:
        _PAYLOAD_CACHE[key] = decode_file(seeds[k].data)
    return copy.deepcopy(_PAYLOAD_CACHE[key])


def _small_seeds(infos: list[SeedInfo]) -> list[int]:
    return [i for i, s in enumerate(infos) if not s.seed.name.startswith("bomb-")]


def _pick(rng: random.Random, values):
    return values[rng.randrange(len(values))]


def _cap_size(cfg: FuzzConfig, h: int, w: int, which: str) -> tuple[int, int]:
    """Scale the edited side down when the size would be accepted but exceeds max_accepted_pixels."""
    if 1 <= h <= 16384 and 1 <= w <= 16384 and cfg.max_accepted_pixels < h * w <= cfg.max_pixels:
        if which == "height":
            h = max(1, cfg.max_accepted_pixels // w)
        else:
            w = max(1, cfg.max_accepted_pixels // h)
    return h, w


def make_case(seeds: list[Seed], cfg: FuzzConfig, index: int) -> Case:
    """Case `index`: a pure function of the seeds, cfg.seed, cfg.max_accepted_pixels and `index`."""
    rng = random.Random(f"lottery-fuzz:{cfg.seed}:{index}")
    kinds, weights = zip(*MUTATIONS)
    kind = rng.choices(kinds, weights)[0]
    infos = _infos(seeds)
    k = _pick(rng, _small_seeds(infos)) if kind not in ("valid", "byte_flip", "truncate") else rng.randrange(len(infos))
    info = infos[k]
    data = info.seed.data
    fn = globals()[f"_mut_{kind}"]
    out = fn(rng, info, infos, cfg, seeds, k)
    desc, new = out[0], out[1]
    skipped = out[2] if len(out) > 2 else ""
    return Case(index, kind, f"seed {k} ({info.seed.name}, {len(data)} B): {desc}", bytes(new), skipped)


def _crc_choice(rng: random.Random, body: bytes) -> tuple[bytes, str]:
    """Recompute the CRC over the mutated bytes (70 %) or leave the old trailer."""
    if rng.random() < 0.7 and len(body) >= 4:
        return with_crc(body[:-4]), "CRC recomputed"
    return body, "CRC kept"


def _mut_valid(rng, info, infos, cfg, seeds, k):
    return "unmodified", info.seed.data


def _mut_byte_flip(rng, info, infos, cfg, seeds, k):
    b = bytearray(info.seed.data)
    n = _pick(rng, (1, 1, 1, 2, 3, 5, 16))
    where = []
    for _ in range(n):
        i = rng.randrange(len(b) - 4) if rng.random() < 0.9 else rng.randrange(len(b))
        x = rng.randrange(1, 256)
        b[i] ^= x
        where.append(f"{i}^{x:#04x}")
    out, how = _crc_choice(rng, bytes(b))
    return f"byte flips {','.join(where)}, {how}", out


def _mut_bit_flip(rng, info, infos, cfg, seeds, k):
    b = bytearray(info.seed.data)
    n = _pick(rng, (1, 1, 1, 2, 4))
    where = []
    for _ in range(n):
        i = rng.randrange(len(b) - 4)
        bit = rng.randrange(8)
        b[i] ^= 1 << bit
        where.append(f"{i}.{bit}")
    out, how = _crc_choice(rng, bytes(b))
    return f"bit flips {','.join(where)}, {how}", out


def _mut_insert(rng, info, infos, cfg, seeds, k):
    b = bytearray(info.seed.data[:-4])
    n = _pick(rng, (1, 1, 2, 4, 9, 64))
    i = rng.randrange(len(b) + 1)
    fill = _pick(rng, ("random", "zero", "ff"))
    ins = bytes(rng.randrange(256) for _ in range(n)) if fill == "random" else (b"\0" if fill == "zero" else b"\xff") * n
    b[i:i] = ins
    out, how = _crc_choice(rng, bytes(b) + info.seed.data[-4:])
    return f"insert {n} {fill} bytes at {i}, {how}", out


def _mut_delete(rng, info, infos, cfg, seeds, k):
    b = bytearray(info.seed.data[:-4])
    n = _pick(rng, (1, 1, 2, 4, 9, 33))
    i = rng.randrange(len(b))
    del b[i : i + n]
    out, how = _crc_choice(rng, bytes(b) + info.seed.data[-4:])
    return f"delete {n} bytes at {i}, {how}", out


def _mut_truncate(rng, info, infos, cfg, seeds, k):
    data = info.seed.data
    cuts = {0, 1, 3, 4, 5, len(data) - 1, len(data) - 2, len(data) - 4, len(data) - 5}
    for _, s, e in info.spans + info.section_spans():
        cuts.update((s, s + 1, (s + e) // 2, e - 1, e))
    cuts = sorted(c for c in cuts if 0 <= c < len(data))
    cut = _pick(rng, cuts) if rng.random() < 0.8 else rng.randrange(len(data))
    body = data[:cut]
    if rng.random() < 0.3 and cut >= 5:
        return f"truncated to {cut} bytes, CRC of the rest appended", with_crc(body)
    return f"truncated to {cut} bytes", body


def _field_value(rng: random.Random, name: str, current: int):
    """An edited value for header field `name`: near the current one, at a limit, or anywhere."""
    r = rng.random()
    if name in ("height", "width"):
        return _pick(rng, _SIZE_VALUES) if r < 0.6 else max(0, current + rng.randint(-8, 8))
    if name == "seed":
        return _pick(rng, (0, 1, UINT64_MAX, 1 << 64, 1 << 63, rng.getrandbits(64), current ^ 1, current + 1))
    if name == "ratio":
        return _pick(rng, (0, 1, 5000, 9999, 10000, 10001, 65535, rng.randrange(10001), current + 1, max(0, current - 1)))
    if name in ("n_levels", "upsample_kernel"):
        return rng.randrange(256) if r < 0.3 else _pick(rng, (0, 1, 2, 3, 4, 6, 7, 8, 9, 15, 16, 17, 18, 255))
    if r < 0.4:
        return max(0, current + rng.randint(-3, 3))
    return _pick(rng, _INTERESTING)


def _gain_bytes(rng: random.Random) -> tuple[bytes, str]:
    choices = [0.0, -0.0, -1.0, 1.0, 16.0, 255.99998474121094, 256.0, 256.00003, 257.0, 1e-45, 1.17549435e-38,
               3.4e38, float("inf"), float("-inf"), float("nan")]
    if rng.random() < 0.2:
        raw = bytes(rng.randrange(256) for _ in range(4))
        return raw, f"raw {raw.hex()}"
    g = _pick(rng, choices)
    return struct.pack("<f", g), repr(g)


def _mut_header_field(rng, info, infos, cfg, seeds, k):
    """Edit one to three header fields (any value, limits included), CRC recomputed."""
    import copy

    f = copy.deepcopy(info.fields)
    names = ["height", "width", "seed", "ratio", "layout", "band_rows", "shifts", "shifts", "lengths", "arch",
             "nonshortest"]
    edits = []
    for _ in range(_pick(rng, (1, 1, 1, 2, 3))):
        name = _pick(rng, names)
        if name in ("height", "width"):
            f.values[name] = _field_value(rng, name, _as_int(f.values[name]))
            if isinstance(f.values["height"], int) and isinstance(f.values["width"], int):
                f.values["height"], f.values["width"] = _cap_size(cfg, f.values["height"], f.values["width"], name)
            edits.append(f"{name}={f.values[name]}")
        elif name in ("seed", "ratio", "band_rows"):
            f.values[name] = _field_value(rng, name, _as_int(f.values[name]))
            edits.append(f"{name}={f.values[name]}")
        elif name == "layout":
            how = _pick(rng, ("random", "bit", "preset", "frame", "nibbles"))
            lay = f.values["layout"]
            if how == "random":
                lay = rng.randrange(256)
            elif how == "bit":
                lay ^= 1 << rng.randrange(8)
            elif how == "preset":
                lay = (lay & ~0x03) | rng.randrange(4)
            elif how == "frame":
                lay = (lay & ~0x38) | rng.randrange(8) << 3
            else:
                lay ^= 0x04
            f.values["layout"] = lay
            edits.append(f"layout({how})={lay:#04x}")
        elif name == "shifts":
            i = rng.randrange(len(f.shifts))
            f.shifts[i] = _pick(rng, (-128, -65, -64, -63, -1, 0, 15, 16, 17, 62, 63, 64, 64, 65, 127,
                                      rng.randint(-128, 127)))
            edits.append(f"shift[{i}]={f.shifts[i]}")
            if rng.random() < 0.5:
                f.values["layout"] &= ~0x04  # written as bytes (a nibble cannot hold it)
        elif name == "lengths":  # the network's (the latents' is what is left: it moves the other way)
            n = _as_int(f.network_length)
            room = n + len(info.sections[1]) - _MIN_LATENTS  # the largest length that leaves the latents room
            f.network_length = _pick(rng, (0, 1, n + 1, max(0, n - 1), room, room + 1, 1 << 32,
                                           (1 << 32) - 1, 1 << 35))
            edits.append(f"len_network={f.network_length}")
        elif name == "arch":
            f.values["layout"] &= ~0x03  # the architecture fields are written out
            key = _pick(rng, _ARCH_KEYS)
            if key == "latent_gain":
                f.gain, what = _gain_bytes(rng)
                edits.append(f"preset 0, latent_gain={what}")
            else:
                f.values[key] = _field_value(rng, key, _as_int(f.values[key]))
                edits.append(f"preset 0, {key}={f.values[key]}")
        else:  # a varint not in its shortest form
            key = _pick(rng, ("height", "width", "seed", "ratio", "band_rows", "lengths"))
            if key == "lengths":
                raw = _varint(_as_int(f.network_length))
                f.network_length = raw[:-1] + bytes([raw[-1] | 0x80, 0])
                edits.append("len_network not shortest")
            elif isinstance(f.values[key], int):
                raw = _varint(f.values[key])
                f.values[key] = raw[:-1] + bytes([raw[-1] | 0x80]) + b"\0" * rng.randint(1, 3)
                edits.append(f"{key} not shortest")
    header, _ = f.pack()
    return "header " + ", ".join(edits) + ", CRC recomputed", with_crc(header + b"".join(info.sections))


def _mut_section_lengths(rng, info, infos, cfg, seeds, k):
    """Move the boundary between the network and latent sections (the header's network length
    changes, the file does not), or resize one section and make the file fit it (bytes added or
    removed; the network's length rewritten, the latents' implied), CRC recomputed."""
    import copy

    f = copy.deepcopy(info.fields)
    secs = list(info.sections)
    how = _pick(rng, ("move", "move", "fit"))
    if how == "move":
        d = _pick(rng, (1, 2, 3, 4, 5, 8, rng.randrange(1, 64)))
        if rng.random() < 0.5:  # the network takes the latents' first bytes (down to none left)
            d = min(d, len(secs[1]))
            frm, to = "latents", "network"
        else:  # the network's last bytes count as the latents' (down to an empty network section)
            d = -min(d, len(secs[0]))
            frm, to = "network", "latents"
        f.network_length = len(secs[0]) + d
        header, _ = f.pack()
        return f"{abs(d)} bytes moved from section {frm} to {to}", with_crc(header + b"".join(secs))
    i = rng.randrange(len(_SECTIONS))
    d = _pick(rng, (-4, -3, -2, -1, 1, 2, 3, 4, 7, 100))
    if d < 0:
        secs[i] = secs[i][: max(0, len(secs[i]) + d)]
    else:
        secs[i] = secs[i] + bytes(rng.randrange(256) if rng.random() < 0.5 else 0 for _ in range(d))
    f.network_length = len(secs[0])
    header, _ = f.pack()
    fitted = "length fitted" if i == 0 else "the rest of the file"
    return f"section {_SECTIONS[i]} resized by {d} ({fitted})", with_crc(header + b"".join(secs))


def _mut_section_edit(rng, info, infos, cfg, seeds, k):
    """Corrupt the network or the latent section's content with the network's length kept
    consistent and the CRC recomputed."""
    import copy

    f = copy.deepcopy(info.fields)
    secs = list(info.sections)
    i = rng.randrange(len(_SECTIONS))
    s = bytearray(secs[i])
    how = _pick(rng, ("flip", "flip", "zero", "ff", "random", "first_byte", "last_bytes", "swap_other_seed")
                + (("empty_streams",) if _SECTIONS[i] == "latents" else ("zero_tail",)))
    if how == "flip" and s:
        for _ in range(_pick(rng, (1, 1, 2, 3))):
            j = rng.randrange(len(s))
            s[j] ^= rng.randrange(1, 256)
    elif how == "zero":
        s = bytearray(len(s))
    elif how == "ff":
        s = bytearray(b"\xff" * len(s))
    elif how == "random":
        s = bytearray(rng.randrange(256) for _ in range(len(s)))
    elif how == "first_byte" and s:
        s[0] = _pick(rng, (0, 1, 7, 12, 13, 0x7F, 0x80, 0x81, 0x8C, 0xFF, rng.randrange(256)))
    elif how == "last_bytes" and s:
        for j in range(max(0, len(s) - rng.randint(1, 4)), len(s)):
            s[j] = rng.randrange(256)
    elif how == "swap_other_seed":
        other = _pick(rng, infos)
        s = bytearray(other.sections[i])
    elif how == "empty_streams":
        # flags kept, escape streams and main stream emptied (no check of the values: the streams
        # must run out at the first symbol a coded grid needs)
        s = bytearray(s[:1] + b"\0\0")
    elif how == "zero_tail":
        # zero bytes appended: the range decoder reads zeros past the end anyway, so the content
        # decodes the same, but the encoder trims them (not canonical)
        s += b"\0" * rng.randint(1, 5)
    secs[i] = bytes(s)
    f.network_length = len(secs[0])
    header, _ = f.pack()
    return f"section {_SECTIONS[i]}: {how}", with_crc(header + b"".join(secs))


def _mut_payload(rng, info, infos, cfg, seeds, k):
    """Change the payload and write it with the project's writer (`encode_file`): a valid file."""
    from dataclasses import replace

    import torch

    from lotterycli.bitstream.container import encode_file
    from lotterycli.errors import LotteryError

    p = _payload(seeds, k)
    gen = torch.Generator().manual_seed(rng.getrandbits(62))
    how = _pick(rng, ("seed", "ratio", "mask", "frame", "restoration", "bands", "latents", "latents", "size"))
    arch = p.architecture
    if how == "seed":
        p.seed = _pick(rng, (0, 1, UINT64_MAX, rng.getrandbits(64)))
        what = f"seed={p.seed}"
    elif how == "ratio":
        p.mask_ratio = rng.randrange(10001) / 10000
        what = f"mask_ratio={p.mask_ratio}"
    elif how == "mask":
        m = p.mask.clone()
        mode = _pick(rng, ("flip", "ones", "zeros"))
        if mode == "flip":
            idx = torch.randint(0, m.numel(), (rng.randint(1, 40),), generator=gen)
            m[idx] = ~m[idx]
        else:
            m[:] = mode == "ones"
        p.mask = m
        what = f"mask {mode} ({int(m.sum())} of {m.numel()} kept)"
    elif how == "frame":
        p.frame = rng.randrange(8)
        what = f"frame={p.frame}"
    elif how == "restoration":
        p.restoration = not p.restoration
        what = f"restoration={p.restoration}"
    elif how == "bands":
        b = _pick(rng, (0, 1, 2, 3, 4, 5, 8, p.height - 1, p.height, p.height + 1, 16384))
        p.architecture = arch = replace(arch, arm_band_rows=max(0, b))
        what = f"arm_band_rows={arch.arm_band_rows}"
    elif how == "latents":
        mode = _pick(rng, ("zero", "small", "dense", "extreme", "constant", "one_level"))
        shapes = p.latent_shapes()
        if mode == "zero":
            lat = [torch.zeros(s, dtype=torch.int64) for s in shapes]
        elif mode == "small":
            lat = _random_latents(shapes, gen, density=0.3, spread=2, escapes=0)
        elif mode == "dense":
            lat = _random_latents(shapes, gen, density=1.0, spread=60, escapes=4)
        elif mode == "extreme":  # the latent limit, +-2**20, alternating
            lim = 1 << 20
            lat = [(torch.randint(0, 2, s, generator=gen) * 2 - 1) * lim for s in shapes]
        elif mode == "constant":
            c = _pick(rng, (-1000, -64, -63, 63, 64, 255, 256, 257, 70000))
            lat = [torch.full(s, c, dtype=torch.int64) for s in shapes]
        else:
            lat = [torch.zeros(s, dtype=torch.int64) for s in shapes]
            lvl = rng.randrange(len(shapes))
            lat[lvl] = _random_latents([shapes[lvl]], gen, density=0.7, spread=9)[0]
        p.latents = lat
        what = f"latents {mode}"
    else:  # another (small) size, with fresh random latents
        h, w = rng.randint(1, 70), rng.randint(1, 70)
        p.height, p.width = h, w
        p.latents = _random_latents(p.latent_shapes(), gen, density=0.5)
        what = f"size {h}x{w}"
    try:
        return f"payload {what}, re-encoded", encode_file(p)
    except (LotteryError, ValueError) as exc:
        return f"payload {what}", info.seed.data, f"writer refused: {type(exc).__name__}: {exc}"


def _mut_module_values(rng, info, infos, cfg, seeds, k):
    """Re-code one network with other integers and shifts through `param_coding.module_code`, the
    network section rebuilt by `network_section.encode_section` with the seed's own codes for the
    mask and the other networks (the section is canonical; values may be beyond what the encoder
    makes: the ARM beyond its exactness bound, the others up to int64 with shifts -64..64), header
    shifts updated."""
    import torch

    from lotterycli.bitstream import network_section, param_coding
    from lotterycli.model.architecture import module_layout

    p = _payload(seeds, k)
    name = _pick(rng, ("arm", "upsampling", "modnet"))
    q = p.modules[name]
    gen = torch.Generator().manual_seed(rng.getrandbits(62))
    mode = _pick(rng, ("scale", "extreme", "random", "random", "shift") + (("predicted",) * 3 if name == "upsampling" else ()))
    tensors = dict(q.tensors)
    t = _pick(rng, list(tensors))
    shifts = q.tensor_shifts()
    if mode == "scale":
        factor = _pick(rng, (-1, 2, 1000, 1 << 20, 1 << 40))
        tensors[t] = (tensors[t].double() * factor).clamp(-(2.0 ** 62), 2.0 ** 62).to(torch.int64)
        what = f"{name}.{t} x{factor}"
    elif mode == "extreme":
        v = _pick(rng, ((1 << 63) - 1, -(1 << 63), 1 << 62, -(1 << 40), 64 << 16, (64 << 16) + 1, 1 << 22))
        tensors[t] = torch.full_like(tensors[t], v)
        what = f"{name}.{t} all {v}"
    elif mode == "random":
        bits = _pick(rng, (4, 12, 30, 62))
        tensors[t] = torch.randint(-(1 << bits), 1 << bits, tuple(tensors[t].shape), generator=gen)
        what = f"{name}.{t} random {bits}-bit"
    elif mode == "shift":
        shifts[t] = _pick(rng, (-64, -33, -1, 0, 16, 17, 40, 64))
        what = f"{name}.{t} shift {shifts[t]}"
    else:  # the kernel's difference from the bicubic prediction, at any shift (the writer's arithmetic unbounded)
        shifts[t] = _pick(rng, (-64, 0, 16, 40, 62, 63, 63, 64, 64))
        spread = _pick(rng, (0, 3, 1 << 20, 1 << 62))
        diffs = [rng.randint(-spread, spread) for _ in range(tensors[t].numel())]
        what = f"upsampling kernel predicted at shift {shifts[t]}, differences up to {spread}"
    from lotterycli.model.payload import QuantizedModule

    base = shifts[next(iter(tensors))]
    new = QuantizedModule(shift=base, tensors=tensors, shifts={a: s for a, s in shifts.items() if s != base})
    layout = module_layout(name, p.architecture)
    units = info.fields.values["ratio"]  # the header's mask ratio, in 1/10000 units
    seed_section = network_section.decode_section(info.sections[0], p.architecture, units)
    codes = dict(seed_section.modules)
    try:
        if mode == "predicted":  # the writer's order for these differences, flagged as predicted
            order, _ = param_coding.best_order(diffs, param_coding.tensor_sizes(layout), True)
            codes[name] = param_coding.ModuleCode(order, True, tuple(diffs))
        else:
            codes[name] = param_coding.module_code(new, name, layout)[0]
        section = network_section.encode_section(seed_section.mask, units, codes, p.architecture)
    except (ValueError, OverflowError) as exc:
        return f"module {what}", info.seed.data, f"module_code refused: {type(exc).__name__}: {exc}"
    import copy

    f = copy.deepcopy(info.fields)
    names = [n for m in ("arm", "upsampling", "modnet") for n, _ in module_layout(m, p.architecture)]
    offset = {"arm": 0, "upsampling": 6, "modnet": 7}[name]
    for j, (tn, _) in enumerate(module_layout(name, p.architecture)):
        f.shifts[offset + j] = shifts[tn]
    assert len(names) == len(f.shifts)
    if any(not 0 <= s <= 15 for s in f.shifts):
        f.values["layout"] &= ~0x04
    else:
        f.values["layout"] |= 0x04
    secs = [section, info.sections[1]]
    f.network_length = len(section)
    header, _ = f.pack()
    return f"module {what}, network section re-coded", with_crc(header + b"".join(secs))


def _mut_after_magic(rng, info, infos, cfg, seeds, k):
    from lotterycli.bitstream.header import FORMAT_VERSION

    n = _pick(rng, (0, 1, 2, 5, 10, 31, 64, 300))
    rest = bytes(rng.randrange(256) for _ in range(n))
    head = b"LOTR" + (bytes([FORMAT_VERSION]) if rng.random() < 0.6 else b"")
    body = head + rest
    if rng.random() < 0.5:
        return f"{head!r} + {n} random bytes + CRC", with_crc(body)
    return f"{head!r} + {n} random bytes", body


def _mut_version(rng, info, infos, cfg, seeds, k):
    b = bytearray(info.seed.data)
    b[4] = rng.randrange(256)
    out, how = _crc_choice(rng, bytes(b))
    return f"version byte {b[4]}, {how}", out


def _mut_splice(rng, info, infos, cfg, seeds, k):
    """The header of one seed with sections of another (the network's length and the CRC fitted)."""
    import copy

    other = _pick(rng, infos)
    f = copy.deepcopy(info.fields)
    mode = _pick(rng, ("all", "one"))
    secs = list(info.sections)
    if mode == "all":
        secs = list(other.sections)
    else:
        i = rng.randrange(len(_SECTIONS))
        secs[i] = other.sections[i]
    f.network_length = len(secs[0])
    header, _ = f.pack()
    return f"sections ({mode}) of seed {other.seed.name}", with_crc(header + b"".join(secs))


def _mut_size_bomb(rng, info, infos, cfg, seeds, k):
    """Large sizes on a small seed: above max_pixels (refused at once) or accepted (log-uniform
    pixel count up to max_accepted_pixels, which the decoder must handle within the time and
    memory limits)."""
    import copy

    f = copy.deepcopy(info.fields)
    if rng.random() < 0.5:
        h, w = _pick(rng, ((8192, 8192), (16384, 4096), (4096, 16384), (6325, 6325), (16384, 2442), (16384, 16384),
                           (6400, 6400), (40_000_001, 1)))
    else:
        lo, hi = math.log(1 << 16), math.log(max(1 << 16, cfg.max_accepted_pixels))
        pixels = int(math.exp(rng.uniform(lo, hi)))
        aspect = math.exp(rng.uniform(-1.5, 1.5))
        h = max(1, min(16384, int(math.sqrt(pixels * aspect))))
        w = max(1, min(16384, pixels // h))
    f.values["height"], f.values["width"] = h, w
    header, _ = f.pack()
    return f"size {h}x{w} ({h * w / 1e6:.1f} Mpx), CRC recomputed", with_crc(header + b"".join(info.sections))


# Running a case --------------------------------------------------------------------------------
class CaseTimeout(BaseException):
    """Raised by the timer (a BaseException: `except Exception` in the decoder does not hide it)."""


_MEMORY_SIGNS = ("MemoryError", "can't allocate memory", "not enough memory", "std::bad_alloc",
                 "Cannot allocate memory", "out of memory")


def _claimed_pixels(data: bytes) -> tuple[int | None, tuple[int, int] | None]:
    """(pixels, picture size) the header claims, None when it does not parse."""
    try:
        from lotterycli.bitstream.header import read_header

        h = read_header(data)
    except Exception:
        return None, None
    return h.height * h.width, h.image_size


def _peak_reset() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM, the peak resident set
    except OSError:
        pass


def _peak_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_case(case: Case, cfg: FuzzConfig) -> dict:
    """Decode one case here (in a worker) with the timer armed; the outcome as a plain dict:
    kind = refused / decoded / unexpected / skipped, plus what, message, seconds, memory."""
    import resource

    from lotterycli import api
    from lotterycli.errors import LotteryError

    pixels, size = _claimed_pixels(case.data)
    limit = cfg.case_limit(pixels)
    out = {"index": case.index, "mutation": case.kind, "desc": case.desc, "bytes": len(case.data),
           "pixels": pixels, "limit_s": limit}
    if case.skipped:
        out.update(kind="skipped", what="writer refused", message=case.skipped, seconds=0.0)
        return out
    _peak_reset()

    def on_alarm(signum, frame):
        raise CaseTimeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    start = time.perf_counter()
    result = exc = None
    tb = ""
    try:
        try:
            result = api.decompress(case.data, max_pixels=cfg.max_pixels)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as e:  # noqa: B036 - every outcome is classified below
        exc = e
        tb = traceback.format_exc()
    finally:
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - start
    out.update(seconds=seconds, peak_mb=_peak_mb(),
               maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    over = pixels is not None and pixels > cfg.max_pixels
    if exc is None:
        import torch

        ok = (isinstance(result, torch.Tensor) and result.dtype == torch.uint8 and result.dim() == 3
              and result.shape[0] == 3 and tuple(result.shape[1:]) == size)
        if over:
            out.update(kind="unexpected", what="decoded above max_pixels", message=f"{pixels} pixels")
        elif not ok:
            shape = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
            out.update(kind="unexpected", what="bad output",
                       message=f"{shape} {getattr(result, 'dtype', '')}, header says {size}")
        else:
            out.update(kind="decoded", what="decoded", message=f"{size[0]}x{size[1]}")
        return out
    message = str(exc)
    if isinstance(exc, LotteryError):
        if "\n" in message or "\r" in message:
            out.update(kind="unexpected", what="multi-line LotteryError", message=message, traceback=tb)
        elif any(s in message for s in _MEMORY_SIGNS):
            out.update(kind="unexpected", what="memory (reported as LotteryError)", message=message, traceback=tb)
        elif over and ("--max-pixels" not in message or seconds > QUICK_REFUSAL_S):
            out.update(kind="unexpected", what="slow or wrong refusal above max_pixels",
                       message=f"{message} ({seconds:.2f} s)", traceback=tb)
        else:
            out.update(kind="refused", what="LotteryError", message=message)
        return out
    if isinstance(exc, CaseTimeout):
        what = "timeout"
        message = f"no result after {limit:.1f} s"
    elif isinstance(exc, MemoryError) or any(s in message for s in _MEMORY_SIGNS):
        what = f"memory ({type(exc).__name__})"
    else:
        what = type(exc).__name__
    out.update(kind="unexpected", what=what, message=message, traceback=tb)
    return out


# Workers ---------------------------------------------------------------------------------------
def _limit_memory(mb: int) -> None:
    import resource

    if mb > 0:
        limit = mb * 1024 * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _worker_main(conn, seeds: list[Seed], cfg_dict: dict) -> None:
    """Worker loop: receive a case index, build the case, send ("start", limit), decode, send the
    outcome. Torch is imported before the address-space limit is set."""
    import torch

    torch.set_num_threads(1)
    from lotterycli import api  # noqa: F401 - warm the imports (and the decoder's tables) first
    from lotterycli.bitstream import latent_coding
    from lotterycli.model import fixedpoint

    latent_coding._table_float()
    fixedpoint.gelu_grid_table()
    global _SEEDS
    _SEEDS = seeds
    cfg = FuzzConfig(**cfg_dict)
    _limit_memory(cfg.memory_limit_mb)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            index = conn.recv()
        except EOFError:
            return
        if index is None:
            return
        try:
            if isinstance(index, tuple):  # ("data", bytes, description): given bytes, not a generated case
                case = Case(-1, "given", index[2], index[1])
            else:
                case = make_case(seeds, cfg, index)
        except BaseException as exc:  # noqa: B036 - a harness bug, reported as such
            conn.send(("done", {"index": index, "kind": "unexpected", "what": "harness error (case generation)",
                                "mutation": "?", "desc": "?", "bytes": 0, "pixels": None, "seconds": 0.0,
                                "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}))
            continue
        pixels, _ = _claimed_pixels(case.data)
        conn.send(("start", index, cfg.case_limit(pixels)))
        conn.send(("done", run_case(case, cfg)))


class _Worker:
    def __init__(self, ctx, seeds, cfg: FuzzConfig):
        self.parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, seeds, asdict(cfg)), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.index: int | None = None
        self.deadline = time.monotonic() + 300.0  # start-up (imports) and the first case's generation
        self.limit = 0.0

    def send(self, index: int, generation_timeout: float) -> None:
        self.index = index
        self.limit = 0.0
        self.deadline = time.monotonic() + generation_timeout
        self.parent.send(index)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()  # this worker's own pid
        self.proc.join(5)
        self.parent.close()


@dataclass
class FuzzReport:
    cfg: FuzzConfig
    n_cases: int
    workers: int
    seeds: list[Seed]
    outcomes: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def unexpected(self) -> list[dict]:
        return [o for o in self.outcomes if o["kind"] == "unexpected"]


def _lost(seeds, cfg: FuzzConfig, index: int, what: str, message: str, limit: float = 0.0) -> dict:
    """The outcome of a case whose worker died or hung (the case is rebuilt here to describe it)."""
    try:
        case = Case(-1, "given", index[2], index[1]) if isinstance(index, tuple) else make_case(seeds, cfg, index)
        index = case.index
        mutation, desc, size = case.kind, case.desc, len(case.data)
        pixels, _ = _claimed_pixels(case.data)
    except Exception as exc:  # described as far as possible
        mutation, desc, size, pixels = "?", f"(case not rebuilt: {exc})", 0, None
    return {"index": index, "kind": "unexpected", "what": what, "message": message, "mutation": mutation,
            "desc": desc, "bytes": size, "pixels": pixels, "seconds": limit, "limit_s": limit}


def run_fuzz(cases: int = 300, *, seed: int = 0, workers: int = 2, time_limit: float = DEFAULT_TIME_LIMIT,
             memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB, seconds_per_megapixel: float = DEFAULT_SECONDS_PER_MEGAPIXEL,
             max_accepted_pixels: int = DEFAULT_MAX_PIXELS, indices=None, start_method: str = "spawn",
             progress=None) -> FuzzReport:
    """Run cases 0..cases-1 (or `indices`) in `workers` processes; every outcome in the report."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    cfg = FuzzConfig(seed=seed, time_limit=time_limit, seconds_per_megapixel=seconds_per_megapixel,
                     memory_limit_mb=memory_limit_mb, max_accepted_pixels=max_accepted_pixels)
    seeds = build_seeds()
    todo = collections.deque(range(cases) if indices is None else indices)
    total = len(todo)
    report = FuzzReport(cfg, total, workers, seeds)
    ctx = mp.get_context(start_method)
    start = time.monotonic()
    pool = [_Worker(ctx, seeds, cfg) for _ in range(max(1, min(workers, total or 1)))]
    grace = lambda limit: max(10.0, 0.5 * limit)  # noqa: E731 - the timer fires first; this catches C code
    try:
        while todo or any(w.index is not None for w in pool):
            for w in pool:
                if w.ready and w.index is None and todo:
                    w.send(todo.popleft(), 120.0)
            ready = wait([w.parent for w in pool] + [w.proc.sentinel for w in pool], timeout=1.0)
            now = time.monotonic()
            for i, w in enumerate(pool):
                died = w.proc.sentinel in ready and not w.parent.poll()
                msg = None
                if w.parent in ready or w.parent.poll():
                    try:
                        msg = w.parent.recv()
                    except (EOFError, OSError):
                        died = True
                if msg is not None:
                    if msg[0] == "ready":
                        w.ready = True
                        w.deadline = math.inf
                    elif msg[0] == "start":
                        w.limit = msg[2]
                        w.deadline = now + msg[2] + grace(msg[2])
                    else:
                        report.outcomes.append(msg[1])
                        w.index = None
                        w.deadline = math.inf
                        if progress:
                            progress(len(report.outcomes), total)
                    continue
                if died or now > w.deadline:
                    if w.index is not None:
                        code = w.proc.exitcode
                        if died:
                            sig = -code if code is not None and code < 0 else None
                            how = f"signal {signal.Signals(sig).name}" if sig else f"exit code {code}"
                            report.outcomes.append(_lost(seeds, cfg, w.index, "worker died", f"worker process died ({how})"))
                        else:
                            report.outcomes.append(_lost(seeds, cfg, w.index, "timeout (worker killed)",
                                                         f"no answer after {w.limit:.1f} s + grace", w.limit))
                        if progress:
                            progress(len(report.outcomes), total)
                    elif not w.ready and not died:
                        raise RuntimeError("a fuzz worker did not start within 300 s")
                    elif died and not w.ready:
                        raise RuntimeError(f"a fuzz worker died while starting (exit code {w.proc.exitcode})")
                    w.kill()
                    pool[i] = _Worker(ctx, seeds, cfg)
    finally:
        for w in pool:
            try:
                w.parent.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in pool:
            w.proc.join(10)
            w.kill()
    report.outcomes.sort(key=lambda o: o["index"])
    report.seconds = time.monotonic() - start
    return report


# Summary ---------------------------------------------------------------------------------------
def message_prefix(message: str) -> str:
    """A refusal message with its numbers and details removed, to count the messages by kind."""
    m = re.sub(r"0x[0-9a-f]+", "0xN", message)
    m = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", m)
    m = m.split(" (")[0].replace("corrupted .lottery file: ", "corrupted: ")
    return m[:80]


def format_summary(report: FuzzReport) -> str:
    cfg = report.cfg
    out = []
    kinds = collections.Counter(o["kind"] for o in report.outcomes)
    out.append(f"lottery decoder fuzzing: {report.n_cases} cases, seed {cfg.seed}, {report.workers} workers, "
               f"{report.seconds:.1f} s")
    out.append(f"limits per case: {cfg.time_limit:g} s + {cfg.seconds_per_megapixel:g} s per claimed megapixel, "
               f"address space {cfg.memory_limit_mb} MiB; max_pixels {cfg.max_pixels}, accepted sizes capped at "
               f"{cfg.max_accepted_pixels} pixels")
    out.append(f"seeds: {len(report.seeds)} files, digest {seeds_digest(report.seeds)}: "
               + ", ".join(f"{s.name} ({len(s.data)} B)" for s in report.seeds))
    out.append("outcomes:")
    refused = [o for o in report.outcomes if o["kind"] == "refused"]
    out.append(f"  refused (LotteryError)  {len(refused)}")
    prefixes = collections.Counter(message_prefix(o["message"]) for o in refused).most_common()
    for prefix, n in prefixes[:40]:
        out.append(f"    {n:6d}  {prefix}")
    if len(prefixes) > 40:
        rest = prefixes[40:]
        out.append(f"    {sum(n for _, n in rest):6d}  ({len(rest)} other messages)")
    out.append(f"  decoded                 {kinds['decoded']}")
    if kinds["skipped"]:
        out.append(f"  skipped (writer refused the mutated payload)  {kinds['skipped']}")
    unexpected = report.unexpected
    out.append(f"  unexpected              {len(unexpected)}")
    for what, n in collections.Counter(o["what"] for o in unexpected).most_common():
        out.append(f"    {n:6d}  {what}")
    out.append("by mutation (refused / decoded / unexpected):")
    by = collections.defaultdict(collections.Counter)
    for o in report.outcomes:
        by[o["mutation"]][o["kind"]] += 1
    for name, _ in MUTATIONS:
        c = by.get(name)
        if c:
            out.append(f"  {name:16s} {c['refused']:6d} {c['decoded']:6d} {c['unexpected']:6d}"
                       + (f"  ({c['skipped']} skipped)" if c["skipped"] else ""))
    decoded = [o for o in report.outcomes if o["kind"] == "decoded"]
    if decoded:
        big = max(decoded, key=lambda o: (o["pixels"] or 0, o["seconds"]))
        peak = f"{big['peak_mb']:.0f} MiB peak RSS during the case" if big.get("peak_mb") else "peak RSS unknown"
        out.append(f"largest accepted file: case {big['index']}, {big['message']} ({big['pixels'] / 1e6:.2f} Mpx, "
                   f"{big['bytes']} B): decoded in {big['seconds']:.2f} s, {peak}, worker ru_maxrss "
                   f"{big['maxrss_mb']:.0f} MiB")
    timed = [o for o in report.outcomes if o.get("seconds") is not None and o["kind"] != "skipped"]
    if timed:
        slow = max(timed, key=lambda o: o["seconds"])
        out.append(f"slowest case: {slow['index']} ({slow['kind']}, {slow['seconds']:.2f} s, "
                   f"limit {slow.get('limit_s', 0):.1f} s): {slow['desc']}")
    if unexpected:
        out.append("UNEXPECTED OUTCOMES (replay each with the command shown):")
        for o in unexpected:
            out.append(f"  case {o['index']}: {o['what']}: {o['message'][:300]!r}")
            out.append(f"    mutation: {o['mutation']}: {o['desc']}")
            out.append(f"    replay: python tests/fuzz_lottery.py --seed {cfg.seed} --max-accepted-pixels "
                       f"{cfg.max_accepted_pixels} --replay {o['index']}")
    return "\n".join(out)


def decode_isolated(data: bytes, desc: str = "given bytes", *, time_limit: float = DEFAULT_TIME_LIMIT,
                    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
                    seconds_per_megapixel: float = DEFAULT_SECONDS_PER_MEGAPIXEL, start_method: str = "spawn") -> dict:
    """Decode `data` once in a worker process under the fuzzing limits; its outcome (run_case's dict)."""
    report = run_fuzz(1, workers=1, time_limit=time_limit, memory_limit_mb=memory_limit_mb,
                      seconds_per_megapixel=seconds_per_megapixel, indices=[("data", bytes(data), desc)],
                      start_method=start_method)
    return report.outcomes[0]


def replay(index: int, *, seed: int = 0, time_limit: float = DEFAULT_TIME_LIMIT,
           memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB, seconds_per_megapixel: float = DEFAULT_SECONDS_PER_MEGAPIXEL,
           max_accepted_pixels: int = DEFAULT_MAX_PIXELS, dump: str | None = None, start_method: str = "spawn") -> dict:
    """Run one case again in a worker (same limits) and print everything about it."""
    cfg = FuzzConfig(seed=seed, time_limit=time_limit, seconds_per_megapixel=seconds_per_megapixel,
                     memory_limit_mb=memory_limit_mb, max_accepted_pixels=max_accepted_pixels)
    seeds = build_seeds()
    case = make_case(seeds, cfg, index)
    print(f"case {index} (seed {seed}, seeds digest {seeds_digest(seeds)}): {case.kind}: {case.desc}")
    print(f"  {len(case.data)} bytes: {case.data[:96].hex()}{'...' if len(case.data) > 96 else ''}")
    if dump:
        Path(dump).write_bytes(case.data)
        print(f"  written to {dump}")
    report = run_fuzz(1, seed=seed, workers=1, time_limit=time_limit, memory_limit_mb=memory_limit_mb,
                      seconds_per_megapixel=seconds_per_megapixel, max_accepted_pixels=max_accepted_pixels,
                      indices=[index], start_method=start_method)
    o = report.outcomes[0]
    print(f"  outcome: {o['kind']}: {o['what']}: {o['message']}")
    if o.get("seconds") is not None:
        print(f"  {o['seconds']:.3f} s (limit {o.get('limit_s', 0):.1f} s), peak RSS {o.get('peak_mb')} MiB")
    if o.get("traceback"):
        print(o["traceback"].rstrip())
    return o


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, help="seconds per case (base)")
    ap.add_argument("--seconds-per-megapixel", type=float, default=DEFAULT_SECONDS_PER_MEGAPIXEL,
                    help="added to the limit per megapixel the header claims (within max_pixels)")
    ap.add_argument("--memory-limit-mb", type=int, default=DEFAULT_MEMORY_LIMIT_MB,
                    help="address-space limit of each worker (RLIMIT_AS), 0 for none")
    ap.add_argument("--max-accepted-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                    help="sizes within max_pixels are capped at this many pixels")
    ap.add_argument("--start-method", choices=("spawn", "fork", "forkserver"), default="spawn")
    ap.add_argument("--replay", type=int, default=None, metavar="INDEX", help="run one case and show its details")
    ap.add_argument("--dump", default=None, metavar="FILE", help="with --replay: write the case's bytes here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    common = dict(seed=args.seed, time_limit=args.time_limit, memory_limit_mb=args.memory_limit_mb,
                  seconds_per_megapixel=args.seconds_per_megapixel, max_accepted_pixels=args.max_accepted_pixels,
                  start_method=args.start_method)
    if args.replay is not None:
        o = replay(args.replay, dump=args.dump, **common)
        return 1 if o["kind"] == "unexpected" else 0

    step = max(1, args.cases // 10)

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done % step == 0 or done == total):
            print(f"  {done}/{total} cases", file=sys.stderr, flush=True)

    report = run_fuzz(args.cases, workers=args.workers, progress=progress, **common)
    print(format_summary(report))
    return 1 if report.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
