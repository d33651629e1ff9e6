"""The text view: a window of the corpus, every character coloured by the selected neuron(s).

Drawn as a glyph grid on a Bokeh figure (one ``rect`` and one ``text`` glyph per character and
lane) rather than as HTML, because the grid gives what a ``Div`` cannot: a real hover tool
(character, position, value, loss, the model's top-5 next characters), tap / shift-tap and
box selection of spans for select-and-match, and colours changed by sending one small int16
array per neuron change (a colour mapper on the client turns colour classes into colours).
Corpus text only ever reaches the page as canvas text or as Bokeh tooltip values, which Bokeh
escapes, so no character of the corpus can become markup.

Colours come from :func:`lstmscope.export.colors.scale_for` with the view's scale (quantile by
default), exactly as the export builds them for the same window; the legend above the text
says, per lane, which scale is on and what it spans. A feature track is a thin strip under
each line by default (``lane``: ``row`` draws it as a full row, ``off`` hides it).
"""

from __future__ import annotations

import logging

import numpy as np
from bokeh.core.properties import value
from bokeh.layouts import column
from bokeh.models import (
    BoxSelectTool,
    ColumnDataSource,
    CustomJS,
    CustomJSHover,
    Div,
    HoverTool,
    LinearColorMapper,
    Range1d,
    TapTool,
    WheelPanTool,
)
from bokeh.plotting import figure
from bokeh.transform import transform

from lstmscope.export.colors import DEFAULT_SCALE, Scale, needs_values, scale_for
from lstmscope.export.text import legend_html
from lstmscope.names import KIND_NAMES, parse_neuron
from lstmscope.server.components.textgrid import (
    WRAP,
    CharCells,
    ColorTable,
    char_cells,
    color_index,
    color_table,
    describe_char,
    feature_scale,
    grid,
    lane_layout,
    prediction_labels,
)
from lstmscope.server.shared import Shared
from lstmscope.server.state import LANE_MODES, ViewState

log = logging.getLogger(__name__)

CELL_W = 9  # px per grid cell: a 13 px monospace glyph is ~7.8 px wide
ROW_H = 18
GUTTER = 9  # cells left of the text for line positions / lane names
MAX_ROWS = 34  # rows visible at once until the browser says how many fit (see FIT_JS)
FIT_ROWS = (12, 80)  # the fewest and most rows the browser may ask for
FONT = "'DejaVu Sans Mono', Menlo, Consolas, monospace"

MARK_COLORS = {"match": "#ff7f0e", "current": "#d62728", "selection": "#111111", "focus": "#9400d3"}

# Runs in the browser whenever the text figure is laid out, and when the window is resized:
# how many rows fit between the figure's top and the window's bottom edge. The answer goes to
# the server (``TextView.fit``), which sizes the figure; so the text fills the window's height.
FIT_JS = """
const find = (root) => {
  const el = root.querySelector('.ls-text');
  if (el) return el;
  for (const n of root.querySelectorAll('*')) {
    if (n.shadowRoot) { const f = find(n.shadowRoot); if (f) return f; }
  }
  return null;
};
const measure = () => {
  const el = find(document);
  if (el == null) return;
  const top = el.getBoundingClientRect().top + window.scrollY;
  const rows = Math.floor((window.innerHeight - Math.max(top, 0) - margin) / row_h);
  const r = Math.max(lo, Math.min(hi, rows));
  if (src.data.rows[0] !== r) src.data = {rows: [r]};
};
if (!window._lstmscope_fit) {
  window._lstmscope_fit = true;
  let t = null;
  window.addEventListener('resize', () => { clearTimeout(t); t = setTimeout(measure, 150); });
}
setTimeout(measure, 0);
"""

_LOOKUP_JS = """
const v = src.data[format][value];
if (typeof v === 'number') return Number.isNaN(v) ? '–' : v.toFixed(2);
return v == null ? '' : String(v);
"""


