"""Dashboard latency: how fast the view follows the user, and what many tabs cost the server.

Four measurements, each against its goal:

1. **Neuron change** (goal < 100 ms): server-side time of the Python callback that rebuilds the
   view after the unit changes, 4,000-character window (one neuron; and four stacked plus a
   feature track), and the bytes that change sends to the browser.
2. **Page load** (goal < 3 s): from navigation to the first highlighted text painted on the
   canvas, headless Chromium, a 1,000,000-character store served by ``python -m
   lstmscope.server.serve`` in a subprocess.
3. **20 concurrent sessions** (goals: no error, p95 update < 500 ms, server memory per session
   a small constant): 20 ``bokeh.client`` sessions on threads, each changing neuron 10 times;
   the update time is from setting the unit to the client document holding the new view.
   Server RSS is read from /proc before and after (anonymous memory separately: the store's
   memory-mapped pages count in RSS but are shared, file-backed and evictable).
4. **Load** (goals: no error, p95 update < 500 ms, memory flat): ``--sessions`` (20)
   simultaneous sessions for ``--duration`` (60) seconds of continuous neuron changes and
   paging, each session sending its next change as soon as the previous one is drawn (no think
   time: the worst case). Reports the number of updates, errors (protocol errors, timeouts,
   ERROR lines in the server log), p50/p95/max update latency (neuron changes and page turns
   separately and together) and the server's RSS at start, with the sessions open, at its peak
   (sampled every 0.5 s), at the end and after the sessions closed, and per session.

The store (synthetic corpus, a random-weight 2-layer LSTM: the weights do not change any of
these costs) is built once under ``--cache`` and reused; ``--store`` uses another (the demo's,
or any ``lstmscope record`` output). The server is ``python -m lstmscope.server.serve`` in a
subprocess, as ``lstmscope serve`` runs it.

    OMP_NUM_THREADS=1 python benchmarks/dashboard_latency.py [--store STORE] [--hidden 64]
    OMP_NUM_THREADS=1 python benchmarks/dashboard_latency.py --load [--sessions 20] [--duration 60]

``--load`` runs only measurement 4 (about ``--duration`` seconds plus the server's start).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the dashboard package (server/) lives in the source tree

log = logging.getLogger("dashboard_latency")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# True once the text canvas shows coloured (non-grey) pixels: the first highlighted text.
PAINTED_JS = """() => {
  const d = window.Bokeh && Bokeh.documents[0];
  const src = d && d.get_model_by_name('text_source');
  if (src == null || src.data.cidx.length == 0) return false;
  const canvases = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS') canvases.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  for (const host of document.querySelectorAll('*')) if (host.shadowRoot) walk(host.shadowRoot);
  for (const c of canvases) {
    if (c.width < 600 || c.height < 200) continue;
    const ctx = c.getContext('2d');
    if (!ctx) continue;
    // Painted = glyphs and cells on the text canvas (any pixel not near white). Colour alone
    // is no test: under the default quantile scale a counter's first window can be all white.
    const px = ctx.getImageData(0, 0, c.width, c.height).data;
    let coloured = 0;
    for (let i = 0; i < px.length; i += 4 * 7) {
      if (Math.min(px[i], px[i + 1], px[i + 2]) < 200) coloured++;
    }
    if (coloured > 50) return performance.now();
  }
  return false;
}"""


def build_store(path: Path, n_chars: int, hidden: int) -> Path:
    """The synthetic corpus recorded through a random-weight LSTM (once; reused after)."""
    if (path / "meta.json").is_file():
        return path
    import torch

    from lstmscope.model.cells import CharRNN, ModelConfig
    from lstmscope.model.checkpoint import load_model, save_checkpoint
    from lstmscope.store.recorder import record
    from lstmscope.text.synthetic import generate
    from lstmscope.text.vocab import Vocab

    torch.set_num_threads(1)
    text = generate(n_chars, seed=0).text
    vocab = Vocab.from_text(text)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=16, hidden_size=hidden, num_layers=2)
    model = CharRNN(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = path.parent / f"{path.name}.pt"
    save_checkpoint(
        ckpt, {"config": cfg.to_dict(), "vocab": list(vocab.chars), "model": model.state_dict()}
    )
    t0 = time.perf_counter()
    record(load_model(ckpt), text, path, streams=8, warmup=100, progress=False)
    log.info("recorded %d characters in %.0f s", n_chars, time.perf_counter() - t0)
    return path


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


# ----------------------------------------------------------------------------------------------
# 1. Server-side rebuild after a neuron change


def bench_update(store_path: Path, repeats: int = 30) -> dict:
    from bokeh.document import Document

    from lstmscope.server.main import make_document
    from lstmscope.server.shared import Shared
    from lstmscope.store.reader import ActivationStore

    shared = Shared(ActivationStore.open(store_path), workers=1)
    out = {}
    for label, args in (
        ("1 neuron", {"neuron": [b"L1.c.0"], "size": [b"4000"], "start": [b"500000"]}),
        (
            "4 neurons + feature",
            {
                "neuron": [b"L1.c.0", b"L0.h.1", b"L1.f.2", b"L0.c.3"],
                "size": [b"4000"],
                "start": [b"500000"],
                "feature": [b"depth_total"],
            },
        ),
    ):
        doc = Document()
        # inline=False: contexts for the card go to the worker pool, as on the server (they are
        # not part of the view rebuild the user waits for).
        app = make_document(doc, shared, args=args, inline=False)
        # Time the redraw itself: on a server a change waits for the next tick, where a burst
        # of changes becomes one redraw; that queueing is not the cost measured here.
        app.coalesce = False
        app.set_state(app.state)  # no-op warm-up
        events: list = []
        doc.on_change(events.append)
        times, card_times, sizes = [], [], []
        H = shared.store.hidden_size
        for k in range(repeats):
            events.clear()
            t0 = time.perf_counter()
            app.controls.unit.value = (k * 7 + 1) % H
            t1 = time.perf_counter()
            # What the server does on the next tick: the card's statistics, histogram and
            # recorded contexts (the sampled contexts run later, on the background thread).
            app._load_card(app.state.primary)
            times.append(t1 - t0)
            card_times.append(time.perf_counter() - t1)
            sizes.append(_event_bytes(events))
        out[label] = {
            "median_ms": 1e3 * statistics.median(times),
            "p95_ms": 1e3 * pct(times, 95),
            "card_ms": 1e3 * statistics.median(card_times),
            "bytes": int(statistics.median(sizes)),
        }
    t0 = time.perf_counter()
    shared.contexts("L1.c.5")
    out["sampled contexts"] = 1e3 * (time.perf_counter() - t0)
    shared.close()
    return out


def _event_bytes(events) -> int:
    """Bytes of the PATCH-DOC message the server would send for ``events`` (JSON and binary
    buffers), built with Bokeh's own protocol code."""
    from bokeh.protocol import Protocol

    events = [e for e in events if hasattr(e, "to_serializable")]
    if not events:
        return 0
    msg = Protocol().create("PATCH-DOC", events)
    return len(msg.content_json.encode("utf-8")) + sum(len(b.to_bytes()) for b in msg.buffers)


