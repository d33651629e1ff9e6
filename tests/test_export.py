"""Standalone HTML export: safety (escaping, no network), faithfulness, compactness, looks.

The output is parsed with ``html.parser.HTMLParser`` (not regexes) and checked as a browser
would see it: which elements exist, which attributes they carry, what text each coloured
character has and which colour class it got. One test opens the files in headless Chromium
with JavaScript disabled and offline, and reads the screenshot's pixels.
"""

from __future__ import annotations

import argparse
import functools
import html
import itertools
import logging
import math
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstmscope.analysis.contexts import contexts_from_values, stats_from_values
from lstmscope.export.card import context_records, export_card, rebin_hist, render_card
from lstmscope.export.colors import (
    COLORMAPS,
    DEFAULT_N_COLORS,
    SCALES,
    Scale,
    fmt_value,
    palette,
    quantize,
    robust_stats,
    scale_for,
    text_color,
)
from lstmscope.export.matches import export_find, render_matches
from lstmscope.export.notebook import NeuronView
from lstmscope.export.text import (
    export_range,
    html_document,
    render_text_html,
    visible_text,
    write_html,
)
from lstmscope.text.pattern import find_matches

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)

HOSTILE = (
    '<script>alert(1)</script> </span></div></pre> "><img src=x onerror=alert(1)> &amp; &lt;'
    " ' \" \x00\x01\x07\x1b[31m\x7f \x85 \u202eevil\u202c \ufeff tab\there\r\nwin\rmac\n"
    "emoji 😀👩‍💻 CJK 中文字 <!-- c --> <![CDATA[x]]> url(http://evil.example/x) @import 'y';\n"
    "  indented\n\n\nblank lines above\n"
)

CODE = '''import os, sys

def greet(name: str, times: int = 2) -> list[str]:
    """Say hello (politely) to [name]."""
    out = []
    for i in range(times):  # repeat a few times
        out.append("hello, %s! (%d)" % (name, i))
    return [s.upper() for s in out if s]


class Box(object):
    def __init__(self, items, label='box'):
        self.items = {k: v for k, v in enumerate(items)}
        self.label = "a 'quoted' label: " + label

    def __repr__(self):
        return f"Box({self.label!r}, n={len(self.items)})"


if __name__ == "__main__":
    print(greet(sys.argv[1] if len(sys.argv) > 1 else "world", times=3))
'''


# ----------------------------------------------------------------------------------------------
# A small DOM built with HTMLParser
# ----------------------------------------------------------------------------------------------

VOID = {"meta", "link", "br", "img", "input", "hr", "area", "base", "col", "embed", "source"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)
        ]

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def char_cells(self) -> list[tuple[str, Node]]:
        """Each character of the text with its innermost colour-class span (``c<k>``)."""
        out: list[tuple[str, Node]] = []

        def walk(node: Node, colour: Node | None) -> None:
            if any(re.fullmatch(r"c\d+", c) for c in node.classes):
                colour = node
            for c in node.children:
                if isinstance(c, str):
                    out.extend((ch, colour) for ch in c)
                else:
                    walk(c, colour)

        walk(self, None)
        return out


def colour_class(node: Node) -> int:
    return next(int(c[1:]) for c in node.classes if re.fullmatch(r"c\d+", c))


class Dom(HTMLParser):
    def __init__(self, doc: str):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root
        self.styles: list[str] = []
        self.feed(doc)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v or "") for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: (v or "") for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not self.root and node.tag != tag:
            node = node.parent
        assert node is not self.root, f"stray </{tag}>"
        assert node is self.cur, f"</{tag}> closes <{self.cur.tag}> too: unbalanced markup"
        self.cur = node.parent

    def handle_data(self, data):
        if self.cur.tag == "style":
            self.styles.append(data)
        self.cur.children.append(data)

    def handle_comment(self, data):
        raise AssertionError(f"an HTML comment appeared: {data[:40]!r}")

    def elements(self) -> list[Node]:
        return list(self.root.iter())[1:]


EXTERNAL = re.compile(r"https?:|//|url\s*\(|@import|javascript:", re.I)


def assert_standalone_and_safe(doc: str) -> Dom:
    dom = Dom(doc)
    tags = {n.tag for n in dom.elements()}
    forbidden = {"script", "img", "iframe", "object", "embed", "link", "base", "form", "frame"}
    assert not tags & forbidden, tags & forbidden
    assert "<script" not in doc.lower() and "<img" not in doc.lower()
    for n in dom.elements():
        for name, value in n.attrs.items():
            assert not name.startswith("on"), (n.tag, name)
            assert name not in ("src", "href", "srcset", "action", "xlink:href", "poster"), name
            assert not EXTERNAL.search(value), (n.tag, name, value)
    css = "".join(dom.styles)
    assert not EXTERNAL.search(css), EXTERNAL.search(css)
    return dom


# ----------------------------------------------------------------------------------------------
# A duck-typed stand-in for ActivationStore (until the real one lands)
# ----------------------------------------------------------------------------------------------


