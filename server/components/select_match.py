"""Select and match: select a span of the text (click a character, shift-click another, or
drag a box), get the neurons that are on there and off around it
(``lstmscope.analysis.search.select_neurons``), then the other places in the corpus where those
neurons do the same (``match_spans``). Click a neuron to show it, a match to jump there."""

from __future__ import annotations

import html
from collections.abc import Callable

import pandas as pd
from bokeh.layouts import column, row
from bokeh.models import Button, DataTable, Div, NumberFormatter, TableColumn

from lstmscope.export.text import visible_text
from lstmscope.server.components.tables import Rows

SNIPPET = 60  # characters of each match shown in the table
TOP_NEURONS = 5  # the neurons whose pattern is matched


class SelectMatch:
    def __init__(
        self,
        on_find: Callable[[], None],
        on_pick: Callable[[str], None],
        on_jump: Callable[[int, int], None],
        on_stack: Callable[[list[str]], None],
    ) -> None:
        self.on_pick, self.on_jump, self.on_stack = on_pick, on_jump, on_stack
        self.info = Div(
            text="Select a span in the text: click its first character, then shift-click its "
            "last (or drag a box).",
            width=900,
            name="selection_info",
            css_classes=["ls-selection-info"],
        )
        self.run = Button(
            label="Find neurons for this span", disabled=True, width=230, name="select_run",
            css_classes=["ls-select-run"],
            button_type="success",
        )  # fmt: skip
        self.run.on_click(lambda: on_find())
        self.stack = Button(
            label="Stack these neurons", disabled=True, width=180, name="select_stack"
        )
        self.stack.on_click(self._stack)
        num = NumberFormatter(format="0.000")
        self.neuron_table = DataTable(
            reorderable=False,  # needs jquery-ui, which Bokeh does not ship
            columns=[
                TableColumn(field="neuron", title="neuron", width=90),
                TableColumn(field="score", title="score", formatter=num, width=60),
                TableColumn(field="inside", title="on inside", formatter=num, width=70),
                TableColumn(field="outside", title="on outside", formatter=num, width=70),
            ],
            width=320, height=330, index_position=None, name="select_table",
            css_classes=["ls-select"],
        )  # fmt: skip
        self.match_table = DataTable(
            reorderable=False,  # needs jquery-ui, which Bokeh does not ship
            columns=[
                TableColumn(field="start", title="start", width=70),
                TableColumn(field="stop", title="stop", width=70),
                TableColumn(field="score", title="score", formatter=num, width=60),
                TableColumn(field="overlap", title="overlap", formatter=num, width=60),
                TableColumn(field="text", title="text", width=360),
            ],
            width=620, height=330, index_position=None, name="match_table",
            css_classes=["ls-match"],
        )  # fmt: skip
        self.status = Div(
            text="", width=900, name="select_status", css_classes=["ls-select-status"]
        )
        # Rows replaced as a whole: the browser redraws a table only then (see .tables).
        self.neuron_rows = Rows(
            self.neuron_table,
            {"neuron": [], "score": [], "inside": [], "outside": []},
            lambda k, data: self.on_pick(data["neuron"][k]),
        )
        self.match_rows = Rows(
            self.match_table,
            {"start": [], "stop": [], "overlap": [], "score": [], "text": []},
            lambda k, data: self.on_jump(int(data["start"][k]), int(data["stop"][k])),
        )
        self.root = column(
            self.info,
            row(self.run, self.stack),
            self.status,
            row(self.neuron_table, self.match_table),
            name="select_match",
        )
        self.span: tuple[int, int] | None = None
        self._found = ""

    def set_span(self, span: tuple[int, int] | None, text: str) -> None:
        self.span = span
        self.run.disabled = span is None
        if span is None:
            return
        a, b = span
        shown = visible_text(text[a : min(b, a + 80)]).replace("\n", "↵")
        more = "…" if b - a > 80 else ""
        self.info.text = (
            f"Selected <b>{a:,}–{b:,}</b> ({b - a} characters): "
            f"<code style='background:#f3f3f3'>{html.escape(shown)}{more}</code>"
        )

    def busy(self, what: str) -> None:
        self.status.text = f"<i>{html.escape(what)}</i>"

    def failed(self, text: str) -> None:
        self.status.text = f"<span style='color:#a00'>{html.escape(text)}</span>"

    def show_neurons(self, df: pd.DataFrame) -> None:
        self.neuron_rows.set(
            {
                "neuron": df["neuron"].astype(str).tolist(),
                "score": df["score"].astype(float).to_numpy(),
                "inside": df["frac_on_inside"].astype(float).to_numpy(),
                "outside": df["frac_on_outside"].astype(float).to_numpy(),
            }
        )
        self.stack.disabled = not len(df)
        passing = int(df["passes"].sum()) if "passes" in df.columns else len(df)
        self._found = (
            f"{passing} of the {len(df)} best neurons are on inside the span and off around it"
        )
        self.status.text = self._found

    def top_neurons(self) -> list[str]:
        return list(self.neurons.data["neuron"][:TOP_NEURONS])

    @staticmethod
    def matching_set(df: pd.DataFrame) -> pd.DataFrame:
        """The neurons whose joint pattern is searched for: those that pass (on inside, off
        around), else the best few; the frame keeps the span and thresholds it came with."""
        chosen = df[df["passes"]] if "passes" in df.columns else df.iloc[:0]
        if not len(chosen):
            chosen = df
        chosen = chosen.head(TOP_NEURONS).copy()
        chosen.attrs = dict(df.attrs)
        return chosen

    def show_matches(self, df: pd.DataFrame, text: str) -> None:
        starts = df["start"].astype(int).tolist()
        stops = df["stop"].astype(int).tolist()
        snippets = [
            visible_text(text[a : min(b, a + SNIPPET)]).replace("\n", "↵")
            for a, b in zip(starts, stops, strict=True)
        ]
        self.match_rows.set(
            {
                "start": starts,
                "stop": stops,
                "overlap": df["overlap"].astype(float).to_numpy(),
                "score": df["score"].astype(float).to_numpy(),
                "text": snippets,
            }
        )
        self.status.text = f"{self._found} · {len(df)} other places where they match"

    @property
    def neurons(self):
        """The neuron rows on screen now (a new source each time)."""
        return self.neuron_rows.source

    @property
    def matches(self):
        """The match rows on screen now (a new source each time)."""
        return self.match_rows.source

    def _stack(self) -> None:
        self.on_stack(self.top_neurons())