# ----------------------------------------------------------------------------------------------
# The server in a subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, store: Path):
        self.port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.log = open(store.parent / "bench-server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lstmscope.server.serve", str(store), str(self.port)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/"
        # Ready = listening and done choosing the initial neuron (a ranking pass over the
        # store right after start): a user arrives later than a benchmark would.
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log.name}")
            self.log.flush()
            if "initial neuron" in Path(self.log.name).read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError("server did not get ready")

    def memory_mb(self) -> dict[str, float]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) / 1024
        return out

    def errors(self) -> list[str]:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        return [ln for ln in text.splitlines() if "ERROR" in ln or "Traceback" in ln]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# ----------------------------------------------------------------------------------------------
# 2. Page load to first highlighted text


def bench_page_load(server: ServerProcess, loads: int = 4) -> dict:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for _ in range(loads):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(server.url + "?neuron=L1.c.0&start=500000", wait_until="commit")
                handle = page.wait_for_function(PAINTED_JS, timeout=60_000, polling=25)
                times.append(handle.json_value() / 1e3)  # performance.now(): since navigation
                page.close()
        finally:
            browser.close()
    return {"first_s": times[0], "median_s": statistics.median(times[1:] or times)}


# ----------------------------------------------------------------------------------------------
# 3. Concurrent sessions


