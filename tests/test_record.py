"""Recording: the store holds the trace; interruption resumes to the same store; bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmscope.errors import StoreError
from lstmscope.model.cells import CharRNN, ModelConfig
from lstmscope.model.checkpoint import load_model, save_checkpoint
from lstmscope.model.trace import trace_ids
from lstmscope.store.encoding import error_bound
from lstmscope.store.histograms import hist_edges, histogram
from lstmscope.store.reader import ActivationStore
from lstmscope.store.recorder import record
from lstmscope.store.stats import KindStats
from lstmscope.text.vocab import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")


SOURCE = textwrap.dedent(
    '''
    def parse(line, sep=","):
        """Split a line; "quoted, parts" stay whole."""
        out, cur, quoted = [], [], False
        for ch in line:
            if ch == '"':
                quoted = not quoted
            elif ch == sep and not quoted:
                out.append("".join(cur))
                cur = []
            else:
                cur.append(ch)  # keep (nested [brackets] {too})
        return out + ["".join(cur)]
    '''
)


def python_text(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < n:
        s = SOURCE.replace("line", rng.choice(["line", "row", "text"]))
        parts.append(s)
        total += len(s)
    return "".join(parts)[:n]


def make_loaded(
    tmp: Path, cell: str = "lstm", hidden: int = 16, layers: int = 2, seed: int = 0, output="h"
):
    """A real checkpoint file, loaded the way the CLI loads one."""
    vocab = Vocab.from_text(SOURCE + "rowtext")
    torch.manual_seed(seed)
    cfg = ModelConfig(
        cell=cell, vocab_size=len(vocab), embed_dim=8, hidden_size=hidden, num_layers=layers,
        output=output,
    )  # fmt: skip
    model = CharRNN(cfg)
    with torch.no_grad():  # livelier than the initial weights: saturating gates, larger cells
        for p in model.parameters():
            p.mul_(3.0)
    path = tmp / f"{cell}-{seed}-{output}.pt"
    save_checkpoint(
        path, {"config": cfg.to_dict(), "vocab": list(vocab.chars), "model": model.state_dict()}
    )
    return load_model(path)


STORE_ARRAYS = (
    "ids.npy", "cold.npy", "runs.npy", "blocks.npy",
    "pred/loss.npy", "pred/top_ids.npy", "pred/top_prob.npy",
)  # fmt: skip


def coding_bound(want: np.ndarray) -> np.ndarray:
    """``[H]``: the most the store may be off from float32 values ``want`` ``[N, H]`` (the
    encoding's bound for each unit's range and magnitude)."""
    want = np.asarray(want, dtype=np.float64)
    return error_bound(want.max(0) - want.min(0), np.abs(want).max(0))


def assert_same_store(a: Path, b: Path) -> None:
    """Every array, statistic and meta field except timings is identical."""
    sa, sb = ActivationStore.open(a), ActivationStore.open(b)
    for rel in STORE_ARRAYS:
        assert np.array_equal(np.load(a / rel), np.load(b / rel), equal_nan=True), rel
    for li in sa.layers:
        for kind in sa.kinds:
            for rel in (f"acts/L{li}.{kind}.npy", f"acts/L{li}.{kind}.scale.npy"):  # bit for bit
                assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
            assert np.array_equal(sa.array(li, kind), sb.array(li, kind)), f"L{li}.{kind}"
            x, y = sa.stat_arrays(li, kind), sb.stat_arrays(li, kind)
            assert x.keys() == y.keys()
            for key in x:
                assert np.array_equal(x[key], y[key], equal_nan=True), f"L{li}.{kind} {key}"
    ma, mb = dict(sa.meta), dict(sb.meta)
    for m in (ma, mb):
        m["record"] = {k: v for k, v in m["record"].items() if k not in ("seconds", "created")}
    assert ma == mb
    assert sa.text == sb.text


@pytest.fixture(scope="module")
def lstm(tmp_path_factory):
    return make_loaded(tmp_path_factory.mktemp("model"))


def test_store_holds_the_trace_within_the_encoding_bound(lstm, tmp_path):
    text = python_text(3000)
    summary = record(lstm, text, tmp_path / "s", streams=3, warmup=20, chunk_len=64, progress=False)
    store = ActivationStore.open(tmp_path / "s")
    assert summary.n == store.n == len(text) and store.text == text
    assert summary.bytes > 0 and summary.unknown == 0 and not summary.already_complete
    ref = trace_ids(lstm.model, lstm.vocab.encode(text), streams=3, chunk_len=1000)
    for key in ("L0.h", "L0.c", "L0.f", "L1.g", "L1.c", "L1.o"):
        li, kind = int(key[1]), key[3]
        got = store.array(li, kind).astype(np.float64)
        want = ref[key].astype(np.float64)
        assert got.dtype == np.float64 and store.array(li, kind)[:5].dtype == np.float32
        assert np.all(np.abs(got - want) <= coding_bound(want)), key
    np.testing.assert_allclose(store.loss, ref["loss"], rtol=1e-4, atol=1e-4, equal_nan=True)
    assert np.isnan(store.loss[[0, 1000, 2000]]).all() and np.isfinite(store.loss[1:1000]).all()


def test_layers_passing_c_on(tmp_path):
    """output="c": the next layer reads the cell state, which the recorder keeps in reused
    buffers; the store still equals the in-memory trace."""
    loaded = make_loaded(tmp_path, layers=3, output="c")
    text = python_text(1200, seed=7)
    record(loaded, text, tmp_path / "s", streams=2, warmup=10, chunk_len=64, progress=False)
    store = ActivationStore.open(tmp_path / "s")
    ref = trace_ids(loaded.model, loaded.vocab.encode(text), streams=2)
    for li in range(3):
        for kind in ("c", "h", "i"):
            want = ref[f"L{li}.{kind}"]
            got = store.array(li, kind).astype(np.float32)
            # the coding, and float32 rounding that differs between the two traces
            tol = coding_bound(want) + np.abs(want) * 2.0**-11 + 1e-5
            assert np.all(np.abs(got - want) <= tol), f"L{li}.{kind}"
    np.testing.assert_allclose(store.loss, ref["loss"], rtol=1e-3, atol=1e-3)


def test_one_stream_records_the_single_pass(lstm, tmp_path):
    text = python_text(1500, seed=1)
    record(lstm, text, tmp_path / "s", streams=1, warmup=0, chunk_len=100, progress=False)
    store = ActivationStore.open(tmp_path / "s")
    with torch.no_grad():
        x = lstm.model.embed(torch.from_numpy(lstm.vocab.encode(text))[None])
        for li, layer in enumerate(lstm.model.layers):
            x, _ = layer(x)
            # On CPU the LSTM is traced by our own loop, not the kernel: equal to the kernel's
            # h to float16 precision (float32 summation order differs).
            want, got = x[0].numpy(), store.array(li, "h").astype(np.float32)
            assert np.all(np.abs(got - want) <= np.abs(want) * 2.0**-10 + 1e-4), f"L{li}.h"
        logits = lstm.model.head(x)[0]
    probs = torch.softmax(logits, -1)
    top = probs.topk(5, dim=-1)
    assert np.array_equal(store.top_ids, top.indices.numpy())
    np.testing.assert_allclose(store.top_prob.astype(np.float32), top.values.numpy(), atol=1e-3)
    assert not store.cold.any() and np.isnan(store.loss[0]) and np.isfinite(store.loss[1:]).all()
    chars, p = zip(*store.top_predictions(10), strict=True)
    assert chars[0] == lstm.vocab.chars[int(top.indices[10, 0])] and list(p) == sorted(
        p, reverse=True
    )


def test_documents_reset_state_and_cold_marks_run_starts(lstm, tmp_path):
    text = python_text(2000, seed=2)
    docs = [(0, 700), (700, 760), (760, 2000)]
    record(
        lstm,
        text,
        tmp_path / "s",
        documents=docs,
        streams=2,
        warmup=30,
        chunk_len=64,
        progress=False,
    )
    store = ActivationStore.open(tmp_path / "s")
    assert store.documents.tolist() == [list(d) for d in docs]
    runs_starts = np.flatnonzero(np.isnan(store.loss))
    assert {0, 700, 760} <= set(runs_starts.tolist())
    for a in runs_starts:
        assert store.cold[a : a + 30].all()
    b0, b1 = 700, 760
    alone = trace_ids(lstm.model, lstm.vocab.encode(text[b0:b1]), chunk_len=100)
    np.testing.assert_allclose(
        store.array(1, "c")[b0:b1].astype(np.float32), alone["L1.c"], rtol=2e-3, atol=2e-3
    )
    assert store.meta["documents"] == 3


def test_stats_exclude_cold_positions(lstm, tmp_path):
    text = python_text(2500, seed=3)
    record(lstm, text, tmp_path / "s", streams=4, warmup=100, chunk_len=50, progress=False)
    store = ActivationStore.open(tmp_path / "s")
    warm = ~store.cold
    assert store.cold.sum() == 400
    for li, kind in ((0, "c"), (1, "i"), (1, "h")):
        s = store.stat_arrays(li, kind)
        vals = store.array(li, kind)[warm].astype(np.float32)  # [warm, H]
        assert int(s["count"]) == warm.sum()
        np.testing.assert_allclose(s["mean"], vals.mean(0), rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(s["std"], vals.std(0), rtol=2e-3, atol=2e-3)
        # The statistics are the float32 values themselves (format 1 rounded min/max/top to
        # float16); the store holds the same values within the coding's bound.
        tol = coding_bound(vals)[:, None]
        assert (np.abs(s["max"] - vals.max(0)) <= tol[:, 0]).all()
        assert (np.abs(s["min"] - vals.min(0)) <= tol[:, 0]).all()
        assert s["hist_counts"].sum(1).tolist() == [warm.sum()] * store.hidden_size
        # top positions are warm and hold the largest values
        assert warm[s["top_pos"]].all()
        assert (np.abs(np.sort(vals, 0)[::-1][:50].T - s["top_val"]) <= 2 * tol).all()
        rows = np.arange(store.hidden_size)[:, None]
        at_top = vals.T[rows, np.searchsorted(np.flatnonzero(warm), s["top_pos"])]
        assert (np.abs(at_top - s["top_val"]) <= tol).all()


def test_unknown_characters_are_counted(lstm, tmp_path):
    text = python_text(500) + "é€\U0001f600"
    summary = record(lstm, text, tmp_path / "s", streams=2, warmup=10, progress=False)
    store = ActivationStore.open(tmp_path / "s")
    assert summary.unknown == 3 == store.meta["unknown_chars"]
    assert store.n == len(text) and store.text.endswith("\U0001f600")
    assert (store.ids[-3:] == 0).all()


class Interrupt(Exception):
    pass


def _interrupt_at(k_stop: int):
    def hook(k: int) -> None:
        if k == k_stop:
            raise Interrupt

    return hook


@pytest.mark.parametrize("checkpoint_seconds", [0.0, 1e9], ids=["resume", "restart"])
def test_interrupted_record_resumes_to_the_same_store(lstm, tmp_path, checkpoint_seconds):
    text = python_text(2000, seed=4)
    kw = dict(streams=3, warmup=15, chunk_len=40, progress=False)
    record(lstm, text, tmp_path / "whole", **kw)
    with pytest.raises(Interrupt):
        record(
            lstm,
            text,
            tmp_path / "cut",
            **kw,
            checkpoint_seconds=checkpoint_seconds,
            hook=_interrupt_at(7),
        )
    with pytest.raises(StoreError, match="incomplete store: recording was interrupted; rerun"):
        ActivationStore.open(tmp_path / "cut")
    summary = record(lstm, text, tmp_path / "cut", **kw)
    if checkpoint_seconds == 0:
        assert summary.resumed_from == 7 * 3 * 40  # chunks 0..6 were checkpointed
    else:
        assert summary.resumed_from == 0  # no checkpoint yet: starts over
    assert_same_store(tmp_path / "whole", tmp_path / "cut")
    assert not (tmp_path / "cut" / "progress").exists()


def test_two_threads_give_the_same_store(lstm, tmp_path):
    """With 2 threads the trace and the statistics worker take one each: the store equals the
    one-thread store bit for bit, also after a resume, and the caller gets its threads back."""
    text = python_text(3000, seed=6)
    kw = dict(streams=3, warmup=15, chunk_len=40, progress=False)
    record(lstm, text, tmp_path / "one", **kw)  # the fixture set 1 thread: one worker
    torch.set_num_threads(2)
    record(lstm, text, tmp_path / "two", **kw)
    assert torch.get_num_threads() == 2, "record must give the caller its threads back"
    assert_same_store(tmp_path / "one", tmp_path / "two")
    with pytest.raises(Interrupt):
        record(lstm, text, tmp_path / "cut", **kw, checkpoint_seconds=0, hook=_interrupt_at(9))
    assert record(lstm, text, tmp_path / "cut", **kw).resumed_from > 0
    assert_same_store(tmp_path / "one", tmp_path / "cut")


def test_the_accelerator_path_gives_the_same_store(lstm, tmp_path):
    """What a GPU runs (kernel plus rebuild, statistics inline, no worker threads), taken on
    CPU: the same store as the CPU path to float16 precision, also after a resume."""
    text = python_text(3000, seed=8)
    kw = dict(streams=3, warmup=15, chunk_len=40, progress=False)
    record(lstm, text, tmp_path / "cpu", **kw)
    record(lstm, text, tmp_path / "acc", **kw, _accelerator_path=True)
    with pytest.raises(Interrupt):
        record(lstm, text, tmp_path / "cut", **kw, checkpoint_seconds=0, hook=_interrupt_at(5),
               _accelerator_path=True)  # fmt: skip
    record(lstm, text, tmp_path / "cut", **kw, _accelerator_path=True)
    assert_same_store(tmp_path / "acc", tmp_path / "cut")
    a, b = ActivationStore.open(tmp_path / "cpu"), ActivationStore.open(tmp_path / "acc")
    for li in a.layers:
        for kind in a.kinds:
            x = a.array(li, kind).astype(np.float32)
            y = b.array(li, kind).astype(np.float32)
            assert np.all(np.abs(x - y) <= np.abs(x) * 2.0**-9 + 1e-3), f"L{li}.{kind}"
            sa, sb = a.stat_arrays(li, kind), b.stat_arrays(li, kind)
            np.testing.assert_allclose(sa["mean"], sb["mean"], rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(sa["std"], sb["std"], rtol=1e-3, atol=1e-4)
            assert sa["count"] == sb["count"]
            # Histograms count float16 values: a value on a bin edge may move by one bin.
            ha, hb = sa["hist_counts"], sb["hist_counts"]
            assert np.abs(ha - hb).sum() <= 0.01 * ha.sum() + 4
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-3, atol=1e-3)


def test_damaged_partial_store_starts_over(lstm, tmp_path):
    text = python_text(1500, seed=6)
    kw = dict(streams=2, warmup=10, chunk_len=50, progress=False)
    with pytest.raises(Interrupt):
        record(lstm, text, tmp_path / "cut", **kw, checkpoint_seconds=0, hook=_interrupt_at(4))
    (tmp_path / "cut" / "acts" / "L1.g.npy").unlink()  # e.g. cleaned up by hand
    summary = record(lstm, text, tmp_path / "cut", **kw)
    assert summary.resumed_from == 0
    record(lstm, text, tmp_path / "whole", **kw)
    assert_same_store(tmp_path / "whole", tmp_path / "cut")


def test_rerun_says_already_there_and_other_inputs_need_force(lstm, tmp_path):
    text = python_text(800)
    out = tmp_path / "s"
    record(lstm, text, out, streams=2, warmup=10, progress=False)
    again = record(lstm, text, out, streams=2, warmup=10, progress=False)
    assert again.already_complete
    with pytest.raises(StoreError, match=r"differs in text.*--force"):
        record(lstm, text[:-1] + "x", out, streams=2, warmup=10, progress=False)
    with pytest.raises(StoreError, match="differs in streams"):
        record(lstm, text, out, streams=3, warmup=10, progress=False)
    s = record(lstm, text[:500], out, streams=2, warmup=10, progress=False, force=True)
    assert not s.already_complete and ActivationStore.open(out).n == 500


def test_interrupted_store_with_other_inputs_is_refused(lstm, tmp_path):
    text = python_text(1200)
    out = tmp_path / "s"
    with pytest.raises(Interrupt):
        record(
            lstm,
            text,
            out,
            streams=2,
            chunk_len=50,
            checkpoint_seconds=0,
            progress=False,
            hook=_interrupt_at(2),
        )
    with pytest.raises(StoreError, match="interrupted recording that differs in warmup"):
        record(lstm, text, out, streams=2, chunk_len=50, warmup=5, progress=False)


def test_bad_input_is_refused(lstm, tmp_path):
    with pytest.raises(StoreError, match="empty"):
        record(lstm, "", tmp_path / "a", progress=False)
    with pytest.raises(StoreError, match="kinds are h,c,i,f,g,o"):
        record(lstm, "abc", tmp_path / "b", kinds=["z"], progress=False)
    with pytest.raises(StoreError, match=r"layers 0\.\.1"):
        record(lstm, "abc", tmp_path / "c", layers=[5], progress=False)
    with pytest.raises(StoreError, match=r"outside|within"):
        record(lstm, "abc", tmp_path / "d", documents=[(0, 9)], progress=False)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not an lstmscope store"):
        record(lstm, "abc", folder, progress=False, force=True)
    assert (folder / "thesis.tex").read_text() == "precious"


def test_subset_of_layers_and_kinds(tmp_path):
    gru = make_loaded(tmp_path, cell="gru", layers=3)
    text = python_text(900)
    record(
        gru, text, tmp_path / "s", layers=[2], kinds=["z", "h"], streams=2, warmup=5, progress=False
    )
    store = ActivationStore.open(tmp_path / "s")
    assert store.layers == (2,) and store.kinds == ("h", "z")
    assert store.neurons[:2] == ["L2.h.0", "L2.h.1"] and len(store.neurons) == 32
    ref = trace_ids(gru.model, gru.vocab.encode(text), streams=2, layers=[2], kinds=["z"])
    np.testing.assert_allclose(store.array(2, "z").astype(np.float32), ref["L2.z"], atol=1e-3)
    st = store.stats
    assert st.loc["L2.z.3", "sat_left"] >= 0 and np.isnan(st.loc["L2.h.3", "sat_left"])


@pytest.mark.parametrize("fused", [True, False], ids=["compiled", "torch"])
def test_kind_stats_merge_equals_one_shot(fused):
    """Chunks of every awkward size (one row, around the compiled loops' 256- and 1,024-row
    blocks, ragged) give the moments, extremes, histogram and top/bottom k of all rows."""
    g = torch.Generator().manual_seed(0)
    n, H = 5000, 21  # H not a multiple of the 16-neuron histogram block
    v = torch.randn(n, H, generator=g) * 30 + 200  # large mean: a naive sum of squares fails
    pos = torch.arange(n)
    st = KindStats("c", H, "cpu", top_k=5, fused=fused)
    a = 0
    for size in [1, 255, 256, 257, 1023, 1025, 2, 2181]:
        st.update(v[a : a + size], v[a : a + size].half(), pos[a : a + size])
        a += size
    assert a == n
    out, counts = st.finalize()
    x = v.double().numpy()
    np.testing.assert_allclose(out["mean"], x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(out["std"], x.std(0), rtol=1e-6)
    x16 = v.numpy().astype(np.float16)
    assert np.array_equal(out["min"], v.numpy().min(0))  # float32, not rounded to float16
    assert np.array_equal(out["max"], v.numpy().max(0))
    want = np.stack([histogram(x16[:, j], "c") for j in range(H)])
    assert counts.shape == (H, len(hist_edges("c")) - 1) and np.array_equal(counts, want)
    assert np.array_equal(out["top_pos"], np.argsort(-x, 0)[:5].T)
    assert np.array_equal(out["bottom_pos"], np.argsort(x, 0)[:5].T)


@pytest.mark.parametrize("fused", [True, False], ids=["compiled", "torch"])
def test_kind_stats_show_a_nan_on_either_road(fused):
    """A NaN (a diverged model) makes the neuron's moments, min, max and quantiles NaN on both
    roads; the other neurons are untouched."""
    v = torch.rand(600, 3)
    v[100, 1] = float("nan")
    st = KindStats("f", 3, "cpu", fused=fused)
    for a in range(0, 600, 200):
        st.update(v[a : a + 200], v[a : a + 200].half(), torch.arange(a, a + 200))
    out, _ = st.finalize()
    for key in ("mean", "std", "min", "max"):
        assert np.isnan(out[key][1]) and np.isfinite(out[key][[0, 2]]).all(), key
    assert np.isnan(out["quantiles"][:, 1]).all() and np.isfinite(out["quantiles"][:, 0]).all()


def test_compiled_stats_resume_from_a_torch_checkpoint_holding_a_nan():
    """torch's topk keeps a NaN first; resumed on the compiled road it becomes an empty slot
    instead of closing the heap, so later values still enter."""
    v = torch.rand(400, 2)
    v[10, 0] = float("nan")
    first = KindStats("f", 2, "cpu", top_k=4, fused=False)
    first.update(v[:200], v[:200].half(), torch.arange(200))
    assert np.isnan(first.state_dict()["top_val"][:, 0]).any()
    resumed = KindStats("f", 2, "cpu", top_k=4, fused=True)
    resumed.load_state_dict(first.state_dict())
    later = torch.full((200, 2), 5.0)  # above every earlier value
    resumed.update(later, later.half(), torch.arange(200, 400))
    out, _ = resumed.finalize()
    assert (out["top_val"] == 5.0).all() and (out["top_pos"] == np.arange(200, 204)).all()


def test_without_numba_the_cpu_statistics_fall_back_to_torch(monkeypatch):
    import lstmscope.store.stats as stats

    monkeypatch.setattr(stats, "load_kernels", lambda: None)  # as if numba failed to import
    assert not KindStats("h", 4, "cpu").fused
    with pytest.raises(ValueError, match="numba"):
        KindStats("h", 4, "cpu", fused=True)


def test_compiled_stats_refuse_wrong_shapes():
    """The compiled loops check no bounds: mismatched inputs are refused before they run."""
    st = KindStats("h", 8, "cpu", fused=True)
    v = torch.zeros(64, 8)
    for bad in (
        (v, v.half(), torch.arange(10)),  # too few positions
        (torch.zeros(64, 9), torch.zeros(64, 9).half(), torch.arange(64)),  # wrong width
        (v.double(), v.half(), torch.arange(64)),
        (v, v.half(), torch.arange(64, dtype=torch.int32)),
    ):
        with pytest.raises(ValueError, match="expected"):
            st.update(*bad)


@pytest.mark.slow
def test_sigkill_then_rerun_resumes(lstm, tmp_path):
    """A real kill -9 in the middle of a recording; the rerun finishes the same store."""
    text = python_text(6000, seed=5)
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    kw = dict(streams=3, warmup=15, chunk_len=25)
    script = textwrap.dedent(
        f"""
        import time, torch
        torch.set_num_threads(1)
        from lstmscope.model.checkpoint import load_model
        from lstmscope.store.recorder import record
        loaded = load_model({str(lstm.source)!r})
        text = open({str(tmp_path / "text.txt")!r}, encoding="utf-8").read()
        record(loaded, text, {str(tmp_path / "cut")!r}, progress=False, checkpoint_seconds=0,
               hook=lambda k: time.sleep(0.05), **{kw!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    ckpt = tmp_path / "cut" / "progress" / "checkpoint.npz"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the recording finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(StoreError, match="incomplete store"):
        ActivationStore.open(tmp_path / "cut")
    summary = record(lstm, text, tmp_path / "cut", progress=False, **kw)
    assert 0 < summary.resumed_from < len(text)
    record(lstm, text, tmp_path / "whole", progress=False, **kw)
    assert_same_store(tmp_path / "whole", tmp_path / "cut")
    assert json.loads((tmp_path / "cut" / "meta.json").read_text())["n"] == len(text)


@pytest.mark.parametrize("fused", [True, False], ids=["compiled", "torch"])
@pytest.mark.parametrize("data", ["ties", "drift", "gaussian"])
def test_kind_stats_top_and_bottom_k_are_exact(data, fused):
    """Exact top/bottom 50 in any row order and chunking. The compiled (CPU) statistics also
    break ties by the earlier position, so a resumed run keeps the same positions."""
    g = torch.Generator().manual_seed(1)
    n, H = 6000, 7
    if data == "ties":
        v = torch.randint(0, 6, (n, H), generator=g).float() / 5  # few distinct values
    elif data == "drift":
        v = torch.randn(n, H, generator=g) + torch.linspace(0, 30, n).unsqueeze(1)
    else:
        v = torch.randn(n, H, generator=g) * 3
    pos = torch.randperm(n, generator=g) + 10_000  # positions need not follow row order
    st = KindStats("c", H, "cpu", fused=fused)
    a = 0
    for size in [5, 700, 16, 33, 1200, 1, 800, 900, 2345]:  # under and over a group, ragged
        st.update(v[a : a + size], v[a : a + size].half(), pos[a : a + size])
        a += size
    assert a == n
    out, _ = st.finalize()
    by_pos = dict(zip(pos.tolist(), range(n), strict=True))
    x = v.numpy()  # the float32 values, as they came (format 1 rounded them to float16)
    for key_v, key_p, sign in (("top_val", "top_pos", -1), ("bottom_val", "bottom_pos", 1)):
        want = np.sort(sign * x, axis=0)[:50] * sign  # [50, H] best first
        assert np.array_equal(out[key_v], want.T), key_v
        rows = np.vectorize(by_pos.get)(out[key_p])  # [H, 50]
        assert np.array_equal(x[rows, np.arange(H)[:, None]], out[key_v]), key_p
        assert all(len(set(r)) == 50 for r in rows.tolist())  # no position twice
        if fused:  # value first, then the earlier position
            xf = v.numpy()
            want_p = [
                pos.numpy()[np.lexsort((pos.numpy(), sign * xf[:, j]))[:50]] for j in range(H)
            ]
            assert np.array_equal(out[key_p], np.array(want_p)), key_p


@pytest.mark.parametrize("fused", [True, False], ids=["compiled", "torch"])
def test_kind_stats_resumed_from_its_state_dict_end_the_same(fused):
    """A checkpoint's statistics (heaps stored best first, reloaded) continue exactly as the
    uninterrupted ones, with many ties at the k-th value (saturated gates look like this)."""
    g = torch.Generator().manual_seed(2)
    v = (torch.rand(3000, 5, generator=g) > 0.3).float()  # 0s and 1s only
    pos = torch.randperm(3000, generator=g)
    whole = KindStats("f", 5, "cpu", top_k=20, fused=fused)
    first = KindStats("f", 5, "cpu", top_k=20, fused=fused)
    for a in range(0, 1500, 300):
        for st in (whole, first):
            st.update(v[a : a + 300], v[a : a + 300].half(), pos[a : a + 300])
    state = {f: a.copy() for f, a in first.state_dict().items()}
    resumed = KindStats("f", 5, "cpu", top_k=20, fused=fused)
    resumed.load_state_dict(state)
    for a in range(1500, 3000, 300):
        for st in (whole, resumed):
            st.update(v[a : a + 300], v[a : a + 300].half(), pos[a : a + 300])
    (x, cx), (y, cy) = whole.finalize(), resumed.finalize()
    assert np.array_equal(cx, cy)
    for key in x:
        assert np.array_equal(x[key], y[key], equal_nan=True), key
    if fused:  # the tied 1s: the earliest 20 positions, and likewise for the 0s
        for j in range(5):
            for key, val in (("top_pos", 1), ("bottom_pos", 0)):
                want = np.sort(pos.numpy()[v.numpy()[:, j] == val])[:20]
                assert np.array_equal(x[key][j], want), (key, j)


def test_stream_divergence_takes_a_loaded_model_and_text(lstm):
    from tests.divergence import stream_divergence

    df = stream_divergence(lstm, python_text(1200), 3, buckets=(0, 50), kinds=["c"])
    assert list(df["lo"]) == [0, 50, 0, 50] and (df["kind"] == "c").all()
    assert (df["max"] >= df["median"]).all()
