"""Keeping the event loop free: slow work off the loop, computed once, and bursts of user actions
merged.

- :class:`Memo` — a thread-safe LRU cache that computes each key once, however many tabs ask
  at the same time (the per-process caches of :class:`~lstmscope.server.shared.Shared`).
- :class:`Runner` — runs a slow library call on a worker thread and hands its result back on
  the document's next tick; a result superseded by a newer job of the same key is dropped.
- :class:`Coalescer` — user actions of one tab queued for the next tick and merged, with a
  cool-down after each batch, so a flood of events costs a few redraws.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tornado.ioloop import IOLoop

from lstmscope.errors import LstmscopeError

log = logging.getLogger("server")

# After a batch of user actions, the next waits as long as the batch took, up to this long.
COOLDOWN_MAX_S = 0.5
_now = time.monotonic  # the coalescing's clock (tests replace it)

Action = tuple[Callable[[Any], None], Any]  # a handler and the value it is called with


def user_error(e: BaseException) -> str | None:
    """The message for an error the user can fix, else None (a bug: logged with traceback)."""
    if isinstance(e, (ValueError, LstmscopeError)):
        return str(e) or type(e).__name__
    return None


class Memo:
    """A small thread-safe LRU cache that computes each key once, even when 20 tabs ask at once
    (the others wait for the first one's result instead of repeating a slow scan)."""

    def __init__(self, maxsize: int = 64):
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, Future] = OrderedDict()

    def get(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        with self._lock:
            fut = self._items.get(key)
            owner = fut is None
            if owner:
                fut = Future()
                self._items[key] = fut
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
            else:
                self._items.move_to_end(key)
        if owner:
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)
                with self._lock:  # errors are not cached: the next ask tries again
                    if self._items.get(key) is fut:
                        del self._items[key]
        return fut.result()

    def peek(self, key: Hashable) -> Any | None:
        """The cached value if it is ready, else None (never waits)."""
        with self._lock:
            fut = self._items.get(key)
        if fut is not None and fut.done() and fut.exception() is None:
            return fut.result()
        return None


class Runner:
    """Runs slow library calls off the Bokeh event loop, then applies the result on the
    document's next tick (the one document method that is safe to call from a thread).

    Without a server session (unit tests building the document directly) it runs them inline,
    so tests see the result as soon as the widget changes. Only the latest job of each ``key``
    is applied: an older one finishing late (the user already picked another neuron) is dropped.
    """

    def __init__(self, doc, executor: ThreadPoolExecutor | None, inline: bool):
        self.doc = doc
        self.executor = executor
        self.inline = inline or executor is None
        # Made on the server's loop thread (sessions are created there): results go back
        # through it. See finished() in submit.
        self.loop = None if self.inline else IOLoop.current()
        self._tokens: dict[str, int] = {}
        self.pending = 0

    def submit(
        self,
        key: str,
        fn: Callable[[], Any],
        done: Callable[[Any], None],
        fail: Callable[[BaseException], None],
        *,
        executor: ThreadPoolExecutor | None = None,
        delay_ms: int = 0,
    ) -> None:
        """Run ``fn`` on ``executor`` (default: the shared pool) and hand its result to ``done``
        (or its exception to ``fail``) on the document's thread. ``delay_ms`` debounces: the job
        starts only if no newer job of the same ``key`` arrived meanwhile."""
        token = self._tokens[key] = self._tokens.get(key, 0) + 1
        if self.inline:
            try:
                result = fn()
            except Exception as e:
                fail(e)
            else:
                done(result)
            return
        pool = executor or self.executor

        def job() -> Any:
            # Still queued when the user moved on (20 tabs clicking through neurons can queue
            # many): skip the work, not only its result.
            if self._tokens.get(key) != token:
                return None
            return fn()

        def apply(f: Future) -> None:
            self.pending -= 1
            if self._tokens.get(key) != token:
                return  # superseded
            exc = f.exception()
            if exc is not None:
                fail(exc)
            else:
                done(f.result())

        def on_loop(f: Future) -> None:
            try:
                self.doc.add_next_tick_callback(lambda: apply(f))
            except Exception:  # the tab was closed meanwhile: nothing to update
                log.debug("session gone before %s finished", key)

        def finished(f: Future) -> None:
            # Runs on the worker thread. Bokeh's add_next_tick_callback, though documented as
            # safe from threads, pushes and pops Bokeh's *global* curdoc() stack; from a
            # worker it interleaves with a session being created on the loop thread, whose
            # app then sees another tab's document ("replaced the output document"). So hop
            # to the loop thread first: tornado's add_callback is thread-safe and touches no
            # Bokeh state.
            try:
                self.loop.add_callback(on_loop, f)
            except RuntimeError:  # the server is shutting down
                log.debug("server gone before %s finished", key)

        def start() -> None:
            if self._tokens.get(key) != token:
                self.pending -= 1
                return
            pool.submit(job).add_done_callback(finished)

        self.pending += 1
        if delay_ms > 0:
            self.doc.add_timeout_callback(start, delay_ms)
        else:
            start()


class Coalescer:
    """One tab's user actions, merged on a server (see :meth:`action`).

    ``apply_one(fn, value)`` runs one action; ``apply_batch(actions)`` runs several queued
    together and redraws once. ``enabled`` is False where each action should apply at once
    (tests building the document directly); ``merged`` counts the actions a newer one replaced.
    """

    def __init__(
        self,
        doc,
        apply_one: Callable[[Callable[[Any], None], Any], None],
        apply_batch: Callable[[list[Action]], None],
        *,
        enabled: bool,
    ) -> None:
        self.doc = doc
        self.apply_one = apply_one
        self.apply_batch = apply_batch
        self.enabled = enabled
        self.merged = 0
        # User actions waiting for the next tick, by key.
        self._pending: dict[str, Action] = {}
        self._flush_scheduled = False
        self._cool_until = 0.0

    def action(
        self,
        key: str,
        fn: Callable[[Any], None],
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> Callable[[Any], None]:
        """``fn(value)`` as a user action.

        On a server, actions are queued under ``key`` and applied together on the next tick;
        while the previous batch's redraw is still "cooling down" (as long again as it took,
        at most :data:`COOLDOWN_MAX_S`) they wait. A queued action is replaced by a newer one of
        the same key (``merge(old, new)`` combines them instead: paging steps add up). So a
        burst of events (a held spinner arrow, a script sending thousands a second) costs a
        few redraws, not one per event, and one tab cannot keep the server busy for minutes
        working through its backlog while the other tabs wait.
        """

        def queued(value: Any = None) -> None:
            if not self.enabled:
                self.apply_one(fn, value)
                return
            if key in self._pending:
                self.merged += 1
                _, old = self._pending.pop(key)  # re-queued last: order of the latest actions
                if merge is not None:
                    value = merge(old, value)
            self._pending[key] = (fn, value)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                wait_ms = (self._cool_until - _now()) * 1e3
                if wait_ms >= 1:
                    self.doc.add_timeout_callback(self._flush, wait_ms)
                else:
                    self.doc.add_next_tick_callback(self._flush)

        return queued

    def _flush(self) -> None:
        """Apply the queued actions, oldest first."""
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        t0 = _now()
        if len(pending) == 1:
            [(fn, value)] = pending.values()
            self.apply_one(fn, value)
        else:
            self.apply_batch(list(pending.values()))
        t1 = _now()
        self._cool_until = t1 + min(t1 - t0, COOLDOWN_MAX_S)
