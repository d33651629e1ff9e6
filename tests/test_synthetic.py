"""The synthetic corpus: deterministic, exactly sized, rich in the planted structure, and its
ground-truth labels agree exactly with ``lstmscope.analysis.features`` on the generated text."""

from __future__ import annotations

import numpy as np
import pytest

from lstmscope.analysis.features import FEATURES, compute
from lstmscope.text.labels import LABELS, SyntheticText
from lstmscope.text.planted import MAX_DEPTH, MAX_INDENT
from lstmscope.text.synthetic import generate


@pytest.fixture(scope="module")
def sample() -> SyntheticText:
    return generate(200_000, seed=0)


def spans(mask: np.ndarray) -> np.ndarray:
    """[start, stop) of each run of True, shape [K, 2]."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.stack((np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)), axis=1)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = generate(20_000, 3), generate(20_000, 3), generate(20_000, 4)
    assert a.text == b.text and a.text != c.text
    for name in LABELS:
        np.testing.assert_array_equal(a.labels[name], b.labels[name])


@pytest.mark.parametrize("n", [0, 1, 2, 79, 80, 81, 500, 4_321, 50_000])
def test_exact_length_ends_with_newline_and_labels_line_up(n):
    out = generate(n, seed=n)
    assert len(out.text) == len(out) == n
    assert n == 0 or out.text.endswith("\n")
    assert set(out.labels) == set(LABELS)
    for name, arr in out.labels.items():
        assert arr.shape == (n,), name
        assert arr.dtype == (np.bool_ if FEATURES[name].kind == "binary" else np.int32), name


def test_negative_length_is_an_error():
    with pytest.raises(ValueError, match="n_chars"):
        generate(-1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_labels_agree_exactly_with_features(seed):
    out = generate(200_000, seed)
    feats = compute(out.text, list(LABELS))
    for name in LABELS:
        bad = np.flatnonzero(out.labels[name] != feats[name])
        where = f"{out.text[max(bad[0] - 60, 0) : bad[0] + 20]!r}" if len(bad) else ""
        assert len(bad) == 0, f"seed {seed}: {name} differs at {len(bad)} positions: {where}"


def test_label_relations(sample):
    lab = sample.labels
    np.testing.assert_array_equal(lab["in_string"], lab["in_dquote"] | lab["in_squote"])
    assert not (lab["in_string"] & lab["in_comment"]).any()
    total = lab["depth_paren"] + lab["depth_square"] + lab["depth_curly"]
    np.testing.assert_array_equal(lab["depth_total"], total)
    newline = np.array([c == "\n" for c in sample.text])
    np.testing.assert_array_equal(lab["to_eol"] == 0, newline)


def test_planted_structure_is_all_there(sample):
    text, lab = sample.text, sample.labels
    # Brackets of every kind, nested to the maximum depth, and open across line ends.
    assert lab["depth_total"].max() == MAX_DEPTH
    for k in ("depth_paren", "depth_square", "depth_curly"):
        assert lab[k].max() >= 3, k
    newline = np.array([c == "\n" for c in text])
    assert (lab["depth_total"][newline] > 0).sum() > 50
    # Every indentation level, short and long lines.
    assert set(np.unique(lab["indent"])) == set(range(MAX_INDENT + 1))
    lengths = np.array([len(line) for line in text.split("\n") if line])
    assert lengths.min() <= 10 and np.percentile(lengths, 95) >= 100
    # All comment styles and docstrings; quotes, brackets and URLs inside strings and comments.
    for marker in ("# ", "// ", "/* ", '"""'):
        assert marker in text, marker
    multi_line_comment = lab["in_comment"] & newline
    assert multi_line_comment.any()
    assert (lab["in_dquote"] & newline).any()  # docstrings span lines
    hidden = lab["in_string"] | lab["in_comment"]
    assert any(text[i] in "()[]{}" for i in np.flatnonzero(hidden))
    assert (lab["in_url"] & lab["in_string"]).any() and (lab["in_url"] & lab["in_comment"]).any()
    # Prose: capitalised sentences and apostrophes that are not quotes.
    assert "don't" in text or "can't" in text or "it's" in text
    apostrophes = [i for i, c in enumerate(text) if c == "'" and text[i - 1].isalpha()]
    assert any(not lab["in_string"][i] for i in apostrophes)


def test_proportions_and_lengths_suit_a_small_model(sample):
    text, lab = sample.text, sample.labels
    assert 0.02 <= lab["in_url"].mean() <= 0.06
    assert 0.06 <= lab["in_comment"].mean() <= 0.14
    assert 0.1 <= lab["in_string"].mean() <= 0.4
    urls = spans(lab["in_url"])
    url_lengths = urls[:, 1] - urls[:, 0]
    assert url_lengths.min() >= 20 and url_lengths.max() <= 60
    for start, stop in urls[:50]:
        assert text[start:stop].startswith(("http://", "https://"))
    # Code strings (not docstrings, not prose quotes) mostly hold 5-40 characters.
    strings = spans(lab["in_string"])
    content = strings[:, 1] - strings[:, 0] - 2
    assert np.median(content) >= 5 and np.percentile(content, 90) <= 60
    assert set(text) <= {chr(i) for i in range(32, 127)} | {"\n"}
    assert len(set(text)) < 100


@pytest.mark.timeout(120)  # a hang guard; speed is reported by benchmarks, not asserted here
def test_two_million_characters():
    out = generate(2_000_000, seed=7)
    assert len(out.text) == 2_000_000
