"""Start the dashboard in this process: the app of ``bokeh serve server``, loaded by
:class:`~lstmscope.server.handler.DashboardHandler`.

``serve`` is what ``lstmscope serve STORE`` runs: it checks the store, binds 127.0.0.1 unless
told otherwise, answers only the page it serves (opened as ``localhost:PORT`` or
``127.0.0.1:PORT``, plus any ``--allow-origin HOST:PORT``: any other ``Origin`` or ``Host``
header gets 403, for the websocket and every HTTP request), prints the URL and runs until
Ctrl-C. ``start_server`` runs the same app on a background thread with its own
event loop (port 0 picks a free port) for tests and benchmarks.

The store path is fixed here; nothing a browser sends can make the server open another path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
import time
import webbrowser
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from lstmscope.errors import LstmscopeError
from lstmscope.server.handler import SERVER_DIR, load_app
from lstmscope.store.reader import ActivationStore

log = logging.getLogger(__name__)


@dataclass
class ServerHandle:
    """A started server: ``url`` to open, ``stop()`` to shut it down."""

    server: Any  # bokeh.server.server.BaseServer
    url: str
    port: int
    address: str
    origins: list[str]
    thread: threading.Thread | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def io_loop(self):
        return self.server.io_loop

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (and its thread, when it has one)."""
        if self._stopped:
            return
        self._stopped = True
        loop = self.server.io_loop
        if self.thread is None:
            self.server.stop()
            return

        def shutdown() -> None:
            try:
                self.server.stop()
            finally:
                loop.stop()

        loop.add_callback(shutdown)
        self.thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _origins(port: int, allow_origin: Sequence[str]) -> list[str]:
    from bokeh.server.util import create_hosts_allowlist

    extra = [o.strip() for o in allow_origin if o and o.strip()]
    try:
        extra = create_hosts_allowlist(extra, port) if extra else []
    except ValueError as e:
        raise LstmscopeError(
            f"--allow-origin: {e} (expected HOST:PORT, e.g. myhost:5006)"
        ) from None
    return [f"localhost:{port}", f"127.0.0.1:{port}", *extra]


def refusal(origin: str | None, host: str | None, allowed: Sequence[str]) -> str | None:
    """Why a request must be refused (None: it may pass).

    A browser names the page that makes a request in ``Origin``; one from any page but ours
    (another site's script, a sandboxed frame's ``null``) is refused, as Bokeh refuses such
    websockets. ``Host`` must be ours too: a DNS-rebinding page reaches 127.0.0.1 under its own
    host name. Clients that send no ``Origin`` (scripts, ``bokeh.client``) only pass the
    ``Host`` check.
    """
    from urllib.parse import urlparse

    from bokeh.server.util import check_allowlist

    if origin is not None:
        netloc = urlparse(origin).netloc.lower()
        if not netloc or not check_allowlist(netloc, allowed):
            return f"origin {origin[:100]!r} is not allowed"
    if not host or not check_allowlist(host.lower(), allowed):
        return f"host {str(host)[:100]!r} is not allowed"
    return None


def _guarded_app(routes: dict, allowed: list[str], **kwargs) -> Any:
    """Bokeh's tornado application, refusing (403) every request :func:`refusal` refuses
    before any handler (page, websocket, static files) sees it."""
    from bokeh.server.tornado import BokehTornado
    from tornado.web import RequestHandler

    class Refused(RequestHandler):
        def initialize(self, reason: str) -> None:
            self.reason = reason

        def prepare(self) -> None:
            self.set_status(403)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(
                f"lstmscope refused this request: {self.reason}. The dashboard answers pages "
                f"opened as {' or '.join(allowed[:2])}; start it with --allow-origin HOST:PORT "
                "to add another.\n"
            )

    class GuardedTornado(BokehTornado):
        def find_handler(self, request, **kw):
            why = refusal(request.headers.get("Origin"), request.headers.get("Host"), allowed)
            if why is not None:
                log.warning("refused %s %s: %s", request.method, request.path[:100], why)
                return self.get_handler_delegate(request, Refused, {"reason": why})
            return super().find_handler(request, **kw)

    return GuardedTornado(routes, **kwargs)


class _ClosedSendsFilter(logging.Filter):
    """Bokeh warns once per message it could not send because the browser's connection had
    closed: a tab closed in the middle of a burst of updates writes hundreds of identical lines.
    This lets one through every ``every_s`` seconds, with the count of those it held back."""

    MESSAGE = "Failed sending message as connection was closed"

    def __init__(self, every_s: float = 10.0) -> None:
        super().__init__()
        self.every_s = every_s
        self.last = -math.inf
        self.held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE:
            return True
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.held += 1
            return False
        self.last = now
        if self.held:
            record.msg = f"{self.MESSAGE} (and {self.held} more since the last such line)"
            self.held = 0
        return True


class _DetachedSessionFilter(_ClosedSendsFilter):
    """Messages a tab sent just before it closed can still be in Bokeh's queue when the
    connection has already dropped its session; Bokeh then logs each as an ERROR with the
    traceback of an ``assert self._session is not None`` in ``bokeh/server/connection.py``.
    Nothing is wrong (the tab is gone): one WARNING line every ``every_s`` seconds, with a
    count, instead. Any other error passes untouched."""

    MESSAGE = "ignored messages from a tab that had just closed"

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not (isinstance(exc, AssertionError) and _raised_in(exc, "bokeh/server/connection.py")):
            return True
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args, record.exc_info, record.exc_text = self.MESSAGE, (), None, None
        return super().filter(record)


