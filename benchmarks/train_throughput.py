"""Our trainer's chars/s next to a bare ``nn.LSTM`` training loop, measured in the same run.

Both train the same model size on the same random batches; the bare loop uses PyTorch's own
multi-layer ``nn.LSTM`` with no state carrying, logging, schedule or checkpoints. A ratio near
1.0 means the trainer adds nothing to the fused kernel's cost. Runs alternate (ours, bare,
ours, bare, ...) and the best of each is kept, so a noisy neighbour hurts both alike.

    python benchmarks/train_throughput.py [--sizes 1x128,2x256,3x512] [--steps 30] [--device auto]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lstmscope.model.cells import ModelConfig
from lstmscope.model.checkpoint import pick_device
from lstmscope.text.vocab import Vocab
from lstmscope.train.loop import TrainConfig, train

VOCAB = 100


def bare_loop(layers: int, hidden: int, embed: int, batch: int, seq: int, steps: int,
              device) -> float:  # fmt: skip
    """chars/s of the plainest loop: embedding -> nn.LSTM -> linear, AdamW, clip."""
    torch.manual_seed(0)
    emb = nn.Embedding(VOCAB, embed).to(device)
    lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True).to(device)
    head = nn.Linear(hidden, VOCAB).to(device)
    params = [*emb.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    data = torch.randint(0, VOCAB, (batch, seq * (steps + 3) + 1), device=device)
    warm = 3
    for k in range(steps + warm):
        if k == warm:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x = data[:, k * seq : (k + 1) * seq]
        y = data[:, k * seq + 1 : (k + 1) * seq + 1]
        out, _ = lstm(emb(x))
        loss = nn.functional.cross_entropy(head(out).reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch * seq / (time.perf_counter() - t0)


def ours(layers: int, hidden: int, embed: int, batch: int, seq: int, steps: int, device) -> float:
    """chars/s of ``lstmscope.train.loop.train`` over the same number of steps (after warm-up)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, batch * seq * (2 * steps + 2) + 1)
    vocab = Vocab(("\ufffd", *[chr(0x100 + i) for i in range(VOCAB - 1)]))
    mcfg = ModelConfig(cell="lstm", vocab_size=VOCAB, embed_dim=embed, hidden_size=hidden,
                       num_layers=layers)  # fmt: skip
    # Evaluations fall at steps 0, N and 2N; the trainer's own log row at 2N holds the chars/s
    # of steps N..2N alone (its clock restarts after each evaluation): warm, steady state.
    cfg = TrainConfig(seq_len=seq, batch_size=batch, max_steps=2 * steps, eval_every=steps,
                      device=str(device), warmup_steps=1)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        train(ids, ids[: 4 * 64 + 1], vocab, mcfg, cfg, tmp, progress=False)
        rows = (Path(tmp) / "log.csv").read_text().splitlines()
    return float(rows[-1].split(",")[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1x128,2x256,3x512")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = pick_device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch} x seq {args.seq_len}, {args.steps} timed steps")  # fmt: skip
    print(f"{'model':>8} {'ours chars/s':>14} {'bare chars/s':>14} {'ratio':>7}")
    for size in args.sizes.split(","):
        layers, hidden = (int(v) for v in size.split("x"))
        a = b = 0.0
        for _ in range(args.repeats):
            a = max(
                a, ours(layers, hidden, args.embed, args.batch, args.seq_len, args.steps, device)
            )
            b = max(b, bare_loop(layers, hidden, args.embed, args.batch, args.seq_len, args.steps,
                                 device))  # fmt: skip
        print(f"{size:>8} {a:14,.0f} {b:14,.0f} {a / b:7.3f}")


if __name__ == "__main__":
    main()
