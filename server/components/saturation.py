"""Gate saturation (Karpathy et al. 2015, Fig. 3): for every gate unit, the fraction of
positions where it is left-saturated (< 0.1) against right-saturated (> 0.9), one panel per
layer. Click a point to show that gate."""

from __future__ import annotations

import html
from collections.abc import Callable

import pandas as pd
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Div, HoverTool, Range1d, TapTool
from bokeh.palettes import Category10
from bokeh.plotting import figure

from lstmscope.names import KIND_NAMES
from lstmscope.server.state import chosen_row

KIND_COLORS = {"i": Category10[10][0], "f": Category10[10][2], "o": Category10[10][3],
               "r": Category10[10][4], "z": Category10[10][1]}  # fmt: skip


class SaturationView:
    def __init__(self, layers: tuple[int, ...], on_pick: Callable[[str], None]) -> None:
        self.on_pick = on_pick
        self.sources: dict[int, ColumnDataSource] = {}
        self.current: dict[int, ColumnDataSource] = {}
        figs = []
        for li in layers:
            src = ColumnDataSource(
                {"neuron": [], "left": [], "right": [], "kind": [], "color": []},
                name=f"saturation_L{li}",
            )
            cur = ColumnDataSource({"left": [], "right": []})
            fig = figure(
                width=300, height=300, x_range=Range1d(-0.02, 1.02), y_range=Range1d(-0.02, 1.02),
                title=f"layer {li}", toolbar_location=None, tools="", name=f"saturation_fig_L{li}",
            )  # fmt: skip
            fig.xaxis.axis_label = "left-saturated fraction (< 0.1)"
            fig.yaxis.axis_label = "right-saturated fraction (> 0.9)"
            fig.line([0, 1], [1, 0], color="#ccc", line_dash="dashed")
            pts = fig.scatter(
                "left", "right", source=src, color="color", size=6, alpha=0.7,
                legend_field="kind",
            )  # fmt: skip
            pts.nonselection_glyph = pts.glyph.clone()
            fig.scatter(
                "left", "right", source=cur, size=16, fill_alpha=0, line_color="#d62728",
                line_width=2.5,
            )  # fmt: skip
            fig.legend.location = "top_right"
            fig.legend.label_text_font_size = "10px"
            fig.add_tools(
                HoverTool(
                    renderers=[pts],
                    tooltips=[
                        ("gate", "@neuron"),
                        ("left", "@left{0.000}"),
                        ("right", "@right{0.000}"),
                    ],
                ),
                TapTool(renderers=[pts]),
            )
            src.selected.on_change("indices", self._picker(src))
            self.sources[li] = src
            self.current[li] = cur
            figs.append(fig)
        self.note = Div(text="", width=900, name="saturation_note")
        self.root = column(self.note, row(*figs), name="saturation")

    def _picker(self, src: ColumnDataSource):
        def pick(attr, old, new) -> None:
            k = chosen_row(new, len(src.data["neuron"]))
            if k is not None:
                nid = src.data["neuron"][k]
                src.selected.indices = []
                self.on_pick(nid)

        return pick

    def update(self, df: pd.DataFrame) -> None:
        if not len(df):
            self.note.text = (
                "No gates were recorded in this store (record kinds i, f, o to see them)."
            )
        else:
            self.note.text = (
                "Each point is one gate unit; a gate near the axes is rarely saturated, one on the "
                "dashed diagonal always is. Click a point to show that gate."
            )
        for li, src in self.sources.items():
            part = df[df["layer"] == li]
            kinds = part["kind"].astype(str).tolist()
            src.data = {
                "neuron": part["neuron"].astype(str).tolist(),
                "left": part["left"].astype(float).to_numpy(),
                "right": part["right"].astype(float).to_numpy(),
                "kind": [f"{k} ({KIND_NAMES.get(k, k)})" for k in kinds],
                "color": [KIND_COLORS.get(k, "#777") for k in kinds],
            }

    def mark(self, nid: str) -> None:
        """Ring the current neuron if it is a gate."""
        for src, cur in zip(self.sources.values(), self.current.values(), strict=True):
            names = src.data["neuron"]
            if nid in names:
                i = names.index(nid)
                new = {"left": [src.data["left"][i]], "right": [src.data["right"][i]]}
            else:
                new = {"left": [], "right": []}
            if new != dict(cur.data):
                cur.data = new

    def failed(self, text: str) -> None:
        self.note.text = f"<span style='color:#a00'>{html.escape(text)}</span>"