class ProtocolClient:
    """A browser tab's websocket conversation, without a browser: Bokeh's own message classes
    over a tornado websocket (``bokeh.client`` drops the server's patches that arrive while it
    waits for a reply, which is exactly when a callback's results come back)."""

    def __init__(self, url: str, arguments: dict[str, str]):
        from bokeh.client.util import websocket_url_for_server_url
        from bokeh.util.strings import format_url_query_arguments
        from bokeh.util.token import generate_jwt_token, generate_session_id

        self.session_id = generate_session_id()
        self.token = generate_jwt_token(self.session_id)
        self.url = format_url_query_arguments(websocket_url_for_server_url(url), arguments)

    async def connect(self) -> None:
        from bokeh.client.websocket import WebSocketClientConnectionWrapper
        from bokeh.document import Document
        from bokeh.protocol import Protocol
        from bokeh.protocol.receiver import Receiver
        from tornado.websocket import websocket_connect

        self.protocol = Protocol()
        self.receiver = Receiver(self.protocol)
        sock = await websocket_connect(
            self.url, subprotocols=["bokeh", self.token], max_message_size=50 * 2**20
        )
        self.sock = WebSocketClientConnectionWrapper(sock)
        await self.expect("ACK")
        await self.send(self.protocol.create("PULL-DOC-REQ"))
        reply = await self.expect("PULL-DOC-REPLY")
        self.doc = Document()
        reply.push_to_document(self.doc)
        self.unit = self.doc.get_model_by_name("unit")
        self.neuron_input = self.doc.get_model_by_name("neuron_input")

    async def send(self, msg) -> None:
        await msg.send(self.sock)

    async def next_message(self):
        while True:
            fragment = await self.sock.read_message()
            if fragment is None:
                raise ConnectionError("server closed the connection")
            msg = await self.receiver.consume(fragment)
            if msg is not None:
                return msg

    async def expect(self, msgtype: str):
        while True:
            msg = await self.next_message()
            if msg.msgtype == "ERROR":
                raise RuntimeError(f"server error: {msg.content}")
            if msg.msgtype == msgtype:
                return msg

    async def change_unit(self, u: int) -> float:
        """Set the unit as a browser would; return the seconds until the server's answer (the
        neuron box showing the new id) has arrived."""
        from bokeh.document.events import ModelChangedEvent

        nid = f"L1.c.{u}"
        event = ModelChangedEvent(self.doc, self.unit, "value", u)
        self.unit.value = u
        return await self.round_trip(event, self.neuron_input.id, lambda new: new == nid)

    async def round_trip(self, event, model_id: str, arrived: Callable[[object], bool]) -> float:
        """Send ``event``; seconds until a patch sets ``model_id``'s value so ``arrived(new)``."""
        t0 = time.perf_counter()
        await self.send(self.protocol.create("PATCH-DOC", [event]))
        while True:
            msg = await self.next_message()
            if msg.msgtype == "ERROR":
                raise RuntimeError(f"server error: {msg.content}")
            if msg.msgtype != "PATCH-DOC":
                continue
            for ev in msg.content["events"]:
                model = ev.get("model") or {}
                if model.get("id") == model_id and arrived(ev.get("new")):
                    return time.perf_counter() - t0

    def close(self) -> None:
        self.sock._socket.close()


