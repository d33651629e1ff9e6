"""How fast the analysis is on a 1M-character store.

Takes a store (``--store PATH``) or records one: a random-weight 2x256 LSTM (embed 64) over the
first ``--chars`` characters of the Python standard library (``lstmscope.text.recipes.python_stdlib``),
every kind of every layer, into ``--out`` (reused when it already holds that recording). Then
times, each twice (the first run may read the arrays from disk, the second from the page cache):

  rank binary   all neurons against one binary feature: the histogram screen alone
                (exact=0), then with the exact top 200 (the default, what the dashboard
                shows; goal < 2 s) and the exact top 50; the rows recomputed are printed
  rank graded   all neurons against one graded feature (goal < 5 s)
  rank graded x8  eight graded features in one shared pass (what detect does)
  contexts      one neuron's top, bottom and quantile contexts
  select/match  neurons of a span, then matching spans over the whole corpus
  saturation    every gate unit's saturation

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/analysis_speed.py
    .venv/bin/python benchmarks/analysis_speed.py --store runs/store --threads 2
    .venv/bin/python benchmarks/analysis_speed.py --only rank   # the rankings alone

Feature values are computed once per store and cached; that one-off cost is printed apart. The
numbers depend on the machine and what else runs on it: the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("analysis_speed")


def build_store(out: Path, chars: int, kinds: list[str] | None) -> Path:
    import torch

    from lstmscope.model.cells import CharRNN, ModelConfig
    from lstmscope.model.checkpoint import LoadedModel
    from lstmscope.store.recorder import record
    from lstmscope.text.corpus import join_documents
    from lstmscope.text.recipes import python_stdlib
    from lstmscope.text.vocab import Vocab

    text, _ = join_documents(python_stdlib())
    text = text[:chars]
    vocab = Vocab.from_text(text)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=64, hidden_size=256, num_layers=2)
    torch.manual_seed(0)
    model = CharRNN(cfg).eval()
    loaded = LoadedModel(model, vocab, cfg, Path("random-2x256"), "0" * 64, {})
    t0 = time.perf_counter()
    s = record(loaded, text, out, kinds=kinds, progress=True)
    if not s.already_complete:
        print(f"recorded {s.n:,} chars in {time.perf_counter() - t0:.1f} s "
              f"({s.bytes / 1e9:.2f} GB)")  # fmt: skip
    return out


def timed(label: str, fn, repeat: int = 2):
    out = None
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    print(f"{label:<44s} " + "  ".join(f"{t:7.3f} s" for t in times))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", type=Path, help="an existing store (default: record one)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/lstmscope-bench-store"))
    ap.add_argument("--chars", type=int, default=1_000_000)
    ap.add_argument("--kinds", default=None, help="kinds to record, e.g. h,c (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads")
    ap.add_argument("--only", choices=["rank"], help="stop after the binary rankings")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    from lstmscope.analysis.contexts import contexts
    from lstmscope.analysis.rank import feature_values, rank, rank_many
    from lstmscope.analysis.saturation import saturation
    from lstmscope.analysis.search import match_spans, select_neurons
    from lstmscope.store.reader import ActivationStore

    path = args.store or build_store(
        args.out, args.chars, args.kinds.split(",") if args.kinds else None
    )
    st = ActivationStore.open(path)
    print(f"{st!r}\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"{args.threads} thread(s); times: first run, second run")  # fmt: skip

    t0 = time.perf_counter()
    feature_values(st, "in_url")  # computes and caches every built-in feature
    print(f"{'features over the text (once per store)':<44s} {time.perf_counter() - t0:7.3f} s")

    warm = ~st.cold
    for name in ("in_url", "in_comment", "is_upper"):
        y = feature_values(st, name)
        prev = float(y[warm].mean())
        for exact in (0, 200, 50):
            df = timed(f"rank binary {name} ({prev:.2%} on) exact={exact}",
                       lambda y=y, e=exact: rank(st, y, kind="binary", exact=e))  # fmt: skip
            if exact:
                print(f"    {int(df.exact.sum())} rows exact, head certain: "
                      f"{df.attrs['exact_sure']}")  # fmt: skip
        top = df.iloc[0]
        print(f"    top {top.neuron} AP {top.ap:.3f} AUROC {top.auroc:.3f} F1 {top.f1:.3f}")
    if args.only == "rank":
        return
    y = feature_values(st, "depth_total")
    df = timed("rank graded depth_total", lambda: rank(st, y, kind="graded"))
    print(f"    top {df.iloc[0].neuron} r {df.iloc[0].r:+.3f}")
    names = ["depth_paren", "depth_square", "depth_curly", "depth_total", "indent", "column",
             "to_eol", "word_pos"]  # fmt: skip
    graded = {nm: feature_values(st, nm) for nm in names}
    timed("rank graded x8 (one shared pass)", lambda: rank_many(st, graded, kind="graded"))
    nid = str(df.iloc[0].neuron)
    timed(f"contexts {nid}", lambda: contexts(st, nid))
    timed(f"contexts {nid} (no quantiles)", lambda: contexts(st, nid, quantiles=()))
    urls = np.flatnonzero(np.diff(feature_values(st, "in_url").astype(np.int8)) == 1)
    if len(urls):
        a = int(urls[len(urls) // 2]) + 1
        b = a + 20
        sel = timed(f"select_neurons [{a}, {b})", lambda: select_neurons(st, a, b))
        sel = sel[sel.passes].head(5) if sel.passes.any() else sel.head(3)
        timed(f"match_spans ({len(sel)} neurons, whole corpus)", lambda: match_spans(st, sel))
    timed("saturation", lambda: saturation(st))


if __name__ == "__main__":
    main()
