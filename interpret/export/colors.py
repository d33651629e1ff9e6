"""Colour scales for neuron activations, shared by the dashboard and the HTML export.

A :class:`Scale` maps a neuron's values to a fixed, small set of colour classes (so the export
can use one CSS class per colour instead of an inline style per character). How a value
becomes a class is the scale's *method* (:data:`SCALES`), the same in the dashboard and in the
export, and every scale carries a one-line ``description`` the legends print, so a reader
always knows which one is on:

* ``quantile`` (the default): colour = the value's rank among all of the neuron's recorded
  values, interpolated between its stored quantiles (min, 1, 5, 25, 50, 75, 95, 99 %, max).
  One outlier no longer sets the range. Signed kinds (``h c g n``) rank negatives and
  positives apart (each against zero's rank interval, so many exact zeros squeeze neither
  side), so 0 stays on the neutral middle colour and blue still means negative; a neuron of
  one sign uses half the bar, and its legend says the middle colour is its min (or max), not 0.
  When the stored quantiles cannot rank (fewer than two distinct: a saturated gate whose
  float16 statistics all read 1.0, a unit constant in float16, NaN statistics) the values
  shown are ranked instead (:func:`needs_values`; the legend says so);
* ``linear``: colour = the value itself. Signed kinds: a *diverging* scale symmetric around 0
  whose half-width is ``max(|q01|, |q99|)``; gates (``i f o r z``, values in (0, 1)): a
  *sequential* scale over [0, 1];
* ``logit`` (gates): colour = ``log(v / (1 - v))`` over 0.001 … 0.999, so a saturated gate's
  0.99 and 0.999 differ; other kinds fall back to ``quantile`` (and the legend says so);
* ``window``: like ``quantile`` but ranked among the values shown (this window / export);
* ``diff``: the change from the previous character (the window's first has none: no value);
* ``detrend``: the value minus its centred :data:`DETREND_WIDTH`-character moving mean; in the
  first and last ``DETREND_WIDTH // 2`` shown, where that mean would be cut short, minus a
  straight line fitted there (:func:`trend`), so a ramp stays flat up to the edges.
  ``diff`` and ``detrend`` show a counter's local steps whatever its magnitude; their
  diverging range is the shown values' ``max(|q01|, |q99|)`` (detrend: of those with the full
  width around them, when there are enough).

``window``, ``diff`` and ``detrend`` depend on the values shown, so they are built from them
(``scale_for(..., values=...)``) and apply to exactly those values. Values beyond the range
clip to the end classes; NaN gets its own "no value" class, numbered ``len(palette)``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from bokeh import palettes as bp

from lstmscope.names import GATE_KINDS, parse_neuron

# name -> (source palette, reverse?). Bokeh's Brewer sequential palettes run dark -> light; we
# reverse them so that "more" is always darker. Matplotlib's perceptual maps keep their usual
# orientation (low = dark).
_DIVERGING_SOURCES: dict[str, tuple[tuple[str, ...], bool]] = {
    name: (tuple(bp.brewer[name][11]), False)
    for name in ("RdBu", "PuOr", "BrBG", "PiYG", "PRGn", "RdGy", "RdYlBu")
}
_SEQUENTIAL_SOURCES: dict[str, tuple[tuple[str, ...], bool]] = {
    **{
        name: (tuple(bp.brewer[name][9]), True)
        for name in ("Greens", "Blues", "Oranges", "Purples", "Reds", "Greys")
    },
    **{name: (tuple(bp.mpl[name][256]), False) for name in ("Viridis", "Magma", "Cividis")},
}
DIVERGING_COLORMAPS: tuple[str, ...] = tuple(_DIVERGING_SOURCES)
SEQUENTIAL_COLORMAPS: tuple[str, ...] = tuple(_SEQUENTIAL_SOURCES)
COLORMAPS: tuple[str, ...] = DIVERGING_COLORMAPS + SEQUENTIAL_COLORMAPS

DEFAULT_DIVERGING = "RdBu"
# Green rather than blue for gates, so a gate's "high" is never mistaken for a cell's "negative".
DEFAULT_SEQUENTIAL = "Greens"
# Odd, so 0 is the middle class of a diverging scale; 21 classes resolve small differences
# while keeping runs of equal colour long enough for a compact export.
DEFAULT_N_COLORS = 21
NAN_COLOR = "#d9d9d9"  # shown with a hatch pattern in HTML, so it is not mistaken for "near 0"


SCALES: tuple[str, ...] = ("quantile", "linear", "logit", "window", "diff", "detrend")
DEFAULT_SCALE = "quantile"
# What the scale pickers show for each method.
SCALE_TITLES: dict[str, str] = {
    "quantile": "quantile (rank)",
    "linear": "linear (value)",
    "logit": "logit (gates)",
    "window": "window (rank here)",
    "diff": "diff (change)",
    "detrend": "detrend",
}
# Scales whose colours depend on the values shown (built from them, not from the statistics).
WINDOW_SCALES = frozenset({"window", "diff", "detrend"})
DETREND_WIDTH = 65  # characters in the centred moving mean that "detrend" subtracts
LOGIT_LIMIT = 0.999  # the logit scale spans 0.001 … 0.999 (a float16 gate reaches 0.9995)
# (statistic, probability) of the stored quantiles, the knots of the rank scales.
_RANK_KNOTS = (("min", 0.0), ("q01", 0.01), ("q05", 0.05), ("q25", 0.25), ("q50", 0.5),
               ("q75", 0.75), ("q95", 0.95), ("q99", 0.99), ("max", 1.0))  # fmt: skip


@dataclass(frozen=True)
class Scale:
    """How one neuron's values become colour classes ``0 .. len(palette) - 1``.

    The values first pass through ``transform`` (``""`` none, ``"rank"`` piecewise linear
    through ``(knots, knot_u)``, ``"logit"``, ``"diff"``, ``"detrend"``); the palette then
    spans ``[lo, hi]`` of the transformed values in equal steps."""

    palette: tuple[str, ...]  # hex colours, low -> high
    lo: float
    hi: float
    center: float
    diverging: bool
    name: str = DEFAULT_DIVERGING
    method: str = "linear"
    transform: str = ""
    knots: tuple[float, ...] = ()  # values, increasing ("rank" transform)
    knot_u: tuple[float, ...] = ()  # their positions on the colour bar, 0 … 1
    description: str = ""  # one line for the legend: which scale, and what it spans
    ticks: tuple[tuple[float, str], ...] = ()  # (position 0 … 1 along the bar, label)

    @property
    def n(self) -> int:
        return len(self.palette)

    @property
    def nan_class(self) -> int:
        return len(self.palette)

    @property
    def key(self) -> str:
        """A CSS class naming the palette (not the range): equal palettes share CSS rules, and
        different ones never collide, even across fragments on one notebook page."""
        return f"p{self.name}{self.n}-{zlib.crc32(','.join(self.palette).encode()):08x}"

    @property
    def value_range(self) -> tuple[float, float]:
        """The range of raw values the colours cover (for histograms)."""
        if self.transform == "rank" and self.knots:
            return self.knots[0], self.knots[-1]
        if self.transform == "logit":
            return 0.0, 1.0
        return self.lo, self.hi

    def edges(self) -> np.ndarray:
        """Class boundaries of the transformed values, ``[n + 1]``: class k covers
        ``[edges[k], edges[k+1])``."""
        return np.linspace(self.lo, self.hi, self.n + 1)


def palette(name: str, n: int = DEFAULT_N_COLORS) -> tuple[str, ...]:
    """``n`` colours of the named colour map, low -> high."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}: choose one of {', '.join(COLORMAPS)}")
    if n < 2:
        raise ValueError(f"a colour scale needs at least 2 colours, got {n}")
    src, reverse = {**_DIVERGING_SOURCES, **_SEQUENTIAL_SOURCES}[name]
    cols = tuple(reversed(src)) if reverse else src
    # Long perceptual maps: evenly spaced entries (exact colours); short Brewer ones: interpolate.
    out = bp.linear_palette(cols, n) if len(cols) >= n * 4 else bp.interp_palette(cols, n)
    return tuple(c.lower()[:7] for c in out)  # interp_palette may append alpha; drop it