class LoadClient(ProtocolClient):
    """A :class:`ProtocolClient` that also turns pages (a click on the page buttons, as BokehJS
    sends it) and knows which window it shows."""

    async def connect(self) -> None:
        await super().connect()
        # The server knows every model of the pulled document: events must name them by
        # reference, not carry copies (Bokeh warns "reference already known" otherwise).
        self.doc.models.flush_synced()
        self.page_info = self.doc.get_model_by_name("page_info")
        self.size = int(self.doc.get_model_by_name("page_size").value)
        # "characters 4,000–8,000 of 1,000,000"
        nums = [int(x.replace(",", "")) for x in re.findall(r"[\d,]+", self.page_info.text)]
        self.start, self.n = nums[0], nums[-1]

    async def turn_page(self) -> float:
        """Next page (previous at the end); seconds until the new window's text is back."""
        from bokeh import events
        from bokeh.document.events import MessageSentEvent

        step = 1 if self.start + self.size < self.n else -1
        button = self.doc.get_model_by_name("next_page" if step > 0 else "prev_page")
        new = max(0, self.start + step * self.size)
        want = f"characters {new:,}–"
        event = MessageSentEvent(self.doc, "bokeh_event", events.ButtonClick(button))
        dt = await self.round_trip(
            event, self.page_info.id, lambda text: str(text).startswith(want)
        )
        self.start = new
        return dt


def bench_load(
    server: ServerProcess, n_sessions: int = 20, duration: float = 60.0, size: int = 4000
) -> dict:
    """``n_sessions`` sessions, each alternating neuron changes and page turns without pause
    for ``duration`` seconds; every update's latency, every error, the server's memory."""
    import asyncio
    import random

    lat: dict[str, list[float]] = {"neuron": [], "page": []}
    errors: list[str] = []
    mem: dict[str, dict[str, float]] = {}
    peak: dict[str, float] = {}

    async def sample_memory(stop: asyncio.Event) -> None:
        while not stop.is_set():
            for k, v in server.memory_mb().items():
                peak[k] = max(peak.get(k, 0.0), v)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def session(k: int, c: LoadClient, deadline: float) -> None:
        rng = random.Random(k)
        H = int(c.unit.high) + 1
        u = int(c.unit.value)
        j = 0
        while time.perf_counter() < deadline:
            try:
                if j % 2 == 0:
                    u = (u + rng.randrange(1, H)) % H
                    lat["neuron"].append(await asyncio.wait_for(c.change_unit(u), 60))
                else:
                    lat["page"].append(await asyncio.wait_for(c.turn_page(), 60))
            except Exception as e:  # counted and reported: the goal is none
                errors.append(f"session {k}, update {j}: {e!r}")
                return
            j += 1

    async def run() -> float:
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(sample_memory(stop))
        mem["start"] = server.memory_mb()
        clients: list[LoadClient] = []
        for k in range(n_sessions):
            c = LoadClient(server.url, {"neuron": f"L1.c.{k}", "size": str(size)})
            try:
                await c.connect()
                clients.append(c)
            except Exception as e:
                errors.append(f"connect {k}: {e!r}")
        await asyncio.sleep(2.0)  # the card's contexts of every new tab, computed and sent
        mem["open"] = server.memory_mb()
        t0 = time.perf_counter()
        await asyncio.gather(*(session(k, c, t0 + duration) for k, c in enumerate(clients)))
        wall = time.perf_counter() - t0
        mem["end"] = server.memory_mb()
        for c in clients:
            c.close()
        await asyncio.sleep(2.0)
        mem["closed"] = server.memory_mb()
        stop.set()
        await sampler
        return wall

    wall = asyncio.run(run())
    both = lat["neuron"] + lat["page"]

    def summary(xs: list[float]) -> dict[str, float]:
        return {
            "n": len(xs),
            "p50_ms": 1e3 * pct(xs, 50),
            "p95_ms": 1e3 * pct(xs, 95),
            "max_ms": 1e3 * max(xs) if xs else float("nan"),
        }

    return {
        "sessions": n_sessions,
        "wall_s": wall,
        "all": summary(both),
        "neuron": summary(lat["neuron"]),
        "page": summary(lat["page"]),
        "errors": errors + server.errors(),
        "memory": {**mem, "peak": peak},
    }


