"""Neurons ranked against a feature (``lstmscope.analysis.rank``); click a row to show it.

Each ranking replaces the table's rows as a whole (:class:`.tables.Rows`: a new source, so the
browser redraws them; see there) and, when the feature's kind changes, its columns.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import numpy as np
import pandas as pd
from bokeh.layouts import column
from bokeh.models import DataTable, Div, NumberFormatter, StringFormatter, TableColumn

from lstmscope.server.components.tables import Rows

SHOWN = 200  # rows in the table: the ranking's head is what anyone reads

# Columns of rank's frame shown beside the score: (column, title, width); missing ones are left
# out. A binary ranking's score is its AP, a graded one's |r|.
BINARY_FIELDS = (("auroc", "AUROC", 62), ("f1", "F1*", 52), ("iou", "IoU*", 52))
GRADED_FIELDS = (("r", "r", 62),)


def _exact_mark(v) -> str:
    """✓ for a row recomputed exactly from the stored column, ≈ for the fast screen's value."""
    return "✓" if bool(v) else "≈"


class RankTable:
    def __init__(self, on_pick: Callable[[str], None]) -> None:
        self.on_pick = on_pick
        self._kind: str | None = None
        self.table = DataTable(
            reorderable=False,  # needs jquery-ui, which Bokeh does not ship
            columns=self._columns(None, []),
            width=560,
            height=420,
            index_position=None,
            selectable=True,
            sortable=True,
            name="rank_table",
            css_classes=["ls-rank"],
        )
        self.rows = Rows(
            self.table,
            {"neuron": [], "score": [], "sign": []},
            lambda k, data: self.on_pick(data["neuron"][k]),
        )
        self.title = Div(text="", width=560, name="rank_title")
        self.legend = Div(text="", width=560, name="rank_legend", styles={"font-size": "12px"})
        self.root = column(self.title, self.table, self.legend, name="ranking")

    # -- building blocks ----------------------------------------------------------------------
    @staticmethod
    def _columns(kind: str | None, fields) -> list[TableColumn]:
        num = NumberFormatter(format="0.000")
        cols = [
            # The neuron id alone in its own cell: what a user copies and what tests read.
            TableColumn(field="neuron", title="neuron", width=96, formatter=StringFormatter()),
            TableColumn(
                field="score",
                title="AP" if kind == "binary" else "|r|" if kind else "score",
                formatter=num,
                width=62,
            ),
            TableColumn(field="sign", title="sign", width=36),
        ]
        cols += [TableColumn(field=f, title=t, formatter=num, width=w) for f, t, w in fields]
        if kind == "binary":
            cols.append(TableColumn(field="exact", title="exact", width=40))
        cols.append(TableColumn(field="drift", title="drift", width=40))
        return cols

    def _show(self, kind: str | None, fields, data: dict) -> None:
        """Put ``data`` on screen: the columns first (when the kind changed), then a new source,
        so that the last change the client applies is one that redraws every row."""
        if kind != self._kind:
            self.table.columns = self._columns(kind, fields)
            self._kind = kind
        self.rows.set(data)

    @property
    def source(self):
        """The rows on screen now (a new source for each ranking)."""
        return self.rows.source

    # -- states -----------------------------------------------------------------------------
    def prompt(self) -> None:
        self.title.text = "Choose a feature (left) to rank every neuron against it."
        self.legend.text = ""
        self._show(self._kind, [], {k: [] for k in self.source.data})

    def loading(self, feature: str) -> None:
        self.title.text = f"<i>ranking neurons against <b>{html.escape(feature)}</b>…</i>"

    def failed(self, text: str) -> None:
        self.title.text = f"<span style='color:#a00'>{html.escape(text)}</span>"
        self.legend.text = ""
        self._show(self._kind, [], {k: [] for k in self.source.data})

    def update(
        self, feature: str, df: pd.DataFrame, drifting: frozenset[str] = frozenset()
    ) -> None:
        """Show the head of ``df`` (``rank_feature``'s frame, best first) in its order.

        ``drifting``: neurons whose value trends with the position in the recording stream
        (counters): their scores depend on where recording started, so the row says so.
        """
        head = df.head(SHOWN)
        kind = str(df.attrs.get("feature_kind") or ("binary" if "ap" in df.columns else "graded"))
        fields = [f for f in (BINARY_FIELDS if kind == "binary" else GRADED_FIELDS) if f[0] in head]
        n = len(head)
        data: dict[str, list | np.ndarray] = {
            "neuron": head["neuron"].astype(str).tolist(),
            "score": head["score"].astype(float).to_numpy(),
            "sign": ["+" if float(s) > 0 else "−" if float(s) < 0 else "" for s in head["sign"]]
            if "sign" in head
            else [""] * n,
        }
        for f, _, _ in fields:
            data[f] = head[f].astype(float).to_numpy()
        if kind == "binary":
            data["exact"] = (
                [_exact_mark(v) for v in head["exact"]] if "exact" in head else ["≈"] * n
            )
        data["drift"] = ["⚠" if nid in drifting else "" for nid in data["neuron"]]
        self._show(kind, fields, data)
        self.title.text = (
            f"Neurons ranked against <b>{html.escape(feature)}</b> (best first, top "
            f"{n} of {len(df)}) · click a row to show it"
        )
        self.legend.text = self._legend(kind, df, head, drifting)

    @staticmethod
    def _legend(kind: str, df: pd.DataFrame, head: pd.DataFrame, drifting) -> str:
        parts = []
        if kind == "binary":
            prev = df.attrs.get("prevalence")
            chance = f" (a random ranking scores {prev:.3f})" if prev is not None else ""
            parts.append(
                f"score = AP, average precision of the neuron as a detector{chance}; "
                "F1*, IoU* at the neuron's best threshold"
            )
            if "exact" in head:
                n_exact = int(np.asarray(head["exact"], dtype=bool).sum())
                parts.append(
                    f"exact ✓: computed from the stored column ({n_exact} rows); ≈: the fast "
                    "histogram screen that ordered all neurons"
                )
        else:
            parts.append("score = |r|, Pearson's correlation with the feature; sign is r's")
        if any(nid in drifting for nid in head["neuron"].astype(str)):
            parts.append(
                "drift ⚠: the value trends with the position in the recording stream (a "
                "counter): its score depends on where recording started (--streams, --warmup)"
            )
        return " · ".join(html.escape(p) for p in parts)
