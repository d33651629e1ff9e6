"""The dashboard end to end: the real server (``lstmscope.server.serve.start_server``, port 0) driven
by headless Chromium through Playwright.

Each test checks what reached the browser: the client-side Bokeh models (what the Python
callbacks sent back), the pixels of the text canvas, the address bar, downloads, dialogs.
Requests anywhere but the local server are refused and counted. Screenshots of the main views
go to ``docs/dashboard-*.png`` when ``LSTMSCOPE_SAVE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from lstmscope.server.serve import start_server
from lstmscope.store.reader import ActivationStore
from tests.test_server import dash_store_dir, hostile_store_dir  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SAVE = os.environ.get("LSTMSCOPE_SAVE_SCREENSHOTS") == "1"
TIMEOUT = 30_000  # ms; the CI machine is shared

# Geometry of the text grid (server/components/textview.py), to click a given character.
CELL_W, ROW_H, GUTTER = 9, 18, 9

READY = """() => {
  const d = window.Bokeh && Bokeh.documents[0];
  const src = d && d.get_model_by_name('text_source');
  return src != null && src.data.cidx.length > 0;
}"""


@pytest.fixture(scope="module")
def sync_api():
    api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}")
    return api


@pytest.fixture(scope="module")
def server(dash_store_dir):  # noqa: F811
    with start_server(dash_store_dir, port=0) as handle:
        yield handle


@pytest.fixture(scope="module")
def hostile_server(hostile_store_dir):  # noqa: F811
    with start_server(hostile_store_dir, port=0) as handle:
        yield handle


@pytest.fixture(scope="module")
def browser(sync_api):
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Watch:
    """What a page did that it should not: errors, dialogs, requests leaving the machine."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.external: list[str] = []

    def check(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.errors == [], self.errors
        assert self.external == [], self.external


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    watch = Watch()

    def route(r):
        host = urlparse(r.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            watch.external.append(r.request.url)
            r.abort()

    ctx.route(re.compile(r".*"), route)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT)
    pg.on("pageerror", lambda e: watch.errors.append(str(e)))
    pg.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)

    def dialog(d):
        watch.dialogs.append(f"{d.type}: {d.message}")
        d.dismiss()

    pg.on("dialog", dialog)
    pg.watch = watch
    yield pg
    ctx.close()
    watch.check()


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def open_page(pg, url: str) -> None:
    pg.goto(url)
    pg.wait_for_function(READY, timeout=TIMEOUT)
    pg.wait_for_timeout(300)  # let the canvas paint


def js(pg, expr: str):
    """Evaluate ``expr`` with ``doc`` (the Bokeh document) and ``m(name)`` in scope."""
    return pg.evaluate(
        f"() => {{ const doc = Bokeh.documents[0]; const m = (n) => doc.get_model_by_name(n); "
        f"return {expr}; }}"
    )


def wait_js(pg, cond: str) -> None:
    """Wait until ``cond`` holds; a model not there yet (tabs are built when opened) is false."""
    pg.wait_for_function(
        f"() => {{ const doc = Bokeh.documents[0]; const m = (n) => doc.get_model_by_name(n); "
        f"try {{ return {cond}; }} catch (e) {{ return false; }} }}",
        timeout=TIMEOUT,
    )


def title_is(pg, nid: str) -> None:
    pg.wait_for_function(f"() => document.title === 'lstmscope · {nid}'", timeout=TIMEOUT)


def text_png(pg) -> bytes:
    return pg.locator(".ls-text").screenshot()


def coloured_fraction(png: bytes) -> float:
    from PIL import Image

    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    chroma = px.max(axis=2) - px.min(axis=2)  # 0 for white, black and greys
    return float((chroma > 40).mean())


def cell_point(pg, t: int) -> tuple[float, float]:
    """Page coordinates of the centre of window character ``t`` (first lane)."""
    x, y, y_top = js(
        pg,
        f"[m('text_source').data.x[{t}], m('text_source').data.y[{t}], "
        f"m('text_figure').y_range.end]",
    )
    box = pg.locator(".ls-text canvas").first.bounding_box()
    return box["x"] + (x + GUTTER) * CELL_W, box["y"] + (y - y_top) * ROW_H


