"""The recording's threads and writers: rows go to ``.npy`` files while the trace runs on.

- ``Writer`` ``pwrite``s chunk rows into ``NpyFile``s (created with
  ``numpy.lib.format.open_memmap``, then written by offset) in a background thread. Writing with
  ``pwrite`` rather than through the memory map keeps the process's resident memory flat (mapped
  pages that were written count as resident until unmapped) and measured 2-4x faster here.
- ``StatsWorker`` runs the coding, statistics and write queueing of each layer in a second
  thread on CPU, in order; ``LendingWorkspace`` lends the trace's buffers to it until they are
  folded, and ``BufferPool`` recycles the code buffers the writer holds.

Both threads run queued tasks in order (``_TaskThread``); an error in one surfaces on the caller
at its next call, and a bounded queue holds a caller back instead of letting memory grow.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lstmscope.disk import make_dir
from lstmscope.errors import LstmscopeError, StoreError, WriteError
from lstmscope.store.reader import npy_header


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


def _pwrite_rows(f: NpyFile, arr: np.ndarray, spans: list[tuple[int, int, int]]) -> None:
    """``arr`` ``[B, T, ...]``; each span ``(row, byte offset, rows)`` is one ``pwrite``."""
    try:
        for b, offset, m in spans:
            os.pwrite(f.fd, memoryview(arr[b, :m]).cast("B"), offset)
    except OSError as e:
        raise WriteError(f.path, e) from e


class Writer(_TaskThread):
    """pwrite()s chunk rows into open .npy files while the main thread computes the next ones."""

    thread_name = "lstmscope-writer"

    def check(self) -> None:
        if self.error is not None:
            e = self.error
            if isinstance(e, LstmscopeError):  # a WriteError names the file and what to do
                raise e
            raise StoreError(f"writing the store failed: {e}") from e

    def write(
        self, f: NpyFile, arr: np.ndarray, spans: list[tuple[int, int, int]], release=None
    ) -> None:
        """Queue ``arr``'s rows for writing; ``release()`` runs once they are written."""
        self.put(lambda: _pwrite_rows(f, arr, spans), release)


class StatsWorker(_TaskThread):
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


class LendingWorkspace:
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


class BufferPool:
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


class NpyFile:
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