def _stat(row: Mapping[str, Any] | None, key: str) -> float | None:
    if row is None:
        return None
    try:
        v = float(row[key])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return v if math.isfinite(v) else None


def robust_stats(values: np.ndarray) -> dict[str, float]:
    """min, max and the stored quantiles (q01 … q99) of finite values: stand-in statistics
    when the store has none."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {}
    keys = [k for k, _ in _RANK_KNOTS[1:-1]]
    qs = np.quantile(v, [p for _, p in _RANK_KNOTS[1:-1]])
    return {
        "min": float(v.min()),
        "max": float(v.max()),
        **dict(zip(keys, map(float, qs), strict=True)),
    }


def fmt_value(v: float) -> str:
    """A value for a legend: 3-4 significant digits, thousands separated, a real minus."""
    if not math.isfinite(v):
        return "no value"
    a = abs(v)
    if a >= 1000:
        s = f"{v:,.0f}"
    elif a >= 1 or a == 0:
        s = f"{v:.3g}"
    else:
        s = f"{v:.3g}" if a < 0.9 else f"{v:.4g}"  # gates: 0.9987, not 0.999
    return s.replace("-", "−")


def _rank_points(row: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, probabilities) of the stored quantiles that are known, values made
    non-decreasing (a guard against damaged stats); ties kept. None when fewer than two."""
    pts = [(v, p) for key, p in _RANK_KNOTS if (v := _stat(row, key)) is not None]
    if len(pts) < 2:
        return None
    x = np.maximum.accumulate(np.array([v for v, _ in pts]))
    return x, np.array([p for _, p in pts])


