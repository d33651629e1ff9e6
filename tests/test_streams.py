"""Short recordings (issue 12.3): streams and warm-up are chosen from the text, at least half of
a store is warm, and what reads a store says what is wrong with one that is not."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmscope.cli import main
from lstmscope.detect import detect
from lstmscope.errors import StoreError
from lstmscope.model.cells import CharRNN, ModelConfig
from lstmscope.model.checkpoint import load_model, save_checkpoint
from lstmscope.model.plan import plan_streams
from lstmscope.store.reader import ActivationStore
from lstmscope.store.recorder import record
from lstmscope.store.streams import (
    DEFAULT_STREAMS,
    DEFAULT_WARMUP,
    choose_streams,
    cold_count,
    run_lengths,
    warm_note,
)
from lstmscope.text.synthetic import generate
from lstmscope.text.vocab import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")


def warm_share(n, streams, warmup, docs=None) -> float:
    return 1 - cold_count(n, streams, warmup, docs) / n


# ----------------------------------------------------------------------------------------------
# Choosing (pure)


@pytest.mark.parametrize("n", [1, 10, 1_500, 30_000, 63_999, 64_000, 1_000_000])
def test_chosen_values_keep_half_warm(n):
    s, w = choose_streams(n)
    assert warm_share(n, s, w) >= 0.5
    assert 1 <= s <= DEFAULT_STREAMS and 0 <= w <= DEFAULT_WARMUP
    if n >= 2 * DEFAULT_STREAMS * DEFAULT_WARMUP:
        assert (s, w) == (DEFAULT_STREAMS, DEFAULT_WARMUP)  # long texts: the defaults


def test_the_reported_case_gets_fewer_streams():
    """30,000 characters: 32 streams of 938 would all be warm-up; 15 of 2,000 are half warm."""
    assert warm_share(30_000, 32, 1000) == 0.0
    assert choose_streams(30_000) == (15, 1000)


@pytest.mark.parametrize("seed", range(6))
def test_run_lengths_are_the_plans_runs(seed):
    """The run lengths choose_streams counts with (without laying out a plan) are exactly
    those of ``plan_streams``, documents or not, in text order."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50_000))
    cuts = np.unique(np.concatenate([[0, n], rng.integers(0, n, int(rng.integers(0, 300)))]))
    docs = None if seed == 0 else np.stack([cuts[:-1], cuts[1:]], 1).tolist()
    for streams in (1, 2, 7, 32, 1000):
        runs = plan_streams(n, streams, max(n, 1), 0, docs).runs
        assert run_lengths(n, streams, docs).tolist() == (runs[:, 1] - runs[:, 0]).tolist()
    with pytest.raises(ValueError, match="lies outside"):
        run_lengths(10, 2, [(0, 5), (5, 11)])


def test_choosing_for_many_documents_is_fast():
    """100k documents over 2M characters: 11 s when every stream count was planned whole."""
    import time

    n = 2_000_000
    starts = np.arange(0, n, 20)
    docs = np.stack([starts, np.minimum(starts + 20, n)], 1)
    t = time.perf_counter()
    s, w = choose_streams(n, documents=docs)
    assert time.perf_counter() - t < 2.0
    assert warm_share(n, s, w, docs) >= 0.5 and w <= 10


def test_short_documents_shorten_the_warmup():
    docs = [(i * 500, (i + 1) * 500) for i in range(60)]  # every run starts cold
    s, w = choose_streams(30_000, documents=docs)
    assert w < 500 and warm_share(30_000, s, w, docs) >= 0.5


def test_one_given_value_the_other_is_chosen():
    s, w = choose_streams(30_000, streams=32)
    assert s == 32 and warm_share(30_000, 32, w) >= 0.5
    s, w = choose_streams(30_000, warmup=200)
    assert w == 200 and s == DEFAULT_STREAMS


def test_given_values_that_leave_too_little_warm_are_refused_with_values_that_work():
    with pytest.raises(StoreError) as e:
        choose_streams(30_000, streams=32, warmup=1000)
    msg = str(e.value)
    assert "0% of the 30,000 characters warm" in msg and "at least half" in msg
    assert "--streams 15 --warmup 1000" in msg and "--streams 32 --warmup 468" in msg
    assert warm_share(30_000, 15, 1000) >= 0.5 and warm_share(30_000, 32, 468) >= 0.5
    with pytest.raises(StoreError, match=r"even with --streams 1.*--warmup 750 or less"):
        choose_streams(1_500, warmup=1000)


def test_bad_values():
    with pytest.raises(StoreError, match="--streams must be at least 1"):
        choose_streams(100, streams=0)
    with pytest.raises(StoreError, match="--warmup must be at least 0"):
        choose_streams(100, warmup=-1)


