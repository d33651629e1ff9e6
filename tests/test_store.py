"""ActivationStore: the reading API, the histogram grid, and refusing bad stores clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lstmscope import ActivationStore
from lstmscope.errors import StoreError
from lstmscope.model.cells import CharRNN, ModelConfig
from lstmscope.model.checkpoint import load_model, save_checkpoint
from lstmscope.store.histograms import (
    bin_index,
    hist_edges,
    hist_lut,
    hist_quantiles,
    histogram,
)
from lstmscope.store.layout import QUANTILE_NAMES
from lstmscope.store.recorder import record
from lstmscope.store.stats import KindStats
from lstmscope.text.vocab import Vocab

TEXT = (
    'for i in range(10):\n    print("value: {}".format(i))  # show [it]\n'
    "x = {'a': (1, 2), 'b': [3, 4]}\n"
) * 40


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("store")
    vocab = Vocab.from_text(TEXT)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=8, hidden_size=12, num_layers=2)
    model = CharRNN(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    save_checkpoint(
        tmp / "m.pt",
        {"config": cfg.to_dict(), "vocab": list(vocab.chars), "model": model.state_dict()},
    )
    loaded = load_model(tmp / "m.pt")
    record(loaded, TEXT, tmp / "s", streams=3, warmup=25, chunk_len=64, progress=False)
    return tmp / "s"


@pytest.fixture(scope="module")
def store(store_dir):
    return ActivationStore.open(store_dir)


def broken(store_dir, tmp_path):
    """A copy of the store to damage."""
    dst = tmp_path / "bad"
    shutil.copytree(store_dir, dst)
    return dst


# ----------------------------------------------------------------------------------------------
# Reading


def test_basic_properties(store):
    assert store.n == len(TEXT) and store.text == TEXT
    assert store.layers == (0, 1) and store.kinds == ("h", "c", "i", "f", "g", "o")
    assert store.hidden_size == 12 and store.cell == "lstm"
    assert store.neurons[:3] == ["L0.h.0", "L0.h.1", "L0.h.2"] and len(store.neurons) == 2 * 6 * 12
    assert store.neurons[12] == "L0.c.0"
    assert store.vocab.decode(store.ids[:10]) == TEXT[:10]
    assert store.cold.dtype == bool and store.cold.sum() == 75
    assert store.documents is None
    assert store.meta["dtype"] == "q16" and store.meta["version"] == 2
    assert store.meta["streams"] == 3 and store.runs.tolist() == [
        [0, 1293],
        [1293, 2586],
        [2586, 3880],
    ]
    assert store.distance()[[0, 1292, 1293, 3879]].tolist() == [0, 1292, 0, 1293]


def test_neuron_window_and_array(store):
    arr = store.array(1, "c")
    assert arr.shape == (store.n, 12) and arr.dtype == np.float32 and len(arr) == store.n
    with pytest.raises(ValueError):
        arr[0, 0] = 1  # read-only
    col = store.neuron("L1.c.7")
    assert col.dtype == np.float32 and np.array_equal(col, arr[:, 7].astype(np.float32))
    w = store.window(100, 140, ["L1.c.7", "L0.f.3", "L1.c.0"])
    assert w.shape == (40, 3)
    assert np.array_equal(w[:, 0], col[100:140]) and np.array_equal(w[:, 2], arr[100:140, 0])
    assert store.window(store.n - 5, store.n + 100, "L0.h.1").shape == (5, 1)  # stop clipped


def test_show_is_the_notebook_view(store, tmp_path):
    from lstmscope.export.notebook import NeuronView, show

    view = show(store, ["L1.c.7", "L0.f.3"], 100, 400)
    assert isinstance(view, NeuronView) and (view.start, view.stop) == (100, 400)
    assert view._repr_html_() == NeuronView(store, ["L1.c.7", "L0.f.3"], 100, 400)._repr_html_()
    assert show(store, "L1.c.7").stop == min(store.n, 2000)
    assert view.save(tmp_path / "v.html").read_text(encoding="utf-8").startswith("<!DOCTYPE")
    with pytest.raises(ValueError, match=r"units 0-11"):
        show(store, "L1.c.99")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.neuron("L2.c.0"), r"layers 0-1, kinds h c i f g o, units 0-11$"),
        (lambda s: s.neuron("L0.c.12"), r"units 0-11"),
        # An LSTM store lists its own kinds, not a GRU's (issue 12.11).
        (
            lambda s: s.neuron("L0.z.1"),
            r"in this store: it has layers 0-1, kinds h c i f g o, units 0-11$",
        ),
        (lambda s: s.neuron("cell 5"), r"expected L<layer>.<kind>.<unit>"),
        (lambda s: s.window(-1, 5, ["L0.h.0"]), r"need 0 <= start <= stop"),
        (lambda s: s.window(9, 5, ["L0.h.0"]), r"need 0 <= start <= stop"),
        (lambda s: s.window(10**9, 10**9 + 1, ["L0.h.0"]), r"past the end"),
        (lambda s: s.array(0, "r"), r"no L0.r in this store"),
        (lambda s: s.top_predictions(10**7), r"outside the text"),
    ],
)
def test_bad_requests_say_what_is_valid(store, call, match):
    with pytest.raises(ValueError, match=match):
        call(store)


def test_stats_frame(store):
    st = store.stats
    assert list(st.index[:2]) == ["L0.h.0", "L0.h.1"] and len(st) == len(store.neurons)
    expected = [
        "layer",
        "kind",
        "unit",
        "mean",
        "std",
        "min",
        "max",
        *QUANTILE_NAMES,
        "sat_left",
        "sat_right",
    ]
    assert list(st.columns) == expected
    warm = ~store.cold
    vals = store.array(0, "c")[warm].astype(np.float64)
    row = st.loc["L0.c.5"]
    # min/max: the float32 values; the store holds them within 1e-4 of the range
    tol = 1e-4 * np.ptp(vals[:, 5])
    assert abs(row["min"] - vals[:, 5].min()) <= tol and abs(row["max"] - vals[:, 5].max()) <= tol
    assert row["mean"] == pytest.approx(vals[:, 5].mean(), rel=1e-3, abs=1e-3)
    # quantiles from the histogram: within a bin of the exact ones
    for name, q in zip(QUANTILE_NAMES, (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99), strict=True):
        exact = np.quantile(vals[:, 5], q)
        assert abs(row[name] - exact) <= 0.03 * abs(exact) + 1e-3, name
        assert row["min"] <= row[name] <= row["max"]
    # saturation: exactly the fraction of warm values beyond 0.1 / 0.9, gates only
    # saturation counts the stored values (rounded to float16, as the histogram bins them)
    f = store.array(1, "f")[warm].astype(np.float16)
    assert st.loc["L1.f.2", "sat_left"] == pytest.approx((f[:, 2] < 0.1).mean(), abs=1e-12)
    assert st.loc["L1.f.2", "sat_right"] == pytest.approx((f[:, 2] > 0.9).mean(), abs=1e-12)
    assert np.isnan(st.loc["L1.g.2", "sat_left"]) and np.isnan(st.loc["L1.c.2", "sat_right"])


def test_histograms_subtract_exactly(store):
    warm = ~store.cold
    for nid in ("L0.i.3", "L1.h.4", "L1.c.9"):
        counts, edges = store.hist(nid)
        assert len(edges) == len(counts) + 1 and counts.sum() == warm.sum()
        col = store.neuron(nid)
        assert np.array_equal(counts, histogram(col[warm], nid.split(".")[1]))
        on = warm & (np.arange(store.n) % 3 == 0)  # a "feature"
        on_counts, _ = store.hist(nid, rows=on)
        rest = counts - on_counts
        assert (rest >= 0).all()
        assert np.array_equal(rest, store.hist(nid, rows=np.flatnonzero(warm & ~on))[0])
    arrays = store.stat_arrays(1, "c")
    assert arrays["hist_counts"].shape == (12, len(hist_edges("c")) - 1)
    assert arrays["top_pos"].shape == (12, 50) and arrays["bottom_val"].shape == (12, 50)


def test_top_predictions(store):
    preds = store.top_predictions(5)
    assert len(preds) == 5 and all(isinstance(c, str) for c, _ in preds)
    probs = [p for _, p in preds]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.001
    assert np.isnan(store.loss[0]) and store.loss.dtype == np.float32


def test_open_reads_no_activation_data(store_dir, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("open() must not load arrays")

    monkeypatch.setattr(np, "load", boom)
    monkeypatch.setattr(np, "memmap", boom)
    s = ActivationStore.open(store_dir)
    assert s.n == len(TEXT)


# ----------------------------------------------------------------------------------------------
# The histogram grid


def test_grids_are_monotone_and_fine_enough():
    values = np.arange(65536, dtype=np.uint16).view(np.float16)
    finite = np.isfinite(values)
    order = np.argsort(values[finite].astype(np.float64), kind="stable")
    for kind in ("i", "h", "c"):
        edges = hist_edges(kind)
        assert len(edges) - 1 >= 256 and np.all(np.diff(edges) > 0)
        lut = hist_lut(kind)[finite][order]
        assert np.all(np.diff(lut) >= 0)  # larger values never land in lower bins
    c = hist_edges("c")
    assert c[0] == -65504 and c[-1] == 65504 and 0.0 in c
    # 32 bins per octave at every magnitude: 2% relative resolution
    assert np.sum((c > 1) & (c <= 2)) == 32 and np.sum((c > 64) & (c <= 128)) == 32
    assert bin_index(np.float16(-0.0), "c") == bin_index(np.float16(0.0), "c")
    assert (
        bin_index(0.0999, "i") == 99
        and bin_index(0.1001, "i") == 100
        and bin_index(1.0, "i") == 999
    )


def test_quantiles_in_the_end_bins_reach_the_true_extremes():
    """Values beyond the c grid's +-65,504 are binned clamped into the end bins; a quantile
    there interpolates up to the true min/max instead of stopping at the grid's edge (the
    last 15k characters of an 80k counter all took the colour of 65,504)."""
    x = np.concatenate([-np.arange(70_000, 100_000), np.arange(1, 80_001)]).astype(np.float64)
    counts = histogram(x, "c")[None]
    edges = hist_edges("c")
    qs = (0.001, 0.01, 0.5, 0.99, 1.0)
    got = hist_quantiles(counts, edges, qs, np.array([x.min()]), np.array([x.max()]))[:, 0]
    assert got[0] < -65504 and abs(got[0] - np.quantile(x, 0.001)) < 40
    assert got[3] > 65504 and abs(got[3] - np.quantile(x, 0.99)) < 40
    assert got[-1] == x.max() and abs(got[2] - np.quantile(x, 0.5)) <= 0.02 * abs(got[2])
    # inside the grid nothing changes: quantiles stay within the data's range
    y = np.linspace(-3.0, 7.0, 1000)
    q = hist_quantiles(
        histogram(y, "c")[None], edges, (0.0, 1.0), np.array([-3.0]), np.array([7.0])
    )
    assert q[:, 0].tolist() == [-3.0, 7.0]


def test_recorder_bins_like_the_reader():
    g = torch.Generator().manual_seed(0)
    for kind, v in (
        ("c", torch.randn(500, 4, generator=g) * torch.tensor([0.01, 1.0, 100.0, 3000.0])),
        ("f", torch.rand(500, 4, generator=g)),
        ("g", torch.rand(500, 4, generator=g) * 2 - 1),
    ):
        st = KindStats(kind, 4, "cpu")
        st.update(v, v.half(), torch.arange(500))
        _, counts = st.finalize()
        for u in range(4):
            assert np.array_equal(counts[u], histogram(v[:, u].half().numpy(), kind)), (kind, u)


# ----------------------------------------------------------------------------------------------
# Refusing bad stores


def test_missing_meta_means_interrupted(store_dir, tmp_path):
    bad = broken(store_dir, tmp_path)
    (bad / "meta.json").unlink()
    with pytest.raises(
        StoreError,
        match=r"incomplete store: recording was interrupted; rerun the same `lstmscope record` command to resume",
    ):
        ActivationStore.open(bad)


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        ActivationStore.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not an activation store"):
        ActivationStore.open(tmp_path / "empty")


def _edit_meta(path, **changes):
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(n=10), r"ids.npy: shape \(3880,\), but meta.json says \(10,\)"),
        (dict(hidden_size=13), r"hidden_size 13 disagrees with the model config"),
        (dict(dtype="float32"), r"dtype 'float32'; this version reads float16 stores \(format 1\)"),
        (dict(dtype="float16"), r"dtype 'float16'; this version reads .* q16 stores \(format 2\)"),
        (dict(blocks=None), r"blocks must be a positive integer, not None"),
        (dict(blocks=7), r"blocks.npy: shape \(\d+,\), but meta.json says \(8,\)"),
        (dict(runs=0), r"runs must be a positive integer, not 0"),
        (dict(version=99), r"newer lstmscope \(store format 99"),
        (dict(format="other"), r"not an lstmscope store"),
        (dict(kinds=["h", "z"]), r"not kinds of a lstm layer"),
        (dict(layers=[0, 1, 2]), r"do not fit a 2-layer model"),
    ],
)
def test_meta_that_lies_is_refused(store_dir, tmp_path, change, match):
    bad = broken(store_dir, tmp_path)
    _edit_meta(bad, **change)
    with pytest.raises(StoreError, match=match):
        ActivationStore.open(bad)


def test_wrong_or_damaged_arrays_are_named(store_dir, tmp_path):
    bad = broken(store_dir, tmp_path)
    np.save(bad / "acts" / "L1.f.npy", np.zeros((len(TEXT), 11), dtype=np.float16))
    with pytest.raises(
        StoreError, match=r"acts/L1.f.npy: shape \(3880, 11\), but meta.json says \(3880, 12\)"
    ):
        ActivationStore.open(bad)
    np.save(bad / "acts" / "L1.f.npy", np.zeros((len(TEXT), 12), dtype=np.float32))
    with pytest.raises(
        StoreError, match=r"L1.f.npy: dtype float32, but the store format needs int16"
    ):
        ActivationStore.open(bad)
    shutil.copy(store_dir / "acts" / "L1.f.npy", bad / "acts" / "L1.f.npy")
    with open(bad / "acts" / "L0.c.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(StoreError, match=r"L0.c.npy: truncated"):
        ActivationStore.open(bad)
    (bad / "acts" / "L0.c.npy").write_bytes(b"garbage")
    with pytest.raises(StoreError, match=r"L0.c.npy: not a readable .npy file"):
        ActivationStore.open(bad)
    (bad / "acts" / "L0.c.npy").unlink()
    with pytest.raises(StoreError, match=r"L0.c.npy: missing"):
        ActivationStore.open(bad)


def test_modified_text_is_refused_on_read(store_dir, tmp_path):
    bad = broken(store_dir, tmp_path)
    (bad / "text.txt").write_text(TEXT + "extra", encoding="utf-8")
    s = ActivationStore.open(bad)  # open stays cheap: the text is read lazily
    with pytest.raises(StoreError, match=r"text.txt: 3885 characters, but meta.json says 3880"):
        _ = s.text