def query(pg, **first: str) -> dict[str, list[str]]:
    """The address bar's query, read from the page itself (Playwright's ``page.url`` can lag a
    replaceState). With ``field=value``, first wait until each field's first value is that: the
    URL follows a redraw in a message of its own, so it can lag the view a little."""
    if first:
        checks = " && ".join(
            f"p.get({json.dumps(k)}) === {json.dumps(v)}" for k, v in first.items()
        )
        pg.wait_for_function(
            f"() => {{ const p = new URLSearchParams(location.search); return {checks}; }}",
            timeout=TIMEOUT,
        )
    return parse_qs(pg.evaluate("location.search").lstrip("?"))


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def test_page_loads_and_colours_the_text(page, server):
    open_page(page, server.url + "?neuron=L1.c.3")
    assert coloured_fraction(text_png(page)) > 0.05
    n = js(page, "m('text_source').data.cidx.length")
    assert n == 2000
    q = query(page, neuron="L1.c.3", start="0")
    assert q == {"neuron": ["L1.c.3"], "start": ["0"]}  # the address bar says so
    page.mouse.move(*cell_point(page, 40))  # hover: the tooltip shows position and value
    tip = page.locator(".bk-tooltip-content").first
    tip.wait_for(state="visible")
    assert "position" in tip.inner_text() and "40" in tip.inner_text()


def test_opened_as_localhost_the_websocket_is_allowed(page, server):
    open_page(page, server.url.replace("127.0.0.1", "localhost"))
    assert js(page, "m('text_source').data.x.length") > 0


def test_choosing_another_neuron_recolours_the_characters(page, server):
    open_page(page, server.url + "?neuron=L1.c.3")
    before_png = text_png(page)
    before = js(page, "Array.from(m('text_source').data.cidx)")
    page.locator(".ls-kind select").select_option(label="f · forget gate")
    title_is(page, "L1.f.3")  # the server's callback answered
    wait_js(
        page, f"Array.from(m('text_source').data.cidx).join() !== '{','.join(map(str, before))}'"
    )
    page.wait_for_timeout(300)
    assert text_png(page) != before_png
    assert query(page, neuron="L1.f.3")["neuron"] == ["L1.f.3"]
    unit = page.locator(".ls-unit input")
    unit.fill("9")
    unit.press("Enter")
    title_is(page, "L1.f.9")
    assert js(page, "m('neuron_input').value") == "L1.f.9"


def test_a_deep_link_opens_its_neuron_and_position(page, server, dash_store_dir):  # noqa: F811
    open_page(page, server.url + "?neuron=L0.h.5&neuron=L1.c.2&start=3000&size=1000")
    assert js(page, "[m('unit').value, m('layer').value, m('kind').value]") == [5, "0", "h"]
    assert js(page, "m('page_info').text").startswith("characters 3,000–4,000")
    store = ActivationStore.open(dash_store_dir)
    want = store.window(3000, 4000, ["L0.h.5"])[:, 0]
    got = np.asarray(js(page, "Array.from(m('text_source').data.value).slice(0, 1000)"))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert js(page, "new Set(Array.from(m('text_source').data.lane)).size") == 2
    page.locator(".ls-next-page button").click()
    wait_js(page, "m('page_info').text.startsWith('characters 4,000')")
    assert query(page, start="4000")["neuron"] == ["L0.h.5", "L1.c.2"]


def test_bad_input_gives_a_message_not_a_broken_page(page, server):
    open_page(page, server.url + "?neuron=L1.c.3&start=99999999")
    wait_js(page, "m('message').text.includes('outside the text')")
    box = page.locator(".ls-neuron-input input")
    box.fill('"><img src=x onerror=alert(1)>')
    box.press("Enter")
    wait_js(page, "m('message').text.includes('bad neuron id')")
    assert page.get_by_text("bad neuron id").count() == 1  # shown as text
    goto = page.locator(".ls-goto input")
    goto.fill("-3")
    goto.press("Enter")
    wait_js(page, "m('message').text.includes('outside the text')")
    box.fill("L0.c.1")
    box.press("Enter")
    title_is(page, "L0.c.1")


