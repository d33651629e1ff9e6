"""Neurons ranked against a feature (``interpret.analysis.rank``); click a row to show it."""

from __future__ import annotations

import html
from collections.abc import Callable

import pandas as pd
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataTable, Div, NumberFormatter, TableColumn

from .state import chosen_row

SHOWN = 200  # rows in the table: the ranking's head is what anyone reads


class RankTable:
    def __init__(self, on_pick: Callable[[str], None]) -> None:
        self.on_pick = on_pick
        self.source = ColumnDataSource(
            {"neuron": [], "score": [], "a": [], "b": [], "sign": []}, name="rank_source"
        )
        num = NumberFormatter(format="0.000")
        self.col_a = TableColumn(field="a", title="AP", formatter=num, width=70)
        self.col_b = TableColumn(field="b", title="AUROC", formatter=num, width=70)
        self.table = DataTable(
            reorderable=False,  # needs jquery-ui, which Bokeh does not ship
            source=self.source,
            columns=[
                TableColumn(field="neuron", title="neuron", width=100),
                TableColumn(field="score", title="score", formatter=num, width=70),
                TableColumn(field="sign", title="sign", width=40),
                self.col_a,
                self.col_b,
            ],
            width=460,
            height=420,
            index_position=None,
            selectable=True,
            sortable=True,
            name="rank_table",
            css_classes=["ls-rank"],
        )
        self.title = Div(text="", width=900, name="rank_title")
        self.source.selected.on_change("indices", self._on_select)
        self.root = column(self.title, self.table, name="ranking")

    def prompt(self) -> None:
        self.title.text = "Choose a feature (left) to rank every neuron against it."
        self.source.data = {k: [] for k in self.source.data}

    def loading(self, feature: str) -> None:
        self.title.text = f"<i>ranking neurons against <b>{html.escape(feature)}</b>…</i>"

    def failed(self, text: str) -> None:
        self.title.text = f"<span style='color:#a00'>{html.escape(text)}</span>"
        self.source.data = {k: [] for k in self.source.data}

    def update(self, feature: str, df: pd.DataFrame) -> None:
        head = df.head(SHOWN)
        binary = "ap" in head.columns
        a, b = ("ap", "auroc") if binary else ("r", "abs_r")
        self.col_a.title, self.col_b.title = ("AP", "AUROC") if binary else ("r", "|r|")
        sign = head["sign"] if "sign" in head.columns else [""] * len(head)
        self.source.selected.indices = []
        self.source.data = {
            "neuron": head["neuron"].astype(str).tolist(),
            "score": head["score"].astype(float).to_numpy(),
            "a": head[a].astype(float).to_numpy()
            if a in head.columns
            else [float("nan")] * len(head),
            "b": head[b].astype(float).to_numpy()
            if b in head.columns
            else [float("nan")] * len(head),
            "sign": ["+" if float(s) > 0 else "−" if float(s) < 0 else "" for s in sign],
        }
        self.title.text = (
            f"Neurons ranked against <b>{html.escape(feature)}</b> (best first, top "
            f"{len(head)} of {len(df)}) · click a row to show it"
        )

    def _on_select(self, attr, old, new) -> None:
        k = chosen_row(new, len(self.source.data["neuron"]))
        if k is not None:
            self.on_pick(self.source.data["neuron"][k])
