"""What all browser tabs of one server share: the open store, caches and a worker pool.

``app_hooks.on_server_loaded`` builds one :class:`Shared` per server process; every session's
document reads the same memory-mapped store through it, and slow library calls (ranking,
contexts, span search, find) are computed once and cached here, whichever tab asked first.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd

from lstmscope.analysis.contexts import contexts as sampled_contexts
from lstmscope.analysis.contexts import contexts_from_positions
from lstmscope.analysis.drift import drift
from lstmscope.analysis.features import FEATURES
from lstmscope.analysis.features import compute as compute_features
from lstmscope.analysis.rank import rank_feature
from lstmscope.analysis.saturation import saturation as gate_saturation
from lstmscope.analysis.search import match_spans, select_neurons
from lstmscope.export.colors import DEFAULT_SCALE, Scale, scale_for
from lstmscope.names import check_neuron, parse_neuron
from lstmscope.server.runner import Memo
from lstmscope.store.reader import ActivationStore
from lstmscope.store.streams import warm_note
from lstmscope.text.pattern import MAX_FIND_MATCHES, find_matches

log = logging.getLogger(__name__)

SHARED_ATTR = "lstmscope_shared"  # the attribute app_hooks sets on Bokeh's server context

# Features tried, in order, when no initial neuron is given: a URL cell or a bracket cell is
# the classic "interpretable neuron" a new user should see first (Karpathy et al. 2015).
INITIAL_FEATURES = ("in_url", "depth_total", "in_string", "in_comment")


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
        """``lstmscope.analysis.rank.rank_feature`` for a built-in feature, computed once."""
        if feature not in FEATURES:
            raise ValueError(
                f"unknown feature {feature[:40]!r}: choose one of {', '.join(FEATURES)}"
            )
        return self._rank.get(feature, lambda: rank_feature(self.store, feature))

    def quick_contexts(self, nid: str, k: int = 6, width: int = 24) -> pd.DataFrame:
        """Top and bottom contexts from the positions the recording stored
        (``lstmscope.analysis.contexts.contexts_from_positions``): instant (reads no column),
        so the card fills the moment a neuron is picked."""
        nrn = parse_neuron(nid)

        def pick() -> pd.DataFrame:
            arrs = self._stat_arrays.get(
                nrn.stream, lambda: self.store.stat_arrays(nrn.layer, nrn.kind)
            )
            ranked = {
                group: (arrs[f"{group}_pos"][nrn.unit], arrs[f"{group}_val"][nrn.unit])
                for group in ("top", "bottom")
            }
            return contexts_from_positions(self.text, ranked, k=k, width=width)

        return self._contexts.get(("s", nid, k, width), pick)

    def contexts(self, nid: str, k: int = 6, width: int = 24) -> pd.DataFrame:
        """Top, bottom and quantile-sampled contexts from ``lstmscope.analysis.contexts`` (one
        pass over the neuron's column: run it off the event loop)."""
        return self._contexts.get(
            ("a", nid, k, width), lambda: sampled_contexts(self.store, nid, k=k, width=width)
        )

    def saturation(self) -> pd.DataFrame:
        """Left/right saturated fractions of every gate unit (``lstmscope.analysis.saturation``)."""
        return self._saturation.get("all", lambda: gate_saturation(self.store))

    def select_neurons(self, start: int, stop: int) -> pd.DataFrame:
        """``lstmscope.analysis.search.select_neurons``: the neurons on inside ``[start, stop)``
        and off around it."""
        return select_neurons(self.store, start, stop)

    def match_spans(self, selected: pd.DataFrame) -> pd.DataFrame:
        """Places where the neurons of ``selected`` (rows of :meth:`select_neurons`, with its
        thresholds, signs and span) are on together."""
        return match_spans(self.store, selected)

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
