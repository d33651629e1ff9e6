"""Probes (score vs units, control task) and ablation (the causal test), plus error analysis.

Measured on the session's synthetic store (tests/fixtures.py, seed 0):

- probe depth_total, layer 1 (h, c): R^2 0.26 with 1 unit, 0.28 with 4, 0.42 with all 128;
  shuffled-label control <= 0 throughout. Layer 0: 0.14 / 0.17 / 0.30.
- probe in_url, layer 1 (h): balanced accuracy 0.66 with 1 unit, 0.86 with 4, 0.95 with 8.
- ablating the best in_string cell (L1.c.62) over 20,000 held-out characters: +0.89 bits per
  closing quote; six random units of the same layer and kind: -0.21 on average, at most -0.05.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lstmscope.analysis.ablate import ablate, ablate_many, ablation_losses
from lstmscope.analysis.losses import (
    default_categories,
    loss_by_category,
    loss_by_distance,
    matching_pairs,
)
from lstmscope.analysis.probe import probe
from lstmscope.analysis.rank import feature_values, rank_feature
from lstmscope.model.trace import trace_ids
from lstmscope.text.synthetic import generate

# ----------------------------------------------------------------------------------------------
# Probes


def test_probe_planted_digit_lives_in_one_unit(planted_store):
    st = planted_store.store
    df = probe(st, feature_values(st, "is_digit"), kind="binary", layer=0, kinds=("c",),
               max_samples=4000)  # fmt: skip
    assert list(df.budget) == [1, 2, 4, 8]
    assert df.iloc[0].units == ["L0.c.0"]
    assert df.iloc[0].score > 0.99 and df.iloc[0].auroc > 0.999
    assert (df.control_score < 0.6).all() and df.iloc[0].selectivity > 0.35
    assert df.attrs["single_unit_share"] > 0.95
    assert df.metric.iloc[0] == "balanced_accuracy"


def test_probe_planted_counter_and_type_control(planted_store):
    st = planted_store.store
    col = feature_values(st, "column")
    df = probe(st, col, kind="graded", layer=0, kinds=("c",), control="type", max_samples=4000)
    assert df.iloc[0].units == ["L0.c.1"] and df.iloc[0].score > 0.9
    # The type control gives each character one random column value: reading the current
    # character (which c0 and the random units partly do) is all it can use.
    assert (df.control_score < 0.5).all()
    again = probe(st, col, kind="graded", layer=0, kinds=("c",), control="type", max_samples=4000)
    assert np.allclose(df.score, again.score) and np.allclose(df.control_score, again.control_score)
    with pytest.raises(ValueError, match="control"):
        probe(st, col, kind="graded", layer=0, control="nope", max_samples=2000)
    with pytest.raises(ValueError, match="constant"):
        probe(st, np.zeros(st.n), kind="graded", layer=0, max_samples=2000)


@pytest.mark.slow
def test_probe_recovers_bracket_depth(synthetic_store):
    st = synthetic_store.store
    depth = feature_values(st, "depth_total")
    df = probe(st, depth, kind="graded", layer=1, kinds=("h", "c"), max_samples=10_000)
    by = df.set_index("budget")
    assert by.loc[4, "score"] > 0.15, df
    assert by.loc[df.budget.max(), "score"] > 0.3
    assert (df.control_score < 0.05).all()
    assert (by.loc[[1, 4, 16], "selectivity"] > 0.12).all()
    assert df.score.iloc[-1] >= df.score.iloc[0] - 0.02  # more units never cost much
    assert df.attrs["n_train"] + df.attrs["n_test"] == 10_000


# ----------------------------------------------------------------------------------------------
# Ablation mechanics


def test_ablating_nothing_reproduces_the_model(planted_model):
    text = generate(3000, seed=5).text
    ids = planted_model.vocab.encode(text)
    ref = trace_ids(planted_model.model, ids)["loss"]
    loss = ablation_losses(planted_model.model, ids, [{}], chunk=700)
    assert np.isnan(loss[:, 0]).all()
    np.testing.assert_allclose(loss[0, 1:], ref[1:], atol=1e-5)
    assert np.array_equal(loss[0], loss[1], equal_nan=True)  # same code, same batch: exact
    # The step-by-step path (used inside a span) against the fused kernel.
    stepped = ablation_losses(planted_model.model, ids, [], span=(500, 1700), step_all=True,
                              chunk=700)  # fmt: skip
    np.testing.assert_allclose(stepped[0, 1:], ref[1:], atol=1e-4)


def test_ablation_goes_through_the_recurrence(planted_model):
    """Zeroing the counter's cell state in a span changes predictions after the span (its
    count restarts) until the next newline resets it; zeroing the memoryless digit cell changes
    only the predictions made from inside the span."""
    text = generate(3000, seed=6).text
    ids = planted_model.vocab.encode(text)
    a, b = 1000, 1040
    nl = text.index("\n", b + 5)  # the first newline after the span (and after a few chars)
    loss = ablation_losses(planted_model.model, ids, [{"L0.c.1": 0.0}, {"L0.c.0": 0.0},
                                                      {"L0.h.0": 0.0}], span=(a, b))  # fmt: skip
    base, counter, digit_c, digit_h = loss
    d = np.abs(counter - base)
    assert np.array_equal(base[: a + 1], counter[: a + 1], equal_nan=True)  # before: untouched
    assert d[a + 1 : b + 1].max() > 1e-3
    assert d[b + 1 : nl + 1].max() > 1e-3  # after the span: carried by c
    assert d[nl + 2 :].max() < 1e-5  # reset by the newline: no trace left
    for row in (digit_c, digit_h):
        changed = np.flatnonzero(np.abs(row - base) > 1e-6)
        assert changed.size and changed.min() >= a + 1 and changed.max() <= b


def test_ablate_modes_and_errors(planted_model):
    text = generate(2000, seed=7).text
    df = ablate(planted_model, text, ["L0.c.0"], span=(100, 900))
    assert list(df.columns) == ["category", "n", "loss", "loss_ablated", "delta"]
    allrow = df.set_index("category").loc["all"]
    assert allrow.n == 800  # predictions made from states 100..899
    clamp = ablate(planted_model, text, ["L0.c.0"], span=(100, 900), mode="clamp", value=1.0,
                   categories=["all"])  # fmt: skip
    mean = ablate(planted_model, text, ["L0.c.0", "L0.h.1"], mode="mean", categories=["all"])
    assert len(clamp) == 1 and len(mean) == 1
    same = ablate(planted_model, text, [], categories=["all"])
    assert same.delta.iloc[0] == 0.0
    cats = {"digits": np.array([c.isdigit() for c in text])}
    assert list(ablate(planted_model, text, ["L0.c.0"], categories=cats).category) == ["digits"]
    with pytest.raises(ValueError, match="value"):
        ablate(planted_model, text, ["L0.c.0"], mode="clamp")
    with pytest.raises(ValueError, match="mode"):
        ablate(planted_model, text, ["L0.c.0"], mode="shuffle")
    with pytest.raises(ValueError, match="layers"):
        ablate(planted_model, text, ["L3.c.0"])
    with pytest.raises(ValueError, match="units"):
        ablate(planted_model, text, ["L0.c.99"])
    with pytest.raises(ValueError, match="span"):
        ablate(planted_model, text, ["L0.c.0"], span=(10, 5000))


# ----------------------------------------------------------------------------------------------
# Ablation on the trained model: the causal test of the quote cell


@pytest.mark.slow
def test_ablating_the_quote_cell_hurts_closing_quotes(synthetic_model, synthetic_store):
    st = synthetic_store.store
    top = rank_feature(st, "in_string").iloc[0]
    rng = np.random.default_rng(0)
    others = [u for u in range(st.hidden_size) if u != top.unit]
    rand = rng.choice(others, 6, replace=False)
    conds = {"top": [top.neuron]} | {f"random {u}": [f"L{top.layer}.{top.kind}.{u}"] for u in rand}
    text = generate(20_000, seed=104).text
    torch.set_num_threads(1)
    df = ablate_many(synthetic_model.loaded, text, conds, categories=["all", "closing_quote"])
    delta = df[df.category == "closing_quote"].set_index("condition")["delta"]
    rand_deltas = delta.drop("top")
    assert delta["top"] > rand_deltas.max(), delta
    assert delta["top"] - rand_deltas.mean() > 0.2, delta
    assert delta["top"] > 0.2


# ----------------------------------------------------------------------------------------------
# Error analysis


def test_default_categories():
    text = "x = f(\"ab\", [1, (2)])  # c\ny = 'q'\n"
    c = default_categories(text)
    pos = lambda m: [i for i in np.flatnonzero(m)]  # noqa: E731
    assert pos(c["closing_dquote"]) == [text.index('",')]
    assert pos(c["opening_quote"]) == [text.index('"'), text.index("'")]
    assert pos(c["closing_squote"]) == [text.rindex("'")]
    assert pos(c["closing_bracket"]) == [m.start() for m in re.finditer(r"[)\]]", text)]
    assert pos(c["comment_end"]) == [text.index("\n")]
    assert c["all"].all() and c["newline"].sum() == 2


def test_matching_pairs_and_distance():
    text = "f(a, [b], \"x(y\") + g('zz')\n# (not code\n"
    m = matching_pairs(text)
    got = {(r.pair, r.open, r.close) for r in m.itertuples()}
    # The ( inside the string and the one in the comment do not count.
    assert got == {("()", 1, 15), ("[]", 5, 7), ('""', 10, 14), ("()", 20, 25), ("''", 21, 24)}
    loss = np.arange(len(text), dtype=float)
    df = loss_by_distance((text, loss), bins=(1, 4, 16))
    allrows = df[df.pair == "all"].set_index("lo")
    assert allrows.loc[1, "n"] == 2 and allrows.loc[4, "n"] == 3
    assert allrows.loc[4, "mean_bits"] == pytest.approx(np.mean([14, 15, 25]))


@pytest.mark.slow  # trains the session's synthetic model (~30 s) if not yet
def test_loss_by_category_on_store(synthetic_store):
    st = synthetic_store.store
    df = loss_by_category(st).set_index("category")
    warm = ~st.cold & np.isfinite(st.loss)
    assert df.loc["all", "n"] == warm.sum()
    assert df.loc["all", "mean_bits"] == pytest.approx(float(st.loss[warm].mean()), rel=1e-6)
    assert df.loc["all", "share"] == pytest.approx(1.0)
    d = loss_by_distance(st)
    assert set(d.pair) == {"()", "[]", "{}", '""', "''", "all"}
    assert d[d.pair == "all"].n.sum() > 100
    with pytest.raises(ValueError):
        loss_by_category(("ab", np.zeros(3)))
