"""How many streams a recording reads in parallel, and how long each one warms up.

A recording cuts the text into runs (every document start, then cuts for balance across the
``streams`` parallel rows); each run starts from a zero state, and its first ``warmup``
characters are *cold*: left out of the statistics and of every analysis. On a short text the
defaults (32 streams, 1,000 characters) would leave nothing warm, so a store must hold at least
half of its positions warm (:data:`MIN_WARM`) or it is not written:

- values the caller did not give are chosen from the text: fewer streams first (they only cost
  speed), then a shorter warm-up when even one stream is too cold (short documents);
- values the caller gave are kept, or refused with a message naming values that work.

Pure functions of the text's length and document spans: :func:`lstmscope.store.recorder.record` calls
:func:`choose_streams` before it writes anything.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from lstmscope.errors import StoreError
from lstmscope.model.plan import cut_runs, run_edges

log = logging.getLogger(__name__)

DEFAULT_STREAMS = 32  # enough rows to keep a GPU (or numba's second thread) busy
DEFAULT_WARMUP = 1000  # characters until a zero state is forgotten (bracket/quote cells settle)
MIN_WARM = 0.5  # a store holds at least this share of its positions warm


def run_lengths(
    n: int, streams: int, documents: Sequence[tuple[int, int]] | None = None
) -> np.ndarray:
    """``[R]`` lengths of the runs a recording of ``n`` characters over ``streams`` reads (those
    of ``plan_streams(...).runs``, in text order, without laying them out over the streams)."""
    return _lengths(run_edges(n, documents), n, streams)


def _lengths(edges: np.ndarray, n: int, streams: int) -> np.ndarray:
    runs = cut_runs(edges, n, streams)
    return runs[:, 1] - runs[:, 0]


def cold_count(
    n: int, streams: int, warmup: int, documents: Sequence[tuple[int, int]] | None = None
) -> int:
    """Positions a recording leaves cold: the first ``warmup`` characters of every run."""
    return int(np.minimum(run_lengths(n, streams, documents), warmup).sum())


def _warm_enough(n: int, cold: int) -> bool:
    return n - cold >= MIN_WARM * n


def _longest_warmup(n: int, lengths: np.ndarray, upto: int) -> int:
    """The longest warm-up ``<= upto`` that keeps enough warm over runs of ``lengths``."""
    lo, hi = 0, upto  # warm-up 0 leaves everything warm
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _warm_enough(n, int(np.minimum(lengths, mid).sum())):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _most_streams(n: int, warmup: int, documents, upto: int) -> int:
    """The most streams ``<= upto`` that keep enough warm with ``warmup`` (0: none do)."""
    edges = run_edges(n, documents)  # once: 100k documents took 0.3 s a stream count to plan
    for s in range(upto, 0, -1):
        if _warm_enough(n, int(np.minimum(_lengths(edges, n, s), warmup).sum())):
            return s
    return 0


def choose_streams(
    n: int,
    streams: int | None = None,
    warmup: int | None = None,
    documents: Sequence[tuple[int, int]] | None = None,
) -> tuple[int, int]:
    """``(streams, warmup)`` for recording ``n`` characters with at least half of them warm.

    ``None`` means "not given": chosen from the text (defaults :data:`DEFAULT_STREAMS`,
    :data:`DEFAULT_WARMUP` when they fit). Given values are checked; values that leave less
    than half warm raise ``StoreError`` naming values that work.
    """
    if streams is not None and streams < 1:
        raise StoreError("--streams must be at least 1")
    if warmup is not None and warmup < 0:
        raise StoreError("--warmup must be at least 0")
    if n < 1:
        raise StoreError("nothing to record: the text is empty")
    if streams is not None and warmup is not None:
        cold = cold_count(n, streams, warmup, documents)
        if not _warm_enough(n, cold):
            raise StoreError(_too_cold(n, streams, warmup, cold, documents))
        return streams, warmup
    if streams is not None:  # warm-up not given: the default, shortened if it must be
        w = _longest_warmup(n, run_lengths(n, streams, documents), DEFAULT_WARMUP)
        _note(n, streams, w, streams, DEFAULT_WARMUP)
        return streams, w
    w = DEFAULT_WARMUP if warmup is None else warmup
    s = _most_streams(n, w, documents, DEFAULT_STREAMS)
    if s:
        _note(n, s, w, DEFAULT_STREAMS, w)
        return s, w
    if warmup is not None:  # the given warm-up is too long even for one stream
        w1 = _longest_warmup(n, run_lengths(n, 1, documents), warmup)
        raise StoreError(
            f"--warmup {warmup:,} would leave less than half of the {n:,} characters warm even "
            f"with --streams 1 (every stream and document starts cold); pass --warmup {w1} or "
            "less, or leave --warmup out to have it chosen"
        )
    # Even one stream is too cold (a short text, or short documents): shorten the warm-up,
    # then take as many streams as that warm-up allows.
    w = _longest_warmup(n, run_lengths(n, 1, documents), DEFAULT_WARMUP)
    s = max(1, _most_streams(n, w, documents, DEFAULT_STREAMS))
    _note(n, s, w, DEFAULT_STREAMS, DEFAULT_WARMUP)
    return s, w


def _note(n: int, s: int, w: int, s0: int, w0: int) -> None:
    if (s, w) != (s0, w0):
        log.info(
            "%s characters: recording %d streams with a warm-up of %d characters (not %d and %d) "
            "so that at least half of the positions are warm",
            f"{n:,}", s, w, s0, w0,
        )  # fmt: skip


def _too_cold(n: int, streams: int, warmup: int, cold: int, documents) -> str:
    warm = 100 * (n - cold) / n
    s1 = _most_streams(n, warmup, documents, streams)
    w1 = _longest_warmup(n, run_lengths(n, streams, documents), warmup)
    fixes = [f"--streams {s1} --warmup {warmup}"] if s1 else []
    fixes.append(f"--streams {streams} --warmup {w1}")
    return (
        f"--streams {streams} --warmup {warmup} would leave only {warm:.0f}% of the {n:,} "
        "characters warm (the first --warmup characters of every stream and document are cold "
        f"and left out of the analyses; a store needs at least half warm): pass "
        f"{' or '.join(fixes)}, or leave both out to have them chosen from the text"
    )


def warm_note(n: int, n_warm: int, where: str) -> str | None:
    """What to tell a user about a store of ``n`` positions with ``n_warm`` warm ones (stores
    written before :func:`choose_streams` could be all or mostly cold); None when fine.

    With no warm position the statistics are empty: nothing can be ranked or summarised.
    """
    if n_warm >= MIN_WARM * n:
        return None
    again = (
        f"record it again (`lstmscope record RUN --data TEXT -o {where} --force`: without "
        "--streams/--warmup they are chosen so that at least half is warm)"
    )
    if n_warm == 0:
        return (
            f"{where}: all {n:,} positions are cold (the warm-up at the start of every recording "
            f"stream), so its statistics are empty and there is nothing to rank; {again}"
        )
    return (
        f"{where}: only {n_warm:,} of {n:,} positions are warm ({100 * n_warm / n:.0f}%); the "
        f"rest, each stream's warm-up, are left out, so statistics and scores rest on few "
        f"positions; {again}"
    )
