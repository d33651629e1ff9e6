"""The dashboard built in-process with ``make_document``, widgets driven from Python.

Stores are real: a random-weight LSTM (scaled up so gates saturate and cells grow) recorded
over the synthetic corpus, and over a hostile corpus full of markup, control characters and
emoji. Slow library calls run inline here (no server session), so every assertion sees the
finished view.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pytest
import torch
from bokeh.document import Document

from lstmscope.export.colors import quantize, scale_for
from lstmscope.export.text import visible_text
from lstmscope.model.cells import CharRNN, ModelConfig
from lstmscope.model.checkpoint import load_model, save_checkpoint
from lstmscope.store.reader import ActivationStore
from lstmscope.store.recorder import record
from lstmscope.text.synthetic import generate
from lstmscope.text.vocab import Vocab

HOSTILE_PIECE = (
    '<script>alert(1)</script> </span></div> "><img src=x onerror=alert(1)> &amp; &lt;\n'
    "\tdef f(x):\r\n\t\treturn {'a': [x]}  # tab-indented, CRLF\r\n"
    "emoji 😀👩\u200d💻 CJK 中文 bidi \u202eevil\u202c nul\x00 esc\x1b[31m lone\ud800 "
    "javascript:alert(1) <!-- c --> ${x} {{y}}\n"
)


def hostile_text(n: int = 3000) -> str:
    return (HOSTILE_PIECE * (n // len(HOSTILE_PIECE) + 1))[:n]


def synthetic_text(n: int = 12_000) -> str:
    return generate(n, seed=3).text


def build_store(out: Path, text: str, *, hidden: int = 16, layers: int = 2, seed: int = 0) -> Path:
    """Record ``text`` through a random-weight LSTM into ``out`` (trains nothing: seconds)."""
    torch.set_num_threads(1)
    out = Path(out)
    if (out / "meta.json").is_file():
        return out
    vocab = Vocab.from_text(text)
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=8, hidden_size=hidden, num_layers=layers)
    model = CharRNN(cfg)
    with torch.no_grad():  # livelier than the initial weights: saturating gates, larger cells
        for p in model.parameters():
            p.mul_(3.0)
    ckpt = out.parent / f"{out.name}.pt"
    save_checkpoint(
        ckpt, {"config": cfg.to_dict(), "vocab": list(vocab.chars), "model": model.state_dict()}
    )
    record(load_model(ckpt), text, out, streams=4, warmup=20, progress=False)
    return out


@pytest.fixture(scope="session")
def dash_store_dir(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("dash") / "synthetic", synthetic_text())


@pytest.fixture(scope="session")
def hostile_store_dir(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("dash") / "hostile", hostile_text())


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def open_shared(store_dir: Path):
    """A fixture body: the server's Shared over the store at ``store_dir``, closed after."""
    from lstmscope.server.shared import Shared

    s = Shared(ActivationStore.open(store_dir), workers=1)
    yield s
    s.close()


@pytest.fixture(scope="module")
def shared(dash_store_dir):
    yield from open_shared(dash_store_dir)


@pytest.fixture(scope="module")
def hostile_shared(hostile_store_dir):
    yield from open_shared(hostile_store_dir)


def page(shared, args: dict | None = None):
    from lstmscope.server.main import make_document

    doc = Document()
    enc = {
        k: [v.encode() if isinstance(v, str) else v for v in vs] for k, vs in (args or {}).items()
    }
    return make_document(doc, shared, args=enc)


def colours(app) -> list[str]:
    """The fill colour of every drawn cell, as the client's colour mapper computes it."""
    pal = app.text.fill_map.palette
    return [pal[int(k)] for k in np.asarray(app.text.source.data["cidx"])]


def all_html(doc: Document) -> str:
    """Every piece of HTML the page's Divs carry."""
    from bokeh.models import Div

    return "\n".join(m.text for m in doc.models if isinstance(m, Div))


# ----------------------------------------------------------------------------------------------
# Layout (presentation functions)
# ----------------------------------------------------------------------------------------------