def report_load(r: dict) -> None:
    a = r["all"]
    ok = "ok" if not r["errors"] and a["p95_ms"] < 500 else "OVER GOAL"
    log.info(
        "load: %d sessions, %.0f s of continuous neuron changes and page turns: %d updates "
        "(%.0f a second), %d errors; latency p50 %.0f ms, p95 %.0f ms, max %.0f ms "
        "(goal: no error, p95 < 500 ms: %s)",
        r["sessions"], r["wall_s"], a["n"], a["n"] / r["wall_s"], len(r["errors"]),
        a["p50_ms"], a["p95_ms"], a["max_ms"], ok,
    )  # fmt: skip
    for kind in ("neuron", "page"):
        k = r[kind]
        log.info(
            "  %s: %d updates, p50 %.0f ms, p95 %.0f ms, max %.0f ms",
            "neuron changes" if kind == "neuron" else "page turns",
            k["n"], k["p50_ms"], k["p95_ms"], k["max_ms"],
        )  # fmt: skip
    for e in r["errors"][:5]:
        log.info("  error: %s", e)
    m = r["memory"]
    n = max(r["sessions"], 1)
    log.info(
        "  server RSS: start %.0f MB, sessions open %.0f MB, peak %.0f MB, end %.0f MB, after "
        "closing %.0f MB",
        m["start"]["VmRSS"], m["open"]["VmRSS"], m["peak"]["VmRSS"], m["end"]["VmRSS"],
        m["closed"]["VmRSS"],
    )  # fmt: skip
    log.info(
        "  anonymous memory: start %.0f MB, open %.0f MB (%.1f MB per session), peak %.0f MB, "
        "end %.0f MB (%.1f MB per session over the start); file-backed store pages %.0f -> %.0f "
        "MB",
        m["start"]["RssAnon"], m["open"]["RssAnon"],
        (m["open"]["RssAnon"] - m["start"]["RssAnon"]) / n, m["peak"]["RssAnon"],
        m["end"]["RssAnon"], (m["end"]["RssAnon"] - m["start"]["RssAnon"]) / n,
        m["start"]["RssFile"], m["end"]["RssFile"],
    )  # fmt: skip


