"""Server lifecycle: open the activation store ONCE per server process.

Every browser tab's page (``main.py``) reads the same memory-mapped store and the same caches
through the :class:`~lstmscope.server.shared.Shared` object left on Bokeh's server context. The
store path is fixed here, from the server's command line (``bokeh serve server --args STORE
[--initial L1.c.137]``, or ``lstmscope.server.serve``, whose handler runs this file the same
way); nothing a browser sends can change it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lstmscope.server.shared import SHARED_ATTR, Shared
from lstmscope.store.reader import ActivationStore

log = logging.getLogger("server")

# Bokeh sets sys.argv to the app's --args only while it executes this file, so keep them now.
ARGV = list(sys.argv[1:])


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bokeh serve server --args", exit_on_error=False)
    p.add_argument("store", help="an activation store directory (lstmscope record)")
    p.add_argument("--initial", default=None, help="neuron to open on, e.g. L1.c.137")
    p.add_argument("--workers", type=int, default=2, help="threads for slow analysis calls")
    return p.parse_args(argv)


def on_server_loaded(server_context) -> None:
    args = parse_args(ARGV)
    store = ActivationStore.open(args.store)
    # background=True: the best URL/bracket cell is ranked on a worker thread, so the server
    # answers at once and tabs opened later start on that neuron.
    shared = Shared(store, initial=args.initial, workers=args.workers, background=True)
    setattr(server_context, SHARED_ATTR, shared)
    log.info("opened %s (%d characters, %d neurons)", store.path, store.n, len(shared.stats))


def on_server_unloaded(server_context) -> None:
    shared = getattr(server_context, SHARED_ATTR, None)
    if shared is not None:
        shared.close()