def _rank_knots(row: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, ranks) through the stored quantiles; ties share their middle rank. None when
    fewer than two distinct values are known (no statistics, a constant neuron, quantiles that
    all read the same in float16)."""
    pts = _rank_points(row)
    if pts is None:
        return None
    x, p = pts
    ux, inv = np.unique(x, return_inverse=True)
    if ux.size < 2:
        return None
    up = np.bincount(inv, weights=p) / np.bincount(inv)
    return ux, up


def _signed_ranks(
    x: np.ndarray, p: np.ndarray, raw: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Bar positions for a signed neuron: negatives by their rank among negatives onto
    [0, 0.5], positives among positives onto [0.5, 1], so 0 sits on the middle colour.

    "Among negatives" uses zero's whole rank interval ``[p_lo, p_hi]`` (from the raw, untied
    quantiles ``raw``): when many values are exactly 0 the negatives span ranks [0, p_lo] and
    the positives [p_hi, 1], not [0, mid] and [mid, 1] of zero's middle rank, which would
    squeeze each side towards its end."""
    rx, rp = raw
    if x[0] < 0 < x[-1] and 0.0 not in x:
        k = int(np.searchsorted(x, 0.0))
        p = np.insert(p, k, np.interp(0.0, x, p))
        x = np.insert(x, k, 0.0)
    if 0.0 in rx:
        p_lo, p_hi = float(rp[rx == 0.0].min()), float(rp[rx == 0.0].max())
    elif x[0] < 0 < x[-1]:
        p_lo = p_hi = float(np.interp(0.0, x, p))
    else:
        p_lo = p_hi = 0.0 if x[0] >= 0 else 1.0
    neg = 0.5 * p / p_lo if p_lo > 0 else np.zeros_like(p)
    pos = 0.5 + 0.5 * (p - p_hi) / (1 - p_hi) if p_hi < 1 else np.full_like(p, 0.5)
    u = np.where(x < 0, neg, np.where(x > 0, pos, 0.5))
    return x, np.clip(np.maximum.accumulate(u), 0.0, 1.0)


