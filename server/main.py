"""The dashboard page: ``make_document(doc, store)`` builds it from the components.

Bokeh runs this file once per browser tab (``bokeh serve server --args STORE`` or
``lstmscope serve STORE``); the store itself was opened once per server by ``app_hooks.py``.
Tests import ``make_document`` and build the page in-process without a server.

One :class:`App` per tab holds the view (:class:`~.components.state.ViewState`) and wires
widgets to it: every change goes through :meth:`App.set_state`, which updates the components
that depend on what changed and the address bar. Every callback is guarded: bad input becomes
a message on the page, never a broken session.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import operator
import time
from collections.abc import Callable
from typing import Any

from bokeh import events
from bokeh.document import Document
from bokeh.layouts import column
from bokeh.models import Div, TabPanel, Tabs
from lstmscope.analysis.features import FEATURES
from lstmscope.errors import LstmscopeError
from lstmscope.export.text import export_range
from lstmscope.server.components.card import NeuronCard
from lstmscope.server.components.controls import NO_FEATURE, Controls, Message
from lstmscope.server.components.heatmap import Heatmap
from lstmscope.server.components.links import Download, UrlSync
from lstmscope.server.components.page import page_layout
from lstmscope.server.components.ranking import RankTable
from lstmscope.server.components.saturation import SaturationView
from lstmscope.server.components.search import SelectMatch
from lstmscope.server.components.shared import (
    SHARED_ATTR,
    AnalysisMissing,
    Runner,
    Shared,
    analysis,
)
from lstmscope.server.components.state import (
    MAX_NEURONS,
    PAGE_SIZES,
    ViewState,
    parse_position,
    parse_query,
    to_query,
    window_around,
)
from lstmscope.server.components.textview import TextView
from lstmscope.store.reader import ActivationStore
from lstmscope.text.pattern import MAX_PATTERN_LEN

log = logging.getLogger("server")

# Clicking through units with the spinner should not start a column scan per click.
CONTEXTS_DELAY_MS = 800
CARD_TAB = 0
# After a batch of user actions, the next waits as long as the batch took, up to this long.
COOLDOWN_MAX_S = 0.5
_now = time.monotonic  # the coalescing's clock (tests replace it)


def _user_error(e: BaseException) -> str | None:
    """The message for an error the user can fix, else None (a bug: logged with traceback)."""
    if isinstance(e, (ValueError, LstmscopeError, AnalysisMissing)):
        return str(e) or type(e).__name__
    return None


class App:
    """One tab's dashboard."""

    def __init__(
        self,
        doc: Document,
        shared: Shared,
        *,
        args: dict[str, list[bytes]] | None = None,
        inline: bool | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.doc = doc
        self.shared = shared
        self.n = shared.store.n
        if inline is None:
            inline = doc.session_context is None
        self.runner = Runner(doc, shared.executor, inline=inline)
        # Queue user actions for the next tick and merge bursts (see act): on a server only;
        # tests building the document directly see each action's result at once.
        self.coalesce = not self.runner.inline
        self._syncing = False
        # User actions waiting for the next tick (see act), and how many a newer one replaced.
        self._pending: dict[str, tuple[Callable[[Any], None], Any]] = {}
        self._flush_scheduled = False
        self._cool_until = 0.0
        self.coalesced = 0
        # While a batch of actions runs (see _batch): the view last drawn, and whether it moved.
        self._drawn: ViewState | None = None
        self._dirty = False
        self.pinned: list[str] = []
        self.matches: list[tuple[int, int]] = []
        self.matches_more = False
        self.match_i = -1
        self.selection: tuple[int, int] | None = None
        self.focus: tuple[int, int] | None = None
        self.last_update_s = 0.0
        self._card_token = 0

        self.message = Message()
        self.controls = Controls(shared)
        self.text = TextView(shared)
        self.heatmap = Heatmap(self.text.fill_map, self.text.lanes, self.text.wrap + 1)
        jump = self.act("jump", lambda span: self.jump(*span))
        pick = self.act("pick", self.pick)
        self.card = NeuronCard(shared, on_jump=lambda pos: jump((pos,)))
        self.url = UrlSync()
        self.download = Download()
        find = self.act("select", lambda _v: self.find_neurons())
        self.select = SelectMatch(
            on_find=lambda: find(None),
            on_pick=pick,
            on_jump=lambda a, b: jump((a, b)),
            on_stack=self.act("stack", self.stack),
        )
        # The ranking and saturation tabs are built the first time they are opened (a third of
        # the page's models: a faster first load, less memory per tab). Select & match is not:
        # Bokeh's client re-sends a button added later in full with each click, which works
        # but warns.
        self._built: dict[str, Any] = {}
        self._factories: dict[str, Callable[[], Any]] = {
            "rank": lambda: RankTable(on_pick=pick),
            "saturation": lambda: SaturationView(shared.store.layers, on_pick=pick),
        }
        # A column per tab whose children are swapped in when built (the client re-renders a
        # layout's children; it does not re-render a TabPanel whose child changed).
        self._panels = {name: column(Div(text="<i>loading…</i>")) for name in self._factories}
        self.tabs = Tabs(
            tabs=[
                TabPanel(child=self.card.root, title="Neuron card"),
                TabPanel(child=self._panels["rank"], title="Ranking"),
                TabPanel(child=self._panels["saturation"], title="Gate saturation"),
                TabPanel(child=self.select.root, title="Select & match"),
            ],
            name="tabs",
        )
        self._tab_names = ["card", "rank", "saturation", "select"]
        self._sampled: str | None = None  # the neuron whose sampled contexts the card shows
        self._wire()

        nid, why, best_for = shared.initial_choice()
        default = ViewState(neurons=(nid,))
        request_args = args
        if request_args is None and doc.session_context is not None:
            request = getattr(doc.session_context, "request", None)
            request_args = getattr(request, "arguments", None) or {}
        state, problems = parse_query(request_args or {}, default, self.n, shared.check_neuron)
        chosen = state.primary == nid and not (request_args or {}).get("neuron")
        self.intro = f"Opened on {nid}: {why}." if chosen else ""
        if chosen and best_for and not (request_args or {}).get("feature"):
            # Opened on the best cell for a feature: show that feature's track and ranking, the
            # evidence for the choice (issue 12.6).
            state = state.with_(feature=best_for)
            self.intro = f"Opened on {nid}: {why}; the Ranking tab lists every neuron for it."
        self.pinned = list(state.neurons[1:])
        self.state = state
        self._render(None, state)
        if problems:
            self.message.show("\n".join(problems), "warn")
        elif shared.warm_note:
            self.message.show(shared.warm_note, "warn")
        elif self.intro:
            self.message.show(self.intro, "info")
        if state.find:  # after the message: a bad pattern's error must not be overwritten
            self._run_find(state, jump=False)

        heat_title = Div(
            text="<b>Neurons × positions</b> · click to jump", styles={"font-size": "12px"}
        )
        self.root = page_layout(
            self.controls.root, self.message.root, self.text.root,
            [heat_title, self.heatmap.root], self.tabs,
        )  # fmt: skip
        with doc.models.freeze():  # one scan of the model graph instead of one per root
            doc.add_root(self.root)
            doc.add_root(self.url.source)
            doc.add_root(self.download.source)
        self.url.install(doc)
        doc.title = f"lstmscope · {self.state.primary}"
        log.debug("page built in %.0f ms", (time.perf_counter() - t0) * 1e3)

    # -- lazily built tabs ------------------------------------------------------------------
    def _component(self, name: str) -> Any:
        """A tab's component, built (and filled with the current view) on first use."""
        comp = self._built.get(name)
        if comp is None:
            comp = self._built[name] = self._factories[name]()
            self._panels[name].children = [comp.root]
            if name == "rank":
                self._load_rank(self.state.feature)
            elif name == "saturation":
                self._load_saturation()
        return comp

    @property
    def rank(self) -> RankTable:
        return self._component("rank")

    @property
    def saturation(self) -> SaturationView:
        return self._component("saturation")

    # -- plumbing ---------------------------------------------------------------------------
    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Run ``fn``; a user error becomes a message, a bug is logged and reported, and the
        session goes on either way."""

        @functools.wraps(fn)
        def wrapped(*a, **kw):
            try:
                return fn(*a, **kw)
            except Exception as e:
                self.report(e)
                return None

        return wrapped

    def user(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A user action: the previous message goes (it answered the previous action), then
        ``fn`` runs guarded."""
        guarded = self.guard(fn)

        @functools.wraps(fn)
        def wrapped(*a, **kw):
            self.message.clear()
            return guarded(*a, **kw)

        return wrapped

    def report(self, e: BaseException, what: str = "") -> None:
        text = _user_error(e)
        if text is None:
            log.error("dashboard callback failed", exc_info=e)
            text = f"internal error ({type(e).__name__}); the view was left as it was"
        self.message.show(f"{what}{text}", "error")

    # -- user actions: coalesced on a server ------------------------------------------------
    def act(
        self,
        key: str,
        fn: Callable[[Any], None],
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> Callable[[Any], None]:
        """``fn(value)`` as a user action, run guarded (see :meth:`user`).

        On a server, actions are queued under ``key`` and applied together on the next tick;
        while the previous batch's redraw is still "cooling down" (as long again as it took,
        at most :data:`COOLDOWN_MAX_S`) they wait. A queued action is replaced by a newer one of
        the same key (``merge(old, new)`` combines them instead: paging steps add up). So a
        burst of events (a held spinner arrow, a script sending thousands a second) costs a
        few redraws, not one per event, and one tab cannot keep the server busy for minutes
        working through its backlog while the other tabs wait.
        """

        def queued(value: Any = None) -> None:
            if not self.coalesce:
                self.user(fn)(value)
                return
            if key in self._pending:
                self.coalesced += 1
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
            self.user(fn)(value)
        else:
            self._batch(list(pending.values()))
        t1 = _now()
        self._cool_until = t1 + min(t1 - t0, COOLDOWN_MAX_S)

    def _batch(self, actions: list[tuple[Callable[[Any], None], Any]]) -> None:
        """Several actions, one redraw: each updates the view state (validated as ever), and
        the page is drawn once from what was drawn before to where they left it. (A unit
        change, a jump and a page-size change queued together would otherwise redraw three
        times.)"""
        drawn = self._drawn = self.state
        self._dirty = False
        self.message.clear()  # once: a later action must not wipe an earlier one's error
        try:
            for fn, value in actions:
                self.guard(fn)(value)
        finally:
            self._drawn = None
        if not self._dirty:
            return
        try:
            self._render(drawn, self.state)
        except Exception as e:
            self.state = drawn
            self.report(e)

    def _on(self, widget, attr: str, fn: Callable[[Any], None]) -> None:
        """Call ``fn(new)`` when a widget changes because of the user (not when we set it)."""
        queued = self.act(f"{widget.id}.{attr}", fn)

        def cb(_attr, _old, new):
            if not self._syncing:
                queued(new)

        widget.on_change(attr, cb)

    def _choice(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """A select or spinner: a refused value is put back to the view's, so the widget does
        not keep a value the view does not show (and the next pick does not combine with it)."""

        def chosen(value: Any) -> None:
            try:
                fn(value)
            except Exception:
                self._syncing = True
                try:
                    self.controls.update(self.state, self.n)
                finally:
                    self._syncing = False
                raise

        return chosen

    def _click(self, button, fn: Callable[[], None]) -> None:
        queued = self.act(f"{button.id}.click", lambda _v: fn())
        button.on_click(lambda *_a: queued())

    def _wire(self) -> None:
        c = self.controls
        self._on(c.layer, "value", self._choice(lambda v: self.pick_parts(layer=v)))
        self._on(c.kind, "value", self._choice(lambda v: self.pick_parts(kind=v)))
        self._on(c.unit, "value", self._choice(lambda v: self.pick_parts(unit=v)))
        self._on(c.neuron, "value", self.type_neurons)
        self._on(c.page_size, "value", self._choice(self.set_page_size))
        self._on(c.goto, "value", self.goto)
        self._on(c.find, "value", lambda v: self.set_find(v, bool(c.find_regex.active)))
        self._on(c.find_regex, "active", lambda v: self.set_find(c.find.value, bool(v)))
        self._on(c.feature, "value", self._choice(self.set_feature))
        self._on(
            c.scale, "value", self._choice(lambda v: self.set_state(self.state.with_(scale=v)))
        )
        self._on(c.lane, "value", self._choice(lambda v: self.set_state(self.state.with_(lane=v))))
        self._click(c.pin, self.pin)
        self._click(c.clear_pins, self.clear_stack)
        self._click(c.export, self.export)
        # Paging and match steps add up when clicks come faster than the view redraws.
        page = self.act("page", self.page, merge=operator.add)
        c.prev_page.on_click(lambda *_a: page(-1))
        c.next_page.on_click(lambda *_a: page(+1))
        step = self.act("match", self.next_match, merge=operator.add)
        c.find_prev.on_click(lambda *_a: step(-1))
        c.find_next.on_click(lambda *_a: step(+1))
        self._on(self.text.source.selected, "indices", lambda _new: self.on_select())
        tap = self.act("tap", self.on_heatmap_tap)
        # One required argument: Bokeh calls a callback that can take none without the event.
        self.heatmap.figure.on_event(events.Tap, lambda event: tap(event))
        self.tabs.on_change("active", lambda _a, _o, new: self.guard(self._on_tab)(new))

    # -- the view ---------------------------------------------------------------------------
    def set_state(self, new: ViewState, focus: tuple[int, int] | None = None) -> None:
        """Show ``new``. Validation happens before anything is drawn, so a bad value leaves
        the previous view intact."""
        if not new.neurons:
            raise ValueError("no neuron to show")
        if len(new.neurons) > MAX_NEURONS:
            raise ValueError(f"at most {MAX_NEURONS} neurons can be stacked")
        if new.size not in PAGE_SIZES:
            raise ValueError(f"page size must be one of {', '.join(map(str, PAGE_SIZES))}")
        if not 0 <= new.start < self.n:
            raise ValueError(f"position {new.start} is outside the text (0–{self.n - 1})")
        if new.feature is not None and new.feature not in FEATURES:
            raise ValueError(
                f"unknown feature {new.feature[:40]!r}: choose one of {', '.join(FEATURES)}"
            )
        old, self.state = self.state, new
        if focus is not None:
            self.focus = focus
        if self._drawn is not None:  # inside a batch of actions: drawn once, at its end
            self._dirty = True
            return
        try:
            self._render(old, new)
        except Exception:
            self.state = old  # keep the widgets and the URL telling the truth
            raise

    def _render(self, old: ViewState | None, new: ViewState) -> None:
        t0 = time.perf_counter()
        # Widgets and selections we set here must not call back as if the user changed them.
        self._syncing = True
        try:
            self.text.update(new)
            self.heatmap.update(new.start, self.text.source.data["cidx"], self.text.lane_names)
            if old is None or (old.start, old.size) != (new.start, new.size):
                self.selection = None
                self.select.set_span(None, "")
            self._marks()
            if self.focus is not None:
                self.text.scroll_to(self.focus[0])
            self.controls.update(new, self.n)
        finally:
            self._syncing = False
        if old is None or old.primary != new.primary or old.scale != new.scale:
            self._schedule_card(new.primary)  # the card is coloured on the text's scale
        if (old is None or old.primary != new.primary) and "saturation" in self._built:
            self.saturation.mark(new.primary)
        if (old is None or old.feature != new.feature) and "rank" in self._built:
            self._load_rank(new.feature)
        self.url.update(to_query(new))
        self.doc.title = f"lstmscope · {new.primary}"
        self.last_update_s = time.perf_counter() - t0

    def _marks(self) -> None:
        a0, b0 = self.state.start, min(self.state.stop, self.n)
        spans: list[tuple[int, int, str]] = []
        starts = [m[0] for m in self.matches]
        lo = max(bisect.bisect_left(starts, a0) - 1, 0)
        for j in range(lo, len(self.matches)):
            a, b = self.matches[j]
            if a >= b0:
                break
            if b > a0:
                spans.append((a, b, "current" if j == self.match_i else "match"))
        if self.selection is not None:
            spans.append((*self.selection, "selection"))
        if self.focus is not None and self.match_i < 0:
            spans.append((*self.focus, "focus"))
        self.text.set_marks(spans)

    # -- choosing neurons -------------------------------------------------------------------
    def pick(self, nid: str) -> None:
        """Show ``nid`` as the main neuron; pinned neurons stay stacked under it."""
        nid = self.shared.check_neuron(nid)
        rest = [p for p in self.pinned if p != nid]
        self.set_state(self.state.with_(neurons=(nid, *rest)[:MAX_NEURONS]))

    def pick_parts(self, layer=None, kind=None, unit=None) -> None:
        c = self.controls
        layer = c.layer.value if layer is None else layer
        kind = c.kind.value if kind is None else kind
        unit = c.unit.value if unit is None else unit
        # A browser may send NaN, infinity or 2.5 for the spinner: refuse, do not round.
        if not isinstance(unit, (int, float)) or not math.isfinite(unit) or unit != int(unit):
            raise ValueError(f"unit {str(unit)[:40]!r}: enter a whole number")
        self.pick(f"L{layer}.{kind}.{int(unit)}")

    def type_neurons(self, text: str) -> None:
        parts = [p for p in text.replace(",", " ").split() if p]
        if not parts:
            raise ValueError("type a neuron id such as L1.c.137 (several, separated by commas)")
        ids: list[str] = []
        for p in parts:
            nid = self.shared.check_neuron(p)
            if nid not in ids:
                ids.append(nid)
        if len(ids) > MAX_NEURONS:
            raise ValueError(f"{len(ids)} neurons: at most {MAX_NEURONS} can be stacked")
        self.pinned = ids[1:]
        self.set_state(self.state.with_(neurons=tuple(ids)))

    def pin(self) -> None:
        if self.state.primary not in self.pinned:
            if len(self.pinned) >= MAX_NEURONS - 1:
                raise ValueError(f"at most {MAX_NEURONS} neurons can be stacked")
            self.pinned.append(self.state.primary)
        self.message.show(
            f"{self.state.primary} pinned: it stays stacked under the next neuron you pick",
            "info",
        )

    def clear_stack(self) -> None:
        self.pinned = []
        self.set_state(self.state.with_(neurons=(self.state.primary,)))

    def stack(self, neurons: list[str]) -> None:
        ids = [self.shared.check_neuron(n) for n in neurons][:MAX_NEURONS]
        if not ids:
            raise ValueError("no neurons to stack")
        self.pinned = ids[1:]
        self.set_state(self.state.with_(neurons=tuple(ids)))

    # -- moving around ----------------------------------------------------------------------
    def page(self, step: int) -> None:
        s = self.state
        # Whole pages only (several clicks can arrive as one step), never past the last one.
        last = s.start + max(0, (self.n - 1 - s.start) // s.size) * s.size
        start = min(max(0, s.start + step * s.size), last)
        if start != s.start:
            self.focus = None
            self.set_state(s.with_(start=start))

    def set_page_size(self, value: str) -> None:
        try:
            size = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"page size {str(value)[:40]!r} is not a number") from None
        self.set_state(self.state.with_(size=size))

    def goto(self, text: str) -> None:
        if not text.strip():
            return
        pos = parse_position(text, self.n)
        self.jump(pos)
        # Cleared, so typing the same position again jumps again (a widget only reports changes).
        self._syncing = True
        try:
            self.controls.goto.value = ""
        finally:
            self._syncing = False

    def jump(self, pos: int, stop: int | None = None) -> None:
        """Show position ``pos`` (outlined with ``[pos, stop)``), paging only if needed."""
        if not 0 <= pos < self.n:
            raise ValueError(f"position {pos} is outside the text (0–{self.n - 1})")
        focus = (pos, max(stop or pos + 1, pos + 1))
        s = self.state
        self.match_i = -1 if not self._is_match(focus) else self.match_i
        if not s.start <= pos < min(s.stop, self.n):
            s = s.with_(start=window_around(pos, s.size, self.n))
        elif self._drawn is None:  # in the window drawn: outline and scroll, no redraw
            self.focus = focus
            self._marks()
            self.text.scroll_to(pos)
            return
        self.set_state(s, focus=focus)

    def _is_match(self, span: tuple[int, int]) -> bool:
        return 0 <= self.match_i < len(self.matches) and self.matches[self.match_i] == span

    def on_heatmap_tap(self, event: events.Tap) -> None:
        # Coordinates come from the browser: anything but finite numbers is ignored.
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (event.x, event.y)):
            return
        pos = int(event.x)
        lane = self.heatmap.lane_at(event.y)
        names = self.text.lane_names
        if 0 <= lane < len(self.state.neurons) and names[lane] != self.state.primary:
            self.pick(names[lane])
        if 0 <= pos < self.n:
            self.jump(pos)

    # -- find -------------------------------------------------------------------------------
    def set_find(self, pattern: str, is_regex: bool) -> None:
        if len(pattern) > MAX_PATTERN_LEN:
            # Refused before it reaches the view: it would ride along in every URL update.
            raise ValueError(f"find: {len(pattern):,} characters; the limit is {MAX_PATTERN_LEN:,}")
        s = self.state.with_(find=pattern, regex=is_regex)
        self.state = s
        self.url.update(to_query(s))
        if not pattern:
            self.matches, self.match_i = [], -1
            self.controls.find_info.text = ""
            self._marks()
            return
        self._run_find(s, jump=True)

    def _run_find(self, s: ViewState, jump: bool) -> None:
        self.controls.find_info.text = "<i>searching…</i>"

        def done(result: tuple[list[tuple[int, int]], bool]) -> None:
            self.matches, self.matches_more = result
            self.match_i = -1
            if not self.matches:
                self.controls.find_info.text = "no matches"
                self._marks()
                return
            starts = [a for a, _ in self.matches]
            i = bisect.bisect_left(starts, self.state.start)
            if jump:
                self.goto_match(i % len(self.matches))
            else:
                inside = i < len(starts) and starts[i] < min(self.state.stop, self.n)
                self.match_i = i if inside else -1
                self._find_info()
                self._marks()

        def fail(e: BaseException) -> None:
            self.matches, self.match_i = [], -1
            self.controls.find_info.text = "bad pattern"
            self._marks()
            self.report(e, "find: ")

        self.runner.submit(
            "find", lambda: self.shared.find(s.find, s.regex), self.guard(done), fail
        )

    def _find_info(self) -> None:
        n = f"{len(self.matches)}{'+' if self.matches_more else ''}"
        i = self.match_i + 1 if self.match_i >= 0 else "–"
        self.controls.find_info.text = f"match {i} / {n}"

    def goto_match(self, i: int) -> None:
        self.match_i = i
        a, b = self.matches[i]
        self._find_info()
        self.jump(a, b)

    def next_match(self, step: int) -> None:
        if not self.matches:
            raise ValueError("nothing found yet: type text to find first")
        if step == 0:  # a next and a previous click coalesced: nothing to do
            return
        # None chosen yet: the first step lands on the first (or the last) match.
        first = step - 1 if step > 0 else step
        i = self.match_i + step if self.match_i >= 0 else first
        self.goto_match(i % len(self.matches))

    # -- feature track and ranking ----------------------------------------------------------
    def set_feature(self, value: str) -> None:
        none = value in (NO_FEATURE, "", None)
        self.set_state(self.state.with_(feature=None if none else value))

    def _load_rank(self, feature: str | None) -> None:
        if feature is None:
            self.rank.prompt()
            return
        self.rank.loading(feature)

        def fail(e: BaseException) -> None:
            self.rank.failed(_user_error(e) or f"ranking failed ({type(e).__name__})")
            if _user_error(e) is None:
                log.error("ranking %s failed", feature, exc_info=e)

        self.runner.submit(
            "rank",
            # Off the loop, with the ranking: which units drift (counters), flagged in its rows.
            lambda: (self.shared.rank(feature), self.shared.drifting(wait=True)),
            self.guard(lambda got: self.rank.update(feature, got[0], got[1])),
            fail,
        )

    # -- card and saturation ----------------------------------------------------------------
    def _schedule_card(self, nid: str) -> None:
        """The card after the text: on the server it is filled on the next tick, so the
        recoloured text goes out first, and a card for a neuron already replaced is skipped."""
        if self.runner.inline:
            self._load_card(nid)
            return
        self._card_token += 1
        token = self._card_token

        def go() -> None:
            if token == self._card_token:
                self.guard(self._load_card)(nid)

        self.doc.add_next_tick_callback(go)

    def _load_card(self, nid: str) -> None:
        """Statistics, histogram and the recorded top/bottom contexts at once; the sampled
        contexts (a pass over the whole column) a moment later, if the neuron is still shown."""
        self.card.update(nid, self.state.scale)
        self.card.show_contexts(nid, self.shared.quick_contexts(nid))
        self._sampled = None
        # The column scan only for a card someone is looking at (done when its tab opens).
        if analysis("contexts") is None or self.tabs.active != CARD_TAB:
            return
        self._load_sampled(nid)

    def _on_tab(self, active: int) -> None:
        if not 0 <= active < len(self._tab_names):
            return  # not a tab (the browser sent a bad index): nothing to build
        if active == CARD_TAB:
            if self._sampled != self.state.primary:
                self._load_sampled(self.state.primary)
        elif self._tab_names[active] in self._factories:
            self._component(self._tab_names[active])

    def _load_sampled(self, nid: str) -> None:
        if analysis("contexts") is None:
            return
        self.card.loading()

        def fail(e: BaseException) -> None:
            self.card.failed(_user_error(e) or f"contexts failed ({type(e).__name__})")
            if _user_error(e) is None:
                log.error("contexts of %s failed", nid, exc_info=e)

        self.runner.submit(
            "card",
            lambda: self.shared.contexts(nid),
            self.guard(lambda df: self._show_sampled(nid, df)),
            fail,
            executor=self.shared.background,
            delay_ms=CONTEXTS_DELAY_MS,
        )

    def _show_sampled(self, nid: str, df) -> None:
        self.card.show_contexts(nid, df)
        self._sampled = nid

    def _load_saturation(self) -> None:
        def done(df) -> None:
            self.saturation.update(df)
            self.saturation.mark(self.state.primary)

        self.runner.submit(
            "saturation",
            self.shared.saturation,
            self.guard(done),
            lambda e: self.saturation.failed(_user_error(e) or "saturation failed"),
        )

    # -- select and match -------------------------------------------------------------------
    def on_select(self) -> None:
        span = self.text.selected_span()
        self.selection = span
        self.select.set_span(span, self.shared.text)
        self._marks()

    def find_neurons(self) -> None:
        if self.selection is None:
            raise ValueError("select a span in the text first")
        a, b = self.selection
        self.select.busy(f"finding neurons on inside {a:,}–{b:,} and off around it…")

        def matched(df) -> None:
            self.select.show_matches(df, self.shared.text)

        def found(df) -> None:
            self.select.show_neurons(df)
            chosen = self.select.matching_set(df)
            if len(chosen):
                self.select.status.text += " · matching…"
                self.runner.submit(
                    "match", lambda: self.shared.match_spans(chosen), self.guard(matched), fail
                )

        def fail(e: BaseException) -> None:
            self.select.failed(_user_error(e) or f"search failed ({type(e).__name__})")
            if _user_error(e) is None:
                log.error("select and match failed", exc_info=e)

        self.runner.submit(
            "select", lambda: self.shared.select_neurons(a, b), self.guard(found), fail
        )

    # -- export -----------------------------------------------------------------------------
    def export(self) -> None:
        s = self.state
        stop = min(s.stop, self.n)
        name = f"lstmscope-{s.primary}-{s.start}-{stop}.html"
        self.message.show("preparing the export…", "busy")

        def done(doc_html: str) -> None:
            self.download.send(name, doc_html)
            self.message.show(f"exported {name} ({len(doc_html) / 1e3:.0f} kB)", "info")

        self.runner.submit(
            "export",
            lambda: export_range(self.shared.store, list(s.neurons), s.start, stop, scale=s.scale),
            self.guard(done),
            lambda e: self.report(e, "export: "),
        )


def make_document(
    doc: Document,
    store: ActivationStore | Shared,
    *,
    args: dict[str, list[bytes]] | None = None,
    inline: bool | None = None,
) -> App:
    """Build the dashboard in ``doc`` for ``store`` (an open store or the server's Shared).

    ``args`` are URL arguments (``{"neuron": [b"L1.c.137"], "start": [b"5000"]}``); by default
    they come from the request that opened the session. ``inline`` runs slow library calls in
    the callback instead of on the worker pool (the default when there is no server session).
    """
    # An open store gets its own Shared; anything else is the server's (checked by duck type:
    # Bokeh loads this package under its own module name, so the class differs from ours).
    shared = Shared(store) if isinstance(store, ActivationStore) else store
    return App(doc, shared, args=args, inline=inline)


def _served() -> None:
    from bokeh.io import curdoc

    doc = curdoc()
    shared = getattr(doc.session_context.server_context, SHARED_ATTR, None)
    if shared is None:
        doc.add_root(
            Div(text="<b>lstmscope</b>: no store is open; start the server with "
                "<code>lstmscope serve STORE</code> or <code>bokeh serve server --args STORE</code>.")
        )  # fmt: skip
        return
    make_document(doc, shared)


# Bokeh executes this file as a top-level module named ``bokeh_app_<id>`` for each session;
# importing it (tests, or as ``<package>.main``) only defines make_document.
if __name__.startswith("bokeh_app_") and "." not in __name__:
    _served()
