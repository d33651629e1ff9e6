"""Snippets aligned on a mark: every match of a pattern in its context, as a grid.

Keyword in context: each snippet is one row per neuron, its left context right-aligned and the
rest left-aligned, so the marked characters (a match, or a card's position) stand in one column
whatever the characters' widths. :func:`render_matches` lists matches in a text,
:func:`export_find` every match of a user pattern in a store (``lstmscope export --find``);
the neuron card (:mod:`~lstmscope.export.card`) draws its contexts with :func:`snippet_rows`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from lstmscope import __version__
from lstmscope.export.colors import Scale, quantize
from lstmscope.export.neurons import check_scale, neuron_ids, neuron_scales
from lstmscope.export.text import (
    HOW_TO_READ,
    Tooltips,
    html_document,
    legend_html,
    neuron_columns,
    page_header,
    render_row,
    resolve_tooltips,
    style_block,
)
from lstmscope.text.pattern import MAX_FIND_MATCHES, find_matches

MAX_MATCH_SHOW = 1_000  # characters of one match shown (a `.*` with DOTALL could be the corpus)


def snippet_rows(
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
        left = render_row(text[:a], v[:a], cls[:a], offset, mode)
        right = (
            '<span class="hit">'
            + render_row(text[a:b], v[a:b], cls[a:b], offset + a, mode, "h")
            + "</span>"
            + render_row(text[b:], v[b:], cls[b:], offset + b, mode)
        )
        out.append(
            f'<div class="row ctx {scales[j].key}" data-neuron="{html.escape(labels[j])}">'
            f'<div class="left">{left}</div><div class="right">{right}</div></div>'
        )
    return out


def kwic_open(n_head: int) -> str:
    """Open the grid of snippets: ``n_head`` head cells, then the two text cells (an inline
    style: the column count varies per export)."""
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
    mode = resolve_tooltips(tooltips, total)
    out = [style_block(scales), '<div class="lsx">']
    if title:
        out.append(f"<h2>{html.escape(title)}</h2>")
    if note:
        out.append(f'<div class="meta">{html.escape(note)}</div>')
    out.append('<div class="legends">')
    for lab, sc in zip(labels, scales, strict=True):
        out.append(legend_html(sc, lab))
    out.append("</div>")
    out.append(kwic_open(2 + (k > 1)))
    for i, (text, vals, offset, (a, b)) in enumerate(pieces):
        classes = [quantize(vals[:, j], scales[j]) for j in range(k)]
        head = [f"#{i + 1}", f"@{offset + a}"]
        out.extend(
            snippet_rows(text, vals, classes, scales, labels, offset, (a, b), mode, head, k > 1)
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
    vals, scales, labels = neuron_columns(text, values, scale, neuron_label)
    n = len(text)
    pieces = []
    for a, b in matches:
        if not 0 <= a <= b <= n:
            raise ValueError(f"match ({a}, {b}) is outside the text [0, {n})")
        lo, hi = max(0, a - context), min(n, b + context)
        pieces.append((text[lo:hi], vals[lo:hi], start + lo, (a - lo, b - lo)))
    return _matches_fragment(pieces, scales, labels, tooltips=tooltips, title=title)


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
    ids = neuron_ids(neurons)
    method = check_scale(scale)
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
    scales = neuron_scales(store, ids, shown, colormap, method)
    count = f"{len(matches)}{'+' if more else ''} match{'es' if len(matches) != 1 else ''}"
    title = title or f"/{pattern[:80]}/ · {', '.join(ids[:4])}"
    if matches:
        body = _matches_fragment(
            pieces, scales, ids, tooltips=tooltips, title=None,
            note=(f"first {max_matches} shown" if more else ""),
        )  # fmt: skip
    else:
        body = '<div class="lsx"><p>No matches.</p></div>'
    head = page_header(
        title,
        [f"pattern /{pattern[:200]}/ · {count} in {n} characters · context {context} · "
         f"{method} colour scale · lstmscope {__version__}", HOW_TO_READ],
    )  # fmt: skip
    return html_document(head + "\n" + body, title=title)
