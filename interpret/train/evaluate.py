"""Text read as carried-state streams, and the bits per character a model scores on it.

``StreamBatches`` cuts one id array into ``batch`` contiguous streams, as char-rnn does: batch
``k`` reads characters ``[k*T, (k+1)*T)`` of every stream, so a model that carries its state from
batch to batch sees long contexts. Training reads its batches this way (``loop``), and so does
``evaluate_bpc`` on held-out text; ``val_bpc_by_corpus`` scores each source corpus of a corpus
folder's val split on its own (``lstmscope export-model --data``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lstmscope.errors import LstmscopeError
from lstmscope.model.cells import CharRNN
from lstmscope.model.checkpoint import LoadedModel
from lstmscope.text.corpus import load_text
from lstmscope.text.recipes import corpus_group

log = logging.getLogger(__name__)
LN2 = math.log(2.0)


class StreamBatches:
    """Contiguous streams over one id array; batch ``k`` is a pure function of ``k``."""

    def __init__(self, ids: np.ndarray, batch: int, seq_len: int, rows: slice = slice(None)):
        self.stream_len = (len(ids) - 1) // batch
        if self.stream_len < seq_len + 1:
            raise LstmscopeError(
                f"training text too short: {len(ids):,} characters for {batch} streams of "
                f"{seq_len + 1} characters; lower --batch or --seq-len, or add text"
            )
        self.seq_len = seq_len
        usable = batch * self.stream_len
        data = torch.from_numpy(ids[: usable + 1].astype(np.int64))
        self.x = data[:usable].view(batch, self.stream_len)[rows]
        self.y = data[1 : usable + 1].view(batch, self.stream_len)[rows]
        self.steps_per_epoch = (self.stream_len - 1) // seq_len

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(x, y, fresh): ``fresh`` says an epoch starts here, so the state must be reset."""
        k = step % self.steps_per_epoch
        s = slice(k * self.seq_len, (k + 1) * self.seq_len)
        return self.x[:, s], self.y[:, s], k == 0


@torch.no_grad()
def evaluate_bpc(
    model: CharRNN,
    ids: np.ndarray,
    device,
    *,
    streams: int = 32,
    seq_len: int = 256,
    max_chars: int = 0,
    bf16: bool = False,
) -> float:
    """Bits per character of ``model`` on ``ids``, read as carried-state streams."""
    if max_chars and len(ids) > max_chars:
        ids = ids[:max_chars]
    streams = max(1, min(streams, (len(ids) - 1) // 2))
    batches = StreamBatches(ids, streams, min(seq_len, (len(ids) - 1) // streams - 1))
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    for k in range(batches.steps_per_epoch):
        x, y, _ = batches.get(k)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, state = model(x.to(device), state)
        loss = nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), y.to(device).reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += y.numel()
    model.train(was_training)
    return total / max(count, 1) / LN2


def val_bpc_by_corpus(loaded: LoadedModel, folder: Path, eval_chars: int) -> tuple[dict, dict]:
    """Bits per character on a corpus folder's val split, per source corpus and ``all``.

    Each source corpus is scored on at most ``eval_chars`` characters, ``all`` on the whole
    split. Returns ``({corpus: bpc, ..., "all": bpc}, the folder's manifest)``.
    """
    src = load_text([str(folder)], "val")  # checked against the manifest, newlines kept
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    val = src.text
    groups: dict[str, list[str]] = {}
    for d in manifest["val"]["documents"]:
        groups.setdefault(corpus_group(d["name"]), []).append(val[d["start"] : d["stop"]])
    device = next(loaded.model.parameters()).device
    bpc = {}
    for g, parts in sorted(groups.items()):
        ids = loaded.vocab.encode("".join(parts))
        bpc[g] = round(evaluate_bpc(loaded.model, ids, device, max_chars=eval_chars), 4)
        log.info("val bpc on %s: %.4f (%s chars)", g, bpc[g], f"{min(len(ids), eval_chars):,}")
    bpc["all"] = round(evaluate_bpc(loaded.model, loaded.vocab.encode(val), device,
                                    max_chars=10**9), 4)  # fmt: skip
    return bpc, manifest
