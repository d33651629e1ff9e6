"""What the dashboard relies on in Bokeh, checked so that a Bokeh upgrade that changes it fails
here instead of silently.

- Bokeh (3.9) keeps ``curdoc()`` in one module-level stack that every thread's document events
  push and pop, so with another thread touching a document, ``curdoc()`` can name another
  session's document. The in-process server (``lstmscope.server.handler``) therefore builds each
  page on the document Bokeh passes in and never asks ``curdoc()``.
- ``lstmscope.server.serve`` quiets two Bokeh log lines, recognised by their text and where
  they are raised (Bokeh has no public way to tell a closed tab's leftovers from an error).
"""

from __future__ import annotations

import inspect
import urllib.request

from bokeh.document import Document

from tests.test_server import dash_store_dir  # noqa: F401 (fixture)


def test_a_session_page_does_not_depend_on_curdoc(dash_store_dir, monkeypatch):  # noqa: F811
    """``curdoc()`` answering another document for the whole time (as when another thread's
    document event is on Bokeh's stack) leaves the served page whole and that document alone.
    A page built through ``curdoc()`` (Bokeh's DirectoryHandler) fails this: its app fills the
    wrong document and Bokeh refuses it ("replaced the output document")."""
    from lstmscope.server.serve import start_server

    foreign = Document()
    for module in ("bokeh.io", "bokeh.io.doc", "bokeh.application.handlers.code"):
        monkeypatch.setattr(f"{module}.curdoc", lambda: foreign)
    with start_server(dash_store_dir, port=0) as h, urllib.request.urlopen(h.url, timeout=60) as r:
        status, page = r.status, r.read().decode("utf-8")
    assert status == 200
    assert "<title>lstmscope · L" in page  # the App titled the session's document
    assert '<header class="ls-head">' in page  # and the app's template dressed it
    assert foreign.roots == []


def test_the_quieted_log_lines_are_what_this_bokeh_logs():
    from bokeh.server import connection, protocol_handler
    from bokeh.server.views import ws

    from lstmscope.server.serve import _ClosedSendsFilter, _DetachedSessionFilter

    # A send to a closed websocket: one WARNING with this exact text, on this logger.
    assert f'log.warning("{_ClosedSendsFilter.MESSAGE}")' in inspect.getsource(ws)
    assert ws.log.name == "bokeh.server.views.ws"
    # A message from a tab whose connection already dropped its session: an AssertionError
    # raised in bokeh/server/connection.py, logged as an error by the protocol handler.
    assert "assert self._session is not None" in inspect.getsource(connection.ServerConnection)
    assert connection.__file__.replace("\\", "/").endswith("bokeh/server/connection.py")
    assert 'log.error("error handling message' in inspect.getsource(protocol_handler)
    assert protocol_handler.log.name == "bokeh.server.protocol_handler"
    assert _DetachedSessionFilter.MESSAGE
