"""Standalone HTML: text coloured by neuron activations, match lists and neuron cards.

The output is one self-contained file (or a fragment for a notebook): no scripts, no fonts,
images, stylesheets or anything else fetched from anywhere (a Content-Security-Policy of
``default-src 'none'`` in the full document makes browsers refuse any request even if one
slipped in), so it opens from ``file://`` offline and with JavaScript disabled.

Rendering choices (documented here because the tests check them):

* **Escaping.** Every corpus character passes through ``html.escape(quote=True)``; corpus text
  never reaches an attribute. Whitespace is kept (``white-space: pre-wrap`` / ``pre``,
  monospace, ``tab-size: 4``).
* **Control characters** cannot be kept verbatim (HTML parsers drop or rewrite some, e.g. NUL
  and CR), so each is shown as a short ASCII escape inside ``<span class="ctl">`` (drawn in a
  dotted box, so it is not mistaken for a literal backslash in the corpus): C-style where
  there is one (``\\0 \\a \\b \\v \\f \\r \\e``), else ``\\xNN`` (other C0, DEL, C1), and
  ``\\uNNNN`` for bidi controls, line/paragraph separators, BOM and lone surrogates (a bidi
  override in a corpus would otherwise reorder the display). ASCII rather than the U+2400
  "control pictures" because many systems have no font with those (Debian's Chromium draws
  empty boxes). ``\\t`` and ``\\n`` are kept. :func:`visible_text` is exactly the text a
  reader (or a parser) gets back; ``\\r\\n`` reads ``\\r`` then one line break, the ``\\r`` in
  its own colour.
* **Newlines** carry an activation too (line-length cells fire there), so each ``\\n`` is
  wrapped in ``<span class="nl">`` and CSS draws a faint ``↵`` before it as generated content:
  visible and coloured, but not part of the text (not copied, not in the DOM text).
* **Compactness.** Values are quantised into a fixed set of colour classes (``.c0`` ..
  ``.c20``, scoped by a palette class on the row), and a run of characters with the same class
  is one ``<span>``.
* **Tooltips** are ``title`` attributes (no JS), so a run merged into one span can only carry
  one title. ``tooltips="auto"`` resolves it by size: every character gets its own span and
  title (``position: value``) when the export has at most :data:`CHAR_TOOLTIP_LIMIT`
  characters x neurons (a notebook view, a match list, a card); longer exports get one title
  per run (``first–last: min…max``; a run lies within one colour class, so that range is at
  most one class wide) while there are at most :data:`RUN_TOOLTIP_LIMIT` runs; beyond that
  titles are left out (the colours alone) and the page says so. This keeps a 100,000-character
  export under ~3 MB whatever the activations look like. ``"char"``, ``"run"`` and ``"none"``
  force a mode.
"""

from __future__ import annotations

import html
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lstmscope import __version__
from lstmscope.disk import atomic_write_text
from lstmscope.export.colors import (
    DEFAULT_SCALE,
    SCALES,
    Scale,
    legend_ticks,
    quantize,
    robust_stats,
    scale_for,
    text_colors,
    whole_neuron_scale,
)
from lstmscope.names import GATE_KINDS, KIND_NAMES, parse_neuron
from lstmscope.text.pattern import MAX_FIND_MATCHES, find_matches

log = logging.getLogger(__name__)

Tooltips = Literal["auto", "char", "run", "none"]
TOOLTIP_MODES = ("auto", "char", "run", "none")
# Per-character spans cost ~40 bytes a character; up to here that is well under a megabyte.
CHAR_TOOLTIP_LIMIT = 10_000
# A run's title costs ~30 bytes; 40,000 of them is ~1.2 MB on top of the spans.
RUN_TOOLTIP_LIMIT = 40_000
DEFAULT_WRAP = 100  # stacked rows are cut at this many characters so neurons stay aligned
MAX_EXPORT_CHARS = 1_000_000  # ~10-30 MB of HTML: beyond that a browser struggles
MAX_NEURONS = 64
MAX_MATCH_SHOW = 1_000  # characters of one match shown (a `.*` with DOTALL could be the corpus)

# Characters shown as a visible escape (see the module docstring). \t and \n are not here.
_CTL_RE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
    "\u2028\u2029\u2066-\u2069\ufeff\ud800-\udfff]"
)


_C_ESCAPES = {"\0": "\\0", "\a": "\\a", "\b": "\\b", "\v": "\\v", "\f": "\\f", "\r": "\\r",
              "\x1b": "\\e"}  # fmt: skip


def _ctl_symbol(ch: str) -> str:
    o = ord(ch)
    if ch in _C_ESCAPES:
        return _C_ESCAPES[ch]
    if o <= 0xFF:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}"


def visible_text(text: str) -> str:
    """The text a reader gets back from an export of ``text`` (control characters escaped)."""
    return _CTL_RE.sub(lambda m: _ctl_symbol(m.group()), text)


def _esc(seg: str) -> str:
    """Escape one run of corpus text into HTML (markup-safe, controls visible)."""
    s = html.escape(seg, quote=True)
    if _CTL_RE.search(s):
        s = _CTL_RE.sub(lambda m: f'<span class="ctl">{_ctl_symbol(m.group())}</span>', s)
    if "\n" in s:
        s = s.replace("\n", '<span class="nl">\n</span>')
    return s


def _fmt(v: float) -> str:
    return "no value" if math.isnan(v) else f"{v:.4g}"


def _fmt3(v: float) -> str:
    return "no value" if math.isnan(v) else f"{v:.3g}"


def _attr(s: str) -> str:
    return html.escape(s, quote=True)


# ----------------------------------------------------------------------------------------------
# CSS
# ----------------------------------------------------------------------------------------------

