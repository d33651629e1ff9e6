"""Standalone HTML of text coloured by neuron activations, and the pieces every export shares.

:func:`render_text_html` colours a text by one or more neurons; :func:`export_range` does it for
a range of a store. The building blocks here (escaping, the scoped CSS, coloured spans, the
legend, tooltip modes, the document wrapper, the atomic write) are also what
:mod:`~lstmscope.export.matches`, :mod:`~lstmscope.export.card` and
:mod:`~lstmscope.export.report` are made of.

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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lstmscope import __version__
from lstmscope.disk import atomic_write_text
from lstmscope.export.colors import Scale, legend_ticks, quantize, text_colors
from lstmscope.export.neurons import check_range, check_scale, neuron_ids, neuron_scales
from lstmscope.names import KIND_NAMES, parse_neuron

log = logging.getLogger(__name__)

Tooltips = Literal["auto", "char", "run", "none"]
TOOLTIP_MODES = ("auto", "char", "run", "none")
# Per-character spans cost ~40 bytes a character; up to here that is well under a megabyte.
CHAR_TOOLTIP_LIMIT = 10_000
# A run's title costs ~30 bytes; 40,000 of them is ~1.2 MB on top of the spans.
RUN_TOOLTIP_LIMIT = 40_000
DEFAULT_WRAP = 100  # stacked rows are cut at this many characters so neurons stay aligned
MAX_EXPORT_CHARS = 1_000_000  # ~10-30 MB of HTML: beyond that a browser struggles

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


def fmt_number(v: float) -> str:
    """A value for a tooltip or a table: 4 significant digits, or "no value" for NaN."""
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


def style_block(scales: Iterable[Scale]) -> str:
    """The ``<style>`` of a fragment: the base rules and one colour class set per palette."""
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


def resolve_tooltips(tooltips: str, n_cells: int, n_runs: int = 0) -> str:
    """The tooltip mode to use for ``n_cells`` characters x neurons in ``n_runs`` colour runs
    (see the module docstring); checks ``tooltips``."""
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


def render_row(
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
            f'<span class="c{c}{cx}" title="{offset + i}: {fmt_number(v)}">{_esc(ch)}</span>'
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


def neuron_columns(
    text: str,
    values: np.ndarray,
    scale: Scale | Sequence[Scale],
    neuron_label: str | Sequence[str] | None,
) -> tuple[np.ndarray, list[Scale], list[str]]:
    """``values`` as ``[N, K]`` (``N = len(text)``) with one scale and one label per neuron
    (one given for all is repeated; a missing label becomes ``neuron k``)."""
    vals = _as_2d(values, len(text))
    k = vals.shape[1]
    if k == 0:
        raise ValueError("values has no neurons (shape [N, 0])")
    scales = _as_list(scale, k, "scale")
    labels = [_label_for(x, i) for i, x in enumerate(_as_list(neuron_label, k, "label"))]
    return vals, scales, labels


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
    vals, scales, labels = neuron_columns(text, values, scale, neuron_label)
    if wrap < 1:
        raise ValueError(f"wrap must be >= 1, got {wrap}")
    k = vals.shape[1]
    classes = [quantize(vals[:, j], scales[j]) for j in range(k)]
    chunks = _line_chunks(text, wrap) if k > 1 else [(0, len(text))]
    n_runs = sum(_n_runs(c) for c in classes) + (len(chunks) - 1) * k
    mode = resolve_tooltips(tooltips, len(text) * k, n_runs)

    out = [style_block(scales), '<div class="lsx">']
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
            + render_row(text, vals[:, 0], classes[0], start, mode)
            + "</div>"
        )
    else:
        out.append('<div class="stack">')
        for s, e in chunks:
            for j in range(k):
                out.append(
                    f'<div class="lab">{html.escape(labels[j])}</div>'
                    f'<div class="row {scales[j].key}" data-neuron="{_attr(labels[j])}">'
                    + render_row(text[s:e], vals[s:e, j], classes[j][s:e], start + s, mode)
                    + "</div>"
                )
            out.append('<div class="gap"></div>')
        out.append("</div>")
    out.append("</div>")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# A range of a store (what the CLI, the dashboard's export and the notebook view call)
# ----------------------------------------------------------------------------------------------


def range_fragment(
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
    """Corpus ``[start, stop)`` of ``store`` coloured by the neurons ``ids`` (checked ids, see
    :func:`~lstmscope.export.neurons.neuron_ids`), as a fragment: the body of
    :func:`export_range` and of the notebook view."""
    check_range(store, start, stop, max_chars)
    vals = np.asarray(store.window(start, stop, ids), dtype=np.float32)  # [T, K]
    scales = neuron_scales(store, ids, vals, colormap, scale)
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


def page_header(title: str, lines: Sequence[str]) -> str:
    """The title and lines of notes at the top of a standalone export (escaped here)."""
    meta = "".join(f'<div class="meta">{html.escape(x)}</div>' for x in lines)
    return f'<div class="lsx"><h1>{html.escape(title)}</h1>{meta}</div>'


# Plain text (escaped on output); says how control characters and newlines are drawn.
HOW_TO_READ = (
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
    ids = neuron_ids(neurons)
    method = check_scale(scale)
    title = title or f"{', '.join(ids[:4])}{' …' if len(ids) > 4 else ''} · {start}–{stop}"
    body = range_fragment(
        store, ids, start, stop, colormap=colormap, tooltips=tooltips, wrap=wrap,
        max_chars=max_chars, scale=method,
    )  # fmt: skip
    head = page_header(
        title,
        [
            f"characters {start}–{stop} of {store.n} · neurons {', '.join(ids)} · "
            f"{method} colour scale · lstmscope {__version__}",
            HOW_TO_READ,
        ],
    )
    doc = html_document(head + "\n" + body, title=title)
    log.debug("export_range: %d chars, %d bytes, %.2f s", stop - start, len(doc),
              time.perf_counter() - t0)  # fmt: skip
    return doc


def write_html(path: str | Path, html_text: str) -> Path:
    """Write an export atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    atomic_write_text(path, html_text)
    log.info("wrote %s (%.1f kB)", path, len(html_text.encode("utf-8")) / 1e3)
    return path
