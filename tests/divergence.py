"""What reading in streams costs: a diagnostic the tests use (``tests/test_trace.py``,
``tests/test_record.py``).

``stream_divergence`` measures how far activations at a given distance from a stream's start are
from the exact single-pass reading.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lstmscope.model.cells import CharRNN
from lstmscope.model.plan import plan_streams
from lstmscope.model.trace import check_selection, run_plan

DEFAULT_BUCKETS = (0, 10, 30, 100, 300, 1000, 3000, 10000)


def stream_divergence(
    model,
    ids: np.ndarray | Sequence[int] | str,
    streams: int,
    *,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    layers: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    chunk_len: int = 256,
    device: torch.device | str | None = None,
):
    """How far a ``streams``-stream reading is from the exact single pass, by distance.

    Returns a ``pandas.DataFrame`` with one row per (layer, kind, distance bucket): ``lo``, ``hi``
    (distance from the stream's start, in characters), ``count`` (positions x units), ``max``,
    ``p99`` and ``median`` of ``|streamed - single pass|``, ``scale`` (std of the single-pass
    values of that kind, so the differences can be read relative to it) and ``frac_gt_1pct``
    (fraction of values off by more than 1% of ``scale``). The single pass is kept in a
    temporary float32 file, so memory stays bounded whatever the text length.

    ``model`` is a ``CharRNN`` or a ``LoadedModel``; with a ``LoadedModel``, ``ids`` may be the
    text itself.
    """
    import pandas as pd

    if not isinstance(model, CharRNN):  # a LoadedModel
        if isinstance(ids, str):
            ids = model.vocab.encode(ids)
        model = model.model
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    layers, kinds = check_selection(model, layers, kinds)
    H = model.config.hidden_size
    edges = np.asarray([*buckets, np.iinfo(np.int64).max], dtype=np.int64)
    nb = len(edges) - 1
    # |diff| histogram on a log grid: 1e-9 .. 1e4, 20 bins per decade, for median and p99.
    log_edges = np.concatenate([[0.0], np.logspace(-9, 4, 13 * 20 + 1), [np.inf]])
    nbins = len(log_edges) - 1
    names = [(li, k) for li in layers for k in kinds]
    acc = {
        key: {
            "hist": np.zeros((nb, len(log_edges) - 1), dtype=np.int64),
            "max": np.zeros(nb),
            "sum": 0.0,
            "sum2": 0.0,
            "count": 0,
        }
        for key in names
    }
    with tempfile.TemporaryDirectory(prefix="lstmscope-div-") as tmp:
        ref = {
            key: np.lib.format.open_memmap(
                Path(tmp) / f"L{key[0]}.{key[1]}.npy", "w+", np.float32, (n, H)
            )
            for key in names
        }
        single = plan_streams(n, 1, max(chunk_len, 1024))
        for res in run_plan(model, ids, single, layers=layers, kinds=kinds, device=device):
            p, m = int(single.start[res.k, 0]), int(single.length[res.k, 0])
            for key, v in res.acts.items():
                a = v[:m, 0].float().cpu().numpy()
                ref[key][p : p + m] = a
                acc[key]["sum"] += float(a.sum(dtype=np.float64))
                acc[key]["sum2"] += float(np.square(a, dtype=np.float64).sum())
                acc[key]["count"] += a.size
        plan = plan_streams(n, streams, chunk_len)
        for res in run_plan(model, ids, plan, layers=layers, kinds=kinds, device=device):
            for b in range(plan.streams):
                p, m = int(plan.start[res.k, b]), int(plan.length[res.k, b])
                if m == 0:
                    continue
                d0 = int(plan.offset[res.k, b])
                dist = d0 + np.arange(m)
                bucket = np.searchsorted(edges, dist, side="right") - 1  # [m]
                for key, v in res.acts.items():
                    diff = np.abs(v[:m, b].float().cpu().numpy() - ref[key][p : p + m])  # [m, H]
                    a = acc[key]
                    # bin of |diff| on the log grid: 0 below 1e-9, then 20 per decade
                    with np.errstate(divide="ignore"):
                        lb = np.floor((np.log10(diff) + 9.0) * 20.0) + 1
                    lb = np.clip(np.nan_to_num(lb, nan=0.0, neginf=0.0), 0, nbins - 1)
                    lb = lb.astype(np.int64)
                    for j in np.unique(bucket):
                        rows = bucket == j
                        a["max"][j] = max(a["max"][j], float(diff[rows].max()))
                        a["hist"][j] += np.bincount(lb[rows].ravel(), minlength=nbins)
    rows = []
    mids = np.sqrt(log_edges[1:-2] * log_edges[2:-1])
    mids = np.concatenate([[0.0], mids, [log_edges[-2]]])
    for (li, kind), a in acc.items():
        mean = a["sum"] / max(a["count"], 1)
        scale = math.sqrt(max(a["sum2"] / max(a["count"], 1) - mean * mean, 0.0))
        for j in range(nb):
            h = a["hist"][j]
            total = int(h.sum())
            if total == 0:
                continue
            cum = np.cumsum(h)
            med = float(mids[np.searchsorted(cum, 0.5 * total)])
            p99 = float(mids[np.searchsorted(cum, 0.99 * total)])
            gt = float(h[log_edges[1:] > 0.01 * scale].sum()) / total if scale > 0 else 0.0
            rows.append(
                {
                    "layer": li,
                    "kind": kind,
                    "lo": int(edges[j]),
                    "hi": int(edges[j + 1]) if j + 1 < nb else None,
                    "count": total,
                    "max": float(a["max"][j]),
                    "p99": p99,
                    "median": med,
                    "scale": scale,
                    "frac_gt_1pct": gt,
                }
            )
    return pd.DataFrame(rows)