def test_layout_keeps_lines_tabs_and_wide_characters():
    from lstmscope.server.components.textgrid import NEWLINE_MARK, TAB_MARK, char_cells

    c = char_cells("ab\tc\n\tx中y\r\nz", wrap=20, tab=4)
    assert c.line.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2]
    # the tab after "ab" reaches the stop at 4; the leading tab is a full stop wide
    assert c.col.tolist() == [0, 1, 2, 4, 5, 0, 4, 5, 7, 8, 10, 0]
    assert c.width.tolist() == [1, 1, 2, 1, 1, 4, 1, 2, 1, 2, 1, 1]
    assert c.glyph[2] == TAB_MARK and c.glyph[4] == NEWLINE_MARK and c.glyph[9] == "\\r"
    assert c.faint.tolist()[2] and c.faint.tolist()[4] and not c.faint.tolist()[9]
    assert c.line_start.tolist() == [0, 5, 11] and c.n_lines == 3


def test_layout_wraps_long_lines_and_escapes_controls():
    from lstmscope.server.components.textgrid import char_cells, describe_char, row_cells

    c = char_cells("x" * 25 + "\n", wrap=10)
    assert c.line.tolist() == [0] * 10 + [1] * 10 + [2] * 6
    assert c.col[25] == 5  # the ↵ stays on the last row
    c = char_cells("a\x00\u202e\ud800b", wrap=40)
    assert c.glyph == ["a", "\\0", "\\u202e", "\\ud800", "b"]
    assert c.width.tolist() == [1, 2, 6, 6, 1]
    col, _, glyph, faint = row_cells("a\n\tb")
    assert col.tolist() == [0, 1, 2, 3] and glyph[1] == "↵" and faint.tolist() == [0, 1, 1, 0]
    assert describe_char("\n") == "newline \\n" and describe_char("<") == "<  U+003C"
    assert describe_char("\ud800") == "\\ud800  U+D800"


def test_stacked_grid_repeats_each_line_per_lane():
    from lstmscope.server.components.textgrid import char_cells, grid

    c = char_cells("ab\ncd", wrap=10)
    g = grid(c, 3)
    # rows: line 0 -> 0, 1, 2 (lanes), separator 3; line 1 -> 4, 5, 6
    assert g["y"].reshape(3, 5)[:, 0].tolist() == [0, 1, 2]
    assert g["y"].reshape(3, 5)[:, 3].tolist() == [4, 5, 6]
    assert g["i"].tolist() == [0, 1, 2, 3, 4] * 3


def test_prediction_labels_format_every_float16_probability_as_printf_does():
    from lstmscope.server.components.textgrid import PERCENT, percent_index, prediction_labels

    p = np.arange(0, 2**16, dtype=np.uint16).view(np.float16)
    p = p[np.isfinite(p) & ~np.signbit(p) & (p <= 1)]  # every float16 probability
    got = [PERCENT[k] for k in percent_index(p)]
    assert len(p) == 15361 and got == [f"{float(x):.2f}" for x in p]
    assert PERCENT[percent_index(np.float16("-0"))] == "0.00"  # printf would say -0.00
    # a damaged store: what is no probability, or no character of the vocabulary, shows "?"
    bad = [np.nan, np.inf, 1.5, -0.25]
    assert [PERCENT[k] for k in percent_index(np.array(bad, dtype=np.float16))] == ["?"] * 4
    ids = np.array([[1, 2, 0], [7, -1, 2]])
    probs = np.array([[0.42, 1.0, 0.004], [0.5, 0.25, np.nan]], dtype=np.float16)
    assert prediction_labels(ids, probs, ["a", "\n", " "]) == [
        "↵ 0.42  ␣ 1.00  a 0.00",
        "? 0.50  ? 0.25  ␣ ?",
    ]


def test_colour_table_maps_classes_to_each_scale():
    from lstmscope.server.components.textgrid import color_index, color_table

    s1, s2 = scale_for("L0.c.1", {"q01": -2, "q99": 2}), scale_for("L0.f.1", None)
    values = np.array([[-5.0, 0.0], [0.0, 0.5], [np.nan, 1.0]])
    t = color_table([s1, s2, s1])
    idx = color_index(np.c_[values, values[:, 0]], [s1, s2, s1], t)
    assert [t.fill[k] for k in idx[:3]] == [s1.palette[0], s1.palette[10], "#d9d9d9"]
    assert [t.fill[k] for k in idx[3:6]] == [s2.palette[k] for k in quantize(values[:, 1], s2)]
    assert t.offsets[0] == t.offsets[2]  # a palette appears once however many lanes use it
    assert len(t.text) == len(t.fill)


# ----------------------------------------------------------------------------------------------
# The page, driven from Python
# ----------------------------------------------------------------------------------------------


