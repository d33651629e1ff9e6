"""Per-neuron running statistics on CPU, compiled with numba.

``record`` folds every activation into its neuron's moments, extremes, histogram and top/bottom
k. With torch on CPU that is about ten passes over each chunk, each with a temporary; here it is
two loops compiled to machine code (one over blocks of rows for everything but the histogram,
one over blocks of rows and neurons for the histogram, whose counts then stay in cache): 2 to
2.8x less CPU per character for the 2x256 demo model and a 3x512 (benchmarks/
record_throughput.py, "statistics alone"). They also release the GIL, so the statistics thread
runs beside the trace instead of taking turns with it. On an accelerator the torch code in
``lstmscope.store.stats.KindStats`` is used instead.

A NaN makes the neuron's moments, min and max NaN (as on the torch road); it never enters the
top/bottom k, which torch's ``topk`` would put first.

Top/bottom k use a total order, so the kept set depends only on the values seen, not on the
order they came in or on how a resumed run's heap is laid out (a checkpoint written on the
torch road brings torch's choices among ties along): a larger value ranks higher (for the
bottom k, a smaller one), and between equal values the earlier text position ranks higher.
Each neuron's k are kept as a binary heap whose root is the lowest-ranked entry, so a value that
cannot enter costs one comparison and one that can costs ``log2(k)`` swaps.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "best_first",
    "count_bins",
    "encode_chunk",
    "fold_rows",
    "heap_from_best_first",
]

_jit = numba.njit(cache=True, nogil=True)

# Measured with a chunk of 10,912 x 256 values (32 streams x 341 positions): 1.7 -> 1.2 us per
# row against unblocked loops, whose chunk (11 MB) falls out of L2 between passes.
ROW_BLOCK = 256  # rows per block of fold_rows (256 KB of float32 at H=256)
HIST_ROWS = 1024  # rows per block of count_bins
HIST_BLOCK = 16  # neurons per histogram pass: their counts (16 x 2,000 x 8 bytes) stay in L2


@_jit
def _sift_down(vals, poss, j, sign):
    """Restore the heap of column ``j`` after its root was replaced (root = lowest ranked)."""
    k = vals.shape[0]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= k:
            return
        r = c + 1
        # The lower ranked child: a smaller sign*value, or the same value at a later position.
        if r < k:
            a, b = sign * vals[r, j], sign * vals[c, j]
            if a < b or (a == b and poss[r, j] > poss[c, j]):
                c = r
        a, b = sign * vals[c, j], sign * vals[i, j]
        if a < b or (a == b and poss[c, j] > poss[i, j]):
            vals[i, j], vals[c, j] = vals[c, j], vals[i, j]
            poss[i, j], poss[c, j] = poss[c, j], poss[i, j]
            i = c
        else:
            return


@_jit
def fold_rows(v, pos, shift, s1, s2, vmin, vmax, top_v, top_p, bot_v, bot_p):
    """Fold ``v`` ``[n, H]`` float32 (text positions ``pos`` ``[n]``) into running statistics.

    ``s1``/``s2`` ``[H]`` float64 get the sums of ``v - shift`` and of its square (the caller
    merges them with Chan et al.'s formula); ``vmin``/``vmax`` ``[H]`` float32 the extremes;
    ``top_*``/``bot_*`` ``[k, H]`` are the heaps (see the module docstring).
    """
    n, H = v.shape
    zero = np.float32(0.0)
    # Blocks of rows small enough to stay in L2 between the two loops over them: the first
    # vectorises (SIMD over neurons); the second rarely gets past its comparisons once the
    # heaps hold high values.
    for r0 in range(0, n, ROW_BLOCK):
        r1 = min(n, r0 + ROW_BLOCK)
        for r in range(r0, r1):
            for j in range(H):
                x = v[r, j]
                d = np.float64(x) - shift[j]
                s1[j] += d
                s2[j] += d * d
                # NaN sticks, as torch's amin/amax propagate it: the statistics show the defect
                if x < vmin[j] or x != x:
                    vmin[j] = x
                if x > vmax[j] or x != x:
                    vmax[j] = x
        for r in range(r0, r1):
            p = pos[r]
            for j in range(H):
                x = v[r, j] + zero  # -0.0 becomes 0.0: the two are one value to the ranking
                t = top_v[0, j]
                if x > t or (x == t and p < top_p[0, j]):
                    top_v[0, j] = x
                    top_p[0, j] = p
                    _sift_down(top_v, top_p, j, np.float32(1.0))
                b = bot_v[0, j]
                if x < b or (x == b and p < bot_p[0, j]):
                    bot_v[0, j] = x
                    bot_p[0, j] = p
                    _sift_down(bot_v, bot_p, j, np.float32(-1.0))


@_jit
def count_bins(bits, lut, hist):
    """``hist[j, lut[bits[r, j]]] += 1`` for every row ``r``: ``bits`` ``[n, H]`` uint16 (float16
    bit patterns, rows in any order), ``lut`` ``[65536]`` int32, ``hist`` ``[H, bins]`` int64."""
    n, H = bits.shape
    for r0 in range(0, n, HIST_ROWS):
        r1 = min(n, r0 + HIST_ROWS)
        for j0 in range(0, H, HIST_BLOCK):
            j1 = min(H, j0 + HIST_BLOCK)
            for r in range(r0, r1):
                for j in range(j0, j1):
                    hist[j, lut[bits[r, j]]] += 1


_F32_MAX = np.float32(np.finfo(np.float32).max)
_F32_TINY = np.float32(np.finfo(np.float32).tiny)
_F16_MAX = np.float32(65504.0)


def encode_chunk(v, length, codes, params, dec) -> None:
    """Code one chunk in the store's block encoding (``lstmscope.store.encoding``), one block per
    stream: ``v`` ``[T, B, H]`` float32 (any strides), ``length`` ``[B]`` int64 real rows of
    each stream; writes ``codes`` ``[B, T, H]`` int16 and ``dec`` ``[T, B, H]`` float32 (the
    value a reader decodes, bit for bit, clamped to float16's range: what the histograms count)
    for the real rows, and ``params`` ``[B, 2, H]`` float32 (centre, scale; the scale negated
    where a NaN was coded).

    The same arithmetic as ``encoding.encode_numpy`` (float64 parameters from the float32
    extremes, float32 ``(v - centre) * (1 / scale)``, rounding half to even), so the same bits.
    Two passes per stream over rows in order (the second finds the first's rows in cache: 341 x
    256 float32 is 350 KB); their inner loops have no branches (selects), so they vectorise:
    3x faster than with an ``if`` per NaN. Numba has no float16 on CPU: torch rounds ``dec``.

    The trace hands gates over as slices of a ``[T, B, 4H]`` buffer; numba indexes such arrays
    with run-time strides and does not vectorise (6x slower), so the values are read as one flat
    run of memory with the row strides passed in.
    """
    T, B, H = v.shape
    st, sb, sj = (x // v.itemsize for x in v.strides)
    if v.dtype != np.float32 or sj != 1 or st < 0 or sb < 0:
        v = np.ascontiguousarray(v, dtype=np.float32)
        st, sb = B * H, H
    span = (T - 1) * st + (B - 1) * sb + H
    flat = np.lib.stride_tricks.as_strided(v, shape=(span,), strides=(v.itemsize,))
    _encode_flat(flat, st, sb, T, B, H, np.asarray(length, dtype=np.int64), codes, params, dec)


@_jit
def _encode_flat(v, st, sb, T, B, H, length, codes, params, dec):
    """``encode_chunk`` on ``v[t * st + b * sb + j]``."""
    lo = np.empty(H, dtype=np.float32)
    hi = np.empty(H, dtype=np.float32)
    centre = np.empty(H, dtype=np.float32)
    inv = np.empty(H, dtype=np.float32)
    scale = np.empty(H, dtype=np.float32)
    nan = np.zeros(H, dtype=np.uint8)
    for b in range(B):
        m = length[b]
        lo[:] = np.inf
        hi[:] = -np.inf
        nan[:] = 0
        for t in range(m):
            row = v[t * st + b * sb : t * st + b * sb + H]
            for j in range(H):
                x = row[j]
                nan[j] |= x != x
                lo[j] = x if x < lo[j] else lo[j]  # a NaN compares false: skipped
                hi[j] = x if x > hi[j] else hi[j]
        for j in range(H):
            # Both extremes clamped to float32's range (an inf would make the scale inf), as
            # encode_numpy: a block of +inf codes float32's max. Empty only when all NaN.
            if lo[j] <= hi[j]:
                a = np.float64(min(max(lo[j], -_F32_MAX), _F32_MAX))
                z = np.float64(min(max(hi[j], -_F32_MAX), _F32_MAX))
            else:
                a = z = 0.0
            c = np.float32((a + z) / 2)
            reach = max(z - np.float64(c), np.float64(c) - a)
            s = np.float32(reach / 32767)
            if np.float64(s) * 32767 < reach:
                s = np.nextafter(s, np.float32(np.inf))
            if s > 0 and s < _F32_TINY:  # 1 / s must stay finite (encoding.F32_TINY)
                s = _F32_TINY
            centre[j] = c
            scale[j] = s
            inv[j] = np.float32(1.0) / s if s > 0 else np.float32(0.0)
            params[b, 0, j] = c
            params[b, 1, j] = -s if nan[j] else s
        for t in range(m):
            row = v[t * st + b * sb : t * st + b * sb + H]
            out = codes[b, t]
            out_dec = dec[t, b]
            for j in range(H):
                x = row[j]
                isnan = x != x
                # inf, clamped, times a zero inverse scale would be NaN
                xc = x if x < _F32_MAX else _F32_MAX
                xc = xc if xc > -_F32_MAX else -_F32_MAX
                y = (xc - centre[j]) * inv[j]
                y = y if y < np.float32(32767.0) else np.float32(32767.0)
                y = np.rint(y if y > np.float32(-32767.0) else np.float32(-32767.0))
                out[j] = np.int16(-32768) if isnan else np.int16(y)
                # As the reader: a product, then a sum, each rounded to float32 (no FMA).
                d = y * scale[j]
                d = d + centre[j]
                d = d if d < _F16_MAX else _F16_MAX
                d = d if d > -_F16_MAX else -_F16_MAX
                out_dec[j] = x if isnan else d


def best_first(vals: np.ndarray, poss: np.ndarray, sign: float) -> tuple[np.ndarray, np.ndarray]:
    """``[k, H]`` heaps (or any arrangement) sorted best first: by ``sign * value`` descending,
    then position ascending. Empty slots (value ``-sign * inf``) come last."""
    order = np.lexsort((poss.T, -sign * vals.T))  # [H, k]: the last key sorts first
    return (
        np.take_along_axis(vals.T, order, 1).T.copy(),
        np.take_along_axis(poss.T, order, 1).T.copy(),
    )


def heap_from_best_first(
    vals: np.ndarray, poss: np.ndarray, sign: float
) -> tuple[np.ndarray, np.ndarray]:
    """Heaps from ``[k, H]`` best-first arrays (e.g. a checkpoint's): sorted lowest ranked first,
    which is a valid heap. Sorted here again, as another device's arrays may order ties
    differently. A NaN (torch's ``topk`` keeps one) becomes an empty slot: at the root it would
    compare false with everything and close the heap for good."""
    vals, poss = vals.astype(np.float32), poss.astype(np.int64)
    nan = np.isnan(vals)
    vals[nan], poss[nan] = -sign * np.inf, -1
    v, p = best_first(vals, poss, sign)
    return np.ascontiguousarray(v[::-1]), np.ascontiguousarray(p[::-1])
