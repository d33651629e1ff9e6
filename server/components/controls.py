"""The control panel: neuron pickers, paging, jump, find, feature track, colour scale, export,
and the message line. Widgets only; :class:`lstmscope.server.app.App` wires their callbacks to
the view state.

The widgets come in four groups of :data:`WIDTH` pixels (neuron, page, find, view) laid out
side by side in a row that wraps (``Controls.root``), so the panel takes a strip across the top
of a wide window instead of a column beside the text."""

from __future__ import annotations

import html
from typing import ClassVar

from bokeh.layouts import column, row
from bokeh.models import Button, CheckboxGroup, Div, Select, Spinner, TextInput

from lstmscope.analysis.features import FEATURES
from lstmscope.export.colors import SCALE_TITLES, SCALES
from lstmscope.names import KIND_NAMES, parse_neuron
from lstmscope.server.shared import Shared
from lstmscope.server.state import LANE_MODES, PAGE_SIZES, ViewState

WIDTH = 280
MARGIN = 10  # Bokeh puts 5 px around each widget
NO_FEATURE = "(none)"
LANE_TITLES = {"thin": "thin strip", "row": "full row", "off": "hidden"}
# Lets a row of fixed-width groups wrap onto the next line when the window is narrow.
WRAP_ROW = ":host { flex-wrap: wrap; row-gap: 4px; }"


class Message:
    """One line at the top of the page for errors, warnings and progress. Text only: it often
    quotes what the user typed, so it is escaped."""

    STYLES: ClassVar[dict[str, str]] = {
        "error": "color:#a00;background:#fdecea;border:1px solid #f5c2c0",
        "warn": "color:#7a4d00;background:#fff4e0;border:1px solid #f0d9a8",
        "info": "color:#333;background:#eef4fb;border:1px solid #cfe0f3",
        "busy": "color:#333;background:#f3f3f3;border:1px solid #ddd",
    }

    def __init__(self) -> None:
        self.root = Div(
            text="", name="message", css_classes=["ls-message"], sizing_mode="stretch_width"
        )
        self.kind = ""
        self.text = ""

    def show(self, text: str, kind: str = "info") -> None:
        self.kind, self.text = kind, text
        if not text:
            self.root.text = ""
            return
        style = self.STYLES.get(kind, self.STYLES["info"])
        self.root.text = (
            f'<div class="ls-msg ls-{kind}" style="{style};padding:4px 8px;border-radius:4px;'
            f'font-size:13px;white-space:pre-wrap">{html.escape(text)}</div>'
        )

    def clear(self) -> None:
        self.show("")


