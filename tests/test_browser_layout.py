"""The dashboard's colour scales and page layout in headless Chromium (issue 12.5, 12.7, 12.8).

What is checked is what the user sees: the colours painted on the text canvas against what
``lstmscope.export.colors`` returns for the window, scale after scale; where the panels land at
1600 x 1000 and 1280 x 800 (bounding boxes); legend labels that do not overlap.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

from lstmscope.export.colors import DEFAULT_SCALE, SCALE_TITLES, quantize, scale_for
from lstmscope.server.components.controls import LANE_TITLES
from lstmscope.store.reader import ActivationStore
from tests.test_browser import (  # noqa: F401 (fixtures)
    ARGS,
    CHROMIUM,
    READY,
    TIMEOUT,
    Watch,
    browser,
    js,
    server,
    sync_api,
    wait_js,
)
from tests.test_server import dash_store_dir  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CELL_W, ROW_H, GUTTER = 9, 18, 9  # server/components/textview.py


@pytest.fixture
def at(browser):  # noqa: F811
    """``at(width, height)``: a page of that viewport size; errors fail the test."""
    made = []

    def open_at(width: int, height: int):
        ctx = browser.new_context(viewport={"width": width, "height": height})
        pg = ctx.new_page()
        pg.set_default_timeout(TIMEOUT)
        watch = Watch()
        pg.on("pageerror", lambda e: watch.errors.append(str(e)))
        pg.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
        made.append((ctx, watch))
        return pg

    yield open_at
    for ctx, watch in made:
        ctx.close()
        watch.check()


def load(pg, url: str) -> None:
    """Open ``url`` and wait for the coloured text and for the browser's row fit to land."""
    pg.goto(url)
    pg.wait_for_function(READY, timeout=TIMEOUT)
    wait_js(pg, "m('text_fit').data.rows[0] > 0")  # the browser measured the window
    pg.wait_for_timeout(400)


def box(pg, selector: str) -> dict:
    b = pg.locator(selector).first.bounding_box()
    assert b is not None, selector
    return b


