"""The neuron card: statistics, histogram and top / bottom / quantile contexts of one neuron.

Contexts are drawn like the text view (a glyph grid, coloured by the neuron, hoverable), one
snippet per row with the context's own character aligned in one column and outlined; clicking
a snippet jumps the text view there.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from bokeh.core.properties import field, value
from bokeh.layouts import column, row
from bokeh.models import (
    ColumnDataSource,
    CustomJSHover,
    Div,
    HoverTool,
    LinearColorMapper,
    Range1d,
    TapTool,
)
from bokeh.plotting import figure
from bokeh.transform import transform

from lstmscope.export.card import rebin_hist
from lstmscope.export.colors import quantize, whole_neuron_scale
from lstmscope.names import GATE_KINDS, KIND_NAMES, parse_neuron
from lstmscope.server.components.textgrid import color_index, color_table, row_cells
from lstmscope.server.components.textview import CELL_W, FONT
from lstmscope.server.shared import Shared
from lstmscope.server.state import chosen_row

ROW_PX = 17
WIDTH = 570  # px: the card fits beside the text on a 1440 px screen
LABEL_CELLS = 16  # left of each snippet: its label, value and position
STAT_KEYS = (
    "mean",
    "std",
    "min",
    "q01",
    "q25",
    "q50",
    "q75",
    "q99",
    "max",
    "sat_left",
    "sat_right",
)
GROUP_TITLES = {"top": "Highest activations", "bottom": "Lowest activations"}


def _fmt(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return "–" if math.isnan(f) else f"{f:.4g}"


def drift_note(drift: pd.DataFrame | None, nid: str) -> str:
    """A warning line for a unit that trends with the distance from its run's start (a counter:
    what it reads depends on where recording started), from ``lstmscope.analysis.drift``."""
    if drift is None or nid not in drift.index or not bool(drift.at[nid, "drifting"]):
        return ""
    r, slope = float(drift.at[nid, "r"]), float(drift.at[nid, "slope"])
    return (
        "<div class='ls-drift' style='margin:4px 0;padding:3px 6px;background:#fff4d6;"
        "border-left:3px solid #e0a000;font-size:12px'>⚠ drifts: r = "
        f"{r:.2f} with the distance from its recording run's start ({slope:+.3g} per 1,000 "
        "characters). A counter: its values, and its scores, depend on where its run started (a "
        "document start, or a cut between <code>--streams</code>), and on "
        "<code>--warmup</code>. With one stream over one document this is position in the "
        "text.</div>"
    )


def group_title(group: str) -> str:
    if group in GROUP_TITLES:
        return GROUP_TITLES[group]
    return f"Sample at quantile {group[1:]}" if group.startswith("q") else group


class NeuronCard:
    def __init__(self, shared: Shared, on_jump: Callable[[int], None]) -> None:
        self.shared = shared
        self.on_jump = on_jump
        self.title = Div(text="", width=WIDTH, name="card_title")
        self.stats = Div(text="", width=230, name="card_stats")
        self.hist_source = ColumnDataSource(
            {"left": [], "right": [], "top": [], "color": []}, name="card_hist"
        )
        hist = figure(
            width=WIDTH - 240, height=190, y_axis_type="log", toolbar_location=None, tools="",
            title="Histogram (warm positions, log counts)", name="card_hist_fig",
        )  # fmt: skip
        hist.quad(
            left="left", right="right", top="top", bottom=0.8, source=self.hist_source,
            fill_color="color", line_color="#555", line_width=0.3,
        )  # fmt: skip
        hist.add_tools(
            HoverTool(tooltips=[("range", "@left{0.000} … @right{0.000}"), ("count", "@top{0,0}")])
        )
        hist.grid.visible = False
        self.hist = hist
        self.source = ColumnDataSource(
            {"x": [], "y": [], "w": [], "glyph": [], "alpha": [], "cidx": [], "value": [],
             "pos": [], "row": []},
            name="card_contexts",
        )  # fmt: skip
        self.labels = ColumnDataSource({"x": [], "y": [], "text": [], "weight": [], "align": []})
        self.marks = ColumnDataSource({"x": [], "y": [], "w": []})
        self.fill_map = LinearColorMapper(palette=["#ffffff"], low=-0.5, high=0.5)
        self.text_map = LinearColorMapper(palette=["#000000"], low=-0.5, high=0.5)
        ctx = figure(
            frame_width=WIDTH, frame_height=ROW_PX, x_range=Range1d(-LABEL_CELLS, 80),
            y_range=Range1d(0.5, -0.5), toolbar_location=None, tools="", min_border=2,
            outline_line_color=None, name="card_context_fig", css_classes=["ls-card-contexts"], x_axis_type=None, y_axis_type=None,
        )  # fmt: skip
        cells = ctx.rect(
            "x", "y", "w", 0.92, source=self.source, line_color=None,
            fill_color=transform("cidx", self.fill_map),
        )  # fmt: skip
        cells.selection_glyph = cells.glyph.clone()
        cells.nonselection_glyph = cells.glyph.clone()
        text = ctx.text(
            "x", "y", text="glyph", source=self.source, text_align="center",
            text_baseline="middle", text_font=value(FONT), text_font_size="12px",
            text_color=transform("cidx", self.text_map), text_alpha="alpha",
        )  # fmt: skip
        text.selection_glyph = text.glyph.clone()
        text.nonselection_glyph = text.glyph.clone()
        ctx.rect(
            "x", "y", "w", 1.0, source=self.marks, fill_alpha=0, line_color="#111", line_width=2
        )
        ctx.text(
            "x", "y", text="text", source=self.labels, text_align=field("align"), text_baseline="middle",
            text_font_size="11px", text_color="#444", text_font_style=field("weight"),
        )  # fmt: skip
        pos_fmt = CustomJSHover(code="return value.toLocaleString('en-US');")
        ctx.add_tools(
            HoverTool(
                renderers=[cells],
                tooltips=[("position", "@pos{custom}"), ("value", "@value{0.0000}")],
                formatters={"@pos": pos_fmt},
            ),
            TapTool(renderers=[cells]),
        )
        self.contexts_fig = ctx
        self.note = Div(text="", width=WIDTH, name="card_note")
        self.source.selected.on_change("indices", self._on_tap)
        self.row_positions: list[int] = []
        self.neuron: str | None = None
        self.root = column(
            self.title,
            row(self.stats, hist),
            Div(text="<b>Contexts</b> · click a snippet to jump there", width=WIDTH),
            self.note,
            ctx,
            name="card",
        )

    # -- statistics and histogram (cheap: stored with the recording) -------------------------
    def update(self, nid: str, method: str | None = None) -> None:
        """Show ``nid``'s card, coloured by the text view's scale ``method`` when that is a
        whole-neuron scale; a scale built from the shown window (window, diff, detrend) means
        nothing for the card's histogram and far-apart contexts, which then use the default."""
        self.neuron = nid
        nrn = parse_neuron(nid)
        stats = self.shared.stats_row(nid)
        method = whole_neuron_scale(method)
        scale = self.shared.scale(nid, method)
        self.hist.title.text = f"Histogram (warm positions, log counts) · {method} colours"
        self.title.text = (
            f"<h3 style='margin:4px 0'>{html.escape(nid)}</h3><span style='color:#555'>layer "
            f"{nrn.layer} · {html.escape(KIND_NAMES.get(nrn.kind, nrn.kind))} · unit {nrn.unit}</span>"
            f"{drift_note(self.shared.drift(), nid)}"
        )
        keys = [
            k
            for k in STAT_KEYS
            if k in stats.index and (nrn.kind in GATE_KINDS or not k.startswith("sat"))
        ]
        rows = "".join(
            f"<tr><td style='padding:1px 8px;color:#555'>{html.escape(k)}</td>"
            f"<td style='padding:1px 8px;text-align:right;font-variant-numeric:tabular-nums'>{_fmt(stats[k])}</td></tr>"
            for k in keys
        )
        self.stats.text = f"<table style='border-collapse:collapse;font-size:12px'>{rows}</table>"
        counts, edges = self.shared.store.hist(nid)
        if scale.diverging:
            lo, hi = float(stats.get("min", np.nan)), float(stats.get("max", np.nan))
            lo, hi = (
                (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and hi > lo else (None, None)
            )
        else:
            lo, hi = 0.0, 1.0
        c, e = rebin_hist(counts, edges, lo, hi, bins=60)
        keep = np.asarray(c) > 0
        centers = (e[:-1] + e[1:]) / 2
        cls = quantize(centers, scale)
        colors = [scale.palette[k] if k < scale.n else "#cccccc" for k in cls.tolist()]
        self.hist_source.data = {
            "left": e[:-1][keep], "right": e[1:][keep], "top": np.asarray(c, float)[keep],
            "color": [col for col, k in zip(colors, keep.tolist(), strict=True) if k],
        }  # fmt: skip
        self._scale = scale

    def loading(self) -> None:
        self.note.text = "<i>sampling contexts across the distribution…</i>"

    def failed(self, text: str) -> None:
        self.note.text = f"<span style='color:#a00'>{html.escape(text)}</span>"

    # -- contexts (slow on big stores: computed off the event loop) ---------------------------
    def show_contexts(self, nid: str, df: pd.DataFrame) -> None:
        if nid != self.neuron or df is None:
            return
        store, text = self.shared.store, self.shared.text
        scale = self._scale
        table = color_table([scale])
        if list(self.fill_map.palette) != table.fill:  # gates and cells differ; most changes don't
            self.fill_map.update(palette=table.fill, high=len(table.fill) - 0.5)
            self.text_map.update(palette=table.text, high=len(table.text) - 0.5)
        recs = df.to_dict("records") if len(df) else []
        # Align every snippet's own character in one column.
        anchor = 0
        laid = []
        for r in recs:
            a, b, p = int(r["start"]), int(r["stop"]), int(r["position"])
            col, width, glyph, faint = row_cells(text[a:b])
            anchor = max(anchor, int(col[p - a]) if b > a else 0)
            laid.append((r, a, b, p, col, width, glyph, faint))
        cols: dict[str, list] = {k: [] for k in self.source.data}
        labels: dict[str, list] = {"x": [], "y": [], "text": [], "weight": [], "align": []}
        marks: dict[str, list] = {"x": [], "y": [], "w": []}
        positions: list[int] = []
        y, last_group, right = 0, None, 40
        for r, a, b, p, col, width, glyph, faint in laid:
            group = str(r.get("group", ""))
            if group != last_group:
                labels["x"].append(-LABEL_CELLS + 0.2)
                labels["y"].append(y)
                labels["text"].append(group_title(group))
                labels["weight"].append("bold")
                labels["align"].append("left")
                y += 1
                last_group = group
            shift = anchor - int(col[p - a])
            vals = store.window(a, b, [nid])  # [T, 1]
            cidx = color_index(vals, [scale], table)
            cols["x"].extend((col + width / 2 + shift).tolist())
            cols["y"].extend([y] * (b - a))
            cols["w"].extend(width.tolist())
            cols["glyph"].extend(glyph)
            cols["alpha"].extend(np.where(faint, 0.45, 1.0).tolist())
            cols["cidx"].extend(cidx.tolist())
            cols["value"].extend(vals[:, 0].tolist())
            cols["pos"].extend(range(a, b))
            cols["row"].extend([len(positions)] * (b - a))
            marks["x"].append(anchor + width[p - a] / 2)
            marks["y"].append(y)
            marks["w"].append(int(width[p - a]))
            labels["x"].append(-0.8)
            labels["y"].append(y)
            labels["text"].append(f"{_fmt(r['value'])} @{p}")
            labels["weight"].append("normal")
            labels["align"].append("right")
            positions.append(p)
            right = max(right, int(col[-1] + width[-1] + shift) if b > a else 0)
            y += 1
        self.row_positions = positions
        self.source.selected.indices = []
        # Numeric columns as arrays: Bokeh sends those as binary, not as JSON lists.
        dtypes = {"x": np.float32, "y": np.int32, "w": np.int16, "alpha": np.float32,
                  "cidx": np.int16, "value": np.float32, "pos": np.int32, "row": np.int32}  # fmt: skip
        self.source.data = {
            k: (np.asarray(v, dtype=dtypes[k]) if k in dtypes else v) for k, v in cols.items()
        }
        self.labels.data = labels
        self.marks.data = marks
        fig = self.contexts_fig
        fig.x_range.start, fig.x_range.end = -LABEL_CELLS, right + 1
        fig.frame_width = (right + 1 + LABEL_CELLS) * CELL_W
        fig.y_range.start, fig.y_range.end = max(y, 1) - 0.5, -0.5
        fig.frame_height = max(y, 1) * ROW_PX
        self.note.text = "" if positions else "<i>no contexts</i>"

    def _on_tap(self, attr, old, new) -> None:
        if not new:
            return
        rows = self.source.data["row"]
        k = chosen_row(new, len(rows))
        self.source.selected.indices = []
        if k is None:
            return
        r = rows[k]
        if 0 <= r < len(self.row_positions):
            self.on_jump(self.row_positions[r])
