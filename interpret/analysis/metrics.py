"""A neuron as a detector of a binary feature: exact scores from its column, and the histogram
screen's scores with their error bounds. Pure functions of arrays (numpy, with torch and numba
loops where they are faster); no store, no I/O.

The detector is ``sign * x``: for ``sign = +1`` high values predict "on", for ``-1`` low ones.
Tied values are one threshold, as in scikit-learn (the tests compare to ~1e-12):

- **AUROC**: the Mann-Whitney U, a tied (on, off) pair counting one half; computed in int64
  (``2U = sum over values of n_off * (TP before + TP through)``), so exact up to one rounding.
- **AP** (average precision): ``sum over distinct values of (TP_k - TP_{k-1}) / P * precision_k``,
  sklearn's ``average_precision_score``.
- **F1 and IoU at the best threshold**: over the sets ``{sign * x >= sign * t}``, ``t`` each
  distinct value. IoU (Jaccard) of the predicted-on and feature-on sets is ``J = TP / (P + FP)``
  and ``F1 = 2J / (1 + J)``, so one threshold maximises both; among equal ones the strictest
  (fewest predicted on) is taken. ``threshold`` is that ``t``: on where ``sign * x >= sign * t``.

NeuronEval (ICML 2025) finds that AUROC and recall fail the sanity checks a neuron-explanation
metric should pass, while AUPRC (AP), F1 and IoU pass: the latter are what to read, AUROC is
kept beside them as the familiar number (it flatters detectors of rare features).

Counts per distinct value come from one pass per column: float16 values (what the store holds)
are counted on their 65,536 bit patterns (a counting sort, ~2 ms per million values); any other
float is sorted (one ``argsort`` per column, vectorised over a block). Both give ``pos, neg``
``[k, D]`` counts over each column's distinct values ascending (padded with empty slots) and the
values ``[k, D]``; :func:`binary_scores` turns those into the scores.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import digamma

try:  # compiled sort of float32 columns; the numpy sort below does the same, ~4x slower
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps metrics importable
    numba = None

F16_PATTERNS = 1 << 16
_KEY_POS_ZERO = 0x8000  # order key of +0.0; -0.0 has key 0x7FFF and is folded into it
_KEY_MIN, _KEY_MAX = 0x03FF, 0xFC00  # keys of -inf and +inf; outside them: NaN


# ----------------------------------------------------------------------------------------------
# Counts per distinct value


def f16_keys(x16: np.ndarray) -> np.ndarray:
    """uint16 keys of float16 values whose integer order is the numeric order (-0 below +0)."""
    b = np.ascontiguousarray(x16, dtype=np.float16).view(np.uint16)
    # Negative numbers: all bits flipped (larger magnitude, smaller key); others: sign bit set.
    flip = (b.view(np.int16) >> 15).view(np.uint16) | np.uint16(0x8000)
    return b ^ flip


def f16_key_values(keys: np.ndarray) -> np.ndarray:
    """float64 values of :func:`f16_keys` keys."""
    k = np.asarray(keys, dtype=np.uint16)
    b = np.where(k & 0x8000, k ^ np.uint16(0x8000), ~k).astype(np.uint16)
    return b.view(np.float16).astype(np.float64)


def _pad(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[(pos, neg, values)]`` per column (1-D each) -> padded ``[k, D]`` arrays."""
    D = max((len(p[0]) for p in parts), default=0)
    k = len(parts)
    pos = np.zeros((k, D), dtype=np.int64)
    neg = np.zeros((k, D), dtype=np.int64)
    val = np.full((k, D), np.nan)
    for j, (p, q, v) in enumerate(parts):
        pos[j, : len(p)], neg[j, : len(q)], val[j, : len(v)] = p, q, v
    return pos, neg, val


def _f16_parts(cols16: np.ndarray, y: np.ndarray):
    """Counting sort of float16 columns ``[k, n]`` (each row one neuron, contiguous)."""
    y = np.asarray(y, dtype=bool)
    few_on = y.sum() <= len(y) - y.sum()
    side = np.flatnonzero(y if few_on else ~y)  # count the smaller side, subtract from the total
    parts = []
    for row in cols16:
        keys = f16_keys(row)  # float32 rows of float16 numbers are converted here
        tot = np.bincount(keys, minlength=F16_PATTERNS)
        sub = np.bincount(keys[side], minlength=F16_PATTERNS)
        for c in (tot, sub):  # -0.0 and +0.0 are one value
            c[_KEY_POS_ZERO] += c[_KEY_POS_ZERO - 1]
            c[_KEY_POS_ZERO - 1] = 0
        if tot[:_KEY_MIN].any() or tot[_KEY_MAX + 1 :].any():
            raise ValueError("NaN among the values: a detector's scores are undefined")
        nz = np.flatnonzero(tot)
        p = sub[nz] if few_on else tot[nz] - sub[nz]
        parts.append((p, tot[nz] - p, f16_key_values(nz)))
    return parts


