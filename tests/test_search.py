"""Select and match (LSTMVis, with suggested thresholds, tolerance, either polarity, the whole
corpus)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lstmscope.analysis.search import (
    match_spans,
    otsu_thresholds,
    select_neurons,
    suggest_threshold,
)


def _digit_runs(text: str, min_len: int = 3) -> list[tuple[int, int]]:
    pattern = r"(?<![0-9.])[0-9]{" + str(min_len) + r",}(?![0-9.])"
    return [m.span() for m in re.finditer(pattern, text)]


def test_otsu_finds_the_valley():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-0.6, 0.1, 9000), rng.normal(0.5, 0.1, 1000)])
    edges = np.linspace(-1, 1, 513)
    counts, _ = np.histogram(values, edges)
    t = otsu_thresholds(counts[None, :], edges, [values.min()], [values.max()])[0]
    assert -0.3 < t < 0.2
    # One value only: the threshold is that value, not an edge far away.
    one = np.zeros((1, 512))
    one[0, 300] = 50
    assert otsu_thresholds(one, edges, [0.17], [0.17])[0] == pytest.approx(0.17)


def test_suggested_threshold_splits_the_digit_neuron(planted_store):
    st = planted_store.store
    t = suggest_threshold(st, "L0.c.0")
    x = st.neuron("L0.c.0")
    digits = np.array([c.isdigit() for c in st.text])
    assert (x[digits] >= t).mean() > 0.99 and (x[~digits] < t).mean() > 0.99


def test_select_then_match_digit_runs(planted_store):
    st = planted_store.store
    runs = [r for r in _digit_runs(st.text) if r[0] > 200]
    a, b = runs[0]
    sel = select_neurons(st, a, b)
    assert list(sel.columns[:7]) == [
        "neuron", "score", "frac_on_inside", "frac_on_outside", "threshold", "sign", "passes"
    ]  # fmt: skip
    best = sel[sel.passes]
    assert {"L0.c.0", "L0.g.0", "L0.h.0"} <= set(best.neuron), sel.head(8)
    row = sel.set_index("neuron").loc["L0.c.0"]
    assert row.frac_on_inside == 1.0 and row.frac_on_outside == 0.0 and row.sign == 1
    assert sel.attrs["span"] == (a, b)

    planted = best[best.unit == 0]
    m = match_spans(st, planted)
    assert list(m.columns) == ["start", "stop", "length", "overlap", "score", "text"]
    assert len(m) == 20 and m.attrs["total"] >= len(runs) - 2
    assert all(t.isdigit() for t in m.text), m.text.tolist()
    assert not any(s < b and e > a for s, e in zip(m.start, m.stop, strict=True))  # excluded
    # Ranked by overlap x length similarity: same-length runs first.
    assert (m.length.iloc[:3] == b - a).all()
    assert m.score.is_monotonic_decreasing
    # The whole corpus, not a prefix: every digit run is found, up to the last one.
    allm = match_spans(st, planted, top=10_000, min_len=3)
    found = set(zip(allm.start, allm.stop, strict=True))
    last = max(r for r in runs if not st.cold[r[0] : r[1]].any())
    assert last in found and last[0] > 0.9 * st.n


def test_negative_polarity(planted_store):
    """A span without digits between digits: the digit neuron is *off* there."""
    st = planted_store.store
    text = st.text
    m = re.search(r"[0-9]{2}[a-z ]{6,12}[0-9]{2}", text[500:])
    assert m
    a = 500 + m.start() + 2
    b = 500 + m.end() - 2
    sel = select_neurons(st, a, b, margin=2).set_index("neuron")
    assert sel.loc["L0.c.0", "sign"] == -1 if "L0.c.0" in sel.index else True
    full = select_neurons(st, a, b, margin=2, top=10_000).set_index("neuron")
    assert full.loc["L0.c.0", "sign"] == -1
    assert full.loc["L0.c.0", "frac_on_inside"] == 1.0


def test_explicit_thresholds_and_tolerance(planted_store):
    st = planted_store.store
    a, b = _digit_runs(st.text)[3]
    strict = select_neurons(st, a, b, threshold=0.5, tolerance=0.0, top=10_000)
    assert (strict.threshold == 0.5).all()
    assert strict.passes.sum() <= select_neurons(st, a, b, threshold=0.5, tolerance=0.5,
                                                 top=10_000).passes.sum()  # fmt: skip
    per = select_neurons(st, a, b, threshold={"L0.c.0": 0.25}, top=10_000).set_index("neuron")
    assert per.loc["L0.c.0", "threshold"] == 0.25
    assert per.loc["L0.c.1", "threshold"] == pytest.approx(suggest_threshold(st, "L0.c.1"))
    m = match_spans(st, ["L0.c.0"], thresholds=[0.0], signs=[1], min_len=4, top=5)
    assert all(len(t) >= 4 and t.isdigit() for t in m.text)


def test_errors(planted_store):
    st = planted_store.store
    with pytest.raises(ValueError, match="span"):
        select_neurons(st, 10, 10)
    with pytest.raises(ValueError, match="span"):
        select_neurons(st, 0, st.n + 1)
    with pytest.raises(ValueError, match="tolerance"):
        select_neurons(st, 0, 10, tolerance=1.0)
    with pytest.raises(ValueError, match="whole text"):
        select_neurons(st, 0, st.n)
    with pytest.raises(ValueError, match="no neurons"):
        match_spans(st, [])
    with pytest.raises(ValueError, match="twice"):
        match_spans(st, ["L0.c.0", "L0.c.0"])
    with pytest.raises(ValueError, match="signs"):
        match_spans(st, ["L0.c.0"], signs=[2])
