"""Where a neuron fires: its top and bottom positions and samples from across its distribution.

Top and bottom activations alone mislead (they show the extremes, not what the neuron does most
of the time), so as in OpenAI's neuron viewer we also sample positions from activation
quantiles. Every example is a window of ``width`` characters either side of the position, and
the examples are **deduplicated**: a position is skipped when its window overlaps an example
already chosen or it lies on the same line as one, so a long URL or a long string does not fill
the list with ten views of the same place.

Three ways in, one place, whoever shows the contexts (the dashboard's card, the export's card):

- :func:`contexts` — from a store: one pass over the neuron's column, cold positions left out,
  quantile samples, deduplicated by window and line.
- :func:`contexts_from_positions` — from positions already ranked (the top and bottom positions
  the recording stored): reads no column, so it is instant.
- :func:`contexts_from_values` — from a bare array of values (no store: no lines, no cold
  positions); :func:`stats_from_values` gives the statistics a card shows from the same array.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lstmscope.analysis import store_cache
from lstmscope.analysis.rank import used_rows

log = logging.getLogger(__name__)

COLUMNS = ("group", "position", "value", "start", "stop", "text")
QUANTILE_BAND = 0.02  # a quantile sample is drawn from positions within +-2 percentiles of it


def line_ids(store) -> np.ndarray:
    """int64 ``[N]``: the line number of every position (a ``\\n`` belongs to the line it ends);
    cached per store."""
    cache = store_cache(store)
    if "line_ids" not in cache:
        text = store.text
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        nl = codes == 10
        ids = np.cumsum(nl, dtype=np.int64)
        ids -= nl  # the newline itself stays on the line it ends
        cache["line_ids"] = ids
    return cache["line_ids"]


def window(position: int, width: int, n: int) -> tuple[int, int]:
    """``[start, stop)`` of the example at ``position``: ``width`` characters either side,
    clipped to a text of ``n`` characters."""
    return max(0, position - width), min(n, position + width + 1)


def spaced(positions: Sequence[int] | np.ndarray, k: int, gap: int) -> list[int]:
    """Indices of the first ``k`` of ``positions`` (best first) that lie more than ``gap`` from
    every one taken before: neighbouring peaks are one place. Negative positions (padding) are
    skipped."""
    taken: list[int] = []
    chosen: list[int] = []
    if k < 1:
        return chosen
    for i, p in enumerate(positions):
        p = int(p)
        if p < 0 or any(abs(p - c) <= gap for c in taken):
            continue
        taken.append(p)
        chosen.append(i)
        if len(chosen) == k:
            break
    return chosen


class _Picker:
    """Accepts positions whose window overlaps no chosen window and whose line is new."""

    def __init__(self, n: int, width: int, lines: np.ndarray):
        self.n, self.width, self.lines = n, width, lines
        self.chosen: list[int] = []
        self.used_lines: set[int] = set()

    def window(self, p: int) -> tuple[int, int]:
        return window(p, self.width, self.n)

    def ok(self, p: int) -> bool:
        if int(self.lines[p]) in self.used_lines:
            return False
        # Two windows of half-width w overlap when their centres are within 2w of each other.
        return all(abs(p - c) > 2 * self.width for c in self.chosen)

    def take(self, p: int) -> None:
        self.chosen.append(p)
        self.used_lines.add(int(self.lines[p]))

    def pick(self, candidates: np.ndarray, k: int) -> list[int]:
        out: list[int] = []
        if k == 0 or len(candidates) == 0:
            return out
        # Keep each line's first candidate (vectorised): the loop below then sees at most one
        # candidate per line instead of, say, every character of a 300-character URL.
        _, first = np.unique(self.lines[candidates], return_index=True)
        for p in candidates[np.sort(first)]:
            if len(out) >= k:
                break
            p = int(p)
            if self.ok(p):
                self.take(p)
                out.append(p)
        return out


def contexts(
    store,
    neuron: str,
    *,
    k: int = 8,
    width: int = 40,
    quantiles: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    per_quantile: int = 2,
    seed: int = 0,
    include_cold: bool = False,
) -> pd.DataFrame:
    """Examples of ``neuron``: ``k`` highest (``group="top"``), ``k`` lowest (``"bottom"``) and
    ``per_quantile`` sampled near each quantile (``"q0.50"``), best first within a group.

    Columns ``group position value start stop text``: ``text`` is ``store.text[start:stop]``,
    the window of ``width`` characters either side of ``position``. No two examples overlap or
    share a line (a group may come back shorter than asked when the text is short). Cold
    positions are left out unless ``include_cold``. Quantile samples are drawn (seeded) from the
    positions whose rank lies within ``QUANTILE_BAND`` of the quantile.
    """
    nrn = store.resolve(neuron)
    if k < 0 or per_quantile < 0 or width < 0:
        raise ValueError("k, per_quantile and width must be >= 0")
    bad = [q for q in quantiles if not 0.0 <= float(q) <= 1.0]
    if bad:
        raise ValueError(f"quantiles must lie in [0, 1], got {bad}")
    n = store.n
    use = used_rows(store, include_cold)
    values = store.neuron(nrn)  # [N] float32: one pass over the column
    rows = np.flatnonzero(use & np.isfinite(values))
    picker = _Picker(n, width, line_ids(store))
    if len(rows) == 0:
        return pd.DataFrame({c: [] for c in COLUMNS})
    # One stable sort serves top, bottom and quantiles; ties keep text order.
    order = rows[np.argsort(values[rows], kind="stable")]  # ascending
    picked: list[tuple[str, int]] = []
    picked += [("top", p) for p in picker.pick(order[::-1], k)]
    picked += [("bottom", p) for p in picker.pick(order, k)]
    rng = np.random.default_rng(seed)
    m = len(order)
    for q in quantiles:
        lo = int(np.floor(max(0.0, q - QUANTILE_BAND) * (m - 1)))
        hi = int(np.ceil(min(1.0, q + QUANTILE_BAND) * (m - 1))) + 1
        band = order[lo:hi]
        # Closest to the quantile first would sample one place; a seeded shuffle spreads them.
        cands = band[rng.permutation(len(band))]
        picked += [(f"q{q:.2f}", p) for p in picker.pick(cands, per_quantile)]
    text = store.text
    recs = []
    for group, p in picked:
        s, e = picker.window(p)
        recs.append(
            {"group": group, "position": p, "value": float(values[p]), "start": s, "stop": e,
             "text": text[s:e]}
        )  # fmt: skip
    df = pd.DataFrame.from_records(recs, columns=list(COLUMNS))
    df.attrs.update(neuron=str(nrn), width=width)
    return df


def contexts_from_positions(
    text: str,
    ranked: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    k: int = 6,
    width: int = 24,
) -> pd.DataFrame:
    """Contexts from positions already ranked, best first: ``ranked`` maps a group to its
    ``(positions, values)``, e.g. ``{"top": (top_pos[u], top_val[u]), "bottom": (...)}`` from
    ``store.stat_arrays(layer, kind)`` (the positions the recording stored; -1 pads a short
    text). Per group the first ``k`` positions more than ``width`` apart (:func:`spaced`), each
    a window of ``width`` characters either side. Reads no column, so it is instant. Columns as
    :func:`contexts`."""
    n = len(text)
    rows = []
    for group, (positions, values) in ranked.items():
        for i in spaced(positions, k, width):
            p = int(positions[i])
            s, e = window(p, width, n)
            rows.append(
                {"group": group, "position": p, "value": float(values[i]), "start": s, "stop": e,
                 "text": text[s:e]}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS))


def contexts_from_values(
    values: np.ndarray,
    *,
    k: int = 8,
    context: int = 40,
    quantiles: Sequence[float] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99),
) -> list[dict]:
    """Top-k, bottom-k and quantile-sampled positions of one neuron's ``values [N]``, when there
    is no store to ask (no lines, no cold positions): what the export's card shows by default.

    A dict per example: ``group`` (``top``, ``bottom``, ``quantile`` with a ``label`` such as
    ``q05``), ``start stop position value``; ``context`` is the half-width of the window. Peaks
    ``context`` characters or closer to an already chosen one of their group are skipped
    (:func:`spaced`), so the k contexts are k different places. Empty without finite values.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    finite = np.flatnonzero(np.isfinite(v))
    if finite.size == 0:
        return []
    order = finite[np.argsort(v[finite], kind="stable")]  # ascending
    out: list[dict] = []
    for group, cands in (("top", order[::-1]), ("bottom", order)):
        for p in cands[spaced(cands, k, context)].tolist():
            s, e = window(p, context, n)
            out.append({"group": group, "start": s, "stop": e, "position": p, "value": v[p]})
    for q in quantiles:
        p = int(order[round(q * (order.size - 1))])
        s, e = window(p, context, n)
        out.append(
            {"group": "quantile", "label": f"q{round(q * 100):02d}", "start": s, "stop": e,
             "position": p, "value": v[p]}
        )  # fmt: skip
    return out


def stats_from_values(values: np.ndarray) -> dict[str, float]:
    """The statistics a card shows (mean, std, min, quantiles q01..q99, max), computed from
    ``values [N]`` when the store has none; empty without finite values."""
    v = np.asarray(values, dtype=np.float64)
    fin = v[np.isfinite(v)]
    if fin.size == 0:
        return {}
    qs = np.quantile(fin, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    out = {"mean": float(fin.mean()), "std": float(fin.std()), "min": float(fin.min())}
    out.update({f"q{p:02d}": float(x) for p, x in zip((1, 5, 25, 50, 75, 95, 99), qs, strict=True)})
    out["max"] = float(fin.max())
    return out