def _signed_note(x: np.ndarray) -> str:
    """What the middle colour of a signed rank scale means, honestly: 0 only when the values
    straddle it; otherwise the end of the one-sided range drawn there."""
    lo, hi = float(x[0]), float(x[-1])
    if lo < 0 < hi:
        return " (negatives and positives apart, 0 = middle)"
    if lo >= 0:
        if lo == 0:
            return " (none negative: upper half only, 0 = middle)"
        return (
            " (all positive: upper half only; the middle colour is the minimum, "
            f"{fmt_value(lo)}, not 0)"
        )
    if hi == 0:
        return " (none positive: lower half only, 0 = middle)"
    return (
        " (all negative: lower half only; the middle colour is the maximum, "
        f"{fmt_value(hi)}, not 0)"
    )


def _rank_ticks(x: np.ndarray, u: np.ndarray, row: Mapping[str, Any] | None, signed: bool):
    ticks = [(float(u[0]), fmt_value(float(x[0]))), (float(u[-1]), fmt_value(float(x[-1])))]
    if signed and x[0] < 0 < x[-1]:
        ticks.append((0.5, "0"))
    for key in ("q05", "q95", "q50"):  # in order of preference when labels crowd
        v = _stat(row, key)
        if v is not None:
            ticks.append((float(np.interp(v, x, u)), fmt_value(v)))
    return tuple(ticks)


def _range_note(row: Mapping[str, Any] | None) -> str:
    q05, q95 = _stat(row, "q05"), _stat(row, "q95")
    if q05 is None or q95 is None:
        lo, hi = _stat(row, "min"), _stat(row, "max")
        return (
            f"; min…max = {fmt_value(lo)}…{fmt_value(hi)}"
            if lo is not None and hi is not None
            else ""
        )
    return f"; 5%…95% = {fmt_value(q05)}…{fmt_value(q95)}"


def _linear(nid: str, gate: bool, row, pal, name, note: str = "") -> Scale:
    if gate:
        ticks = ((0.0, "0"), (0.5, "0.5"), (1.0, "1"))
        desc = f"{note}linear scale: colour = value, 0 … 1"
        return Scale(pal, 0.0, 1.0, 0.5, False, name, "linear", description=desc, ticks=ticks)
    q01, q99 = _stat(row, "q01"), _stat(row, "q99")
    half = max(abs(q01), abs(q99)) if q01 is not None and q99 is not None else 0.0
    why = "the larger of |1%|, |99%|; beyond it clipped"
    if half <= 0.0:
        lo, hi = _stat(row, "min"), _stat(row, "max")
        half = max(abs(lo), abs(hi)) if lo is not None and hi is not None else 0.0
        why = "the larger of |min|, |max|"
    if half <= 0.0:
        # No statistics (or a constant-zero neuron): tanh-bounded kinds live in (-1, 1), and
        # for cells that is a sensible first look too.
        half, why = 1.0, "no statistics: a default range"
    ticks = tuple((f, ("≤" if f == 0 else "≥" if f == 1 else "") + fmt_value(-half + 2 * half * f))
                  for f in (0.0, 0.25, 0.5, 0.75, 1.0))  # fmt: skip
    desc = f"{note}linear scale: colour = value, ±{fmt_value(half)} ({why})"
    return Scale(pal, -half, half, 0.0, True, name, "linear", description=desc, ticks=ticks)


def _symmetric(t: np.ndarray) -> float:
    fin = t[np.isfinite(t)]
    if fin.size == 0:
        return 1.0
    q01, q99 = np.quantile(fin, [0.01, 0.99])
    half = max(abs(float(q01)), abs(float(q99)))
    if half <= 0:
        half = float(np.abs(fin).max())
    return half if half > 0 else 1.0


