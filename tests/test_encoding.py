"""The store's 16-bit block encoding: three encoders agree bit for bit, reading decodes like
numpy indexing, the error bound holds against a float64 reference with a planted counter cell,
format 1 (float16) stores still open, and damaged encoding files are refused."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

from lstmscope.errors import StoreError
from lstmscope.store import kernels
from lstmscope.store.encoding import (
    NAN_CODE,
    BlockCodedArray,
    Float16Array,
    block_layout,
    decode_block,
    encode_numpy,
    encode_torch,
    error_bound,
)
from lstmscope.store.histograms import histogram
from lstmscope.store.reader import ActivationStore
from lstmscope.store.recorder import record
from tests.test_record import make_loaded, python_text

pytestmark = pytest.mark.usefixtures("one_thread")


def _hostile_chunk(T=90, B=5, H=7, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((T, B, H)) * rng.uniform(1e-3, 5e3, (1, 1, H))
    v = (v + rng.uniform(-1e4, 1e4, (1, 1, H))).astype(np.float32)
    v[3, 0, 1] = np.nan  # one NaN in a block
    v[:, 1, 2] = np.nan  # a block of NaNs only
    v[:, 2, 3] = 7.25  # a constant: scale 0
    v[5, 3, 4] = np.inf  # inf is clamped (and spoils that block's resolution)
    length = np.array([T, T - 17, T, 1, 0])  # ragged: the last chunk
    return v, length


def test_the_three_encoders_give_the_same_bits():
    v, length = _hostile_chunk()
    T, B, H = v.shape
    codes = np.zeros((B, T, H), np.int16)
    params = np.zeros((B, 2, H), np.float32)
    dec = np.zeros((T, B, H), np.float32)
    kernels.encode_chunk(v, length, codes, params, dec)
    # The trace's gates are slices of a [T, B, 4H] buffer: the same bits from that layout
    wide = np.zeros((T, B, 4 * H), np.float32)
    wide[:, :, H : 2 * H] = v
    codes2, params2 = np.zeros_like(codes), np.zeros_like(params)
    kernels.encode_chunk(wide[:, :, H : 2 * H], length, codes2, params2, np.zeros_like(dec))
    for b in np.flatnonzero(length):
        assert np.array_equal(codes[b, : length[b]], codes2[b, : length[b]])
    assert np.array_equal(params.view(np.uint32), params2.view(np.uint32))
    t_codes = torch.zeros((B, T, H), dtype=torch.int16)
    t_params, t_dec = encode_torch(torch.from_numpy(v.copy()), length, t_codes)
    for b in np.flatnonzero(length):
        m = length[b]
        q, p = encode_numpy(v[:m, b])
        assert np.array_equal(q, codes[b, :m]) and np.array_equal(q, t_codes[b, :m].numpy())
        for got in (params[b], t_params[b]):
            assert np.array_equal(p.view(np.uint32), got.view(np.uint32)), b
        # What the recorder bins is what a reader decodes, bit for bit (NaNs aside).
        want = decode_block(q, p[0], p[1])
        assert np.array_equal(want, t_dec[:m, b].numpy(), equal_nan=True), b
        assert np.array_equal(np.clip(want, -65504, 65504), dec[:m, b], equal_nan=True), b
    assert (codes[1, : length[1], 2] == NAN_CODE).all() and np.signbit(params[1, 1, 2])
    assert codes[0, 3, 1] == NAN_CODE and (codes[0, :, 1] != NAN_CODE).sum() == length[0] - 1


def _dead_gate(lo=-100.0, hi=-80.0, m=9):
    """A dead input gate: sigmoid of pre-activations -100..-80, values ~4e-44..2e-35."""
    return torch.sigmoid(torch.linspace(lo, hi, m)).numpy()


_INF, _TINY = np.float32(np.inf), np.finfo(np.float32).tiny
EXTREME_BLOCKS = {
    "all +inf": [_INF] * 3,
    "all -inf": [-_INF] * 2,
    "+inf and -inf": [_INF, -_INF, _INF],
    "-inf and finite": [-_INF, 4.43e6, 9.25e6],
    "+inf with a NaN": [np.nan, _INF],
    "dead gate": _dead_gate(),
    "dead gate, deeper": _dead_gate(-103.0, -90.0, 40),
    "0 .. 1e-36": [0.0, 5e-37, 1e-36],
    "1e-40 .. 1e-35": np.geomspace(1e-40, 1e-35, 30),
    "subnormal steps": [0.0, 1.4e-45, 2.8e-45, -1.4e-45],
    "near 1e-34": [1e-34, 2e-34, 5e-34],
}


@pytest.mark.parametrize("name", list(EXTREME_BLOCKS))
def test_the_three_encoders_agree_on_infinite_and_tiny_blocks(name):
    """Blocks of only +-inf code float32's max, not 0; a block whose half-range is too small
    for ``1 / scale`` in float32 codes in steps of float32's tiny on every road."""
    x = np.asarray(EXTREME_BLOCKS[name], dtype=np.float32)
    m, H = len(x), 3
    v = np.stack([x, -x, x * 0.5], axis=1)[:, None, :].copy()  # [m, 1, H]
    codes = np.zeros((1, m, H), np.int16)
    params = np.zeros((1, 2, H), np.float32)
    dec = np.zeros((m, 1, H), np.float32)
    kernels.encode_chunk(v, np.array([m]), codes, params, dec)
    t_codes = torch.zeros((1, m, H), dtype=torch.int16)
    t_params, t_dec = encode_torch(torch.from_numpy(v.copy()), np.array([m]), t_codes)
    q, p = encode_numpy(v[:, 0])
    assert np.array_equal(q, codes[0]) and np.array_equal(q, t_codes[0].numpy())
    for got in (params[0], t_params[0]):
        assert np.array_equal(p.view(np.uint32), got.view(np.uint32))
    with np.errstate(over="ignore"):  # +-inf together: float32's max +- a step is inf
        want = decode_block(q, p[0], p[1])
    assert np.array_equal(want, t_dec[:, 0].numpy(), equal_nan=True)
    assert np.array_equal(np.clip(want, -65504, 65504), dec[:, 0], equal_nan=True)
    f32max = np.finfo(np.float32).max
    clamped = np.clip(v[:, 0], -f32max, f32max).astype(np.float64)
    # every value of a block without inf (which spoils its block) comes back within the bound
    finite = ~np.isnan(clamped) & ~np.isinf(v[:, 0]).any(0)
    rng = np.nanmax(clamped, 0) - np.nanmin(clamped, 0)
    bound = error_bound(rng, np.nanmax(np.abs(clamped), 0))
    err = np.abs(want - clamped)
    assert (err[finite] <= np.broadcast_to(bound, err.shape)[finite]).all(), (err, bound)
    assert ((np.abs(p[1]) == 0) | (np.abs(p[1]) >= _TINY)).all()
    assert np.isfinite(p).all() and (q[~np.isnan(clamped)] != NAN_CODE).all()
    if name.startswith("all"):  # inf of one sign: float32's max (was 0 from the kernel)
        assert (want == np.clip(v[:, 0], -f32max, f32max)).all()


