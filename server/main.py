"""A session's page: ``make_document(doc, store)`` reads the request and builds the dashboard.

Bokeh runs this file once per browser tab for ``bokeh serve server --args STORE`` (the page is
built on ``curdoc()``); ``lstmscope serve`` hands each session's document to
:func:`build_page` instead (see :mod:`lstmscope.server.handler`). The store itself was opened
once per server by ``app_hooks.py``. Tests import ``make_document`` and build the page
in-process without a server.

This is the one place that reads a request: its URL fields become the view the page opens on
(:func:`~lstmscope.server.state.parse_query` checks each one); none of them names a file.
"""

from __future__ import annotations

from bokeh.document import Document
from bokeh.models import Div

from lstmscope.server.app import App
from lstmscope.server.shared import SHARED_ATTR, Shared
from lstmscope.server.state import ViewState, parse_query
from lstmscope.store.reader import ActivationStore


def make_document(
    doc: Document,
    store: ActivationStore | Shared,
    *,
    args: dict[str, list[bytes]] | None = None,
    inline: bool | None = None,
) -> App:
    """Build the dashboard in ``doc`` for ``store`` (an open store or the server's Shared).

    ``args`` are URL arguments (``{"neuron": [b"L1.c.137"], "start": [b"5000"]}``); by default
    they come from the request that opened the session. ``inline`` runs slow library calls in
    the callback instead of on the worker pool (the default when there is no server session).
    """
    shared = Shared(store) if isinstance(store, ActivationStore) else store
    request_args = args
    if request_args is None and doc.session_context is not None:
        request = getattr(doc.session_context, "request", None)
        request_args = getattr(request, "arguments", None) or {}
    state, problems, intro = opening_view(shared, request_args or {})
    return App(doc, shared, state, intro=intro, problems=problems, inline=inline)


def opening_view(
    shared: Shared, request_args: dict[str, list[bytes]]
) -> tuple[ViewState, list[str], str]:
    """``(view, problems, intro)``: the view the URL asks for, on the server's initial neuron
    where it names none; the URL fields refused; and why it opened on that neuron."""
    nid, why, best_for = shared.initial_choice()
    default = ViewState(neurons=(nid,))
    state, problems = parse_query(request_args, default, shared.store.n, shared.check_neuron)
    chosen = state.primary == nid and not request_args.get("neuron")
    intro = f"Opened on {nid}: {why}." if chosen else ""
    if chosen and best_for and not request_args.get("feature"):
        # Opened on the best cell for a feature: show that feature's track and ranking, the
        # evidence for the choice (issue 12.6).
        state = state.with_(feature=best_for)
        intro = f"Opened on {nid}: {why}; the Ranking tab lists every neuron for it."
    return state, problems, intro


def build_page(doc: Document) -> None:
    """A server session's page, on the Shared that ``app_hooks.py`` left on the server."""
    shared = getattr(doc.session_context.server_context, SHARED_ATTR, None)
    if shared is None:
        doc.add_root(
            Div(text="<b>lstmscope</b>: no store is open; start the server with "
                "<code>lstmscope serve STORE</code> or <code>bokeh serve server --args STORE</code>.")
        )  # fmt: skip
        return
    make_document(doc, shared)


# Bokeh executes this file as a top-level module named ``bokeh_app_<id>`` for each session;
# importing it (tests, or as ``lstmscope.server.main``) only defines the functions above.
if __name__.startswith("bokeh_app_") and "." not in __name__:
    from bokeh.io import curdoc

    build_page(curdoc())