def scale_for(
    neuron_id: str,
    stats_row: Mapping[str, Any] | None,
    *,
    colormap: str | None = None,
    n_colors: int | None = None,
    method: str | None = None,
    values: np.ndarray | None = None,
) -> Scale:
    """The colour scale for one neuron: ``method`` (one of :data:`SCALES`, default
    :data:`DEFAULT_SCALE`) over its statistics row (or None: a default range).

    ``stats_row`` is a row of ``store.stats`` (a pandas Series) or any mapping with ``min``,
    ``q01`` … ``q99``, ``max``. ``values`` are the values to be coloured: required by the
    scales in :data:`WINDOW_SCALES`, ignored by the others. ``colormap`` is one of
    :data:`COLORMAPS`; any map works with any kind (a sequential map on a signed neuron puts 0
    in the middle shade).
    """
    method = method or DEFAULT_SCALE
    if method not in SCALES:
        raise ValueError(f"unknown scale {method!r}: choose one of {', '.join(SCALES)}")
    kind = parse_neuron(neuron_id).kind
    gate = kind in GATE_KINDS
    if method in WINDOW_SCALES and values is None:
        raise ValueError(f"the {method} scale is built from the values shown: pass values=")
    note = ""
    if method == "logit" and not gate:
        note, method = f"logit is for gates; {neuron_id} on the ", "quantile"
    seq = gate and method not in ("diff", "detrend")
    name = colormap or (DEFAULT_SEQUENTIAL if seq else DEFAULT_DIVERGING)
    n = n_colors or DEFAULT_N_COLORS
    if not seq and n % 2 == 0:
        n += 1  # keep 0 on the neutral middle colour
    pal = palette(name, n)
    if method == "linear":
        return _linear(neuron_id, gate, stats_row, pal, name)
    if method == "logit":
        lim = math.log(LOGIT_LIMIT / (1 - LOGIT_LIMIT))
        ticks = tuple(
            (min(max((math.log(g / (1 - g)) + lim) / (2 * lim), 0.0), 1.0), f"{g:g}")
            for g in (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999)
        )
        desc = "logit scale: colour = log(v / (1 − v)), 0.001 … 0.999 (0.99 and 0.999 differ)"
        return Scale(pal, -lim, lim, 0.0, False, name, "logit", "logit", description=desc,
                     ticks=ticks)  # fmt: skip
    if method in ("diff", "detrend"):
        t = transform_values(values, method)
        fin = int(np.isfinite(t).sum())  # diff: the first character shown has no value
        core = _detrend_core(t) if method == "detrend" else t
        half = _symmetric(core)
        ticks = tuple((f, ("≤" if f == 0 else "≥" if f == 1 else "") + fmt_value(-half + 2 * half * f))
                      for f in (0.0, 0.25, 0.5, 0.75, 1.0))  # fmt: skip
        what = (
            "change from the previous character"
            if method == "diff"
            else f"value minus its {DETREND_WIDTH}-character moving mean (near the ends of "
            "the values shown: minus a straight line fitted there)"
        )
        of = f"the {fin:,} shown"
        if core is not t:
            full = int(np.isfinite(core).sum())
            of = f"the {full:,} of the {fin:,} shown with the full width around them"
        desc = (f"{'first-difference' if method == 'diff' else 'detrended'} scale: colour = "
                f"{what}, ±{fmt_value(half)} (1%/99% of {of})")  # fmt: skip
        return Scale(pal, -half, half, 0.0, True, name, method, method, description=desc,
                     ticks=ticks)  # fmt: skip
    # quantile / window: ranks
    row = stats_row if method == "quantile" else robust_stats(values)
    knots = _rank_knots(row)
    fallback = ""
    if knots is None and method == "quantile" and values is not None:
        # The stored quantiles cannot rank anything: rank among the values shown instead (the
        # dashboard passes them too, see needs_values), and say so.
        shown = robust_stats(values)
        if (shown_knots := _rank_knots(shown)) is not None:
            fallback = f"{_why_no_knots(neuron_id, row)}, so a "
            row, knots = shown, shown_knots
    if knots is None:
        why = _why_no_knots(neuron_id, row)
        return _linear(neuron_id, gate, row, pal, name, f"{note}{why}, so a ")
    x, u = knots
    if not seq:
        x, u = _signed_ranks(x, u, _rank_points(row))
    among = (f"all of {neuron_id}'s values" if method == "quantile" and not fallback
             else f"the {int(np.isfinite(np.asarray(values, float)).sum()):,} values shown")  # fmt: skip
    split = "" if seq else _signed_note(x)
    desc = f"{note}{fallback}{method} scale: colour = rank among {among}{split}{_range_note(row)}"
    return Scale(
        pal, 0.0, 1.0, 0.5 if not seq else 0.0, not seq, name, method, "rank",
        tuple(map(float, x)), tuple(map(float, u)), desc, _rank_ticks(x, u, row, not seq),
    )  # fmt: skip