def bench_sessions(
    server: ServerProcess, n_sessions: int = 20, changes: int = 10, think_s: float = 0.0
) -> dict:
    """Every session changes neuron ``changes`` times. ``think_s=0``: all at the same instant,
    each waiting only for its own answer (the worst case: every update queues behind all the
    others). ``think_s>0``: a pause drawn from [0.25, 1] * think_s before each change, like
    people clicking through units."""
    import asyncio
    import random

    latencies: list[float] = []
    errors: list[str] = []

    async def one(k: int, clients: list) -> None:
        c = ProtocolClient(server.url, {"neuron": f"L1.c.{k}", "size": "4000"})
        await c.connect()
        clients.append(c)

    async def work(c: ProtocolClient, k: int) -> None:
        H = c.unit.high + 1
        rng = random.Random(k)
        for j in range(changes):
            if think_s > 0:
                await asyncio.sleep(think_s * rng.uniform(0.25, 1.0))
            u = (k * 13 + j * 7 + 1) % H
            if u == c.unit.value:
                u = (u + 1) % H
            latencies.append(await asyncio.wait_for(c.change_unit(u), 60))

    async def run() -> float:
        clients: list[ProtocolClient] = []
        for r in await asyncio.gather(
            *(one(k, clients) for k in range(n_sessions)), return_exceptions=True
        ):
            if isinstance(r, BaseException):
                errors.append(f"connect: {r!r}")
        t0 = time.perf_counter()
        for r in await asyncio.gather(
            *(work(c, k) for k, c in enumerate(clients)), return_exceptions=True
        ):
            if isinstance(r, BaseException):
                errors.append(repr(r))
        wall = time.perf_counter() - t0
        box["mid"] = server.memory_mb()
        for c in clients:
            c.close()
        return wall

    box: dict = {}
    before = server.memory_mb()
    wall = asyncio.run(run())
    after = box["mid"]
    return {
        "sessions": n_sessions,
        "updates": len(latencies),
        "errors": errors + server.errors(),
        "median_ms": 1e3 * statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": 1e3 * pct(latencies, 95),
        "max_ms": 1e3 * max(latencies) if latencies else float("nan"),
        "wall_s": wall,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "anon_per_session_mb": (after["RssAnon"] - before["RssAnon"]) / n_sessions,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, help="an existing store (else one is built)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lstmscope-bench"))
    ap.add_argument("--chars", type=int, default=1_000_000)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--think", type=float, default=2.0, help="longest pause between changes")
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--load", action="store_true", help="only the load test (measurement 4)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of the load test")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("bokeh").setLevel(logging.WARNING)
    store = args.store or build_store(
        args.cache / f"synthetic-{args.chars}-h{args.hidden}", args.chars, args.hidden
    )
    from lstmscope.store.reader import ActivationStore

    s = ActivationStore.open(store)
    log.info("store %s: %d characters, %d neurons", store, s.n, len(s.neurons))

    if args.load:
        server = ServerProcess(store)
        try:
            report_load(bench_load(server, args.sessions, args.duration))
        finally:
            server.stop()
        return

    res = bench_update(store)
    sampled = res.pop("sampled contexts")
    for label, r in res.items():
        ok = "ok" if r["median_ms"] + r["card_ms"] < 100 else "OVER GOAL"
        log.info(
            "neuron change, 4,000 characters, %s: text view median %.1f ms (p95 %.1f ms), then "
            "card %.1f ms; %.0f kB sent (goal < 100 ms: %s)",
            label, r["median_ms"], r["p95_ms"], r["card_ms"], r["bytes"] / 1e3, ok,
        )  # fmt: skip
    log.info("card's sampled contexts (background thread, after %d ms): %.0f ms", 800, sampled)

    server = ServerProcess(store)
    try:
        if not args.skip_browser and Path(CHROMIUM).exists():
            pl = bench_page_load(server)
            ok = "ok" if pl["median_s"] < 3 else "OVER GOAL"
            log.info(
                "page load to first highlighted text, %d characters: first %.2f s, then median "
                "%.2f s (goal < 3 s: %s)",
                s.n, pl["first_s"], pl["median_s"], ok,
            )  # fmt: skip
        for think, how in ((0.0, "all at once"), (args.think, f"think time ≤ {args.think:g} s")):
            cs = bench_sessions(server, args.sessions, think_s=think)
            ok = "ok" if not cs["errors"] and cs["p95_ms"] < 500 else "OVER GOAL"
            log.info(
                "%d concurrent sessions (%s), %d neuron changes: median %.0f ms, p95 %.0f ms, "
                "max %.0f ms, %d errors (goal: none, p95 < 500 ms: %s)",
                cs["sessions"], how, cs["updates"], cs["median_ms"], cs["p95_ms"], cs["max_ms"],
                len(cs["errors"]), ok,
            )  # fmt: skip
            for e in cs["errors"][:5]:
                log.info("  error: %s", e)
        b, a = cs["rss_before_mb"], cs["rss_after_mb"]
        log.info(
            "server memory: RSS %.0f -> %.0f MB (anonymous %.0f -> %.0f MB, %.1f MB per session; "
            "file-backed store pages %.0f -> %.0f MB)",
            b["VmRSS"], a["VmRSS"], b["RssAnon"], a["RssAnon"], cs["anon_per_session_mb"],
            b["RssFile"], a["RssFile"],
        )  # fmt: skip
        report_load(bench_load(server, args.sessions, args.duration))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
