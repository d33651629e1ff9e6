"""Colour scales for neuron activations, shared by the dashboard and the HTML export.

A :class:`Scale` maps a neuron's values to a fixed, small set of colour classes (so the export
can use one CSS class per colour instead of an inline style per character):

* signed kinds (``h c g n``) get a *diverging* scale symmetric around 0, with an odd number of
  colours so that 0 falls in the neutral middle class; its half-width is robust to outliers:
  ``max(|q01|, |q99|)`` from the neuron's statistics;
* gates (``i f o r z``, values in (0, 1)) get a *sequential* scale over the fixed range [0, 1],
  so saturation (the interesting property of a gate) looks the same for every gate.

Values outside ``[lo, hi]`` are clipped to the end classes; NaN gets its own "no value" class,
numbered ``len(palette)``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from bokeh import palettes as bp

from interpret.names import GATE_KINDS, parse_neuron

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


@dataclass(frozen=True)
class Scale:
    """How one neuron's values become colour classes ``0 .. len(palette) - 1``."""

    palette: tuple[str, ...]  # hex colours, low -> high
    lo: float
    hi: float
    center: float
    diverging: bool
    name: str = DEFAULT_DIVERGING

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

    def edges(self) -> np.ndarray:
        """Class boundaries, ``[n + 1]``: class k covers ``[edges[k], edges[k+1])``."""
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
    """min/max/q01/q99 of finite values: stand-in statistics when the store has none."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {}
    q01, q99 = np.quantile(v, [0.01, 0.99])
    return {"min": float(v.min()), "max": float(v.max()), "q01": float(q01), "q99": float(q99)}


def scale_for(
    neuron_id: str,
    stats_row: Mapping[str, Any] | None,
    *,
    colormap: str | None = None,
    n_colors: int | None = None,
) -> Scale:
    """The colour scale for one neuron, from its statistics row (or None: a default range).

    ``stats_row`` is a row of ``store.stats`` (a pandas Series) or any mapping with ``q01``,
    ``q99`` (preferred) or ``min``, ``max``. ``colormap`` is one of :data:`COLORMAPS`; any map
    works with any kind (a sequential map on a signed neuron puts 0 in the middle shade).
    """
    kind = parse_neuron(neuron_id).kind
    gate = kind in GATE_KINDS
    name = colormap or (DEFAULT_SEQUENTIAL if gate else DEFAULT_DIVERGING)
    n = n_colors or DEFAULT_N_COLORS
    if not gate and n % 2 == 0:
        n += 1  # keep 0 on the neutral middle colour
    pal = palette(name, n)
    if gate:
        return Scale(pal, 0.0, 1.0, 0.5, diverging=False, name=name)
    q01, q99 = _stat(stats_row, "q01"), _stat(stats_row, "q99")
    half = max(abs(q01), abs(q99)) if q01 is not None and q99 is not None else 0.0
    if half <= 0.0:
        lo, hi = _stat(stats_row, "min"), _stat(stats_row, "max")
        half = max(abs(lo), abs(hi)) if lo is not None and hi is not None else 0.0
    if half <= 0.0:
        # No statistics (or a constant-zero neuron): tanh-bounded kinds live in (-1, 1), and
        # for cells that is a sensible first look too.
        half = 1.0
    return Scale(pal, -half, half, 0.0, diverging=True, name=name)


def quantize(values: np.ndarray, scale: Scale) -> np.ndarray:
    """Colour class of each value: ints in ``0 .. n-1``, NaN -> ``scale.nan_class``.

    Monotone non-decreasing in the value (subtracting and multiplying by a positive constant
    and ``floor`` are all monotone in IEEE arithmetic); values beyond the range clip to the ends.
    """
    v = np.asarray(values, dtype=np.float64)
    n = scale.n
    width = scale.hi - scale.lo
    k = n / width if width > 0 else 0.0
    with np.errstate(invalid="ignore"):
        t = np.clip((v - scale.lo) * k, 0.0, n - 1)  # clip before the int cast: inf is safe
    out = np.floor(np.nan_to_num(t, nan=0.0)).astype(np.int16)
    out[np.isnan(v)] = scale.nan_class
    return out


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
