"""Record every activation of a model over a text into an activation store (see store.py).

One pass over the text: ``trace.run_plan`` drives the model over ``B`` streams in chunks of ``T``
positions; each layer's kinds are coded in the store's 16-bit block encoding (one block per
stream and chunk, ``lstmscope.store.encoding``; compiled on CPU), folded into per-neuron statistics on
the device (moments, min/max, histograms, top/bottom positions) and handed to a writer thread
that ``pwrite``s them into ``.npy`` files created with ``numpy.lib.format.open_memmap``. On CPU
the coding, statistics and predictions run in a second thread that reads the trace's buffers in
place while the main thread traces on (``_StatsWorker``, ``_LendingWorkspace``). Writing with
``pwrite`` rather than through the memory map keeps the process's resident memory flat (mapped
pages that were written count as resident until unmapped) and measured 2-4x faster here.

Interruption: the store directory holds ``record.json`` (what is being recorded) from the start
and ``progress/checkpoint.npz`` (chunks done, model state, statistics so far) every
``checkpoint_seconds``, written after the arrays are synced. Rerunning the same command resumes
from the checkpoint and produces the same store as an uninterrupted run; ``meta.json`` is written
last, so a store without it is refused by ``ActivationStore.open``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from lstmscope import __version__
from lstmscope.disk import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    folder_lock,
    make_dir,
    remove_stale_temps,
    temp_owner,
)
from lstmscope.errors import LstmscopeError, StoreError, WriteError
from lstmscope.model.checkpoint import LoadedModel
from lstmscope.model.trace import (
    StreamPlan,
    Workspace,
    check_selection,
    chunk_inputs,
    plan_streams,
    predictions,
    run_plan,
)
from lstmscope.names import GATE_KINDS
from lstmscope.store.encoding import CODE_DTYPE, F32_MAX, PARAM_DTYPE, block_layout, encode_torch
from lstmscope.store.reader import (
    BLOCKS,
    DTYPE,
    F16_MAX,
    FORMAT,
    QUANTILES,
    RUNS,
    SAT_HIGH,
    SAT_LOW,
    TOP_K,
    VERSION,
    act_path,
    hist_edges,
    hist_lut,
    hist_path,
    hist_quantiles,
    npy_header,
    param_path,
    stats_path,
)
from lstmscope.store.streams import choose_streams

log = logging.getLogger(__name__)

CHUNK_BUDGET = 64 << 20  # bytes of float32 activations per layer and chunk: bounds memory
STORE_FILES = (
    "meta.json",
    "record.json",
    "text.txt",
    "ids.npy",
    "cold.npy",
    RUNS,
    BLOCKS,
    "documents.npy",
    "acts",
    "stats",
    "pred",
    "progress",
    ".lock",
)


@dataclass(frozen=True)
class RecordSummary:
    path: Path
    n: int  # characters recorded
    bytes: int  # store size on disk
    unknown: int  # characters unseen in training (mapped to the unknown id)
    streams: int
    warmup: int
    cold: int  # positions left out of the statistics
    seconds: float  # wall time of this call
    chars_per_s: float  # recording speed of this call (0 when nothing was recorded)
    resumed_from: int  # characters already done by an interrupted run (0: a fresh start)
    already_complete: bool  # the store already held exactly this recording


def default_chunk_len(streams: int, hidden_size: int, kinds: int = 6) -> int:
    """Positions per stream and chunk: one layer's float32 kinds stay within ``CHUNK_BUDGET``."""
    per_position = 4 * hidden_size * max(kinds, 2)
    t = CHUNK_BUDGET // (per_position * max(streams, 1))
    return int(min(4096, max(32, t)))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def estimate_bytes(
    n: int, n_arrays: int, hidden_size: int, hist_bins: int = 0, blocks: int = 0
) -> int:
    """Peak disk use: activations (codes, and a centre and scale per block and unit), ids, cold,
    predictions, text; and per array the statistics with their histogram, twice (the progress
    checkpoint holds a copy while they are written), which is what dominates a small store."""
    per_char = n_arrays * hidden_size * 2 + 4 + 1 + 4 + 5 * 4 + 5 * 2 + 4
    scales = n_arrays * blocks * hidden_size * 2 * PARAM_DTYPE.itemsize
    return n * per_char + scales + 2 * n_arrays * hidden_size * (hist_bins + 4 * TOP_K + 16) * 8


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ----------------------------------------------------------------------------------------------
# Per-neuron statistics, accumulated on the device


GROUP = 16  # rows per group when screening for top/bottom-k candidates
HIST_BLOCK = 16  # units per bincount on CPU


@functools.cache
def _kernels():
    """lstmscope.store.kernels, or None where numba cannot be imported (then torch folds on CPU too,
    about 2x slower): imported when first needed, as numba takes ~0.3 s to import."""
    try:
        from lstmscope.store import kernels
    except ImportError as e:
        log.warning("numba is not available (%s): statistics with torch, about 2x slower", e)
        return None
    return kernels


def _u16_to_int32_works(device) -> bool:
    try:
        x = torch.zeros(2, dtype=torch.float16, device=device)
        torch.empty(2, dtype=torch.int32, device=device).copy_(x.view(torch.uint16))
        return True
    except (RuntimeError, TypeError, AttributeError):
        return False


