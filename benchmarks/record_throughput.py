"""How fast `record` is, next to the model's bare forward pass and a naive recorder.

For each model (a 2x256 LSTM with embed 64 standing in for the demo model, a 3x512 LSTM, or a
real checkpoint with --model PATH / demo), in one run:

  bare    the fused forward pass alone: same streams B and chunk length T, no_grad, no output
  trace   every kind of every layer and the predictions computed but not kept, by each method:
          "kernel" (fused kernel, then the gates rebuilt by two matmuls; what runs on a GPU) and
          "steps" (our own loop over time that keeps each gate as it computes it; CPU default)
  record  lstmscope.store.recorder.record: every kind of every layer to disk, with statistics
  naive   one stream, position by position: torch.nn.LSTMCell for h and c, the gates written
          out, every kind stored into float16 .npy memory maps

and the ratios record/bare and record/naive, bytes per character on disk and the time to open
the store. Also the trace alone on one thread (``record`` traces on one thread while its
statistics take the other: this is its ceiling) and the statistics alone, compiled (the CPU
default) and torch, in CPU microseconds per character. With --rss, the peak resident memory of
recording --rss-sizes characters, each in a fresh subprocess (resource.getrusage), to show it
does not grow with N.

    .venv/bin/python benchmarks/record_throughput.py
    .venv/bin/python benchmarks/record_throughput.py --model demo --chars 200000 --rss

Random text over a ~100-character vocabulary unless --text files are given. The numbers depend
on the machine and on what else runs on it: the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lstmscope.model.cells import CharRNN, ModelConfig
from lstmscope.model.checkpoint import LoadedModel, load_model
from lstmscope.model.plan import plan_streams
from lstmscope.model.trace import Workspace, run_plan
from lstmscope.store.reader import ActivationStore
from lstmscope.store.recorder import default_chunk_len, record
from lstmscope.store.stats import KindStats
from lstmscope.text.vocab import Vocab

VOCAB = "".join(chr(c) for c in range(32, 127)) + "\n\t\u00e9\u00fc\u2014"  # 100 characters


def random_text(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    chars = np.array(list(VOCAB))
    return "".join(chars[rng.integers(0, len(chars), n)])


def stand_in(hidden: int, layers: int, embed: int = 64) -> LoadedModel:
    vocab = Vocab.from_text(VOCAB)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=embed, hidden_size=hidden, num_layers=layers)
    torch.manual_seed(0)
    model = CharRNN(cfg).eval()
    return LoadedModel(model, vocab, cfg, Path(f"stand-in-{layers}x{hidden}"), "0" * 64, {})


class Clock:
    """Wall time, this process's CPU time (all threads, user + system) and the calling thread's.

    On a shared machine the wall clock also counts waiting for a core; CPU time does not, so
    ratios of CPU rates say more about the code when the load average is high. ``record`` runs
    its statistics and writes in helper threads: the calling thread's CPU time is its critical
    path, the rate it would reach with a free core per thread.
    """

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.main = time.thread_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.main = time.thread_time() - self.main


def bare_forward(loaded: LoadedModel, ids: np.ndarray, streams: int, chunk_len: int) -> Clock:
    """The model's own forward pass over B streams in chunks, state carried."""
    n = (len(ids) // streams) * streams
    x = torch.from_numpy(ids[:n].reshape(streams, -1))  # [B, n/B]
    with Clock() as clock, torch.no_grad():
        state = None
        for a in range(0, x.shape[1], chunk_len):
            _, state = loaded.model(x[:, a : a + chunk_len], state)
    clock.n = n
    return clock


def trace_only(
    loaded: LoadedModel, ids: np.ndarray, streams: int, chunk_len: int, method: str
) -> Clock:
    """Everything ``record`` computes (all kinds, loss, top-5), handed to a callback that drops
    it: the trace's share of the cost."""
    plan = plan_streams(len(ids), streams, chunk_len)
    with Clock() as clock:
        for _ in run_plan(loaded.model, ids, plan, on_layer=lambda k, li, acts: None,
                          workspace=Workspace(), method=method):  # fmt: skip
            pass
    clock.n = len(ids)
    return clock


def stats_only(H: int, n_arrays: int, rows: int, fused: bool) -> float:
    """CPU microseconds per character of the per-neuron statistics alone, for all ``n_arrays``
    arrays, on one thread: the compiled loops (``fused``, the CPU default) or the torch code."""
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(rows, H, generator=g) for _ in range(4)]
    kinds = ("h", "c", "i", "f", "g", "o")
    stats = [KindStats(kinds[a % 6], H, "cpu", fused=fused) for a in range(n_arrays)]
    with torch_threads(1):
        for st in stats:  # warm-up (and compilation)
            st.update(chunks[0], chunks[0].half(), torch.arange(rows))
        t0 = time.thread_time()
        for k, v in enumerate(chunks[1:], 1):
            v16, pos = v.half(), torch.arange(rows) + k * rows
            for st in stats:
                st.update(v, v16, pos)
        return (time.thread_time() - t0) / (3 * rows) * 1e6


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` for the block, then put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def naive_record(loaded: LoadedModel, ids: np.ndarray, folder: Path) -> Clock:
    """The obvious recorder: one position at a time, every kind to float16 files."""
    model = loaded.model
    H = loaded.config.hidden_size
    n = len(ids)
    cells, arrays = [], {}
    for li, layer in enumerate(model.layers):
        r = layer.rnn
        cell = torch.nn.LSTMCell(r.input_size, H)
        cell.load_state_dict(
            {
                "weight_ih": r.weight_ih_l0,
                "weight_hh": r.weight_hh_l0,
                "bias_ih": r.bias_ih_l0,
                "bias_hh": r.bias_hh_l0,
            }
        )
        cells.append(cell)
        for kind in "hcifgo":
            arrays[(li, kind)] = np.lib.format.open_memmap(
                folder / f"L{li}.{kind}.npy", "w+", np.float16, (n, H)
            )
    loss = np.lib.format.open_memmap(folder / "loss.npy", "w+", np.float32, (n,))
    with Clock() as clock, torch.no_grad():
        state = [(torch.zeros(1, H), torch.zeros(1, H)) for _ in cells]
        for t in range(n):
            x = model.embed.weight[int(ids[t])].unsqueeze(0)
            for li, cell in enumerate(cells):
                h, c = state[li]
                pre = x @ cell.weight_ih.t() + cell.bias_ih + h @ cell.weight_hh.t() + cell.bias_hh
                i, f, g, o = pre.chunk(4, dim=1)
                gates = {"i": i.sigmoid(), "f": f.sigmoid(), "g": g.tanh(), "o": o.sigmoid()}
                h, c = cell(x, (h, c))
                state[li] = (h, c)
                for kind, val in {"h": h, "c": c, **gates}.items():
                    arrays[(li, kind)][t] = val[0].numpy()
                x = h
            if t + 1 < n:
                lp = torch.log_softmax(model.head(x), dim=-1)
                loss[t + 1] = -float(lp[0, int(ids[t + 1])]) / np.log(2)
        for a in arrays.values():
            a.flush()
    clock.n = n
    return clock


def measure(loaded: LoadedModel, text: str, streams: int, naive_chars: int) -> dict:
    H = loaded.config.hidden_size
    n_arrays = loaded.config.num_layers * 6
    chunk_len = default_chunk_len(streams, H, 6)
    ids = loaded.vocab.encode(text)
    row = {
        "model": f"{loaded.config.num_layers}x{H} {loaded.config.cell}",
        "chars": len(text),
        "B": streams,
        "T": chunk_len,
    }
    c = bare_forward(loaded, ids, streams, chunk_len)
    row["bare"], row["bare cpu"] = c.n / c.wall, c.n / c.cpu
    if loaded.config.cell == "lstm":
        for method in ("kernel", "steps"):
            c = trace_only(loaded, ids, streams, chunk_len, method)
            row[f"trace {method}"] = c.n / c.wall
        # record traces on one thread (the statistics get the other): its ceiling
        with torch_threads(1):
            c = trace_only(loaded, ids, streams, chunk_len, "steps")
        row["trace steps 1 thread"] = c.n / c.wall
    rows_per_chunk = streams * chunk_len
    row["stats us/char"] = stats_only(H, n_arrays, rows_per_chunk, fused=True)
    row["stats us/char torch"] = stats_only(H, n_arrays, rows_per_chunk, fused=False)
    with tempfile.TemporaryDirectory(prefix="lstmscope-bench-") as tmp:
        with Clock() as c:
            s = record(
                loaded, text, Path(tmp) / "store", streams=streams, warmup=200, progress=False
            )
        row["record"], row["record cpu"] = len(text) / c.wall, len(text) / c.cpu
        row["record main-thread cpu"] = len(text) / c.main
        row["bytes/char"] = s.bytes / len(text)
        row["activation bytes/char"] = n_arrays * H * 2
        t0 = time.perf_counter()
        for _ in range(20):
            ActivationStore.open(Path(tmp) / "store")
        row["open ms"] = (time.perf_counter() - t0) / 20 * 1e3
    if naive_chars and loaded.config.cell == "lstm":
        with tempfile.TemporaryDirectory(prefix="lstmscope-naive-") as tmp:
            c = naive_record(loaded, ids[:naive_chars], Path(tmp))
            row["naive"], row["naive cpu"] = c.n / c.wall, c.n / c.cpu
    for what in ("bare", "naive"):
        if what in row:
            row[f"record/{what}"] = row["record"] / row[what]
            row[f"record/{what} cpu"] = row["record cpu"] / row[f"{what} cpu"]
    return row


RSS_CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
import torch
sys.path.insert(0, {bench!r})
from record_throughput import random_text, stand_in
from lstmscope.model.checkpoint import load_model
from lstmscope.store.recorder import record
spec, n, streams, threads = {spec!r}, {n}, {streams}, {threads}
if threads:
    torch.set_num_threads(threads)
loaded = stand_in(256, 2) if spec is None else load_model(spec)
text = random_text(n, seed=1)
text = "".join(c if c in set(loaded.vocab.chars) else " " for c in text) if spec else text
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tempfile.TemporaryDirectory(prefix="lstmscope-rss-") as tmp:
    t0 = time.perf_counter()
    s = record(loaded, text, Path(tmp) / "s", streams=streams, warmup=200, progress=False)
    dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"n": n, "peak_rss_mb": peak / 1024, "before_record_mb": before / 1024,
                  "chars_per_s": n / dt, "store_gb": s.bytes / 1e9}}))
"""


def peak_rss(spec: str | None, n: int, streams: int, threads: int) -> dict:
    code = RSS_CHILD.format(
        bench=str(Path(__file__).parent), spec=spec, n=n, streams=streams, threads=threads
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a run directory, checkpoint or 'demo' (default: stand-ins)")
    ap.add_argument("--chars", type=int, default=100_000, help="characters recorded per model")
    ap.add_argument("--big-chars", type=int, default=30_000, help="characters for the 3x512")
    ap.add_argument("--naive-chars", type=int, default=2_000, help="0 to skip the naive recorder")
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--text", nargs="*", help="text files to record instead of random text")
    ap.add_argument("--rss", action="store_true", help="also measure peak RSS by text length")
    ap.add_argument("--rss-sizes", default="250000,1000000")
    ap.add_argument("--rss-only", action="store_true", help="skip the throughput comparison")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}")

    def text_for(loaded: LoadedModel, n: int) -> str:
        if args.text:
            text = "".join(Path(p).read_text(encoding="utf-8", errors="replace") for p in args.text)
            return (text * (n // max(len(text), 1) + 1))[:n]
        text = random_text(n)
        known = set(loaded.vocab.chars)
        return "".join(c if c in known else " " for c in text) if args.model else text

    if args.rss_only:
        models = []
    elif args.model:
        models = [(load_model(args.model), args.chars)]
    else:
        models = [(stand_in(256, 2), args.chars), (stand_in(512, 3), args.big_chars)]
    rows = []
    for loaded, n in [] if args.rss_only else models:
        row = measure(loaded, text_for(loaded, n), args.streams, args.naive_chars)
        rows.append(row)
        nan = float("nan")
        print(
            f"{row['model']:>12}  N={row['chars']:,}  B={row['B']} T={row['T']}  "
            f"{row['bytes/char']:,.0f} bytes/char on disk "
            f"({row['activation bytes/char']:,} of them activations), open {row['open ms']:.1f} ms"
        )
        for clock, suffix in (("wall", ""), ("cpu ", " cpu")):
            print(
                f"    chars/s by {clock}: bare {row['bare' + suffix]:9,.0f}  "
                f"record {row['record' + suffix]:9,.0f}  naive {row.get('naive' + suffix, nan):7,.0f}"
                f"  |  record/bare {row['record/bare' + suffix]:.2f}"
                f"  record/naive {row.get('record/naive' + suffix, nan):5.1f}x"
            )
        if "trace steps" in row:
            print(
                f"    trace only (nothing kept), wall: kernel+rebuild {row['trace kernel']:9,.0f}"
                f"  steps {row['trace steps']:9,.0f}  |  /bare {row['trace kernel'] / row['bare']:.2f}"
                f" and {row['trace steps'] / row['bare']:.2f}"
            )
        if "trace steps 1 thread" in row:
            print(
                f"    trace only, steps, one thread: {row['trace steps 1 thread']:9,.0f}"
                f"  |  /bare {row['trace steps 1 thread'] / row['bare']:.2f}"
            )
        print(
            f"    record, calling thread's cpu only: {row['record main-thread cpu']:9,.0f} chars/s"
            f"  |  /bare cpu {row['record main-thread cpu'] / row['bare cpu']:.2f}"
        )
        print(
            f"    statistics alone, one thread: compiled {row['stats us/char']:.1f} us/char,"
            f" torch {row['stats us/char torch']:.1f} us/char"
            f" ({row['stats us/char torch'] / row['stats us/char']:.1f}x)"
        )
    rss = []
    if args.rss or args.rss_only:
        for n in (int(x) for x in args.rss_sizes.split(",")):
            r = peak_rss(args.model, n, args.streams, args.threads)
            rss.append(r)
            print(
                f"record {n:,} chars: peak RSS {r['peak_rss_mb']:,.0f} MB "
                f"(before recording {r['before_record_mb']:,.0f} MB), {r['chars_per_s']:,.0f} chars/s, "
                f"store {r['store_gb']:.2f} GB"
            )
    print(f"load afterwards {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "rss": rss}, indent=1))


if __name__ == "__main__":
    main()
