"""What all browser tabs of one server share: the open store, caches and a worker pool.

``app_hooks.on_server_loaded`` builds one :class:`Shared` per server process; every session's
document reads the same memory-mapped store through it, and slow library calls (ranking,
contexts, span search, find) are computed once and cached here, whichever tab asked first.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from lstmscope.analysis.drift import drift
from lstmscope.analysis.features import FEATURES
from lstmscope.analysis.features import compute as compute_features
from lstmscope.export.colors import DEFAULT_SCALE, Scale, scale_for
from lstmscope.names import GATE_KINDS, check_neuron, parse_neuron
from lstmscope.store.reader import ActivationStore
from lstmscope.store.streams import warm_note
from lstmscope.text.pattern import MAX_FIND_MATCHES, find_matches
from tornado.ioloop import IOLoop

log = logging.getLogger(__name__)

SHARED_ATTR = "lstmscope_shared"  # the attribute app_hooks sets on Bokeh's server context

# Features tried, in order, when no initial neuron is given: a URL cell or a bracket cell is
# the classic "interpretable neuron" a new user should see first (Karpathy et al. 2015).
INITIAL_FEATURES = ("in_url", "depth_total", "in_string", "in_comment")


def analysis(name: str) -> ModuleType | None:
    """``lstmscope.analysis.<name>``, or None while that module does not exist yet."""
    try:
        return importlib.import_module(f"lstmscope.analysis.{name}")
    except ModuleNotFoundError as e:
        if e.name in (f"lstmscope.analysis.{name}", "lstmscope.analysis"):
            return None
        raise
    except ImportError:
        # A broken analysis module must not take the whole dashboard down with it.
        log.exception("lstmscope.analysis.%s failed to import", name)
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


class Shared:
    """The store and everything derived from it that is the same for every tab."""

    def __init__(
        self,
        store: ActivationStore,
        *,
        initial: str | None = None,
        workers: int = 2,
        background: bool = False,
    ):
        self.store = store
        # Touch the lazily loaded parts now, once, so sessions never race to build them.
        self.text: str = store.text
        self.stats: pd.DataFrame = store.stats
        for arr in (store.loss, store.top_ids, store.top_prob, store.cold):
            _ = arr.shape
        # A store written before at least half had to be warm: every page says so.
        self.n_warm = int(store.n - np.count_nonzero(store.cold))
        self.warm_note: str | None = warm_note(store.n, self.n_warm, str(store.path))
        self.vocab_chars: list[str] = list(store.meta["vocab"])
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lstmscope")
        # Work that follows every neuron change (the card's sampled contexts: a pass over the
        # whole column) gets one thread of its own, so however many tabs click through neurons
        # it never takes more than one core from the callbacks that redraw the text.
        self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lstmscope-bg")
        self._features = Memo(8)
        self._rank = Memo(16)
        self._contexts = Memo(256)
        self._stat_arrays = Memo(64)
        self._scales = Memo(4096)
        self._saturation = Memo(1)
        self._find = Memo(64)
        self._initial_lock = threading.Lock()
        # (neuron, why, the feature it was chosen for or None)
        self._initial: tuple[str, str, str | None] | None = None
        if initial is not None:
            nid = self.check_neuron(initial)
            self._initial = (nid, "given on the command line", None)
        if background and self._initial is None:
            self.executor.submit(self._compute_initial)
        # Which units drift with the distance from their run's start (counters): one pass over
        # the store, so a server starts it in the background and pages show it once it is there.
        self._background = background
        self._drift_lock = threading.Lock()
        self._drift: Future | None = None  # the one pass, once started
        if background and self.n_warm:
            self._start_drift()

    # -- neurons ----------------------------------------------------------------------------
    def check_neuron(self, text: str) -> str:
        """The canonical id of a neuron of this store; ValueError with a clear message if not."""
        s = self.store
        return str(check_neuron(text, s.layers, s.kinds, s.hidden_size))

    def stats_row(self, nid: str) -> pd.Series:
        return self.stats.loc[nid]

    def scale(self, nid: str, method: str | None = None) -> Scale:
        """The neuron's colour scale from its statistics (``method``: a whole-neuron one of
        ``lstmscope.export.colors.SCALES``, the default if None), as the export scales it."""
        method = method or DEFAULT_SCALE
        return self._scales.get(
            (nid, method), lambda: scale_for(nid, self.stats_row(nid), method=method)
        )

    def fallback_neuron(self) -> str:
        """A cheap first neuron: the last layer's cell (else hidden) unit with the widest spread."""
        s = self.store
        kind = next((k for k in ("c", "h") if k in s.kinds), s.kinds[0])
        rows = self.stats[(self.stats["layer"] == s.layers[-1]) & (self.stats["kind"] == kind)]
        spread = (rows["q99"] - rows["q01"]).to_numpy(dtype=np.float64)
        if not np.isfinite(spread).any():
            return str(rows.index[0])
        return str(rows.index[int(np.nanargmax(spread))])

    def initial_neuron(self) -> tuple[str, str]:
        """``(neuron, why)`` to open on: the one given, else the best cell the analysis found
        for a URL or bracket feature (once it is ready; until then a cheap stand-in)."""
        return self.initial_choice()[:2]

    def initial_choice(self) -> tuple[str, str, str | None]:
        """``(neuron, why, feature)``: :meth:`initial_neuron` and the feature it is best for
        (None when it was not chosen for a feature), so a page opens with that feature's track
        and ranking, which show why."""
        with self._initial_lock:
            if self._initial is not None:
                return self._initial
        return self.fallback_neuron(), "widest spread in the last layer", None

    def _compute_initial(self) -> tuple[str, str]:
        t0 = time.perf_counter()
        try:
            # No warm position: nothing to rank (the page's message says why).
            result = self.best_for_features(INITIAL_FEATURES[:2]) if self.n_warm else None
        except Exception:
            log.exception("choosing the initial neuron failed; using the widest-spread cell")
            result = None
        if result is not None:
            with self._initial_lock:
                if self._initial is None:
                    self._initial = result
        chosen = self.initial_neuron()
        log.info("initial neuron %s (%s) in %.1f s", *chosen, time.perf_counter() - t0)
        return chosen

    def best_for_features(self, names) -> tuple[str, str, str] | None:
        """``(neuron, why, feature)``: the top-ranked neuron for the first of ``names`` present
        in the text, or None."""
        if analysis("rank") is None:
            return None
        for name in names:
            if not np.any(self.feature(name)):
                continue
            try:
                ranked = self.rank(name)
            except ValueError:  # never (or always) on, or constant, on the warm positions
                continue
            if len(ranked):
                top = ranked.iloc[0]
                what = "AP" if ranked.attrs.get("feature_kind") == "binary" else "|r|"
                why = f"best for {name} ({what} {float(top['score']):.3g})"
                return str(top["neuron"]), why, name
        return None

    # -- cached library calls ---------------------------------------------------------------
    def feature(self, name: str) -> np.ndarray:
        """A built-in feature over the whole text (``[N]``), computed once."""
        if name not in FEATURES:
            raise ValueError(f"unknown feature {name[:40]!r}: choose one of {', '.join(FEATURES)}")
        return self._features.get(name, lambda: compute_features(self.text, [name])[name])

    def rank(self, feature: str) -> pd.DataFrame:
        mod = analysis("rank")
        if mod is None:
            raise AnalysisMissing("rank")
        if feature not in FEATURES:
            raise ValueError(
                f"unknown feature {feature[:40]!r}: choose one of {', '.join(FEATURES)}"
            )
        return self._rank.get(feature, lambda: mod.rank_feature(self.store, feature))

    def quick_contexts(self, nid: str, k: int = 6, width: int = 24) -> pd.DataFrame:
        """Top and bottom contexts from the positions the recording stored: instant (reads no
        column), so the card fills the moment a neuron is picked."""
        return self._contexts.get(
            ("s", nid, k, width), lambda: self._stored_contexts(nid, k, width)
        )

    def contexts(self, nid: str, k: int = 6, width: int = 24) -> pd.DataFrame | None:
        """Top, bottom and quantile-sampled contexts from ``lstmscope.analysis.contexts`` (one
        pass over the neuron's column: run it off the event loop), or None without that module."""
        mod = analysis("contexts")
        if mod is None:
            return None
        return self._contexts.get(
            ("a", nid, k, width), lambda: mod.contexts(self.store, nid, k=k, width=width)
        )

    def _stored_contexts(self, nid: str, k: int, width: int) -> pd.DataFrame:
        nrn = parse_neuron(nid)
        arrs = self._stat_arrays.get(
            nrn.stream, lambda: self.store.stat_arrays(nrn.layer, nrn.kind)
        )
        rows = []
        for group in ("top", "bottom"):
            chosen: list[int] = []
            for p, v in zip(
                arrs[f"{group}_pos"][nrn.unit], arrs[f"{group}_val"][nrn.unit], strict=True
            ):
                p = int(p)
                # Neighbouring peaks are one place: keep contexts apart, as the analysis does.
                if p < 0 or any(abs(p - c) <= width for c in chosen):
                    continue
                chosen.append(p)
                a, b = max(0, p - width), min(self.store.n, p + width + 1)
                rows.append(
                    {"group": group, "position": p, "value": float(v), "start": a, "stop": b,
                     "text": self.text[a:b]}
                )  # fmt: skip
                if len(chosen) == k:
                    break
        return pd.DataFrame(rows, columns=["group", "position", "value", "start", "stop", "text"])

    def saturation(self) -> pd.DataFrame:
        """Left/right saturated fractions of every gate unit."""
        mod = analysis("saturation")
        if mod is not None:
            return self._saturation.get("a", lambda: mod.saturation(self.store))

        def from_stats() -> pd.DataFrame:
            # The recording already counted saturation per gate unit; this only selects it.
            st = self.stats[self.stats["kind"].isin(GATE_KINDS)]
            return pd.DataFrame(
                {
                    "neuron": st.index.astype(str),
                    "layer": st["layer"].to_numpy(),
                    "kind": st["kind"].to_numpy(),
                    "unit": st["unit"].to_numpy(),
                    "left": st["sat_left"].to_numpy(dtype=np.float64),
                    "right": st["sat_right"].to_numpy(dtype=np.float64),
                }
            )

        return self._saturation.get("s", from_stats)

    def select_neurons(self, start: int, stop: int) -> pd.DataFrame:
        mod = analysis("search")
        if mod is None:
            raise AnalysisMissing("search")
        return mod.select_neurons(self.store, start, stop)

    def match_spans(self, selected: pd.DataFrame) -> pd.DataFrame:
        """Places where the neurons of ``selected`` (rows of :meth:`select_neurons`, with its
        thresholds, signs and span) are on together."""
        mod = analysis("search")
        if mod is None:
            raise AnalysisMissing("search")
        return mod.match_spans(self.store, selected)

    def find(self, pattern: str, is_regex: bool) -> tuple[list[tuple[int, int]], bool]:
        """Matches of a literal or a (time-bounded) regular expression in the whole text."""
        return self._find.get(
            (pattern, is_regex),
            lambda: find_matches(
                self.text, pattern, max_matches=MAX_FIND_MATCHES, literal=not is_regex
            ),
        )

    # -- drifting units ---------------------------------------------------------------------
    def _start_drift(self) -> Future:
        """The drift pass, started once on the background thread (callers share it)."""
        with self._drift_lock:
            if self._drift is None:
                self._drift = self.background.submit(self._compute_drift)
            return self._drift

    def _compute_drift(self) -> pd.DataFrame | None:
        t0 = time.perf_counter()
        try:
            df = drift(self.store).set_index("neuron")
        except Exception:
            log.exception("finding the drifting units failed; no unit is flagged")
            return None
        log.info(
            "%d drifting units found in %.1f s", int(df["drifting"].sum()), time.perf_counter() - t0
        )
        return df

    def drift(self, wait: bool | None = None) -> pd.DataFrame | None:
        """``lstmscope.analysis.drift`` indexed by neuron, or None while it is computed in the
        background (``wait``: wait for it if need be; by default a server waits for nothing,
        a Shared made without ``background`` waits)."""
        if not self.n_warm:
            return None
        future = self._start_drift()
        if future.done() or (wait if wait is not None else not self._background):
            return future.result()
        return None

    def drifting(self, wait: bool | None = None) -> frozenset[str]:
        """The neurons flagged as drifting (empty while not known yet)."""
        df = self.drift(wait)
        return frozenset() if df is None else frozenset(df.index[df["drifting"]].astype(str))

    def close(self) -> None:
        for ex in (self.executor, self.background):
            ex.shutdown(wait=False, cancel_futures=True)


class AnalysisMissing(RuntimeError):
    """An ``lstmscope.analysis`` module the dashboard needs has not been installed yet."""

    def __init__(self, name: str):
        super().__init__(f"analysis not available (lstmscope.analysis.{name} is missing)")


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