class KindStats:
    """Running statistics of one ``[*, H]`` stream of activations (one layer and kind).

    Everything is exact except the quantiles (from the histogram): moments are merged per chunk
    with Chan et al.'s formula in float64 (each chunk centred on the running mean first, so
    float32 sums lose nothing to cancellation); min, max and top/bottom-k are the float32
    values themselves, unclamped (format 1 stores held them rounded to float16, clamped to
    +-65,504 for ``c``). Only the histogram works on float16 (its grid; the quantiles it gives
    are stretched to the true min and max in its end bins, see ``hist_quantiles``).
    """

    FIELDS = ("n", "mean", "m2", "vmin", "vmax", "hist", "top_val", "top_pos", "bot_val", "bot_pos")

    def __init__(
        self,
        kind: str,
        hidden_size: int,
        device,
        top_k: int = TOP_K,
        workspace=None,
        fused: bool | None = None,
    ):
        self.kind, self.H, self.k = kind, hidden_size, top_k
        self.nb = len(hist_edges(kind)) - 1
        d = torch.device(device)
        # On CPU the compiled loops of lstmscope.store.kernels; elsewhere torch (``fused=False``
        # takes the torch code on CPU too, for tests).
        kernels = _kernels() if d.type == "cpu" and fused is not False else None
        if fused and kernels is None:
            raise ValueError("the compiled statistics need numba and a CPU")
        self.fused = kernels is not None
        if self.fused:
            self.kernels = kernels
            self.n = 0
            self.mean = np.zeros(hidden_size)
            self.m2 = np.zeros(hidden_size)
            self.vmin = np.full(hidden_size, np.inf, dtype=np.float32)
            self.vmax = np.full(hidden_size, -np.inf, dtype=np.float32)
            self.hist = np.zeros(hidden_size * self.nb, dtype=np.int64)
            self.lut_np = hist_lut(kind)
            # Heaps, lowest ranked first (see lstmscope.store.kernels); empty slots rank lowest.
            self.top_val = np.full((top_k, hidden_size), -np.inf, dtype=np.float32)
            self.top_pos = np.full((top_k, hidden_size), -1, dtype=np.int64)
            self.bot_val = np.full((top_k, hidden_size), np.inf, dtype=np.float32)
            self.bot_pos = np.full((top_k, hidden_size), -1, dtype=np.int64)
            return
        self.ws = workspace or Workspace(d)
        self.u16 = _u16_to_int32_works(d)
        self.lut = torch.from_numpy(hist_lut(kind).copy()).to(d)  # [65536] int32
        self.offsets = (torch.arange(hidden_size, device=d, dtype=torch.int32) * self.nb).view(
            1, -1
        )
        self.n = torch.zeros((), dtype=torch.int64, device=d)
        self.mean = torch.zeros(hidden_size, dtype=torch.float64, device=d)
        self.m2 = torch.zeros(hidden_size, dtype=torch.float64, device=d)
        self.vmin = torch.full((hidden_size,), math.inf, device=d)
        self.vmax = torch.full((hidden_size,), -math.inf, device=d)
        self.hist = torch.zeros(hidden_size * self.nb, dtype=torch.int64, device=d)
        self.top_val = torch.full((top_k, hidden_size), -math.inf, device=d)  # [k, H] best first
        self.top_pos = torch.full((top_k, hidden_size), -1, dtype=torch.int64, device=d)
        self.bot_val = torch.full((top_k, hidden_size), math.inf, device=d)
        self.bot_pos = torch.full((top_k, hidden_size), -1, dtype=torch.int64, device=d)

    def update(self, v: torch.Tensor, v16: torch.Tensor, pos: torch.Tensor) -> None:
        """``v`` ``[n, H]`` float32 (rows may be strided), ``v16`` ``[n, H]`` its float16 rounding
        in any row order (only the histogram reads it), ``pos`` ``[n]`` text positions of ``v``."""
        n, H = v.shape
        if n == 0:
            return
        if self.fused:
            self._update_fused(v, v16, pos)
            return
        # Moments: centre on the running mean (first chunk: its first row), sum in float32,
        # merge in float64.
        shift = self.mean.float() if int(self.n) > 0 else v[0].clone()
        d = torch.sub(v, shift, out=self.ws.get("d", (n, H), torch.float32))
        s1 = d.sum(0).double()
        s2 = d.mul_(d).sum(0).double()
        self._merge_moments(n, shift.double(), s1, s2, self.n.double())
        self.n += n
        self._histogram(v16)

        # Extremes of groups of rows: min/max come from them, and they screen top-k candidates.
        ng = n // GROUP
        tail = v[ng * GROUP :]
        gmax = v[: ng * GROUP].view(ng, GROUP, H).amax(1) if ng else None  # [ng, H]
        gmin = v[: ng * GROUP].view(ng, GROUP, H).amin(1) if ng else None
        parts_max = [x.amax(0) for x in (gmax, tail) if x is not None and x.shape[0]]
        parts_min = [x.amin(0) for x in (gmin, tail) if x is not None and x.shape[0]]
        torch.maximum(self.vmax, torch.stack(parts_max).amax(0), out=self.vmax)
        torch.minimum(self.vmin, torch.stack(parts_min).amin(0), out=self.vmin)
        self._merge(v, pos, gmax, True)
        self._merge(v, pos, gmin, False)

    def _merge_moments(self, n: int, shift, s1, s2, n_a) -> None:
        """Fold a chunk of ``n`` rows into the running mean and m2 (in place; torch tensors or
        numpy arrays alike), from the chunk's float64 sums ``s1``/``s2`` of ``v - shift`` and
        its square, ``n_a`` rows seen before: Chan et al.'s parallel formula."""
        cmean = shift + s1 / n
        cm2 = (s2 - s1 * s1 / n).clip(min=0)
        tot = n_a + n
        delta = cmean - self.mean
        self.mean += delta * (n / tot)
        self.m2 += cm2 + delta * delta * (n_a * n / tot)

    def _update_fused(self, v: torch.Tensor, v16: torch.Tensor, pos: torch.Tensor) -> None:
        n = v.shape[0]
        # The compiled loops do not check bounds: a wrong shape would read past the arrays.
        if (
            v.shape != (n, self.H) or v16.shape != v.shape or pos.shape != (n,)
            or v.dtype != torch.float32 or v16.dtype != torch.float16 or pos.dtype != torch.int64
        ):  # fmt: skip
            raise ValueError(
                f"statistics of {tuple(v.shape)} {v.dtype} values, {tuple(v16.shape)} "
                f"{v16.dtype} and {tuple(pos.shape)} {pos.dtype} positions: expected "
                f"[n, {self.H}] float32, the same in float16 and [n] int64"
            )
        vn, pn = v.numpy(), pos.numpy()
        # Sums of v - shift in float64 around the running mean (the first chunk: its first
        # row), merged with Chan et al.'s formula, as on the torch road.
        shift = self.mean.copy() if self.n > 0 else vn[0].astype(np.float64)
        s1, s2 = np.zeros(self.H), np.zeros(self.H)
        self.kernels.fold_rows(
            vn, pn, shift, s1, s2, self.vmin, self.vmax,
            self.top_val, self.top_pos, self.bot_val, self.bot_pos,
        )  # fmt: skip
        self._merge_moments(n, shift, s1, s2, self.n)
        self.n += n
        bits = v16.view(torch.int16).numpy().view(np.uint16)
        self.kernels.count_bins(bits, self.lut_np, self.hist.reshape(self.H, self.nb))

    def _histogram(self, v16: torch.Tensor) -> None:
        """Count ``v16`` ``[n, H]`` into (unit, bin): the float16 bit pattern indexes a lookup
        table of bins (the table ``store.bin_index`` uses)."""
        n, H = v16.shape
        bits16 = v16.view(torch.int16)
        if v16.device.type == "cpu":
            # Bincount over blocks of 16 units: the block's counts stay in L2; one bincount over
            # all (unit, bin) pairs thrashes the cache and was measured 1.3-2x slower.
            bits = self.ws.get("bits", (n, H), torch.int32)
            if self.u16:
                bits.copy_(v16.view(torch.uint16))
            else:
                bits.copy_(bits16).bitwise_and_(0xFFFF)
            idx = self.ws.get("idx", (n, H), torch.int32)
            torch.index_select(self.lut, 0, bits.view(-1), out=idx.view(-1))
            hist = self.hist.view(H, self.nb)
            loc = self.offsets[:, :HIST_BLOCK]
            for j0 in range(0, H, HIST_BLOCK):
                blk = idx[:, j0 : j0 + HIST_BLOCK] + loc[:, : min(HIST_BLOCK, H - j0)]
                counts = torch.bincount(blk.view(-1), minlength=blk.shape[1] * self.nb)
                hist[j0 : j0 + HIST_BLOCK].view(-1).add_(counts)
            return
        bits = self.ws.get("bits", (n, H), torch.int32)
        if self.u16:
            bits.copy_(v16.view(torch.uint16))
        else:
            bits.copy_(bits16).bitwise_and_(0xFFFF)
        idx = self.ws.get("idx", (n * H,), torch.int32)
        torch.index_select(self.lut, 0, bits.view(-1), out=idx)
        idx.view(n, H).add_(self.offsets)
        self.hist += torch.bincount(idx, minlength=H * self.nb)

    def _merge(self, v, pos, gext, largest: bool) -> None:
        """Fold this chunk into the running top (or bottom) k of every column.

        Only rows that can enter the top k are looked at: those in a group whose extreme beats
        the current k-th value. Early on that is most groups, and the k best groups of each
        column are taken (every top-k value lies in one of them); later few groups qualify, and
        their values that beat the k-th are laid out per column and merged with one ``topk``.
        """
        vals, poss = (self.top_val, self.top_pos) if largest else (self.bot_val, self.bot_pos)
        k, H = self.k, self.H
        n = v.shape[0]
        ng = 0 if gext is None else gext.shape[0]
        t0 = ng * GROUP
        kth = vals[-1]  # [H]
        dev = v.device

        def better(x, t):
            return x > t if largest else x < t

        beats = better(gext, kth) if ng else None
        if ng >= k and int(beats.sum()) > k * H:  # about the first chunk only
            gi = gext.topk(k, dim=0, largest=largest).indices  # [k, H] best groups
            rows = (gi.unsqueeze(1) * GROUP + torch.arange(GROUP, device=dev).view(1, -1, 1)).view(
                k * GROUP, H
            )
            if t0 < n:
                tail = torch.arange(t0, n, device=dev).view(-1, 1).expand(n - t0, H)
                rows = torch.cat([rows, tail])
            cand = v.gather(0, rows)  # [m, H]
            tv, ti = cand.topk(k, dim=0, largest=largest)
            tp = pos[rows.gather(0, ti)]
            allv, allp = torch.cat([vals, tv]), torch.cat([poss, tp])  # old first
            mv, mi = allv.topk(k, dim=0, largest=largest)
            vals.copy_(mv)
            poss.copy_(allp.gather(0, mi))
            return
        if ng:
            gi, gc = beats.nonzero(as_tuple=True)
            rows = ((gi * GROUP).unsqueeze(1) + torch.arange(GROUP, device=dev)).reshape(-1)
            cols = gc.repeat_interleave(GROUP)
        else:
            rows = cols = torch.empty(0, dtype=torch.int64, device=dev)
        if t0 < n:  # rows outside whole groups: all of them are candidates
            ti, tc = better(v[t0:], kth).nonzero(as_tuple=True)
            rows, cols = torch.cat([rows, ti + t0]), torch.cat([cols, tc])
        if rows.numel() == 0:
            return
        x = v[rows, cols]
        keep = better(x, kth[cols])
        x, rows, cols = x[keep], rows[keep], cols[keep]
        if x.numel() == 0:
            return
        # Lay the candidates out densely, column by column (padded), and merge with one topk.
        m = x.numel()
        order = torch.sort(cols, stable=True).indices
        cs = cols[order]
        counts = torch.bincount(cols, minlength=H)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(m, device=dev) - starts[cs]
        M = int(counts.max())
        pad = -math.inf if largest else math.inf
        dense_v = torch.full((M, H), pad, device=dev)
        dense_p = torch.full((M, H), -1, dtype=torch.int64, device=dev)
        dense_v[rank, cs] = x[order]
        dense_p[rank, cs] = pos[rows[order]]
        allv, allp = torch.cat([vals, dense_v]), torch.cat([poss, dense_p])  # old first
        mv, mi = allv.topk(k, dim=0, largest=largest)
        vals.copy_(mv)
        poss.copy_(allp.gather(0, mi))

    def state_dict(self) -> dict[str, np.ndarray]:
        """The running state as numpy arrays, top/bottom k best first (the checkpoint's form,
        the same on every device)."""
        if not self.fused:
            return {f: getattr(self, f).cpu().numpy() for f in self.FIELDS}
        out = {f: np.array(getattr(self, f)) for f in self.FIELDS}
        best_first = self.kernels.best_first
        out["top_val"], out["top_pos"] = best_first(self.top_val, self.top_pos, 1.0)
        out["bot_val"], out["bot_pos"] = best_first(self.bot_val, self.bot_pos, -1.0)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for f in self.FIELDS:
            cur = getattr(self, f)
            src = np.asarray(state[f])
            if np.shape(src) != tuple(np.shape(cur)):
                raise StoreError(f"checkpoint statistics '{f}' have shape {tuple(src.shape)}")
            if self.fused:
                setattr(self, f, src.astype(cur.dtype) if src.ndim else int(src))
            else:
                cur.copy_(torch.from_numpy(src))
        if self.fused:
            heap = self.kernels.heap_from_best_first
            self.top_val, self.top_pos = heap(self.top_val, self.top_pos, 1.0)
            self.bot_val, self.bot_pos = heap(self.bot_val, self.bot_pos, -1.0)

    def finalize(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(npz members, histogram counts ``[H, bins]``)."""
        st = self.state_dict()
        n = int(st["n"])
        counts = st["hist"].reshape(self.H, self.nb)

        def ranked(vals: np.ndarray, poss: np.ndarray) -> np.ndarray:
            """float32 ``[H, k]`` values best first, NaN in empty slots (short texts)."""
            return np.where(poss.T >= 0, vals.T, np.nan).astype(np.float32)

        empty = n == 0
        vmin = np.where(empty, np.nan, st["vmin"]).astype(np.float32)
        vmax = np.where(empty, np.nan, st["vmax"]).astype(np.float32)
        std = np.sqrt(np.maximum(st["m2"] / max(n, 1), 0.0))
        # Clipped: an inf min/max (a diverged model) would make the end bins' quantiles NaN.
        quant = hist_quantiles(
            counts, hist_edges(self.kind), QUANTILES,
            np.clip(vmin, -F32_MAX, F32_MAX), np.clip(vmax, -F32_MAX, F32_MAX),
        )  # fmt: skip
        if self.kind in GATE_KINDS:
            # Edges are k/1000: bins below 100 hold exactly the values < 0.1, bins from 900 on
            # exactly the float16 values > 0.9 (0.9 itself is not a float16).
            lo_bins = int(np.searchsorted(hist_edges(self.kind), SAT_LOW))
            hi_bins = int(np.searchsorted(hist_edges(self.kind), SAT_HIGH))
            sat_left = counts[:, :lo_bins].sum(1) / max(n, 1)
            sat_right = counts[:, hi_bins:].sum(1) / max(n, 1)
        else:
            sat_left = sat_right = np.full(self.H, np.nan)
        mean = st["mean"]
        if n == 0:
            mean, std = np.full(self.H, np.nan), np.full(self.H, np.nan)
        out = {
            "count": np.asarray(n, dtype=np.int64),
            "mean": mean.astype(np.float64),
            "std": std.astype(np.float64),
            "min": vmin,
            "max": vmax,
            "quantiles": quant.astype(np.float64),
            "q": np.asarray(QUANTILES),
            "sat_left": np.asarray(sat_left, dtype=np.float64),
            "sat_right": np.asarray(sat_right, dtype=np.float64),
            "top_pos": st["top_pos"].T.copy(),  # [H, k]
            "top_val": ranked(st["top_val"], st["top_pos"]),
            "bottom_pos": st["bot_pos"].T.copy(),
            "bottom_val": ranked(st["bot_val"], st["bot_pos"]),
        }
        return out, counts


# ----------------------------------------------------------------------------------------------
# Writing rows into .npy files from a background thread


class _TaskThread:
    """Runs queued ``fn()`` tasks in order in one background thread.

    ``release()`` (to hand a buffer back) runs after each task even when it fails; after a
    failure the remaining tasks are skipped and the error surfaces on the caller at the next
    ``put``, ``drain`` or ``check``. The queue is bounded, so a slow thread holds the caller back
    instead of letting memory grow.
    """

    thread_name = "lstmscope-worker"

    def __init__(self, max_pending: int = 64):
        self.q: queue.Queue = queue.Queue(max_pending)
        self.error: BaseException | None = None
        self.discard = False
        self.thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self.thread.start()

    def _context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def _run(self) -> None:
        with self._context():
            while True:
                task = self.q.get()
                try:
                    if task is None:
                        return
                    fn, release = task
                    try:
                        if self.error is None and not self.discard:
                            fn()
                    finally:
                        if release is not None:
                            release()
                except BaseException as e:  # surfaced on the caller by check()
                    self.error = e
                finally:
                    self.q.task_done()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, fn: Callable[[], None], release=None) -> None:
        self.check()
        self.q.put((fn, release))

    def drain(self) -> None:
        self.q.join()
        self.check()

    def close(self, discard: bool = False) -> None:
        self.discard = self.discard or discard
        self.q.put(None)
        self.thread.join()


def _pwrite_rows(f: _NpyFile, arr: np.ndarray, spans: list[tuple[int, int, int]]) -> None:
    """``arr`` ``[B, T, ...]``; each span ``(row, byte offset, rows)`` is one ``pwrite``."""
    try:
        for b, offset, m in spans:
            os.pwrite(f.fd, memoryview(arr[b, :m]).cast("B"), offset)
    except OSError as e:
        raise WriteError(f.path, e) from e


class _Writer(_TaskThread):
    """pwrite()s chunk rows into open .npy files while the main thread computes the next ones."""

    thread_name = "lstmscope-writer"

    def check(self) -> None:
        if self.error is not None:
            e = self.error
            if isinstance(e, LstmscopeError):  # a WriteError names the file and what to do
                raise e
            raise StoreError(f"writing the store failed: {e}") from e

    def write(
        self, f: _NpyFile, arr: np.ndarray, spans: list[tuple[int, int, int]], release=None
    ) -> None:
        """Queue ``arr``'s rows for writing; ``release()`` runs once they are written."""
        self.put(lambda: _pwrite_rows(f, arr, spans), release)


class _StatsWorker(_TaskThread):
    """Runs each layer's coding, statistics and write queueing in one thread, in order.

    The main thread copies a layer's kinds out of the trace's reused buffers and goes on to the
    next layer or chunk, while this thread folds the copies into the statistics (one thread and
    FIFO order: the same arithmetic in the same order as inline, so the same bits). Large torch
    operations release the GIL, so on two cores the statistics mostly hide behind the trace.
    """

    thread_name = "lstmscope-stats"

    def __init__(self, num_threads: int, max_pending: int = 64):
        self.num_threads = num_threads  # before the thread starts: _context reads it
        super().__init__(max_pending)

    def _context(self) -> contextlib.AbstractContextManager:
        # A fixed intra-op thread count (record gives it half the caller's): reductions split,
        # and so round, the same way on every run with the same threads.
        torch.set_num_threads(self.num_threads)
        return torch.inference_mode()


class _LendingWorkspace:
    """A trace workspace that lends each buffer out until it is given back.

    The trace's gates and c live in workspace buffers that the next layer would overwrite; with
    this workspace every ``get`` hands out a buffer nobody else holds (at most ``sets`` per
    name, then ``get`` waits), so the statistics thread can read a layer's acts in place while
    the trace goes on. ``take_lent()`` returns what was lent since the last call.
    """

    def __init__(self, device, sets: int = 2):
        self.device = torch.device(device)
        self.sets = sets
        self.cond = threading.Condition()
        self.free: dict[tuple, list[torch.Tensor]] = {}
        self.made: dict[tuple, int] = {}
        self.lent: list[tuple[tuple, torch.Tensor]] = []

    def get(self, name: str, shape: tuple[int, ...], dtype=torch.float32, device=None):
        numel = math.prod(shape)
        key = (name, dtype, numel)
        with self.cond:
            while not self.free.get(key) and self.made.get(key, 0) >= self.sets:
                self.cond.wait()
            if self.free.get(key):
                buf = self.free[key].pop()
            else:
                buf = torch.empty(numel, dtype=dtype, device=device or self.device)
                self.made[key] = self.made.get(key, 0) + 1
            self.lent.append((key, buf))
        return buf.view(shape)

    def take_lent(self) -> list[tuple[tuple, torch.Tensor]]:
        with self.cond:
            lent, self.lent = self.lent, []
        return lent

    def give_back(self, lent: list[tuple[tuple, torch.Tensor]]) -> None:
        with self.cond:
            for key, buf in lent:
                self.free.setdefault(key, []).append(buf)
            self.cond.notify_all()


class _BufferPool:
    """Reusable ``[B, T, H]`` buffers (the codes being written): taken by one thread, freed by
    another."""

    def __init__(self, shape: tuple[int, ...], device, size: int, dtype=torch.int16):
        self.free: queue.Queue = queue.Queue()
        for _ in range(size):
            self.free.put(torch.empty(shape, dtype=dtype, device=device))

    def take(self) -> torch.Tensor:
        return self.free.get()  # blocks while the writer is behind: bounded memory

    def give(self, buf: torch.Tensor) -> None:
        self.free.put(buf)


class _NpyFile:
    """A .npy file created with ``open_memmap`` and then written with ``pwrite``."""

    def __init__(self, path: Path, dtype, shape: tuple[int, ...], create: bool, nan_at=None):
        if create:
            make_dir(path.parent)
            try:
                mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
                if nan_at is not None:  # the rest stays the zeros of a fresh (sparse) file
                    mm[nan_at] = np.nan
                mm.flush()
                del mm
            except OSError as e:
                raise WriteError(path, e) from e
        _, _, self.offset = npy_header(path)
        self.path = path
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        self.fd = os.open(path, os.O_RDWR)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


# ----------------------------------------------------------------------------------------------
# The recorder


def _job(loaded: LoadedModel, text_hash: str, n: int, plan: StreamPlan, layers, kinds, docs):
    return {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint_sha256": loaded.sha256,
        "text_sha256": text_hash,
        "n": n,
        "streams": plan.streams,
        "warmup": plan.warmup,
        "chunk_len": plan.chunk_len,
        "layers": list(layers),
        "kinds": list(kinds),
        "documents_sha256": None
        if docs is None
        else hashlib.sha256(np.ascontiguousarray(docs).tobytes()).hexdigest(),
    }


def _diff(a: dict, b: dict) -> str:
    names = {
        "checkpoint_sha256": "model",
        "text_sha256": "text",
        "n": "text length",
        "documents_sha256": "documents",
    }
    keys = [k for k in a.keys() | b.keys() if a.get(k) != b.get(k)]
    return ", ".join(sorted(names.get(k, k) for k in keys)) or "nothing"


def _dir_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def _store_file(name: str) -> bool:
    """A store's own file, or the temp file of an atomic write of one."""
    return name in STORE_FILES or temp_owner(name) in STORE_FILES


def _clear_store(root: Path) -> None:
    """Remove a store's own files; refuse a folder that holds anything else."""
    foreign = [p.name for p in root.iterdir() if not _store_file(p.name)]
    if foreign:
        raise StoreError(
            f"{root} holds files that are not part of a store ({', '.join(sorted(foreign)[:3])}); "
            "it was not touched: choose another output folder"
        )
    for name in STORE_FILES:
        if name == ".lock":  # held by this process while it records
            continue
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _normalize_documents(documents, n: int) -> np.ndarray | None:
    if documents is None:
        return None
    docs = np.asarray(sorted((int(a), int(b)) for a, b in documents), dtype=np.int64).reshape(-1, 2)
    bad = (docs[:, 0] < 0) | (docs[:, 1] > n) | (docs[:, 1] < docs[:, 0])
    if bad.any():
        a, b = docs[bad.argmax()]
        raise StoreError(f"document ({a}, {b}) does not lie within the text of {n} characters")
    return docs


def record(
    loaded: LoadedModel,
    text: str,
    out: str | Path,
    *,
    documents: Sequence[tuple[int, int]] | None = None,
    streams: int | None = None,
    warmup: int | None = None,
    kinds: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    chunk_len: int | None = None,
    force: bool = False,
    progress: bool = True,
    checkpoint_seconds: float = 60.0,
    hook: Callable[[int], None] | None = None,
    _accelerator_path: bool = False,
) -> RecordSummary:
    """Record ``text`` through ``loaded``'s model into the store folder ``out``.

    ``streams`` contiguous parts of the text are read in parallel, each from a zero state (and
    the state is reset at every document start); the first ``warmup`` characters of each are
    marked cold and left out of the statistics. ``streams=1`` is the exact single pass. Not
    given, both are chosen from the text; at least half of the positions must stay warm
    (:func:`lstmscope.store.streams.choose_streams`).
    ``kinds``/``layers`` default to all. ``device`` defaults to where the model is.

    Rerunning with the same inputs resumes an interrupted recording, or returns at once when the
    store is complete; other inputs are refused unless ``force``. ``hook(chunk)`` is called after
    each chunk (tests use it to interrupt). ``_accelerator_path`` (tests) takes, on CPU, the road
    a GPU takes: the fused kernel plus the rebuild, and the statistics inline.
    """
    t_start = time.perf_counter()
    root = Path(out)
    model = loaded.model
    cfg = loaded.config
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    if next(model.parameters()).device != dev:
        model = copy.deepcopy(model).to(dev)
    n = len(text)
    if n == 0:
        raise StoreError("nothing to record: the text is empty")
    try:
        layers, kinds = check_selection(model, layers, kinds)
    except ValueError as e:
        raise StoreError(str(e)) from None
    H = cfg.hidden_size
    docs = _normalize_documents(documents, n)
    streams, warmup = choose_streams(n, streams, warmup, None if docs is None else docs.tolist())
    chunk_len = chunk_len or default_chunk_len(streams, H, len(kinds))
    plan = plan_streams(n, streams, chunk_len, warmup, None if docs is None else docs.tolist())
    th = text_sha256(text)
    job = _job(loaded, th, n, plan, layers, kinds, docs)

    # -- what is already there --------------------------------------------------------------
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root} is a file; choose a folder for the store")
    if root.is_dir():
        foreign = [p.name for p in root.iterdir() if not _store_file(p.name)]
        if foreign:
            raise StoreError(
                f"{root} exists and is not an lstmscope store (it holds "
                f"{', '.join(sorted(foreign)[:3])}); choose another output folder"
            )
    make_dir(root)
    busy = f"another `lstmscope record` is writing to {root} right now"
    with folder_lock(root, busy, StoreError):
        # A run killed mid-write left them; progress/ and stats/ hold only our files.
        remove_stale_temps(root, STORE_FILES)
        for folder in (root / "progress", root / "stats"):
            remove_stale_temps(folder)
        if (root / "meta.json").is_file():
            try:
                m = json.loads((root / "meta.json").read_text(encoding="utf-8"))
                old_job = m.get("record", {}).get("job", {})
            except (OSError, json.JSONDecodeError, AttributeError):
                m, old_job = {}, {}
            if old_job == job and not force:
                log.info("%s already holds this recording; nothing to do", root)
                return RecordSummary(
                    root, n, _dir_size(root), int(m.get("unknown_chars", 0)), plan.streams,
                    warmup, int(m.get("cold", 0)), time.perf_counter() - t_start, 0.0, n, True,
                )  # fmt: skip
            if not force:
                raise StoreError(
                    f"{root} already holds a recording that differs in {_diff(old_job, job)}; "
                    "use --force to replace it, or choose another output folder"
                )
            _clear_store(root)
        elif (root / "record.json").is_file():
            try:
                old_job = json.loads((root / "record.json").read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                old_job = {}
            if old_job != job:
                if not force:
                    raise StoreError(
                        f"{root} holds an interrupted recording that differs in "
                        f"{_diff(old_job, job)}; rerun that command to finish it, use --force "
                        "to start over, or choose another output folder"
                    )
                _clear_store(root)
        else:
            _clear_store(root)  # leftovers of a run killed before it wrote record.json
        return _record_locked(
            loaded, model, dev, text, root, plan, job, layers, kinds, docs, progress,
            checkpoint_seconds, hook, t_start, _accelerator_path,
        )  # fmt: skip


def _load_checkpoint(root: Path, job: dict) -> dict | None:
    path = root / "progress" / "checkpoint.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        log.warning("%s is unreadable (%s); starting over", path, e)
        return None
    if str(data.get("job", "")) != json.dumps(job, sort_keys=True):
        log.warning("%s belongs to another recording; starting over", path)
        return None
    return data


def _record_locked(
    loaded,
    model,
    dev,
    text,
    root,
    plan,
    job,
    layers,
    kinds,
    docs,
    progress,
    ckpt_s,
    hook,
    t0,
    accelerator_path=False,
) -> RecordSummary:
    from tqdm.auto import tqdm

    n, H, B, T = plan.n, loaded.config.hidden_size, plan.streams, plan.chunk_len
    vocab = loaded.vocab
    ckpt = _load_checkpoint(root, job) if (root / "record.json").is_file() else None
    # One block of the encoding per stream and chunk: its centre and scale go to row
    # block_of[k, b] of each .scale.npy, in text order.
    block_starts, block_of = block_layout(plan.start, plan.length, n)
    n_blocks = len(block_starts) - 1

    def open_arrays(create: bool) -> tuple[dict, dict, dict]:
        keys = [(li, kind) for li in layers for kind in kinds]
        files = {k: _NpyFile(act_path(root, *k), CODE_DTYPE, (n, H), create) for k in keys}
        scales = {
            k: _NpyFile(param_path(root, *k), PARAM_DTYPE, (n_blocks, 2, H), create) for k in keys
        }
        # No character precedes a run's start: its loss is NaN.
        pred = {
            "loss": _NpyFile(root / "pred/loss.npy", np.float32, (n,), create, plan.runs[:, 0]),
            "top_ids": _NpyFile(root / "pred/top_ids.npy", np.int32, (n, 5), create),
            "top_prob": _NpyFile(root / "pred/top_prob.npy", np.float16, (n, 5), create),
        }
        return files, scales, pred

    if ckpt is not None:
        try:
            files, scales, pred = open_arrays(create=False)
        except StoreError as e:
            log.warning("cannot resume (%s); starting over", e)
            ckpt = None
    fresh = ckpt is None
    if fresh:
        need = estimate_bytes(
            n, len(layers) * len(kinds), H, max(len(hist_edges(k)) for k in kinds), n_blocks
        )
        free = shutil.disk_usage(root).free
        if need > free:
            raise StoreError(
                f"the store needs about {_size(need)} and {root} has {_size(free)} free; free "
                "some space, or record fewer --kinds/--layers or characters (--max-chars)"
            )
        for name in ("acts", "stats", "pred", "progress"):
            if (root / name).exists():
                shutil.rmtree(root / name)
        atomic_write_text(root / "record.json", json.dumps(job, indent=1, sort_keys=True))
    unknown = vocab.count_unknown(text)
    if unknown:
        log.warning(
            "%d of %d characters were never seen in training; they map to the unknown id",
            unknown,
            n,
        )
    cold = plan.cold()  # at most half: lstmscope.store.streams.choose_streams saw to it
    if fresh or not (root / "ids.npy").is_file():
        ids = vocab.encode(text).astype(np.int32)
        atomic_write_bytes(root / "text.txt", text.encode("utf-8", errors="surrogatepass"))
        # ids.npy last: a resume that finds it skips this whole group.
        small = {"cold.npy": cold, RUNS: plan.runs, BLOCKS: block_starts, "ids.npy": ids}
        if docs is not None:
            small = {"documents.npy": docs, **small}
        for name, arr in small.items():
            with atomic_open(root / name) as f:
                np.save(f, arr)
    else:
        ids = np.load(root / "ids.npy")
    if fresh:  # zero-filled sparse files, written chunk by chunk
        files, scales, pred = open_arrays(create=True)
    ws = Workspace(dev)
    # The accelerator road's statistics are torch's, also when tests take it on CPU.
    fused = dev.type == "cpu" and not accelerator_path
    stats = {key: KindStats(key[1], H, dev, workspace=ws, fused=fused) for key in files}
    kernels = _kernels() if fused else None  # the compiled encoder, or encode_torch
    # Enough buffers for two layers' worth of kinds in flight: the writer never starves.
    pool = _BufferPool((B, T, H), dev, 2 * len(kinds) + 2)
    start_chunk, state = 0, None
    if not fresh:
        start_chunk = int(ckpt["next_chunk"])
        state = []
        for li, layer in enumerate(model.layers):
            h = torch.from_numpy(ckpt[f"state.{li}.h"]).to(dev)
            state.append(
                (h, torch.from_numpy(ckpt[f"state.{li}.c"]).to(dev)) if layer.cell == "lstm" else h
            )
        for (li, kind), st in stats.items():
            st.load_state_dict({f: ckpt[f"L{li}.{kind}.{f}"] for f in KindStats.FIELDS})
    done_chars = int(plan.length[:start_chunk].sum())
    if not fresh:
        log.info("resuming %s at character %d of %d", root, done_chars, n)

    # Created inside the try below, so that whatever happens they are closed and the caller's
    # thread count comes back.
    writer: _Writer | None = None
    worker: _StatsWorker | None = None
    trace_ws: _LendingWorkspace | None = None
    bar = None
    threads_before = torch.get_num_threads()
    t_rec = time.perf_counter()
    last_ckpt = time.perf_counter()

    def save_checkpoint(next_chunk: int, state: list) -> None:
        """Queue a checkpoint behind the writes of every chunk before ``next_chunk``.

        The writer thread makes those writes durable (fsync) and then writes the checkpoint, so
        a checkpoint never claims rows that a crash could lose, and the trace does not wait
        for the disk meanwhile.
        """
        if worker is not None:
            worker.drain()  # the statistics (and the writes they queue) are up to date
        payload = {
            "next_chunk": np.asarray(next_chunk),
            "job": np.asarray(json.dumps(job, sort_keys=True)),
        }
        # Copies: on CPU .numpy() shares memory with tensors that keep changing.
        for li, s in enumerate(state):
            if isinstance(s, tuple):
                payload[f"state.{li}.h"] = s[0].cpu().numpy().copy()
                payload[f"state.{li}.c"] = s[1].cpu().numpy().copy()
            else:
                payload[f"state.{li}.h"] = s.cpu().numpy().copy()
        for (li, kind), st in stats.items():
            for f, a in st.state_dict().items():
                payload[f"L{li}.{kind}.{f}"] = a.copy()

        def commit() -> None:
            for f in (*files.values(), *scales.values(), *pred.values()):
                try:
                    f.sync()
                except OSError as e:  # a disk that fills while flushing: name the file
                    raise WriteError(f.path, e) from e
            with atomic_open(root / "progress" / "checkpoint.npz") as fh:
                np.savez(fh, **payload)

        writer.put(commit)

    # Per chunk: the positions each row covers, which rows are warm, text positions of rows.
    ar_t = torch.arange(T, device=dev).view(T, 1)  # [T, 1]
    chunk_ctx: dict = {}

    def begin_chunk(k: int) -> None:
        start = torch.from_numpy(plan.start[k]).to(dev).view(1, B)
        length = torch.from_numpy(plan.length[k]).to(dev).view(1, B)
        offset = torch.from_numpy(plan.offset[k]).to(dev).view(1, B)
        warm = (ar_t < length) & (ar_t + offset >= plan.warmup)  # [T, B]
        pos = (start + ar_t).view(-1)  # [T*B], t-major like the acts
        if bool(warm.all()):
            sel_tb = None
        else:
            sel_tb = warm.view(-1).nonzero().view(-1)
            pos = pos.index_select(0, sel_tb)
        spans = {}
        for key, f in (*files.items(), *pred.items()):
            spans[key] = [
                (b, f.offset + int(plan.start[k, b]) * f.row_bytes, int(plan.length[k, b]))
                for b in range(B)
                if plan.length[k, b] > 0
            ]
        # Each real (chunk, stream) row is one block: one row of every .scale.npy.
        sf = next(iter(scales.values()))
        spans["scale"] = [
            (b, sf.offset + int(block_of[k, b]) * sf.row_bytes, 1)
            for b in range(B)
            if plan.length[k, b] > 0
        ]
        chunk_ctx.update(k=k, sel_tb=sel_tb, pos=pos, spans=spans)

    def fold(li: int, kind: str, v: torch.Tensor, ctx: dict) -> None:
        """Code ``v`` ``[T, B, H]`` for the store (one block per stream, in the [B, T, H] order
        of the file so each row is one write), fold it into the statistics, queue the writes."""
        sel_tb, pos, k = ctx["sel_tb"], ctx["pos"], ctx["k"]
        codes = pool.take()
        # Moments and top/bottom k are of the float32 values; histograms count the stored
        # values (rounded to float16 for the grid), so a reader's histogram of any rows is
        # exactly a part of them (rank subtracts one from the other).
        v16 = ws.get("v16", (T, B, H), torch.float16)
        if kernels is not None:
            params = np.empty((B, 2, H), dtype=PARAM_DTYPE)
            dec = ws.get("dec", (T, B, H), torch.float32)
            kernels.encode_chunk(v.numpy(), plan.length[k], codes.numpy(), params, dec.numpy())
            v16.copy_(dec)  # clamped to float16's range already
        else:
            params, dec = encode_torch(v, plan.length[k], codes)
            v16.copy_(dec).clamp_(-F16_MAX, F16_MAX)
        # Moments, min/max and top/bottom k fold the float32 values unclamped (a cell state may
        # pass float16's 65,504); only the histogram's float16 grid clamps (v16, above).
        v2 = v.reshape(T * B, H)
        h2 = v16.view(T * B, H)
        if sel_tb is not None:
            n_sel = sel_tb.numel()
            v2 = torch.index_select(v2, 0, sel_tb, out=ws.get("vsel", (n_sel, H), v2.dtype))
            h2 = torch.index_select(h2, 0, sel_tb, out=ws.get("hsel", (n_sel, H), h2.dtype))
        stats[(li, kind)].update(v2, h2, pos)
        writer.write(scales[(li, kind)], params.reshape(B, 1, 2 * H), ctx["spans"]["scale"])
        if dev.type == "cpu":
            writer.write(
                files[(li, kind)], codes.numpy(), ctx["spans"][(li, kind)],
                lambda buf=codes: pool.give(buf),
            )  # fmt: skip
        else:
            host = codes.cpu().numpy()
            pool.give(codes)
            writer.write(files[(li, kind)], host, ctx["spans"][(li, kind)])

    def on_layer(k: int, li: int, acts: dict[str, torch.Tensor]) -> None:
        if chunk_ctx.get("k") != k:
            begin_chunk(k)
        ctx = dict(chunk_ctx)
        if worker is None:
            for kind, v in acts.items():
                fold(li, kind, v, ctx)
            return
        # The acts are read in place by the worker: they live in buffers lent by trace_ws
        # (or, on the kernel road, h is the kernel's own output), given back once folded.
        for kind, v in acts.items():
            worker.put(lambda li=li, kind=kind, v=v: fold(li, kind, v, ctx))
        lent = trace_ws.take_lent()
        worker.put(lambda: None, lambda: trace_ws.give_back(lent))

    def write_predictions(k: int, loss, top_ids, top_prob, spans: dict) -> None:
        # Loss: row b at t predicts position start+t+1; write it there (the NaN at run
        # starts was filled in when the file was created).
        loss = loss.t().contiguous().cpu().numpy()  # [B, T]
        loss_spans = [
            (b, pred["loss"].offset + (int(plan.start[k, b]) + 1) * 4, m)
            for b in range(B)
            if (m := min(int(plan.length[k, b]), int(plan.run_stop[k, b] - plan.start[k, b] - 1)))
            > 0
        ]  # fmt: skip
        writer.write(pred["loss"], loss, loss_spans)
        top_ids = top_ids.transpose(0, 1).to(torch.int32).contiguous().cpu().numpy()
        top_prob = top_prob.transpose(0, 1).to(torch.float16).contiguous().cpu().numpy()
        writer.write(pred["top_ids"], top_ids, spans["top_ids"])
        writer.write(pred["top_prob"], top_prob, spans["top_prob"])

    ok = False
    try:
        writer = _Writer()
        # On CPU the statistics run in a second thread (see _StatsWorker); on an accelerator
        # they are queued on the device anyway. The two threads share the cores: each taking
        # them all made them fight (2 cores: 100k context switches per 100k characters, 15%
        # more CPU and a slower wall clock).
        worker = None
        if dev.type == "cpu" and not accelerator_path:
            worker = _StatsWorker(max(1, threads_before // 2))
            torch.set_num_threads(max(1, threads_before - threads_before // 2))
        trace_ws = _LendingWorkspace(dev) if worker else None
        bar = tqdm(
            total=n, initial=done_chars, unit="char", unit_scale=True, desc="record",
            disable=not progress, mininterval=0.5, smoothing=0.1,
        )  # fmt: skip
        k = start_chunk - 1
        for res in run_plan(
            model, ids, plan, layers=layers, kinds=kinds, device=dev,
            start_chunk=start_chunk, state=state, on_layer=on_layer, predict=worker is None,
            workspace=trace_ws, method="kernel" if accelerator_path else "auto",
        ):  # fmt: skip
            k = res.k
            if chunk_ctx.get("k") != k:
                begin_chunk(k)  # no layer was recorded in this chunk (cannot happen, but cheap)
            if worker is None:
                write_predictions(k, res.loss, res.top_ids, res.top_prob, chunk_ctx["spans"])
            else:
                worker.put(
                    lambda k=k, logits=res.logits, spans=chunk_ctx["spans"]: write_predictions(
                        k, *predictions(logits, *chunk_inputs(plan, k, ids)[1:]), spans
                    )
                )
            bar.update(int(plan.length[k].sum()))
            if hook is not None:
                hook(k)
            if k + 1 < plan.chunks and time.perf_counter() - last_ckpt >= ckpt_s:
                save_checkpoint(k + 1, res.state)
                last_ckpt = time.perf_counter()
            state = res.state
        if k + 1 == plan.chunks and start_chunk < plan.chunks:
            save_checkpoint(plan.chunks, state)
        if worker is not None:
            worker.drain()
        writer.drain()
        ok = True
    finally:
        if bar is not None:
            bar.close()
        if worker is not None:
            worker.close(discard=not ok)
        torch.set_num_threads(threads_before)
        if writer is not None:
            writer.close()
        for f in (*files.values(), *scales.values(), *pred.values()):
            f.close()
    rec_s = time.perf_counter() - t_rec

    # -- finish: statistics, then meta.json last -------------------------------------------------
    for (li, kind), st in stats.items():
        members, counts = st.finalize()
        with atomic_open(stats_path(root, li, kind)) as fh:
            np.savez(fh, **members)
        with atomic_open(hist_path(root, li, kind)) as fh:
            np.save(fh, counts)
    n_cold = int(cold.sum())
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "n": n,
        "model": loaded.config.to_dict(),
        "vocab": list(vocab.chars),
        "checkpoint": str(loaded.source),
        "checkpoint_sha256": loaded.sha256,
        "model_info": loaded.info,
        "text_sha256": job["text_sha256"],
        "streams": plan.streams,
        "warmup": plan.warmup,
        "cold": n_cold,
        "layers": list(layers),
        "kinds": list(kinds),
        "hidden_size": H,
        "dtype": DTYPE,
        "unknown_chars": unknown,
        "documents": None if docs is None else len(docs),
        "runs": len(plan.runs),
        "blocks": n_blocks,
        "stats": {
            "top_k": TOP_K,
            "quantiles": list(QUANTILES),
            "saturation": [SAT_LOW, SAT_HIGH],
            "hist_bins": {k: len(hist_edges(k)) - 1 for k in kinds},
        },
        "record": {
            "job": job,
            "chunk_len": plan.chunk_len,
            "device": str(dev),
            "lstmscope": __version__,
            "torch": torch.__version__,
            "seconds": round(rec_s, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    atomic_write_text(root / "meta.json", json.dumps(meta, indent=1))
    # .lock stays: unlinking a lock while holding it lets two later runs each lock their own.
    for name in ("progress", "record.json"):
        p = root / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
    size = _dir_size(root)
    recorded = n - done_chars
    summary = RecordSummary(
        root, n, size, unknown, plan.streams, plan.warmup, n_cold,
        time.perf_counter() - t0, recorded / rec_s if rec_s > 0 else 0.0, done_chars, False,
    )  # fmt: skip
    log.info("recorded %s: %s", root, json.dumps({k: str(v) for k, v in asdict(summary).items()}))
    return summary
