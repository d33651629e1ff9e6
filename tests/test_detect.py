"""``detect``: the report folder (CSV + standalone HTML) for the synthetic and planted stores."""

from __future__ import annotations

import csv
import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from lstmscope.analysis.features import Feature, parse_feature_spec
from lstmscope.detect import DEFAULT_FEATURES, detect
from lstmscope.export.report import saturation_svg


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)


@pytest.mark.slow
def test_detect_synthetic_report(synthetic_store, tmp_path, caplog):
    st = synthetic_store.store
    caplog.set_level("INFO", logger="lstmscope.detect")
    never = parse_feature_spec("tags=<[a-z]+>")  # never matches: skipped
    cmp_ops = parse_feature_spec("cmp=<=|>=")
    rep = detect(st, user_features=[never, cmp_ops, parse_feature_spec("paris=Paris|London")],
                 top=5, out=tmp_path / "rep")  # fmt: skip
    out = tmp_path / "rep"
    for name in ("report.html", "summary.csv", "saturation.csv", "saturation.svg",
                 "loss_by_category.csv", "loss_by_distance.csv", "rankings/in_url.csv",
                 "rankings/paris.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    assert "tags" in rep.skipped and "never on" in rep.skipped["tags"]
    assert any("wrote" in r.message for r in caplog.records)
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[:4]) == ["feature", "feature_kind", "rank", "neuron"]
    assert set(summary.feature) == set(DEFAULT_FEATURES) | {"paris", "cmp"}
    assert (summary.groupby("feature").size() == 5).all()
    url = summary[summary.feature == "in_url"].iloc[0]
    assert url["rank"] == 1 and url.auroc > 0.85
    full = pd.read_csv(out / "rankings" / "in_url.csv")
    assert len(full) == len(st.neurons)

    html = (out / "report.html").read_text(encoding="utf-8")
    p = _Tags()
    p.feed(html)
    assert "script" not in p.tags and "img" not in p.tags and "link" not in p.tags
    # Nothing fetched (xmlns is a name, not a request).
    assert not any(v and re.match(r"(https?:)?//", v) for k, v in p.attrs if k != "xmlns")
    assert "Content-Security-Policy" in html
    assert "svg" in p.tags and "circle" in p.tags  # the saturation plot is inline
    # Corpus text is escaped: the synthetic code has `<` and `>` operators, and the user
    # patterns appear only escaped.
    assert "/&lt;=|&gt;=/" in html and "<=|>=" not in html and "<[a-z]+>" not in html
    assert "&lt;" in html.split("Where the model pays")[0]
    for f in DEFAULT_FEATURES:
        assert f'id="f-{f}"' in html
    assert rep.summary.equals(rep.summary)  # plain data back
    assert rep.seconds > 0


def test_detect_planted_small(planted_store, tmp_path):
    st = planted_store.store
    odd = Feature("odd<&>", "odd positions <b>", "binary", lambda t: [i % 2 == 1 for i in
                                                                       range(len(t))])  # fmt: skip
    rep = detect(st, ["is_digit", "column"], user_features=[odd], top=3, out=tmp_path / "r",
                 snippets=True)  # fmt: skip
    best = rep.summary.groupby("feature").first()
    assert best.loc["is_digit", "neuron"] in ("L0.c.0", "L0.g.0", "L0.h.0")
    assert best.loc["column", "neuron"] == "L0.c.1"
    assert (tmp_path / "r" / "rankings" / "odd___.csv").is_file()
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "odd&lt;&amp;&gt;" in html and "odd positions &lt;b&gt;" in html
    with open(tmp_path / "r" / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 9
    with pytest.raises(ValueError, match="top"):
        detect(st, ["is_digit"], top=0, out=tmp_path / "x")
    with pytest.raises(ValueError, match="twice"):
        detect(st, ["is_digit"], user_features=[Feature("is_digit", "", "binary", len)],
               out=tmp_path / "x")  # fmt: skip
    with pytest.raises(Exception, match="unknown feature"):
        detect(st, ["nope"], out=tmp_path / "x")


def test_saturation_svg_empty_and_escaped():
    assert "No gates" in saturation_svg(pd.DataFrame(columns=["neuron", "layer", "kind"]))
    df = pd.DataFrame({"neuron": ["L0.f.1"], "layer": [0], "kind": ["f"], "unit": [1],
                       "left": [0.2], "right": [0.7]})  # fmt: skip
    svg = saturation_svg(df)
    assert svg.startswith("<svg") and "L0.f.1: left 0.200, right 0.700" in svg
