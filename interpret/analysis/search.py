"""Select a span, find the neurons that mark it, find the other spans they mark (LSTMVis).

LSTMVis (Strobelt et al. 2018) asks the user for a span and one threshold, keeps the cells that
are above the threshold over the whole span and below it just outside, then lists other places
with exactly that on/off signature, in a prefix of the corpus. Here:

- **Thresholds are suggested per neuron** (:func:`suggest_threshold`): Otsu's threshold on the
  neuron's histogram from the store's statistics, i.e. the cut that best splits its values into
  two groups (between-group variance largest). A switch-like cell gets the valley between its two
  modes; nobody has to guess one number that suits a gate in (0, 1) and a cell state in the
  tens. A single number or a per-neuron mapping still overrides it.
- **Either polarity**: a neuron is "on" when above its threshold, or, with ``sign = -1``, when
  below it (cells that switch off inside a span are as telling).
- **Tolerance, not an exact signature**: a neuron is selected by the fraction of the span where
  it is on and the fraction of the margins where it is on, ``score = inside - outside``; with
  ``tolerance=0.1`` it passes when on at >= 90% of the span and <= 10% of the margins. Matching
  likewise accepts positions where at least ``1 - tolerance`` of the neuron set is on.
- **The whole corpus** is matched, read in chunks, not a prefix of it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lstmscope.analysis import store_cache
from lstmscope.analysis.rank import CHUNK_ROWS, selection

log = logging.getLogger(__name__)

SELECT_COLUMNS = (
    "neuron", "score", "frac_on_inside", "frac_on_outside", "threshold", "sign", "passes",
    "layer", "kind", "unit",
)  # fmt: skip
MATCH_COLUMNS = ("start", "stop", "length", "overlap", "score", "text")
DEFAULT_MARGIN = (5, 100)  # the margin defaults to the span's length, clipped to this range


# ----------------------------------------------------------------------------------------------
# Thresholds


def otsu_thresholds(counts: np.ndarray, edges: np.ndarray, vmin, vmax) -> np.ndarray:
    """Otsu's threshold ``[H]`` of each row of histogram ``counts`` ``[H, bins]``.

    The threshold is a bin edge: values ``>= t`` form the upper group. Bin centres are clipped
    to each neuron's ``[vmin, vmax]`` (the cell-state grid's outer bins reach +-65504).
    """
    counts = np.asarray(counts, dtype=np.float64)
    vmin = np.asarray(vmin, dtype=np.float64)[:, None]
    vmax = np.asarray(vmax, dtype=np.float64)[:, None]
    centres = np.clip(0.5 * (edges[:-1] + edges[1:])[None, :], vmin, vmax)  # [H, bins]
    total = counts.sum(1, keepdims=True)
    p = counts / np.maximum(total, 1)
    w0 = np.cumsum(p, axis=1)[:, :-1]  # weight of the lower group if cut after bin k
    m0 = np.cumsum(p * centres, axis=1)[:, :-1]
    mt = (p * centres).sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * (1.0 - w0))
    between = np.where((w0 > 0) & (w0 < 1), between, -1.0)
    k = between.argmax(1)
    t = edges[k + 1]
    degenerate = between.max(1) <= 0  # all values in one bin: no split, use the middle
    mid = 0.5 * (vmin[:, 0] + vmax[:, 0])
    t = np.where(degenerate, mid, t)
    return np.clip(t, vmin[:, 0], vmax[:, 0])


def suggested_thresholds(store, layer: int, kind: str) -> np.ndarray:
    """Suggested thresholds ``[H]`` of one layer and kind (cached per store)."""
    cache = store_cache(store).setdefault("thresholds", {})
    key = (int(layer), kind)
    if key not in cache:
        st = store.stat_arrays(layer, kind)
        cache[key] = otsu_thresholds(st["hist_counts"], st["hist_edges"], st["min"], st["max"])
    return cache[key]


def suggest_threshold(store, neuron: str) -> float:
    """A threshold that splits ``neuron``'s values into "off" and "on" (Otsu on its histogram)."""
    nrn = store.resolve(neuron)
    return float(suggested_thresholds(store, nrn.layer, nrn.kind)[nrn.unit])


def _thresholds_for(store, layer: int, kind: str, threshold) -> np.ndarray:
    H = store.hidden_size
    if threshold is None:
        return suggested_thresholds(store, layer, kind)
    if isinstance(threshold, Mapping):
        t = suggested_thresholds(store, layer, kind).copy()
        for u in range(H):
            v = threshold.get(f"L{layer}.{kind}.{u}")
            if v is not None:
                t[u] = float(v)
        return t
    return np.full(H, float(threshold))


