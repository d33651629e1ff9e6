"""The store's 16-bit block encoding of activations (format 2), and the arrays that decode it.

Why: float16 has 11 significant bits at every magnitude, so a cell-state unit that counts to
12,000 is stored in steps of 8 and its per-character increments vanish (the demo model: 62 of
its 512 c units pass 2,048). What a reader needs is resolution relative to the unit's own
range, which a fixed-point code gives in the same two bytes.

Encoding: the rows a recording writes in one go (one stream's ``T`` positions of one chunk, a
*block*, never crossing a run) are coded per unit as ``value = centre + q * scale`` with
``q`` an int16 in ``[-32767, 32767]``, ``centre`` the middle of the block's range and ``scale``
its half-range / 32767, both float32. ``q = -32768`` marks a NaN; such a (block, unit) stores its
scale negated, so readers look for NaNs only where a flag says so. ±inf is clamped to the
float32 range before coding. A block's parameters are known as soon as its rows are, so the
recorder codes chunk by chunk, streams in parallel, resumably: nothing waits for the whole
recording's range.

Error bound, per value: ``|decoded - v| <= 0.51 * scale + 2**-24 * (|v| + scale)``: half a code
step, 0.01 step for rounding ``(v - centre) / scale`` in float32, and the float32 rounding of
``centre + q * scale`` on reading (the stored float32 value itself carries the same 2^-24).
With ``scale <= range_block / 65534 + 2**-24 |centre| / 32767 + F32_TINY`` (the scale is floored
at float32's smallest normal number, ~1.2e-38, so ``1 / scale`` stays finite; subnormal
rounding, 2^-150 an operation, hides in the 0.01 step) and a block's range at most the unit's
range over the whole store, that is at most ``7.8e-6`` of the unit's own range plus ``6e-8`` of
its magnitude plus ``6e-39`` (:func:`error_bound`): 1e-4 of the range holds for any unit whose
magnitude stays under ~1,500 times its range and whose range is over ~1e-34, which is also where
the float32 trace itself stops being that exact.

Size: 2 bytes a value plus 8 bytes per unit and block (``T`` = 341 positions for 32 streams of a
256-unit model: 1.2% more than float16). Reading decodes per slice (``DecodedArray``): a
memory-mapped int16 read, then one multiply-add per block in float32 (a 200k x 256 array in
16k-row slices: 41 ms, against 93 ms for numpy's float16 to float32). The recorder's histograms
count the decoded values (rounded to float16 for their grid), bit for bit what a reader gets,
so histograms of any rows a reader bins are exactly part of the stored ones.

Measured on the demo model over 20k characters of held-out Python read as one stream, against a
float64 step loop (worst unit, error / the unit's range): float16 ``c`` 5.1e-4 (errors up to 8
on units past 16,384), ``h`` 2.5e-4, gates up to 5.7e-3 (``g`` units of range 0.04); this
encoding ``c`` 3.1e-5 (of which 3.0e-5 is the float32 trace's own distance from float64), ``h``
and gates <= 9.5e-6.
"""

from __future__ import annotations

import numpy as np

CODE_DTYPE = np.dtype(np.int16)
PARAM_DTYPE = np.dtype(np.float32)  # [blocks, 2, H]: centre, then scale (negative: NaNs inside)
QMAX = 32767  # codes run -QMAX..QMAX
NAN_CODE = -32768
F32_MAX = float(np.finfo(np.float32).max)
# The smallest scale: ``1 / scale`` must stay finite in float32 (below ~2.9e-39 it is inf, and a
# block of a dead gate, values ~1e-40..1e-35, would code as +-QMAX or NaN * 0). A block whose
# half-range is under QMAX * F32_TINY (~3.9e-34) is coded in steps of F32_TINY.
F32_TINY = float(np.finfo(np.float32).tiny)


def block_params(vmin, vmax) -> tuple[np.ndarray, np.ndarray]:
    """``(centre, scale)`` float32 of blocks whose finite extremes are ``vmin``/``vmax``.

    Computed in float64 from the float32 extremes (their sum and difference cannot overflow);
    the scale is rounded up so every value lies within ``QMAX`` steps of the float32 centre,
    and a non-zero scale is at least ``F32_TINY`` (so ``1 / scale`` is finite). A block with no
    value but NaNs gets centre 0 and scale 0; a constant block scale 0.
    """
    lo = np.clip(np.asarray(vmin, dtype=np.float64), -F32_MAX, F32_MAX)
    hi = np.clip(np.asarray(vmax, dtype=np.float64), -F32_MAX, F32_MAX)
    empty = ~(lo <= hi)  # NaN or inverted (no finite value)
    lo, hi = np.where(empty, 0.0, lo), np.where(empty, 0.0, hi)
    centre = ((lo + hi) / 2).astype(np.float32)
    half = np.maximum(hi - centre, centre - lo)  # float64
    scale = (half / QMAX).astype(np.float32)
    short = scale.astype(np.float64) * QMAX < half
    scale = np.where(short, np.nextafter(scale, np.float32(np.inf)), scale).astype(np.float32)
    scale = np.where(scale > 0, np.maximum(scale, np.float32(F32_TINY)), scale)
    return centre, scale.astype(np.float32)


