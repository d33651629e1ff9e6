"""Training: learning happens, resume is exact, checkpoints round-trip, sampling is seeded."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from lstmscope.model.cells import ModelConfig
from lstmscope.model.checkpoint import load_checkpoint, load_model
from lstmscope.model.sample import sample
from lstmscope.text.vocab import Vocab
from lstmscope.train.loop import TrainConfig, lr_at, train

SMALL = ModelConfig(cell="lstm", vocab_size=1, embed_dim=16, hidden_size=48, num_layers=2)


def _setup(text: str, cell: str = "lstm", dropout: float = 0.0):
    vocab = Vocab.from_text(text)
    cut = int(len(text) * 0.9)
    mcfg = replace(SMALL, vocab_size=len(vocab), cell=cell, dropout=dropout)
    return vocab, vocab.encode(text[:cut]), vocab.encode(text[cut:]), mcfg


def unigram_bits(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_learns_well_below_unigram(tmp_path, code_text, cell):
    vocab, tr, va, mcfg = _setup(code_text, cell)
    cfg = TrainConfig(seq_len=32, batch_size=16, lr=1e-2, max_steps=200, eval_every=100,
                      warmup_steps=10, device="cpu")  # fmt: skip
    res = train(tr, va, vocab, mcfg, cfg, tmp_path / cell, progress=False)
    # The snippet repeats, so a working recurrent model beats the unigram entropy by far.
    assert res.best_val_bpc < 0.5 * unigram_bits(code_text), res.best_val_bpc
    for name in ("best.pt", "last.pt", "config.json", "vocab.json", "log.csv", "curve.html"):
        assert (tmp_path / cell / name).is_file(), name


def test_resume_is_exact(tmp_path, code_text):
    vocab, tr, va, mcfg = _setup(code_text, dropout=0.1)  # dropout: the RNG must resume too
    base = TrainConfig(seq_len=16, batch_size=8, lr=5e-3, schedule="cosine", max_steps=40,
                       eval_every=10, warmup_steps=5, device="cpu")  # fmt: skip
    straight = train(tr, va, vocab, mcfg, base, tmp_path / "a", progress=False)
    # Same config, stopped half-way by the time limit hook, then resumed.
    half = replace(base, max_steps=40)
    train(tr, va, vocab, mcfg, half, tmp_path / "b", progress=False, _stop_at=20)
    resumed = train(tr, va, vocab, mcfg, half, tmp_path / "b", progress=False, resume=True)
    assert straight.step == resumed.step == 40
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
    assert resumed.best_val_bpc == pytest.approx(straight.best_val_bpc, rel=1e-6)


def test_resume_keeps_the_time_already_spent(tmp_path, code_text, monkeypatch):
    """A checkpoint carries the elapsed time: a resume from a save between evaluations
    continues the clock (the --max-minutes budget and log.csv's time_s), not from the last
    evaluation's time."""
    import lstmscope.train.loop as train_mod

    vocab, tr, va, mcfg = _setup(code_text)
    cfg = TrainConfig(seq_len=16, batch_size=8, max_steps=30, eval_every=20, device="cpu")
    clock = {"t": 1000.0}
    monkeypatch.setattr(train_mod.time, "time", lambda: clock["t"])
    real_get = train_mod.StreamBatches.get

    def slow_get(self, step):  # every step takes 10 s of the fake clock
        clock["t"] += 10.0
        return real_get(self, step)

    monkeypatch.setattr(train_mod.StreamBatches, "get", slow_get)
    train(tr, va, vocab, mcfg, cfg, tmp_path, progress=False, _stop_at=25)
    ck = load_checkpoint(tmp_path / "last.pt")
    spent = clock["t"] - 1000.0
    assert ck["step"] == 25 and ck["time_s"] == pytest.approx(spent) and spent >= 250.0
    clock["t"] += 5000.0  # the machine was off for a while: that is not training time
    t_resume = clock["t"]
    train(tr, va, vocab, mcfg, cfg, tmp_path, progress=False, resume=True)
    rows = (tmp_path / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    assert int(last["step"]) == 30
    # Before the fix the clock restarted from the step-20 evaluation's time, losing 50 s.
    assert float(last["time_s"]) == pytest.approx(spent + clock["t"] - t_resume)


def test_checkpoint_round_trip_and_sampling(tmp_path, code_text):
    vocab, tr, va, mcfg = _setup(code_text)
    cfg = TrainConfig(seq_len=16, batch_size=8, max_steps=20, eval_every=10, device="cpu")
    train(tr, va, vocab, mcfg, cfg, tmp_path, progress=False)
    raw = torch.load(tmp_path / "best.pt", weights_only=True)  # plain values only
    assert raw["format"] == "lstmscope-checkpoint"
    loaded = load_model(tmp_path)
    assert loaded.config == mcfg and loaded.vocab == vocab
    ids = torch.from_numpy(va[:50])[None]
    m2 = load_model(tmp_path / "best.pt").model
    torch.testing.assert_close(loaded.model(ids)[0], m2(ids)[0])
    s1 = sample(loaded, prime="def ", length=80, seed=3)
    s2 = sample(loaded, prime="def ", length=80, seed=3)
    s3 = sample(loaded, prime="def ", length=80, seed=4)
    assert s1 == s2 and len(s1) == 80 and s1 != s3
    assert set(s1) <= set(vocab.chars[1:])


def test_lr_schedule_shape():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_frac=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(60, cfg) == pytest.approx(0.55)


@pytest.mark.slow
def test_ctrl_c_saves_and_resumes(tmp_path, code_text):
    (tmp_path / "t.txt").write_text(code_text * 5)
    cmd = [sys.executable, "-m", "lstmscope", "-q", "train", "--data", str(tmp_path / "t.txt"),
           "-o", str(tmp_path / "run"), "--hidden", "32", "--layers", "1", "--batch", "8",
           "--seq-len", "32", "--max-steps", "100000", "--eval-every", "100000", "--device",
           "cpu"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "run" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # let it take some steps past the step-0 evaluation
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "interrupted" in out and "--resume" in out
    step = load_checkpoint(tmp_path / "run" / "last.pt")["step"]
    assert step > 0
    res = subprocess.run([*cmd[:-6], "--max-steps", str(step + 5), "--eval-every", "1000",
                          "--device", "cpu", "--resume"], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == step + 5


@pytest.mark.slow
def test_distributed_two_cpu_processes(tmp_path, code_text):
    """torchrun with 2 gloo processes: trains, only rank 0 writes, loss goes down."""
    (tmp_path / "t.txt").write_text(code_text * 3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lstmscope", "-q", "train", "--data", str(tmp_path / "t.txt"), "-o",
           str(tmp_path / "ddp"), "--hidden", "32", "--layers", "1", "--batch", "8",
           "--seq-len", "32", "--max-steps", "60", "--eval-every", "30", "--device", "cpu",
           "--lr", "1e-2"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ck = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ck["step"] == 60
    assert ck["carry_state"][0][0].shape[1] == 8  # all streams of both ranks were gathered
    rows = (tmp_path / "ddp" / "log.csv").read_text().splitlines()
    vals = [float(r.split(",")[3]) for r in rows[1:]]
    assert vals[-1] < vals[0] - 1.0
    assert not list(tmp_path.glob("ddp/*.tmp"))


def test_stream_batches_cover_text_contiguously():
    from lstmscope.train.evaluate import StreamBatches

    ids = np.arange(1001)
    b = StreamBatches(ids, batch=4, seq_len=10)
    x0, y0, fresh = b.get(0)
    x1, _, _ = b.get(1)
    assert fresh and x0.shape == (4, 10)
    assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # the next window continues each stream
    assert torch.equal(y0, x0 + 1)