def test_a_dead_gate_is_coded_within_a_tiny_fraction_of_its_range():
    v = _dead_gate()[:, None]
    q, p = encode_numpy(v)
    got = decode_block(q, p[0], p[1])
    rng = np.ptp(v)
    assert np.abs(got - v).max() <= error_bound(rng, np.abs(v).max())
    assert np.abs(got - v).max() < 1e-3 * rng  # was 0.08 of the range: codes at +-32767
    assert len(np.unique(q)) == len(np.unique(v))  # distinct values keep distinct codes


@pytest.mark.parametrize("seed", range(4))
def test_decoded_values_are_within_the_bound(seed):
    v, length = _hostile_chunk(seed=seed)
    for b in np.flatnonzero(length):
        x = v[: length[b], b]
        q, p = encode_numpy(x)
        got = decode_block(q, p[0], p[1]).astype(np.float64)
        assert np.array_equal(np.isnan(got), np.isnan(x))
        ok = np.isfinite(x).all(0)  # whole columns: inf spoils its block, NaN only itself
        with warnings.catch_warnings():  # the all-NaN column
            warnings.simplefilter("ignore", RuntimeWarning)
            rng, mag = np.nanmax(x, 0) - np.nanmin(x, 0), np.nanmax(np.abs(x), 0)
            err = np.nanmax(np.abs(got - x), 0)
        assert (err[ok] <= error_bound(rng, mag)[ok]).all()
        # the bound is 7.8e-6 of the range for a unit near 0: far below float16's 2^-11 relative
        assert (error_bound(1.0, 1.0) < 1e-5) and error_bound(100.0, 12_000.0) < 2e-3