# Every rule is scoped under .lsx so a fragment inside a notebook page styles only itself.
_BASE_CSS = """\
.lsx{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;\
color:#111;background:#fff}
.lsx h1{font-size:20px;margin:0 0 4px}.lsx h2{font-size:16px;margin:14px 0 6px}
.lsx .meta{color:#555;font-size:12px;margin:1px 0 5px}
.lsx .txt,.lsx .row,.lsx .stack .lab{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,\
"DejaVu Sans Mono","Liberation Mono",monospace;font-size:13px;line-height:1.55;tab-size:4;\
-moz-tab-size:4}
.lsx .txt{white-space:pre-wrap;overflow-wrap:anywhere;border:1px solid #ddd;padding:6px 8px}
.lsx .stack{display:grid;grid-template-columns:max-content max-content;column-gap:10px;\
overflow-x:auto;border:1px solid #ddd;padding:6px 8px}
.lsx .row{white-space:pre}
.lsx .lab{color:#555;font-size:12px;text-align:right;white-space:nowrap}
.lsx .gap{grid-column:1/-1;height:7px}
.lsx .nl::before{content:"\\21B5";opacity:.45}
.lsx .ctl{outline:1px dotted currentColor;outline-offset:-1px}
.lsx .kwic .ctx{display:contents}
.lsx .kwic .left{text-align:right}
.lsx .kwic .left,.lsx .kwic .right{white-space:pre}
.lsx .kwic .nl{white-space:nowrap;font-size:0}
.lsx .kwic .nl::before{font-size:13px}
.lsx .kwic{display:grid;column-gap:0;overflow-x:auto;border:1px solid #ddd;padding:6px 8px;align-items:baseline}
.lsx .kwic .lab{font-family:inherit;padding-right:10px}
.lsx .num{font-variant-numeric:tabular-nums;text-align:right}
.lsx .hit{outline:2px solid #222;outline-offset:0}
.lsx .h{text-decoration:underline;text-decoration-thickness:2px;text-underline-offset:3px}
.lsx .legend{display:block;margin:4px 0}
.lsx .legends{margin:2px 0 6px}
.lsx table.stats{border-collapse:collapse;font-size:12px}
.lsx table.stats td{padding:1px 8px;border-bottom:1px solid #eee}
.lsx .cardtop{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
"""


def _palette_css(scale: Scale) -> str:
    fg = text_colors(scale.palette)
    k = scale.key
    rules = [
        f".lsx .{k} .c{i}{{background:{bg};color:{c}}}"
        for i, (bg, c) in enumerate(zip(scale.palette, fg, strict=True))
    ]
    # "No value" is hatched so it can never be read as a near-zero activation.
    rules.append(
        f".lsx .{k} .c{scale.nan_class}{{background:repeating-linear-gradient("
        "45deg,#eee 0 3px,#ccc 3px 6px);color:#000}"
    )
    return "\n".join(rules)


def _style(scales: Iterable[Scale]) -> str:
    seen: dict[str, Scale] = {}
    for s in scales:
        seen.setdefault(s.key, s)
    return (
        "<style>\n" + _BASE_CSS + "\n".join(_palette_css(s) for s in seen.values()) + "\n</style>"
    )


def html_document(fragment: str, *, title: str = "lstmscope export") -> str:
    """Wrap a fragment into a complete standalone HTML document."""
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        # Belt and braces for "no network": the browser refuses any fetch, inline CSS only.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">\n"
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{margin:16px;background:#fff}</style>\n"
        f"</head>\n<body>\n{fragment}\n</body>\n</html>\n"
    )


# ----------------------------------------------------------------------------------------------
# Rows of coloured text
# ----------------------------------------------------------------------------------------------


def _resolve_tooltips(tooltips: str, n_cells: int, n_runs: int = 0) -> str:
    if tooltips not in TOOLTIP_MODES:
        raise ValueError(f"tooltips must be one of {', '.join(TOOLTIP_MODES)}, got {tooltips!r}")
    if tooltips != "auto":
        return tooltips
    if n_cells <= CHAR_TOOLTIP_LIMIT:
        return "char"
    if n_runs <= RUN_TOOLTIP_LIMIT:
        return "run"
    log.info("%d colour runs: leaving tooltips out to keep the file small", n_runs)
    return "none"


_TOOLTIP_NOTES = {
    "char": "Hover a character for its position and value.",
    "run": "Hover a run of one colour for its positions and value range.",
    "none": "Tooltips left out to keep this file small; export a shorter range to get them.",
}


def _n_runs(classes: np.ndarray) -> int:
    return int(np.count_nonzero(classes[1:] != classes[:-1])) + 1 if classes.size else 0


def _render_row(
    text: str,
    values: np.ndarray,  # [T] float
    classes: np.ndarray,  # [T] int, from quantize
    offset: int,
    tooltips: str,
    extra_class: str = "",
) -> str:
    """Coloured spans for one stretch of text; ``offset`` is its first corpus position."""
    n = len(text)
    if n == 0:
        return ""
    cx = f" {extra_class}" if extra_class else ""
    if tooltips == "char":
        vals = values.tolist()
        return "".join(
            f'<span class="c{c}{cx}" title="{offset + i}: {_fmt(v)}">{_esc(ch)}</span>'
            for i, (ch, c, v) in enumerate(zip(text, classes.tolist(), vals, strict=True))
        )
    bounds = np.flatnonzero(classes[1:] != classes[:-1]) + 1
    starts = np.concatenate(([0], bounds))
    stops = np.concatenate((bounds, [n]))
    run_cls = classes[starts].tolist()
    out: list[str] = []
    if tooltips == "run":
        v = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            lo = np.fmin.reduceat(v, starts).tolist()
            hi = np.fmax.reduceat(v, starts).tolist()
        for s, e, c, a, b in zip(starts.tolist(), stops.tolist(), run_cls, lo, hi, strict=True):
            # 3 significant digits: the run is within one colour class anyway.
            fa, fb = _fmt3(a), _fmt3(b)
            where = f"{offset + s}" if e - s == 1 else f"{offset + s}–{offset + e - 1}"
            what = fa if fa == fb else f"{fa}…{fb}"
            out.append(f'<span class="c{c}{cx}" title="{where}: {what}">{_esc(text[s:e])}</span>')
    else:
        for s, e, c in zip(starts.tolist(), stops.tolist(), run_cls, strict=True):
            out.append(f'<span class="c{c}{cx}">{_esc(text[s:e])}</span>')
    return "".join(out)


