"""One tab's dashboard: the page's components, their widgets wired to handlers, and the view.

An :class:`App` holds the view (:class:`~lstmscope.server.state.ViewState`): every change goes
through :meth:`App.set_state`, which validates it, updates the components that depend on what
changed and the address bar. The handlers live beside it, grouped by what they change:
:class:`~lstmscope.server.navigation.Navigation` (neurons and position),
:class:`~lstmscope.server.finding.Finding` (the find box) and :class:`~lstmscope.server.jobs.Jobs`
(slow library calls that fill the tabs). Every callback is guarded: bad input becomes a message
on the page, never a broken session. On a server, bursts of user actions are merged
(:class:`~lstmscope.server.runner.Coalescer`) and slow calls run off the event loop
(:class:`~lstmscope.server.runner.Runner`).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import operator
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bokeh import events
from bokeh.document import Document
from bokeh.layouts import column
from bokeh.models import Div, TabPanel, Tabs

from lstmscope.analysis.features import FEATURES
from lstmscope.server.components.card import NeuronCard
from lstmscope.server.components.controls import Controls, Message
from lstmscope.server.components.heatmap import Heatmap
from lstmscope.server.components.links import Download, UrlSync
from lstmscope.server.components.page import page_layout
from lstmscope.server.components.ranking import RankTable
from lstmscope.server.components.saturation import SaturationView
from lstmscope.server.components.select_match import SelectMatch
from lstmscope.server.components.textview import TextView
from lstmscope.server.finding import Finding
from lstmscope.server.jobs import Jobs
from lstmscope.server.navigation import Navigation
from lstmscope.server.runner import Action, Coalescer, Runner, user_error
from lstmscope.server.shared import Shared
from lstmscope.server.state import MAX_NEURONS, PAGE_SIZES, ViewState, to_query

log = logging.getLogger("server")

TAB_NAMES = ("card", "rank", "saturation", "select")  # the tabs, in the order shown


class App(Navigation, Finding, Jobs):
    """One tab's dashboard, opened on ``state`` (``intro`` says why it opened there;
    ``problems`` are the fields of the URL that were refused). ``inline`` runs slow library
    calls in the callback instead of on the worker pool (the default without a server
    session)."""

    def __init__(
        self,
        doc: Document,
        shared: Shared,
        state: ViewState,
        *,
        intro: str = "",
        problems: Sequence[str] = (),
        inline: bool | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.doc = doc
        self.shared = shared
        self.n = shared.store.n
        if inline is None:
            inline = doc.session_context is None
        self.runner = Runner(doc, shared.executor, inline=inline)
        # Queue user actions for the next tick and merge bursts: on a server only; tests
        # building the document directly see each action's result at once.
        self.actions = Coalescer(
            doc, lambda fn, value: self.user(fn)(value), self._batch, enabled=not self.runner.inline
        )
        self._syncing = False
        # While a batch of actions runs (see _batch): the view last drawn, and whether it moved.
        self._drawn: ViewState | None = None
        self._dirty = False
        self.pinned: list[str] = list(state.neurons[1:])
        self.matches: list[tuple[int, int]] = []
        self.matches_more = False
        self.match_i = -1
        self.selection: tuple[int, int] | None = None
        self.focus: tuple[int, int] | None = None
        self.last_update_s = 0.0
        self.intro = intro
        self._build_components()
        self._build_tabs()
        self._wire()

        self.state = state
        self._render(None, state)
        if problems:
            self.message.show("\n".join(problems), "warn")
        elif shared.warm_note:
            self.message.show(shared.warm_note, "warn")
        elif intro:
            self.message.show(intro, "info")
        if state.find:  # after the message: a bad pattern's error must not be overwritten
            self.run_find(state, jump=False)
        self._add_page()
        log.debug("page built in %.0f ms", (time.perf_counter() - t0) * 1e3)

    # -- building the page ------------------------------------------------------------------
    def _build_components(self) -> None:
        shared = self.shared
        self.message = Message()
        self.controls = Controls(shared)
        self.text = TextView(shared)
        self.heatmap = Heatmap(self.text.fill_map, self.text.lanes, self.text.wrap + 1)
        jump = self.actions.action("jump", lambda span: self.jump(*span))
        self._pick = self.actions.action("pick", self.pick)
        self.card = NeuronCard(shared, on_jump=lambda pos: jump((pos,)))
        self.url = UrlSync()
        self.download = Download()
        find = self.actions.action("select", lambda _v: self.find_neurons())
        self.select = SelectMatch(
            on_find=lambda: find(None),
            on_pick=self._pick,
            on_jump=lambda a, b: jump((a, b)),
            on_stack=self.actions.action("stack", self.stack),
        )

    def _build_tabs(self) -> None:
        # The ranking and saturation tabs are built the first time they are opened (a third of
        # the page's models: a faster first load, less memory per tab). Select & match is not:
        # Bokeh's client re-sends a button added later in full with each click, which works
        # but warns.
        self._built: dict[str, Any] = {}
        self._factories: dict[str, Callable[[], Any]] = {
            "rank": lambda: RankTable(on_pick=self._pick),
            "saturation": lambda: SaturationView(self.shared.store.layers, on_pick=self._pick),
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

    def _add_page(self) -> None:
        heat_title = Div(
            text="<b>Neurons × positions</b> · click to jump", styles={"font-size": "12px"}
        )
        self.root = page_layout(
            self.controls.root, self.message.root, self.text.root,
            [heat_title, self.heatmap.root], self.tabs,
        )  # fmt: skip
        doc = self.doc
        with doc.models.freeze():  # one scan of the model graph instead of one per root
            doc.add_root(self.root)
            doc.add_root(self.url.source)
            doc.add_root(self.download.source)
        self.url.install(doc)
        doc.title = f"lstmscope · {self.state.primary}"

    # -- lazily built tabs ------------------------------------------------------------------
    def _component(self, name: str) -> Any:
        """A tab's component, built (and filled with the current view) on first use."""
        comp = self._built.get(name)
        if comp is None:
            comp = self._built[name] = self._factories[name]()
            self._panels[name].children = [comp.root]
            if name == "rank":
                self.load_rank(self.state.feature)
            elif name == "saturation":
                self.load_saturation()
        return comp

    @property
    def rank(self) -> RankTable:
        return self._component("rank")

    @property
    def saturation(self) -> SaturationView:
        return self._component("saturation")

    def tab_shown(self) -> str | None:
        """The name of the open tab (one of :data:`TAB_NAMES`), None for a bad index."""
        active = self.tabs.active
        return TAB_NAMES[active] if 0 <= active < len(TAB_NAMES) else None

    def _on_tab(self) -> None:
        name = self.tab_shown()  # None: the browser sent a bad index; nothing to build
        if name == "card":
            self.card_opened()
        elif name in self._factories:
            self._component(name)

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
        text = user_error(e)
        if text is None:
            log.error("dashboard callback failed", exc_info=e)
            text = f"internal error ({type(e).__name__}); the view was left as it was"
        self.message.show(f"{what}{text}", "error")

    @property
    def coalesce(self) -> bool:
        """Whether user actions are queued and merged (on a server) or applied at once."""
        return self.actions.enabled

    @coalesce.setter
    def coalesce(self, on: bool) -> None:
        self.actions.enabled = on

    @property
    def coalesced(self) -> int:
        """How many user actions a newer one replaced (or was merged into)."""
        return self.actions.merged

    @contextlib.contextmanager
    def quietly(self) -> Iterator[None]:
        """Widgets and selections set inside do not call back as if the user changed them."""
        self._syncing = True
        try:
            yield
        finally:
            self._syncing = False

    @property
    def batching(self) -> bool:
        """Whether a batch of actions is running (the page is drawn once, at its end)."""
        return self._drawn is not None

    def _batch(self, actions: list[Action]) -> None:
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

    # -- wiring -----------------------------------------------------------------------------
    def _on(self, widget, attr: str, fn: Callable[[Any], None]) -> None:
        """Call ``fn(new)`` when a widget changes because of the user (not when we set it)."""
        queued = self.actions.action(f"{widget.id}.{attr}", fn)

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
                with self.quietly():
                    self.controls.update(self.state, self.n)
                raise

        return chosen

    def _click(self, button, fn: Callable[[], None]) -> None:
        queued = self.actions.action(f"{button.id}.click", lambda _v: fn())
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
        page = self.actions.action("page", self.page, merge=operator.add)
        c.prev_page.on_click(lambda *_a: page(-1))
        c.next_page.on_click(lambda *_a: page(+1))
        step = self.actions.action("match", self.next_match, merge=operator.add)
        c.find_prev.on_click(lambda *_a: step(-1))
        c.find_next.on_click(lambda *_a: step(+1))
        self._on(self.text.source.selected, "indices", lambda _new: self.on_select())
        tap = self.actions.action("tap", self.on_heatmap_tap)
        # One required argument: Bokeh calls a callback that can take none without the event.
        self.heatmap.figure.on_event(events.Tap, lambda event: tap(event))
        self.tabs.on_change("active", lambda _a, _o, _new: self.guard(self._on_tab)())

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
        if self.batching:  # inside a batch of actions: drawn once, at its end
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
        with self.quietly():
            self.text.update(new)
            self.heatmap.update(new.start, self.text.source.data["cidx"], self.text.lane_names)
            if old is None or (old.start, old.size) != (new.start, new.size):
                self.selection = None
                self.select.set_span(None, "")
            self.show_marks()
            if self.focus is not None:
                self.text.scroll_to(self.focus[0])
            self.controls.update(new, self.n)
        if old is None or old.primary != new.primary or old.scale != new.scale:
            self.schedule_card(new.primary)  # the card is coloured on the text's scale
        if (old is None or old.primary != new.primary) and "saturation" in self._built:
            self.saturation.mark(new.primary)
        if (old is None or old.feature != new.feature) and "rank" in self._built:
            self.load_rank(new.feature)
        self.url.update(to_query(new))
        self.doc.title = f"lstmscope · {new.primary}"
        self.last_update_s = time.perf_counter() - t0

    def show_marks(self) -> None:
        """Outline the find matches, the selection and the focus inside the window."""
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