def test_block_layout_numbers_blocks_in_text_order():
    start = np.array([[0, 50, 90], [10, 60, -1], [20, -1, -1]])
    length = np.array([[10, 10, 5], [10, 5, 0], [3, 0, 0]])
    starts, block_of = block_layout(start, length, 95)
    assert starts.tolist() == [0, 10, 20, 50, 60, 90, 95]
    assert block_of.tolist() == [[0, 3, 5], [1, 4, -1], [2, -1, -1]]


# ----------------------------------------------------------------------------------------------
# A store to read


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("enc")
    loaded = make_loaded(tmp, hidden=6)
    record(loaded, python_text(1500, seed=9), tmp / "s", streams=3, warmup=10, chunk_len=37,
           progress=False)  # fmt: skip
    return tmp / "s"


KEYS = [
    np.s_[:],
    np.s_[...],
    np.s_[5],
    np.s_[-1],
    np.s_[3:700],
    np.s_[700:3],
    np.s_[::7],
    np.s_[100:40:-3],
    np.s_[:, 2],
    np.s_[:, -1],
    np.s_[10:90, 1:4],
    np.s_[..., 3],
    np.s_[7, ...],
    np.s_[[0, 36, 37, 1499, 5, 5]],
    np.s_[[3, 600], [1, 5]],
    np.s_[[3, 600], 2],
    np.s_[5, [0, 4]],
    np.s_[40:80, [5, 0, 2]],
    np.s_[np.arange(1500) % 4 == 1],
    np.s_[np.arange(1500) % 4 == 1, 3],
    np.s_[np.array([-1, -1500])],
]


@pytest.mark.parametrize("key", KEYS, ids=[str(k)[:40] for k in KEYS])
def test_indexing_decodes_like_numpy(store_dir, key):
    store = ActivationStore.open(store_dir)
    arr = store.array(1, "c")
    assert isinstance(arr, BlockCodedArray) and arr.shape == (1500, 6) and arr.ndim == 2
    whole = np.asarray(arr)  # decoded block by block
    codes = np.load(store_dir / "acts/L1.c.npy")
    params = np.load(store_dir / "acts/L1.c.scale.npy")
    blk = np.searchsorted(store.block_starts, np.arange(1500), side="right") - 1
    want_whole = codes * np.abs(params[blk, 1]) + params[blk, 0]
    assert whole.dtype == np.float32 and np.array_equal(whole, want_whole.astype(np.float32))
    got = arr[key]
    assert got.dtype == np.float32 and np.array_equal(got, whole[key])


def test_store_reads_return_float32(store_dir):
    store = ActivationStore.open(store_dir)
    col = store.neuron("L0.g.4")
    assert col.dtype == np.float32 and np.array_equal(col, np.asarray(store.array(0, "g"))[:, 4])
    w = store.window(30, 120, ["L0.g.4", "L1.o.0"])
    assert w.dtype == np.float32 and np.array_equal(w[:, 0], col[30:120])
    # histograms of any rows are exactly a part of the stored statistics
    warm = ~store.cold
    for nid in ("L0.c.1", "L1.f.5", "L1.h.2"):
        assert np.array_equal(store.hist(nid)[0], histogram(store.neuron(nid)[warm], nid[3]))


# ----------------------------------------------------------------------------------------------
# Format 1 (float16) stores


def to_format_1(src, dst) -> None:
    """What format 1 wrote: float16 acts, no runs/blocks/scale files, version 1 in meta.json."""
    shutil.copytree(src, dst)
    store = ActivationStore.open(src)
    for li in store.layers:
        for kind in store.kinds:
            np.save(dst / f"acts/L{li}.{kind}.npy", store.array(li, kind).astype(np.float16))
            (dst / f"acts/L{li}.{kind}.scale.npy").unlink()
    (dst / "runs.npy").unlink()
    (dst / "blocks.npy").unlink()
    meta = json.loads((dst / "meta.json").read_text())
    meta.update(version=1, dtype="float16")
    del meta["blocks"]
    (dst / "meta.json").write_text(json.dumps(meta))