def _sorted_counts(cols: np.ndarray, y: np.ndarray):
    """One sort per column of ``cols`` ``[k, n]`` (any float), vectorised over the block."""
    k, n = cols.shape
    y = np.asarray(y, dtype=bool)
    order = np.argsort(cols, axis=1)  # [k, n]
    xs = np.take_along_axis(cols, order, axis=1).astype(np.float64)
    ys = y[order]
    new = np.ones((k, n), dtype=bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]  # -0.0 == 0.0: one group
    g = np.cumsum(new, axis=1) - 1  # distinct-value index of every sorted element  # [k, n]
    D = int(g[:, -1].max()) + 1 if n else 0
    flat = g + (np.arange(k) * D)[:, None]
    pos = np.bincount(flat[ys], minlength=k * D).reshape(k, D)
    neg = np.bincount(flat[~ys], minlength=k * D).reshape(k, D)
    val = np.full(k * D, np.nan)
    val[flat[new]] = xs[new]
    return pos, neg, val.reshape(k, D)


def _radix_sort_py(bits: np.ndarray, y: np.ndarray):
    """``key << 1 | label`` of one float32 column (as uint32 ``bits``, labels uint8), sorted:
    ``key`` orders as the values (-0.0 folded into +0.0). An LSD radix sort, 33 bits in three
    passes of 11 (one read for the three digit histograms). Also says whether a NaN was seen.
    Compiled by numba (~10 ms per million values)."""
    n = bits.shape[0]
    a = np.empty(n, np.uint64)
    b = np.empty(n, np.uint64)
    hist = np.zeros((3, 2048), np.int64)
    bad = False
    for i in range(n):
        u = bits[i]
        if u == np.uint32(0x80000000):  # -0.0 is +0.0
            u = np.uint32(0)
        if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            bad = True  # NaN
        u = ~u if u >> np.uint32(31) else u | np.uint32(0x80000000)
        k = (np.uint64(u) << np.uint64(1)) | np.uint64(y[i])
        a[i] = k
        hist[0, k & np.uint64(2047)] += 1
        hist[1, (k >> np.uint64(11)) & np.uint64(2047)] += 1
        hist[2, (k >> np.uint64(22)) & np.uint64(2047)] += 1
    for p in range(3):
        s = 0
        for d in range(2048):
            c = hist[p, d]
            hist[p, d] = s
            s += c
        sh = np.uint64(11 * p)
        for i in range(n):
            d = (a[i] >> sh) & np.uint64(2047)
            b[hist[p, d]] = a[i]
            hist[p, d] += 1
        a, b = b, a
    return a, bad


def _scan_sorted_py(a: np.ndarray, P: int):
    """:func:`_scan_column` straight from :func:`_radix_sort`'s output, both directions in one
    pass from the top (a group's counts from below are the totals less those above it); the
    best slot is given as its value's key."""
    n = a.shape[0]
    N = n - P
    ap = np.zeros(2)
    comp = np.zeros(2)
    best_j = np.full(2, -1.0)
    out_best = np.zeros((2, 3), np.int64)
    u2 = 0
    tp = 0  # through this group, from the top
    fp = 0
    t = 0
    while t < n:
        key = a[n - 1 - t] >> np.uint64(1)
        p = 0
        q = 0
        while t < n and a[n - 1 - t] >> np.uint64(1) == key:  # one group of tied values
            if a[n - 1 - t] & np.uint64(1):
                p += 1
            else:
                q += 1
            t += 1
        tp += p
        fp += q
        u2 += q * (2 * tp - p)
        for way in range(2):  # 0: highest values first (sign +1), 1: lowest first
            if way == 0:
                tpw, fpw = tp, fp
            else:
                tpw, fpw = P - (tp - p), N - (fp - q)
            if p > 0:
                term = p * (tpw / (tpw + fpw))
                s = ap[way] + term  # Neumaier summation
                if abs(ap[way]) >= abs(term):
                    comp[way] += (ap[way] - s) + term
                else:
                    comp[way] += (term - s) + ap[way]
                ap[way] = s
            j = tpw / (P + fpw)
            # Among equal ones the strictest: the first met going down, the last going up.
            if j > best_j[way] or (way == 1 and j == best_j[way]):
                best_j[way] = j
                out_best[way, 0] = np.int64(key)
                out_best[way, 1] = tpw
                out_best[way, 2] = fpw
    return u2, (ap + comp) / P, out_best


