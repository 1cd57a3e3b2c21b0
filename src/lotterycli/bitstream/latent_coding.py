"""Entropy coding of the integer latent grids with the fixed-point ARM and a fixed table.

Coding probabilities must be bit-identical at encode and decode time on every machine, so:

* `ArmExact` gives (mu, log_scale) exactly (fixed point, see `arm` and `fixedpoint`);
* mu is split into m_int + f/32 (f in 0..31) and log_scale is put on a 1/16 grid between the
  ARM clamp limits; (f, log-scale index) selects one row of a FIXED table of integer frequencies
  (total 2**20, every entry >= 1) over the residual r = q - m_int: |r| <= 63 directly, plus two
  escape symbols (r < -63, r > 63) carrying the Laplace tail masses;
* an escaped residual's excess e = |r| - 64 >= 0 is sent as n = e + 1 = 2**k + low: k with a
  uniform 32-ary model in escape stream 1, low (k bits, only when k >= 1) with a uniform model
  in escape stream 2;
* the table is computed with our own exp (Cody-Waite reduction + fixed Taylor polynomial using
  only IEEE +, -, *, / and exact power-of-two scaling), never libm/SIMD exp, and pinned by
  `table_fingerprint()`.

Order: with the ARM's causal offsets every neighbour of (y, x) has a smaller t = 4y + x, so the
decoder handles one anti-diagonal wavefront t at a time, all grids together (the number of steps
is max over grids of 4h + w). The encoder emits symbols in exactly that order.

Bands (`band_rows` B > 0): each grid is cut into horizontal bands of B rows whose
contexts stop at the band's top edge, as at the grid's own top edge (zeros above). Bands are
independent, so they share wavefronts too: t = 4 (y mod B) + x, and a 768x512 image needs
4 * 255 + 768 = 1,788 steps at B = 256 instead of 2,812. B = 0 means one band per grid.

Layout of the bytes:
    1 byte   bit i set = grid i is coded (grids whose values are all zero are skipped)
    varint   byte length of escape stream 1, varint byte length of escape stream 2
    stream1, stream2, main stream (the rest)
Every stream is a constriction range-coder output, written as big-endian 32-bit words with its
trailing zero bytes removed (restored on reading). The section has no checksum of its own: the
file's CRC covers it, and its length is what the file leaves after the network section. A
decoder that has read every symbol must find each stream exhausted, as far as constriction's
`maybe_exhausted` tells: it cannot see up to one 32-bit word more, so up to 4 bytes appended to
a stream (by an edit that also recomputes the file's CRC) decode to the same latents.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from ..errors import LotteryError
from ..model.arm import CONTEXT_OFFSETS, LOG_SCALE_MAX, LOG_SCALE_MIN, ArmExact
from ..model.fixedpoint import ACT_LIMIT
from .varint import decode_varint, encode_varint

# --- the fixed table ------------------------------------------------------------------------
HALF_ALPHABET = 63  # residuals -63..63 are coded directly
ESC_NEG = 2 * HALF_ALPHABET + 1  # symbol 127: residual < -63
ESC_POS = ESC_NEG + 1  # symbol 128: residual > 63
N_SYMBOLS = ESC_POS + 1  # 129
MU_STEPS = 32  # mu fraction quantized to 1/32
LS_STEPS = 16  # log-scale quantized to 1/16
N_LS = int(round((LOG_SCALE_MAX - LOG_SCALE_MIN) * LS_STEPS)) + 1  # 137
FREQ_BITS = 20
FREQ_TOTAL = 1 << FREQ_BITS
ESC_K_SIZE = 32  # uniform alphabet for the escape length k
LATENT_LIMIT = 1 << 20  # |latent value| bound (encode refuses, decode rejects beyond it)
ENCODE_CHUNK = 1 << 16
MAX_BAND_ROWS = 1 << 16  # band height limit (0 = no bands); the container's image limit is lower

assert LOG_SCALE_MIN * LS_STEPS == int(LOG_SCALE_MIN * LS_STEPS)


def _exp(x: np.ndarray) -> np.ndarray:
    """exp(x) in float64 with only IEEE-exact-per-op operations (same bits on every machine).

    x = k ln2 + r (Cody-Waite, |r| <= 0.35), exp(r) by a degree-14 Taylor polynomial (Horner),
    times 2**k with ldexp (exact). Inputs are clamped to [-700, 700].
    """
    x = np.clip(np.asarray(x, dtype=np.float64), -700.0, 700.0)
    ln2_hi = 6.93147180369123816490e-01  # Cody-Waite split of ln 2 (fdlibm constants)
    ln2_lo = 1.90821492927058770002e-10
    inv_ln2 = 1.44269504088896338700e00
    k = np.floor(x * inv_ln2 + 0.5)
    r = (x - k * ln2_hi) - k * ln2_lo
    p = np.full_like(r, 1.0 / math.factorial(14))
    for n in range(13, -1, -1):
        p = p * r + 1.0 / math.factorial(n)
    return np.ldexp(p, k.astype(np.int64))


@cache
def _table_ints() -> np.ndarray:
    """(MU_STEPS * N_LS, N_SYMBOLS) int64 frequencies, each >= 1, every row sums to 2**20.

    Row f * N_LS + j: Laplace with mean f/32 (relative to m_int) and scale
    b = exp(LOG_SCALE_MIN + j/16); column r + 63 is P(residual r), the last two columns the tail
    masses below -63.5 and above 63.5 (relative to m_int).
    """
    frac = (np.arange(MU_STEPS, dtype=np.float64) / MU_STEPS)[:, None, None]
    ls = LOG_SCALE_MIN + np.arange(N_LS, dtype=np.float64) / LS_STEPS  # exact
    inv_b = _exp(-ls)[None, :, None]
    r = np.arange(-HALF_ALPHABET, HALF_ALPHABET + 1, dtype=np.float64)[None, None, :]
    lo = (r - 0.5 - frac) * inv_b  # bin edges relative to mu, in units of b
    hi = (r + 0.5 - frac) * inv_b
    # Each branch below only uses exp(-|edge|) at the edges where it applies (above: lo, hi >= 0;
    # below: lo, hi <= 0; inside: lo < 0 < hi), so two exp evaluations serve all three.
    e_lo, e_hi = _exp(-np.abs(lo)), _exp(-np.abs(hi))
    above = 0.5 * (e_lo - e_hi)
    below = 0.5 * (e_hi - e_lo)
    inside = 1.0 - 0.5 * e_lo - 0.5 * e_hi
    p = np.where(lo >= 0.0, above, np.where(hi <= 0.0, below, inside))
    frac2 = frac[:, :, 0]
    inv_b2 = inv_b[:, :, 0]
    esc_neg = 0.5 * _exp((-(HALF_ALPHABET + 0.5) - frac2) * inv_b2)
    esc_pos = 0.5 * _exp(-((HALF_ALPHABET + 0.5) - frac2) * inv_b2)
    p = np.concatenate([p, esc_neg[:, :, None], esc_pos[:, :, None]], axis=2)
    p = p.reshape(MU_STEPS * N_LS, N_SYMBOLS)
    freq = np.maximum(np.floor(p * FREQ_TOTAL + 0.5), 1.0).astype(np.int64)
    rows = np.arange(freq.shape[0])
    top = np.argmax(freq, axis=1)  # first maximum: deterministic
    freq[rows, top] += FREQ_TOTAL - freq.sum(axis=1)
    assert (freq >= 1).all() and (freq.sum(axis=1) == FREQ_TOTAL).all()
    return freq


@cache
def _table_float() -> np.ndarray:
    return np.ascontiguousarray(_table_ints().astype(np.float64))


@cache
def _table_bits() -> np.ndarray:
    return FREQ_BITS - np.log2(_table_ints().astype(np.float64))


def table_fingerprint() -> str:
    """SHA-256 of the integer frequency table (pinned by a test)."""
    return hashlib.sha256(_table_ints().astype("<i8").tobytes()).hexdigest()


def table_index(mu: torch.Tensor, log_scale: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Exact (mu, log_scale) from ArmExact -> (table row, m_int), int64 numpy arrays."""
    mu = mu.numpy() if isinstance(mu, torch.Tensor) else np.asarray(mu)
    ls = log_scale.numpy() if isinstance(log_scale, torch.Tensor) else np.asarray(log_scale)
    mq = np.floor(mu * MU_STEPS + 0.5).astype(np.int64)  # exact: mu is a multiple of 2**-16
    ls = np.maximum(np.minimum(ls, LOG_SCALE_MAX), LOG_SCALE_MIN)  # np.clip, with less overhead
    j = ((ls - LOG_SCALE_MIN) * LS_STEPS + 0.5).astype(np.int64)  # >= 0.5: truncation is floor
    return (mq & (MU_STEPS - 1)) * N_LS + j, mq >> 5


