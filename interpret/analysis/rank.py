"""Score every neuron of a store against a per-character feature, best first.

Binary features (inside a URL, a string, a comment) are scored by **average precision** of the
neuron's value as a detector of the feature (the honest score for rare spans: on a feature that
is on 4% of the time a useless neuron has AP ~0.04 but can still reach an AUROC of 0.7), with
AUROC and the means inside and outside alongside. Graded features (bracket depth, column) are
scored by Pearson's r. Either sign counts: a cell that switches *off* inside a span is as good a
detector as one that switches on, and ``sign`` says which it is.

How it stays fast (a 1M-character store of a 2x256 LSTM is 12 arrays of 512 MB):

- **Binary** features read only the rows where the feature is on (or off, whichever is fewer).
  The store's statistics hold each neuron's histogram over the warm rows on a fixed grid per kind
  (``store.hist_edges``), so the histogram outside is the whole column's minus the one inside,
  and AUROC and AP come from the two histograms. The mean outside is the stats' sum minus the
  inside sum.
- **Graded** features need every row: one pass over each array in float32 chunks computes
  ``y_c @ X`` for all units at once (a matrix-vector product; several features share the pass
  as a matrix product, see :func:`rank_many`), and the stats' standard deviations finish r.

Cold positions (the first ``warmup`` characters of each recording stream, ``store.cold``) are
left out, as the stats already leave them out; ``include_cold=True`` adds them back to both
sides consistently.

Measured (``benchmarks/analysis_speed.py``; 1M characters, random 2x256 LSTM, 3,072 neurons, one
thread of a 2-core machine at load ~4, page cache warm): binary feature on 3.8% of positions
1.3 s (60% of it the inside histograms, ~10 ns per value), on 11% 2.9 s; graded feature 3.0 s;
eight graded features in one pass 4.1 s.

Accuracy of the histogram scores (values are the stored float16 numbers, so the only error is
that distinct values sharing a bin count as ties):

- AUROC: a tie counts one half, the usual convention, so the error is at most half the
  probability that an inside and an outside value share a bin; gates use 1000 bins on [0, 1],
  h/g 1024 bins on [-1, 1], c 32 bins per octave of the float16 line (2% relative width).
- AP: identical to ``sklearn.metrics.average_precision_score`` on the values rounded to their
  bins (sklearn treats tied scores as one threshold too); splitting a bin can move the
  precision at its recall step, so the error grows with the mass in bins that hold both
  classes.
- Measured against sklearn on the full columns of the synthetic store (every 12th neuron of
  four features): the top 5 neurons per feature within 3e-4 (AUROC) and 3e-3 (AP); the median
  neuron within 4e-4 and 1e-3; the worst, gates piled up against 0 or 1 (a few float16 values
  per bin there, all of them shared), 0.04 and 0.2. The ranking's head, which is what one
  reads, is accurate; a gate's AP far down the list is not to be quoted.
- mean_out uses the stats' float64 sum of the float32 activations, mean_in the stored float16
  values: they agree with means of the stored column to ~1e-4 relative.
- r: the stats' standard deviation (of the float32 activations) against the stored float16
  column: within 2e-3 of ``np.corrcoef`` on the column (tests), typically 1e-5.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Literal

import numpy as np
import pandas as pd
import torch

from interpret.analysis import store_cache
from interpret.features import FEATURES, Feature, FeatureError, compute
from interpret.store import hist_edges, hist_lut

log = logging.getLogger(__name__)

CHUNK_ROWS = 1 << 16  # rows per read: 65536 x 256 float32 is 64 MB
BINARY_COLUMNS = ("ap", "auroc", "mean_in", "mean_out", "n_on")
GRADED_COLUMNS = ("r", "abs_r")
BASE_COLUMNS = ("neuron", "layer", "kind", "unit", "score", "sign")


# ----------------------------------------------------------------------------------------------
# Helpers shared by the analysis modules


def selection(store, layers=None, kinds=None) -> list[tuple[int, str]]:
    """``(layer, kind)`` streams of the store to look at (all by default), in store order."""
    if isinstance(layers, int):
        layers = [layers]
    if isinstance(kinds, str):
        kinds = [kinds]
    ls = list(store.layers) if layers is None else [int(x) for x in layers]
    ks = list(store.kinds) if kinds is None else list(kinds)
    bad_l = [x for x in ls if x not in store.layers]
    bad_k = [k for k in ks if k not in store.kinds]
    if bad_l or bad_k:
        raise ValueError(
            f"not in this store: {', '.join([f'L{x}' for x in bad_l] + bad_k)}; it holds layers "
            f"{', '.join(map(str, store.layers))} and kinds {', '.join(store.kinds)}"
        )
    return [(li, k) for li in store.layers if li in ls for k in store.kinds if k in ks]


def used_rows(store, include_cold: bool = False) -> np.ndarray:
    """bool ``[N]``: the positions an analysis reads (the warm ones unless ``include_cold``)."""
    if include_cold:
        return np.ones(store.n, dtype=bool)
    return ~np.asarray(store.cold, dtype=bool)


def _row_chunks(rows: np.ndarray, size: int = CHUNK_ROWS):
    for a in range(0, len(rows), size):
        yield rows[a : a + size]


def read_rows(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``arr[rows]`` for sorted ``rows``, read as contiguous slices where rows are consecutive.

    Spans (a URL, a string) are runs of consecutive rows: one slice per run is far faster than
    numpy's element-wise fancy indexing of a memory map.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(rows)]))
    if len(starts) * 8 > len(rows):  # scattered rows: fancy indexing is as good
        return np.asarray(arr[rows])
    out = np.empty((len(rows), *arr.shape[1:]), dtype=arr.dtype)
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        out[a:b] = arr[rows[a] : rows[a] + (b - a)]
    return out


HIST_BLOCK = 2048  # rows per bincount: the index block stays in cache (measured 1.4x faster)


@cache
def _lut_intp(kind: str) -> np.ndarray:
    # np.bincount wants intp: gathering straight into intp saves a conversion pass.
    return hist_lut(kind).astype(np.intp)


def hist_rows(v16: np.ndarray, kind: str) -> np.ndarray:
    """Per-unit histograms ``[H, bins]`` int64 of float16 rows ``[m, H]`` on the store's grid."""
    nb = len(hist_edges(kind)) - 1
    H = v16.shape[1]
    lut = _lut_intp(kind)
    bits = np.ascontiguousarray(v16, dtype=np.float16).view(np.uint16)  # [m, H]
    offsets = np.arange(H, dtype=np.intp) * nb  # unit u counts into [u*nb, (u+1)*nb)
    out = np.zeros(H * nb, dtype=np.int64)
    for a in range(0, len(bits), HIST_BLOCK):
        idx = lut[bits[a : a + HIST_BLOCK]]  # [block, H] bin of every value
        idx += offsets
        out += np.bincount(idx.ravel(), minlength=H * nb)
    return out.reshape(H, nb)