def _raised_in(exc: BaseException, path_suffix: str) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith(path_suffix)


def _quiet_closed_sends() -> None:
    """Install the filters above on Bokeh's loggers (once per process)."""
    for name, kind in (
        ("bokeh.server.views.ws", _ClosedSendsFilter),
        ("bokeh.server.protocol_handler", _DetachedSessionFilter),
    ):
        logger = logging.getLogger(name)
        if not any(type(f) is kind for f in logger.filters):
            logger.addFilter(kind())


def _url(address: str, port: int) -> str:
    host = "localhost" if address in ("", "0.0.0.0", "::") else address
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def check_store(store_path: str | Path, initial: str | None = None) -> ActivationStore:
    """Open the store (StoreError with a clear message if it is not one) and check ``initial``."""
    store = ActivationStore.open(store_path)
    if initial is not None:
        store.window(0, 1, [initial])  # ValueError naming the neuron if the store lacks it
    return store


def make_server(
    store_path: str | Path,
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    allow_origin: Sequence[str] = (),
    initial: str | None = None,
    workers: int = 2,
) -> ServerHandle:
    """Build (but do not start) the server on the current thread's event loop.

    ``port=0`` binds a free port; the websocket allow-list is made for the port actually bound.
    """
    from bokeh.application import Application
    from bokeh.server.server import BaseServer
    from bokeh.server.util import bind_sockets
    from tornado.httpserver import HTTPServer
    from tornado.ioloop import IOLoop

    store = check_store(store_path, initial)
    if not (SERVER_DIR / "app_hooks.py").is_file():
        raise LstmscopeError(
            f"the dashboard app is missing ({SERVER_DIR}); install lstmscope from a source "
            "checkout (pip install -e .)"
        )
    argv = [str(store.path.resolve()), "--workers", str(workers)]
    if initial is not None:
        argv += ["--initial", initial]
    handler = load_app(argv)
    if handler.failed:
        raise LstmscopeError(f"the dashboard app failed to load: {handler.error}")
    app = Application(handler)
    sockets, bound = bind_sockets(address, port)
    try:
        url = _url(address, bound)
        origins = _origins(bound, allow_origin)
        own = url.split("//", 1)[1].rstrip("/")  # the printed URL's host:port must load too
        if own not in origins:
            origins.append(own)
        tornado_app = _guarded_app(
            {"/": app},
            origins,
            extra_websocket_origins=origins,
            absolute_url=url.rstrip("/"),
            # Sessions of closed tabs are dropped after a minute, so memory stays flat.
            unused_session_lifetime_milliseconds=60_000,
            check_unused_sessions_milliseconds=10_000,
        )
        http = HTTPServer(tornado_app)
        http.add_sockets(sockets)
    except Exception:
        for s in sockets:
            s.close()
        raise
    server = BaseServer(IOLoop.current(), tornado_app, http)
    _quiet_closed_sends()
    log.info("dashboard for %s at %s (websocket origins %s)", store.path, url, ", ".join(origins))
    return ServerHandle(server, url, bound, address, origins)


def start_server(
    store_path: str | Path,
    *,
    port: int = 0,
    address: str = "127.0.0.1",
    allow_origin: Sequence[str] = (),
    initial: str | None = None,
    workers: int = 2,
    timeout: float = 60.0,
) -> ServerHandle:
    """Start the server on a daemon thread with its own event loop; returns once it listens."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        from tornado.ioloop import IOLoop

        try:
            handle = make_server(
                store_path, port=port, address=address, allow_origin=allow_origin,
                initial=initial, workers=workers,
            )  # fmt: skip
            handle.server.start()
        except BaseException as e:
            box["error"] = e
            ready.set()
            return
        box["handle"] = handle
        ready.set()
        loop = IOLoop.current()
        loop.start()
        loop.close(all_fds=True)

    thread = threading.Thread(target=run, name="lstmscope-server", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise RuntimeError(f"the dashboard server did not start within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    handle: ServerHandle = box["handle"]
    handle.thread = thread
    return handle


def serve(
    store_path: str | Path,
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    allow_origin: Sequence[str] = (),
    show: bool = False,
    initial: str | None = None,
) -> NoReturn:
    """Serve the dashboard for ``store_path`` until Ctrl-C (what ``lstmscope serve`` runs)."""
    handle = make_server(
        store_path, port=port, address=address, allow_origin=allow_origin, initial=initial
    )
    handle.server.start()
    # The one line a user needs: where to point the browser (stdout, so scripts can read it).
    print(f"lstmscope dashboard: {handle.url}  (Ctrl-C to stop)", flush=True)
    if address not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: anyone who can reach this machine can read the corpus", address
        )
    if show:
        handle.io_loop.add_callback(lambda: webbrowser.open_new_tab(handle.url))
    handle.server.run_until_shutdown()
    sys.exit(0)


if __name__ == "__main__":  # python -m lstmscope.server.serve STORE [PORT] (benchmarks, debugging)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(sys.argv[1], port=int(sys.argv[2]) if len(sys.argv) > 2 else 5006)