def test_clicking_a_ranked_row_shows_that_neuron(page, server):
    open_page(page, server.url + "?neuron=L1.c.3")
    page.locator(".bk-tab", has_text="Ranking").click()
    page.locator(".ls-feature select").select_option("in_string")
    wait_js(page, "m('rank_table').source.data.neuron.length > 1")
    second = js(page, "m('rank_table').source.data.neuron[1]")
    page.locator(".ls-rank .slick-row").nth(1).click()
    title_is(page, second)
    assert query(page, neuron=second)["feature"] == ["in_string"]


RANK_ROWS = """(rows) => rows
  .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
  .map((r) => [...r.querySelectorAll('.slick-cell')].map((c) => c.innerText.trim()))"""


def rank_rows_on_screen(pg) -> list[list[str]]:
    """The ranking table's rows as drawn (slick-grid's DOM inside Bokeh's shadow roots, which
    Playwright's locators pierce), top to bottom, as cell texts."""
    return pg.locator(".ls-rank .slick-row").evaluate_all(RANK_ROWS)


def wait_rank_rows(pg, first: list[str]) -> list[list[str]]:
    """The rows on screen once their first cells read ``first`` (the redraw is asynchronous);
    what is on screen at the time limit otherwise, for the assertion to show."""
    deadline = time.monotonic() + TIMEOUT / 1000
    while True:
        rows = rank_rows_on_screen(pg)
        if [r[0] for r in rows[: len(first)]] == first or time.monotonic() > deadline:
            return rows
        pg.wait_for_timeout(100)


@pytest.mark.parametrize(
    "features",
    [
        ("depth_paren", "in_comment", "column", "indent", "in_url"),
        ("in_string", "column", "in_comment", "depth_paren", "in_string"),
    ],
)
def test_ranking_rows_follow_each_chosen_feature(page, server, dash_store_dir, features):  # noqa: F811
    """Issue 12.1: the table drew the previous feature's rows under the new headers. Rank
    several features in a row, binary and graded, and compare the rows on screen (the DOM the
    user reads) with ``rank_feature`` for each; then click a row and get that neuron."""
    from lstmscope.analysis.rank import rank_feature

    store = ActivationStore.open(dash_store_dir)
    open_page(page, server.url + "?neuron=L1.c.3")
    page.locator(".bk-tab", has_text="Ranking").click()
    for feat in features:
        page.locator(".ls-feature select").select_option(feat)
        expect = rank_feature(store, feat).head(8)
        want = expect["neuron"].tolist()
        rows = wait_rank_rows(page, want)[:8]
        assert [r[0] for r in rows] == want, feat
        for r, (_, e) in zip(rows, expect.iterrows(), strict=True):
            assert float(r[1]) == pytest.approx(float(e["score"]), abs=6e-4), (feat, r)
        assert feat in js(page, "m('rank_title').text")
    second = rank_rows_on_screen(page)[1][0]
    page.locator(".ls-rank .slick-row").nth(1).click()
    title_is(page, second)


def table_rows(pg, css: str) -> list[list[str]]:
    """A table's rows as drawn, top to bottom, as cell texts (see :data:`RANK_ROWS`)."""
    return pg.locator(f"{css} .slick-row").evaluate_all(RANK_ROWS)


def test_select_a_span_and_match(page, server, dash_store_dir):  # noqa: F811
    """Select a span, find its neurons, three spans in a row: the rows on screen are
    ``select_neurons``' for each (the table once kept the first span's rows: a new span gives as
    many rows, and BokehJS redrew only on a new row count). Then a click picks the neuron shown."""
    from lstmscope.analysis.search import select_neurons

    store = ActivationStore.open(dash_store_dir)
    text = store.text
    open_page(page, server.url + "?neuron=L1.c.3")
    a = -1
    for i in range(3):
        a = text.index('"', text.index('"', a + 1) + 1 if i else 0)  # the next quoted string
        b = text.index('"', a + 1) + 1
        assert b < 2000  # in the first window, where window position = text position
        page.evaluate("window.scrollTo(0, 0)")  # the tables below may have scrolled the page
        page.wait_for_timeout(200)
        page.mouse.click(*cell_point(page, a))
        page.wait_for_timeout(500)  # two quick clicks are a double tap to Bokeh, not two taps
        page.keyboard.down("Shift")
        page.mouse.click(*cell_point(page, b - 1))
        page.keyboard.up("Shift")
        page.locator(".bk-tab", has_text="Select & match").click()  # built now, with the span
        try:
            wait_js(page, f"m('selection_info').text.includes('Selected <b>{a:,}–{b:,}</b>')")
        except Exception:
            raise AssertionError(js(page, "m('selection_info').text")) from None
        page.locator(".ls-select-run button").click()
        want = select_neurons(store, a, b)["neuron"].head(5).tolist()
        wait_js(page, "m('select_status').text.includes('places')")
        deadline = time.monotonic() + TIMEOUT / 1000
        while [r[0] for r in table_rows(page, ".ls-select")[:5]] != want:
            assert time.monotonic() < deadline, (i, table_rows(page, ".ls-select")[:5], want)
            page.wait_for_timeout(100)
    first = table_rows(page, ".ls-select")[0][0]
    page.locator(".ls-select .slick-row").first.click()
    title_is(page, first)


