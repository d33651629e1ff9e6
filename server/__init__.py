"""The lstmscope dashboard: a Bokeh directory app (``bokeh serve server --args STORE``).

``main.py`` builds one page per browser tab from the components in ``components/``;
``app_hooks.py`` opens the activation store once per server process. ``lstmscope.server.serve`` starts
the same app in-process (what ``lstmscope serve`` runs). Nothing here is imported at package
load: Bokeh runs this file when the server starts.
"""
