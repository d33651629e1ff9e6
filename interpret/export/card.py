"""The neuron card: one neuron's statistics, histogram and contexts, as standalone HTML.

:func:`render_card` draws a card from plain data (a scale, contexts with their text and values,
a statistics row, a histogram); :func:`card_fragment` and :func:`export_card` gather that data
from a store (``lstmscope export --card``). Contexts come from
:mod:`lstmscope.analysis.contexts` (passed in, or picked from the neuron's values when none
are), the statistics and the histogram from the store's, else from the values.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lstmscope import __version__
from lstmscope.analysis.contexts import contexts_from_values, stats_from_values
from lstmscope.export.colors import Scale, quantize, scale_for, whole_neuron_scale
from lstmscope.export.matches import kwic_open, snippet_rows
from lstmscope.export.neurons import check_scale, neuron_ids, stats_row
from lstmscope.export.text import (
    Tooltips,
    fmt_number,
    html_document,
    legend_html,
    page_header,
    resolve_tooltips,
    style_block,
)
from lstmscope.names import GATE_KINDS, KIND_NAMES, parse_neuron

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
            f"<title>{fmt_number(a)} … {fmt_number(b)}: {int(cnt)}</title></rect>"
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
            txt = fmt_number(float(v))
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
    mode = resolve_tooltips(tooltips, n_cells)
    nrn = parse_neuron(nid)
    out = [style_block([scale]), '<div class="lsx card">']
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
        out.append(kwic_open(2))
        for r in rs:
            a = r["position"] - r["start"]
            vals = r["values"][:, None]
            cls = [quantize(r["values"], scale)]
            head = [
                html.escape(str(r.get("label", "")) or fmt_number(r["value"])),
                f"@{r['position']}",
            ]
            out.extend(
                snippet_rows(
                    r["text"], vals, cls, [scale], [nid], r["start"], (a, a + 1), mode, head
                )
            )
        out.append("</div>")
    out.append("</div>")
    return "\n".join(out)


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
    method = whole_neuron_scale(check_scale(scale))
    ids = neuron_ids(neuron)
    if len(ids) != 1:
        raise ValueError(f"a card shows exactly one neuron, got {len(ids)}")
    nid = ids[0]
    stats: Mapping[str, Any] | None = stats_row(store, nid)
    hist = _hist(store, nid)
    recs = context_records(contexts)
    full: np.ndarray | None = None
    if not recs or stats is None or hist is None:
        # Only now read the whole column: on a big store that is the slow part.
        full = np.asarray(store.neuron(nid), dtype=np.float32)
        if not recs:
            recs = contexts_from_values(full, k=k, context=context)
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
    nid = neuron_ids(neuron)[0]
    body = card_fragment(
        store, nid, contexts, colormap=colormap, k=k, context=context, heading=False, scale=scale
    )
    head = page_header(f"Neuron {nid}", [f"{store.n} characters · lstmscope {__version__}"])
    return html_document(head + "\n" + body, title=f"lstmscope · {nid}")
