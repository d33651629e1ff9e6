"""The handlers that change which neurons and which window of the text a tab shows.

:class:`Navigation` is one part of :class:`lstmscope.server.app.App` (a mixin): picking,
typing, pinning and stacking neurons, choosing the feature track, paging, jumping to a position
and clicking the heatmap. Each builds the next :class:`~lstmscope.server.state.ViewState` and
hands it to ``App.set_state``, which validates it before anything is drawn.
"""

from __future__ import annotations

import math

from bokeh import events

from lstmscope.server.components.controls import NO_FEATURE
from lstmscope.server.state import MAX_NEURONS, ViewState, parse_position, window_around


class Navigation:
    """Neurons and position: what the text view shows (uses the App's ``state``, ``pinned``,
    ``focus``, ``set_state``, ``show_marks`` and its components)."""

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

    def set_feature(self, value: str) -> None:
        none = value in (NO_FEATURE, "", None)
        self.set_state(self.state.with_(feature=None if none else value))

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
        with self.quietly():
            self.controls.goto.value = ""

    def jump(self, pos: int, stop: int | None = None) -> None:
        """Show position ``pos`` (outlined with ``[pos, stop)``), paging only if needed."""
        if not 0 <= pos < self.n:
            raise ValueError(f"position {pos} is outside the text (0–{self.n - 1})")
        focus = (pos, max(stop or pos + 1, pos + 1))
        s: ViewState = self.state
        self.match_i = -1 if not self.is_match(focus) else self.match_i
        if not s.start <= pos < min(s.stop, self.n):
            s = s.with_(start=window_around(pos, s.size, self.n))
        elif not self.batching:  # in the window drawn: outline and scroll, no redraw
            self.focus = focus
            self.show_marks()
            self.text.scroll_to(pos)
            return
        self.set_state(s, focus=focus)

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