# --- geometry: all grids on one zero-padded canvas ----------------------------------------
@dataclass
class _Plan:
    shapes: list[tuple[int, int]]
    active: list[int]  # indices of coded grids
    canvas_size: int
    offsets: np.ndarray  # (24,) flat context offsets
    pos: np.ndarray  # (N,) canvas index of each coded value, in coding order
    src: list[np.ndarray]  # per active grid: where its values sit in `pos` order (for gather/scatter)
    bounds: np.ndarray  # wavefront t covers pos[bounds[t]:bounds[t+1]]


def _plan(shapes: list[tuple[int, int]], active: list[int], band_rows: int = 0) -> _Plan:
    """Canvas positions and wavefront order of every coded value.

    Grids (and, with `band_rows`, each band of a grid) sit on one canvas, 4 zero rows apart and
    with 4 zero columns on each side, so one gather with fixed offsets gives every context.
    """
    band_rows = int(band_rows)
    if not 0 <= band_rows <= MAX_BAND_ROWS:
        raise LotteryError(f"band rows {band_rows} outside 0..{MAX_BAND_ROWS}")
    wc = max([shapes[g][1] for g in active], default=0) + 8
    row = 4
    pos_parts, t_parts, starts = [], [], []
    n = 0
    for g in active:
        h, w = shapes[g]
        ys, xs = np.meshgrid(np.arange(h, dtype=np.int64), np.arange(w, dtype=np.int64), indexing="ij")
        band, y_in = (ys // band_rows, ys % band_rows) if band_rows > 0 else (0, ys)
        pos_parts.append(((row + ys + 4 * band) * wc + 4 + xs).reshape(-1))  # 4 zero rows before each band
        t_parts.append((4 * y_in + xs).reshape(-1))
        starts.append(n)
        n += h * w
        n_bands = -(-h // band_rows) if band_rows > 0 else 1
        row += h + 4 * n_bands
    canvas_size = row * wc
    offsets = np.array([dy * wc + dx for dy, dx in CONTEXT_OFFSETS], dtype=np.int64)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Plan(shapes, active, canvas_size, offsets, empty, [], np.zeros(1, dtype=np.int64))
    t_all = np.concatenate(t_parts)
    order = np.argsort(t_all, kind="stable")
    inv = np.empty_like(order)
    inv[order] = np.arange(n, dtype=np.int64)
    src = [inv[s: s + shapes[g][0] * shapes[g][1]] for s, g in zip(starts, active)]
    counts = np.bincount(t_all, minlength=int(t_all.max()) + 1)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return _Plan(shapes, active, canvas_size, offsets, np.concatenate(pos_parts)[order], src, bounds)


def _check_shapes(shapes) -> list[tuple[int, int]]:
    out = []
    for s in shapes:
        h, w = int(s[0]), int(s[1])
        if h < 0 or w < 0:
            raise LotteryError(f"bad latent grid shape {s}")
        out.append((h, w))
    if len(out) > 8:
        raise LotteryError("at most 8 latent grids are supported")
    if sum(h * w for h, w in out) > 1 << 28:
        raise LotteryError("latent grids too large")
    return out


def _bit_length(n: np.ndarray) -> np.ndarray:
    """floor(log2 n) for int64 n >= 1 (exact, integer ops only)."""
    k = np.zeros_like(n)
    m = n.copy()
    for s in (32, 16, 8, 4, 2, 1):
        big = m >= (1 << s)
        k[big] += s
        m[big] >>= s
    return k


@dataclass
class _Symbols:
    sym: np.ndarray  # int32 (N,), coding order
    rows: np.ndarray  # int64 (N,)
    esc_k: np.ndarray  # int32, one per escape, coding order
    esc_low: np.ndarray  # int32, one per escape with k >= 1
    esc_low_size: np.ndarray  # int32 2**k for those


def _symbols(latents: list[torch.Tensor], arm: ArmExact, plan: _Plan) -> tuple[_Symbols, np.ndarray]:
    canvas = np.zeros(plan.canvas_size, dtype=np.float64)
    vals = np.zeros(plan.pos.shape[0], dtype=np.int64)
    for g, src in zip(plan.active, plan.src):
        vals[src] = latents[g].reshape(-1).numpy()
    canvas[plan.pos] = vals
    n = vals.shape[0]
    sym = np.empty(n, dtype=np.int32)
    rows = np.empty(n, dtype=np.int64)
    resid = np.empty(n, dtype=np.int64)
    for s in range(0, n, ENCODE_CHUNK):
        e = min(n, s + ENCODE_CHUNK)
        ctx = canvas[plan.pos[s:e, None] + plan.offsets]
        mu, ls = arm(torch.from_numpy(ctx))  # bit-identical to forward_numpy (tested)
        rows[s:e], m_int = table_index(mu, ls)
        resid[s:e] = vals[s:e] - m_int
    sym[:] = np.clip(resid, -HALF_ALPHABET, HALF_ALPHABET) + HALF_ALPHABET
    sym[resid < -HALF_ALPHABET] = ESC_NEG
    sym[resid > HALF_ALPHABET] = ESC_POS
    esc = np.abs(resid[np.abs(resid) > HALF_ALPHABET]) - (HALF_ALPHABET + 1) + 1  # n = e + 1 >= 1
    k = _bit_length(esc)
    low = esc - (np.int64(1) << k)
    keep = k >= 1
    out = _Symbols(sym, rows, k.astype(np.int32), low[keep].astype(np.int32),
                   (np.int64(1) << k[keep]).astype(np.int32))
    return out, vals


def _to_int_latents(latents, shapes) -> list[torch.Tensor]:
    out = []
    for g, (h, w) in zip(latents, shapes):
        g = torch.as_tensor(g)
        if g.is_floating_point():
            if not bool((g == torch.round(g)).all()):
                raise LotteryError("latents must be integers")
        g = g.to(torch.int64).reshape(h, w)
        if g.numel() and int(g.abs().max()) > LATENT_LIMIT:
            raise LotteryError(f"latent value beyond +-{LATENT_LIMIT}")
        out.append(g)
    return out


def _prepare(latents, arm):
    shapes = _check_shapes([tuple(g.shape) for g in latents])
    lat = _to_int_latents(latents, shapes)
    active = [i for i, g in enumerate(lat) if g.numel() and bool(g.any())]
    return shapes, lat, active


def estimate_bits(latents: list[torch.Tensor], arm: ArmExact, band_rows: int = 0) -> float:
    """Code length (bits) the fixed table assigns to `latents`, escapes included (no header)."""
    return sum(grid_bits(latents, arm, band_rows))


def grid_bits(latents: list[torch.Tensor], arm: ArmExact, band_rows: int = 0) -> list[float]:
    """`estimate_bits` grid by grid (level 0 first; an all-zero grid, which is not coded, 0). Each
    grid's contexts stay inside it, so these are the code lengths the grids take in the stream."""
    shapes, lat, active = _prepare(latents, arm)
    plan = _plan(shapes, active, band_rows)
    syms, _ = _symbols(lat, arm, plan)
    bits = _table_bits()[syms.rows, syms.sym].astype(np.float64)
    escaped = np.flatnonzero((syms.sym == ESC_NEG) | (syms.sym == ESC_POS))  # coding order, as esc_k
    bits[escaped] += math.log2(ESC_K_SIZE) + syms.esc_k
    out = [0.0] * len(shapes)
    for g, src in zip(plan.active, plan.src):
        out[g] = float(bits[src].sum())
    return out


# --- byte helpers ---------------------------------------------------------------------------------
def _words_to_bytes(words: np.ndarray) -> bytes:
    return np.asarray(words, dtype=np.uint32).astype(">u4").tobytes().rstrip(b"\0")


def _bytes_to_words(b: bytes) -> np.ndarray:
    b = b + b"\0" * (-len(b) % 4)
    return np.frombuffer(b, dtype=">u4").astype(np.uint32)


def _models():
    import constriction

    m = constriction.stream.model
    return m.Categorical(perfect=False), m.Uniform(ESC_K_SIZE), m.Uniform()


# --- encode / decode -------------------------------------------------------------------------
def encode_latents(latents: list[torch.Tensor], arm: ArmExact, band_rows: int = 0) -> bytes:
    """Integer grids (level 0 first) -> bytes. Inverse: `decode_latents` with the same shapes and bands."""
    import constriction

    shapes, lat, active = _prepare(latents, arm)
    plan = _plan(shapes, active, band_rows)
    syms, _ = _symbols(lat, arm, plan)
    cat, unif_k, unif = _models()
    q = constriction.stream.queue
    main = q.RangeEncoder()
    table = _table_float()
    for s in range(0, syms.sym.shape[0], ENCODE_CHUNK):
        e = min(syms.sym.shape[0], s + ENCODE_CHUNK)
        main.encode(syms.sym[s:e], cat, table[syms.rows[s:e]])
    e1, e2 = q.RangeEncoder(), q.RangeEncoder()
    if syms.esc_k.shape[0]:
        e1.encode(syms.esc_k, unif_k)
    if syms.esc_low.shape[0]:
        e2.encode(syms.esc_low, unif, syms.esc_low_size)
    s1 = _words_to_bytes(e1.get_compressed())
    s2 = _words_to_bytes(e2.get_compressed())
    flags = sum(1 << g for g in active)
    return b"".join([bytes([flags]), encode_varint(len(s1)), encode_varint(len(s2)), s1, s2,
                     _words_to_bytes(main.get_compressed())])


class _Wavefronts:
    """The decoder's view of `_plan`: the positions of wavefront t, made when it is decoded.

    Why not `_plan`: it holds several int64 arrays per latent (~60 bytes each), built before a
    single symbol is read, so a small file claiming a large image would cost gigabytes before its
    stream runs out. Here memory is the canvas (float32: contexts are integers clipped to +-256)
    and the output grids, and a truncated stream is refused at its first missing symbol. The order
    is the encoder's: wavefront by wavefront, grid after grid, rows top to bottom (tested equal).
    """

    def __init__(self, shapes: list[tuple[int, int]], active: list[int], band_rows: int):
        band_rows = int(band_rows)
        if not 0 <= band_rows <= MAX_BAND_ROWS:
            raise LotteryError(f"band rows {band_rows} outside 0..{MAX_BAND_ROWS}")
        self.wc = max([shapes[g][1] for g in active], default=0) + 8
        self.grids = []  # (grid, h, w, band height, bands, first canvas row, first index in the output)
        row, t_max = 4, -1
        offsets = np.cumsum([0] + [h * w for h, w in shapes])
        for g in active:
            h, w = shapes[g]
            b = band_rows if 0 < band_rows < h else h
            n_bands = -(-h // b)
            self.grids.append((g, h, w, b, n_bands, row, int(offsets[g])))
            row += h + 4 * n_bands
            t_max = max(t_max, 4 * (b - 1) + w - 1)
        self.canvas_size = row * self.wc
        self.n_waves = t_max + 1
        self.offsets = np.array([dy * self.wc + dx for dy, dx in CONTEXT_OFFSETS], dtype=np.int64)

    def positions(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(canvas positions, indices into the flat output) of wavefront t, in coding order."""
        pos, out = [], []
        for _, h, w, b, n_bands, row0, first in self.grids:
            lo, hi = max(0, -((w - 1 - t) // 4)), min(b - 1, t // 4)  # rows of a band on this wavefront
            if lo > hi:
                continue
            y_in = np.arange(lo, hi + 1, dtype=np.int64)
            bands = np.arange(n_bands, dtype=np.int64)[:, None]
            y = (bands * b + y_in).reshape(-1)  # band by band: rows in increasing order
            x = np.broadcast_to(t - 4 * y_in, (n_bands, y_in.size)).reshape(-1)
            bands = np.broadcast_to(bands, (n_bands, y_in.size)).reshape(-1)
            keep = y < h  # the last band may be shorter
            if not keep.all():
                y, x, bands = y[keep], x[keep], bands[keep]
            pos.append((row0 + y + 4 * bands) * self.wc + 4 + x)
            out.append(first + y * w + x)
        if not pos:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        return (pos[0], out[0]) if len(pos) == 1 else (np.concatenate(pos), np.concatenate(out))


def decode_latents(data: bytes, shapes: list[tuple[int, int]], arm: ArmExact, band_rows: int = 0) -> list[torch.Tensor]:
    """Bytes from `encode_latents` -> int64 grids of the given shapes.

    Raises LotteryError on truncated or corrupted data; memory is bounded by the shapes (the
    canvas and the grids) and a stream that runs out is refused at its first missing symbol.
    """
    shapes = _check_shapes(shapes)
    data = bytes(data)
    if len(data) < 3:
        raise LotteryError("latent data truncated")
    flags = data[0]
    if flags >> len(shapes):
        raise LotteryError("corrupted latent data (grid flags)")
    active = [g for g in range(len(shapes)) if flags >> g & 1 and shapes[g][0] * shapes[g][1] > 0]
    n1, i = decode_varint(data, 1, "latent escape stream length", len(data))
    n2, i = decode_varint(data, i, "latent escape stream length", len(data))
    body_end = len(data)
    if i + n1 + n2 > body_end:
        raise LotteryError("latent data truncated")
    waves = _Wavefronts(shapes, active, band_rows)
    total = sum(h * w for h, w in shapes)
    try:
        values = _decode_values(waves, total, arm, data[i: i + n1], data[i + n1: i + n1 + n2],
                                     data[i + n1 + n2: body_end])
    except LotteryError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # constriction reports invalid data with ValueError and friends
        raise LotteryError(f"corrupted latent data ({type(exc).__name__})") from None
    flat = torch.from_numpy(values)
    return [part.reshape(h, w).to(torch.int64) for part, (h, w) in zip(flat.split([h * w for h, w in shapes]), shapes)]


def _decode_values(waves: _Wavefronts, total: int, arm: ArmExact, s1: bytes, s2: bytes,
                   s_main: bytes) -> np.ndarray:
    """Every latent, flat int32 in grid order; a stream with words left after the last latent is
    refused (see the module docstring for what `maybe_exhausted` cannot see)."""
    import constriction

    q = constriction.stream.queue
    cat, unif_k, unif = _models()
    values = np.zeros(total, dtype=np.int32)
    if waves.n_waves <= 0:
        if s1 or s2 or s_main:
            raise LotteryError("corrupted latent data (streams without latents)")
        return values
    main = q.RangeDecoder(_bytes_to_words(s_main))
    d1 = q.RangeDecoder(_bytes_to_words(s1))
    d2 = q.RangeDecoder(_bytes_to_words(s2))
    canvas = np.zeros(waves.canvas_size, dtype=np.float32)
    table = _table_float()
    off = waves.offsets
    limit = int(ACT_LIMIT)
    for t in range(waves.n_waves):
        pos, out = waves.positions(t)
        if pos.size == 0:
            continue
        ctx = canvas.take(pos[:, None] + off).astype(np.float64)  # take: faster than fancy indexing
        mu, ls = arm.forward_numpy(ctx, clipped=True)
        rows, m_int = table_index(mu, ls)
        sym = main.decode(cat, table.take(rows, axis=0)).astype(np.int64)
        r = sym - HALF_ALPHABET
        esc = sym >= ESC_NEG
        if esc.any():
            r[esc] = _decode_escapes(sym[esc], d1, d2, unif_k, unif)
        v = m_int + r
        if np.abs(v).max() > LATENT_LIMIT:
            raise LotteryError("corrupted latent data (value out of range)")
        values[out] = v.astype(np.int32)
        canvas[pos] = np.clip(v, -limit, limit)  # the ARM clamps contexts to this anyway
    if not (main.maybe_exhausted() and d1.maybe_exhausted() and d2.maybe_exhausted()):
        raise LotteryError("corrupted latent data (bytes left after the last latent)")
    return values


def _decode_escapes(esc_sym, d1, d2, unif_k, unif) -> np.ndarray:
    k = d1.decode(unif_k, esc_sym.shape[0]).astype(np.int64)
    if k.max() > 22:
        raise LotteryError("corrupted latent data (escape length)")
    n = np.int64(1) << k
    keep = k >= 1
    if keep.any():
        low = d2.decode(unif, n[keep].astype(np.int32)).astype(np.int64)
        n[keep] += low
    mag = n - 1 + HALF_ALPHABET + 1
    return np.where(esc_sym == ESC_NEG, -mag, mag)
