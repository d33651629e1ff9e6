"""``lstmscope detect``: find the interpretable cells of a store and write a report folder.

For every feature (the structural built-ins by default, plus user regex features) every neuron
is ranked (:mod:`lstmscope.analysis.rank`); the report shows the best ones with their scores, a
highlighted snippet of text coloured by the feature and its best neurons, the gates' saturation
plot (Karpathy et al. Fig. 3) and where the model pays its loss. Written into ``out``::

    report.html           standalone: no scripts, nothing fetched, corpus text escaped
    summary.csv           one row per feature and rank (top ``top`` neurons)
    rankings/<feature>.csv  every neuron's scores for that feature
    saturation.csv, saturation.svg
    loss_by_category.csv, loss_by_distance.csv

Every file is written atomically (``lstmscope.disk``), so a report folder never holds half a
file. This is the only module of the analysis that writes; the analysis functions stay pure.
"""

from __future__ import annotations

import html
import io
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from lstmscope import __version__
from lstmscope.analysis.features import FEATURES, Feature, compute
from lstmscope.analysis.losses import loss_by_category, loss_by_distance
from lstmscope.analysis.rank import (
    feature_values,
    rank_binary,
    rank_many,
    resolve_feature,
    used_rows,
)
from lstmscope.analysis.saturation import saturation
from lstmscope.disk import atomic_write_text
from lstmscope.errors import StoreError
from lstmscope.export.colors import Scale, palette, scale_for
from lstmscope.export.text import html_document, render_text_html
from lstmscope.store.streams import warm_note

log = logging.getLogger(__name__)

# Structural features: what Karpathy et al.'s interpretable cells track. Character classes
# (is_space, ...) are available by name but left out by default: every layer encodes the
# current character, so their top neurons say little.
DEFAULT_FEATURES = (
    "in_url", "in_dquote", "in_squote", "in_string", "in_comment", "depth_paren",
    "depth_square", "depth_curly", "depth_total", "indent", "column", "to_eol", "word_pos",
)  # fmt: skip
SNIPPET_CHARS = 400
SNIPPET_NEURONS = 3
LAYER_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


@dataclass
class DetectReport:
    """What :func:`detect` wrote and found."""

    out: Path
    summary: pd.DataFrame  # feature, kind, rank, neuron, score, sign, ap/auroc or r
    rankings: dict[str, pd.DataFrame] = field(repr=False)
    skipped: dict[str, str] = field(default_factory=dict)  # feature -> why
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "feature"


def _csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


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


# ----------------------------------------------------------------------------------------------
# The entry point


def _features(store, features, user_features) -> list[Feature]:
    names = list(DEFAULT_FEATURES) if features is None else list(features)
    feats = [resolve_feature(nm) for nm in dict.fromkeys(names)]
    for f in user_features:
        if not isinstance(f, Feature):
            raise TypeError(f"user features must be Feature objects, got {type(f).__name__}")
        if any(f.name == g.name for g in feats):
            raise ValueError(f"feature name {f.name!r} given twice")
        feats.append(f)
    if not feats:
        raise ValueError("no features to detect: name at least one")
    return feats


def _check_warm(store) -> None:
    """Refuse a store with no warm position (its statistics are empty: nothing to rank, even
    with the cold positions); warn about one that is mostly cold."""
    n_warm = int(used_rows(store).sum())
    note = warm_note(store.n, n_warm, str(store.path))
    if note and n_warm == 0:
        raise StoreError(note)
    if note:
        log.warning("%s", note)


