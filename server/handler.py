"""The dashboard as a Bokeh application handler, for the server ``serve`` starts in-process.

``bokeh serve server`` loads the folder with Bokeh's ``DirectoryHandler``, which runs
``main.py`` for every session under ``curdoc()`` and then checks that ``curdoc()`` is still the
session's document. Bokeh (3.9) keeps what ``curdoc()`` returns in one module-level stack that
every document event of every thread pushes and pops (without ``try/finally``), so while any
other thread of the process touches a document (an in-process client, as in our tests), a new
session could be handed another tab's document ("replaced the output document").

:class:`DashboardHandler` uses Bokeh's public ``Handler`` API instead: Bokeh passes each
session's ``Document`` to :meth:`~DashboardHandler.modify_document`, which builds the page on it
(:func:`lstmscope.server.main.build_page`) and never asks ``curdoc()``. Everything else is what
``bokeh serve server`` does: ``app_hooks.py`` runs as Bokeh runs it (it opens the store once per
server, from ``argv``), and the folder's ``theme.yaml`` and ``templates/index.html`` dress
every page.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bokeh.application.handlers.function import FunctionHandler
from bokeh.application.handlers.handler import Handler
from bokeh.application.handlers.server_lifecycle import ServerLifecycleHandler
from bokeh.document import Document
from bokeh.themes import Theme
from jinja2 import Environment, FileSystemLoader

from lstmscope.server.main import build_page

log = logging.getLogger(__name__)

# The app's folder (``bokeh serve server``): app_hooks.py, theme.yaml, templates/.
SERVER_DIR = Path(__file__).resolve().parent


class DashboardHandler(Handler):
    """The dashboard over the store named in ``argv`` (``STORE [--initial L1.c.137]
    [--workers N]``, the arguments of ``bokeh serve server --args``)."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__()
        self.hooks = ServerLifecycleHandler(filename=str(SERVER_DIR / "app_hooks.py"), argv=argv)
        # A page that fails to build is logged and left as far as it got, as Bokeh does for a
        # failing main.py.
        self.page = FunctionHandler(self.build, trap_exceptions=True)
        self.theme = Theme(filename=str(SERVER_DIR / "theme.yaml"))
        templates = Environment(loader=FileSystemLoader(str(SERVER_DIR / "templates")))
        self.template = templates.get_template("index.html")

    @property
    def failed(self) -> bool:
        return self.hooks.failed or self.page.failed

    @property
    def error(self) -> str | None:
        return self.hooks.error or self.page.error

    @property
    def error_detail(self) -> str | None:
        return self.hooks.error_detail or self.page.error_detail

    def build(self, doc: Document) -> None:
        doc.theme = self.theme
        doc.template = self.template
        build_page(doc)

    def modify_document(self, doc: Document) -> None:
        if self.hooks.failed:  # no store: no page (as Bokeh's DirectoryHandler)
            return
        self.page.modify_document(doc)

    def on_server_loaded(self, server_context) -> None:
        self.hooks.on_server_loaded(server_context)

    def on_server_unloaded(self, server_context) -> None:
        self.hooks.on_server_unloaded(server_context)


def load_app(argv: list[str]) -> DashboardHandler:
    """The dashboard's handler with ``argv``.

    Bokeh parses ``app_hooks.py`` with ``ast.parse``. On CPython 3.11 that races with any other
    thread formatting a traceback (which also calls ``ast.parse``, for the ^^^ markers):
    "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905, fixed in 3.12).
    The race is over as soon as the other thread is done, so try again."""
    for attempt in range(3):
        try:
            return DashboardHandler(argv)
        except SystemError as e:
            if "recursion depth mismatch" not in str(e) or attempt == 2:
                raise
            log.debug("parsing the dashboard app raced another thread (%s); retrying", e)
            time.sleep(0.05)
    raise AssertionError("unreachable")