def test_page_shows_a_window_coloured_by_the_neuron(shared):
    app = page(shared, {"neuron": ["L1.c.3"]})
    store = shared.store
    T = min(app.state.size, store.n)
    data = app.text.source.data
    assert len(data["x"]) == T and len(app.text.chars.data["ch"]) == T
    # every drawn colour is the export's colour class of the stored value, on the neuron's scale
    scale = scale_for("L1.c.3", store.stats.loc["L1.c.3"])
    expected = [scale.palette[k] for k in quantize(store.neuron("L1.c.3")[:T], scale)]
    assert colours(app) == expected
    np.testing.assert_array_equal(data["value"], store.window(0, T, ["L1.c.3"])[:, 0])
    assert app.url.query == "neuron=L1.c.3&start=0"
    assert app.message.text == "" and app.controls.unit.value == 3
    # the hover's top 5: each the character and its probability as "%.2f"
    vocab = store.meta["vocab"]
    show = {"\n": "↵", "\t": "⇥", " ": "␣"}
    for t in (1, 77, T - 1):
        want = "  ".join(
            f"{show.get(vocab[i], vocab[i])} {float(p):.2f}"
            for i, p in zip(store.top_ids[t], store.top_prob[t], strict=True)
        )
        assert app.text.chars.data["top5"][t] == want


def test_changing_the_unit_recolours_the_text(shared):
    app = page(shared, {"neuron": ["L1.c.3"]})
    before = colours(app)
    x_before = list(app.text.source.data["x"])
    app.controls.unit.value = 7
    assert app.state.primary == "L1.c.7" and app.controls.neuron.value == "L1.c.7"
    assert colours(app) != before
    assert list(app.text.source.data["x"]) == x_before  # same window: the layout stays
    np.testing.assert_array_equal(
        app.text.source.data["value"], shared.store.window(0, app.state.size, ["L1.c.7"])[:, 0]
    )
    app.controls.kind.value = "f"  # a gate: the sequential palette
    assert app.state.primary == "L1.f.7"
    assert set(colours(app)) <= set(scale_for("L1.f.7", None).palette)
    app.controls.layer.value = "0"
    assert app.state.primary == "L0.f.7" and "neuron=L0.f.7" in app.url.query
    assert app.card.neuron == "L0.f.7" and "L0.f.7" in app.card.title.text


@pytest.mark.parametrize(
    "typed, says",
    [
        ("L1.x.3", "bad neuron id"),
        ("L7.c.1", "no neuron L7.c.1"),
        ("L1.c.999", "no neuron L1.c.999"),
        ("<img src=x onerror=alert(1)>", "bad neuron id"),
        ("", "type a neuron id"),
        (", ".join(f"L0.h.{u}" for u in range(9)), "at most 8"),
    ],
)
def test_a_bad_neuron_id_gives_a_message_and_keeps_the_view(shared, typed, says):
    app = page(shared, {"neuron": ["L1.c.3"]})
    before = colours(app)
    app.controls.neuron.value = typed
    assert app.message.kind == "error" and says in html.unescape(app.message.root.text)
    assert "<img" not in app.message.root.text  # quoted input is escaped
    assert app.state.primary == "L1.c.3" and colours(app) == before
    app.controls.neuron.value = "L0.h.2"  # the session still works
    assert app.state.primary == "L0.h.2" and app.message.text == ""


def test_typed_list_stacks_neurons_in_rows_and_heatmap(shared):
    app = page(shared)
    app.controls.neuron.value = "L1.c.3, L0.h.1 L1.o.2"
    assert app.state.neurons == ("L1.c.3", "L0.h.1", "L1.o.2")
    T = min(app.state.size, shared.store.n)
    data = app.text.source.data
    assert len(data["x"]) == 3 * T and set(data["lane"]) == {0, 1, 2}
    lanes = np.asarray(data["lane"])
    np.testing.assert_array_equal(
        np.asarray(data["value"])[lanes == 1], shared.store.window(0, T, ["L0.h.1"])[:, 0]
    )
    assert set(app.text.gutter.data["text"]) == {"L1.c.3", "L0.h.1", "L1.o.2"}
    assert app.heatmap.source.data["image"][0].shape == (3, T)
    assert app.heatmap.figure.yaxis.major_label_overrides == {0: "L1.c.3", 1: "L0.h.1", 2: "L1.o.2"}
    assert app.url.query.startswith("neuron=L1.c.3&neuron=L0.h.1&neuron=L1.o.2&")
    # picking another neuron keeps the pinned ones stacked under it
    app.controls.unit.value = 9
    assert app.state.neurons == ("L1.c.9", "L0.h.1", "L1.o.2")
    app.clear_stack()
    assert app.state.neurons == ("L1.c.9",)
    app.pin()
    app.controls.unit.value = 10
    assert app.state.neurons == ("L1.c.10", "L1.c.9")