class FakeStore:
    def __init__(self, text: str, acts: dict[str, np.ndarray], *, with_hist: bool = True):
        self.text = text
        self.n = len(text)
        self._acts = {k: np.asarray(v, dtype=np.float32) for k, v in acts.items()}
        self.stats = pd.DataFrame({k: stats_from_values(v) for k, v in self._acts.items()}).T
        self.loss = np.full(self.n, np.nan, dtype=np.float32)
        if not with_hist:
            self.hist = None  # getattr(store, "hist") is None -> computed from the values
        self.window_calls: list[tuple[int, int]] = []

    def neuron(self, nid: str) -> np.ndarray:
        return self._acts[nid]

    def window(self, start: int, stop: int, neurons: list[str]) -> np.ndarray:
        self.window_calls.append((start, stop))
        return np.stack([self._acts[n][start:stop] for n in neurons], axis=1)

    def hist(self, nid: str, bins: int = 40):
        v = self._acts[nid]
        return np.histogram(v[np.isfinite(v)], bins=bins)


def quote_cell(text: str, rng: np.random.Generator) -> np.ndarray:
    """A planted "inside quotes" cell: +1 inside a string literal, -0.8 outside, smoothed."""
    inside = np.zeros(len(text))
    q = None
    for i, ch in enumerate(text):
        if q is None and ch in "\"'":
            q = ch
            inside[i] = 1
        elif q is not None:
            inside[i] = 1
            if ch == q:
                q = None
    target = np.where(inside > 0, 1.0, -0.8)
    out = np.empty(len(text))
    acc = 0.0
    for i, t in enumerate(target):
        acc = 0.6 * acc + 0.4 * t
        out[i] = acc
    return (out + rng.normal(0, 0.08, len(text))).astype(np.float32)


def demo_store(text: str = CODE * 3, *, with_hist: bool = True) -> FakeStore:
    rng = np.random.default_rng(0)
    n = len(text)
    depth = np.cumsum([1 if c in "([{" else -1 if c in ")]}" else 0 for c in text])
    col = np.zeros(n)
    for i in range(1, n):
        col[i] = 0 if text[i - 1] == "\n" else col[i - 1] + 1
    acts = {
        "L1.c.137": quote_cell(text, rng),
        "L1.c.42": (1.6 * depth - 0.8 + rng.normal(0, 0.15, n)),
        "L0.h.7": np.tanh(col / 25 - 1) + rng.normal(0, 0.05, n),
        "L1.f.3": 1 / (1 + np.exp(-(3 * np.sin(np.arange(n) / 9) + rng.normal(0, 1, n)))),
    }
    return FakeStore(text, acts, with_hist=with_hist)


def walk(n: int, seed: int = 0, phi: float = 0.995, sd: float = 0.05) -> np.ndarray:
    """A mean-reverting random walk: smoothly varying like a real cell state."""
    e = np.random.default_rng(seed).normal(0, sd, n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + e[i]
        out[i] = acc
    return out.astype(np.float32)


def text_nodes(dom: Dom) -> list[Node]:
    return [n for n in dom.elements() if {"txt", "row"} & set(n.classes)]


# ----------------------------------------------------------------------------------------------
# Colour scales
# ----------------------------------------------------------------------------------------------


def test_diverging_scale_is_symmetric_robust_and_odd():
    s = scale_for("L1.c.137", {"q01": -3.0, "q99": 1.5, "min": -40.0, "max": 9.0}, method="linear")
    assert (s.lo, s.hi, s.center, s.diverging) == (-3.0, 3.0, 0.0, True)
    assert s.n % 2 == 1 and s.n == DEFAULT_N_COLORS
    assert quantize(np.array([0.0]), s)[0] == s.n // 2  # 0 is the neutral middle
    assert scale_for("L0.h.1", None, n_colors=10).n == 11  # diverging stays odd
    # Fallbacks: min/max when quantiles are missing or zero; +-1 when nothing is known.
    lin = functools.partial(scale_for, method="linear")
    assert lin("L0.h.1", pd.Series({"min": -0.5, "max": 0.25})).hi == 0.5
    assert lin("L0.h.1", {"q01": 0.0, "q99": 0.0, "min": -2, "max": 1}).hi == 2.0
    assert lin("L0.g.1", {"q01": float("nan")}).hi == 1.0
    # Without statistics the default (quantile) scale falls back to linear, and says so.
    none = scale_for("L0.g.1", {"q01": float("nan")})
    assert none.method == "linear" and "no quantiles" in none.description


def test_gate_scale_is_sequential_on_unit_interval():
    s = scale_for("L1.f.3", {"q01": 0.4, "q99": 0.6}, method="linear")
    assert (s.lo, s.hi, s.diverging) == (0.0, 1.0, False)
    assert quantize(np.array([0.0, 0.999999, 1.0]), s).tolist() == [0, s.n - 1, s.n - 1]


def test_quantize_is_monotone_clips_and_has_a_nan_class():
    rng = np.random.default_rng(1)
    v = np.sort(np.concatenate([rng.normal(0, 3, 5000), [-np.inf, np.inf, 1e300, -1e300]]))
    pointwise = [scale_for("L1.c.1", {"q01": -2, "q99": 2}), scale_for("L1.i.1", None)]
    pointwise += [
        scale_for("L1.c.1", robust_stats(v[4:-4]), method=m) for m in ("quantile", "linear")
    ]
    pointwise += [scale_for("L1.i.1", None, method="logit")]
    pointwise += [scale_for("L1.c.1", None, method="window", values=v[4:-4])]
    for s in pointwise:
        c = quantize(v, s)
        assert np.all(np.diff(c) >= 0)
        assert c.min() == 0 and c.max() == s.n - 1
        assert quantize(np.array([np.nan]), s)[0] == s.nan_class == s.n


def test_colormap_names_and_unknown_name_error():
    for name in COLORMAPS:
        p = palette(name, 21)
        assert len(p) == 21 and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in p)
        assert scale_for("L1.c.1", None, colormap=name).name == name
    with pytest.raises(ValueError, match="choose one of RdBu, PuOr"):
        scale_for("L1.c.1", None, colormap="Jet")
    # Different palettes never share a CSS class name (two views on one notebook page).
    keys = {scale_for("L1.c.1", None, colormap=n).key for n in COLORMAPS}
    assert len(keys) == len(COLORMAPS)