class Controls:
    """The control panel's widgets in four groups (:meth:`update` shows a view in them)."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._neuron_widgets(shared.store)
        self._page_widgets(shared.store)
        self._find_widgets()
        self._view_widgets()
        w = WIDTH
        self.groups = [
            column(
                row(self.layer, self.kind, self.unit),
                self.neuron,
                row(self.pin, self.clear_pins),
                width=w,
                name="controls_neuron",
            ),
            column(
                self.info,
                row(self.prev_page, self.next_page, self.page_size),
                self.page_info,
                self.goto,
                width=w,
                name="controls_page",
            ),
            column(
                row(self.find, column(Div(text="", height=14), self.find_regex)),
                row(self.find_prev, self.find_next, self.find_info),
                self.feature,
                self.feature_info,
                width=w,
                name="controls_find",
            ),
            column(
                row(self.scale, self.lane),
                self.export,
                width=w,
                name="controls_view",
            ),
        ]
        self.root = row(*self.groups, name="controls", stylesheets=[WRAP_ROW])

    def _neuron_widgets(self, store) -> None:
        """Layer, kind and unit pickers, the neuron id box, pin and clear."""
        w = WIDTH
        self.layer = Select(
            title="Layer",
            options=[str(li) for li in store.layers],
            width=60,
            name="layer",
            css_classes=["ls-layer"],
        )
        self.kind = Select(
            title="Kind",
            options=[(k, f"{k} · {KIND_NAMES.get(k, k)}") for k in store.kinds],
            width=w - 60 - 75 - 3 * MARGIN,
            name="kind",
            css_classes=["ls-kind"],
        )
        self.unit = Spinner(
            title="Unit",
            low=0,
            high=store.hidden_size - 1,
            step=1,
            value=0,
            width=75,
            name="unit",
            css_classes=["ls-unit"],
        )
        self.neuron = TextInput(
            title="Neuron id(s): L1.c.137, more to stack",
            width=w - MARGIN,
            name="neuron_input",
            css_classes=["ls-neuron-input"],
        )
        half = (w - 2 * MARGIN) // 2
        self.pin = Button(label="Pin (stack)", width=half, name="pin", css_classes=["ls-pin"])
        self.clear_pins = Button(
            label="Clear stack", width=half, name="clear_pins", css_classes=["ls-clear-pins"]
        )

    def _page_widgets(self, store) -> None:
        """The store's summary, paging, page size, the window shown and go-to-position."""
        w = WIDTH
        self.info = Div(
            text=(
                f"<b>{html.escape(store.path.name)}</b><br>"
                f"{store.n:,} characters · {store.cell.upper()} · layers "
                f"{', '.join(map(str, store.layers))} · {store.hidden_size} units<br>"
                f"kinds {html.escape(', '.join(store.kinds))}"
            ),
            width=w,
        )
        third = (w - 3 * MARGIN) // 3
        self.prev_page = Button(
            label="◀ Prev", width=third, name="prev_page", css_classes=["ls-prev-page"]
        )
        self.next_page = Button(
            label="Next ▶", width=third, name="next_page", css_classes=["ls-next-page"]
        )
        self.page_size = Select(
            options=[str(s) for s in PAGE_SIZES],
            width=third,
            name="page_size",
            css_classes=["ls-page-size"],
        )
        self.goto = TextInput(
            title="Go to position", width=w - MARGIN, name="goto", css_classes=["ls-goto"]
        )
        self.page_info = Div(text="", width=w, name="page_info", css_classes=["ls-page-info"])

    def _find_widgets(self) -> None:
        """The find box, its regex switch and match steps; the feature track's choice."""
        w = WIDTH
        self.find = TextInput(
            title="Find text (Enter)",
            width=w - 70 - 2 * MARGIN,
            name="find",
            css_classes=["ls-find"],
        )
        self.find_regex = CheckboxGroup(
            labels=["regex"], active=[], width=60, name="find_regex", css_classes=["ls-find-regex"]
        )
        self.find_prev = Button(label="◀", width=40, name="find_prev", css_classes=["ls-find-prev"])
        self.find_next = Button(label="▶", width=40, name="find_next", css_classes=["ls-find-next"])
        self.find_info = Div(
            text="", width=w - 80 - 3 * MARGIN, name="find_info", css_classes=["ls-find-info"]
        )
        self.feature = Select(
            title="Feature track (and ranking)",
            options=[NO_FEATURE, *FEATURES],
            value=NO_FEATURE,
            width=w - MARGIN,
            name="feature",
            css_classes=["ls-feature"],
        )
        self.feature_info = Div(text="", width=w, styles={"font-size": "11px", "color": "#555"})

    def _view_widgets(self) -> None:
        """The colour scale, how the feature track is drawn, and the export button."""
        w = WIDTH
        self.scale = Select(
            title="Colour scale",
            options=[(k, SCALE_TITLES[k]) for k in SCALES],
            value=SCALES[0],
            width=w - 110 - 2 * MARGIN,
            name="scale",
            css_classes=["ls-scale"],
        )
        self.lane = Select(
            title="Feature track",
            options=[(k, LANE_TITLES[k]) for k in LANE_MODES],
            value=LANE_MODES[0],
            width=110,
            name="lane",
            css_classes=["ls-lane"],
        )
        self.export = Button(
            label="Export view as HTML",
            button_type="primary",
            width=w - MARGIN,
            name="export",
            css_classes=["ls-export"],
        )

    def update(self, state: ViewState, n: int) -> None:
        """Show ``state`` in the widgets (the caller suppresses the resulting callbacks)."""
        nrn = parse_neuron(state.primary)
        self.layer.value = str(nrn.layer)
        self.kind.value = nrn.kind
        self.unit.value = nrn.unit
        self.neuron.value = ", ".join(state.neurons)
        self.page_size.value = str(state.size)
        stop = min(state.stop, n)
        self.page_info.text = f"characters {state.start:,}–{stop:,} of {n:,}"
        self.prev_page.disabled = state.start <= 0
        self.next_page.disabled = stop >= n
        self.feature.value = state.feature or NO_FEATURE
        if state.feature:
            self.feature_info.text = html.escape(FEATURES[state.feature].description)
        else:
            self.feature_info.text = ""
        self.find.value = state.find
        self.find_regex.active = [0] if state.regex else []
        self.scale.value = state.scale
        self.lane.value = state.lane