# ----------------------------------------------------------------------------------------------
# Select


def select_neurons(
    store,
    start: int,
    stop: int,
    *,
    margin: int | None = None,
    threshold: float | Mapping[str, float] | None = None,
    tolerance: float = 0.1,
    top: int = 20,
    layers: int | Sequence[int] | None = None,
    kinds: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Neurons that are on inside ``[start, stop)`` and off in the ``margin`` characters either
    side, best first.

    Columns ``neuron score frac_on_inside frac_on_outside threshold sign passes layer kind
    unit``: ``score = frac_on_inside - frac_on_outside`` in the neuron's better polarity
    (``sign``: +1 on above the threshold, -1 on below it); ``passes`` when on at >= ``1 -
    tolerance`` of the span and <= ``tolerance`` of the margins. Passing neurons come first,
    then near misses by score, ``top`` rows in all. ``threshold``: None (each neuron's
    :func:`suggest_threshold`), one number, or ``{neuron: value}``. ``margin`` defaults to the
    span's length, clipped to 5..100. ``df.attrs`` keeps ``span`` and ``margin`` for
    :func:`match_spans`.
    """
    n = store.n
    start, stop = int(start), int(stop)
    if not 0 <= start < stop <= n:
        raise ValueError(f"span [{start}, {stop}) is not a non-empty range inside [0, {n})")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    if margin is None:
        margin = int(np.clip(stop - start, *DEFAULT_MARGIN))
    margin = int(margin)
    if margin < 1:
        raise ValueError(f"margin must be >= 1, got {margin}")
    a, b = max(0, start - margin), min(n, stop + margin)
    if a == start and b == stop:
        raise ValueError("the span covers the whole text: there is no outside to compare with")
    inside = np.zeros(b - a, dtype=bool)
    inside[start - a : stop - a] = True
    frames = []
    for li, kind in selection(store, layers, kinds):
        w = np.asarray(store.array(li, kind)[a:b], dtype=np.float32)  # [b - a, H]
        t = _thresholds_for(store, li, kind, threshold)
        on = w >= t[None, :]
        f_in = on[inside].mean(0)
        f_out = on[~inside].mean(0)
        sign = np.where(f_in >= f_out, 1, -1)
        # The other polarity is "below the threshold": its fractions are the complements.
        f_in = np.where(sign > 0, f_in, 1.0 - f_in)
        f_out = np.where(sign > 0, f_out, 1.0 - f_out)
        H = store.hidden_size
        frames.append(
            pd.DataFrame(
                {
                    "neuron": [f"L{li}.{kind}.{u}" for u in range(H)],
                    "score": f_in - f_out,
                    "frac_on_inside": f_in,
                    "frac_on_outside": f_out,
                    "threshold": t,
                    "sign": sign.astype(np.int64),
                    "passes": (f_in >= 1.0 - tolerance - 1e-12) & (f_out <= tolerance + 1e-12),
                    "layer": np.full(H, li, dtype=np.int64),
                    "kind": kind,
                    "unit": np.arange(H, dtype=np.int64),
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values(["passes", "score"], ascending=False, kind="stable").head(top)
    df = df.reset_index(drop=True)
    df.attrs.update(span=(start, stop), margin=margin, tolerance=tolerance)
    return df


# ----------------------------------------------------------------------------------------------
# Match


def _neuron_set(store, neurons, thresholds, signs):
    """(ids, thresholds [K], signs [K]) from ids or a :func:`select_neurons` frame."""
    if isinstance(neurons, pd.DataFrame):
        frame = neurons
        ids = [str(x) for x in frame["neuron"]]
        if thresholds is None and "threshold" in frame:
            thresholds = dict(zip(ids, frame["threshold"].astype(float), strict=True))
        if signs is None and "sign" in frame:
            signs = dict(zip(ids, frame["sign"].astype(int), strict=True))
    elif isinstance(neurons, str):
        ids = [neurons]
    else:
        ids = [str(x) for x in neurons]
    ids = [str(store.resolve(x)) for x in ids]
    if not ids:
        raise ValueError("no neurons to match: select at least one")
    if len(set(ids)) != len(ids):
        raise ValueError("the neuron set names a neuron twice")
    t = np.empty(len(ids))
    for j, nid in enumerate(ids):
        if isinstance(thresholds, Mapping) and nid in thresholds:
            t[j] = float(thresholds[nid])
        elif thresholds is not None and not isinstance(thresholds, Mapping):
            t[j] = float(np.broadcast_to(np.asarray(thresholds, dtype=float), (len(ids),))[j])
        else:
            t[j] = suggest_threshold(store, nid)
    if signs is None:
        s = np.ones(len(ids), dtype=np.int64)
    elif isinstance(signs, Mapping):
        s = np.array([int(signs.get(nid, 1)) for nid in ids], dtype=np.int64)
    else:
        s = np.broadcast_to(np.asarray(signs, dtype=np.int64), (len(ids),)).copy()
    if not np.isin(s, (-1, 1)).all():
        raise ValueError("signs must be +1 or -1")
    return ids, t, s


def on_fraction(store, ids, thresholds, signs, start: int = 0, stop: int | None = None):
    """float32 ``[stop - start]``: the fraction of the neuron set that is on at each position."""
    stop = store.n if stop is None else stop
    out = np.empty(stop - start, dtype=np.float32)
    t = np.asarray(thresholds, dtype=np.float32)[None, :]
    pos = np.asarray(signs)[None, :] > 0
    for a in range(start, stop, CHUNK_ROWS):
        b = min(a + CHUNK_ROWS, stop)
        v = store.window(a, b, ids)  # [m, K]
        on = np.where(pos, v >= t, v < t)
        out[a - start : b - start] = on.mean(1)
    return out


def match_spans(
    store,
    neurons,
    *,
    thresholds: float | Sequence[float] | Mapping[str, float] | None = None,
    signs: Sequence[int] | Mapping[str, int] | None = None,
    min_len: int = 3,
    top: int = 20,
    tolerance: float = 0.1,
    exclude: tuple[int, int] | None = None,
    query_len: int | None = None,
    include_cold: bool = False,
) -> pd.DataFrame:
    """Spans of the whole text where the neuron set is on, best first.

    ``neurons``: ids, or the frame :func:`select_neurons` returned (its thresholds and signs are
    used, its span is excluded and its length is the query length). A position is active when
    at least ``1 - tolerance`` of the set is on there; a match is a maximal run of active
    positions at least ``min_len`` long. Columns ``start stop length overlap score text``:
    ``overlap`` is the mean fraction of the set that is on over the run; ``score`` is
    ``overlap``, times ``min(length, query_len) / max(length, query_len)`` when a query length
    is known, so spans like the selected one come first. Cold positions never match unless
    ``include_cold``.
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    if min_len < 1:
        raise ValueError(f"min_len must be >= 1, got {min_len}")
    if isinstance(neurons, pd.DataFrame):
        span = neurons.attrs.get("span")
        if span is not None:
            exclude = tuple(span) if exclude is None else exclude
            query_len = span[1] - span[0] if query_len is None else query_len
    ids, t, s = _neuron_set(store, neurons, thresholds, signs)
    frac = on_fraction(store, ids, t, s)  # [N]
    active = frac >= (1.0 - tolerance) - 1e-6
    if not include_cold:
        active &= ~np.asarray(store.cold, dtype=bool)
    edges = np.diff(np.concatenate(([0], active.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    keep = stops - starts >= min_len
    if exclude is not None:
        ea, eb = int(exclude[0]), int(exclude[1])
        keep &= (stops <= ea) | (starts >= eb)
    starts, stops = starts[keep], stops[keep]
    csum = np.concatenate(([0.0], np.cumsum(frac, dtype=np.float64)))
    length = stops - starts
    overlap = (csum[stops] - csum[starts]) / np.maximum(length, 1)
    score = overlap.copy()
    if query_len:
        q = float(query_len)
        score *= np.minimum(length, q) / np.maximum(length, q)
    order = np.lexsort((starts, -length, -score))[:top]
    text = store.text
    df = pd.DataFrame(
        {
            "start": starts[order].astype(np.int64),
            "stop": stops[order].astype(np.int64),
            "length": length[order].astype(np.int64),
            "overlap": overlap[order],
            "score": score[order],
            "text": [text[a:b] for a, b in zip(starts[order], stops[order], strict=True)],
        },
        columns=list(MATCH_COLUMNS),
    )
    df.attrs.update(neurons=ids, thresholds=t.tolist(), signs=s.tolist(), total=int(keep.sum()))
    return df