def test_out_of_range_position_gives_a_message(shared):
    app = page(shared)
    n = shared.store.n
    for typed, says in [
        (str(n), "outside the text"),
        ("-1", "outside the text"),
        ("12x", "not a whole number"),
    ]:
        app.controls.goto.value = typed
        assert app.message.kind == "error" and says in app.message.text, typed
        assert app.state.start == 0
    app.controls.goto.value = "9,000"
    assert app.state.start <= 9000 < app.state.stop and app.message.text == ""
    assert app.focus == (9000, 9001)
    marks = app.text.marks.data
    assert "#9400d3" in marks["color"]  # the target character is outlined
    yr = app.text.figure.y_range
    row = int(app.text.cells.line[9000 - app.state.start])
    assert yr.end < row < yr.start  # and scrolled into view
    assert app.controls.goto.value == ""


def test_paging_moves_through_the_whole_corpus(shared):
    app = page(shared, {"size": ["4000"]})
    n = shared.store.n
    assert app.controls.prev_page.disabled
    starts = [app.state.start]
    while not app.controls.next_page.disabled:
        app.page(+1)
        starts.append(app.state.start)
    assert starts == list(range(0, n, 4000))
    assert len(app.text.source.data["x"]) == n - starts[-1]
    assert app.controls.page_info.text.endswith(f"of {n:,}")
    app.page(-1)
    assert app.state.start == starts[-2]
    app.controls.page_size.value = "1000"
    assert app.state.size == 1000 and len(app.text.source.data["x"]) == 1000
    assert "size=1000" in app.url.query


def test_deep_link_opens_the_view_it_names(shared):
    app = page(
        shared,
        {"neuron": ["L0.h.5", "L1.c.2"], "start": ["3000"], "size": ["1000"], "feature": ["depth_total"],
         "find": ["def"]},
    )  # fmt: skip
    s = app.state
    assert (s.neurons, s.start, s.size, s.feature, s.find) == (
        ("L0.h.5", "L1.c.2"),
        3000,
        1000,
        "depth_total",
        "def",
    )
    assert app.message.text == ""
    assert app.text.gutter.data["text"][:3] == ["L0.h.5", "L1.c.2", "depth_total"]
    assert app.controls.unit.value == 5 and app.controls.feature.value == "depth_total"
    assert app.controls.page_info.text.startswith("characters 3,000–4,000")
    assert app.url.query == (
        "neuron=L0.h.5&neuron=L1.c.2&start=3000&size=1000&feature=depth_total&find=def"
    )
    # the feature lane shows the library's feature over the window
    from lstmscope.analysis.features import compute

    lanes = np.asarray(app.text.source.data["lane"])
    want = compute(shared.text, ["depth_total"])["depth_total"][3000:4000]
    np.testing.assert_array_equal(np.asarray(app.text.source.data["value"])[lanes == 2], want)
    # find ran without moving the linked window; matches inside it are outlined
    assert app.matches and app.state.start == 3000
    assert "#ff7f0e" in app.text.marks.data["color"] or not any(
        3000 <= a < 4000 for a, _ in app.matches
    )


@pytest.mark.parametrize(
    "args, says",
    [
        ({"start": ["-5"]}, "outside the text"),
        ({"start": ["10000000"]}, "outside the text"),
        ({"start": ["abc"]}, "not a whole number"),
        ({"neuron": ["L1.q.3"]}, "bad neuron id"),
        ({"neuron": ["L5.c.3"]}, "no neuron L5.c.3"),
        ({"size": ["7"]}, "size 7"),
        ({"feature": ["../../etc/passwd"]}, "not a built-in feature"),
        ({"neuron": ["x" * 5000]}, "longer than"),
    ],
)
def test_bad_deep_link_fields_are_reported_and_replaced_by_defaults(shared, args, says):
    app = page(shared, args)
    assert app.message.kind == "warn" and says in html.unescape(app.message.text)
    assert app.state.start == 0 and app.state.size == 2000 and len(app.text.source.data["x"])