if numba is not None:
    _radix_sort = numba.njit(cache=True, nogil=True)(_radix_sort_py)
    _scan_sorted = numba.njit(cache=True, nogil=True)(_scan_sorted_py)
else:  # pragma: no cover
    _radix_sort = _scan_sorted = None


def _f32_key_values(keys: np.ndarray) -> np.ndarray:
    k = np.asarray(keys, dtype=np.uint32)
    b = np.where(k >> np.uint32(31), k ^ np.uint32(0x80000000), ~k).astype(np.uint32)
    return b.view(np.float32).astype(np.float64)


def _radix_column(row32: np.ndarray, y8: np.ndarray) -> np.ndarray:
    a, bad = _radix_sort(np.ascontiguousarray(row32, dtype=np.float32).view(np.uint32), y8)
    if bad:
        raise ValueError("NaN among the values: a detector's scores are undefined")
    return a


def _radix_parts(cols32: np.ndarray, y: np.ndarray):
    """Tallies of float32 ``[k, n]`` from :func:`_radix_sort`, per row."""
    y8 = np.ascontiguousarray(y, dtype=np.uint8)
    parts = []
    for row in cols32:
        a = _radix_column(row, y8)
        keys = a >> np.uint64(1)
        start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        tot = np.diff(np.r_[start, len(a)])
        p = np.add.reduceat((a & np.uint64(1)).astype(np.int64), start) if len(a) else tot
        parts.append((p, tot - p, _f32_key_values(keys[start])))
    return parts


def _as_float16(cols: np.ndarray) -> np.ndarray | None:
    """``cols`` ``[k, n]`` as float16 when every value is a float16 number, else None (a
    sample first: a coded store's float32 values fail on the first few). torch converts
    2x faster than numpy here."""
    head = cols[:, :1024]
    if not np.array_equal(head.astype(np.float16), head, equal_nan=True):
        return None
    t = torch.from_numpy(np.ascontiguousarray(cols))
    t16 = t.to(torch.float16)
    return t16.numpy() if torch.equal(t16.to(t.dtype), t) else None  # NaN: not equal


def _parts(x: np.ndarray, y: np.ndarray):
    """Per column ``(pos, neg, values)`` 1-D, or None where only the numpy sort applies."""
    x = np.asarray(x)
    cols = x[None, :] if x.ndim == 1 else x.T  # [k, n]
    if len(y) != cols.shape[1]:
        raise ValueError(f"{cols.shape[1]} values but {len(y)} labels")
    if cols.dtype != np.float16:
        c16 = _as_float16(cols)
        if c16 is not None:
            cols = c16  # e.g. float32 decoded from float16: the same numbers
        elif cols.dtype == np.float32 and _radix_sort is not None:
            return _radix_parts(cols, y)
        else:
            return None
    return _f16_parts(cols, y)


