"""Presentation: where each character of a window sits on the text grid and which colour it gets.

Pure functions over plain values (no Bokeh), shared by the text view, the contexts list and the
heatmap. The grid is monospace: every character gets at least one cell so that each one can be
hovered and selected; a tab spans to the next tab stop, East Asian wide characters and most
emoji span two cells, control characters are drawn as the same visible escapes the HTML export
uses (``\\r``, ``\\x01``, ``\\u202e``) and span as many cells as that escape has letters. Every
``\\n`` is a faint ``↵`` cell at the end of its line (newline cells carry activations too).

Nothing here produces markup: the dashboard draws these strings as canvas text, and Bokeh
escapes tooltip values, so corpus text can never become HTML.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lstmscope.export.colors import NAN_COLOR, Scale, fmt_value, palette, quantize, text_colors
from lstmscope.export.text import visible_text

TAB = 4  # tab stops, as in the export's CSS (tab-size: 4)
WRAP = 80  # cells per display line (79 characters and a newline); longer lines continue below
NEWLINE_MARK = "↵"
TAB_MARK = "→"
FEATURE_COLORMAP = "Greys"


@lru_cache(maxsize=4096)
def _cell(ch: str) -> tuple[str, int, bool]:
    """``(drawn text, width in cells, faint)`` for one character other than a tab."""
    if ch == "\n":
        return NEWLINE_MARK, 1, True
    shown = visible_text(ch)
    if shown != ch:  # a control character, bidi control, BOM or lone surrogate
        return shown, len(shown), False
    if ch == " ":
        return "", 1, False
    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return ch, 2, False
    return ch, 1, False


@lru_cache(maxsize=4096)
def describe_char(ch: str) -> str:
    """A hover label for one character: what it is, never raw control characters."""
    names = {"\n": "newline \\n", "\t": "tab \\t", " ": "space", "\r": "carriage return \\r"}
    if ch in names:
        return names[ch]
    shown = visible_text(ch)
    return f"{shown}  U+{ord(ch):04X}"


def show_char(ch: str) -> str:
    """A vocabulary character in a short list (top-5 predictions)."""
    return {"\n": "↵", "\t": "⇥", " ": "␣"}.get(ch) or visible_text(ch)


# A probability as "%.2f", by its rounded percent; the last, "?", for what is no probability (a
# damaged store). Rounding p * 100 to an integer is exact for a float16 p and rounds half to
# even, as "%.2f" does.
PERCENT = [f"{k / 100:.2f}" for k in range(101)] + ["?"]


def percent_index(prob) -> np.ndarray:
    """Indices into :data:`PERCENT` of probabilities ``prob`` (any shape)."""
    pct = np.rint(np.asarray(prob, dtype=np.float64) * 100)
    ok = np.isfinite(pct) & (pct >= 0) & (pct <= 100)
    return np.where(ok, pct, len(PERCENT) - 1).astype(np.int64)


def prediction_labels(ids, probs, vocab_chars: list[str]) -> list[str]:
    """One hover line per row of ``ids``/``probs`` ``[n, k]``: ``"a 0.42  b 0.17  ..."``.

    Each distinct (character, percent) pair is formatted once (a page of 8,000 characters has a
    few thousand): formatting every probability took ~25 ms of a page turn. An id outside the
    vocabulary shows as "?"."""
    ids = np.asarray(ids, dtype=np.int64)
    V, P = len(vocab_chars), len(PERCENT)
    char = np.where((ids >= 0) & (ids < V), ids, V)
    uniq, inv = np.unique(char * P + percent_index(probs), return_inverse=True)
    names = [show_char(vocab_chars[c]) if c < V else "?" for c in (uniq // P).tolist()]
    labels = np.array(
        [f"{name} {PERCENT[k]}" for name, k in zip(names, (uniq % P).tolist(), strict=True)],
        dtype=object,
    )
    return ["  ".join(row) for row in labels[inv.reshape(ids.shape)].tolist()]


@dataclass(frozen=True)
class CharCells:
    """The layout of ``T`` characters: display line, first column and width of each."""

    line: np.ndarray  # [T] int32
    col: np.ndarray  # [T] int32
    width: np.ndarray  # [T] int32
    glyph: list[str]  # [T] what to draw in the cell(s)
    faint: np.ndarray  # [T] bool: a whitespace mark (↵, →), drawn light
    n_lines: int
    line_start: np.ndarray  # [n_lines] window index of each line's first character


def char_cells(text: str, wrap: int = WRAP, tab: int = TAB) -> CharCells:
    """Lay ``text`` out on a grid ``wrap`` cells wide, keeping its lines and indentation."""
    if wrap < 8:
        raise ValueError(f"wrap must be at least 8 cells, got {wrap}")
    n = len(text)
    line = np.empty(n, np.int32)
    col = np.empty(n, np.int32)
    width = np.empty(n, np.int32)
    faint = np.zeros(n, bool)
    glyph: list[str] = [""] * n
    starts = [0] if n else []
    r = c = 0
    for i, ch in enumerate(text):
        if ch == "\t":
            w, g, f = tab - c % tab, TAB_MARK, True
        else:
            g, w, f = _cell(ch)
            w = min(w, wrap)
        # Soft wrap: the character moves to the next row (a line's ↵ may hang in the margin).
        if c + w > wrap and c > 0 and ch != "\n":
            r, c = r + 1, 0
            starts.append(i)
            if ch == "\t":
                w = tab
        line[i], col[i], width[i], glyph[i], faint[i] = r, c, w, g, f
        c += w
        if ch == "\n" and i + 1 < n:
            r, c = r + 1, 0
            starts.append(i + 1)
    return CharCells(
        line, col, width, glyph, faint, (r + 1) if n else 0, np.asarray(starts, np.int64)
    )


STRIP = 0.4  # rows: the height of a thin feature strip under the text of each line
STRIP_GAP = 0.05  # rows between a line's last text row and its strip


@dataclass(frozen=True)
class Lanes:
    """Where a display line's lanes sit: ``y`` (row centres, from the line's first row),
    ``h`` (heights in rows) and ``pitch`` (rows from one display line to the next).

    Text lanes are one row each, stacked with a blank separator row after them when there
    are several; a *strip* (a thin feature track, no text) sits under the last text row."""

    y: tuple[float, ...]
    h: tuple[float, ...]
    pitch: float

    @property
    def count(self) -> int:
        return len(self.y)

    @property
    def bottom(self) -> float:
        """The lower edge of the last lane, from the centre of the line's first row."""
        return self.y[-1] + self.h[-1] / 2