def test_no_url_field_names_a_file(shared, tmp_path):
    # Unknown fields (a store path, a file to read) are ignored: the store is fixed at start.
    app = page(shared, {"store": [str(tmp_path)], "path": ["/etc/passwd"], "file": ["/etc/hosts"]})
    assert app.shared.store.path == shared.store.path and app.message.kind == "info"
    assert app.message.text.startswith("Opened on ")  # says why it opened on that neuron
    assert "etc" not in app.url.query


def test_find_literal_regex_and_navigation(shared):
    app = page(shared, {"size": ["1000"]})
    text = shared.text
    app.controls.find.value = "(x"  # literal: brackets are just text
    want = [i for i in range(len(text)) if text.startswith("(x", i)]
    assert [a for a, _ in app.matches] == want and app.match_i == 0
    assert app.focus == (want[0], want[0] + 2) and app.state.start <= want[0] < app.state.stop
    assert app.controls.find_info.text == f"match 1 / {len(want)}"
    app.next_match(+1)
    assert app.focus == (want[1], want[1] + 2) and "#d62728" in app.text.marks.data["color"]
    app.next_match(-1)
    app.next_match(-1)  # wraps round to the last match, paging there
    assert app.focus[0] == want[-1] and app.state.start <= want[-1] < app.state.stop
    app.controls.find_regex.active = [0]  # now "(x" is a bad regular expression
    assert app.message.kind == "error" and "bad regular expression" in app.message.text
    assert app.matches == []
    app.controls.find.value = r"\d{3,}"
    assert app.message.kind != "error" and all(text[a:b].isdigit() for a, b in app.matches)
    assert "regex=1" in app.url.query
    app.controls.find.value = "no such text anywhere ~~~"
    assert app.controls.find_info.text == "no matches"
    app.controls.find.value = ""
    assert app.matches == [] and "find=" not in app.url.query


def test_feature_track_adds_a_lane_and_ranks(shared):
    app = page(shared)
    app.controls.feature.value = "in_string"
    assert app.state.feature == "in_string" and app.text.lane_names == [
        app.state.primary,
        "in_string",
    ]
    assert "string" in app.controls.feature_info.text
    ranked = app.rank.source.data["neuron"]
    assert ranked and "in_string" in app.rank.title.text
    app.rank.source.selected.indices = [1]  # click the second row
    assert app.state.primary == ranked[1]
    app.controls.feature.value = "(none)"
    assert app.state.feature is None and len(app.text.lane_names) == 1


def test_neuron_card_stats_histogram_and_contexts(shared):
    app = page(shared, {"neuron": ["L1.c.4"]})
    card = app.card
    stats = shared.store.stats.loc["L1.c.4"]
    assert f"{stats['q99']:.4g}" in card.stats.text and "L1.c.4" in card.title.text
    counts, _ = shared.store.hist("L1.c.4")
    assert sum(card.hist_source.data["top"]) == counts.sum()
    assert card.row_positions, card.note.text
    # every snippet's marked character is its context's position, coloured like the text view
    src = card.source.data
    for r, p in enumerate(card.row_positions):
        assert p in np.asarray(src["pos"])[np.asarray(src["row"]) == r]
    groups = {t for t in card.labels.data["text"] if not t[0].isdigit() and t[0] != "-"}
    assert {"Highest activations", "Lowest activations"} <= groups
    # the sampled contexts replaced the recorded ones
    assert any(t.startswith("Sample at quantile") for t in groups), groups
    # clicking a snippet jumps there
    target = card.row_positions[-1]
    last_row = np.flatnonzero(np.asarray(src["row"]) == len(card.row_positions) - 1)
    card.source.selected.indices = [int(last_row[0])]
    assert app.focus == (target, target + 1) and app.state.start <= target < app.state.stop


def test_gate_saturation_points_select_their_neuron(shared):
    app = page(shared)
    sat = app.saturation
    gates = [n for n in shared.store.neurons if n.split(".")[1] in "ifo"]
    shown = [n for src in sat.sources.values() for n in src.data["neuron"]]
    assert sorted(shown) == sorted(gates)
    src = sat.sources[1]
    nid = src.data["neuron"][3]
    row = shared.store.stats.loc[nid]
    assert src.data["left"][3] == pytest.approx(row["sat_left"])
    assert src.data["right"][3] == pytest.approx(row["sat_right"])
    src.selected.indices = [3]  # click the point
    assert app.state.primary == nid
    assert sat.current[1].data["left"] == [src.data["left"][3]]  # and it is ringed