def test_warm_note():
    assert warm_note(100, 50, "s") is None
    assert "only 49 of 100 positions are warm (49%)" in warm_note(100, 49, "s")
    assert "all 100 positions are cold" in warm_note(100, 0, "s")


# ----------------------------------------------------------------------------------------------
# Recording


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A random-weight 1x8 LSTM over the synthetic corpus's characters (records in seconds)."""
    d = tmp_path_factory.mktemp("tiny")
    vocab = Vocab.from_text(generate(20_000, seed=5).text)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=4, hidden_size=8, num_layers=1)
    model = CharRNN(cfg)
    save_checkpoint(d / "best.pt", {"config": cfg.to_dict(), "vocab": list(vocab.chars),
                                    "model": model.state_dict()})  # fmt: skip
    return d / "best.pt"


def test_record_without_values_keeps_half_warm(tiny, tmp_path):
    text = generate(30_000, seed=6).text[:30_000]
    s = record(load_model(tiny), text, tmp_path / "s", progress=False)
    assert (s.streams, s.warmup) == (15, 1000)
    cold = np.asarray(ActivationStore.open(tmp_path / "s").cold)
    assert cold.mean() <= 0.5 and s.cold == cold.sum()


def test_record_refuses_explicit_values_and_writes_nothing(tiny, tmp_path):
    text = generate(30_000, seed=6).text[:30_000]
    with pytest.raises(StoreError, match="--streams 15 --warmup 1000"):
        record(load_model(tiny), text, tmp_path / "s", streams=32, warmup=1000, progress=False)
    assert not (tmp_path / "s" / "meta.json").exists()


def test_cli_record_max_chars_reports_what_it_chose(tiny, tmp_path, capsys):
    (tmp_path / "t.txt").write_text(generate(40_000, seed=7).text)
    args = ["-q", "record", str(tiny), "--data", str(tmp_path / "t.txt"), "-o",
            str(tmp_path / "s"), "--max-chars", "30000", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "15 streams, warm-up 1,000: 50% warm" in out
    assert main([*args[:-2], "--streams", "32", "--warmup", "1000", "-o", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "error: --streams 32 --warmup 1000 would leave only 0%" in err
    assert not (tmp_path / "t" / "meta.json").exists()


# ----------------------------------------------------------------------------------------------
# Reading a store that is (mostly) cold: detect says so; a constant feature is skipped


def old_store(tiny: Path, out: Path, n: int, streams: int, warmup: int, monkeypatch) -> Path:
    """A store as lstmscope wrote before it kept half warm (the check switched off)."""
    import lstmscope.store.recorder as rec

    monkeypatch.setattr(rec, "choose_streams", lambda n, s, w, d: (s, w))
    record(load_model(tiny), generate(n, seed=8).text[:n], out, streams=streams, warmup=warmup,
           progress=False)  # fmt: skip
    monkeypatch.undo()
    return out


def test_detect_refuses_an_all_cold_store_clearly(tiny, tmp_path, monkeypatch):
    st = ActivationStore.open(old_store(tiny, tmp_path / "s", 30_000, 32, 1000, monkeypatch))
    assert np.asarray(st.cold).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy warnings on the way
        with pytest.raises(StoreError, match=r"all 30,000 positions are cold.*record it again"):
            detect(st, ["depth_paren", "in_url"], out=tmp_path / "rep")


def test_detect_warns_about_a_mostly_cold_store(tiny, tmp_path, monkeypatch, caplog):
    st = ActivationStore.open(old_store(tiny, tmp_path / "s", 30_000, 20, 1000, monkeypatch))
    rep = detect(st, ["column", "in_string"], out=tmp_path / "rep", snippets=False)
    assert "column" in rep.rankings
    assert "only 10,000 of 30,000 positions are warm (33%)" in caplog.text


def test_detect_skips_a_feature_constant_on_the_warm_positions(tiny, tmp_path, capsys):
    """The text has brackets only in its cold warm-up: depth_paren is constant where ranked."""
    text = "(x)\n" * 50 + "plain words on a line\n" * 600
    (tmp_path / "t.txt").write_text(text)
    assert main(["-q", "record", str(tiny), "--data", str(tmp_path / "t.txt"), "-o",
                 str(tmp_path / "s"), "--streams", "1", "--warmup", "200"]) == 0  # fmt: skip
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = main(["-q", "detect", str(tmp_path / "s"), "-o", str(tmp_path / "rep"),
                     "--features", "depth_paren,column,in_url"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped depth_paren: constant on the" in out
    assert "skipped in_url:" in out and "never on" in out
    assert "column" in out.splitlines()[1]
