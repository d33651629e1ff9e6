"""The exact stage of a binary ranking (:mod:`~lstmscope.analysis.rank`): the head's rows
recomputed from the stored columns with :func:`~lstmscope.analysis.metrics.binary_metrics`."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lstmscope.analysis.metrics import binary_metrics

EXACT_MARGIN = 64  # extra rows the exact top may recompute at least (it may recompute top)
EXACT_THREADS = min(4, os.cpu_count() or 1)  # blocks of columns recomputed at once
EXACT_BLOCK = 32  # columns gathered per pass over an array: [1M, 32] float32 is 128 MB
GATHER_ROWS = 16384  # rows per read when gathering columns


def gather_columns(arr, units, use: np.ndarray | None = None) -> np.ndarray:
    """``arr[use][:, units].T``: columns ``[k, n]`` (the array's dtype), one per unit, contiguous.

    Read in blocks of 16384 rows (a column of a row-major memory map is one value per 512
    bytes), each transposed into place: ~0.1 s for 36 of 256 columns of 1M rows from the page
    cache. The store decodes only the columns asked for.
    """
    units = np.asarray(units, dtype=np.intp)
    N = arr.shape[0]
    n = N if use is None else int(use.sum())
    out = np.empty((len(units), n), dtype=arr.dtype)
    o = 0
    for a in range(0, N, GATHER_ROWS):
        b = min(a + GATHER_ROWS, N)
        block = np.asarray(arr[a:b, units])  # [m, k]
        if use is not None:
            block = block[use[a:b]]
        out[:, o : o + len(block)] = block.T
        o += len(block)
    return out


def exact_scores(store, streams, rows: np.ndarray, on_use, use) -> dict[str, np.ndarray]:
    """Exact ``auroc ap f1 iou threshold sign`` of neurons ``rows`` (sorted stream-major
    indices), read from the stored columns a stream and a block of units at a time; blocks run
    in ``EXACT_THREADS`` threads (the reads and the compiled sorts release the GIL)."""
    H = store.hidden_size
    out = {c: np.full(len(rows), np.nan) for c in ("auroc", "ap", "f1", "iou", "threshold")}
    out["sign"] = np.ones(len(rows), dtype=np.int64)
    mask = None if use.all() else use
    jobs = []
    for si in np.unique(rows // H):
        at = np.flatnonzero(rows // H == si)
        jobs += [(si, b) for b in np.array_split(at, -(-len(at) // EXACT_BLOCK))]

    def one(job):
        si, block = job
        cols = gather_columns(store.array(*streams[si]), rows[block] % H, mask)  # [k, n]
        return block, binary_metrics(cols.T, on_use)

    with ThreadPoolExecutor(max_workers=EXACT_THREADS) as pool:
        for block, m in pool.map(one, jobs):
            for c, v in m.items():
                out[c][block] = v
    return out


def exact_head(store, streams, flat, hi, top: int, asked, on_use, use) -> bool:
    """Recompute rows of ``flat`` (the screen's columns, stream-major) exactly, in place: the
    screen's top ``top``, the ``asked`` ones, then every other row whose exact AP could still
    reach the ``top``-th exact score (``hi``, the screen's upper bound, at least that). Returns
    whether that second set was complete (at most ``max(top, EXACT_MARGIN)`` more rows): then
    the ``top`` best exact scores are the ``top`` best of all neurons. ``top == 0`` (the screen
    alone) returns False: nothing was made sure of."""
    score = flat["score"]
    n = len(score)

    def recompute(rows):
        rows = np.unique(rows)
        if len(rows):
            ex = exact_scores(store, streams, rows, on_use, use)
            for c, v in ex.items():
                flat[c][rows] = v
            flat["score"][rows] = ex["ap"]
            flat["exact"][rows] = True

    by_screen = np.argsort(-score, kind="stable")
    recompute(np.concatenate([by_screen[: min(top, n)], asked]))
    if top == 0:  # the screen alone: no exact head to be sure of
        return False
    if top >= n:
        return True
    kth = np.sort(score[flat["exact"]])[-top]  # the top-th exact score so far
    more = np.flatnonzero(~flat["exact"] & (hi >= kth))
    cap = max(top, EXACT_MARGIN)
    sure = len(more) <= cap
    if not sure:  # the likeliest by the screen; the head may miss a neuron
        more = more[np.argsort(-score[more], kind="stable")[:cap]]
    recompute(more)
    return sure
