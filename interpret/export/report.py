"""The report of ``lstmscope detect``, rendered: the HTML page, its tables and snippets, the
saturation plot as SVG, and the CSV files, each written atomically into the report folder.

:mod:`lstmscope.detect` ranks the neurons and decides what goes in; this module only draws it.
The page is standalone (no scripts, nothing fetched, corpus text escaped): see
:mod:`lstmscope.export.text`.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lstmscope import __version__
from lstmscope.analysis.features import Feature
from lstmscope.disk import atomic_write_text
from lstmscope.export.colors import Scale, palette, scale_for
from lstmscope.export.text import html_document, render_text_html

SNIPPET_CHARS = 400
SNIPPET_NEURONS = 3
LAYER_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


def safe_name(name: str) -> str:
    """A feature name as a file name (and an HTML id): unsafe characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "feature"


def csv_text(df: pd.DataFrame) -> str:
    """A frame as the report's CSV: no index, floats to 6 significant digits."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


@dataclass
class ReportFolder:
    """The report folder: every file written atomically (``lstmscope.disk``), so the folder never
    holds half a file; ``files`` lists what was written, in order."""

    out: Path
    files: list[Path] = field(default_factory=list)

    def write(self, rel: str, text: str) -> None:
        path = self.out / rel
        atomic_write_text(path, text)
        self.files.append(path)

    def write_csv(self, rel: str, df: pd.DataFrame) -> None:
        self.write(rel, csv_text(df))


# ----------------------------------------------------------------------------------------------
# Pieces of the report


def saturation_svg(sat: pd.DataFrame, *, panel: int = 230) -> str:
    """Inline SVG: one panel per gate, each unit a dot at (left-, right-saturated fraction),
    coloured by layer, with its id as a hover title (no JS); the diagonal ``x + y = 1`` bounds
    the possible points."""
    if sat.empty:
        return "<p>No gates in this store (an RNN, or recorded without gate kinds).</p>"
    gates = list(dict.fromkeys(sat["kind"]))
    layers = sorted(set(sat["layer"]))
    pad, gap = 36, 18
    width = len(gates) * (panel + gap) + pad
    height = panel + 2 * pad
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}" '
        'font-family="sans-serif" font-size="11">'
    ]
    names = {"i": "input gate", "f": "forget gate", "o": "output gate", "r": "reset gate",
             "z": "update gate"}  # fmt: skip
    for gi, g in enumerate(gates):
        x0 = pad + gi * (panel + gap)
        y0 = pad

        def sx(v: float, x0: int = x0) -> float:
            return x0 + v * panel

        def sy(v: float, y0: int = y0) -> float:
            return y0 + (1.0 - v) * panel

        out.append(f'<rect x="{x0}" y="{y0}" width="{panel}" height="{panel}" fill="none" '
                   'stroke="#999"/>')  # fmt: skip
        out.append(f'<line x1="{sx(0)}" y1="{sy(1)}" x2="{sx(1)}" y2="{sy(0)}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + panel / 2}" y="{y0 - 8}" text-anchor="middle">'
                   f"{html.escape(names.get(g, g))}</text>")  # fmt: skip
        out.append(f'<text x="{x0 + panel / 2}" y="{y0 + panel + 26}" text-anchor="middle">'
                   "fraction left-saturated (&lt; 0.1)</text>")  # fmt: skip
        if gi == 0:
            out.append(f'<text x="{x0 - 24}" y="{y0 + panel / 2}" text-anchor="middle" '
                       f'transform="rotate(-90 {x0 - 24} {y0 + panel / 2})">fraction '
                       "right-saturated (&gt; 0.9)</text>")  # fmt: skip
        for tick in (0.0, 0.5, 1.0):
            out.append(f'<text x="{sx(tick)}" y="{y0 + panel + 12}" text-anchor="middle">'
                       f"{tick:g}</text>")  # fmt: skip
            out.append(f'<text x="{x0 - 4}" y="{sy(tick) + 4}" text-anchor="end">{tick:g}</text>')
        sub = sat[sat["kind"] == g]
        for row in sub.itertuples(index=False):
            color = LAYER_COLORS[layers.index(row.layer) % len(LAYER_COLORS)]
            out.append(
                f'<circle cx="{sx(row.left):.1f}" cy="{sy(row.right):.1f}" r="2.5" '
                f'fill="{color}" fill-opacity="0.6"><title>{html.escape(row.neuron)}: left '
                f"{row.left:.3f}, right {row.right:.3f}</title></circle>"
            )
    for li, layer in enumerate(layers):
        x = pad + li * 70
        color = LAYER_COLORS[li % len(LAYER_COLORS)]
        out.append(f'<circle cx="{x}" cy="{height + 8}" r="4" fill="{color}"/>'
                   f'<text x="{x + 8}" y="{height + 12}">layer {layer}</text>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def _snippet_window(store, values: np.ndarray, kind: str, best: pd.Series) -> tuple[int, int]:
    """A window that shows the feature: for binary features the start of a typical span, for
    graded ones around the feature's largest value; warm positions preferred."""
    n = store.n
    warm = ~np.asarray(store.cold, dtype=bool)
    if kind == "binary":
        on = np.asarray(values, dtype=bool) & warm
        starts = np.flatnonzero(on & ~np.concatenate(([False], on[:-1])))
        if len(starts):
            stops = np.flatnonzero(on & ~np.concatenate((on[1:], [False]))) + 1
            lengths = stops - starts
            # The span whose length is closest to the median: typical, not the extreme.
            j = int(np.argmin(np.abs(lengths - np.median(lengths))))
            centre = int(starts[j] + min(lengths[j], SNIPPET_CHARS // 2) // 2)
        else:
            centre = n // 2
    else:
        v = np.where(warm, np.asarray(values, dtype=np.float64), -np.inf)
        centre = int(np.argmax(v))
    a = max(0, min(centre - SNIPPET_CHARS // 2, n - SNIPPET_CHARS))
    return a, min(n, a + SNIPPET_CHARS)


def _feature_scale(values: np.ndarray) -> Scale:
    hi = float(np.max(values)) if len(values) else 1.0
    return Scale(palette("Oranges", 9), 0.0, hi if hi > 0 else 1.0, 0.0, diverging=False,
                 name="Oranges")  # fmt: skip


def _snippet(store, name: str, values: np.ndarray, kind: str, ranking: pd.DataFrame) -> str:
    best = ranking.head(SNIPPET_NEURONS)
    a, b = _snippet_window(store, values, kind, best.iloc[0])
    ids = list(best["neuron"])
    vals = store.window(a, b, ids)  # [T, K]
    feat = np.asarray(values[a:b], dtype=np.float32)
    stats = store.stats
    scales = [_feature_scale(np.asarray(values))] + [
        scale_for(nid, stats.loc[nid] if nid in stats.index else None) for nid in ids
    ]
    labels = [f"feature {name}", *ids]
    return render_text_html(
        store.text[a:b], np.column_stack([feat, vals]), scales, start=a, neuron_label=labels,
        title=f"{name}: characters {a}–{b}",
    )  # fmt: skip


def _table(df: pd.DataFrame, columns: Sequence[str]) -> str:
    cols = [c for c in columns if c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for rec in df[cols].itertuples(index=False):
        cells = []
        for v in rec:
            if isinstance(v, (float, np.floating)):
                cells.append(f'<td class="num">{"" if np.isnan(v) else f"{v:.3f}"}</td>')
            elif isinstance(v, (int, np.integer)):
                cells.append(f'<td class="num">{int(v)}</td>')
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="rep"><tr>{head}</tr>{"".join(rows)}</table>'


_REPORT_CSS = """<style>
body{font-family:sans-serif;font-size:14px;color:#222;max-width:1200px}
table.rep{border-collapse:collapse;margin:8px 0 16px}
table.rep th,table.rep td{padding:2px 10px;border-bottom:1px solid #e4e4e4;text-align:left}
table.rep td.num{text-align:right;font-variant-numeric:tabular-nums}
section.feature{margin:24px 0;padding-top:8px;border-top:2px solid #ccc}
.note{color:#666;font-size:12px}
</style>"""


# How to read the scores (HTML as it is: nothing here needs escaping).
_SCORES_NOTE = (
    "Binary features: score = average precision (AP) of the neuron (times its "
    "sign) as a detector, computed exactly from the stored column for the neurons shown here; "
    "AUROC of the same, and F1 and IoU at the neuron's best threshold (AP, F1 and IoU pass the "
    "sanity checks of neuron-explanation scores; AUROC flatters rare spans). In "
    "rankings/*.csv the other neurons carry the fast histogram screen's numbers (column "
    "exact). Graded features: score = |Pearson r|. sign −1: the neuron is low where the "
    "feature is on. Cold positions (the warm-up of each recording stream) are left out."
)


@dataclass(frozen=True)
class ReportContent:
    """What the report shows, as :func:`lstmscope.detect.detect` found it."""

    features: Sequence[Feature]  # the features ranked, in order
    rankings: Mapping[str, pd.DataFrame]  # feature -> every neuron's scores, best first
    skipped: Mapping[str, str]  # feature -> why it was not ranked
    values: Mapping[str, np.ndarray]  # feature -> its values [N], for the snippets
    top: int  # neurons listed per feature
    saturation_svg: str
    loss_by_category: pd.DataFrame
    loss_by_distance: pd.DataFrame


def _heading(store) -> list[str]:
    cfg = store.meta.get("model", {})
    about = (
        f"{store.n:,} characters · {cfg.get('cell', '?')} {cfg.get('num_layers', '?')}x"
        f"{store.hidden_size} · layers {', '.join(map(str, store.layers))} · kinds "
        f"{', '.join(store.kinds)} · {len(store.neurons):,} neurons ranked · lstmscope "
        f"{__version__}"
    )
    return [
        f"<h1>lstmscope detect · {html.escape(str(store.path.name))}</h1>",
        f'<p class="note">{html.escape(about)}</p>',
        f'<p class="note">{_SCORES_NOTE}</p>',
    ]


def _summary_section(content: ReportContent) -> list[str]:
    parts = ["<h2>Summary: the best neuron per feature</h2>"]
    if content.features:
        rows = []
        for f in content.features:
            ranking = content.rankings[f.name]
            first = ranking.iloc[0]
            rows.append(
                {"feature": f.name, "kind": f.kind, "description": f.description,
                 "best neuron": first["neuron"], "score": float(first["score"]),
                 "auroc": float(first.get("auroc", np.nan)), "f1": float(first.get("f1", np.nan)),
                 "sign": int(first["sign"]),
                 "runner-up": ranking.iloc[1]["neuron"] if len(ranking) > 1 else ""}
            )  # fmt: skip
        best = pd.DataFrame(rows)
        parts.append(_table(best, list(best.columns)))
    for nm, why in content.skipped.items():
        parts.append(f'<p class="note">Skipped {html.escape(nm)}: {html.escape(why)}</p>')
    return parts


def _feature_section(store, f: Feature, content: ReportContent, snippets: bool) -> list[str]:
    df = content.rankings[f.name]
    cols = ["neuron", "score", "sign"] + (
        ["ap", "auroc", "f1", "iou", "mean_in", "mean_out"] if f.kind == "binary" else ["r"]
    )
    parts = [
        f'<section class="feature" id="f-{safe_name(f.name)}">',
        f"<h2>{html.escape(f.name)} <small>({f.kind})</small></h2>",
        f'<p class="note">{html.escape(f.description)}</p>',
        _table(df.head(content.top), cols),
    ]
    if snippets:
        parts.append(_snippet(store, f.name, content.values[f.name], f.kind, df))
    parts.append("</section>")
    return parts


def _loss_section(by_cat: pd.DataFrame, by_dist: pd.DataFrame) -> list[str]:
    dist = by_dist[(by_dist["pair"] == "all") & (by_dist["n"] > 0)]
    return [
        "<h2>Where the model pays</h2>",
        '<p class="note">Mean loss (bits per character) by what is being predicted.</p>',
        _table(by_cat, ["category", "n", "mean_bits", "share"]),
        '<p class="note">Closing brackets and quotes by the distance to their opener '
        "(characters).</p>",
        _table(dist, ["lo", "hi", "n", "mean_bits"]),
    ]


def report_html(store, content: ReportContent, *, snippets: bool = True,
                progress: bool = False) -> str:  # fmt: skip
    """The standalone ``report.html``: the store, the best neuron per feature, the gates'
    saturation, a section per feature (its top neurons and, with ``snippets``, a stretch of
    text coloured by the feature and its best neurons) and where the model pays its loss."""
    from tqdm.auto import tqdm

    parts = [_REPORT_CSS, *_heading(store), *_summary_section(content)]
    parts.append("<h2>Gate saturation</h2>")
    parts.append(
        '<p class="note">Each dot is one gate unit: how often it is below 0.1 (x) and above 0.9 '
        "(y), as in Karpathy et al. (2015), Fig. 3. Hover a dot for its id.</p>"
    )
    parts.append(content.saturation_svg)
    for f in tqdm(content.features, desc="report", disable=not progress):
        parts += _feature_section(store, f, content, snippets)
    parts += _loss_section(content.loss_by_category, content.loss_by_distance)
    return html_document("\n".join(parts), title=f"lstmscope detect · {store.path.name}")