def test_select_a_span_then_find_neurons_and_matches(shared):
    app = page(shared, {"neuron": ["L1.c.1"]})
    text = shared.text
    a = text.index("(")
    b = text.index(")", a) + 1
    # a tap on the first character, a shift-tap on the last (indices are drawn cells)
    app.text.source.selected.indices = [a, b - 1]
    assert app.selection == (a, b)
    assert html.escape(visible_text(text[a:b])) in app.select.info.text
    assert not app.select.run.disabled
    assert "#111111" in app.text.marks.data["color"]
    app.find_neurons()
    neurons = app.select.neurons.data["neuron"]
    assert neurons, app.select.status.text
    assert len(app.select.matches.data["start"]) > 0
    app.select.neurons.selected.indices = [0]
    assert app.state.primary == neurons[0]
    s0, e0 = app.select.matches.data["start"][-1], app.select.matches.data["stop"][-1]
    app.select.matches.selected.indices = [len(app.select.matches.data["start"]) - 1]
    assert app.focus == (s0, e0)


def test_export_sends_a_standalone_html_file(shared):
    app = page(shared, {"neuron": ["L1.c.3", "L0.h.1"], "start": ["1000"], "size": ["1000"]})
    app.export()
    data = app.download.source.data
    assert data["name"] == ["lstmscope-L1.c.3-1000-2000.html"]
    doc = data["html"][0]
    assert doc.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in doc
    assert 'data-neuron="L1.c.3"' in doc and 'data-neuron="L0.h.1"' in doc
    assert "exported" in app.message.text


def test_hostile_corpus_is_only_ever_text(hostile_shared):
    import json

    from bokeh.embed.util import standalone_docs_json

    app = page(hostile_shared, {"neuron": ["L1.h.3", "L0.c.2"], "feature": ["in_string"]})
    text = hostile_shared.text
    # select the "<script>" span, and find the img payload
    a = text.index("<script>")
    app.text.source.selected.indices = [a, a + 7]
    app.controls.find.value = '"><img src=x onerror=alert(1)>'
    assert app.matches and app.message.text == ""
    app.export()
    doc = app.doc
    markup = all_html(doc)
    for bad in ("<script", "<img", "onerror=alert(1)>", "\u202e", "\x00", "\ud800"):
        assert bad not in markup, bad
    assert "&lt;script&gt;" in app.select.info.text
    # the whole document (what goes to the browser) serialises: no lone surrogate breaks it
    json.dumps(standalone_docs_json([doc]), ensure_ascii=False).encode("utf-8")
    glyphs = app.text.source.data["glyph"]
    assert "\\r" in glyphs and "\\u202e" in glyphs and "\\ud800" in glyphs and "\r" not in glyphs
    assert "<" in glyphs  # drawn as canvas text, one character per cell
    exported = app.download.source.data["html"][0]
    assert "<script>alert" not in exported and "<img" not in exported and "&lt;" in exported