def lane_scales(
    shared: Shared, neurons: tuple[str, ...], method: str = DEFAULT_SCALE, values=None
) -> list[Scale]:
    """The scale of each neuron, as the export builds it: ``values`` ``[T, K]`` are the
    window's. Scales built from the values shown (the window scales, and a quantile scale whose
    stored quantiles cannot rank: :func:`lstmscope.export.colors.needs_values`) get them; the others
    come from the statistics, cached for every tab."""
    out = []
    for j, nid in enumerate(neurons):
        row = shared.stats_row(nid)
        if needs_values(nid, row, method):
            if values is None:
                raise ValueError(f"the {method} scale of {nid} is built from the values shown")
            out.append(scale_for(nid, row, method=method, values=values[:, j]))
        else:
            out.append(shared.scale(nid, method))
    return out


class Legend:
    """One colour bar per lane with tick labels that never collide, and beside it the lane's
    name and its scale's description (the export's legend markup, so both read the same)."""

    WIDTH = (WRAP + 1 + GUTTER) * CELL_W

    def __init__(self) -> None:
        self.root = Div(text="", width=self.WIDTH, name="legend", css_classes=["ls-legend"])
        self.items: list[tuple[str, str]] = []  # (label, description) per lane, as shown

    def update(self, names: list[str], scales: list[Scale]) -> None:
        items = [(name, sc.description) for name, sc in zip(names, scales, strict=True)]
        text = "".join(legend_html(sc, name) for name, sc in zip(names, scales, strict=True))
        if text != self.root.text:  # unchanged legends are not resent
            self.root.text = text
        self.items = items


def lane_label(name: str) -> str:
    try:
        kind = parse_neuron(name).kind
    except ValueError:
        return f"{name} (feature)"
    return f"{name} · {KIND_NAMES.get(kind, kind)}"


