"""Neurons × positions: the window's lanes as one image, the same colours as the text view."""

from __future__ import annotations

import math

import numpy as np
from bokeh.models import (
    ColumnDataSource,
    CustomJSHover,
    FixedTicker,
    HoverTool,
    LinearColorMapper,
    Range1d,
)
from bokeh.plotting import figure

from lstmscope.server.components.textview import CELL_W, GUTTER

ROW_PX = 16


class Heatmap:
    def __init__(self, fill_map: LinearColorMapper, lanes: ColumnDataSource, width_cells: int):
        self.source = ColumnDataSource(
            {"image": [], "x": [], "y": [], "dw": [], "dh": []}, name="heatmap_source"
        )
        self.lanes = lanes
        fig = figure(
            frame_width=width_cells * CELL_W, frame_height=ROW_PX * 2,
            x_range=Range1d(0, 1), y_range=Range1d(0.5, -0.5), toolbar_location=None,
            tools="", min_border_left=GUTTER * CELL_W, min_border_right=0, min_border_top=4,
            min_border_bottom=20, name="heatmap", title=None,
        )  # fmt: skip
        fig.image(
            image="image", x="x", y="y", dw="dw", dh="dh", source=self.source, color_mapper=fill_map
        )
        fig.grid.visible = False
        fig.yaxis.major_label_text_font_size = "10px"
        fig.xaxis.major_label_text_font_size = "10px"
        fig.yaxis.minor_tick_line_color = None
        # One ticker for the page's life: assigning a new model would make Bokeh re-scan the
        # whole document on every neuron change.
        self.ticker = FixedTicker(ticks=[0])
        fig.yaxis.ticker = self.ticker
        self.names: list[str] = []
        name = CustomJSHover(
            args={"src": lanes},
            code="const n = src.data.name[Math.round(value)]; return n == null ? '' : String(n);",
        )
        fig.add_tools(
            HoverTool(
                tooltips=[("position", "$x{0,0}"), ("row", "$y{name}")],
                formatters={"$y": name},
            )
        )
        self.figure = fig
        self.root = fig

    def update(self, start: int, cidx: np.ndarray, names: list[str]) -> None:
        """``cidx`` ``[lanes * T]`` lane-major colour entries (the text view's)."""
        k = max(len(names), 1)
        T = cidx.size // k if cidx.size else 0
        img = cidx.reshape(k, T) if T else np.zeros((1, 1), np.int16)
        self.source.data = {"image": [img], "x": [start], "y": [-0.5], "dw": [T], "dh": [k]}
        fig = self.figure
        fig.x_range.start, fig.x_range.end = start, start + max(T, 1)
        fig.y_range.start, fig.y_range.end = k - 0.5, -0.5
        if names != self.names:
            fig.frame_height = ROW_PX * k
            self.ticker.ticks = list(range(k))
            fig.yaxis.major_label_overrides = dict(enumerate(names))
            self.names = list(names)

    def lane_at(self, y: float) -> int:
        """The lane drawn at ``y``; -1 for no lane (NaN, infinity: the browser sent junk)."""
        return round(y) if math.isfinite(y) else -1