def test_a_burst_of_user_actions_is_one_redraw(shared, monkeypatch):
    """On a server, actions wait for the next tick and merge: a burst of a hundred spinner
    changes is one redraw of the last, page clicks add up, a unit change, a jump and a page size
    queued together are one redraw of all three, and after a redraw the next batch waits as long
    as it took (at most COOLDOWN_MAX_S). Checked by hand-running the queued callbacks."""
    from bokeh.events import ButtonClick

    import lstmscope.server.runner as main
    from lstmscope.server.main import make_document

    # On a server (callbacks on its loop, jobs on its pool) actions are coalesced; built
    # directly, as these tests do, each applies at once.
    assert make_document(Document(), shared, args={}, inline=False).coalesce
    app = page(shared, {"neuron": ["L1.c.0"], "size": ["1000"]})
    assert not app.coalesce
    app.coalesce = True  # as on a server
    ticks: list = []
    waits: list[float] = []
    monkeypatch.setattr(app.doc, "add_next_tick_callback", lambda f: ticks.append(f))
    monkeypatch.setattr(
        app.doc, "add_timeout_callback", lambda f, ms: (ticks.append(f), waits.append(ms))
    )
    drawn: list = []
    render = app._render
    monkeypatch.setattr(app, "_render", lambda old, new: (drawn.append(new), render(old, new)))

    clock = [1000.0]  # a redraw takes no time unless a test says so
    monkeypatch.setattr(main, "_now", lambda: clock[0])

    def run_ticks() -> None:
        while ticks:
            ticks.pop(0)()

    H = int(app.controls.unit.high) + 1
    for k in range(1, 101):
        app.controls.unit.value = k % H
    assert drawn == [] and len(ticks) == 1  # nothing drawn yet, one flush queued
    run_ticks()
    last = f"L1.c.{100 % H}"
    assert [s.primary for s in drawn] == [last] and app.coalesced == 99
    assert app.controls.neuron.value == last

    drawn.clear()
    nxt, prev = app.controls.next_page, app.controls.prev_page
    for button in (nxt, nxt, nxt, prev):
        button._trigger_event(ButtonClick(button))
    run_ticks()
    assert [s.start for s in drawn] == [2000]  # +3 -1 pages, one redraw

    drawn.clear()
    app.controls.unit.value = 7
    app.controls.goto.value = "5,500"
    app.controls.page_size.value = "2000"
    assert waits == []  # the last flush took no (fake) time: no cool-down
    run_ticks()
    assert len(drawn) == 1
    s = drawn[0]
    assert (s.primary, s.size) == ("L1.c.7", 2000) and s.start <= 5500 < s.start + s.size

    # A batch that took 0.3 s: the next waits 0.3 s; one that took 2 s: at most COOLDOWN_MAX_S.
    for u, took, wait_s in ((11, 0.3, 0.3), (13, 2.0, main.COOLDOWN_MAX_S)):
        app.controls.unit.value = u

        def slow(old, new, t=took) -> None:  # a redraw that takes t seconds
            clock[0] += t

        monkeypatch.setattr(app, "_render", slow)
        ticks.pop()()
        app.controls.unit.value = u + 1
        assert len(ticks) == 1 and waits[-1] == pytest.approx(wait_s * 1e3)
        clock[0] += wait_s
        ticks.pop()()


def test_sessions_share_one_store_and_cache(shared):
    a, b = page(shared), page(shared)
    assert a.shared.store is b.shared.store
    a.controls.feature.value = "depth_total"
    b.controls.feature.value = "depth_total"
    assert a.shared.feature("depth_total") is b.shared.feature("depth_total")


def test_memo_computes_each_key_once_across_threads():
    import threading
    import time

    from lstmscope.server.runner import Memo

    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)
        return object()

    memo, out = Memo(4), []
    threads = [threading.Thread(target=lambda: out.append(memo.get("k", slow))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(o) for o in out}) == 1
    with pytest.raises(ZeroDivisionError):
        memo.get("bad", lambda: 1 / 0)
    assert memo.get("bad", lambda: 2) == 2  # failures are not cached


def test_a_bug_in_a_callback_is_reported_not_fatal(shared, caplog, monkeypatch):
    app = page(shared)
    monkeypatch.setattr(app.text, "update", lambda state: 1 / 0)
    app.controls.unit.value = 11
    assert app.message.kind == "error" and "internal error" in app.message.text
    assert "ZeroDivisionError" in caplog.text
    monkeypatch.undo()
    app.controls.unit.value = 12
    assert app.message.text == "" and app.state.primary.endswith(".12")


# ----------------------------------------------------------------------------------------------
# The server (lstmscope.server.serve): binding, origins, refusing bad input before it starts
# ----------------------------------------------------------------------------------------------


def test_server_binds_loopback_and_allows_only_its_own_origins(dash_store_dir):
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect

    from lstmscope.server.serve import start_server

    with start_server(dash_store_dir, port=0, allow_origin=["example.org:8443"]) as h:
        assert h.address == "127.0.0.1" and h.url == f"http://127.0.0.1:{h.port}/"
        assert h.origins == [f"localhost:{h.port}", f"127.0.0.1:{h.port}", "example.org:8443"]
        import urllib.request

        with urllib.request.urlopen(h.url, timeout=30) as r:
            body = r.read().decode()
        assert r.status == 200 and "lstmscope" in body and "bokeh" in body.lower()

        def handshake(origin: str) -> int:
            async def go():
                req = HTTPRequest(f"ws://127.0.0.1:{h.port}/ws", headers={"Origin": origin})
                try:
                    conn = await websocket_connect(req)
                except HTTPClientError as e:
                    return e.code
                conn.close()
                return 101

            return IOLoop().run_sync(go, timeout=30)

        assert handshake("http://evil.example:80") == 403
        assert handshake(f"http://localhost:{h.port}") != 403
        assert handshake(f"http://127.0.0.1:{h.port}") != 403


