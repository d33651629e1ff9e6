"""Score every neuron of a store against a per-character feature, best first.

Binary features (inside a URL, a string, a comment) are scored by **average precision** of the
neuron's value as a detector of the feature (the honest score for rare spans: on a feature that
is on 4% of the time a useless neuron has AP ~0.04 but can still reach an AUROC of 0.7), with
AUROC and the means inside and outside alongside. Graded features (bracket depth, column) are
scored by Pearson's r. Either sign counts: a cell that switches *off* inside a span is as good a
detector as one that switches on, and ``sign`` says which it is.

Binary rows carry ``f1`` and ``iou`` at the neuron's best ``threshold`` beside AP and AUROC:
NeuronEval (ICML 2025) finds AUROC (and recall) fail the sanity checks for neuron explanations
while AUPRC, F1 and IoU pass; read those.

How it stays fast (a 1M-character store of a 2x256 LSTM is 12 arrays of 512 MB):

- **Binary**, in two stages. The *screen* orders every neuron: it reads only the rows where the
  feature is on (or off, whichever is fewer); the store's statistics hold each neuron's
  histogram over the warm rows on a fixed grid per kind (``store.hist_edges``), so the
  histogram outside is the whole column's minus the one inside, and AUROC and AP come from the
  two histograms. Then the *exact* stage recomputes the head from the stored columns (warm rows,
  as the screen): the screen's top ``exact`` (default 200, what the dashboard shows) and any
  ``neurons`` asked for, then every other neuron whose exact AP could still beat the
  ``exact``-th exact score found (the screen's upper bound on it, below), at most
  ``max(exact, EXACT_MARGIN)`` more (:mod:`~lstmscope.analysis.rank_exact`); rows are then
  sorted by score. When that second set was complete (``df.attrs["exact_sure"]``, the usual case) the first ``exact`` rows are *the* top
  ``exact`` by exact AP, in exact order; otherwise the most likely were recomputed and a neuron
  may be missing from the head. The ``exact`` column says which rows are exact.
- **Graded** features need every row: one pass over each array in float32 chunks computes
  ``y_c @ X`` for all units at once (a matrix-vector product; several features share the pass
  as a matrix product, see :func:`rank_many`), and the stats' standard deviations finish r.

Cold positions (the first ``warmup`` characters of each recording stream, ``store.cold``) are
left out, as the stats already leave them out; ``include_cold=True`` adds them back to both
sides consistently.

Measured (``benchmarks/analysis_speed.py --only rank``; 1M characters, random 2x256 LSTM, 3,072
neurons, 2-core AMD EPYC at load ~1, page cache warm; second runs). Coded (format 2) store,
feature on 3.8% of positions: screen alone 1.7-2.0 s, with the exact top 200 (233 rows
recomputed) 5.0 s, exact top 50 2.7 s; on 11%: 3.5 / 8.9 / 5.7 s. float16 (format 1) store:
1.4 / 3.3 / 1.9 s and 3.3 / 6.5 / 4.4 s. An exact row costs ~20 ms of CPU on a coded store:
reading the column (~5 ms, decoding), a radix sort of its 1M float32 values (~12 ms, compiled)
and one scan; float16 columns are counted on their bit patterns instead (~2x cheaper). Blocks
of columns run in two threads here. Graded feature 3.0 s; eight graded features in one pass
4.1 s.

Accuracy:

- Exact rows (``exact`` True): ``ap``, ``auroc``, ``f1``, ``iou``, ``threshold`` and ``sign``
  are those of the stored column (:mod:`~lstmscope.analysis.metrics`): sklearn's
  ``average_precision_score`` and ``roc_auc_score`` to float rounding (tests: ``8 n eps``), F1
  and IoU the best over every threshold between distinct values.
- Screen rows: a bin of the grid counts as one tied value. Its AUROC is within
  :func:`~lstmscope.analysis.metrics.auroc_hist_error` (half the in/out pairs sharing a bin) of
  the exact one, its AP within :func:`~lstmscope.analysis.metrics.ap_hist_bounds` (a bin's
  positives at best all tied above its negatives, at worst one by one below them; AP rewards
  ties, so even a bin of positives alone moves it). Those bounds are what the exact stage uses.
  Gates piled up against 0 or 1 are where the screen is worst (0.27 of AP on the synthetic
  store): not a number to quote, hence the exact head.
- mean_out uses the stats' float64 sum of the float32 activations, mean_in the stored values:
  they agree with means of the stored column to ~1e-4 relative.
- r (graded): exact up to the storage of the activations (float16, or the coded format's 16
  bits): the stats' standard deviation of the float32 activations against the stored column,
  within 2e-3 of ``np.corrcoef`` on the column (tests), typically 1e-5. No exact stage.
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

from lstmscope.analysis import store_cache
from lstmscope.analysis.features import FEATURES, Feature, FeatureError, compute
from lstmscope.analysis.metrics import ap_from_hist, ap_hist_bounds, auroc_from_hist
from lstmscope.analysis.rank_exact import exact_head
from lstmscope.names import parse_neuron
from lstmscope.store.histograms import hist_edges, hist_lut

log = logging.getLogger(__name__)

CHUNK_ROWS = 1 << 16  # rows per read: 65536 x 256 float32 is 64 MB
BINARY_COLUMNS = ("ap", "auroc", "f1", "iou", "threshold", "mean_in", "mean_out", "n_on", "exact")
EXACT_TOP = 200  # rows recomputed exactly by default: the dashboard shows 200
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


def check_values(store, values) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 1 or len(v) != store.n:
        raise ValueError(
            f"feature values have shape {v.shape}; the store has {store.n} positions: pass one "
            "value per character of store.text"
        )
    return v


def _check_exact(exact) -> int:
    if exact is None or exact is False:
        return 0
    if isinstance(exact, bool) or not isinstance(exact, (int, np.integer)) or exact < 0:
        raise ValueError(f"exact must be a count of rows >= 0 (or None), not {exact!r}")
    return int(exact)


def _asked_rows(store, streams, neurons) -> np.ndarray:
    index = {s: i for i, s in enumerate(streams)}
    rows = []
    for nid in neurons or ():
        nrn = parse_neuron(nid)
        if (nrn.layer, nrn.kind) not in index or not 0 <= nrn.unit < store.hidden_size:
            raise ValueError(f"{nrn} is not among the neurons ranked (check layers and kinds)")
        rows.append(index[(nrn.layer, nrn.kind)] * store.hidden_size + nrn.unit)
    return np.asarray(rows, dtype=np.int64)


def rank_binary(
    store,
    values,
    *,
    name=None,
    layers=None,
    kinds=None,
    include_cold: bool = False,
    exact: int = EXACT_TOP,
    neurons: Sequence[str] | None = None,
) -> pd.DataFrame:
    """:func:`rank` for a binary feature (see there)."""
    exact = _check_exact(exact)
    on = check_values(store, values).astype(bool)
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
    streams = selection(store, layers, kinds)
    asked = _asked_rows(store, streams, neurons)
    # Read whichever side is smaller; the other is the whole column minus it.
    read_inside = n_on <= n_use - n_on
    side = on_rows if read_inside else np.flatnonzero(~on & use)
    cold_rows = np.flatnonzero(np.asarray(store.cold, dtype=bool)) if include_cold else None
    cols: dict[str, list] = {c: [] for c in ("score", "sign", *BINARY_COLUMNS)}
    hi = []  # upper bound of the exact AP, better sign
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
        hi_pos = ap_hist_bounds(h_in, h_out, True)[1]
        hi_neg = ap_hist_bounds(h_in, h_out, False)[1]
        hi.append(np.maximum(hi_pos, hi_neg))
        H = store.hidden_size
        cols["score"].append(ap)
        cols["sign"].append(sign.astype(np.int64))
        cols["ap"].append(ap)
        cols["auroc"].append(np.where(sign > 0, auc, 1.0 - auc))
        for c in ("f1", "iou", "threshold"):
            cols[c].append(np.full(H, np.nan))
        cols["mean_in"].append(s_in / n_on)
        cols["mean_out"].append((s_all - s_in) / (count - n_on))
        cols["n_on"].append(np.full(H, n_on, dtype=np.int64))
        cols["exact"].append(np.zeros(H, dtype=bool))
    flat = {c: np.concatenate(v) for c, v in cols.items()}
    sure = exact_head(store, streams, flat, np.concatenate(hi), exact, asked, on[use], use)
    if exact and not sure:
        log.info("%s: more rows could enter the exact top %d than were recomputed",
                 name or "feature", exact)  # fmt: skip
    df = _frame(store, streams, {c: [v] for c, v in flat.items()}, name, "binary")
    df.attrs.update(n=n_use, n_on=n_on, prevalence=n_on / n_use, exact_top=exact, exact_sure=sure)
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
    exact: int = EXACT_TOP,
    neurons: Sequence[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`rank` for several features of one kind; graded ones share one pass over the store
    (one ``[rows, F] x [rows, H]`` product per chunk instead of F matrix-vector products)."""
    if kind == "binary":
        kw = dict(layers=layers, kinds=kinds, include_cold=include_cold)
        return {
            nm: rank_binary(store, v, name=nm, exact=exact, neurons=neurons, **kw)
            for nm, v in features.items()
        }
    if kind != "graded":
        raise ValueError(f"kind must be 'binary' or 'graded', not {kind!r}")
    from tqdm.auto import tqdm

    names = list(features)
    if not names:
        return {}
    Y = np.stack([check_values(store, features[nm]) for nm in names], axis=1)  # [N, F]
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
    exact: int = EXACT_TOP,
    neurons: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every neuron of the chosen layers and kinds scored against ``values`` ``[N]``, best first.

    Columns: ``neuron layer kind unit score sign`` and, for ``kind="binary"``, ``ap`` (average
    precision of ``sign * value`` as a detector, the better sign; also ``score``), ``auroc`` (of
    the same signed value), ``f1`` and ``iou`` at the best ``threshold`` (the detector is on
    where ``sign * value >= sign * threshold``), ``mean_in``, ``mean_out``, ``n_on`` and
    ``exact``; for ``kind="graded"``, ``r`` (Pearson) and ``abs_r`` (``score``). A ``feature``
    column leads when ``name`` is given.

    Binary: ``exact`` rows (the ``exact`` best, default 200, plus the ``neurons`` asked for, by
    id) are recomputed from the stored columns and their ``score``, ``sign``, ``ap``, ``auroc``,
    ``f1``, ``iou``, ``threshold`` are exact; the others keep the histogram screen's ``ap`` and
    ``auroc`` (``f1``, ``iou``, ``threshold`` NaN). The rows are sorted by ``score`` after that,
    and the first ``exact`` are the exact top ``exact`` in exact order when
    ``df.attrs["exact_sure"]`` (see the module docstring). ``exact=0``: the screen alone.
    Graded: ``r`` is exact already (``exact`` and ``neurons`` are accepted and change nothing).

    ``df.attrs`` holds ``n`` (positions used), and for binary ``n_on``, ``prevalence`` (the AP
    of a random ranking), ``exact_top`` and ``exact_sure``. Raises ``ValueError`` for a feature
    that is constant on the positions used.
    """
    if kind == "binary":
        return rank_binary(
            store, values, name=name, layers=layers, kinds=kinds, include_cold=include_cold,
            exact=exact, neurons=neurons,
        )  # fmt: skip
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
    """:func:`rank` against a built-in feature (by name) or a :class:`~lstmscope.analysis.features.Feature`
    computed over ``store.text`` (cached per store)."""
    feat = resolve_feature(feature)
    return rank(store, feature_values(store, feat), kind=feat.kind, name=feat.name, **kw)