def whole_neuron_scale(method: str | None) -> str:
    """The scale a view of a neuron's whole distribution uses (a card: its histogram and
    far-apart contexts) for the text's ``method``: a scale built from the values shown
    (:data:`WINDOW_SCALES`) means nothing there, so it becomes the default."""
    method = method or DEFAULT_SCALE
    return DEFAULT_SCALE if method in WINDOW_SCALES else method


def _why_no_knots(neuron_id: str, row: Mapping[str, Any] | None) -> str:
    known = {v for key, _ in _RANK_KNOTS if (v := _stat(row, key)) is not None}
    if not known:
        return "no quantiles (no statistics)"
    if len(known) == 1:
        return f"no quantiles ({neuron_id}'s stored quantiles all read {fmt_value(known.pop())})"
    return "no quantiles (constant values)"


def needs_values(neuron_id: str, stats_row: Mapping[str, Any] | None, method: str | None) -> bool:
    """Whether :func:`scale_for` builds this scale from the values shown: the window scales,
    and ``quantile`` (or ``logit`` on a non-gate) when the stored quantiles cannot rank (fewer
    than two distinct ones). The dashboard and the export pass the values shown exactly when
    this is true (the export always does: scale_for ignores them otherwise), so both colour a
    window alike."""
    method = method or DEFAULT_SCALE
    if method in WINDOW_SCALES:
        return True
    if method == "logit" and parse_neuron(neuron_id).kind not in GATE_KINDS:
        method = "quantile"
    return method == "quantile" and _rank_knots(stats_row) is None


def _detrend_core(t: np.ndarray) -> np.ndarray:
    """The detrended values with the full :data:`DETREND_WIDTH` around them (the ends, where
    the trend is a one-sided fit, do not set the range), or all when too few have it."""
    h = DETREND_WIDTH // 2
    core = t[h : t.size - h]
    return core if np.isfinite(core).sum() >= DETREND_WIDTH else t


def transform_values(values: np.ndarray, transform: str, scale: Scale | None = None) -> np.ndarray:
    """``values`` as the scale's colour bar measures them (float64)."""
    v = np.asarray(values, dtype=np.float64)
    if transform in ("", "linear"):
        return v
    if transform == "rank":
        if scale is None:
            raise ValueError("the rank transform needs the scale's knots")
        return np.interp(v, scale.knots, scale.knot_u)
    if transform == "logit":
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.clip(v, 1e-7, 1 - 1e-7)
            return np.where(np.isnan(v), np.nan, np.log(c) - np.log1p(-c))
    if transform == "diff":
        out = np.empty_like(v)
        out[:1] = np.nan  # the first character shown has no previous one
        np.subtract(v[1:], v[:-1], out=out[1:])
        return out
    if transform == "detrend":
        return v - trend(v, DETREND_WIDTH)
    raise ValueError(f"unknown transform {transform!r}")