def test_paging_and_find(page, server, dash_store_dir):  # noqa: F811
    text = ActivationStore.open(dash_store_dir).text
    open_page(page, server.url + "?neuron=L1.c.3")
    page.locator(".ls-next-page button").click()
    wait_js(page, "m('page_info').text.startsWith('characters 2,000–4,000')")
    find = page.locator(".ls-find input")
    find.fill("(x")
    find.press("Enter")
    starts = [m.start() for m in re.finditer(re.escape("(x"), text)]
    k = sum(a < 2000 for a in starts)  # matches are numbered through the whole text
    wait_js(page, f"m('find_info').text === 'match {k + 1} / {len(starts)}'")
    page.locator(".ls-find-next button").click()
    wait_js(page, f"m('find_info').text === 'match {k + 2} / {len(starts)}'")
    second = starts[k + 1]
    page.wait_for_function(  # the window moved to hold the current match, and the URL says so
        f"() => {{ const s = +new URLSearchParams(location.search).get('start'); "
        f"return s <= {second} && {second} < s + 2000; }}",
        timeout=TIMEOUT,
    )
    assert query(page, find="(x")["find"] == ["(x"]
    assert "#d62728" in js(page, "m('text_marks').data.color")
    page.get_by_text("regex").click()  # "(x" is no regular expression: a message, no crash
    wait_js(page, "m('message').text.includes('bad regular expression')")


def test_hostile_corpus_renders_as_text(page, hostile_server):
    open_page(page, hostile_server.url + "?neuron=L1.h.3&neuron=L0.c.2&feature=in_string")
    # markup from the corpus never became elements, anywhere (shadow roots included)
    injected = page.evaluate(
        """() => {
          const found = [];
          const walk = (root) => {
            for (const el of root.querySelectorAll('*')) {
              const tag = el.tagName.toLowerCase();
              if (tag === 'img' || (tag === 'script' && /alert/.test(el.textContent))) found.push(tag);
              if (el.getAttribute && el.getAttribute('onerror')) found.push('onerror');
              if (el.shadowRoot) walk(el.shadowRoot);
            }
          };
          walk(document);
          return found;
        }"""
    )
    assert injected == []
    assert coloured_fraction(text_png(page)) > 0.05
    t = js(page, "m('text_chars').data.ch.indexOf('<  U+003C')")
    page.mouse.move(*cell_point(page, t))
    tip = page.locator(".bk-tooltip-content").first
    tip.wait_for(state="visible")
    assert "< U+003C" in tip.inner_text()  # the character itself, as text (spaces collapse)
    find = page.locator(".ls-find input")
    find.fill('"><img src=x onerror=alert(1)>')
    find.press("Enter")
    wait_js(page, "m('find_info').text.startsWith('match 1')")
    page.wait_for_timeout(500)
    # page.watch.check() at teardown: no alert dialog fired, no script error


def test_export_downloads_the_view(page, server):
    open_page(page, server.url + "?neuron=L1.c.3&neuron=L0.h.1&start=1000&size=1000")
    with page.expect_download() as info:
        page.locator(".ls-export button").click()
    download = info.value
    assert download.suggested_filename == "lstmscope-L1.c.3-1000-2000.html"
    body = Path(download.path()).read_text(encoding="utf-8")
    assert body.startswith("<!DOCTYPE html>") and 'data-neuron="L0.h.1"' in body


