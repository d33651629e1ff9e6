"""Browser-side effects driven by data: the address bar follows the view (deep links), and the
export button's HTML arrives as data and is saved as a file.

Both are a ``ColumnDataSource`` the server writes and a small ``CustomJS`` that reacts to it;
nothing the browser sends is ever used as a path or executed.
"""

from __future__ import annotations

from bokeh.models import ColumnDataSource, CustomJS

_URL_JS = """
const q = src.data.query[0];
if (q == null) return;
const url = window.location.pathname + (q ? '?' + q : '') + window.location.hash;
if (url !== window.location.pathname + window.location.search + window.location.hash) {
  window.history.replaceState(null, '', url);
}
"""

_DOWNLOAD_JS = """
const html = src.data.html[0];
const name = src.data.name[0];
if (!html) return;
const blob = new Blob([html], {type: 'text/html;charset=utf-8'});
const url = URL.createObjectURL(blob);
const a = document.createElement('a');
a.href = url;
a.download = name || 'lstmscope-export.html';
a.style.display = 'none';
document.body.appendChild(a);
a.click();
setTimeout(() => { URL.revokeObjectURL(url); a.remove(); }, 1000);
"""


class UrlSync:
    """``update(query)`` puts the view's query string in the address bar (replaceState, so the
    back button is not flooded with every neuron the user looked at)."""

    def __init__(self) -> None:
        self.source = ColumnDataSource({"query": [""]}, name="url_state")
        self.callback = CustomJS(args={"src": self.source}, code=_URL_JS)
        self.source.js_on_change("data", self.callback)

    def install(self, doc) -> None:
        # The first view may differ from the URL typed (defaults filled in, bad fields
        # dropped): write it once the page is up.
        doc.js_on_event("document_ready", self.callback)

    def update(self, query: str) -> None:
        if self.source.data["query"] != [query]:
            self.source.data = {"query": [query]}

    @property
    def query(self) -> str:
        return self.source.data["query"][0]


class Download:
    """``send(name, html)`` makes the browser save ``html`` as a file called ``name``."""

    def __init__(self) -> None:
        self.source = ColumnDataSource({"html": [""], "name": [""]}, name="download")
        self.source.js_on_change("data", CustomJS(args={"src": self.source}, code=_DOWNLOAD_JS))

    def send(self, name: str, html: str) -> None:
        self.source.data = {"html": [html], "name": [name]}
