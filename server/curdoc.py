"""Make Bokeh's ``curdoc()`` per thread and exception-safe (installed when a server starts).

Bokeh (3.9) keeps the documents that ``curdoc()`` returns in one module-level list,
``bokeh.io.doc._PATCHED_CURDOCS``, shared by every thread, and ``patch_curdoc`` pushes and pops
it without ``try/finally``. Every document event goes through it (``invoke_with_curdoc``), so a
document touched on any other thread (a worker calling ``add_next_tick_callback``, or a Bokeh
client living in the same process, as in our tests) can interleave with the server thread
running the app for a new session: that app then sees another tab's document ("replaced the
output document", ``session_context`` is None). And a callback that raises leaves its document
on the stack for good.

``install()`` swaps the list for one stack per thread and ``patch_curdoc`` for a version that
always pops. Both keep Bokeh's interface (``append``/``pop``/``len``/``[-1]``), and nothing else
in Bokeh touches the list. Idempotent; a Bokeh without these internals is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


class ThreadLocalStack:
    """A list-like stack whose contents belong to the calling thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _items(self) -> list:
        items = getattr(self._local, "items", None)
        if items is None:
            items = self._local.items = []
        return items

    def append(self, item: Any) -> None:
        self._items().append(item)

    def pop(self, index: int = -1) -> Any:
        return self._items().pop(index)

    def __len__(self) -> int:
        return len(self._items())

    def __getitem__(self, index: int) -> Any:
        return self._items()[index]


@contextlib.contextmanager
def _patch_curdoc(doc: Any) -> Iterator[None]:
    """Bokeh's ``patch_curdoc``, popping also when the body raises."""
    from bokeh.io import doc as bokeh_doc

    bokeh_doc._PATCHED_CURDOCS.append(weakref.ref(doc))
    del doc
    try:
        yield
    finally:
        bokeh_doc._PATCHED_CURDOCS.pop()


def install() -> bool:
    """Patch Bokeh (once); False when its internals are not what this expects."""
    from bokeh.io import doc as bokeh_doc

    stack = getattr(bokeh_doc, "_PATCHED_CURDOCS", None)
    if isinstance(stack, ThreadLocalStack):
        return True
    if not isinstance(stack, list) or not hasattr(bokeh_doc, "patch_curdoc"):
        log.warning("this Bokeh keeps curdoc() differently; not making it per thread")
        return False
    local = ThreadLocalStack()
    for item in stack:  # whatever the current thread has patched right now stays in force
        local.append(item)
    bokeh_doc._PATCHED_CURDOCS = local
    bokeh_doc.patch_curdoc = _patch_curdoc
    # The app handler imported the old one by name; callbacks import it at each call.
    from bokeh.application.handlers import code as code_handler

    if getattr(code_handler, "patch_curdoc", None) is not None:
        code_handler.patch_curdoc = _patch_curdoc
    return True
