"""Which part of the text each batch row reads in each chunk: the stream plan.

The text is read as ``B`` streams in parallel, each stream a queue of *runs*: contiguous spans
that start from a zero state (a document start, or a cut made so streams are equally long).
``plan_streams`` lays the runs out over the rows, chunk by chunk; ``chunk_inputs`` gives the ids
each row reads in one chunk and the next character each position is scored on. Plain numpy:
nothing here runs the model (``lstmscope.model.trace.run_plan`` does).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StreamPlan:
    """How a text of ``n`` characters is read as ``streams`` rows of ``chunk_len`` positions.

    ``runs`` ``[R, 2]`` are the spans that start from a zero state. For chunk ``k`` and row ``b``:
    ``start[k, b]`` is the first text position read (``-1`` when the row is idle), ``length`` how
    many positions are real (the rest is padding), ``offset`` the distance from the run's start to
    ``start`` (0 means the state is reset before this chunk), ``run_stop`` the end of that run.
    """

    n: int
    streams: int
    chunk_len: int
    warmup: int
    runs: np.ndarray  # [R, 2] int64
    start: np.ndarray  # [K, B] int64
    length: np.ndarray  # [K, B] int64
    offset: np.ndarray  # [K, B] int64
    run_stop: np.ndarray  # [K, B] int64

    @property
    def chunks(self) -> int:
        return self.start.shape[0]

    def cold(self) -> np.ndarray:
        """``[n]`` bool: the first ``warmup`` positions of every run."""
        cold = np.zeros(self.n, dtype=bool)
        for a, b in self.runs:
            cold[a : min(b, a + self.warmup)] = True
        return cold

    def distance(self) -> np.ndarray:
        """``[n]`` int64: how many characters each position is from its run's start."""
        d = np.arange(self.n, dtype=np.int64)
        starts = np.zeros(self.n, dtype=np.int64)
        starts[self.runs[:, 0]] = self.runs[:, 0]
        np.maximum.accumulate(starts, out=starts)
        return d - starts


def run_edges(n: int, documents: Sequence[tuple[int, int]] | None) -> np.ndarray:
    """``[E]`` sorted positions where a run must start (0, every document start) and ``n``."""
    starts = np.zeros(0, dtype=np.int64)
    if documents is not None:
        docs = np.asarray(documents, dtype=np.int64).reshape(-1, 2)
        bad = ~((docs[:, 0] >= 0) & (docs[:, 0] <= docs[:, 1]) & (docs[:, 1] <= n))
        if bad.any():
            a, b = docs[np.argmax(bad)].tolist()
            raise ValueError(f"document ({a}, {b}) lies outside the text of {n} characters")
        starts = docs[:, 0]
    return np.unique(np.concatenate([[0, n], starts]).astype(np.int64))


def cut_runs(edges: np.ndarray, n: int, streams: int) -> np.ndarray:
    """``[R, 2]`` (start, stop) of the runs between ``edges`` (:func:`run_edges`) for
    ``streams`` rows, in text order. A segment much longer than a stream's share is cut into
    equal pieces, so that the rows finish together; each piece starts cold. Vectorised: choosing
    the stream count tries every count over tens of thousands of documents."""
    target = max(1, -(-n // streams))
    a, seg_len = edges[:-1], np.diff(edges)
    keep = seg_len > 0
    a, seg_len = a[keep], seg_len[keep]
    pieces = -(-seg_len // target)  # ceil; <= the segment's length, so no piece is empty
    seg = np.repeat(np.arange(len(seg_len)), pieces)
    j = np.arange(len(seg)) - (np.cumsum(pieces) - pieces)[seg]
    L, p = seg_len[seg], pieces[seg]
    return np.stack([a[seg] + L * j // p, a[seg] + L * (j + 1) // p], axis=1).astype(np.int64)


def plan_streams(
    n: int,
    streams: int,
    chunk_len: int,
    warmup: int = 0,
    documents: Sequence[tuple[int, int]] | None = None,
) -> StreamPlan:
    """Split ``n`` positions into runs and lay them out over ``streams`` rows.

    Without documents the text is cut into ``streams`` equal contiguous runs (one run when
    ``streams == 1``: the exact single pass). With documents, state is reset at every document
    start and documents longer than ``n / streams`` are cut. Runs go to the least loaded row,
    longest first, and each row reads its runs in text order.
    """
    if n < 1:
        raise ValueError("nothing to read: the text is empty")
    if streams < 1 or chunk_len < 1 or warmup < 0:
        raise ValueError("streams and chunk_len must be at least 1, warmup at least 0")
    runs = cut_runs(run_edges(n, documents), n, streams)
    chunks_of = -(-(runs[:, 1] - runs[:, 0]) // chunk_len)  # ceil
    rows: list[list[int]] = [[] for _ in range(min(streams, len(runs)))]
    heap = [(0, b) for b in range(len(rows))]
    for r in sorted(range(len(runs)), key=lambda r: (-chunks_of[r], r)):
        load, b = heapq.heappop(heap)
        rows[b].append(r)
        heapq.heappush(heap, (load + int(chunks_of[r]), b))
    K = max(sum(int(chunks_of[r]) for r in row) for row in rows)
    B = len(rows)
    start = np.full((K, B), -1, dtype=np.int64)
    length = np.zeros((K, B), dtype=np.int64)
    offset = np.zeros((K, B), dtype=np.int64)
    run_stop = np.zeros((K, B), dtype=np.int64)
    for b, row in enumerate(rows):
        k = 0
        for r in sorted(row, key=lambda r: runs[r, 0]):
            a, e = int(runs[r, 0]), int(runs[r, 1])
            for p in range(a, e, chunk_len):
                start[k, b], length[k, b] = p, min(chunk_len, e - p)
                offset[k, b], run_stop[k, b] = p - a, e
                k += 1
    return StreamPlan(n, B, chunk_len, warmup, runs, start, length, offset, run_stop)


def chunk_inputs(plan: StreamPlan, k: int, ids: np.ndarray):
    """ids ``[T, B]``, next-character ids ``[T, B]`` and whether each has a target (same run)."""
    T = plan.chunk_len
    start, length, stop = plan.start[k], plan.length[k], plan.run_stop[k]
    t = np.arange(T)[:, None]  # [T, 1]
    pos = start[None, :] + t  # [T, B]
    real = t < length[None, :]
    x = np.where(real, ids[np.clip(pos, 0, plan.n - 1)], 0)
    has_next = real & (pos + 1 < stop[None, :])
    y = np.where(has_next, ids[np.clip(pos + 1, 0, plan.n - 1)], 0)
    return x, y, has_next