def test_card_snippet_click_jumps_and_saturation_tab_fills(page, server):
    open_page(page, server.url + "?neuron=L1.c.4")
    wait_js(page, "m('card_contexts').data.x.length > 0")
    # The contexts grid: 2 px border, 9 px cells from x = -16, 17 px rows from y = -0.5.
    x, y, pos = js(
        page,
        "[0, 1, 2].map(k => [m('card_contexts').data.x, "
        "m('card_contexts').data.y, m('card_contexts').data.pos][k][0])",
    )
    fig = js(page, "[m('card_context_fig').x_range.start, m('card_context_fig').y_range.end]")
    page.locator(".ls-card-contexts").scroll_into_view_if_needed()
    canvas = page.locator(".ls-card-contexts canvas").first.bounding_box()
    page.mouse.click(canvas["x"] + 2 + (x - fig[0]) * CELL_W, canvas["y"] + 2 + (y - fig[1]) * 17)
    wait_js(page, "m('text_marks').data.color.includes('#9400d3')")  # the target is outlined
    page.wait_for_function(  # the window holds the target, and the URL says so
        f"() => {{ const s = +new URLSearchParams(location.search).get('start'); "
        f"return s <= {pos} && {pos} < s + 2000; }}",
        timeout=TIMEOUT,
    )
    page.locator(".bk-tab", has_text="Gate saturation").click()
    wait_js(page, "m('saturation_L1').data.neuron.length > 0")


@pytest.mark.skipif(
    not SAVE, reason="set LSTMSCOPE_SAVE_SCREENSHOTS=1 to refresh docs/dashboard-*.png"
)
def test_screenshots_of_the_main_views(browser, synthetic_store):
    """The README's pictures, on the model trained on the synthetic corpus: it opens on the
    best URL cell the analysis finds, with the in_url feature track under the text."""
    from lstmscope.analysis.rank import rank_feature

    store = synthetic_store.store
    best = rank_feature(store, "in_url")["neuron"].tolist()
    text = store.text
    url = text.index("http", 500)
    ctx = browser.new_context(viewport={"width": 1440, "height": 1100}, device_scale_factor=1)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT)
    out = ROOT / "docs"

    def shot(name: str, full: bool = False) -> None:
        pg.wait_for_timeout(600)
        pg.screenshot(path=str(out / f"dashboard-{name}.png"), full_page=full)

    with start_server(synthetic_store.path, port=0, initial=best[0]) as h:
        start = max(0, url - 150)
        open_page(pg, h.url + f"?start={start}&feature=in_url")  # the server's initial neuron
        pg.mouse.move(*cell_point(pg, url - start + 9))
        pg.locator(".bk-tooltip-content").first.wait_for(state="visible")
        shot("main")
        open_page(pg, h.url + f"?neuron={best[0]}&neuron={best[1]}&neuron={best[2]}"
                  f"&start={start}&feature=in_url")  # fmt: skip
        shot("stacked")
        wait_js(pg, "m('card_contexts').data.x.length > 0")
        pg.locator(".bk-tab", has_text="Neuron card").scroll_into_view_if_needed()
        shot("card", full=True)
        pg.locator(".bk-tab", has_text="Ranking").click()
        wait_js(pg, "m('rank_table').source.data.neuron.length > 1")
        shot("ranking", full=True)
        pg.locator(".bk-tab", has_text="Gate saturation").click()
        wait_js(pg, "m('saturation_L1').data.neuron.length > 0")
        shot("saturation", full=True)
        open_page(pg, h.url + f"?neuron={best[0]}&start={start}")
        end = url + 12
        pg.mouse.click(*cell_point(pg, url - start))
        pg.wait_for_timeout(500)
        pg.keyboard.down("Shift")
        pg.mouse.click(*cell_point(pg, end - start))
        pg.keyboard.up("Shift")
        pg.locator(".bk-tab", has_text="Select & match").click()
        wait_js(pg, "m('selection_info').text.includes('Selected')")
        pg.locator(".ls-select-run button").click()
        wait_js(pg, "m('select_status').text.includes('places')")
        shot("match", full=True)
    ctx.close()
