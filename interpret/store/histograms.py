"""The histogram grid of the store's statistics: one fixed grid per kind.

Histograms use one fixed grid per kind, the same for every neuron, so counts of any subset of
rows (the rows where a feature is on) can be binned identically and subtracted from the whole
column's counts, e.g. for an AUROC. A bin is a half-open range ``[e_k, e_{k+1})`` of float16
values (the last bin is closed). Gates ``i f o r z``: 1000 bins on [0, 1], so the saturation
thresholds 0.1 and 0.9 fall on bin edges. ``h g n``: 1024 bins on [-1, 1]. The cell state ``c``
is unbounded (trained models reach the hundreds, most values stay near 0): its bins follow the
float16 number line itself, 32 per octave (the sign, the exponent and the top 5 mantissa bits),
from -65504 to 65504, i.e. 2% relative resolution at every magnitude, no first pass, no
re-binning; values beyond are counted in the end bins (quantiles there reach out to the
neuron's true min and max). Values are rounded to float16 before binning (``bin_index``), by the recorder
(from float32) and by readers (from decoded float32) alike; the grids only need float16's
resolution, whatever encoding the store keeps the activations in.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from lstmscope.names import GATE_KINDS

F16_MAX = 65504.0


def hist_family(kind: str) -> str:
    if kind in GATE_KINDS:
        return "gate"
    if kind == "c":
        return "f16"
    return "tanh"


def _f16_key_value(keys: np.ndarray) -> np.ndarray:
    """The float16 value with order key ``keys`` (key order = numeric order, -0 folded to +0)."""
    keys = np.asarray(keys, dtype=np.int64)
    pos = keys >= 0x8000
    bits = np.where(pos, keys - 0x8000, 0x8000 - keys).astype(np.uint16)
    mag = bits.view(np.float16).astype(np.float64)
    return np.where(pos, mag, -mag)


@cache
def hist_edges(kind: str) -> np.ndarray:
    """Bin edges ``[bins + 1]`` float64 for a kind (see the module docstring)."""
    fam = hist_family(kind)
    if fam == "gate":
        edges = np.arange(1001, dtype=np.float64) / 1000.0
    elif fam == "tanh":
        edges = np.arange(-512, 513, dtype=np.float64) / 512.0
    else:
        # Keys 1056 .. 64480 step 32: every 32 consecutive float16 values (same sign and
        # exponent, same top 5 mantissa bits) form one bin. The outer edges are the float16 range.
        keys = np.arange(33 * 32, 2016 * 32, 32)
        edges = np.concatenate([[-F16_MAX], _f16_key_value(keys), [F16_MAX]])
    edges.setflags(write=False)
    return edges


@cache
def hist_lut(kind: str) -> np.ndarray:
    """``[65536]`` int32: the bin of each float16 bit pattern (as uint16) for this kind."""
    values = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float64)
    edges = hist_edges(kind)
    lut = np.searchsorted(edges, values, side="right") - 1
    lut = np.clip(lut, 0, len(edges) - 2).astype(np.int32)  # NaN, inf and 1.0 -> end bins
    lut.setflags(write=False)
    return lut


def bin_index(values, kind: str) -> np.ndarray:
    """Bins of ``values`` (rounded to float16 first, as the recorder bins them), same grid as
    stats. Values beyond float16's range (a cell state past 65,504) count in the end bins."""
    a = np.asarray(values)
    if a.dtype.kind in "fiu" and a.dtype != np.float16:  # no overflow warning: clamped
        a = np.clip(a, -F16_MAX, F16_MAX)
    v16 = np.asarray(a, dtype=np.float16)
    return hist_lut(kind)[v16.view(np.uint16)]


def histogram(values, kind: str) -> np.ndarray:
    """Counts ``[bins]`` of a 1-D array of one neuron's values, on the store's grid."""
    return np.bincount(bin_index(np.ravel(values), kind), minlength=len(hist_edges(kind)) - 1)


def hist_quantiles(
    counts: np.ndarray, edges: np.ndarray, qs, vmin: np.ndarray, vmax: np.ndarray
) -> np.ndarray:
    """Quantiles ``[len(qs), H]`` from counts ``[H, bins]``, linear within a bin.

    A bin's range is narrowed to the neuron's exact min and max, so a quantile never falls
    outside the data and one-bin distributions come out exact. The end bins also hold what
    lies beyond the grid (a cell state past float16's 65,504 is binned clamped): their ranges
    reach out to the true min and max, so quantiles there interpolate up to them instead of
    stopping at the grid's edge.
    """
    counts = np.asarray(counts, dtype=np.float64)
    H, nb = counts.shape
    total = counts.sum(axis=1)  # [H]
    cum = np.cumsum(counts, axis=1)  # [H, nb]
    out = np.full((len(qs), H), np.nan)
    rows = np.arange(H)
    for qi, q in enumerate(qs):
        target = q * total  # [H]
        j = np.minimum((cum < target[:, None]).sum(axis=1), nb - 1)  # first bin reaching target
        before = np.where(j > 0, cum[rows, np.maximum(j - 1, 0)], 0.0)
        inside = counts[rows, j]
        frac = np.where(inside > 0, (target - before) / np.where(inside > 0, inside, 1), 0.0)
        lo_edge = np.where(j == 0, np.minimum(edges[0], vmin), edges[j])
        hi_edge = np.where(j == nb - 1, np.maximum(edges[-1], vmax), edges[j + 1])
        lo = np.maximum(lo_edge, vmin)
        hi = np.minimum(hi_edge, vmax)
        hi = np.maximum(hi, lo)
        out[qi] = np.where(total > 0, lo + np.clip(frac, 0, 1) * (hi - lo), np.nan)
    return out
