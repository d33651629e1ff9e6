"""Bokeh's curdoc() made per thread and exception-safe (lstmscope.server.curdoc)."""

from __future__ import annotations

import threading

import pytest
from bokeh.document import Document


def test_each_thread_sees_its_own_document_and_a_raise_pops():
    from bokeh.io import curdoc
    from bokeh.io import doc as bokeh_doc
    from lstmscope.server import curdoc as bokeh_curdoc

    assert bokeh_curdoc.install() and bokeh_curdoc.install()  # idempotent
    a, b = Document(), Document()
    entered, release = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def other() -> None:
        with bokeh_doc.patch_curdoc(a):
            entered.set()
            release.wait(10)
            seen["other"] = curdoc()

    t = threading.Thread(target=other)
    t.start()
    assert entered.wait(10)
    with bokeh_doc.patch_curdoc(b):  # while the other thread is inside its own patch
        seen["main"] = curdoc()
        release.set()
        t.join(10)
    assert seen == {"other": a, "main": b}
    # A callback that raises no longer leaves its document behind.
    before = curdoc()
    with pytest.raises(RuntimeError), bokeh_doc.patch_curdoc(a):
        raise RuntimeError("a callback failed")
    assert curdoc() is before and len(bokeh_doc._PATCHED_CURDOCS) == 0


def test_document_events_use_the_patched_stack():
    """invoke_with_curdoc (every document event) goes through the new patch_curdoc."""
    from bokeh.document.callbacks import invoke_with_curdoc
    from bokeh.io import curdoc
    from lstmscope.server import curdoc as bokeh_curdoc

    bokeh_curdoc.install()
    d = Document()
    got = []
    invoke_with_curdoc(d, lambda: got.append(curdoc()))
    assert got == [d]
    with pytest.raises(ValueError):
        invoke_with_curdoc(d, lambda: (_ for _ in ()).throw(ValueError("x")))
    assert curdoc() is not d