def inverse_scale(scale):
    """float32 ``1 / scale`` (0 where the scale is 0): what codes multiply by, on every road."""
    scale = np.asarray(scale, dtype=np.float32)
    with np.errstate(divide="ignore"):
        return np.where(scale > 0, np.float32(1.0) / np.where(scale > 0, scale, 1), 0).astype(
            np.float32
        )


def encode_numpy(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference encoder of one block ``v`` ``[m, H]`` float32: ``(codes [m, H] int16,
    params [2, H] float32)``. The compiled and torch encoders give the same bits (tests)."""
    v = np.asarray(v, dtype=np.float32)
    nan = np.isnan(v)
    clamped = np.clip(v, -F32_MAX, F32_MAX)
    lo = np.where(nan, np.inf, clamped).min(0)
    hi = np.where(nan, -np.inf, clamped).max(0)
    centre, scale = block_params(lo, hi)
    with np.errstate(invalid="ignore", over="ignore"):
        y = (clamped - centre) * inverse_scale(scale)
    q = np.rint(np.clip(np.where(nan, 0, y), -QMAX, QMAX)).astype(CODE_DTYPE)
    q[nan] = NAN_CODE
    flagged = nan.any(0)
    return q, np.stack([centre, np.where(flagged, -scale, scale)]).astype(PARAM_DTYPE)


def _extremes(x, length: np.ndarray):
    """Per-stream min and max ``[B, H]`` of ``x`` ``[T, B, H]`` over each stream's real rows."""
    T = x.shape[0]
    if (length == T).all():
        return x.amin(0), x.amax(0)
    lo = x.new_full(x.shape[1:], np.inf)
    hi = x.new_full(x.shape[1:], -np.inf)
    for b in np.flatnonzero(length).tolist():  # the last chunk: streams end at different rows
        lo[b], hi[b] = x[: length[b], b].amin(0), x[: length[b], b].amax(0)
    return lo, hi


def encode_torch(v, length: np.ndarray, codes):
    """The block encoder in torch, for any device (``kernels.encode_chunk`` on CPU): ``v``
    ``[T, B, H]`` float32, ``length`` ``[B]`` real rows per stream; fills ``codes`` ``[B, T, H]``
    int16 on ``v``'s device and returns ``(params [B, 2, H] float32 numpy, decoded [T, B, H]
    float32 tensor)``: what a reader decodes, bit for bit."""
    import torch

    length = np.asarray(length)
    vc = v.clamp(-F32_MAX, F32_MAX)  # NaN stays NaN
    lo, hi = _extremes(vc, length)  # a NaN propagates into its (stream, unit)
    flagged = torch.isnan(lo)
    nanmask = None
    if bool(flagged.any()):  # rare (a diverged model): extremes without the NaNs
        nanmask = torch.isnan(vc)
        lo = _extremes(vc.masked_fill(nanmask, np.inf), length)[0]
        hi = _extremes(vc.masked_fill(nanmask, -np.inf), length)[1]
    centre, scale = block_params(lo.cpu().numpy(), hi.cpu().numpy())
    inv = torch.from_numpy(inverse_scale(scale)).to(v.device)
    y = vc.sub_(torch.from_numpy(centre).to(v.device)).mul_(inv)
    y.clamp_(-QMAX, QMAX).round_()
    if nanmask is not None:
        y.masked_fill_(nanmask, NAN_CODE)
    codes.transpose(0, 1).copy_(y)
    # Two separate operations, as the reader does them: a fused multiply-add rounds once.
    dec = y.mul_(torch.from_numpy(scale).to(v.device)).add_(torch.from_numpy(centre).to(v.device))
    if nanmask is not None:
        dec.masked_fill_(nanmask, np.nan)
    flag = flagged.cpu().numpy()
    params = np.stack([centre, np.where(flag, -scale, scale)], axis=1).astype(PARAM_DTYPE)
    return params, dec


def decode_block(codes: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 values of ``codes`` ``[..., h]`` with one block's ``centre``/``scale`` ``[h]``."""
    out = codes.astype(np.float32)
    out *= np.abs(scale)
    out += centre
    flagged = np.signbit(scale)
    if flagged.any():
        out[(codes == NAN_CODE) & flagged] = np.nan
    return out


def error_bound(value_range, max_abs) -> np.ndarray:
    """The most a decoded value can be off, for a unit of ``value_range`` (max - min over the
    store) and largest magnitude ``max_abs`` (see the module docstring)."""
    r = np.asarray(value_range, dtype=np.float64)
    a = np.asarray(max_abs, dtype=np.float64)
    scale = r / (2 * QMAX) + 2.0**-24 * a / QMAX + F32_TINY
    return 0.51 * scale + 2.0**-24 * (a + scale) + 2.0**-24 * r


def block_layout(start: np.ndarray, length: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of a recording plan: ``(starts [blocks + 1] int64, block_of [K, B] int64)``.

    ``start``/``length`` ``[K, B]`` are the plan's rows (chunk ``k``, stream ``b``); every row
    with ``length > 0`` is one block. Blocks are numbered in text order, so ``starts`` (with
    ``n`` appended) is increasing and a position's block is a binary search away; ``block_of``
    is -1 for idle rows.
    """
    real = length > 0
    flat = start[real]
    order = np.argsort(flat, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    block_of = np.full(start.shape, -1, dtype=np.int64)
    block_of[real] = rank
    starts = np.concatenate([flat[order], [n]]).astype(np.int64)
    return starts, block_of


# ----------------------------------------------------------------------------------------------
# Reading


class DecodedArray:
    """A read-only ``[N, H]`` array-like whose indexing returns float32 (numpy's rules for one
    or two indices: ints, slices, index arrays, bool masks). Subclasses decode a stored form."""

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, shape: tuple[int, int]):
        self.shape = tuple(shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        """The whole array decoded, as ``dtype`` (``np.ndarray.astype``'s meaning)."""
        return self[:, :].astype(dtype, copy=False)

    def __setitem__(self, key, value):
        raise ValueError("store arrays are read-only")

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        dots = sum(k is Ellipsis for k in key)
        if dots:  # arr[...], arr[rows, ...], arr[..., cols]
            if dots > 1 or len(key) > 2:
                raise IndexError("at most one ellipsis and two indices")
            key = tuple(slice(None) if k is Ellipsis else k for k in key)
        if len(key) > 2:
            raise IndexError(f"too many indices for a 2-dimensional array: {len(key)}")
        rows = key[0]
        cols = key[1] if len(key) == 2 else slice(None)
        if isinstance(cols, list):
            cols = np.asarray(cols)
        if isinstance(rows, list):
            rows = np.asarray(rows)
        return self._get(rows, cols)

    def _get(self, rows, cols) -> np.ndarray:
        raise NotImplementedError


class Float16Array(DecodedArray):
    """Format 1: a float16 memory map, read as float32."""

    def __init__(self, mm: np.ndarray):
        super().__init__(mm.shape)
        self.raw = mm

    def _get(self, rows, cols):
        return np.asarray(self.raw[rows, cols], dtype=np.float32)


class BlockCodedArray(DecodedArray):
    """Format 2: int16 codes ``[N, H]`` (memory-mapped), parameters ``[blocks, 2, H]`` and block
    starts ``[blocks + 1]``; each read decodes only the rows and columns asked for."""

    def __init__(self, codes: np.ndarray, params: np.ndarray, starts: np.ndarray):
        super().__init__(codes.shape)
        self.codes, self.params, self.starts = codes, params, starts

    def _get(self, rows, cols):
        n = self.shape[0]
        if isinstance(rows, slice) and rows.step in (None, 1):
            a, b, _ = rows.indices(n)
            return self._span(a, max(a, b), cols)
        codes = np.asarray(self.codes[rows, cols])
        if isinstance(rows, slice):
            idx = np.arange(n)[rows]
        else:
            idx = np.asarray(rows)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            idx = np.where(idx < 0, idx + n, idx)  # out of range already failed above
        blk = np.searchsorted(self.starts, idx, side="right") - 1
        if isinstance(cols, np.ndarray) and not isinstance(rows, slice):
            cols = cols if cols.dtype != bool else np.flatnonzero(cols)
            centre, scale = self.params[blk, 0, cols], self.params[blk, 1, cols]  # paired
        else:
            centre, scale = self.params[:, 0, cols][blk], self.params[:, 1, cols][blk]
        return decode_block(codes, centre, scale)

    def _span(self, a: int, b: int, cols) -> np.ndarray:
        """Rows ``a:b`` (contiguous): one read of the codes, one multiply-add per block."""
        codes = np.asarray(self.codes[a:b, cols])  # [m, ...]
        out = codes.astype(np.float32)
        if b <= a:
            return out
        i0 = int(np.searchsorted(self.starts, a, side="right")) - 1
        i1 = int(np.searchsorted(self.starts, b, side="left"))
        par = np.asarray(self.params[i0:i1, :, cols])  # [blocks, 2, ...]
        bounds = np.clip(self.starts[i0 : i1 + 1], a, b) - a
        if out.size < 512 * (i1 - i0):  # a few columns over many blocks: one pass, not a loop
            counts = np.diff(bounds)
            scale = np.repeat(par[:, 1], counts, axis=0)
            out *= np.abs(scale)
            out += np.repeat(par[:, 0], counts, axis=0)
            flagged = np.signbit(scale)
            if flagged.any():
                out[(codes == NAN_CODE) & flagged] = np.nan
            return out
        for j in range(i1 - i0):
            s, e = bounds[j], bounds[j + 1]
            piece = out[s:e]
            scale = par[j, 1]
            piece *= np.abs(scale)
            piece += par[j, 0]
            flagged = np.signbit(scale)
            if np.any(flagged):
                piece[(codes[s:e] == NAN_CODE) & flagged] = np.nan
        return out