def counts(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pos, neg, values)`` ``[k, D]``: each column's distinct values ascending (padded with
    empty slots, values NaN) and how many rows at each are on / off in ``y``.

    ``x`` ``[n]`` or ``[n, k]`` (time-major, as the store; pass a transposed ``[k, n]`` array
    for contiguous columns), ``y`` bool ``[n]``. float16 values (or floats that are all float16
    numbers) are counted on their bit patterns, float32 radix-sorted (compiled), others sorted
    by numpy. NaN raises ``ValueError``.
    """
    parts = _parts(x, y)
    if parts is not None:
        return _pad(parts)
    x = np.asarray(x)
    cols = x[None, :] if x.ndim == 1 else x.T
    if np.isnan(cols).any():
        raise ValueError("NaN among the values: a detector's scores are undefined")
    return _sorted_counts(cols, y)


# ----------------------------------------------------------------------------------------------
# Scores from counts


def _scan(p: np.ndarray, q: np.ndarray, P: np.ndarray):
    """Scores for counts in scan order (best first) ``[k, D]``: 2U, AP, best J and its slot."""
    tp = np.cumsum(p, axis=1)
    fp = np.cumsum(q, axis=1)
    u2 = (q * (2 * tp - p)).sum(1)  # int64: sum of n_off * (TP before + TP through)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(p > 0, tp / np.maximum(tp + fp, 1), 0.0)
        ap = (p * prec).sum(1) / P
        jac = np.where(p + q > 0, tp / (P[:, None] + fp), -1.0)
    best = np.argmax(jac, axis=1)  # the first of equal ones: the strictest threshold
    rows = np.arange(len(p))
    return u2, ap, tp[rows, best], fp[rows, best], best


def binary_scores(
    pos: np.ndarray, neg: np.ndarray, values: np.ndarray, sign=None
) -> dict[str, np.ndarray]:
    """``auroc ap f1 iou threshold sign`` ``[k]`` from :func:`counts`' output.

    ``sign`` (+1 / -1, scalar or ``[k]``) fixes the detector's direction; ``None`` takes the
    one with the higher AP (+1 on a tie), as the ranking's score does.
    """
    pos = np.asarray(pos, dtype=np.int64)
    neg = np.asarray(neg, dtype=np.int64)
    values = np.broadcast_to(np.asarray(values, dtype=np.float64), pos.shape)
    P, N = pos.sum(1), neg.sum(1)
    D = pos.shape[1]
    up = _scan(pos[:, ::-1], neg[:, ::-1], P)  # sign +1: highest values first
    dn = _scan(pos, neg, P)  # sign -1: lowest first
    if sign is None:
        s = np.where(dn[1] > up[1], -1, 1)
    else:
        s = np.broadcast_to(np.asarray(sign, dtype=np.int64), P.shape)
    plus = s > 0
    rows = np.arange(len(P))
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_up = up[0] / (2.0 * P * N)
        auc_dn = (2 * P * N - up[0]) / (2.0 * P * N)  # the same pairs, the other way round
    tp = np.where(plus, up[2], dn[2])
    fp = np.where(plus, up[3], dn[3])
    slot = np.where(plus, D - 1 - up[4], dn[4])  # back to the ascending order of ``values``
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "auroc": np.where(plus, auc_up, auc_dn),
            "ap": np.where(plus, up[1], dn[1]),
            "f1": 2.0 * tp / (P + tp + fp),
            "iou": tp / (P + fp),
            "threshold": values[rows, slot] if D else np.full(len(P), np.nan),
            "sign": s.astype(np.int64),
        }


def _scan_column_py(pos: np.ndarray, neg: np.ndarray):
    """:func:`binary_scores` of one column in one compiled pass each way: ``2U``, AP up and
    down, and for each direction the best slot with its TP and FP (AP summed compensated)."""
    D = pos.shape[0]
    P = 0
    for i in range(D):
        P += pos[i]
    out_ap = np.zeros(2)
    out_best = np.zeros((2, 3), np.int64)
    u2 = 0
    for way in range(2):  # 0: highest values first (sign +1), 1: lowest first
        tp = 0
        fp = 0
        acc = 0.0
        comp = 0.0
        best_j = -1.0
        for t in range(D):
            i = D - 1 - t if way == 0 else t
            p = pos[i]
            q = neg[i]
            tp += p
            fp += q
            if way == 0:
                u2 += q * (2 * tp - p)
            if p > 0:
                term = p * (tp / (tp + fp))
                s = acc + term  # Neumaier: the rounding of each addition, added back at the end
                if abs(acc) >= abs(term):
                    comp += (acc - s) + term
                else:
                    comp += (term - s) + acc
                acc = s
            if p + q > 0:
                j = tp / (P + fp)
                if j > best_j:  # strictly: the first of equal ones, the strictest threshold
                    best_j = j
                    out_best[way, 0] = i
                    out_best[way, 1] = tp
                    out_best[way, 2] = fp
        out_ap[way] = (acc + comp) / P
    return u2, out_ap, out_best


_scan_column = numba.njit(cache=True, nogil=True)(_scan_column_py) if numba is not None else None


def binary_metrics(x: np.ndarray, y: np.ndarray, sign=None) -> dict[str, np.ndarray]:
    """Exact ``auroc ap f1 iou threshold sign`` ``[k]`` of columns ``x`` ``[n, k]`` (or one
    ``[n]``) as detectors of ``y`` bool ``[n]``; see :func:`binary_scores` for ``sign``.

    The same numbers as ``binary_scores(*counts(x, y))``, computed column by column by compiled
    loops where numba is there (the padded arrays cost ~20 numpy passes over ``[k, D]``).
    """
    x = np.asarray(x)
    cols = x[None, :] if x.ndim == 1 else x.T  # [k, n]
    y = np.asarray(y, dtype=bool)
    if len(y) != cols.shape[1]:
        raise ValueError(f"{cols.shape[1]} values but {len(y)} labels")
    k = len(cols)
    if _scan_column is None or cols.dtype not in (np.float16, np.float32) or not len(y):
        return binary_scores(*counts(x, y), sign=sign)
    # float16 numbers: counts on the bit patterns, then a scan of the distinct values;
    # float32: a radix sort, then a scan of the sorted values.
    c16 = cols if cols.dtype == np.float16 else _as_float16(cols)
    parts = _f16_parts(c16, y) if c16 is not None else None
    signs = None if sign is None else np.broadcast_to(np.asarray(sign, dtype=np.int64), (k,))
    out = {c: np.full(k, np.nan) for c in ("auroc", "ap", "f1", "iou", "threshold")}
    out["sign"] = np.ones(k, dtype=np.int64)
    P = int(y.sum())
    N = len(y) - P
    y8 = y.view(np.uint8)
    for j in range(k):
        if parts is not None:
            u2, ap, best = _scan_column(parts[j][0], parts[j][1])
        else:
            u2, ap, best = _scan_sorted(_radix_column(cols[j], y8), P)
        s = (-1 if ap[1] > ap[0] else 1) if signs is None else int(signs[j])
        w = 0 if s > 0 else 1
        tp, fp = int(best[w, 1]), int(best[w, 2])
        with np.errstate(invalid="ignore", divide="ignore"):
            out["auroc"][j] = (u2 if s > 0 else 2 * P * N - u2) / np.float64(2 * P * N)
            out["ap"][j] = ap[w]
            out["f1"][j] = 2.0 * tp / (P + tp + fp) if P else np.nan
            out["iou"][j] = tp / (P + fp) if P else np.nan
        key = best[w, 0]
        out["threshold"][j] = parts[j][2][key] if parts is not None else _f32_key_values(key)
        out["sign"][j] = s
    return out


# ----------------------------------------------------------------------------------------------
# The histogram screen: scores from per-unit histograms on a coarse grid, and their bounds


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


def auroc_hist_error(h_in: np.ndarray, h_out: np.ndarray) -> np.ndarray:
    """Bound ``[H]`` on ``|auroc_from_hist - exact AUROC|``: a bin's pairs can be ordered any
    way, so it is half its ``n_in * n_out`` (over all pairs)."""
    h_in = np.asarray(h_in, dtype=np.float64)
    h_out = np.asarray(h_out, dtype=np.float64)
    mixed = h_in * h_out
    with np.errstate(invalid="ignore", divide="ignore"):
        return 0.5 * mixed.sum(1) / (h_in.sum(1) * h_out.sum(1))


def ap_hist_bounds(
    h_in: np.ndarray, h_out: np.ndarray, descending: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` ``[H]``: the exact AP of the values behind histograms ``[H, bins]``, however
    they lie within their bins, is in ``[lo, hi]`` (and so is :func:`ap_from_hist`).

    Bins are independent: with ``T, F`` the inside and outside counts before a bin (in scan
    order) and ``p, q`` its own, its ``p`` positives can at best share the precision
    ``(T + p) / (T + p + F)`` (all tied, above the bin's outside values) and at worst come one by
    one after them, ``sum_i (T + i) / (T + i + F + q)`` (a digamma difference). AP's ties
    count in favour, so even a bin holding inside values only is not exact unless all of them
    are one value (no bin of the store's grids holds a single float16 value).
    """
    h_in = np.asarray(h_in, dtype=np.float64)
    h_out = np.asarray(h_out, dtype=np.float64)
    if descending:
        h_in, h_out = h_in[:, ::-1], h_out[:, ::-1]
    p, q = h_in, h_out
    tp = np.cumsum(p, axis=1)
    fp = np.cumsum(q, axis=1)
    T, F = tp - p, fp - q
    n_in = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        hi = np.where(p > 0, p * tp / np.maximum(tp + F, 1), 0.0)
        a = T + F + q  # sum_{i=1..p} (T+i)/(a+i) = p - (F+q) * (psi(a+p+1) - psi(a+1))
        lo = np.where(p > 0, p - (F + q) * (digamma(a + p + 1) - digamma(a + 1)), 0.0)
        hi_s, lo_s = hi.sum(1) / n_in[:, 0], lo.sum(1) / n_in[:, 0]
        # A digamma difference is good to ~3e-14 absolute (arguments up to ~1e9), times F + q.
        slack = 1e-12 + 5e-14 * np.where(p > 0, F + q, 0.0).sum(1) / n_in[:, 0]
    return np.maximum(lo_s - slack, 0.0), np.minimum(hi_s + slack, 1.0)
