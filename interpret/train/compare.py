"""RNN vs GRU vs LSTM vs "LSTM passing its cell state", at one parameter budget and time."""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from lstmscope.disk import atomic_write_text
from lstmscope.model.cells import CharRNN, ModelConfig, count_parameters
from lstmscope.text.vocab import Vocab
from lstmscope.train.curves import line_plot_html
from lstmscope.train.loop import TrainConfig, train

log = logging.getLogger(__name__)

VARIANTS = {
    "rnn": ("rnn", "h"),
    "gru": ("gru", "h"),
    "lstm": ("lstm", "h"),
    "lstm-c": ("lstm", "c"),
}


def hidden_for_budget(base: ModelConfig, cell: str, output: str, budget: int) -> int:
    """The hidden size whose model has the parameter count closest to ``budget``."""
    best, best_gap = 1, None
    lo, hi = 1, 4096
    while lo <= hi:  # parameter count grows monotonically with the hidden size
        mid = (lo + hi) // 2
        n = count_parameters(CharRNN(replace(base, cell=cell, output=output, hidden_size=mid)))
        gap = abs(n - budget)
        if best_gap is None or gap < best_gap:
            best, best_gap = mid, gap
        if n < budget:
            lo = mid + 1
        else:
            hi = mid - 1
    return best


def compare(
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    vocab: Vocab,
    base: ModelConfig,
    tcfg: TrainConfig,
    cells: list[str],
    out: str | Path,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """Train each variant with the LSTM's parameter count and the same time budget.

    Each variant trains in ``out/<name>`` with ``resume``: rerunning an interrupted comparison
    finishes the variants that were cut short (their time budget carries over) and does not
    retrain the finished ones.
    """
    out = Path(out)
    unknown = [c for c in cells if c not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown cells {unknown}: choose from {', '.join(VARIANTS)}")
    budget = count_parameters(CharRNN(replace(base, cell="lstm", output="h")))
    rows, curves = [], {}
    for name in cells:
        cell, output = VARIANTS[name]
        hidden = hidden_for_budget(base, cell, output, budget)
        mcfg = replace(base, cell=cell, output=output, hidden_size=hidden)
        log.info("compare: %s with hidden %d (%d parameters)", name, hidden,
                 count_parameters(CharRNN(mcfg)))  # fmt: skip
        res = train(train_ids, val_ids, vocab, mcfg, tcfg, out / name, progress=progress,
                    resume=True)  # fmt: skip
        hist = pd.read_csv(out / name / "log.csv")
        curves[name] = (hist["time_s"].tolist(), hist["val_bpc"].tolist())
        rows.append({"cell": name, "hidden": hidden, "parameters": count_parameters(CharRNN(mcfg)),
                     "steps": res.step, "best_val_bpc": round(res.best_val_bpc, 4),
                     "chars_per_s": float(hist["chars_per_s"].iloc[-1])})  # fmt: skip
    table = pd.DataFrame(rows).sort_values("best_val_bpc").reset_index(drop=True)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    atomic_write_text(out / "comparison.csv", buf.getvalue())
    atomic_write_text(out / "comparison.md", _markdown(table))
    atomic_write_text(out / "comparison.html", line_plot_html(
        curves, title="validation bpc by cell type (same parameters, same time)",
        xlabel="seconds", ylabel="val bits per character"))  # fmt: skip
    return table


def _markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in r) + " |\n" for r in df.itertuples(False))
    return head + body