def test_server_refuses_bad_stores_neurons_and_origins(tmp_path, dash_store_dir):
    from lstmscope.errors import LstmscopeError, StoreError
    from lstmscope.server.serve import make_server

    with pytest.raises(StoreError, match="no such store"):
        make_server(tmp_path / "missing", port=0)
    with pytest.raises(ValueError, match=r"no neuron L9\.c\.1"):
        make_server(dash_store_dir, port=0, initial="L9.c.1")
    with pytest.raises(LstmscopeError, match="allow-origin"):
        make_server(dash_store_dir, port=0, allow_origin=["a:b:c"])


def test_app_hooks_open_the_store_once_and_start_on_the_initial_neuron(dash_store_dir):
    from lstmscope.server.handler import load_app

    # As serve loads it: a parse racing another thread's traceback is retried (gh-106905).
    handler = load_app([str(dash_store_dir), "--initial", "L0.o.4"])
    assert not handler.failed, handler.error_detail

    class Ctx:  # stands in for Bokeh's server context
        pass

    ctx = Ctx()
    handler.on_server_loaded(ctx)
    from lstmscope.server.shared import SHARED_ATTR

    shared = getattr(ctx, SHARED_ATTR)
    try:
        assert shared.store.path == Path(dash_store_dir).resolve() or shared.store.n > 0
        assert shared.initial_neuron() == ("L0.o.4", "given on the command line")
        doc = Document()
        from lstmscope.server.main import make_document

        app = make_document(doc, shared, args={})
        assert app.state.primary == "L0.o.4" and "command line" in app.intro
    finally:
        handler.on_server_unloaded(ctx)


def test_opens_on_the_best_url_cell_of_a_trained_model(synthetic_store):
    """``make demo``'s promise: with no neuron named, the server ranks a URL feature once in the
    background and new tabs open on the best cell it found (a cheap stand-in until then)."""
    import time

    from lstmscope.analysis.rank import rank_feature
    from lstmscope.server.shared import Shared

    shared = Shared(synthetic_store.store, background=True)
    try:
        stand_in = shared.fallback_neuron()
        deadline = time.monotonic() + 120
        while "best for" not in shared.initial_neuron()[1] and time.monotonic() < deadline:
            time.sleep(0.1)
        nid, why = shared.initial_neuron()
        best = rank_feature(synthetic_store.store, "in_url").iloc[0]
        assert nid == best["neuron"] and "in_url" in why and best["auroc"] > 0.85
        app = page(shared)
        assert app.state.primary == nid and app.message.text.startswith(f"Opened on {nid}")
        assert stand_in in shared.stats.index
        # Issue 12.6: it opens with that feature chosen, and the ranking shows it on top.
        assert app.state.feature == "in_url" and app.controls.feature.value == "in_url"
        assert "Ranking tab" in app.message.text
        app.tabs.active = 1
        assert app.rank.source.data["neuron"][0] == nid and "in_url" in app.rank.title.text
        # A link that names a neuron, or a feature, keeps what it names.
        assert page(shared, {"neuron": [nid]}).state.feature is None
        assert page(shared, {"feature": ["in_string"]}).state.feature == "in_string"
    finally:
        shared.close()


def test_the_card_is_coloured_by_the_text_views_scale(shared):
    """The card's histogram follows the scale chosen for the text when it is a whole-neuron
    scale (quantile, linear, logit); a window-built scale leaves the card on the default, and
    the histogram's title says which colours it."""
    from lstmscope.export.colors import quantize, scale_for

    app = page(shared, {"neuron": ["L1.f.2"]})
    seen = {}
    for method, expect in (("logit", "logit"), ("linear", "linear"), ("diff", "quantile"),
                           ("quantile", "quantile"), ("logit", "logit")):  # fmt: skip
        app.set_state(app.state.with_(scale=method))
        src = app.card.hist_source.data
        centres = (np.asarray(src["left"]) + np.asarray(src["right"])) / 2
        sc = scale_for("L1.f.2", shared.stats_row("L1.f.2"), method=expect)
        want = [sc.palette[k] if k < sc.n else "#cccccc" for k in quantize(centres, sc).tolist()]
        assert list(src["color"]) == want, method
        assert f"{expect} colours" in app.card.hist.title.text
        seen[expect] = list(src["color"])
    assert seen["logit"] != seen["linear"]  # the choice shows