def moving_mean(v: np.ndarray, width: int) -> np.ndarray:
    """Centred mean over ``width`` values (fewer at the ends; NaNs skipped)."""
    v = np.asarray(v, dtype=np.float64)
    ok = np.isfinite(v)
    csum = np.concatenate(([0.0], np.cumsum(np.where(ok, v, 0.0))))
    ccnt = np.concatenate(([0], np.cumsum(ok)))
    i = np.arange(v.size)
    a = np.maximum(i - width // 2, 0)
    b = np.minimum(i + width // 2 + 1, v.size)
    cnt = ccnt[b] - ccnt[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (csum[b] - csum[a]) / np.maximum(cnt, 1), np.nan)


def trend(v: np.ndarray, width: int = DETREND_WIDTH) -> np.ndarray:
    """What ``detrend`` subtracts: the centred mean over ``width`` values where they all lie
    in ``v``; in the first and last ``width // 2``, where the window would be cut short, the
    value at that position of a straight line fitted (least squares) to the values the cut
    window holds. A ramp's trend is the ramp itself up to the ends, so a counter detrends to
    its local structure everywhere, not to ∓width/4 steps at the edges (NaNs skipped)."""
    v = np.asarray(v, dtype=np.float64)
    out = moving_mean(v, width)
    h, n = width // 2, v.size
    for i in sorted(set(range(min(h, n))) | set(range(max(n - h, 0), n))):
        a, b = max(i - h, 0), min(i + h + 1, n)
        seg = v[a:b]
        ok = np.isfinite(seg)
        if ok.sum() < 2:
            continue  # the moving mean (or NaN) stands
        x = np.arange(a - i, b - i, dtype=np.float64)[ok]
        y = seg[ok]
        xm, ym = x.mean(), y.mean()
        sxx = float(((x - xm) ** 2).sum())
        slope = float(((x - xm) * (y - ym)).sum()) / sxx if sxx > 0 else 0.0
        out[i] = ym - slope * xm  # the line at offset 0 (position i)
    return out


def quantize(values: np.ndarray, scale: Scale) -> np.ndarray:
    """Colour class of each value: ints in ``0 .. n-1``, NaN -> ``scale.nan_class``.

    For the pointwise scales (linear, quantile, window, logit) monotone non-decreasing in the
    value (each step is monotone in IEEE arithmetic); values beyond the range clip to the ends.
    ``diff`` and ``detrend`` read neighbours: pass the values the scale was built for.
    """
    v = transform_values(values, scale.transform, scale)
    n = scale.n
    width = scale.hi - scale.lo
    k = n / width if width > 0 else 0.0
    with np.errstate(invalid="ignore"):
        t = np.clip((v - scale.lo) * k, 0.0, n - 1)  # clip before the int cast: inf is safe
    out = np.floor(np.nan_to_num(t, nan=0.0)).astype(np.int16)
    out[np.isnan(v)] = scale.nan_class
    return out


def legend_ticks(
    scale: Scale, bar_px: float, char_px: float = 6.5, gap_px: float = 6.0
) -> list[tuple[float, str, str]]:
    """The scale's tick labels that fit under a bar ``bar_px`` wide without overlapping:
    ``(x in px from the bar's left, label, anchor)`` with anchor ``start``/``middle``/``end``
    (the ends keep inside the bar). Ends first, then the others in order; a label that would
    touch a kept one is dropped."""
    kept: list[tuple[float, float, float, str, str]] = []  # (left, right, x, label, anchor)
    ticks = sorted(scale.ticks, key=lambda t: 0 if t[0] in (0.0, 1.0) else 1)
    for f, label in ticks:
        w = len(label) * char_px
        x = f * bar_px
        anchor = "start" if f <= 0.0 else "end" if f >= 1.0 else "middle"
        left = x if anchor == "start" else x - w if anchor == "end" else x - w / 2
        left = min(max(left, 0.0), max(bar_px - w, 0.0))
        right = left + w
        if any(left < r + gap_px and l < right + gap_px for l, r, *_ in kept):  # noqa: E741
            continue
        kept.append((left, right, x, label, anchor))
    return [(x, label, anchor) for _, _, x, label, anchor in sorted(kept)]


def _luminance(hex_color: str) -> float:
    """WCAG relative luminance of ``#rrggbb``."""
    rgb = [int(hex_color[i : i + 2], 16) / 255.0 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def text_color(background: str) -> str:
    """Black or white, whichever contrasts more with ``background`` (WCAG contrast ratio)."""
    lum = _luminance(background)
    on_black = (lum + 0.05) / 0.05
    on_white = 1.05 / (lum + 0.05)
    return "#000000" if on_black >= on_white else "#ffffff"


def text_colors(pal: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(text_color(c) for c in pal)
