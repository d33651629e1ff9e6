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

This module decides what goes in (it ranks; the analysis functions stay pure) and
:mod:`lstmscope.export.report` draws and writes it, every file atomically, so a report folder
never holds half a file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

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
from lstmscope.errors import StoreError
from lstmscope.export.report import (
    ReportContent,
    ReportFolder,
    report_html,
    safe_name,
    saturation_svg,
)
from lstmscope.store.streams import warm_note

log = logging.getLogger(__name__)

# Structural features: what Karpathy et al.'s interpretable cells track. Character classes
# (is_space, ...) are available by name but left out by default: every layer encodes the
# current character, so their top neurons say little.
DEFAULT_FEATURES = (
    "in_url", "in_dquote", "in_squote", "in_string", "in_comment", "depth_paren",
    "depth_square", "depth_curly", "depth_total", "indent", "column", "to_eol", "word_pos",
)  # fmt: skip


@dataclass
class DetectReport:
    """What :func:`detect` wrote and found."""

    out: Path
    summary: pd.DataFrame  # feature, kind, rank, neuron, score, sign, ap/auroc or r
    rankings: dict[str, pd.DataFrame] = field(repr=False)
    skipped: dict[str, str] = field(default_factory=dict)  # feature -> why
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Scope:
    """Which neurons and positions are ranked (``rank_many``/``rank_binary`` keywords)."""

    layers: Sequence[int] | None
    kinds: Sequence[str] | None
    include_cold: bool

    def kw(self) -> dict:
        return dict(layers=self.layers, kinds=self.kinds, include_cold=self.include_cold)


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


def _rank_graded(
    store, graded: dict[str, np.ndarray], scope: _Scope, progress: bool,
    rankings: dict[str, pd.DataFrame], skipped: dict[str, str],
) -> None:  # fmt: skip
    """Rank the graded features in one pass over the store, skipping the constant ones."""
    use = used_rows(store, scope.include_cold)
    ok = {}
    for nm, v in graded.items():
        if np.ptp(np.asarray(v, dtype=np.float64)[use]) == 0:
            skipped[nm] = f"constant on the {int(use.sum()):,} positions ranked"
            log.warning("feature %s is constant on the positions ranked; skipped", nm)
        else:
            ok[nm] = v
    if ok:
        log.info("ranking %d graded features in one pass", len(ok))
        rankings.update(rank_many(store, ok, kind="graded", progress=progress, **scope.kw()))


def _rank_all(
    store, feats: list[Feature], values: dict[str, np.ndarray], top: int, scope: _Scope,
    progress: bool,
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:  # fmt: skip
    """Every neuron's ranking per feature (graded ones first, in one pass), and why any
    feature was skipped."""
    from tqdm.auto import tqdm

    rankings: dict[str, pd.DataFrame] = {}
    skipped: dict[str, str] = {}
    graded = {f.name: values[f.name] for f in feats if f.kind == "graded"}
    if graded:
        _rank_graded(store, graded, scope, progress, rankings, skipped)
    for f in tqdm([f for f in feats if f.kind == "binary"], desc="detect", disable=not progress):
        try:
            # The rows written to the summary and the report are exact; the rest of the full
            # ranking keeps the fast screen's numbers, its ``exact`` column says which.
            rankings[f.name] = rank_binary(
                store, values[f.name], name=f.name, exact=top, **scope.kw()
            )
        except ValueError as e:
            skipped[f.name] = str(e)
            log.warning("feature %s skipped: %s", f.name, e)
    return rankings, skipped


def _summary(order: list[Feature], rankings: dict[str, pd.DataFrame], top: int) -> pd.DataFrame:
    """The top ``top`` neurons of every ranked feature, one row per feature and rank."""
    frames = []
    for f in order:
        head = rankings[f.name].head(top).rename(columns={"kind": "neuron_kind"})
        head.insert(1, "feature_kind", f.kind)
        head.insert(2, "rank", np.arange(1, len(head) + 1))
        frames.append(head)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _write_tables(folder: ReportFolder, summary: pd.DataFrame, rankings: dict) -> None:
    folder.write_csv("summary.csv", summary)
    for nm, df in rankings.items():
        folder.write_csv(f"rankings/{safe_name(nm)}.csv", df)


def _write_saturation_and_losses(
    store, folder: ReportFolder, scope: _Scope
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The gates' saturation and where the model pays its loss, written as CSV (and SVG);
    returned for the page."""
    sat = saturation(store, scope.layers)
    folder.write_csv("saturation.csv", sat)
    sat_svg = saturation_svg(sat)
    folder.write("saturation.svg", sat_svg if sat_svg.startswith("<svg") else "<svg/>")
    by_cat = loss_by_category(store, include_cold=scope.include_cold)
    by_dist = loss_by_distance(store, include_cold=scope.include_cold)
    folder.write_csv("loss_by_category.csv", by_cat)
    folder.write_csv("loss_by_distance.csv", by_dist)
    return sat_svg, by_cat, by_dist


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
    t0 = time.perf_counter()
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    out = Path(out)
    feats = _features(store, features, user_features)
    _check_warm(store)
    log.info("detect: %d features over %s (%d neurons)", len(feats), store.path,
             len(store.neurons))  # fmt: skip
    # Built-ins in one pass over the text (shared lexical scan), cached on the store.
    builtin = [f.name for f in feats if FEATURES.get(f.name) is f]
    if builtin:
        compute(store.text[:1], builtin)  # fail fast on a bad name before the long pass
    values = {f.name: feature_values(store, f) for f in feats}
    scope = _Scope(layers, kinds, include_cold)
    rankings, skipped = _rank_all(store, feats, values, top, scope, progress)
    order = [f for f in feats if f.name in rankings]
    summary = _summary(order, rankings, top)
    folder = ReportFolder(out)
    _write_tables(folder, summary, rankings)
    sat_svg, by_cat, by_dist = _write_saturation_and_losses(store, folder, scope)
    content = ReportContent(order, rankings, skipped, values, top, sat_svg, by_cat, by_dist)
    folder.write("report.html", report_html(store, content, snippets=snippets, progress=progress))
    seconds = time.perf_counter() - t0
    log.info("detect: wrote %s (%d files) in %.1f s", out, len(folder.files), seconds)
    return DetectReport(out, summary, rankings, skipped, folder.files, seconds)
