"""Contexts (top, bottom, quantile samples, deduplicated) and gate saturation."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from lstmscope.analysis.contexts import contexts, line_ids
from lstmscope.analysis.saturation import saturation
from lstmscope.export.card import card_fragment, context_records


def test_line_ids(planted_store):
    st = planted_store.store
    ids = line_ids(st)
    text = st.text
    assert ids[0] == 0
    nl = [i for i, c in enumerate(text) if c == "\n"]
    # A newline belongs to the line it ends; the next character starts a new line.
    assert ids[nl[0]] == 0 and ids[nl[0] + 1] == 1
    assert ids[-1] == text.count("\n", 0, len(text) - 1)
    assert line_ids(st) is ids  # cached


def test_contexts_of_the_digit_neuron(planted_store):
    st = planted_store.store
    df = contexts(st, "L0.c.0", k=6, width=20)
    assert list(df.columns) == ["group", "position", "value", "start", "stop", "text"]
    top, bottom = df[df.group == "top"], df[df.group == "bottom"]
    assert len(top) == 6 and len(bottom) == 6
    assert all(st.text[p].isdigit() for p in top.position)
    assert not any(st.text[p].isdigit() for p in bottom.position)
    assert top.value.is_monotonic_decreasing and bottom.value.is_monotonic_increasing
    values = st.neuron("L0.c.0")
    for r in df.itertuples():
        assert r.text == st.text[r.start : r.stop]
        assert r.start <= r.position < r.stop and r.stop - r.start <= 41
        assert r.value == pytest.approx(values[r.position])
        assert not st.cold[r.position]
    # Deduplicated: no two windows overlap, no two positions share a line.
    lines = line_ids(st)[df.position]
    assert len(set(lines)) == len(df)
    spans = sorted(zip(df.start, df.stop, strict=True))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    q = [g for g in df.group.unique() if g.startswith("q")]
    assert q == ["q0.10", "q0.30", "q0.50", "q0.70", "q0.90"]
    assert (df.groupby("group").size()[q] <= 2).all()
    # Quantile samples come from near their quantile of the warm values.
    warm = np.sort(values[~st.cold])
    for g in q:
        qv = float(g[1:])
        for v in df[df.group == g].value:
            rank = np.searchsorted(warm, v, side="right") / len(warm)
            assert abs(rank - qv) < 0.05 or np.sum(warm == v) / len(warm) > 0.05


def test_contexts_are_seeded_and_card_ready(planted_store):
    st = planted_store.store
    a = contexts(st, "L0.h.3", seed=1)
    b = contexts(st, "L0.h.3", seed=1)
    pd.testing.assert_frame_equal(a, b)
    recs = context_records(a)  # the export accepts the frame as it is
    assert len(recs) == len(a)
    html = card_fragment(st, "L0.h.3", a)
    assert "L0.h.3" in html


def test_contexts_short_text_and_errors(planted_store):
    st = planted_store.store
    df = contexts(st, "L0.c.1", k=10_000, width=2000, quantiles=())
    # Windows of 4001 characters cannot overlap: at most n / 4001 + 1 examples fit.
    assert len(df) <= 2 * (st.n // 4001 + 1)
    assert contexts(st, "L0.c.1", k=0, quantiles=()).empty
    with pytest.raises(ValueError):
        contexts(st, "L9.c.0")
    with pytest.raises(ValueError, match="quantiles"):
        contexts(st, "L0.c.0", quantiles=(1.5,))


@pytest.mark.slow  # trains the session's synthetic model (~30 s) if not yet
def test_saturation_matches_stats(planted_store, synthetic_store):
    st = planted_store.store
    df = saturation(st)
    assert list(df.columns) == ["neuron", "layer", "kind", "unit", "left", "right"]
    assert set(df.kind) == {"i", "f", "o"} and len(df) == 3 * st.hidden_size
    # The planted units' gates are pinned open (bias +10) or shut (-10).
    d = df.set_index("neuron")
    assert d.loc["L0.i.0", "right"] == pytest.approx(1.0)
    assert d.loc["L0.f.0", "left"] == pytest.approx(1.0)
    # Against the stored values directly (rounded to float16, as the histogram counts them).
    for nid in ("L0.f.5", "L0.o.3", "L0.i.7"):
        x = st.neuron(nid)[~st.cold].astype(np.float16)
        assert d.loc[nid, "left"] == pytest.approx(np.mean(x < 0.1), abs=1e-9)
        assert d.loc[nid, "right"] == pytest.approx(np.mean(x > 0.9), abs=1e-9)
    assert ((df.left + df.right) <= 1 + 1e-9).all()
    syn = saturation(synthetic_store.store, layers=[0])
    assert set(syn.layer) == {0}
    with pytest.raises(ValueError):
        saturation(st, layers=[3])
