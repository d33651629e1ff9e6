"""Colour scales (issue 12.5): each scale checked numerically on planted structure, their
legends, and the dashboard and the export giving every character the same colour for each
scale. The feature track's thin strip (issue 12.8) is checked here too."""

from __future__ import annotations

import html
import itertools
import re

import numpy as np
import pytest

from lstmscope.export.colors import (
    DEFAULT_SCALE,
    DETREND_WIDTH,
    NAN_COLOR,
    SCALES,
    fmt_value,
    legend_ticks,
    moving_mean,
    quantize,
    robust_stats,
    scale_for,
    transform_values,
    trend,
)
from lstmscope.export.text import export_range
from tests.test_server import colours, dash_store_dir, page, shared  # noqa: F401 (fixtures)


def noisy_in_string(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A cell like L0.c.58: small noise almost everywhere, ~3% "in string" around 2.0, and
    one huge outlier. Returns (values, in_string mask)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(0.0, 0.05, n)
    on = rng.random(n) < 0.03
    v[on] = rng.normal(2.0, 0.2, on.sum())
    v[n // 2] = 900.0
    on[n // 2] = False
    return v, on


def test_quantile_is_the_default_and_an_outlier_no_longer_washes_out_the_rest():
    v, on = noisy_in_string()
    stats = robust_stats(v)
    q = scale_for("L0.c.58", stats)
    assert q.method == DEFAULT_SCALE == "quantile"
    cq = quantize(v, q)
    # The noise shows its structure (many classes), the in-string values stand out on top.
    assert len(np.unique(cq[~on & (np.abs(v) < 1)])) >= 12
    assert cq[on].min() >= q.n - 2 and np.median(cq[~on]) <= q.n // 2 + 1
    # 0 stays on the neutral middle class, negatives below it, positives above.
    assert quantize(np.array([0.0]), q)[0] == q.n // 2
    assert (cq[v < -0.01] < q.n // 2 + 1).all() and (cq[v > 0.01] >= q.n // 2).all()
    # The outlier moves no one else: without it the values below the 99th percentile keep
    # their classes (up to the one value's share of the empirical quantiles).
    w = v.copy()
    w[len(v) // 2] = 0.0
    q2 = scale_for("L0.c.58", robust_stats(w))
    below = v < stats["q99"]
    diff = np.abs(quantize(v[below], q).astype(int) - quantize(v[below], q2))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # the one value's own rank, no more
    # Min/max scaling (what an outlier does to a linear scale): all the noise in one class.
    mm = scale_for("L0.c.58", {"q01": stats["min"], "q99": stats["max"]}, method="linear")
    assert len(np.unique(quantize(v[~on], mm))) <= 2


def test_gate_quantile_spreads_a_saturated_gate():
    rng = np.random.default_rng(1)
    v = 1 - rng.exponential(0.002, 50_000).clip(0, 0.22)  # 0.78 … 1.0, mostly above 0.99
    assert (v > 0.99).mean() > 0.99
    lin = quantize(v, scale_for("L1.f.137", robust_stats(v), method="linear"))
    qua = quantize(v, scale_for("L1.f.137", robust_stats(v)))
    assert len(np.unique(lin)) <= 2  # solid dark green
    assert len(np.unique(qua)) >= 15  # structure


def test_logit_separates_099_from_0999():
    s = scale_for("L1.f.137", None, method="logit")
    a, b, c = quantize(np.array([0.99, 0.999, 0.5]), s)
    assert b - a >= 2 and c == s.n // 2
    lin = scale_for("L1.f.137", None, method="linear")
    assert len(set(quantize(np.array([0.99, 0.999]), lin))) == 1  # the linear scale cannot
    assert quantize(np.array([0.0, 1.0, np.nan]), s).tolist() == [0, s.n - 1, s.nan_class]
    # Not a gate: quantile instead, and the legend says so.
    h = scale_for("L1.c.3", {"min": -1, "q50": 0, "max": 1}, method="logit")
    assert h.method == "quantile" and h.description.startswith("logit is for gates")


def test_diff_of_a_ramp_is_constant_and_detrend_shows_local_steps():
    ramp = 11_400 + 3.0 * np.arange(500)
    d = scale_for("L1.c.0", None, method="diff", values=ramp)
    cd = quantize(ramp, d)
    assert cd[0] == d.nan_class  # the first shown character has no previous one
    assert len(set(cd[1:].tolist())) == 1
    # A counter at ±1.14e4 with a small per-line pattern: quantile over the whole neuron's
    # range shows nothing; diff, detrend and window show the pattern.
    t = np.arange(2000)
    counter = 11_400 + 0.5 * t + 4.0 * ((t % 40) < 20)
    stats = {"min": -11_400.0, "q01": -11_000.0, "q50": 0.0, "q99": 11_000.0, "max": 12_400.0}
    assert len(np.unique(quantize(counter, scale_for("L1.c.0", stats)))) <= 2
    for method in ("diff", "detrend", "window"):
        s = scale_for("L1.c.0", stats, method=method, values=counter)
        c = quantize(counter, s)
        assert len(np.unique(c[1:])) >= 2, method
    det = scale_for("L1.c.0", stats, method="detrend", values=counter)
    c = quantize(counter, det)[100:-100]  # away from the ends of the moving mean
    high = ((t % 40) < 20)[100:-100]
    assert c[high].mean() > c[~high].mean() + 4  # the pattern, not the slope
    np.testing.assert_allclose(moving_mean(np.arange(10.0), 3)[1:-1], np.arange(1.0, 9.0))


def test_window_scales_need_the_values_and_unknown_scales_are_refused():
    for method in ("window", "diff", "detrend"):
        with pytest.raises(ValueError, match="pass values="):
            scale_for("L1.c.0", None, method=method)
    with pytest.raises(ValueError, match="unknown scale 'log'"):
        scale_for("L1.c.0", None, method="log")


@pytest.mark.parametrize("method", SCALES)
def test_legend_text_names_the_scale(method):
    v, _ = noisy_in_string(3000)
    for nid in ("L1.c.0", "L1.f.2"):
        s = scale_for(nid, robust_stats(v), method=method, values=v)
        words = {"diff": "first-difference", "detrend": "detrended"}.get(method, method)
        if method == "logit" and nid == "L1.c.0":
            words = "quantile"
        assert f"{words} scale" in s.description, s.description
        assert s.ticks and all(0.0 <= f <= 1.0 for f, _ in s.ticks)
    q = scale_for("L1.c.0", {"min": -40, "q05": -3.1, "q50": 0.2, "q95": 12_030, "max": 2e4})
    assert q.description.endswith("5%…95% = −3.1…12,030")
    assert "rank among all of L1.c.0's values" in q.description


def test_legend_tick_labels_never_overlap():
    # Seeded cases rather than hypothesis: hypothesis raises the recursion limit, and on
    # CPython 3.11.7 that can make a later traceback's ast.parse fail (SystemError).
    rng = np.random.default_rng(12)
    for case in range(300):
        lo, span = rng.uniform(-1e5, 1e5), 10 ** rng.uniform(-6, 6)
        skew, bar, method = rng.random(), int(rng.integers(60, 400)), SCALES[case % len(SCALES)]
        x = lo + span * np.linspace(0, 1, 200) ** (1 + 20 * skew)
        s = scale_for("L1.c.0", robust_stats(x), method=method, values=x)
        kept = legend_ticks(s, bar, char_px=6.5, gap_px=6.0)
        assert kept, s.ticks
        boxes = []
        for px, label, anchor in kept:
            w = len(label) * 6.5
            left = px if anchor == "start" else px - w if anchor == "end" else px - w / 2
            left = min(max(left, 0.0), max(bar - w, 0.0))
            boxes.append((left, left + w))
        boxes.sort()
        assert all(b[0] >= a[1] + 6.0 for a, b in itertools.pairwise(boxes)), (case, kept)


# ----------------------------------------------------------------------------------------------
# The dashboard and the export agree, scale by scale
# ----------------------------------------------------------------------------------------------


def export_colours(doc: str) -> list[str]:
    """Each character's background colour in a one-neuron export (char tooltips: one span
    per character), "no value" as the dashboard's NaN colour."""
    (key,) = set(re.findall(r'<div class="txt ([^"]+)"', doc))
    rules = dict(
        re.findall(rf"\.lsx \.{re.escape(key)} \.c(\d+)\{{background:(#[0-9a-f]{{6}})", doc)
    )
    spans = re.findall(r'<span class="c(\d+)" title="\d+: [^"]*">', doc)
    return [rules.get(k, NAN_COLOR) for k in spans]


@pytest.mark.parametrize("method", SCALES)
def test_dashboard_and_export_colour_each_character_alike(shared, method):  # noqa: F811
    nid = "L1.f.3" if method == "logit" else "L1.c.3"
    app = page(shared, {"neuron": [nid], "start": ["1000"], "size": ["1000"], "scale": [method]})
    assert app.state.scale == method and app.message.text == ""
    assert app.controls.scale.value == method
    want = "" if method == DEFAULT_SCALE else f"&scale={method}"
    assert app.url.query == f"neuron={nid}&start=1000&size=1000{want}"
    doc = export_range(shared.store, [nid], 1000, 2000, scale=method, tooltips="char")
    assert export_colours(doc) == colours(app)
    # The legend above the text says the same as the export's.
    desc = app.text.legend.items[0][1]
    assert desc and html.escape(desc) in doc


def test_switching_scales_recolours_and_a_bad_scale_is_refused(shared):  # noqa: F811
    app = page(shared, {"neuron": ["L1.c.3"]})
    seen = {}
    for method in ("linear", "window", "quantile", "diff", "detrend", "linear"):
        app.controls.scale.value = method
        assert app.state.scale == method and app.message.text == ""
        seen.setdefault(method, colours(app))
        assert colours(app) == seen[method]
        assert app.text.legend.items[0][1].split(" scale")[0] in (
            method, "first-difference", "detrended")  # fmt: skip
    assert len({tuple(c) for c in seen.values()}) == 5
    app.controls.scale.value = "rainbow"  # not an option: refused, the widget put back
    assert app.state.scale == "linear" and app.controls.scale.value == "linear"
    assert "unknown scale" in app.message.text
    bad = page(shared, {"neuron": ["L1.c.3"], "scale": ["<b>x</b>"], "lane": ["wide"]})
    assert bad.state.scale == DEFAULT_SCALE and "URL scale" in bad.message.text
    assert "URL lane" in bad.message.text


# ----------------------------------------------------------------------------------------------
# The feature track: a thin strip by default, a full row or hidden on request (issue 12.8)
# ----------------------------------------------------------------------------------------------


def test_feature_track_is_a_thin_strip_a_row_or_hidden(shared):  # noqa: F811
    from lstmscope.server.components.textgrid import STRIP, lane_layout

    app = page(shared, {"neuron": ["L1.c.3"], "feature": ["depth_total"]})
    T = min(app.state.size, shared.store.n)
    data = app.text.source.data
    lanes = np.asarray(data["lane"])
    assert app.state.lane == "thin" and app.text.lane_names == ["L1.c.3", "depth_total"]
    assert set(np.asarray(data["h"])[lanes == 1]) == {STRIP}  # thin, no text drawn on it
    assert set(np.asarray(data["glyph"], dtype=object)[lanes == 1]) == {""}
    thin_rows = app.text.n_rows
    lines = app.text.cells.n_lines
    assert thin_rows == pytest.approx(lines * lane_layout(2, strip=True).pitch)
    assert thin_rows <= 1.6 * lines  # was 3 rows a line (text, feature, separator)
    # The gutter still shows each line's first position.
    assert app.text.gutter.data["text"][0] == "0"
    app.controls.lane.value = "row"
    assert app.text.n_rows == 3 * lines and "lane=row" in app.url.query
    app.controls.lane.value = "off"
    assert app.text.lane_names == ["L1.c.3"] and len(app.text.source.data["cidx"]) == T
    assert app.state.feature == "depth_total"  # still ranked, just not drawn
    app.controls.lane.value = "thin"
    assert app.text.n_rows == thin_rows and "lane=" not in app.url.query


def test_thin_strip_under_stacked_neurons_and_outlines_cover_it():
    from lstmscope.server.components.textgrid import STRIP, char_cells, grid, lane_layout

    c = char_cells("ab\ncd", wrap=10)
    g = grid(c, 3, strip=True)  # two neurons and a strip
    lay = lane_layout(3, strip=True)
    y = g["y"].reshape(3, 5)
    assert y[:, 0].tolist() == [0.0, 1.0, lay.y[2]] and y[0, 3] == lay.pitch
    assert g["h"].reshape(3, 5)[:, 0].tolist() == [1.0, 1.0, STRIP]
    # The strip sits below the last text row, inside the line's pitch, not overlapping.
    assert lay.y[2] - STRIP / 2 >= 1.5 and lay.bottom < lay.pitch - 0.5
    assert grid(c, 3)["y"].reshape(3, 5)[:, 3].tolist() == [4, 5, 6]  # no strip: as before


def test_cli_export_scale_choices_match_the_library(dash_store_dir, tmp_path):  # noqa: F811
    """``lstmscope export --scale`` offers exactly the library's scales and passes the choice
    on (skipped until interpret/cli.py has the option)."""
    from lstmscope.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if a.choices and "export" in a.choices)
    opts = {o: a for a in sub.choices["export"]._actions for o in a.option_strings}
    if "--scale" not in opts:
        pytest.skip("interpret/cli.py has no export --scale yet")
    assert tuple(opts["--scale"].choices) == SCALES and opts["--scale"].default == DEFAULT_SCALE
    out = tmp_path / "x.html"
    args = ["export", str(dash_store_dir), "--neuron", "L1.c.3", "--range", "0:300"]
    assert main([*args, "--scale", "diff", "-o", str(out)]) == 0
    assert "diff colour scale" in out.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# After review: collapsed quantiles, detrend at the window's edges, signed ranks with many
# zeros, one-sided signed neurons, diff's count
# ----------------------------------------------------------------------------------------------

_QUANTILE_COLS = ("min", "q01", "q05", "q25", "q50", "q75", "q95", "q99", "max")


@pytest.fixture
def own_shared(dash_store_dir):  # noqa: F811
    """A Shared over its own store instance, so a test may damage its statistics or values."""
    from tests.test_server import open_shared

    yield from open_shared(dash_store_dir)


@pytest.mark.parametrize(
    ("nid", "stat"),
    [("L1.f.3", 1.0), ("L1.c.3", np.nan), ("L1.h.5", 0.25)],
    ids=["saturated-gate", "nan-stats", "constant-in-float16"],
)
def test_collapsed_quantiles_colour_dashboard_and_export_alike(own_shared, nid, stat):
    """Stored quantiles with fewer than two distinct values (a gate saturated above 0.99976
    whose float16 statistics all read 1.0, NaN statistics, a unit constant in float16) cannot
    rank: both the dashboard and the export rank the window shown instead, colour every
    character alike, and their legends say so (not "rank among all of its values")."""
    own_shared.stats.loc[nid, list(_QUANTILE_COLS)] = stat
    app = page(own_shared, {"neuron": [nid], "start": ["1000"], "size": ["1000"]})
    assert app.state.scale == DEFAULT_SCALE and app.message.text == ""
    doc = export_range(own_shared.store, [nid], 1000, 2000, tooltips="char")
    dash = colours(app)
    assert export_colours(doc) == dash
    assert len(set(dash)) >= 10  # the window's structure, not one solid colour
    desc = app.text.legend.items[0][1]
    assert "rank among the 1,000 values shown" in desc and "all of" not in desc, desc
    assert "no quantiles" in desc
    assert html.escape(desc) in doc


def ramp_and_sine(n: int = 400, start: float = 5000.0) -> tuple[np.ndarray, np.ndarray]:
    """A counter (+1 per character) with a small local wiggle; returns (values, wiggle)."""
    i = np.arange(n)
    wiggle = 0.3 * np.sin(i)
    return start + i + wiggle, wiggle


def test_detrend_shows_a_counters_local_structure_up_to_the_window_edges():
    v, wiggle = ramp_and_sine()
    s = scale_for("L1.c.0", None, method="detrend", values=v.astype(np.float32))
    # The range is the wiggle's, not the ∓16 the truncated moving mean left at the edges.
    assert 0.2 < s.hi < 0.4, s.description
    t = transform_values(v, "detrend")
    np.testing.assert_allclose(t, wiggle, atol=0.06)  # was off by up to 16 at the ends
    c = quantize(v, s)
    for part in (slice(0, 32), slice(184, 216), slice(-32, None)):
        assert c[part].max() - c[part].min() >= s.n - 3, (part, c[part])
        assert np.corrcoef(c[part], wiggle[part])[0, 1] > 0.95, part
    # Where the full width fits, detrend is still the centred moving mean.
    w = np.random.default_rng(3).normal(size=300)
    np.testing.assert_allclose(trend(w)[40:-40], moving_mean(w, DETREND_WIDTH)[40:-40])
    assert "straight line" in s.description and "full width" in s.description


def test_detrend_of_a_counter_is_the_same_in_dashboard_and_export(own_shared, monkeypatch):
    store = own_shared.store
    real = store.window
    v, _ = ramp_and_sine(store.n, start=-3000.0)

    def window(start, stop, neurons):
        out = np.array(real(start, stop, neurons), dtype=np.float32)
        for j, nid in enumerate(neurons):
            if nid == "L1.c.3":
                out[:, j] = v[start:stop]
        return out

    monkeypatch.setattr(store, "window", window)
    app = page(own_shared, {"neuron": ["L1.c.3"], "start": ["1000"], "size": ["1000"],
                            "scale": ["detrend"]})  # fmt: skip
    doc = export_range(store, ["L1.c.3"], 1000, 2000, scale="detrend", tooltips="char")
    dash = colours(app)
    assert export_colours(doc) == dash and len(dash) == 1000
    desc = app.text.legend.items[0][1]
    assert html.escape(desc) in doc and "±0.29" in desc, desc  # was ±16, the edges
    for part in (slice(0, 32), slice(484, 516), slice(-32, None)):
        assert len(set(dash[part])) >= 8, part  # the wiggle, at the edges too


def test_signed_ranks_use_zeros_rank_interval():
    row = {"min": -1.0, "q01": -0.001, "q05": 0.0, "q25": 0.0, "q50": 0.0, "q75": 0.0,
           "q95": 0.0, "q99": 0.001, "max": 100.0}  # fmt: skip
    s = scale_for("L0.h.1", row)
    c = quantize(np.array([-1, -0.0005, 0, 0.0005, 0.001, 50, 100.0]), s).tolist()
    mid, top = s.n // 2, s.n - 1
    assert c[0] == 0 and c[2] == mid and c[-1] == top
    # q99 is not drawn as the maximum, nor q01 as the minimum: 1% of values lie beyond each.
    assert c[4] < top - 1 and quantize(np.array([-0.001]), s)[0] > 1
    assert c[1] < mid < c[3] < c[4] < c[5] <= c[6], c
    assert mid - c[1] == c[3] - mid  # ±0.0005 sit alike either side of 0


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_one_sided_signed_neuron_legend_says_what_the_middle_colour_is(sign):
    vals = sign * np.array([2.0, 2.1, 2.5, 3, 4, 5, 6, 7, 8])
    row = robust_stats(vals) | {"min": float(vals.min()), "max": float(vals.max())}
    s = scale_for("L0.c.1", row)
    lim = fmt_value(2.0 * sign)
    word = "all positive" if sign > 0 else "all negative"
    assert word in s.description and f"{lim}, not 0" in s.description, s.description
    assert "0 = middle" not in s.description
    # The legend's middle tick names that value, not 0.
    assert (0.5, lim) in s.ticks and all(label != "0" for _, label in s.ticks)
    assert quantize(np.array([2.0 * sign]), s)[0] == s.n // 2
    both = scale_for("L0.c.1", {"min": -1.0, "q50": 0.5, "max": 2.0})
    assert "0 = middle" in both.description


def test_diff_counts_only_the_values_it_has():
    ramp = np.arange(500.0)
    d = scale_for("L1.c.0", None, method="diff", values=ramp)
    assert "of the 499 shown" in d.description, d.description
    assert (
        "the 500 values shown"
        in scale_for("L1.c.0", None, method="window", values=ramp).description
    )