def lane_layout(lanes: int, strip: bool = False) -> Lanes:
    """``lanes`` lanes per display line, the last a thin strip when ``strip``."""
    text = lanes - 1 if strip else lanes
    y = [float(j) for j in range(text)]
    h = [1.0] * text
    if strip:
        y.append(text - 0.5 + STRIP_GAP + STRIP / 2)
        h.append(STRIP)
        # One neuron: the strip and a small gap; stacked: the strip, then the separator row.
        pitch = text + STRIP_GAP + STRIP + (1.0 if text > 1 else 2 * STRIP_GAP)
    else:
        pitch = float(lanes_per_line(lanes))
    return Lanes(tuple(y), tuple(h), pitch)


def lanes_per_line(lanes: int) -> int:
    """Rows one display line takes: one per lane, plus a blank separator when stacked."""
    return lanes + 1 if lanes > 1 else 1


def grid(cells: CharCells, lanes: int, strip: bool = False) -> dict[str, np.ndarray]:
    """Glyph positions for ``lanes`` stacked rows per line (Karpathy et al.'s figures): each
    display line of text is repeated once per neuron (and once for a feature track, a thin
    strip when ``strip``), so one character's values line up vertically. Arrays
    ``[T * lanes]``, lane-major; ``h`` is each cell's height in rows."""
    T = len(cells.glyph)
    lay = lane_layout(lanes, strip)
    lane = np.repeat(np.arange(lanes, dtype=np.int32), T)
    idx = np.tile(np.arange(T, dtype=np.int32), lanes)
    x = np.tile(cells.col + cells.width / 2.0, lanes)
    y = np.tile(cells.line * lay.pitch, lanes) + np.asarray(lay.y)[lane]
    w = np.tile(cells.width, lanes).astype(np.float64)
    h = np.asarray(lay.h)[lane]
    return {"x": x, "y": y.astype(np.float64), "w": w, "h": h, "i": idx, "lane": lane}


@dataclass(frozen=True)
class ColorTable:
    """The palettes of all scales on screen, one after another, each followed by the NaN
    colour: a colour class ``k`` of scale ``j`` is entry ``offsets[j] + k``. One colour mapper
    on the client then turns small integers into colours, so changing neuron sends one int16
    array instead of thousands of colour strings."""

    fill: list[str]
    text: list[str]
    offsets: list[int]


def color_table(scales: list[Scale]) -> ColorTable:
    fill: list[str] = []
    offsets: list[int] = []
    seen: dict[tuple[str, ...], int] = {}
    for s in scales:
        if s.palette not in seen:
            seen[s.palette] = len(fill)
            fill.extend([*s.palette, NAN_COLOR])
        offsets.append(seen[s.palette])
    return ColorTable(fill, list(text_colors(tuple(fill))), offsets)


def color_index(values: np.ndarray, scales: list[Scale], table: ColorTable) -> np.ndarray:
    """``[T, K]`` values -> ``[T * K]`` int16 entries of ``table`` (lane-major, as ``grid``)."""
    v = np.asarray(values)
    cols = [quantize(v[:, j], s) + table.offsets[j] for j, s in enumerate(scales)]
    return np.concatenate(cols).astype(np.int16) if cols else np.zeros(0, np.int16)


def feature_scale(values: np.ndarray) -> Scale:
    """Greys from 0 to the feature's largest value (binary features: off white, on dark)."""
    top = max(float(np.nanmax(values)) if np.size(values) else 1.0, 1.0)
    return Scale(
        palette(FEATURE_COLORMAP, 9), 0.0, top, 0.0, diverging=False, name=FEATURE_COLORMAP,
        description=f"the feature's value: white 0 … black {fmt_value(top)}",
        ticks=((0.0, "0"), (1.0, fmt_value(top))),
    )  # fmt: skip


def row_cells(text: str) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """A snippet laid out on ONE row (contexts, match lists): ``↵`` and ``→`` take one cell
    each and do not break or indent, so snippets stay compact and line up.
    Returns ``(col [T], width [T], glyph [T], faint [T])``."""
    glyph: list[str] = []
    width = np.empty(len(text), np.int32)
    faint = np.zeros(len(text), bool)
    for i, ch in enumerate(text):
        g, w, f = (TAB_MARK, 1, True) if ch == "\t" else _cell(ch)
        glyph.append(g)
        width[i], faint[i] = w, f
    col = np.concatenate(([0], np.cumsum(width)[:-1])).astype(np.int32) if len(text) else width
    return col, width, glyph, faint
