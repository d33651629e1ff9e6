"""The lstmscope dashboard: a Bokeh directory app (``bokeh serve server --args STORE``), also
served in-process by ``lstmscope serve STORE``.

Per server process:

- ``app_hooks.py`` — opens the activation store once, from the server's command line, and
  leaves a :class:`~lstmscope.server.shared.Shared` on Bokeh's server context.
- ``shared.py`` — ``Shared``: the data every tab shares (the open store, per-process caches of
  the library calls, the worker pools).
- ``serve.py`` — starts the server in this process (``lstmscope serve``; tests, benchmarks):
  binding, allowed origins, quieter Bokeh logs.
- ``handler.py`` — the app as a Bokeh handler for that server: each session's document is
  passed in (no ``curdoc()``), ``app_hooks.py``, the theme and the template as Bokeh loads them.

Per browser tab (session):

- ``main.py`` — the session's entry: reads the request's URL fields and builds the page
  (``make_document``); Bokeh runs it for ``bokeh serve server``.
- ``state.py`` — ``ViewState``, the view a tab shows, and its round trip through the URL.
- ``app.py`` — ``App``: builds the components, wires their widgets to the handlers, and
  draws each new view (``set_state``).
- ``navigation.py``, ``finding.py``, ``jobs.py`` — the App's handlers, by what they change:
  neurons and position; the find box; the tabs filled by slow library calls, and the export.
- ``runner.py`` — slow calls off the event loop (``Runner``), computed once (``Memo``), and
  bursts of user actions merged (``Coalescer``).
- ``components/`` — the panels of the page, one per file.

Bokeh executes this file as a package named ``server`` when it serves the folder: it imports
nothing, and ``main.py`` and ``app_hooks.py`` import everything by ``lstmscope.server`` names.
"""