def canvas_rgb(pg) -> np.ndarray:
    from PIL import Image

    png = pg.locator(".ls-text canvas").first.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def hex_rgb(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


# ----------------------------------------------------------------------------------------------
# Colour scales
# ----------------------------------------------------------------------------------------------


def expected_classes(store, nid: str, a: int, b: int, method: str) -> tuple[np.ndarray, tuple]:
    vals = store.window(a, b, [nid])[:, 0]
    sc = scale_for(nid, store.stats.loc[nid], method=method, values=vals)
    return quantize(vals, sc), sc.palette


def painted_matches(pg, want: np.ndarray, palette: tuple, k: int = 40) -> None:
    """The canvas pixel inside ``k`` visible cells (near each cell's top-left corner, clear of
    the glyph) is the palette colour of the class the library gives that character."""
    x, y, w, top = js(
        pg,
        "[Array.from(m('text_source').data.x), Array.from(m('text_source').data.y), "
        "Array.from(m('text_source').data.w), m('text_figure').y_range.end]",
    )
    img = canvas_rgb(pg)
    rows_shown = img.shape[0] / ROW_H
    visible = [
        t for t in range(len(want)) if 0 < y[t] - top < rows_shown - 1 and want[t] < len(palette)
    ]
    assert len(visible) > k
    rng = np.random.default_rng(0)
    for t in rng.choice(visible, size=k, replace=False).tolist():
        px = int((x[t] - w[t] / 2 + GUTTER) * CELL_W) + 2
        py = int((y[t] - top - 0.5) * ROW_H) + 2
        got = tuple(int(c) for c in img[py, px])
        exp = hex_rgb(palette[int(want[t])])
        assert max(abs(g - e) for g, e in zip(got, exp, strict=True)) <= 2, (t, got, exp)


def test_switching_scales_paints_what_the_library_returns(at, server, dash_store_dir):  # noqa: F811
    store = ActivationStore.open(dash_store_dir)
    nid, a, b = "L1.c.3", 1000, 2000
    pg = at(1600, 1000)
    load(pg, server.url + f"?neuron={nid}&start={a}&size=1000")
    scale = pg.locator(".ls-scale select")
    for method in ("linear", "window", "diff", "quantile", "detrend", "linear", "quantile"):
        want, palette = expected_classes(store, nid, a, b, method)
        scale.select_option(label=SCALE_TITLES[method])
        wait_js(
            pg, f"Array.from(m('text_source').data.cidx).join() === '{','.join(map(str, want))}'"
        )
        wait_js(pg, f"m('text_fill_map').palette.slice(0, {len(palette)}).join() === "
                    f"'{','.join(palette)}'")  # fmt: skip
        pg.wait_for_timeout(250)  # the canvas repaints on the next frame
        painted_matches(pg, want, palette)
        q = pg.evaluate("new URLSearchParams(location.search).get('scale')")
        assert q == (None if method == DEFAULT_SCALE else method)
        legend = pg.locator(".ls-legend .scale-desc").first.inner_text()
        name = {"diff": "first-difference", "detrend": "detrended"}.get(method, method)
        assert f"{name} scale" in legend
    # A burst of choices, faster than the redraws: the last one wins, everywhere.
    for method in ("diff", "window", "linear", "detrend"):
        scale.select_option(label=SCALE_TITLES[method])
    want, palette = expected_classes(store, nid, a, b, "detrend")
    wait_js(pg, f"Array.from(m('text_source').data.cidx).join() === '{','.join(map(str, want))}'")
    pg.wait_for_timeout(250)
    painted_matches(pg, want, palette)
    assert "detrended scale" in pg.locator(".ls-legend .scale-desc").first.inner_text()
    # A deep link carries the scale.
    load(pg, server.url + f"?neuron=L1.f.3&start={a}&size=1000&scale=logit")
    want, palette = expected_classes(store, "L1.f.3", a, b, "logit")
    assert js(pg, "Array.from(m('text_source').data.cidx)") == want.tolist()
    assert js(pg, "m('scale').value") == "logit"


# ----------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------


def no_overlap(boxes: list[dict], gap: float = 0.0) -> bool:
    for p, q in itertools.combinations(boxes, 2):
        if (p["x"] < q["x"] + q["width"] + gap and q["x"] < p["x"] + p["width"] + gap
                and p["y"] < q["y"] + q["height"] and q["y"] < p["y"] + p["height"]):  # fmt: skip
            return False
    return True


def legend_labels_apart(pg) -> int:
    """Every legend's tick labels and its description: no two boxes overlap. Returns how many
    labels were measured."""
    n = 0
    items = pg.locator(".ls-legend .legend-item")
    for i in range(items.count()):
        item = items.nth(i)
        ticks = [t.bounding_box() for t in item.locator("svg text").all()]
        desc = item.locator(".scale-desc").bounding_box()
        bar = item.locator("svg").bounding_box()
        assert all(t["x"] >= bar["x"] - 0.5 and t["x"] + t["width"] <= bar["x"] + bar["width"] + 0.5
                   for t in ticks), ticks  # fmt: skip
        assert no_overlap(ticks, gap=2.0), ticks
        assert no_overlap([bar, desc]), (bar, desc)
        n += len(ticks)
    return n


def test_at_1600x1000_text_and_card_side_by_side(at, server):  # noqa: F811
    pg = at(1600, 1000)
    # Values in the tens of thousands make long labels: the old colour bar's collided.
    load(pg, server.url + "?neuron=L1.c.3&neuron=L0.c.2&neuron=L1.f.3&scale=linear")
    text, tabs = box(pg, ".ls-text"), box(pg, ".bk-Tabs")
    hist = box(pg, ".bk-Tabs canvas")  # the card's histogram: its first figure
    assert tabs["x"] >= text["x"] + text["width"]  # beside the text, not under it
    assert tabs["y"] < text["y"] + 100 and tabs["x"] + tabs["width"] <= 1600
    assert hist["x"] >= text["x"] + text["width"] and hist["y"] + hist["height"] <= 1000
    # The text fills the window's height, and nothing sticks out sideways.
    assert 1000 - 2 * ROW_H - 14 <= text["y"] + text["height"] <= 1000
    assert pg.evaluate("document.documentElement.scrollWidth") <= 1600
    # The gutter says what its numbers are (stacked: lane names).
    assert "lane" in pg.locator(".ls-gutter-head div").first.inner_text()
    assert legend_labels_apart(pg) >= 9


def test_at_1280x800_everything_is_reachable(at, server):  # noqa: F811
    pg = at(1280, 800)
    load(pg, server.url + "?neuron=L1.c.3&feature=depth_total")
    text, tabs = box(pg, ".ls-text"), box(pg, ".bk-Tabs")
    assert text["y"] + text["height"] <= 800  # the text fits the screen
    assert tabs["y"] >= text["y"] + text["height"]  # the card follows it
    assert pg.evaluate("document.documentElement.scrollWidth") <= 1280
    for sel in (".ls-scale select", ".ls-lane select", ".ls-export button", ".ls-find input",
                ".ls-neuron-input input", ".ls-next-page button"):  # fmt: skip
        b = box(pg, sel)
        assert b["y"] + b["height"] <= text["y"] and b["x"] + b["width"] <= 1280, sel
    assert "position" in pg.locator(".ls-gutter-head div").first.inner_text()
    assert legend_labels_apart(pg) >= 4
    # The feature track is a thin strip: the figure shows more lines than a full row would.
    rows = js(pg, "m('text_figure').y_range.start - m('text_figure').y_range.end")
    strip_lines = rows / 1.55
    pg.locator(".ls-lane select").select_option(label=LANE_TITLES["row"])
    wait_js(pg, "new URLSearchParams(location.search).get('lane') === 'row'")
    assert js(pg, "Math.max(...m('text_source').data.h)") == 1
    assert strip_lines >= 1.8 * (rows / 3)
    pg.locator(".ls-lane select").select_option(label=LANE_TITLES["off"])
    wait_js(pg, "m('text_lanes').data.name.length === 1")
