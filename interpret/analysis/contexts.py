"""Where a neuron fires: its top and bottom positions and samples from across its distribution.

Top and bottom activations alone mislead (they show the extremes, not what the neuron does most
of the time), so as in OpenAI's neuron viewer we also sample positions from activation
quantiles. Every example is a window of ``width`` characters either side of the position, and
the examples are **deduplicated**: a position is skipped when its window overlaps an example
already chosen or it lies on the same line as one, so a long URL or a long string does not fill
the list with ten views of the same place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

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


class _Picker:
    """Accepts positions whose window overlaps no chosen window and whose line is new."""

    def __init__(self, n: int, width: int, lines: np.ndarray):
        self.n, self.width, self.lines = n, width, lines
        self.chosen: list[int] = []
        self.used_lines: set[int] = set()

    def window(self, p: int) -> tuple[int, int]:
        return max(0, p - self.width), min(self.n, p + self.width + 1)

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