def _side_moments(arr, rows: np.ndarray, kind: str, hist: bool = True, squares: bool = False):
    """Histogram ``[H, bins]``, float64 sum ``[H]`` and (``squares``) sum of squares of
    ``arr[rows]``."""
    H = arr.shape[1]
    nb = len(hist_edges(kind)) - 1
    counts = np.zeros((H, nb), dtype=np.int64)
    s1 = np.zeros(H, dtype=np.float64)
    s2 = np.zeros(H, dtype=np.float64)
    for chunk in _row_chunks(rows):
        v16 = read_rows(arr, chunk)  # [m, H] float16
        if hist:
            counts += hist_rows(v16, kind)
        # Summing float16 with a float32 accumulator converts in small buffers: 2x faster
        # than converting the chunk first. Chunks of 65536 rows keep float32 error ~1e-6.
        s1 += v16.sum(0, dtype=np.float32)
        if squares:
            v = v16.astype(np.float32)
            s2 += np.einsum("ij,ij->j", v, v, dtype=np.float64)
    return counts, s1, s2


# ----------------------------------------------------------------------------------------------
# Scores from histograms


def auroc_from_hist(h_in: np.ndarray, h_out: np.ndarray) -> np.ndarray:
    """AUROC ``[H]`` of "value predicts inside" from per-unit histograms ``[H, bins]``.

    ``P(v_in > v_out) + P(same bin) / 2``: a bin is treated as one tied value.
    """
    h_in = np.asarray(h_in, dtype=np.float64)
    h_out = np.asarray(h_out, dtype=np.float64)
    n_in, n_out = h_in.sum(1), h_out.sum(1)
    below = np.cumsum(h_out, axis=1) - h_out  # outside values in lower bins  # [H, bins]
    u = (h_in * (below + 0.5 * h_out)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return u / (n_in * n_out)


def ap_from_hist(h_in: np.ndarray, h_out: np.ndarray, descending: bool = True) -> np.ndarray:
    """Average precision ``[H]`` of the value as a score for "inside" (``descending``: high
    values first; else low values first), from histograms ``[H, bins]``, bins as tied values.

    The step-wise sum of sklearn's ``average_precision_score``: every bin holding inside values
    adds ``(its inside count / n_in) * precision at a threshold just below it``.
    """
    h_in = np.asarray(h_in, dtype=np.float64)
    h_out = np.asarray(h_out, dtype=np.float64)
    if descending:
        h_in, h_out = h_in[:, ::-1], h_out[:, ::-1]
    tp = np.cumsum(h_in, axis=1)
    fp = np.cumsum(h_out, axis=1)
    n_in = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(h_in > 0, tp / np.maximum(tp + fp, 1), 0.0)
        return (h_in * prec).sum(1) / n_in


# ----------------------------------------------------------------------------------------------
# Ranking


def _frame(store, streams, cols: dict[str, list[np.ndarray]], name, kind) -> pd.DataFrame:
    H = store.hidden_size
    data = {
        "neuron": [f"L{li}.{k}.{u}" for li, k in streams for u in range(H)],
        "layer": np.repeat([li for li, _ in streams], H).astype(np.int64),
        "kind": np.repeat([k for _, k in streams], H),
        "unit": np.tile(np.arange(H, dtype=np.int64), len(streams)),
    }
    for c, parts in cols.items():
        data[c] = np.concatenate(parts) if parts else np.empty(0)
    df = pd.DataFrame(data)
    if name is not None:
        df.insert(0, "feature", name)
    df = df.sort_values("score", ascending=False, kind="stable", na_position="last")
    df = df.reset_index(drop=True)
    df.attrs.update(feature=name, feature_kind=kind)
    return df


def _check_values(store, values) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 1 or len(v) != store.n:
        raise ValueError(
            f"feature values have shape {v.shape}; the store has {store.n} positions: pass one "
            "value per character of store.text"
        )
    return v


def rank_binary(
    store, values, *, name=None, layers=None, kinds=None, include_cold: bool = False
) -> pd.DataFrame:
    """:func:`rank` for a binary feature (see there)."""
    on = _check_values(store, values).astype(bool)
    use = used_rows(store, include_cold)
    on_rows = np.flatnonzero(on & use)
    n_use = int(use.sum())
    n_on = len(on_rows)
    if n_on == 0 or n_on == n_use:
        what = "never" if n_on == 0 else "always"
        raise ValueError(
            f"feature {name or ''} is {what} on in the {n_use} positions ranked; nothing to "
            "separate (cold positions are left out unless include_cold=True)"
        )
    # Read whichever side is smaller; the other is the whole column minus it.
    read_inside = n_on <= n_use - n_on
    side = on_rows if read_inside else np.flatnonzero(~on & use)
    cold_rows = np.flatnonzero(np.asarray(store.cold, dtype=bool)) if include_cold else None
    streams = selection(store, layers, kinds)
    cols: dict[str, list] = {c: [] for c in ("score", "sign", *BINARY_COLUMNS)}
    for li, kind in streams:
        arr = store.array(li, kind)
        st = store.stat_arrays(li, kind)
        h_all = np.asarray(st["hist_counts"], dtype=np.int64)  # [H, bins], warm rows
        count = int(st["count"])
        s_all = np.asarray(st["mean"], dtype=np.float64) * count  # [H]
        if cold_rows is not None and len(cold_rows):
            hc, sc, _ = _side_moments(arr, cold_rows, kind)
            h_all, s_all, count = h_all + hc, s_all + sc, count + len(cold_rows)
        h_side, s_side, _ = _side_moments(arr, side, kind)
        if read_inside:
            h_in, h_out, s_in = h_side, h_all - h_side, s_side
        else:
            h_in, h_out, s_in = h_all - h_side, h_side, s_all - s_side
        auc = auroc_from_hist(h_in, h_out)
        ap_pos = ap_from_hist(h_in, h_out, descending=True)
        ap_neg = ap_from_hist(h_in, h_out, descending=False)
        sign = np.where(ap_neg > ap_pos, -1, 1)
        ap = np.where(sign > 0, ap_pos, ap_neg)
        cols["score"].append(ap)
        cols["sign"].append(sign.astype(np.int64))
        cols["ap"].append(ap)
        cols["auroc"].append(np.where(sign > 0, auc, 1.0 - auc))
        cols["mean_in"].append(s_in / n_on)
        cols["mean_out"].append((s_all - s_in) / (count - n_on))
        cols["n_on"].append(np.full(store.hidden_size, n_on, dtype=np.int64))
    df = _frame(store, streams, cols, name, "binary")
    df.attrs.update(n=n_use, n_on=n_on, prevalence=n_on / n_use)
    return df


GRADED_BLOCK = 16384  # rows per product: 16 MB of float32 for H = 256, reused


def _weighted_sums(arr, YT, centre: np.ndarray, bar=None) -> np.ndarray:
    """``YT @ (arr - centre)`` ``[F, H]`` float64 for float16 ``arr`` ``[N, H]``, one pass.

    With ``y_c`` summing to 0 over the used rows and 0 elsewhere, this is the covariance
    numerator for any ``centre``; subtracting the column means anyway keeps float32 from
    cancelling (a cell with mean 10 and std 0.5 lost ~2e-4 of r without it). torch converts
    float16 into a reused float32 buffer 3x faster than numpy's ``astype`` (which also pays
    for a fresh 64 MB array per chunk): 0.18 s against 0.55 s per 1M x 256 array, one thread.
    """
    N, H = arr.shape
    F = YT.shape[0]
    buf = torch.empty((min(GRADED_BLOCK, N), H), dtype=torch.float32)
    mu = torch.from_numpy(np.asarray(centre, dtype=np.float32))
    out = np.zeros((F, H), dtype=np.float64)
    with warnings.catch_warnings():
        # from_numpy on a read-only memory map warns; the tensor is only read.
        warnings.simplefilter("ignore", UserWarning)
        for a in range(0, N, GRADED_BLOCK):
            b = min(a + GRADED_BLOCK, N)
            x = buf[: b - a]
            x.copy_(torch.from_numpy(np.asarray(arr[a:b])))
            x -= mu
            out += (YT[:, a:b] @ x).double().numpy()
            if bar is not None:
                bar.update(b - a)
    return out


def _graded_matrix(store, Y: np.ndarray, use: np.ndarray):
    """Centred float32 ``[N, F]`` targets (0 on unused rows) and their population std ``[F]``."""
    Y = np.asarray(Y, dtype=np.float64)
    n = int(use.sum())
    mean = Y[use].mean(0)
    std = Y[use].std(0)
    Yc = np.where(use[:, None], Y - mean, 0.0).astype(np.float32)
    return Yc, std, n


def rank_many(
    store,
    features: Mapping[str, np.ndarray],
    *,
    kind: Literal["binary", "graded"],
    layers=None,
    kinds=None,
    include_cold: bool = False,
    progress: bool = False,
) -> dict[str, pd.DataFrame]:
    """:func:`rank` for several features of one kind; graded ones share one pass over the store
    (one ``[rows, F] x [rows, H]`` product per chunk instead of F matrix-vector products)."""
    if kind == "binary":
        return {
            nm: rank_binary(
                store, v, name=nm, layers=layers, kinds=kinds, include_cold=include_cold
            )
            for nm, v in features.items()
        }
    if kind != "graded":
        raise ValueError(f"kind must be 'binary' or 'graded', not {kind!r}")
    from tqdm.auto import tqdm

    names = list(features)
    if not names:
        return {}
    Y = np.stack([_check_values(store, features[nm]) for nm in names], axis=1)  # [N, F]
    use = used_rows(store, include_cold)
    Yc, sy, n = _graded_matrix(store, Y, use)
    flat = [nm for nm, s in zip(names, sy, strict=True) if not s > 0]
    if flat:
        raise ValueError(f"feature {', '.join(flat)} is constant on the positions ranked")
    streams = selection(store, layers, kinds)
    cold_rows = np.flatnonzero(np.asarray(store.cold, dtype=bool)) if include_cold else None
    _F, N = len(names), store.n
    out_cols: dict[str, dict[str, list]] = {
        nm: {"score": [], "sign": [], "r": [], "abs_r": []} for nm in names
    }
    bar = tqdm(total=len(streams) * N, disable=not progress, unit="row", unit_scale=True)
    YcT = torch.from_numpy(np.ascontiguousarray(Yc.T))  # [F, N] float32
    for li, k in streams:
        arr = store.array(li, k)
        st = store.stat_arrays(li, k)
        count = int(st["count"])
        mean_x = np.asarray(st["mean"], dtype=np.float64)
        m2_x = np.asarray(st["std"], dtype=np.float64) ** 2 * count
        if cold_rows is not None and len(cold_rows):
            # Merge the cold rows' moments into the stats' (Chan et al.), as record does.
            _, s1, s2 = _side_moments(arr, cold_rows, k, hist=False, squares=True)
            nc = len(cold_rows)
            mc = s1 / nc
            m2c = np.maximum(s2 - nc * mc * mc, 0.0)
            tot = count + nc
            delta = mc - mean_x
            m2_x = m2_x + m2c + delta * delta * count * nc / tot
            mean_x = mean_x + delta * nc / tot
            count = tot
        sx = np.sqrt(m2_x / count)  # [H] population std
        cov = _weighted_sums(arr, YcT, mean_x, bar)  # [F, H]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / (n * sx[None, :] * sy[:, None])  # [F, H]
        r = np.where(sx[None, :] > 0, np.clip(r, -1.0, 1.0), np.nan)
        for j, nm in enumerate(names):
            c = out_cols[nm]
            c["r"].append(r[j])
            c["abs_r"].append(np.abs(r[j]))
            c["score"].append(np.abs(r[j]))
            c["sign"].append(np.where(r[j] < 0, -1, 1).astype(np.int64))
    bar.close()
    out = {}
    for nm in names:
        df = _frame(store, streams, out_cols[nm], nm, "graded")
        df.attrs.update(n=n)
        out[nm] = df
    return out


def rank(
    store,
    values: np.ndarray,
    *,
    kind: Literal["binary", "graded"],
    name: str | None = None,
    layers: int | Sequence[int] | None = None,
    kinds: str | Sequence[str] | None = None,
    include_cold: bool = False,
) -> pd.DataFrame:
    """Every neuron of the chosen layers and kinds scored against ``values`` ``[N]``, best first.

    Columns: ``neuron layer kind unit score sign`` and, for ``kind="binary"``, ``ap`` (average
    precision of ``sign * value`` as a detector, the better sign; also ``score``), ``auroc`` (of
    the same signed value), ``mean_in``, ``mean_out``, ``n_on``; for ``kind="graded"``, ``r``
    (Pearson) and ``abs_r`` (``score``). A ``feature`` column leads when ``name`` is given.
    ``df.attrs`` holds ``n`` (positions used), and for binary ``n_on`` and ``prevalence`` (the
    AP of a random ranking). Raises ``ValueError`` for a feature that is constant on the
    positions used.
    """
    if kind == "binary":
        return rank_binary(
            store, values, name=name, layers=layers, kinds=kinds, include_cold=include_cold
        )
    if kind == "graded":
        key = name or "feature"
        return rank_many(
            store, {key: values}, kind="graded", layers=layers, kinds=kinds,
            include_cold=include_cold,
        )[key].pipe(lambda d: d if name is not None else d.drop(columns="feature"))  # fmt: skip
    raise ValueError(f"kind must be 'binary' or 'graded', not {kind!r}")


# ----------------------------------------------------------------------------------------------
# Features over a store's text, cached per store


def resolve_feature(feature: str | Feature) -> Feature:
    if isinstance(feature, Feature):
        return feature
    if feature not in FEATURES:
        raise FeatureError(
            f"unknown feature {feature!r}: choose from {', '.join(FEATURES)} or pass a Feature"
        )
    return FEATURES[feature]


def feature_values(store, feature: str | Feature) -> np.ndarray:
    """``feature`` over ``store.text``, computed once per store (built-ins share their passes)."""
    feat = resolve_feature(feature)
    cache = store_cache(store).setdefault("features", {})
    # A user Feature is its own key (frozen, hashed by name, kind and the identity of its fn).
    key = feat.name if FEATURES.get(feat.name) is feat else feat
    if key not in cache:
        if FEATURES.get(feat.name) is feat:
            # One compute() for every built-in feature not cached yet: the lexical scan and the
            # line structure are shared, so asking for all costs little more than one.
            missing = [nm for nm in FEATURES if nm not in cache]
            cache.update(compute(store.text, missing))
        else:
            cache[key] = np.asarray(feat(store.text))
    return cache[key]


def rank_feature(store, feature: str | Feature, **kw) -> pd.DataFrame:
    """:func:`rank` against a built-in feature (by name) or a :class:`~interpret.features.Feature`
    computed over ``store.text`` (cached per store)."""
    feat = resolve_feature(feature)
    return rank(store, feature_values(store, feat), kind=feat.kind, name=feat.name, **kw)