def test_format_1_stores_still_open(store_dir, tmp_path):
    to_format_1(store_dir, tmp_path / "v1")
    old, new = ActivationStore.open(tmp_path / "v1"), ActivationStore.open(store_dir)
    arr = old.array(1, "c")
    assert isinstance(arr, Float16Array) and arr.dtype == np.float32
    f16 = np.load(tmp_path / "v1/acts/L1.c.npy")
    assert np.array_equal(arr[10:20, 3], f16[10:20, 3].astype(np.float32))
    assert np.array_equal(old.neuron("L1.c.3"), f16[:, 3].astype(np.float32))
    assert old.window(0, 50, ["L0.h.1"]).dtype == np.float32
    # run starts come from the NaN losses there
    assert np.array_equal(old.runs, new.runs) and np.array_equal(old.distance(), new.distance())
    warm = ~old.cold
    assert np.array_equal(old.hist("L0.i.2")[0], histogram(old.neuron("L0.i.2")[warm], "i"))
    assert len(old.stats) == len(new.stats)


def test_format_1_store_with_a_wrong_dtype_is_refused(store_dir, tmp_path):
    to_format_1(store_dir, tmp_path / "v1")
    np.save(tmp_path / "v1/acts/L0.o.npy", np.zeros((1500, 6), np.int16))
    with pytest.raises(
        StoreError, match=r"L0.o.npy: dtype int16, but the store format needs float16"
    ):
        ActivationStore.open(tmp_path / "v1")


# ----------------------------------------------------------------------------------------------
# Damaged encoding files


def _edit(path, fn):
    arr = np.load(path)
    np.save(path, fn(arr))


DAMAGE = {
    "scale-missing": (lambda r: (r / "acts/L0.h.scale.npy").unlink(), "acts/L0.h.scale.npy",
                      "missing"),
    "scale-truncated": (lambda r: os.truncate(r / "acts/L1.c.scale.npy", 300),
                        "acts/L1.c.scale.npy", "truncated"),
    "scale-float16": (lambda r: _edit(r / "acts/L1.c.scale.npy", lambda a: a.astype(np.float16)),
                      "acts/L1.c.scale.npy", "dtype float16, but the store format needs float32"),
    "scale-fewer-blocks": (lambda r: _edit(r / "acts/L1.g.scale.npy", lambda a: a[1:]),
                           "acts/L1.g.scale.npy", "but meta.json says"),
    "blocks-missing": (lambda r: (r / "blocks.npy").unlink(), "blocks.npy", "missing"),
    "blocks-int32": (lambda r: _edit(r / "blocks.npy", lambda a: a.astype(np.int32)),
                     "blocks.npy", "dtype int32"),
    "runs-missing": (lambda r: (r / "runs.npy").unlink(), "runs.npy", "missing"),
    "runs-transposed": (lambda r: _edit(r / "runs.npy", lambda a: a.T.copy()), "runs.npy",
                        "but meta.json says"),
    "codes-float16": (lambda r: _edit(r / "acts/L0.f.npy", lambda a: a.astype(np.float16)),
                      "acts/L0.f.npy", "dtype float16, but the store format needs int16"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_encoding_files_are_refused_at_open(store_dir, tmp_path, case):
    damage, named, words = DAMAGE[case]
    bad = tmp_path / "bad"
    shutil.copytree(store_dir, bad)
    damage(bad)
    with pytest.raises(StoreError) as ei:
        ActivationStore.open(bad)
    msg = str(ei.value)
    assert str(bad / named) in msg and words in msg and "record it again" in msg, msg


@pytest.mark.parametrize(
    ("rel", "fn", "access"),
    [
        ("blocks.npy", lambda a: a[::-1].copy(), lambda s: s.neuron("L0.h.0")),
        ("blocks.npy", lambda a: a + 1, lambda s: s.window(0, 10, ["L1.c.0"])),
        ("runs.npy", lambda a: a[::-1].copy(), lambda s: s.distance()),
    ],
)
def test_lying_block_and_run_starts_are_refused_on_first_read(store_dir, tmp_path, rel, fn, access):
    bad = tmp_path / "bad"
    shutil.copytree(store_dir, bad)
    _edit(bad / rel, fn)
    store = ActivationStore.open(bad)  # shapes and dtypes are right: open stays cheap
    with pytest.raises(StoreError, match="record it again") as ei:
        access(store)
    assert str(bad / rel) in str(ei.value)
