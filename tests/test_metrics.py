"""Exact detector scores against scikit-learn and brute force; the histogram screen's bounds.

Tolerances come from float rounding, not from a machine: AUROC is a ratio of exact integers
(one rounding; sklearn sums trapezoids), AP a sum of ``D <= n`` products (ours compensated,
sklearn's pairwise), so ``8 n eps`` covers both with a wide margin.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, jaccard_score, roc_auc_score

from lstmscope.analysis import metrics as M
from lstmscope.analysis.metrics import (
    ap_from_hist,
    ap_hist_bounds,
    auroc_from_hist,
    auroc_hist_error,
    binary_metrics,
    binary_scores,
    counts,
)

EPS = np.finfo(np.float64).eps


def _tol(n: int) -> float:
    return 8 * n * EPS


def _columns(rng, n: int) -> np.ndarray:
    """``[n, 6]`` float64 columns with the ties a store holds: a saturated gate (exact 0s and
    1s), a tanh-like column on a coarse grid, signed zeros, a constant, and plain noise."""
    x = np.empty((n, 6))
    g = 1 / (1 + np.exp(-rng.normal(0, 6, n)))
    g[rng.random(n) < 0.3] = 1.0
    g[rng.random(n) < 0.2] = 0.0
    x[:, 0] = g
    x[:, 1] = np.round(np.tanh(rng.normal(size=n)) * 16) / 16
    x[:, 2] = np.where(rng.random(n) < 0.5, 0.0, -0.0) * (rng.random(n) < 0.5) + rng.normal(
        0, 1, n
    ) * (rng.random(n) < 0.5)
    x[:, 3] = 0.25
    x[:, 4] = rng.normal(size=n)
    x[:, 5] = np.round(rng.normal(size=n) * 3)
    return x


def _labels(rng, x: np.ndarray, prevalence: float) -> np.ndarray:
    """On more often where column 1 is high: real structure, with overlap."""
    p = prevalence * (1 + np.tanh(2 * x[:, 1]))
    return rng.random(len(x)) < p


def _brute_best(x: np.ndarray, y: np.ndarray, sign: int) -> tuple[float, float]:
    """Best F1 and IoU over every threshold between distinct values (predicted on: ``sign * x
    >= sign * t``, t each distinct value), by counting."""
    best_f1 = best_iou = 0.0
    P = y.sum()
    for t in np.unique(x):
        pred = sign * x >= sign * t
        tp = np.sum(pred & y)
        fp = np.sum(pred & ~y)
        best_f1 = max(best_f1, 2 * tp / (P + tp + fp))
        best_iou = max(best_iou, tp / (P + fp))
    return best_f1, best_iou


@pytest.mark.parametrize("dtype", ["float16", "float32", "float32-dense", "float64"])
@pytest.mark.parametrize("prevalence", [0.04, 0.3])
def test_exact_scores_match_sklearn_and_brute_force(dtype, prevalence):
    rng = np.random.default_rng(7)
    n = 3000
    x = _columns(rng, n)
    y = _labels(rng, x, prevalence)
    if dtype == "float16":
        x = x.astype(np.float16)
    elif dtype == "float32":
        x = x.astype(np.float16).astype(np.float32)  # float32 holding float16 numbers
    elif dtype == "float32-dense":
        x = (x + rng.normal(0, 1e-3, x.shape) * (rng.random(x.shape) < 0.5)).astype(np.float32)
    for sign in (None, 1, -1):
        m = binary_metrics(x, y, sign=sign)
        ref = binary_scores(*counts(x, y), sign=sign)  # the numpy road: the same numbers
        for c in ("auroc", "ap", "f1", "iou", "threshold", "sign"):
            np.testing.assert_allclose(m[c], ref[c], rtol=0, atol=_tol(n), err_msg=c)
        for j in range(x.shape[1]):
            s = int(m["sign"][j])
            if sign is not None:
                assert s == sign
            col = x[:, j].astype(np.float64)
            assert m["auroc"][j] == pytest.approx(roc_auc_score(y, s * col), abs=_tol(n))
            assert m["ap"][j] == pytest.approx(average_precision_score(y, s * col), abs=_tol(n))
            if sign is None:  # the better sign by AP
                other = average_precision_score(y, -s * col)
                assert m["ap"][j] >= other - _tol(n)
            f1, iou = _brute_best(col, y, s)
            assert m["f1"][j] == pytest.approx(f1, abs=_tol(n)), (dtype, j)
            assert m["iou"][j] == pytest.approx(iou, abs=_tol(n)), (dtype, j)
            # The threshold reached it, as sklearn counts it.
            pred = s * col >= s * m["threshold"][j]
            assert f1_score(y, pred) == pytest.approx(f1, abs=_tol(n))
            assert jaccard_score(y, pred) == pytest.approx(iou, abs=_tol(n))
            assert m["iou"][j] == pytest.approx(m["f1"][j] / (2 - m["f1"][j]), abs=_tol(n))


def test_threshold_is_the_strictest_among_equal_ones():
    # Values 3, 2, 1: {3} and {3, 2} give IoU 1/2 (tp 1, fp 0 / tp 2, fp 2 with P = 2)...
    x = np.array([3.0, 2.0, 2.0, 2.0, 1.0])
    y = np.array([True, True, False, False, False])
    m = binary_metrics(x, y, sign=1)
    assert m["iou"][0] == pytest.approx(0.5) and m["threshold"][0] == 3.0
    lo = binary_metrics(-x, y, sign=-1)  # mirrored: the same set, the same strictness
    assert lo["threshold"][0] == -3.0 and lo["iou"][0] == pytest.approx(0.5)
    dense = (x + 1e-4).astype(np.float32)  # not float16 numbers: the radix road
    for s in (1, -1):
        m = binary_metrics(s * dense, y, sign=s)
        assert m["threshold"][0] == s * dense[0] and m["iou"][0] == pytest.approx(0.5)


def test_compiled_kernels_equal_their_python_source():
    rng = np.random.default_rng(3)
    x = _columns(rng, 500)
    y = _labels(rng, x, 0.2)
    y8 = y.view(np.uint8)
    for j in range(x.shape[1]):
        bits = np.ascontiguousarray(x[:, j], dtype=np.float32).view(np.uint32)
        a, bad = M._radix_sort(bits, y8)
        a_py, bad_py = M._radix_sort_py(bits, y8)
        assert np.array_equal(a, a_py) and bad == bad_py is False
        assert np.all(np.diff(a.astype(np.float64)) >= 0)
        got, want = M._scan_sorted(a, int(y.sum())), M._scan_sorted_py(a, int(y.sum()))
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])
        p, q, _ = counts(x[:, j].astype(np.float32), y)
        got, want = M._scan_column(p[0], q[0]), M._scan_column_py(p[0], q[0])
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])


def test_counts_agree_across_roads():
    rng = np.random.default_rng(5)
    x = _columns(rng, 2000).astype(np.float16)
    y = _labels(rng, x.astype(np.float64), 0.1)
    by_bits = counts(x, y)  # float16: counted on the bit patterns
    by_sort = M._sorted_counts(np.ascontiguousarray(x.T.astype(np.float64)), y)
    by_radix = M._pad(M._radix_parts(np.ascontiguousarray(x.T.astype(np.float32)), y))
    for other in (by_sort, by_radix):
        for a, b in zip(by_bits, other, strict=True):
            np.testing.assert_array_equal(a, b)
    p, q, v = by_bits
    assert (p + q).sum(1).tolist() == [2000] * x.shape[1]
    assert not np.any(v[:, 1:] <= v[:, :-1])  # ascending, distinct (NaN pads compare False)
    assert np.sum(v[2] == 0) == 1  # -0.0 and +0.0: one value


def test_nan_and_shape_errors():
    y = np.array([True, False, True])
    for dt in (np.float16, np.float32, np.float64):
        with pytest.raises(ValueError, match="NaN"):
            binary_metrics(np.array([0.1, np.nan, 0.3], dtype=dt), y)
    with pytest.raises(ValueError, match="labels"):
        binary_metrics(np.zeros(4, np.float32), y)


# ----------------------------------------------------------------------------------------------
# The histogram screen


def test_auroc_and_ap_from_hist_match_sklearn_on_binned_values():
    rng = np.random.default_rng(0)
    bins = rng.integers(0, 40, size=5000)  # values already on a grid: bins are exact
    y = rng.random(5000) < 0.1 + 0.02 * bins / 4
    h_in = np.bincount(bins[y], minlength=40)[None, :]
    h_out = np.bincount(bins[~y], minlength=40)[None, :]
    assert auroc_from_hist(h_in, h_out)[0] == pytest.approx(roc_auc_score(y, bins), abs=1e-12)
    assert ap_from_hist(h_in, h_out)[0] == pytest.approx(
        average_precision_score(y, bins), abs=1e-12
    )
    assert ap_from_hist(h_in, h_out, descending=False)[0] == pytest.approx(
        average_precision_score(y, -bins), abs=1e-12
    )
    lo, hi = ap_hist_bounds(h_in, h_out)
    assert lo[0] <= average_precision_score(y, bins) <= hi[0]


@pytest.mark.parametrize("seed", range(6))
def test_screen_bounds_hold_the_exact_scores(seed):
    """Values on a fine grid, histograms on a coarse one (8 fine values per bin): the exact
    AP lies in ``ap_hist_bounds`` and the exact AUROC within ``auroc_hist_error`` of the
    screen's, whatever the values inside the bins."""
    rng = np.random.default_rng(seed)
    n, nb = 4000, 50
    fine = rng.integers(0, nb * 8, size=(n, 5))
    fine[:, 0] = np.where(rng.random(n) < 0.5, nb * 8 - 1, fine[:, 0])  # saturated
    y = rng.random(n) < 0.05 + 0.3 * (fine[:, 1] > nb * 6)
    h_in = np.stack([np.bincount(f[y] // 8, minlength=nb) for f in fine.T])
    h_out = np.stack([np.bincount(f[~y] // 8, minlength=nb) for f in fine.T])
    err = auroc_hist_error(h_in, h_out)
    screen_auc = auroc_from_hist(h_in, h_out)
    for desc in (True, False):
        lo, hi = ap_hist_bounds(h_in, h_out, descending=desc)
        screen = ap_from_hist(h_in, h_out, descending=desc)
        assert np.all(lo <= screen + 1e-12) and np.all(screen <= hi + 1e-12)
        for j in range(fine.shape[1]):
            s = 1 if desc else -1
            ap = average_precision_score(y, s * fine[:, j])
            assert lo[j] <= ap <= hi[j], (j, lo[j], ap, hi[j])
    for j in range(fine.shape[1]):
        assert abs(screen_auc[j] - roc_auc_score(y, fine[:, j])) <= err[j] + 1e-12