def _as_2d(values: np.ndarray, n_text: int) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2 or v.shape[0] != n_text:
        raise ValueError(
            f"values must be [N] or [N, K] with N = len(text) = {n_text}, got shape {v.shape}"
        )
    return v


def _as_list(x: Any, k: int, what: str) -> list:
    if isinstance(x, (Scale, str)) or x is None:
        return [x] * k
    xs = list(x)
    if len(xs) != k:
        raise ValueError(f"need one {what} per neuron ({k}), got {len(xs)}")
    return xs


def _line_chunks(text: str, wrap: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each display line: cut after each ``\\n`` and every ``wrap`` chars."""
    out: list[tuple[int, int]] = []
    n, pos = len(text), 0
    while pos < n:
        nl = text.find("\n", pos)
        end = n if nl < 0 else nl + 1
        for s in range(pos, end, wrap):
            out.append((s, min(s + wrap, end)))
        pos = end
    return out


def legend_html(scale: Scale, label: str = "", bar_width: int = 240) -> str:
    """A colour bar with tick labels that never overlap (inline SVG, no JS), and beside it the
    label and the scale's description (which scale is on, what it spans). Inline styles only,
    so the same markup works in an export and in a dashboard ``Div``."""
    n = scale.n
    bar_x, bar_h, top = 4, 12, 2
    width = bar_width + 2 * bar_x
    bw = bar_width / n
    parts = [
        '<div class="legend-item" style="display:flex;gap:10px;align-items:flex-start;'
        'margin:3px 0">',
        f'<svg class="legend" width="{width}" height="{top + bar_h + 16}" role="img" '
        f'aria-label="{_attr(f"colour scale {label}: {scale.description}")}" '
        'font-family="sans-serif" font-size="11" style="flex:none">',
    ]
    for i, col in enumerate(scale.palette):
        parts.append(
            f'<rect x="{bar_x + i * bw:.2f}" y="{top}" width="{bw + 0.3:.2f}" height="{bar_h}" '
            f'fill="{col}"/>'
        )
    parts.append(
        f'<rect x="{bar_x}" y="{top}" width="{bar_width}" height="{bar_h}" fill="none" '
        'stroke="#999"/>'
    )
    for x, txt, anchor in legend_ticks(scale, bar_width):
        x += bar_x
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + bar_h}" y2="{top + bar_h + 3}" '
            'stroke="#666"/>'
            f'<text x="{x:.1f}" y="{top + bar_h + 13}" text-anchor="{anchor}" fill="#333">'
            f"{html.escape(txt)}</text>"
        )
    parts.append("</svg>")
    name = f"<b>{html.escape(label)}</b> · " if label else ""
    parts.append(
        '<div class="scale-desc" style="font-size:12px;line-height:1.3;color:#555">'
        f"{name}{html.escape(scale.description)}</div></div>"
    )
    return "".join(parts)


def _label_for(label: str | None, k: int) -> str:
    return label if label else f"neuron {k}"


def _kind_note(label: str) -> str:
    try:
        kind = parse_neuron(label).kind
    except ValueError:
        return ""
    return KIND_NAMES.get(kind, "")


def render_text_html(
    text: str,
    values: np.ndarray,
    scale: Scale | Sequence[Scale],
    *,
    start: int = 0,
    neuron_label: str | Sequence[str] | None = None,
    title: str | None = None,
    tooltips: Tooltips = "auto",
    wrap: int = DEFAULT_WRAP,
    legend: bool = True,
) -> str:
    """An HTML fragment: ``text`` coloured by ``values``.

    ``values`` is ``[N]`` (one neuron: the text flows, soft-wrapped) or ``[N, K]`` (K neurons:
    each display line of text is repeated once per neuron, labelled with its id, as in
    Karpathy et al.'s figures, so one character's activations line up vertically; lines are
    cut every ``wrap`` characters to keep them aligned). ``start`` is the corpus position of
    ``text[0]`` (used in tooltips); ``scale`` is one :class:`Scale` or one per neuron.
    """
    vals = _as_2d(values, len(text))
    k = vals.shape[1]
    if k == 0:
        raise ValueError("values has no neurons (shape [N, 0])")
    if wrap < 1:
        raise ValueError(f"wrap must be >= 1, got {wrap}")
    scales = _as_list(scale, k, "scale")
    labels = [_label_for(x, i) for i, x in enumerate(_as_list(neuron_label, k, "label"))]
    classes = [quantize(vals[:, j], scales[j]) for j in range(k)]
    chunks = _line_chunks(text, wrap) if k > 1 else [(0, len(text))]
    n_runs = sum(_n_runs(c) for c in classes) + (len(chunks) - 1) * k
    mode = _resolve_tooltips(tooltips, len(text) * k, n_runs)

    out = [_style(scales), '<div class="lsx">']
    if title:
        out.append(f"<h2>{html.escape(title)}</h2>")
    out.append(f'<div class="meta">{_TOOLTIP_NOTES[mode]}</div>')
    if legend:
        out.append('<div class="legends">')
        for lab, sc in zip(labels, scales, strict=True):
            note = _kind_note(lab)
            out.append(legend_html(sc, f"{lab} · {note}" if note else lab))
        out.append("</div>")
    if k == 1:
        out.append(
            f'<div class="txt {scales[0].key}" data-neuron="{_attr(labels[0])}">'
            + _render_row(text, vals[:, 0], classes[0], start, mode)
            + "</div>"
        )
    else:
        out.append('<div class="stack">')
        for s, e in chunks:
            for j in range(k):
                out.append(
                    f'<div class="lab">{html.escape(labels[j])}</div>'
                    f'<div class="row {scales[j].key}" data-neuron="{_attr(labels[j])}">'
                    + _render_row(text[s:e], vals[s:e, j], classes[j][s:e], start + s, mode)
                    + "</div>"
                )
            out.append('<div class="gap"></div>')
        out.append("</div>")
    out.append("</div>")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Matches (--find) and snippets
# ----------------------------------------------------------------------------------------------


def _snippet_rows(
    text: str,
    vals: np.ndarray,  # [T, K]
    classes: list[np.ndarray],  # K x [T]
    scales: list[Scale],
    labels: list[str],
    offset: int,
    mark: tuple[int, int],  # local [a, b) to mark as the hit
    mode: str,
    head: list[str],  # cells before the text cells on the first row (e.g. "#3", "@1234")
    label_cells: bool = False,
) -> list[str]:
    """Grid cells for one match/context: one row per neuron, the marked part outlined.

    The text is two cells, the left context right-aligned and the rest left-aligned, so the
    marks line up in one column whatever the characters' widths (tabs, CJK, emoji, ``↵``).
    """
    a, b = mark
    out = []
    for j in range(len(scales)):
        cells = head if j == 0 else [""] * len(head)
        out.extend(f'<div class="lab num">{c}</div>' for c in cells)
        if label_cells:
            out.append(f'<div class="lab">{html.escape(labels[j])}</div>')
        cls, v = classes[j], vals[:, j]
        left = _render_row(text[:a], v[:a], cls[:a], offset, mode)
        right = (
            '<span class="hit">'
            + _render_row(text[a:b], v[a:b], cls[a:b], offset + a, mode, "h")
            + "</span>"
            + _render_row(text[b:], v[b:], cls[b:], offset + b, mode)
        )
        out.append(
            f'<div class="row ctx {scales[j].key}" data-neuron="{_attr(labels[j])}">'
            f'<div class="left">{left}</div><div class="right">{right}</div></div>'
        )
    return out


def _kwic_open(n_head: int) -> str:
    # Head cells, then the two text cells; inline style: the column count varies per export.
    return f'<div class="kwic" style="grid-template-columns:repeat({n_head + 2},max-content)">'


def _matches_fragment(
    pieces: Sequence[tuple[str, np.ndarray, int, tuple[int, int]]],  # text, [T,K], offset, hit
    scales: list[Scale],
    labels: list[str],
    *,
    tooltips: str,
    title: str | None,
    note: str = "",
) -> str:
    k = len(scales)
    total = sum(len(p[0]) for p in pieces) * k
    mode = _resolve_tooltips(tooltips, total)
    out = [_style(scales), '<div class="lsx">']
    if title:
        out.append(f"<h2>{html.escape(title)}</h2>")
    if note:
        out.append(f'<div class="meta">{html.escape(note)}</div>')
    out.append('<div class="legends">')
    for lab, sc in zip(labels, scales, strict=True):
        out.append(legend_html(sc, lab))
    out.append("</div>")
    out.append(_kwic_open(2 + (k > 1)))
    for i, (text, vals, offset, (a, b)) in enumerate(pieces):
        classes = [quantize(vals[:, j], scales[j]) for j in range(k)]
        head = [f"#{i + 1}", f"@{offset + a}"]
        out.extend(
            _snippet_rows(text, vals, classes, scales, labels, offset, (a, b), mode, head, k > 1)
        )
    out.append("</div></div>")
    return "\n".join(out)


def render_matches(
    text: str,
    values: np.ndarray,
    scale: Scale | Sequence[Scale],
    matches: Sequence[tuple[int, int]],
    *,
    context: int = 40,
    start: int = 0,
    neuron_label: str | Sequence[str] | None = None,
    title: str | None = None,
    tooltips: Tooltips = "auto",
) -> str:
    """An HTML fragment listing each match ``text[a:b]`` with ``context`` characters around it.

    One row per match (and per neuron when ``values`` is ``[N, K]``), matches aligned in one
    column, each outlined and underlined (``<span class="hit">``); newlines inside a context are
    drawn as ``↵`` so every match stays on one line. Positions are local to ``text``; ``start``
    is the corpus position of ``text[0]``.
    """
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    vals = _as_2d(values, len(text))
    k = vals.shape[1]
    scales = _as_list(scale, k, "scale")
    labels = [_label_for(x, i) for i, x in enumerate(_as_list(neuron_label, k, "label"))]
    n = len(text)
    pieces = []
    for a, b in matches:
        if not 0 <= a <= b <= n:
            raise ValueError(f"match ({a}, {b}) is outside the text [0, {n})")
        lo, hi = max(0, a - context), min(n, b + context)
        pieces.append((text[lo:hi], vals[lo:hi], start + lo, (a - lo, b - lo)))
    return _matches_fragment(pieces, scales, labels, tooltips=tooltips, title=title)


# ----------------------------------------------------------------------------------------------
# Neuron card
# ----------------------------------------------------------------------------------------------

_STAT_ORDER = ("mean", "std", "min", "q01", "q05", "q25", "q50", "q75", "q95", "q99", "max")
_GROUP_TITLES = {
    "top": "Highest activations",
    "bottom": "Lowest activations",
    "quantile": "Samples across the distribution",
}


def rebin_hist(
    counts: np.ndarray,
    edges: np.ndarray,
    lo: float | None = None,
    hi: float | None = None,
    bins: int = 60,
) -> tuple[np.ndarray, np.ndarray]:
    """A histogram on any grid (the store's is 1,000-2,000 bins, non-uniform for cells, spanning
    the float16 range) moved onto ``bins`` uniform bins over ``[lo, hi]`` for display.

    Each source bin's count goes to the display bin holding its centre (clipped into range);
    without ``lo``/``hi`` the range is that of the non-empty bins. A histogram whose non-empty
    span has at most ``bins`` bins is only trimmed to that span.
    """
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if counts.ndim != 1 or edges.shape != (counts.size + 1,):
        raise ValueError(f"need counts [B] and edges [B+1], got {counts.shape}, {edges.shape}")
    centers = (edges[:-1] + edges[1:]) / 2
    nz = np.flatnonzero(counts > 0)
    if nz.size == 0:
        lo = 0.0 if lo is None else lo
        return np.zeros(bins), np.linspace(lo, (hi if hi is not None else lo + 1.0), bins + 1)
    if nz[-1] - nz[0] + 1 <= bins:
        # Already coarse (e.g. a 40-bin np.histogram): keep its bins, as rebinning onto a finer
        # grid would leave every other bar empty.
        return counts[nz[0] : nz[-1] + 1], edges[nz[0] : nz[-1] + 2]
    lo = float(centers[nz[0]]) if lo is None else float(lo)
    hi = float(centers[nz[-1]]) if hi is None else float(hi)
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    out, out_edges = np.histogram(
        np.clip(centers[nz], lo, hi), bins=bins, range=(lo, hi), weights=counts[nz]
    )
    return out, out_edges


def _histogram_svg(
    counts: np.ndarray,
    edges: np.ndarray,
    scale: Scale,
    *,
    width: int = 420,
    height: int = 170,
    log_counts: bool = True,
) -> str:
    """Bars coloured by the neuron's own scale; counts on a log axis by default because gate
    and cell histograms are spiky (a saturated gate would flatten everything else)."""
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if counts.size == 0 or edges.size != counts.size + 1:
        return '<div class="meta">no histogram</div>'
    L, R, T, B = 44, 10, 8, 34
    pw, ph = width - L - R, height - T - B
    x0, x1 = float(edges[0]), float(edges[-1])
    if not x1 > x0:
        x1 = x0 + 1.0
    h = np.log10(counts + 1.0) if log_counts else counts
    top = float(h.max()) if h.max() > 0 else 1.0

    def sx(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * pw

    classes = quantize((edges[:-1] + edges[1:]) / 2, scale).tolist()
    parts = [
        f'<svg class="hist" width="{width}" height="{height}" role="img" '
        'aria-label="histogram" font-family="sans-serif" font-size="10">',
        f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for c, a, b, hv, cnt in zip(classes, edges[:-1], edges[1:], h, counts, strict=True):
        if cnt <= 0:
            continue
        bh = hv / top * ph
        col = scale.palette[c] if c < scale.n else "#cccccc"
        parts.append(
            f'<rect x="{sx(a):.1f}" y="{T + ph - bh:.1f}" width="{max(sx(b) - sx(a), 0.8):.1f}" '
            f'height="{bh:.1f}" fill="{col}" stroke="#555" stroke-width="0.3">'
            f"<title>{_fmt(a)} … {_fmt(b)}: {int(cnt)}</title></rect>"
        )
    for f in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + f * (x1 - x0)
        anchor = "start" if f == 0.0 else "end" if f == 1.0 else "middle"
        parts.append(
            f'<text x="{sx(x):.1f}" y="{T + ph + 13}" text-anchor="{anchor}" fill="#333">'
            f"{x:.3g}</text>"
        )
    ymax = int(counts.max())
    parts.append(
        f'<text x="{L - 4}" y="{T + 9}" text-anchor="end" fill="#333">{ymax}</text>'
        f'<text x="{L - 4}" y="{T + ph}" text-anchor="end" fill="#333">0</text>'
        f'<text x="{L + pw / 2:.0f}" y="{height - 4}" text-anchor="middle" fill="#555">'
        f"activation · count{' (log scale)' if log_counts else ''}</text></svg>"
    )
    return "".join(parts)


def _stats_table(stats: Mapping[str, Any] | None) -> str:
    if stats is None:
        return '<div class="meta">no statistics</div>'
    keys = list(stats.keys())
    # The card's heading already names layer, kind and unit; other columns are shown when set
    # (the store's saturation columns are NaN for non-gates).
    extra = [
        k for k in keys
        if k not in _STAT_ORDER and k not in ("layer", "kind", "unit") and _present(stats[k])
    ]  # fmt: skip
    ordered = [k for k in _STAT_ORDER if k in keys] + extra
    rows = []
    for key in ordered:
        v = stats[key]
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            txt = _fmt(float(v))
        else:
            txt = str(v)
        rows.append(
            f'<tr><td>{html.escape(str(key))}</td><td class="num">{html.escape(txt)}</td></tr>'
        )
    return '<table class="stats">' + "".join(rows) + "</table>"


def _stat_or_none(stats: Mapping[str, Any], key: str) -> float | None:
    try:
        v = float(stats[key])
    except (KeyError, TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _present(x: Any) -> bool:
    """False for None, "" and NaN (how a DataFrame row says "does not apply")."""
    if x is None or isinstance(x, str):
        return bool(x)
    try:
        return not math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def context_records(contexts: Any) -> list[dict[str, Any]]:
    """Normalise contexts to a list of dicts with start, stop, position, value, group.

    Accepts a list of dicts, a ``{group: [dicts]}`` mapping, or a ``pandas.DataFrame`` with
    those columns (what ``lstmscope.analysis.contexts`` returns). ``group`` defaults to
    ``"contexts"``; ``label`` (e.g. ``"q25"``) is optional.
    """
    if contexts is None:
        return []
    if hasattr(contexts, "to_dict") and hasattr(contexts, "columns"):
        items: list[Mapping[str, Any]] = contexts.to_dict("records")
    elif isinstance(contexts, Mapping):
        items = [{**d, "group": g} for g, ds in contexts.items() for d in ds]
    else:
        items = list(contexts)
    out = []
    for d in items:
        missing = [key for key in ("start", "stop", "position", "value") if key not in d]
        if missing:
            raise ValueError(f"context {dict(d)!r} lacks {', '.join(missing)}")
        rec = dict(d)
        rec["start"], rec["stop"], rec["position"] = (
            int(d["start"]),
            int(d["stop"]),
            int(d["position"]),
        )
        rec["value"] = float(d["value"])
        # Rows of a DataFrame carry NaN where a column does not apply to them.
        rec["group"] = str(d["group"]) if _present(d.get("group")) else "contexts"
        if not _present(d.get("label")):
            rec.pop("label", None)
        if rec["group"].startswith("q") and rec["group"][1:2].isdigit():
            # The analysis names quantile samples q0.50 ...; the card shows them as one group.
            rec.setdefault("label", f"q{round(float(rec['group'][1:]) * 100):02d}")
            rec["group"] = "quantile"
        if not rec["start"] <= rec["position"] < rec["stop"]:
            raise ValueError(f"context needs start <= position < stop, got {dict(d)!r}")
        out.append(rec)
    return out


def render_card(
    neuron_id: str,
    scale: Scale,
    contexts: Sequence[Mapping[str, Any]],
    *,
    stats: Mapping[str, Any] | None = None,
    hist: tuple[np.ndarray, np.ndarray] | None = None,
    tooltips: Tooltips = "auto",
    heading: bool = True,
) -> str:
    """An HTML fragment describing one neuron: statistics, histogram and context snippets.

    Each context is a dict with ``start, stop, position, value`` (corpus positions), optional
    ``group`` (``top``, ``bottom``, ``quantile`` or any name) and ``label``, and the snippet
    itself: ``text`` (the corpus ``[start, stop)``) and ``values`` (``[stop - start]``).
    """
    recs = context_records(contexts)  # copies every key, so text and values come along
    for r in recs:
        if "text" not in r or "values" not in r:
            raise ValueError("render_card needs each context's 'text' and 'values'")
        r["values"] = np.asarray(r["values"], dtype=np.float32)
        if len(r["text"]) != r["stop"] - r["start"] or len(r["values"]) != len(r["text"]):
            raise ValueError(f"context at {r['start']}: text/values length != stop - start")
    nid = str(parse_neuron(neuron_id))
    n_cells = sum(len(r["text"]) for r in recs)
    mode = _resolve_tooltips(tooltips, n_cells)
    nrn = parse_neuron(nid)
    out = [_style([scale]), '<div class="lsx card">']
    if heading:
        out.append(f"<h2>{html.escape(nid)}</h2>")
    out.append(
        f'<div class="meta">layer {nrn.layer} · {html.escape(KIND_NAMES.get(nrn.kind, nrn.kind))}'
        f" · unit {nrn.unit}</div>"
    )
    out.append('<div class="cardtop">')
    out.append(_stats_table(stats))
    out.append("<div>")
    if hist is not None:
        # Display range: [0, 1] for gates, else the neuron's own min..max when known.
        gate = nrn.kind in GATE_KINDS
        lo, hi = (0.0, 1.0) if gate else (None, None)
        if not gate and stats is not None:
            lo, hi = _stat_or_none(stats, "min"), _stat_or_none(stats, "max")
        counts, edges = rebin_hist(hist[0], hist[1], lo, hi)
        out.append(_histogram_svg(counts, edges, scale))
    out.append(legend_html(scale, "colour scale"))
    out.append("</div></div>")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        groups.setdefault(r["group"], []).append(r)
    for g, rs in groups.items():
        out.append(f"<h2>{html.escape(_GROUP_TITLES.get(g, g))}</h2>")
        out.append(_kwic_open(2))
        for r in rs:
            a = r["position"] - r["start"]
            vals = r["values"][:, None]
            cls = [quantize(r["values"], scale)]
            head = [
                html.escape(str(r.get("label", "")) or _fmt(r["value"])),
                f"@{r['position']}",
            ]
            out.extend(
                _snippet_rows(
                    r["text"], vals, cls, [scale], [nid], r["start"], (a, a + 1), mode, head
                )
            )
        out.append("</div>")
    out.append("</div>")
    return "\n".join(out)


def fallback_contexts(
    values: np.ndarray,
    *,
    k: int = 8,
    context: int = 40,
    quantiles: Sequence[float] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99),
) -> list[dict[str, Any]]:
    """Top-k, bottom-k and quantile-sampled positions of one neuron's ``values [N]``.

    A small stand-in for ``lstmscope.analysis.contexts``: peaks closer than ``context``
    characters to an already chosen one are skipped, so the k contexts are k different places.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    finite = np.flatnonzero(np.isfinite(v))
    if finite.size == 0:
        return []
    order = finite[np.argsort(v[finite], kind="stable")]  # ascending

    def window(p: int) -> tuple[int, int]:
        return max(0, p - context), min(n, p + context + 1)

    def pick(candidates: np.ndarray) -> list[int]:
        chosen: list[int] = []
        for p in candidates.tolist():
            if all(abs(p - c) > context for c in chosen):
                chosen.append(p)
                if len(chosen) == k:
                    break
        return chosen

    out: list[dict[str, Any]] = []
    for group, cands in (("top", order[::-1]), ("bottom", order)):
        for p in pick(cands):
            s, e = window(p)
            out.append({"group": group, "start": s, "stop": e, "position": p, "value": v[p]})
    for q in quantiles:
        p = int(order[round(q * (order.size - 1))])
        s, e = window(p)
        out.append(
            {"group": "quantile", "label": f"q{round(q * 100):02d}", "start": s, "stop": e,
             "position": p, "value": v[p]}
        )  # fmt: skip
    return out


def stats_from_values(values: np.ndarray) -> dict[str, float]:
    """The statistics the card shows, computed from ``values [N]`` (when the store has none)."""
    v = np.asarray(values, dtype=np.float64)
    fin = v[np.isfinite(v)]
    if fin.size == 0:
        return {}
    qs = np.quantile(fin, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    out = {"mean": float(fin.mean()), "std": float(fin.std()), "min": float(fin.min())}
    out.update({f"q{p:02d}": float(x) for p, x in zip((1, 5, 25, 50, 75, 95, 99), qs, strict=True)})
    out["max"] = float(fin.max())
    return out


# ----------------------------------------------------------------------------------------------
# Store-level entry points (what the CLI and the notebook call)
# ----------------------------------------------------------------------------------------------


def _neuron_ids(neurons: str | Sequence[str]) -> list[str]:
    items = [neurons] if isinstance(neurons, str) else list(neurons)
    ids: list[str] = []
    for x in items:
        nid = str(parse_neuron(x))
        if nid not in ids:
            ids.append(nid)
    if not ids:
        raise ValueError("no neurons given: name at least one, e.g. L1.c.137")
    if len(ids) > MAX_NEURONS:
        raise ValueError(f"{len(ids)} neurons; at most {MAX_NEURONS} fit in one export")
    return ids


def _stats_row(store: Any, nid: str) -> Mapping[str, Any] | None:
    try:
        stats = store.stats
    except (AttributeError, FileNotFoundError, KeyError):
        return None
    if stats is None:
        return None
    try:
        row = stats.loc[nid]
    except (KeyError, AttributeError):
        return None
    return row if hasattr(row, "keys") and not hasattr(row, "columns") else None


def _check_scale(scale: str | None) -> str:
    scale = scale or DEFAULT_SCALE
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    return scale


def _scales(
    store: Any,
    ids: list[str],
    vals: np.ndarray | None,
    colormap: str | None,
    scale: str | None = None,
) -> list[Scale]:
    """One scale per neuron, as the dashboard builds it for the same values (``vals`` are
    the values shown, ``[T, K]``: the window scales are built from them)."""
    method = _check_scale(scale)
    out = []
    for j, nid in enumerate(ids):
        row = _stats_row(store, nid)
        if (row is None and vals is not None and method == "linear"
                and parse_neuron(nid).kind not in GATE_KINDS):  # fmt: skip
            # Without stored statistics the linear range comes from what is shown (logged: it
            # then differs between exports of the same neuron). The rank scales fall back to
            # the values shown by themselves, and their legend says so.
            log.info("no statistics for %s: scaling to the exported values", nid)
            row = robust_stats(vals[:, j])
        # Passed whatever the scale: scale_for uses them exactly when needs_values() says so,
        # as the dashboard does.
        shown = vals[:, j] if vals is not None else None
        out.append(scale_for(nid, row, colormap=colormap, method=method, values=shown))
    return out


def _check_range(store: Any, start: int, stop: int, max_chars: int) -> None:
    n = int(store.n)
    if not 0 <= start < stop <= n:
        raise ValueError(f"range [{start}, {stop}) is not inside the store's text [0, {n})")
    if stop - start > max_chars:
        raise ValueError(
            f"{stop - start} characters is more than the {max_chars} an export may hold; "
            "export a narrower range"
        )


def _range_fragment(
    store: Any,
    ids: list[str],
    start: int,
    stop: int,
    *,
    colormap: str | None,
    tooltips: Tooltips,
    wrap: int,
    max_chars: int,
    title: str | None = None,
    scale: str | None = None,
) -> str:
    _check_range(store, start, stop, max_chars)
    vals = np.asarray(store.window(start, stop, ids), dtype=np.float32)  # [T, K]
    scales = _scales(store, ids, vals, colormap, scale)
    return render_text_html(
        store.text[start:stop],
        vals,
        scales,
        start=start,
        neuron_label=ids,
        title=title,
        tooltips=tooltips,
        wrap=wrap,
    )


def _header(title: str, lines: Sequence[str]) -> str:
    meta = "".join(f'<div class="meta">{html.escape(x)}</div>' for x in lines)
    return f'<div class="lsx"><h1>{html.escape(title)}</h1>{meta}</div>'


# Plain text (escaped on output); says how control characters and newlines are drawn.
_HOW_TO_READ = (
    "Each neuron is coloured on its own scale (legend: which scale, and what it spans). ↵ marks a newline; control "
    "characters are shown as escapes in a dotted box (\\r, \\0, \\x85, \\u202e)."
)


def export_range(
    store: Any,
    neurons: str | Sequence[str],
    start: int,
    stop: int,
    *,
    title: str | None = None,
    colormap: str | None = None,
    tooltips: Tooltips = "auto",
    wrap: int = DEFAULT_WRAP,
    max_chars: int = MAX_EXPORT_CHARS,
    scale: str | None = None,
) -> str:
    """A standalone HTML document: corpus ``[start, stop)`` coloured by one or more neurons,
    each on the colour ``scale`` (one of :data:`~lstmscope.export.colors.SCALES`; default quantile)."""
    t0 = time.perf_counter()
    ids = _neuron_ids(neurons)
    method = _check_scale(scale)
    title = title or f"{', '.join(ids[:4])}{' …' if len(ids) > 4 else ''} · {start}–{stop}"
    body = _range_fragment(
        store, ids, start, stop, colormap=colormap, tooltips=tooltips, wrap=wrap,
        max_chars=max_chars, scale=method,
    )  # fmt: skip
    head = _header(
        title,
        [
            f"characters {start}–{stop} of {store.n} · neurons {', '.join(ids)} · "
            f"{method} colour scale · lstmscope {__version__}",
            _HOW_TO_READ,
        ],
    )
    doc = html_document(head + "\n" + body, title=title)
    log.debug("export_range: %d chars, %d bytes, %.2f s", stop - start, len(doc),
              time.perf_counter() - t0)  # fmt: skip
    return doc


def export_find(
    store: Any,
    neurons: str | Sequence[str],
    pattern: str,
    *,
    context: int = 40,
    max_matches: int = 50,
    title: str | None = None,
    colormap: str | None = None,
    tooltips: Tooltips = "auto",
    scale: str | None = None,
) -> str:
    """A standalone HTML document: every match of ``pattern`` (up to ``max_matches``) in its
    context, coloured by the neurons, matches aligned for comparison. The window ``scale``s
    are built from all the snippets shown (``diff`` restarts in each)."""
    ids = _neuron_ids(neurons)
    method = _check_scale(scale)
    if not 0 <= context <= 10_000:
        raise ValueError(f"context must be in [0, 10000], got {context}")
    if not 1 <= max_matches <= MAX_FIND_MATCHES:
        raise ValueError(f"max_matches must be in [1, {MAX_FIND_MATCHES}], got {max_matches}")
    text = store.text
    matches, more = find_matches(text, pattern, max_matches=max_matches)
    n = len(text)
    pieces = []
    for a, b in matches:
        b_vis = min(b, a + MAX_MATCH_SHOW)
        lo, hi = max(0, a - context), min(n, b_vis + context)
        vals = np.asarray(store.window(lo, hi, ids), dtype=np.float32)
        pieces.append((text[lo:hi], vals, lo, (a - lo, b_vis - lo)))
    shown = np.concatenate([p[1] for p in pieces]) if pieces else None
    scales = _scales(store, ids, shown, colormap, method)
    count = f"{len(matches)}{'+' if more else ''} match{'es' if len(matches) != 1 else ''}"
    title = title or f"/{pattern[:80]}/ · {', '.join(ids[:4])}"
    if matches:
        body = _matches_fragment(
            pieces, scales, ids, tooltips=tooltips, title=None,
            note=(f"first {max_matches} shown" if more else ""),
        )  # fmt: skip
    else:
        body = '<div class="lsx"><p>No matches.</p></div>'
    head = _header(
        title,
        [f"pattern /{pattern[:200]}/ · {count} in {n} characters · context {context} · "
         f"{method} colour scale · lstmscope {__version__}", _HOW_TO_READ],
    )  # fmt: skip
    return html_document(head + "\n" + body, title=title)


def _hist(store: Any, nid: str) -> tuple[np.ndarray, np.ndarray] | None:
    fn = getattr(store, "hist", None)
    if fn is None:
        return None
    try:
        counts, edges = fn(nid)
    except (AttributeError, NotImplementedError, KeyError, FileNotFoundError):
        return None
    return np.asarray(counts), np.asarray(edges)


def card_fragment(
    store: Any,
    neuron: str,
    contexts: Any = None,
    *,
    colormap: str | None = None,
    k: int = 8,
    context: int = 40,
    heading: bool = True,
    scale: str | None = None,
) -> str:
    """The neuron card as a fragment (see :func:`export_card`). A card shows the neuron's
    whole distribution, so a window ``scale`` (built from the values shown) becomes quantile."""
    method = whole_neuron_scale(_check_scale(scale))
    ids = _neuron_ids(neuron)
    if len(ids) != 1:
        raise ValueError(f"a card shows exactly one neuron, got {len(ids)}")
    nid = ids[0]
    stats: Mapping[str, Any] | None = _stats_row(store, nid)
    hist = _hist(store, nid)
    recs = context_records(contexts)
    full: np.ndarray | None = None
    if not recs or stats is None or hist is None:
        # Only now read the whole column: on a big store that is the slow part.
        full = np.asarray(store.neuron(nid), dtype=np.float32)
        if not recs:
            recs = fallback_contexts(full, k=k, context=context)
        if stats is None:
            stats = stats_from_values(full) or None
        if hist is None:
            fin = full[np.isfinite(full)]
            hist = np.histogram(fin, bins=60) if fin.size else None
    text = store.text
    n = len(text)
    for r in recs:
        if not 0 <= r["start"] < r["stop"] <= n:
            raise ValueError(f"context [{r['start']}, {r['stop']}) is outside the text [0, {n})")
        r["text"] = text[r["start"] : r["stop"]]
        r["values"] = (
            full[r["start"] : r["stop"]]
            if full is not None
            else np.asarray(store.window(r["start"], r["stop"], [nid]), dtype=np.float32)[:, 0]
        )
    sc = scale_for(nid, stats, colormap=colormap, method=method)
    return render_card(nid, sc, recs, stats=stats, hist=hist, heading=heading)


def export_card(
    store: Any,
    neuron: str,
    contexts: Any = None,
    *,
    colormap: str | None = None,
    k: int = 8,
    context: int = 40,
    scale: str | None = None,
) -> str:
    """A standalone HTML document: one neuron's statistics, histogram and contexts.

    ``contexts`` as accepted by :func:`context_records` (e.g. from the analysis module); when
    None, top/bottom-``k`` and quantile contexts are computed from ``store.neuron(neuron)``.
    """
    nid = _neuron_ids(neuron)[0]
    body = card_fragment(
        store, nid, contexts, colormap=colormap, k=k, context=context, heading=False, scale=scale
    )
    head = _header(f"Neuron {nid}", [f"{store.n} characters · lstmscope {__version__}"])
    return html_document(head + "\n" + body, title=f"lstmscope · {nid}")


def write_html(path: str | Path, html_text: str) -> Path:
    """Write an export atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    atomic_write_text(path, html_text)
    log.info("wrote %s (%.1f kB)", path, len(html_text.encode("utf-8")) / 1e3)
    return path


class NeuronView:
    """A notebook view of neurons over a range: ``_repr_html_`` is the export's fragment.

    ``NeuronView(store, "L1.c.137", 0, 2000)``; ``stop`` defaults to ``start + 2000``.
    """

    def __init__(
        self,
        store: Any,
        neurons: str | Sequence[str],
        start: int = 0,
        stop: int | None = None,
        *,
        colormap: str | None = None,
        tooltips: Tooltips = "auto",
        wrap: int = DEFAULT_WRAP,
        max_chars: int = 50_000,
        scale: str | None = None,
    ) -> None:
        self.store = store
        self.neurons = _neuron_ids(neurons)
        self.start = int(start)
        self.stop = int(stop) if stop is not None else min(int(store.n), self.start + 2000)
        self.colormap = colormap
        self.tooltips = tooltips
        self.wrap = wrap
        self.max_chars = max_chars
        self.scale = _check_scale(scale)
        _check_range(store, self.start, self.stop, max_chars)

    def __repr__(self) -> str:
        return f"NeuronView({', '.join(self.neurons)}, {self.start}:{self.stop})"

    def _repr_html_(self) -> str:
        return _range_fragment(
            self.store, self.neurons, self.start, self.stop, colormap=self.colormap,
            tooltips=self.tooltips, wrap=self.wrap, max_chars=self.max_chars, scale=self.scale,
        )  # fmt: skip

    def to_html(self, title: str | None = None) -> str:
        return export_range(
            self.store, self.neurons, self.start, self.stop, title=title,
            colormap=self.colormap, tooltips=self.tooltips, wrap=self.wrap,
            max_chars=self.max_chars, scale=self.scale,
        )  # fmt: skip

    def save(self, path: str | Path, title: str | None = None) -> Path:
        return write_html(path, self.to_html(title))
