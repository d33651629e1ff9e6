"""Units whose value trends with the distance from their recording stream's start.

A recording reads the text as runs, each from a zero state (``store.runs``: the stream cuts and
document starts). A counter cell (one that adds about the same amount every character, like the
demo model's L1.c.0, which climbs by ~1 a character to 12,128) keeps counting from wherever its
run began, so its value says more about ``--streams`` and ``--warmup`` than about the text:
record the same text with other settings and it reads differently. Such units are flagged here
so the dashboard can say so beside their card and ranking.

For every neuron, over the warm positions (those the statistics cover): Pearson's ``r`` between
its value and the distance from its run's start, the least-squares ``slope`` (per 1,000
characters) and ``rise``, the slope times the mean warm length of a run (how far it moves over
a typical run, in its own units). ``drifting`` is ``|r| >= R_MIN``, i.e. distance alone explains
at least a quarter of the unit's variance. Why 0.5: a stationary unit's sample r is ~0 within
about ``sqrt(tau / n)`` (``tau`` its correlation length), a few hundredths on a store of 100k
characters; a unit that counts every character reaches 0.99. On the demo model over 200k
characters of Python (32 streams of ~5,000): median |r| 0.011, 90th percentile 0.034, then a
tail of leaky counters; 107 units reach 0.5, all of them L1 cell states (L1.c.185 at 0.999,
L1.c.0 at 0.99, +884 per 1,000 characters), 33 lie in 0.3-0.5 and 50 in 0.1-0.3.

Caveat: with one stream (or few runs), distance is position in the text, so a unit that tracks a
slow change of the text itself (code, then prose) also correlates with it. Many runs over
different text average that out; read ``r`` of a one-stream store with that in mind.

One pass over every array (a float32 ``[rows] @ [rows, H]`` product per block of rows); the means
and standard deviations come from the store's statistics. Cached per store.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lstmscope.analysis import store_cache

R_MIN = 0.5  # |r| at or above: drifting (distance explains >= 25% of the variance)
ROWS = 1 << 16  # rows per product: 64k x 256 float32 is 64 MB
COLUMNS = ("neuron", "layer", "kind", "unit", "slope", "r", "rise", "drifting")


def drift(store, *, r_min: float = R_MIN) -> pd.DataFrame:
    """One row per neuron of ``store`` (see the module docstring), in store order."""
    cache = store_cache(store)
    key = ("drift", float(r_min))
    if key not in cache:
        cache[key] = _drift(store, r_min)
    return cache[key].copy()


def _drift(store, r_min: float) -> pd.DataFrame:
    warm = ~np.asarray(store.cold, dtype=bool)
    dist = store.distance().astype(np.float64)  # [N]
    n = int(warm.sum())
    d_mean = dist[warm].mean() if n else np.nan
    d_std = dist[warm].std() if n else np.nan
    # Centred distance on warm rows, 0 elsewhere: sum(dc * x) is n * cov(x, d) for any x.
    dc = np.where(warm, dist - d_mean, 0.0).astype(np.float32)
    runs = store.runs
    run_warm = np.maximum(runs[:, 1] - runs[:, 0] - int(store.meta.get("warmup", 0)), 0)
    mean_run = float(run_warm[run_warm > 0].mean()) if (run_warm > 0).any() else 0.0
    H = store.hidden_size
    parts = []
    for li in store.layers:
        for kind in store.kinds:
            arr = store.array(li, kind)
            st = store.stat_arrays(li, kind)
            sx = np.asarray(st["std"], dtype=np.float64)
            # Centred on the unit's mean: a nearly constant unit (a saturated gate at 0.99999)
            # would otherwise lose its covariance to float32 rounding of sum(dc) * 0.99999.
            mean = np.nan_to_num(np.asarray(st["mean"], dtype=np.float32))
            cov = np.zeros(H)
            for a in range(0, store.n, ROWS):
                b = min(a + ROWS, store.n)
                block = np.asarray(arr[a:b]) - mean  # [m, H] float32
                # a NaN or inf on a warm row makes the column NaN; cold rows are left out
                good = (np.isfinite(block) | ~warm[a:b, None]).all(0)
                cov += np.where(good, dc[a:b] @ np.where(np.isfinite(block), block, 0), np.nan)
            cov /= max(n, 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.clip(cov / (sx * d_std), -1.0, 1.0)
                slope = cov / d_std**2
            r = np.where(sx > 0, r, np.nan)
            parts.append(
                pd.DataFrame(
                    {
                        "neuron": [f"L{li}.{kind}.{u}" for u in range(H)],
                        "layer": li,
                        "kind": kind,
                        "unit": np.arange(H),
                        "slope": slope * 1000.0,
                        "r": r,
                        "rise": slope * mean_run,
                        "drifting": np.abs(r) >= r_min,  # NaN compares False
                    }
                )
            )
    df = pd.concat(parts, ignore_index=True)[list(COLUMNS)]
    df.attrs.update(r_min=r_min, runs=len(runs), mean_run=mean_run)
    return df