def _contrast(a: str, b: str) -> float:
    def lum(h: str) -> float:
        c = [int(h[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        c = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    hi, lo = sorted([lum(a), lum(b)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_text_stays_readable_on_every_colour():
    for name in COLORMAPS:
        for bg in palette(name, 21):
            assert _contrast(bg, text_color(bg)) >= 4.5, (name, bg)  # WCAG AA
    assert text_color("#053061") == "#ffffff" and text_color("#f7f7f7") == "#000000"


# ----------------------------------------------------------------------------------------------
# Escaping and faithfulness
# ----------------------------------------------------------------------------------------------


def test_visible_text_escapes_only_controls():
    plain = "def f(x):\n\treturn '<b>' & \"😀中\"\n"
    assert visible_text(plain) == plain
    assert visible_text("\x00\x1b\r\n\x7f\x85\u202e\ufeff\x01") == (
        "\\0\\e\\r\n\\x7f\\x85\\u202e\\ufeff\\x01"
    )
    # Every control character becomes something visible, never a control character again.
    all_ctl = "".join(map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)]))
    shown = visible_text(all_ctl)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", shown)


@pytest.mark.parametrize("tooltips", ["char", "run", "none"])
def test_hostile_corpus_round_trips_as_text(tooltips):
    v = walk(len(HOSTILE), seed=3, sd=0.3)
    scale = scale_for("L1.c.137", robust_stats(v))
    doc = html_document(
        render_text_html(
            HOSTILE, v, scale, start=500, neuron_label="L1.c.137", tooltips=tooltips,
            title="<script>alert('title')</script>",
        ),
        title="</title><script>x</script>",
    )  # fmt: skip
    dom = assert_standalone_and_safe(doc)
    (node,) = text_nodes(dom)
    assert node.text() == visible_text(HOSTILE)
    assert node.text().count("\n") == HOSTILE.count("\n")  # \r\n is one line break
    # The escaped controls are marked as such.
    ctl = [n.text() for n in node.find_all(cls="ctl")]
    assert ctl[:5] == ["\\0", "\\x01", "\\a", "\\e", "\\x7f"]
    assert "\\x85" in ctl and "\\u202e" in ctl and ctl.count("\\r") == 2
    assert len(node.find_all(cls="nl")) == HOSTILE.count("\n")
    assert [n.text() for n in dom.root.find_all("title")] == ["</title><script>x</script>"]
    assert "<script>alert('title')</script>" in [n.text() for n in dom.root.find_all("h2")]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    text=st.text(min_size=1, max_size=80),
    seed=st.integers(0, 2**16),
    wrap=st.integers(1, 30),
)
def test_any_text_round_trips_and_classes_follow_values(text, seed, wrap):
    vals = np.random.default_rng(seed).normal(0, 1, (len(text), 2)).astype(np.float32)
    scales = [scale_for("L1.c.1", None), scale_for("L1.i.2", None)]
    one = Dom(render_text_html(text, vals[:, 0], scales[0], tooltips="run"))
    (node,) = text_nodes(one)
    assert node.text() == visible_text(text)
    two = Dom(render_text_html(text, vals, scales, neuron_label=["L1.c.1", "L1.i.2"], wrap=wrap))
    rows = text_nodes(two)
    for j in range(2):
        cells = [c for r in rows[j::2] for c in r.char_cells()]
        assert "".join(ch for ch, _ in cells) == visible_text(text)
        if visible_text(text) == text:  # one parsed character per position
            cls = [colour_class(span) for _, span in cells]
            assert cls == quantize(vals[:, j], scales[j]).tolist()


def test_stacked_rows_each_round_trip_and_align():
    text = HOSTILE * 2
    rng = np.random.default_rng(0)
    vals = rng.normal(0, 1, (len(text), 3)).astype(np.float32)
    ids = ["L0.h.1", "L1.c.2", "L1.o.3"]
    scales = [scale_for(i, robust_stats(vals[:, j])) for j, i in enumerate(ids)]
    doc = html_document(render_text_html(text, vals, scales, neuron_label=ids, wrap=17))
    dom = assert_standalone_and_safe(doc)
    rows = text_nodes(dom)
    assert len(rows) % 3 == 0
    for j, nid in enumerate(ids):
        mine = [r for r in rows if r.attrs["data-neuron"] == nid]
        assert rows[j::3] == mine  # neuron rows interleave: one line, repeated per neuron
        assert "".join(r.text() for r in mine) == visible_text(text)
    labels = [n.text() for n in dom.root.find_all(cls="lab")]
    assert labels[:3] == ids
    # Display lines are cut after each newline and every `wrap` characters.
    assert all("\n" not in r.text()[:-1] for r in rows)
    assert len(rows) // 3 >= len(text) / 17
    # The gate gets a different palette (its own CSS class) than the signed kinds.
    assert scales[2].key != scales[0].key and scales[2].key in rows[2].classes


def test_colour_class_of_each_character_is_monotone_in_its_activation():
    text = (CODE * 2).replace("'", '"')  # no escapes: one parsed character per position
    v = walk(len(text), seed=4, sd=0.2)
    v[::97] = np.nan
    scale = scale_for("L1.c.137", robust_stats(v), method="linear")  # runs long enough to merge
    for tooltips in ("char", "run"):
        dom = Dom(render_text_html(text, v, scale, start=1000, tooltips=tooltips))
        (node,) = text_nodes(dom)
        cells = node.char_cells()
        assert "".join(ch for ch, _ in cells) == text
        cls = np.array([colour_class(span) for _, span in cells])
        assert np.array_equal(cls, quantize(v, scale))
        fin = np.isfinite(v)
        order = np.argsort(v[fin], kind="stable")
        assert np.all(np.diff(cls[fin][order]) >= 0)
        assert np.all(cls[~fin] == scale.nan_class)
        if tooltips == "char":
            # Per-character titles: "position: value", positions counted from `start`.
            for i in (0, 97, 500, len(text) - 1):
                pos, val = cells[i][1].attrs["title"].split(": ")
                assert int(pos) == 1000 + i
                assert (
                    val == "no value"
                    if np.isnan(v[i])
                    else math.isclose(float(val), v[i], rel_tol=1e-3, abs_tol=1e-6)
                )
        else:
            # Runs are merged: neighbouring spans differ in class, titles give the range.
            spans = [n for n in node.find_all("span") if "title" in n.attrs]
            assert len(spans) < len(text) / 2
            assert all(colour_class(a) != colour_class(b) for a, b in itertools.pairwise(spans))
            first, last = spans[1].attrs["title"].split(": ")[0].split("–")
            assert int(first) == 1000 + len(spans[0].text())
            assert int(last) == int(first) + len(spans[1].text()) - 1


def test_auto_tooltips_by_size():
    text = "x" * 12_000
    smooth = np.linspace(-1, 1, len(text))
    s = scale_for("L1.c.1", None)
    assert "Hover a character" in render_text_html(text[:5000], smooth[:5000], s)
    assert "Hover a run" in render_text_html(text, smooth, s)
    noise = np.random.default_rng(0).normal(0, 1, 200_000)
    assert "Tooltips left out" in render_text_html("y" * 200_000, noise, s)
    with pytest.raises(ValueError, match="tooltips must be one of"):
        render_text_html(text, smooth, s, tooltips="js")
    with pytest.raises(ValueError, match="values must be"):
        render_text_html(text, smooth[:5], s)


@pytest.mark.parametrize("kind", ["smooth", "noise"])
def test_100k_characters_of_code_export_under_3mb(kind, caplog):
    caplog.set_level(logging.INFO)
    src = Path(argparse.__file__).read_text(encoding="utf-8")
    text = (src * (1 + 100_000 // len(src)))[:100_000]
    n = len(text)
    if kind == "smooth":
        v = walk(n, seed=5)
    else:
        v = np.random.default_rng(5).normal(0, 1, n).astype(np.float32)
    store = FakeStore(text, {"L1.c.137": v})
    doc = export_range(store, "L1.c.137", 0, n)
    size = len(doc.encode("utf-8"))
    log.info("%s: %.2f MB", kind, size / 1e6)  # shown with -rA
    assert size <= 3_000_000
    (node,) = text_nodes(assert_standalone_and_safe(doc))
    assert node.text() == visible_text(text)


# ----------------------------------------------------------------------------------------------
# Matches (--find)
# ----------------------------------------------------------------------------------------------


def test_render_matches_marks_each_match_in_its_context():
    text = HOSTILE + CODE
    v = walk(len(text), seed=6, sd=0.2)
    scale = scale_for("L1.c.1", robust_stats(v))
    matches = [(0, 8), (text.index("&amp;"), text.index("&amp;") + 5), (len(text) - 3, len(text))]
    doc = html_document(render_matches(text, v, scale, matches, context=10, start=7))
    dom = assert_standalone_and_safe(doc)
    rows = text_nodes(dom)
    assert len(rows) == 3
    for row, (a, b) in zip(rows, matches, strict=True):
        lo, hi = max(0, a - 10), min(len(text), b + 10)
        assert row.text() == visible_text(text[lo:hi])
        # Two cells: left context (right-aligned) | match + right context, so matches align.
        left, right = (c for c in row.children if isinstance(c, Node))
        assert left.classes == ["left"] and left.text() == visible_text(text[lo:a])
        (hit,) = row.find_all(cls="hit")
        assert right.children[0] is hit and hit.text() == visible_text(text[a:b])
        assert all("h" in s.classes for s in hit.find_all("span") if "title" in s.attrs)
    heads = [n.text() for n in dom.root.find_all(cls="num")]
    assert heads[:2] == ["#1", "@7"]
    with pytest.raises(ValueError, match="outside the text"):
        render_matches(text, v, scale, [(5, len(text) + 1)])


def test_find_matches_validates_patterns():
    text = "aaa bbb aaa " * 20
    spans, more = find_matches(text, r"a+", max_matches=5)
    assert spans[:2] == [(0, 3), (8, 11)] and len(spans) == 5 and more
    assert find_matches(text, "b+ a", max_matches=100) == (_all(text, "b+ a"), False)
    for bad, msg in [
        ("", "empty pattern"),
        ("(", "bad regular expression"),
        ("a*", "matches the empty string"),
        (r"\b", "matches empty text"),
        ("x" * 1001, "limit is 1000"),
    ]:
        with pytest.raises(ValueError, match=msg):
            find_matches(text, bad)
    # The regex timeout is what ends this; pytest-timeout catches a hang if it ever broke.
    with pytest.raises(ValueError, match="took longer than"):
        find_matches("a" * 5000 + "b", r"(a|aa)+$", timeout=0.2)


def _all(text: str, pattern: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(pattern, text)]


def test_export_find_on_a_store():
    store = demo_store()
    doc = export_find(store, ["L1.c.137", "L1.c.42"], r"self\.\w+", context=12, max_matches=4)
    dom = assert_standalone_and_safe(doc)
    hits = [h.text() for h in dom.root.find_all(cls="hit")]
    assert len(hits) == 8  # 4 matches x 2 neurons
    assert hits[0] == hits[1] and re.fullmatch(r"self\.\w+", hits[0])
    assert "4+ matches" in doc
    assert all(b - a <= 12 * 2 + 20 for a, b in store.window_calls)  # only windows were read
    none = export_find(store, "L1.c.137", "zzz_not_there")
    assert "No matches." in none
    with pytest.raises(ValueError, match="matches the empty string"):
        export_find(store, "L1.c.137", "x?")


# ----------------------------------------------------------------------------------------------
# Store entry points, card, notebook, writing
# ----------------------------------------------------------------------------------------------


def test_export_range_uses_the_stored_scale_and_validates():
    store = demo_store()
    doc = export_range(store, ["L1.c.137", "L1.f.3"], 10, 400, title="two <neurons>")
    dom = assert_standalone_and_safe(doc)
    assert dom.root.find_all("title")[0].text() == "two <neurons>"
    rows = text_nodes(dom)
    assert "".join(r.text() for r in rows[0::2]) == visible_text(store.text[10:400])
    assert "quantile colour scale" in doc  # the default, said in the header and each legend
    desc = [n.text() for n in dom.root.find_all(cls="scale-desc")]
    assert len(desc) == 2 and all("quantile scale: colour = rank among all of" in d for d in desc)
    lin = export_range(store, ["L1.c.137", "L1.f.3"], 10, 400, scale="linear")
    dom = assert_standalone_and_safe(lin)
    half = max(abs(store.stats.loc["L1.c.137", "q01"]), abs(store.stats.loc["L1.c.137", "q99"]))
    legend_ticks = [n.text() for n in dom.root.find_all("text")]
    assert f"≥{fmt_value(half)}" in legend_ticks  # the legend shows the stored robust range
    assert "1" in legend_ticks and "0" in legend_ticks  # the gate's [0, 1]
    assert "linear colour scale" in lin and "linear scale: colour = value" in lin
    with pytest.raises(ValueError, match="unknown scale 'log'"):
        export_range(store, "L1.c.137", 0, 10, scale="log")
    for bad in [(-1, 5), (5, 5), (0, store.n + 1)]:
        with pytest.raises(ValueError, match="not inside"):
            export_range(store, "L1.c.137", *bad)
    with pytest.raises(ValueError, match="narrower range"):
        export_range(store, "L1.c.137", 0, 100, max_chars=50)
    with pytest.raises(ValueError, match="bad neuron id"):
        export_range(store, "L1.x.1", 0, 10)
    with pytest.raises(ValueError, match="no neurons"):
        export_range(store, [], 0, 10)


@pytest.mark.parametrize("scale", SCALES)
def test_every_export_says_which_scale_colours_it(scale):
    store = demo_store()
    ids = ["L1.c.137", "L1.f.3"]
    doc = export_range(store, ids, 10, 400, scale=scale)
    dom = assert_standalone_and_safe(doc)
    assert f"{scale} colour scale" in doc  # the header
    desc = [n.text() for n in dom.root.find_all(cls="scale-desc")]
    assert len(desc) == 2 and all(" scale" in d for d in desc), desc
    # The colours are the library's for exactly the values shown.
    vals = store.window(10, 400, ids)
    rows = text_nodes(dom)
    for j, nid in enumerate(ids):
        sc = scale_for(nid, store.stats.loc[nid], method=scale, values=vals[:, j])
        cells = [c for r in rows[j::2] for c in r.char_cells()]
        assert [colour_class(span) for _, span in cells] == quantize(vals[:, j], sc).tolist()
    found = export_find(store, ids, r"self\.\w+", context=8, max_matches=3, scale=scale)
    assert f"{scale} colour scale" in found
    card = export_card(store, "L1.c.137", scale=scale)  # a card is never a window's
    want = "quantile" if scale in ("window", "diff", "detrend", "logit") else scale
    assert f"{want} scale" in card and "colour scale" in card  # logit: for gates only
    view = NeuronView(store, ids, 10, 400, scale=scale)
    assert view._repr_html_().count('class="scale-desc"') == 2


def test_card_with_contexts_from_values():
    store = demo_store(with_hist=False)
    v = store.neuron("L1.c.137")
    doc = export_card(store, "L1.c.137", k=5, context=20)
    dom = assert_standalone_and_safe(doc)
    assert "Highest activations" in doc and "Lowest activations" in doc
    hist = dom.root.find_all("svg", cls="hist")[0]
    assert len(hist.find_all("rect")) > 10
    stats_cells = [n.text() for n in dom.root.find_all("td")]
    assert stats_cells[:2] == ["mean", f"{float(np.mean(v.astype(np.float64))):.4g}"]
    rows = text_nodes(dom)
    top = rows[0]
    (hit,) = top.find_all(cls="hit")
    p = int(np.argmax(v))
    assert hit.text() == visible_text(store.text[p]) and f"@{p}" in doc
    assert top.text() == visible_text(store.text[max(0, p - 20) : p + 21])


def _f16_like_edges() -> np.ndarray:
    """A grid shaped like the store's cell histogram: fine near 0, coarse far out, +-65504."""
    pos = np.geomspace(1e-4, 65504, 990)
    return np.concatenate([-pos[::-1], [0.0], pos])


def test_card_histogram_from_a_store_like_grid_and_stats_row():
    edges = _f16_like_edges()
    rng = np.random.default_rng(8)
    v = rng.normal(0.5, 2.0, 20_000)
    counts, _ = np.histogram(v, bins=edges)
    shown, shown_edges = rebin_hist(counts, edges, float(v.min()), float(v.max()), bins=50)
    assert shown.sum() == counts.sum() and len(shown_edges) == 51
    assert shown_edges[0] == v.min() and shown_edges[-1] == v.max()
    assert abs(shown_edges[np.argmax(shown)] - 0.5) < 1.0  # the mode stays where it was
    auto, auto_edges = rebin_hist(counts, edges)  # range of the non-empty bins
    assert auto.sum() == counts.sum() and auto_edges[0] < -5 and auto_edges[-1] > 5
    coarse = (np.array([0, 3, 0, 5, 1, 0]), np.arange(7.0))  # already coarse: only trimmed
    assert [x.tolist() for x in rebin_hist(*coarse)] == [[3, 0, 5, 1], [1.0, 2, 3, 4, 5]]
    # A row like ActivationStore.stats: identity columns and NaN saturation for a non-gate.
    row = pd.Series({**stats_from_values(v), "layer": 1, "kind": "c", "unit": 9,
                     "sat_left": np.float32("nan"), "sat_right": np.nan, "count": 20_000})  # fmt: skip
    scale = scale_for("L1.c.9", row)
    snippet = {"start": 0, "stop": 3, "position": 1, "value": 0.2, "text": "a\x00b",
               "values": np.zeros(3, np.float32)}  # fmt: skip
    doc = html_document(render_card("L1.c.9", scale, [snippet], stats=row, hist=(counts, edges)))
    dom = assert_standalone_and_safe(doc)
    names = [n.text() for n in dom.root.find_all("td")][0::2]
    core = ["mean", "std", "min", "q01", "q05", "q25", "q50", "q75", "q95", "q99", "max"]
    assert names == [*core, "count"]
    bars = dom.root.find_all("svg", cls="hist")[0].find_all("rect")
    assert 30 < len(bars) <= 61  # frame + non-empty display bins, not ~2000 slivers
    ticks = [n.text() for n in dom.root.find_all("svg", cls="hist")[0].find_all("text")]
    assert ticks[0] == f"{v.min():.3g}" and ticks[4] == f"{v.max():.3g}"


def test_lone_surrogates_from_a_surrogatepass_text_are_escaped(tmp_path):
    # ActivationStore decodes text.txt with errors="surrogatepass": a lone surrogate can occur
    # and must neither reach the page raw nor break the UTF-8 write.
    text = "ok \ud800 and \udfff end"
    v = np.zeros(len(text), np.float32)
    doc = export_range(FakeStore(text, {"L0.h.0": v}), "L0.h.0", 0, len(text))
    path = write_html(tmp_path / "s.html", doc)
    (node,) = text_nodes(Dom(path.read_text(encoding="utf-8")))
    assert node.text() == "ok \\ud800 and \\udfff end" == visible_text(text)


def test_contexts_from_values_are_distinct_places():
    v = walk(5000, seed=7)
    ctx = contexts_from_values(v, k=6, context=30)
    top = [c for c in ctx if c["group"] == "top"]
    bottom = [c for c in ctx if c["group"] == "bottom"]
    assert top[0]["position"] == int(np.argmax(v)) and bottom[0]["position"] == int(np.argmin(v))
    for group in (top, bottom):
        pos = sorted(c["position"] for c in group)
        assert len(pos) == 6 and min(np.diff(pos)) > 30
    assert [c["value"] for c in top] == sorted((c["value"] for c in top), reverse=True)
    qs = [c for c in ctx if c["group"] == "quantile"]
    assert [c["label"] for c in qs] == ["q01", "q05", "q25", "q50", "q75", "q95", "q99"]
    assert all(c["start"] <= c["position"] < c["stop"] for c in ctx)
    assert contexts_from_values(np.full(10, np.nan)) == []


def test_card_takes_contexts_as_plain_data():
    store = demo_store()
    as_list = [
        {"group": "top", "start": 0, "stop": 30, "position": 4, "value": 1.5},
        {"group": "mine", "label": "odd one", "start": 50, "stop": 60, "position": 59,
         "value": -0.2},
    ]  # fmt: skip
    as_df = pd.DataFrame(as_list)
    as_map = {"top": [as_list[0]], "mine": [as_list[1]]}
    docs = [export_card(store, "L1.c.42", c) for c in (as_list, as_df, as_map)]
    assert docs[0] == docs[1]
    for doc in docs:
        dom = assert_standalone_and_safe(doc)
        hits = [h.text() for h in dom.root.find_all(cls="hit")]
        assert hits == [store.text[4], visible_text(store.text[59])]
        assert "Highest activations" in doc and ">mine<" in doc and "odd one" in doc
    with pytest.raises(ValueError, match="lacks position"):
        context_records([{"start": 0, "stop": 3, "value": 1.0}])
    with pytest.raises(ValueError, match="start <= position < stop"):
        context_records([{"start": 0, "stop": 3, "position": 3, "value": 1.0}])
    with pytest.raises(ValueError, match="outside the text"):
        export_card(store, "L1.c.42", [{"start": 0, "stop": store.n + 5, "position": 1,
                                          "value": 0}])  # fmt: skip
    with pytest.raises(ValueError, match="'text' and 'values'"):
        render_card("L1.c.42", scale_for("L1.c.42", None), as_list)


def test_fragments_are_scoped_for_notebooks():
    store = demo_store()
    view = NeuronView(store, ["L1.c.137", "L1.f.3"], 0, 300)
    frag = view._repr_html_()
    assert "<html" not in frag and "<!DOCTYPE" not in frag and frag.startswith("<style>")
    dom = assert_standalone_and_safe(frag)
    css = "".join(dom.styles)
    selectors = [s.strip() for rule in re.findall(r"([^{}]+)\{", css) for s in rule.split(",")]
    assert selectors and all(s.startswith(".lsx") for s in selectors), selectors
    rows = text_nodes(dom)
    assert "".join(r.text() for r in rows[0::2]) == visible_text(store.text[:300])
    assert NeuronView(store, "L1.c.137").stop == min(store.n, 2000)
    assert "NeuronView(L1.c.137" in repr(NeuronView(store, "L1.c.137"))


def test_write_html_is_atomic(tmp_path):
    store = demo_store()
    doc = export_range(store, "L1.c.137", 0, 200)
    path = write_html(tmp_path / "sub" / "out.html", doc)
    assert path.read_text(encoding="utf-8") == doc
    write_html(path, doc.replace("L1.c.137", "L1.c.137 again"))
    assert "again" in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.html"]  # no temp files left
    assert NeuronView(store, "L1.c.137", 0, 50).save(tmp_path / "v.html").exists()


def test_nan_values_are_hatched_and_titled():
    text = "abcdef"
    v = np.array([0.1, np.nan, np.nan, 0.2, np.nan, -0.1], dtype=np.float32)
    s = scale_for("L1.c.1", None)
    dom = Dom(render_text_html(text, v, s, tooltips="run"))
    (node,) = text_nodes(dom)
    nan_spans = [n for n in node.find_all("span") if colour_class(n) == s.nan_class]
    assert [n.text() for n in nan_spans] == ["bc", "e"]
    assert nan_spans[0].attrs["title"] == "1–2: no value"
    assert f".c{s.nan_class}{{background:repeating-linear-gradient" in "".join(dom.styles)


# ----------------------------------------------------------------------------------------------
# Headless Chromium: JavaScript off, offline, pixels
# ----------------------------------------------------------------------------------------------

SAVE = os.environ.get("LSTMSCOPE_SAVE_SCREENSHOTS") == "1"


def _views(store: FakeStore) -> dict[str, str]:
    return {
        "screenshot": export_range(store, "L1.c.137", 0, len(CODE), title="L1.c.137: a quote cell"),
        "stacked": export_range(
            store, ["L1.c.137", "L1.c.42", "L0.h.7", "L1.f.3"], 0, 420, title="Four neurons"
        ),
        "find": export_find(store, ["L1.c.137"], r"\"[^\"\n]+\"", context=24, max_matches=12),
        "card": export_card(store, "L1.c.137", k=4, context=30),
        "hostile": export_range(FakeStore(HOSTILE, {"L1.c.1": walk(len(HOSTILE))}), "L1.c.1",
                                0, len(HOSTILE)),
    }  # fmt: skip


@pytest.mark.browser
@pytest.mark.slow
def test_exports_render_offline_without_javascript(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    image = pytest.importorskip("PIL.Image")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    store = demo_store()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            ctx = browser.new_context(
                java_script_enabled=False, viewport={"width": 1100, "height": 760}
            )
            ctx.set_offline(True)
            requested: list[str] = []

            def route(r):
                requested.append(r.request.url)
                r.abort()

            ctx.route(re.compile(r"^(?!file:).*"), route)
            for name, doc in _views(store).items():
                path = write_html(tmp_path / f"{name}.html", doc)
                page = ctx.new_page()
                seen: list[str] = []
                page.on("request", lambda req, seen=seen: seen.append(req.url))
                page.goto(path.as_uri(), wait_until="load")
                png = page.screenshot(full_page=False)
                if name == "hostile":
                    # What the browser parsed is what we meant to show (CR, NUL, bidi, tags).
                    page_text = page.locator(".txt").inner_text()
                    assert page_text == visible_text(HOSTILE)
                if name in ("find", "card"):
                    # Within each list, the marked characters of all rows line up in one column.
                    for grid in page.locator(".kwic").all():
                        boxes = [h.bounding_box() for h in grid.locator(".hit").all()]
                        assert len({round(b["x"]) for b in boxes if b}) == 1, boxes
                page.close()
                assert requested == [], requested
                assert [u for u in seen if not u.startswith("file:")] == [], seen
                out = tmp_path / f"{name}.png"
                out.write_bytes(png)
                img = image.open(out).convert("RGB")
                px = np.asarray(img, dtype=np.int16)
                chroma = px.max(axis=2) - px.min(axis=2)  # 0 for white, black and greys
                coloured = float((chroma > 40).mean())
                assert coloured > 0.02, (name, coloured)
                if SAVE and name != "hostile":
                    dest = ROOT / "docs" / f"export-{name}.png"
                    dest.parent.mkdir(exist_ok=True)
                    dest.write_bytes(png)
            # Control: the same instrumentation does see a page that fetches something.
            bad = tmp_path / "control.html"
            bad.write_text('<img src="http://example.invalid/x.png"><p>x</p>', encoding="utf-8")
            page = ctx.new_page()
            page.goto(bad.as_uri(), wait_until="load")
            page.close()
            assert requested == ["http://example.invalid/x.png"]
        finally:
            browser.close()


def test_scale_dataclass_is_frozen():
    s = scale_for("L1.c.1", None)
    assert isinstance(s, Scale)
    with pytest.raises(AttributeError):
        s.lo = 3.0  # type: ignore[misc]
    assert html.escape(s.key) == s.key


def test_a_legend_says_when_the_quantile_scale_ranks_only_the_values_shown():
    """Stored quantiles that cannot rank (a saturated gate's float16 statistics all read 1.0;
    no statistics row) make the export rank the values shown, and its legend says that, not
    "rank among all of the neuron's values"."""
    store = demo_store()
    store.stats.loc["L1.f.3", ["min", "q01", "q05", "q25", "q50", "q75", "q95", "q99", "max"]] = 1.0
    store.stats = store.stats.drop(index="L1.c.42")
    doc = export_range(store, ["L1.f.3", "L1.c.42", "L1.c.137"], 10, 400)
    desc = [n.text() for n in assert_standalone_and_safe(doc).root.find_all(cls="scale-desc")]
    assert "L1.f.3's stored quantiles all read 1" in desc[0], desc[0]
    assert "no quantiles (no statistics)" in desc[1], desc[1]
    for d in desc[:2]:
        assert "quantile scale: colour = rank among the 390 values shown" in d and "all of" not in d
    assert "rank among all of L1.c.137's values" in desc[2]  # its statistics rank as before