def detect(
    store,
    features: Sequence[str] | None = None,
    user_features: Sequence[Feature] = (),
    top: int = 10,
    out: str | Path = "report",
    *,
    layers: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    include_cold: bool = False,
    snippets: bool = True,
    progress: bool = False,
) -> DetectReport:
    """Rank every neuron against each feature and write the report folder ``out``.

    ``features``: built-in feature names (default :data:`DEFAULT_FEATURES`); ``user_features``:
    :class:`~lstmscope.analysis.features.Feature` objects, e.g. from
    :func:`~lstmscope.analysis.features.parse_feature_spec` (the CLI's ``--feature 'name=REGEX'``).
    ``top`` neurons per feature go into the summary and the report. A feature that is constant
    (or never/always on) on the positions ranked is skipped with a warning (``report.skipped``
    says why). A store with no warm position is refused (``StoreError``); one that is mostly
    cold gets a warning. Returns a :class:`DetectReport`.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    out = Path(out)
    feats = _features(store, features, user_features)
    _check_warm(store)
    use = used_rows(store, include_cold)
    log.info("detect: %d features over %s (%d neurons)", len(feats), store.path,
             len(store.neurons))  # fmt: skip
    # Built-ins in one pass over the text (shared lexical scan), cached on the store.
    builtin = [f.name for f in feats if FEATURES.get(f.name) is f]
    if builtin:
        compute(store.text[:1], builtin)  # fail fast on a bad name before the long pass
    values = {f.name: feature_values(store, f) for f in feats}
    kw = dict(layers=layers, kinds=kinds, include_cold=include_cold)
    rankings: dict[str, pd.DataFrame] = {}
    skipped: dict[str, str] = {}
    graded = {f.name: values[f.name] for f in feats if f.kind == "graded"}
    if graded:
        ok = {}
        for nm, v in graded.items():
            if np.ptp(np.asarray(v, dtype=np.float64)[use]) == 0:
                skipped[nm] = f"constant on the {int(use.sum()):,} positions ranked"
                log.warning("feature %s is constant on the positions ranked; skipped", nm)
            else:
                ok[nm] = v
        if ok:
            log.info("ranking %d graded features in one pass", len(ok))
            rankings.update(rank_many(store, ok, kind="graded", progress=progress, **kw))
    for f in tqdm([f for f in feats if f.kind == "binary"], desc="detect", disable=not progress):
        try:
            # The rows written to the summary and the report are exact; the rest of the full
            # ranking keeps the fast screen's numbers, its ``exact`` column says which.
            rankings[f.name] = rank_binary(store, values[f.name], name=f.name, exact=top, **kw)
        except ValueError as e:
            skipped[f.name] = str(e)
            log.warning("feature %s skipped: %s", f.name, e)
    order = [f for f in feats if f.name in rankings]
    frames = []
    for f in order:
        head = rankings[f.name].head(top).rename(columns={"kind": "neuron_kind"})
        head.insert(1, "feature_kind", f.kind)
        head.insert(2, "rank", np.arange(1, len(head) + 1))
        frames.append(head)
    summary = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # -- write ---------------------------------------------------------------------------------
    files: list[Path] = []

    def write(rel: str, text: str) -> None:
        path = out / rel
        atomic_write_text(path, text)
        files.append(path)

    write("summary.csv", _csv(summary))
    for nm, df in rankings.items():
        write(f"rankings/{_safe_name(nm)}.csv", _csv(df))
    sat = saturation(store, layers)
    write("saturation.csv", _csv(sat))
    sat_svg = saturation_svg(sat)
    write("saturation.svg", sat_svg if sat_svg.startswith("<svg") else "<svg/>")
    by_cat = loss_by_category(store, include_cold=include_cold)
    by_dist = loss_by_distance(store, include_cold=include_cold)
    write("loss_by_category.csv", _csv(by_cat))
    write("loss_by_distance.csv", _csv(by_dist))

    parts = [_REPORT_CSS, f"<h1>lstmscope detect · {html.escape(str(store.path.name))}</h1>"]
    cfg = store.meta.get("model", {})
    parts.append(
        '<p class="note">'
        + html.escape(
            f"{store.n:,} characters · {cfg.get('cell', '?')} {cfg.get('num_layers', '?')}x"
            f"{store.hidden_size} · layers {', '.join(map(str, store.layers))} · kinds "
            f"{', '.join(store.kinds)} · {len(store.neurons):,} neurons ranked · lstmscope "
            f"{__version__}"
        )
        + "</p>"
    )
    parts.append(
        '<p class="note">Binary features: score = average precision (AP) of the neuron (times its '
        "sign) as a detector, computed exactly from the stored column for the neurons shown here; "
        "AUROC of the same, and F1 and IoU at the neuron's best threshold (AP, F1 and IoU pass the "
        "sanity checks of neuron-explanation scores; AUROC flatters rare spans). In "
        "rankings/*.csv the other neurons carry the fast histogram screen's numbers (column "
        "exact). Graded features: score = |Pearson r|. sign −1: the neuron is low where the "
        "feature is on. Cold positions (the warm-up of each recording stream) are left out.</p>"
    )
    parts.append("<h2>Summary: the best neuron per feature</h2>")
    if order:
        best = pd.DataFrame(
            [
                {"feature": f.name, "kind": f.kind, "description": f.description,
                 "best neuron": rankings[f.name].iloc[0]["neuron"],
                 "score": float(rankings[f.name].iloc[0]["score"]),
                 "auroc": float(rankings[f.name].iloc[0].get("auroc", np.nan)),
                 "f1": float(rankings[f.name].iloc[0].get("f1", np.nan)),
                 "sign": int(rankings[f.name].iloc[0]["sign"]),
                 "runner-up": rankings[f.name].iloc[1]["neuron"] if len(rankings[f.name]) > 1
                 else ""}
                for f in order
            ]
        )  # fmt: skip
        parts.append(_table(best, list(best.columns)))
    for nm, why in skipped.items():
        parts.append(f'<p class="note">Skipped {html.escape(nm)}: {html.escape(why)}</p>')
    parts.append("<h2>Gate saturation</h2>")
    parts.append(
        '<p class="note">Each dot is one gate unit: how often it is below 0.1 (x) and above 0.9 '
        "(y), as in Karpathy et al. (2015), Fig. 3. Hover a dot for its id.</p>"
    )
    parts.append(sat_svg)
    for f in tqdm(order, desc="report", disable=not progress):
        df = rankings[f.name]
        parts.append(f'<section class="feature" id="f-{_safe_name(f.name)}">')
        parts.append(f"<h2>{html.escape(f.name)} <small>({f.kind})</small></h2>")
        parts.append(f'<p class="note">{html.escape(f.description)}</p>')
        cols = ["neuron", "score", "sign"] + (
            ["ap", "auroc", "f1", "iou", "mean_in", "mean_out"] if f.kind == "binary" else ["r"]
        )
        parts.append(_table(df.head(top), cols))
        if snippets:
            parts.append(_snippet(store, f.name, values[f.name], f.kind, df))
        parts.append("</section>")
    parts.append("<h2>Where the model pays</h2>")
    parts.append('<p class="note">Mean loss (bits per character) by what is being predicted.</p>')
    parts.append(_table(by_cat, ["category", "n", "mean_bits", "share"]))
    dist = by_dist[(by_dist["pair"] == "all") & (by_dist["n"] > 0)]
    parts.append('<p class="note">Closing brackets and quotes by the distance to their opener '
                 "(characters).</p>")  # fmt: skip
    parts.append(_table(dist, ["lo", "hi", "n", "mean_bits"]))
    doc = html_document("\n".join(parts), title=f"lstmscope detect · {store.path.name}")
    write("report.html", doc)
    seconds = time.perf_counter() - t0
    log.info("detect: wrote %s (%d files) in %.1f s", out, len(files), seconds)
    return DetectReport(out, summary, rankings, skipped, files, seconds)