class TextView:
    """The coloured text. ``source`` holds one row per drawn cell (lane-major), ``chars`` one
    row per character of the window (what the hover shows)."""

    def __init__(self, shared: Shared, wrap: int = WRAP) -> None:
        self.shared = shared
        self.wrap = wrap
        self.source = ColumnDataSource(
            {"x": [], "y": [], "w": [], "h": [], "i": [], "lane": [], "glyph": [], "alpha": [],
             "cidx": [], "value": []},
            name="text_source",
        )  # fmt: skip
        self.chars = ColumnDataSource(
            {"ch": [], "pos": [], "loss": [], "top5": []}, name="text_chars"
        )
        self.lanes = ColumnDataSource({"name": []}, name="text_lanes")
        self.marks = ColumnDataSource(
            {"x": [], "y": [], "w": [], "h": [], "color": [], "lw": []}, name="text_marks"
        )
        self.gutter = ColumnDataSource({"x": [], "y": [], "text": [], "size": []})
        self.fill_map = LinearColorMapper(
            palette=["#ffffff"], low=-0.5, high=0.5, name="text_fill_map"
        )
        self.text_map = LinearColorMapper(palette=["#000000"], low=-0.5, high=0.5)
        width = (wrap + 1 + GUTTER) * CELL_W
        fig = figure(
            frame_width=width, frame_height=MAX_ROWS * ROW_H,
            x_range=Range1d(-GUTTER, wrap + 1), y_range=Range1d(MAX_ROWS - 0.5, -0.5),
            toolbar_location=None, tools="", min_border=0, outline_line_color="#ddd",
            name="text_figure", css_classes=["ls-text"], x_axis_type=None, y_axis_type=None,
        )  # fmt: skip
        cells = self._draw(fig)
        self._add_tools(fig, cells)
        self.max_rows = MAX_ROWS
        # 0 until the browser has measured (a value fit() ignores).
        self.fit_source = ColumnDataSource({"rows": [0]}, name="text_fit")
        fig.js_on_change(
            "inner_height",
            CustomJS(
                args={"src": self.fit_source, "row_h": ROW_H, "margin": 12,
                      "lo": FIT_ROWS[0], "hi": FIT_ROWS[1]},
                code=FIT_JS,
            ),
        )  # fmt: skip
        self.fit_source.on_change("data", lambda _a, _o, new: self.fit(new.get("rows")))
        self.figure = fig
        self.legend = Legend()
        # What the gutter shows, above it: the first position of each line, or lane names.
        self.gutter_head = Div(
            text="", width=(wrap + 1 + GUTTER) * CELL_W, name="gutter_head",
            css_classes=["ls-gutter-head"], margin=(0, 0, -4, 0),
        )  # fmt: skip
        self.root = column(self.legend.root, self.gutter_head, fig, name="text_column")
        self.cells: CharCells | None = None
        self.lanes_layout = lane_layout(1)
        self.table: ColorTable | None = None
        self.layout_key: tuple | None = None
        self.lane_names: list[str] = []
        self.strip = False  # the last lane is a thin feature strip
        self.n_rows = 0.0
        self.start = 0

    def _draw(self, fig):
        """The glyphs: a coloured cell and a character per ``source`` row, the marks (find
        matches, selection, focus) and the gutter's labels. Returns the cells' renderer."""
        cells = fig.rect(
            "x", "y", "w", "h", source=self.source, line_color=None,
            fill_color=transform("cidx", self.fill_map),
        )  # fmt: skip
        # Selecting a span must not fade everything else (Bokeh's default non-selection look).
        cells.selection_glyph = cells.glyph.clone(line_color="#000", line_width=1.5)
        cells.nonselection_glyph = cells.glyph.clone()
        text = fig.text(
            "x", "y", text="glyph", source=self.source, text_align="center",
            text_baseline="middle", text_font=value(FONT), text_font_size="13px",
            text_color=transform("cidx", self.text_map), text_alpha="alpha",
        )  # fmt: skip
        text.nonselection_glyph = text.glyph.clone()
        text.selection_glyph = text.glyph.clone()
        fig.rect(
            "x", "y", "w", "h", source=self.marks, fill_alpha=0, line_color="color",
            line_width="lw",
        )  # fmt: skip
        fig.text(
            "x", "y", text="text", source=self.gutter, text_align="right",
            text_baseline="middle", text_font_size="size", text_color="#888", text_font=value(FONT),
        )  # fmt: skip
        return cells

    def _add_tools(self, fig, cells) -> None:
        """Hover (character, position, value, loss, predictions), tap, box select and wheel."""
        lookup = CustomJSHover(args={"src": self.chars}, code=_LOOKUP_JS)
        lane_lookup = CustomJSHover(args={"src": self.lanes}, code=_LOOKUP_JS)
        hover = HoverTool(
            renderers=[cells],
            tooltips=[
                ("char", "@i{ch}"),
                ("position", "@i{pos}"),
                ("value", "@lane{name} = @value{0.0000}"),
                ("loss", "@i{loss} bits"),
                ("next, top 5", "@i{top5}"),
            ],
            formatters={"@i": lookup, "@lane": lane_lookup},
            point_policy="follow_mouse",
        )
        tap = TapTool(renderers=[cells])
        box = BoxSelectTool(renderers=[cells])
        wheel = WheelPanTool(dimension="height")
        fig.add_tools(hover, tap, box, wheel)
        fig.toolbar.active_drag = box
        fig.toolbar.active_scroll = wheel
        fig.toolbar.active_tap = tap

    # -- data -----------------------------------------------------------------------------
    def lane_values(self, state: ViewState) -> tuple[list[str], np.ndarray, list[Scale]]:
        """Lane names, values ``[T, lanes]`` and scales for the window of ``state``."""
        if state.lane not in LANE_MODES:
            raise ValueError(f"feature lane {state.lane!r}: choose one of {', '.join(LANE_MODES)}")
        store, stop = self.shared.store, min(state.stop, self.shared.store.n)
        vals = store.window(state.start, stop, list(state.neurons))  # [T, K]
        scales = lane_scales(self.shared, state.neurons, state.scale, vals)
        names = list(state.neurons)
        if state.feature and state.lane != "off":
            full = self.shared.feature(state.feature)
            f = full[state.start : stop].astype(np.float32)
            vals = np.concatenate([vals, f[:, None]], axis=1)
            scales.append(feature_scale(full))
            names.append(state.feature)
        return names, vals, scales

    def update(self, state: ViewState) -> None:
        """Rebuild what changed: the layout when the window or the number of lanes changed,
        else only colours and values (the common case: another neuron)."""
        names, vals, scales = self.lane_values(state)
        stop = min(state.stop, self.shared.store.n)
        strip = bool(state.feature) and state.lane == "thin"
        key = (state.start, stop, len(names), strip)
        table = color_table(scales)
        cidx = color_index(vals, scales, table)
        value = vals.T.reshape(-1).astype(np.float32)  # lane-major, as the grid
        if key != self.layout_key:
            self.strip = strip
            self._relayout(state.start, stop, len(names), cidx, value)
            self.layout_key = key
        else:
            # Only two columns go over the wire; the layout stays on the client.
            self.source.data.update({"cidx": cidx, "value": value})
        if self.table is None or table.fill != self.table.fill:
            self.fill_map.update(palette=table.fill, high=len(table.fill) - 0.5)
            self.text_map.update(palette=table.text, high=len(table.text) - 0.5)
        self.table = table
        if names != self.lane_names:
            # One lane: the gutter shows positions, which a new neuron does not change.
            redraw = len(names) > 1 or len(self.lane_names) != 1
            self.lanes.data = {"name": names}
            self.lane_names = names
            if redraw:
                self._gutter()
        self.legend.update([lane_label(n) for n in names], scales)
        head = "position of each line's first character" if len(names) - strip == 1 else "lane"
        self.gutter_head.text = (
            f'<div style="font:10px/1 {FONT};color:#888;white-space:nowrap">{head} ↓</div>'
        )

    def _relayout(self, start: int, stop: int, lanes: int, cidx: np.ndarray, value: np.ndarray):
        text = self.shared.text[start:stop]
        cells = char_cells(text, self.wrap)
        g = grid(cells, lanes, self.strip)
        alpha = np.where(cells.faint, 0.45, 1.0)
        glyphs = cells.glyph * (lanes - 1) + [""] * len(cells.glyph) if self.strip else None
        self.source.selected.indices = []
        self.source.data = {
            **g,
            "glyph": glyphs if glyphs is not None else cells.glyph * lanes,
            "alpha": np.tile(alpha, lanes),
            "cidx": cidx,
            "value": value,
        }
        self.chars.data = self._char_info(start, stop, text)
        self.cells = cells
        self.start = start
        self.lanes_layout = lane_layout(lanes, self.strip)
        self.n_rows = cells.n_lines * self.lanes_layout.pitch
        self._show_rows(0.0)
        self.lane_names = []  # forces the gutter to be redrawn

    def _char_info(self, start: int, stop: int, text: str) -> dict[str, list]:
        store = self.shared.store
        cold = np.asarray(store.cold[start:stop])
        pos = [
            f"{p:,}" + (" (warm-up)" if c else "")
            for p, c in zip(range(start, stop), cold.tolist(), strict=True)
        ]
        top5 = prediction_labels(
            store.top_ids[start:stop], store.top_prob[start:stop], self.shared.vocab_chars
        )
        loss = np.asarray(store.loss[start:stop], dtype=np.float32)
        return {"ch": [describe_char(c) for c in text], "pos": pos, "loss": loss, "top5": top5}

    def visible_rows(self) -> float:
        """Rows of the grid shown at once (the wheel scrolls the rest)."""
        return max(1.0, min(float(self.max_rows), self.n_rows))

    def fit(self, rows) -> None:
        """Show ``rows`` rows at once (what fits the browser window), keeping the top row.
        The value comes from the browser: anything but a whole number in FIT_ROWS is ignored."""
        r = rows[0] if isinstance(rows, (list, tuple)) and rows else None
        if isinstance(r, bool) or not isinstance(r, (int, float)) or r != r:
            return
        if not FIT_ROWS[0] <= r <= FIT_ROWS[1] or r != int(r) or int(r) == self.max_rows:
            return
        self.max_rows = int(r)
        if self.cells is None:
            return
        self._show_rows(self.figure.y_range.end + 0.5)

    def _show_rows(self, top: float) -> None:
        """Size the figure to :meth:`visible_rows` rows and show them from row ``top`` (kept
        inside the grid); the wheel scrolls within the grid's bounds."""
        rows = self.visible_rows()
        self.figure.frame_height = round(rows * ROW_H)
        yr = self.figure.y_range
        top = max(0.0, min(top, self.n_rows - rows))
        yr.bounds = (-0.5, max(self.n_rows, rows) - 0.5)
        yr.start, yr.end = top + rows - 0.5, top - 0.5

    def _gutter(self) -> None:
        cells = self.cells
        if cells is None:
            return
        lay = self.lanes_layout
        text_lanes = len(self.lane_names) - self.strip
        xs, ys, ts, sizes = [], [], [], []
        for ln, i in enumerate(cells.line_start.tolist()):
            # One neuron: each line's first position; stacked: each row's neuron (or feature).
            labels = [f"{self.start + i:,}"] if text_lanes == 1 else self.lane_names
            for j, label in enumerate(labels):
                xs.append(-0.6)
                ys.append(ln * lay.pitch + lay.y[j])
                ts.append(label)
                sizes.append("10px" if lay.h[j] >= 1 else "7px")
        self.gutter.data = {"x": xs, "y": ys, "text": ts, "size": sizes}

    # -- marks and scrolling ----------------------------------------------------------------
    def span_rects(self, a: int, b: int, color: str, lw: float) -> dict[str, list]:
        """Outlines of the window positions ``[a, b)`` (corpus positions), one per line."""
        out: dict[str, list] = {"x": [], "y": [], "w": [], "h": [], "color": [], "lw": []}
        cells = self.cells
        if cells is None:
            return out
        lo, hi = max(a - self.start, 0), min(b - self.start, len(cells.glyph))
        if lo >= hi:
            return out
        lay = self.lanes_layout
        top, bottom = -0.5, lay.bottom
        line = cells.line[lo:hi]
        for ln in np.unique(line).tolist():
            idx = np.flatnonzero(line == ln) + lo
            x0 = int(cells.col[idx[0]])
            x1 = int(cells.col[idx[-1]] + cells.width[idx[-1]])
            out["x"].append((x0 + x1) / 2)
            out["y"].append(ln * lay.pitch + (top + bottom) / 2)
            out["w"].append(x1 - x0)
            out["h"].append(bottom - top)
            out["color"].append(color)
            out["lw"].append(lw)
        return out

    def set_marks(self, spans: list[tuple[int, int, str]]) -> None:
        """Outline spans: ``(start, stop, kind)`` with kind one of :data:`MARK_COLORS`."""
        data: dict[str, list] = {"x": [], "y": [], "w": [], "h": [], "color": [], "lw": []}
        for a, b, kind in spans:
            r = self.span_rects(
                a, b, MARK_COLORS[kind], 3.0 if kind in ("current", "focus") else 2.0
            )
            for k in data:
                data[k].extend(r[k])
        if data != dict(self.marks.data):  # unchanged outlines are not resent
            self.marks.data = data

    def scroll_to(self, pos: int) -> None:
        """Scroll so that corpus position ``pos`` is about a third of the way down."""
        cells = self.cells
        if cells is None or not 0 <= pos - self.start < len(cells.glyph):
            return
        row = int(cells.line[pos - self.start]) * self.lanes_layout.pitch
        rows = self.visible_rows()
        top = max(0, min(row - rows // 3, self.n_rows - rows))
        yr = self.figure.y_range
        yr.start, yr.end = top + rows - 0.5, top - 0.5

    def selected_span(self) -> tuple[int, int] | None:
        """The corpus span from the first to the last selected character, if any."""
        cells = np.asarray(self.source.data["i"])
        # Indices come from the browser: ones that name no drawn cell are ignored.
        idx = [k for k in self.source.selected.indices if 0 <= k < len(cells)]
        if not idx:
            return None
        i = cells[np.asarray(idx, dtype=np.int64)]
        return self.start + int(i.min()), self.start + int(i.max()) + 1
