"""The fast trace against a plain step-by-step reference, for every cell type and kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmscope.model.cells import CharRNN, ModelConfig
from lstmscope.model.plan import plan_streams
from lstmscope.model.trace import c_recurrence_, trace_chunk, trace_ids
from lstmscope.names import KINDS
from tests.divergence import stream_divergence

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# The reference: one position at a time, torch.nn.*Cell with the same weights, gates written out


def _cell_module(layer):
    r = layer.rnn
    cls = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}[layer.cell]
    cell = cls(r.input_size, r.hidden_size)
    with torch.no_grad():
        cell.weight_ih.copy_(r.weight_ih_l0)
        cell.weight_hh.copy_(r.weight_hh_l0)
        cell.bias_ih.copy_(r.bias_ih_l0)
        cell.bias_hh.copy_(r.bias_hh_l0)
    return cell


def reference_trace(model: CharRNN, ids: np.ndarray) -> dict[str, np.ndarray]:
    """One position at a time in float32: torch's cells for h and c, gates written out."""
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        x_seq = model.embed(torch.as_tensor(ids))  # [N, E]
        for li, layer in enumerate(model.layers):
            cellmod = _cell_module(layer)
            w_ih, w_hh = layer.rnn.weight_ih_l0, layer.rnn.weight_hh_l0
            b_ih, b_hh = layer.rnn.bias_ih_l0, layer.rnn.bias_hh_l0
            H = layer.hidden_size
            h = torch.zeros(1, H)
            c = torch.zeros(1, H)
            rows: dict[str, list] = {k: [] for k in KINDS[layer.cell]}
            outs = []
            for t in range(len(ids)):
                x = x_seq[t : t + 1]  # [1, In]
                gi = x @ w_ih.t() + b_ih
                gh = h @ w_hh.t() + b_hh
                if layer.cell == "lstm":
                    i, f, g, o = (gi + gh).split(H, dim=1)
                    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
                    h, c = cellmod(x, (h, c))
                    # the cell's c is the gate equation's c
                    assert torch.allclose(
                        c, f * rows["c"][-1] + i * g if t else i * g, rtol=1e-5, atol=1e-5
                    )
                    for k, v in zip("hcifgo", (h, c, i, f, g, o), strict=True):
                        rows[k].append(v)
                    outs.append(c if layer.output == "c" else h)
                elif layer.cell == "gru":
                    r = (gi[:, :H] + gh[:, :H]).sigmoid()
                    z = (gi[:, H : 2 * H] + gh[:, H : 2 * H]).sigmoid()
                    n = (gi[:, 2 * H :] + r * gh[:, 2 * H :]).tanh()
                    h_prev = h
                    h = cellmod(x, h)
                    assert torch.allclose(h, (1 - z) * n + z * h_prev, atol=1e-5)
                    for k, v in zip("hrzn", (h, r, z, n), strict=True):
                        rows[k].append(v)
                    outs.append(h)
                else:
                    h = cellmod(x, h)
                    rows["h"].append(h)
                    outs.append(h)
            for k, v in rows.items():
                out[f"L{li}.{k}"] = torch.cat(v).numpy()
            x_seq = torch.cat(outs)
        out["logits"] = model.head(x_seq).double().numpy()
    return out


def make_model(cell="lstm", layers=2, output="h", hidden=16, vocab=20, seed=0, trained=False):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        cell=cell, vocab_size=vocab, embed_dim=8, hidden_size=hidden, num_layers=layers,
        output=output,
    )  # fmt: skip
    model = CharRNN(cfg).eval()
    if trained:
        trained_like_(model)
    return model


def trained_like_(model: CharRNN) -> None:
    """Weights like a trained model's where it matters: saturated gates, integrating cells.

    LSTM: forget bias +6 (f ~ 0.998), input gate open (+6), input block driven hard, so c
    moves by about +-1 per step for hundreds of steps: |c| reaches the hundreds. GRU/RNN: large
    weights, so gates and tanh saturate.
    """
    H = model.config.hidden_size
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.embed.weight.copy_(torch.randn(model.embed.weight.shape, generator=g) * 2)
        for layer in model.layers:
            r = layer.rnn
            r.weight_ih_l0.copy_(torch.randn(r.weight_ih_l0.shape, generator=g) * 1.5)
            r.weight_hh_l0.copy_(torch.randn(r.weight_hh_l0.shape, generator=g) * 0.5)
            r.bias_ih_l0.zero_()
            r.bias_hh_l0.zero_()
            if layer.cell == "lstm":
                r.bias_ih_l0[:H] = 6.0  # input gate open
                r.bias_ih_l0[H : 2 * H] = 6.0  # forget gate keeps
                # input block: a constant push per unit, so half the cells count up steadily
                r.bias_ih_l0[2 * H : 3 * H] = torch.where(torch.arange(H) % 2 == 0, 4.0, 0.0)
                # i and f barely depend on the input: the biases dominate, as in trained
                # counting cells, so f ~ 0.998 and c integrates to the hundreds.
                r.weight_ih_l0[: 2 * H] *= 0.05
                r.weight_hh_l0[: 2 * H] *= 0.05
                if layer.output == "c" and r.input_size == H:
                    # reading cell states in the hundreds, a trained layer has small input
                    # weights (else float32 rounding alone would swing its gates)
                    r.weight_ih_l0.mul_(0.01)
            elif layer.cell == "rnn":
                r.weight_hh_l0.mul_(0.5)


def _assert_close(ours: np.ndarray, ref: np.ndarray, what: str, tol: float = 1e-4) -> None:
    err = np.abs(ours.astype(np.float64) - ref) / (1 + np.abs(ref))
    assert err.max() <= tol, (
        f"{what}: max relative error {err.max():.2e} at {np.unravel_index(err.argmax(), err.shape)}"
    )


CASES = [
    (cell, layers, output)
    for cell in ("lstm", "gru", "rnn")
    for layers in (1, 2, 3)
    for output in (("h", "c") if cell == "lstm" else ("h",))
]


# LSTMs and GRUs are traced two ways: the fused kernel plus the rebuild (what runs on an
# accelerator) and our own loop over time (what runs on CPU). Both must match the reference.
CASES = [
    (cell, layers, output, method)
    for cell, layers, output in CASES
    for method in (("kernel", "steps") if cell != "rnn" else ("auto",))
]


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained-like"])
@pytest.mark.parametrize(("cell", "layers", "output", "method"), CASES)
def test_fast_trace_matches_step_by_step_reference(cell, layers, output, method, trained):
    model = make_model(cell, layers, output, trained=trained)
    n = 300 if trained else 120
    ids = np.random.default_rng(3).integers(0, 20, n)
    ref = reference_trace(model, ids)
    # chunk_len 50 < n: state is carried across chunks, as when recording.
    ours = trace_ids(model, ids, chunk_len=50, method=method)
    kinds = KINDS[cell]
    for li in range(layers):
        for k in kinds:
            _assert_close(ours[f"L{li}.{k}"], ref[f"L{li}.{k}"], f"L{li}.{k}")
    if trained and cell == "lstm":
        assert np.abs(ref["L0.c"]).max() > 100, "the trained-like weights should integrate"
    # The loss comes from the head on top of the last layer's output.
    lp = ref["logits"] - np.log(np.exp(ref["logits"]).sum(1, keepdims=True))
    ref_loss = -lp[np.arange(n - 1), ids[1:]] / np.log(2)
    assert np.isnan(ours["loss"][0])
    _assert_close(ours["loss"][1:], ref_loss, "loss")


@pytest.mark.parametrize(
    ("cell", "output", "method"),
    [
        ("lstm", "h", "kernel"),
        ("lstm", "h", "steps"),
        ("lstm", "c", "kernel"),
        ("lstm", "c", "steps"),
        ("gru", "h", "kernel"),
        ("gru", "h", "steps"),
        ("rnn", "h", "auto"),
    ],
)
def test_trace_reproduces_kernel_h_and_forward_logits(cell, output, method):
    model = make_model(cell, 2, output, hidden=24, trained=True)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 20, (3, 200)))  # [B, T]
    with torch.no_grad():
        logits, state = model(ids)
    tr = trace_chunk(model, ids.t().contiguous(), method=method)  # time-major [T, B]
    if method == "steps":  # h is ours, not the kernel's: it must equal the kernel's h too
        with torch.no_grad():
            x = model.embed(ids)
            for li, layer in enumerate(model.layers):
                h_kernel, _ = layer.rnn(x)
                x, _ = layer(x)
                ours = tr.acts[(li, "h")].transpose(0, 1).numpy()
                _assert_close(ours, h_kernel.double().numpy(), f"L{li}.h")
    assert torch.allclose(tr.logits.transpose(0, 1), logits, atol=1e-5, rtol=1e-5)
    for a, b in zip(tr.state, state, strict=True):
        for x, y in zip(
            a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True
        ):
            assert torch.allclose(x, y, atol=1e-4, rtol=1e-5)
    if cell == "lstm":
        for li in range(2):
            h = tr.acts[(li, "h")]
            rebuilt = tr.acts[(li, "o")] * torch.tanh(tr.acts[(li, "c")])
            assert (h - rebuilt).abs().max() < 1e-4
        assert tr.acts[(0, "c")].abs().max() > 100


def test_c_recurrence_in_place():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(7, 3, 5, generator=g)
    ig = torch.randn(7, 3, 5, generator=g)
    c0 = torch.randn(3, 5, generator=g)
    expect, c = [], c0
    for t in range(7):
        c = f[t] * c + ig[t]
        expect.append(c)
    got = c_recurrence_(ig.clone(), f, c0)
    assert torch.allclose(got, torch.stack(expect), atol=1e-6)


def test_selection_is_validated():
    model = make_model("gru", 2)
    ids = torch.zeros(4, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="kinds are h,r,z,n"):
        trace_chunk(model, ids, kinds=["c"])
    with pytest.raises(ValueError, match=r"layers 0\.\.1"):
        trace_chunk(model, ids, layers=[2])
    tr = trace_chunk(model, ids, layers=[1], kinds=["z"])
    assert set(tr.acts) == {(1, "z")}


# ----------------------------------------------------------------------------------------------
# Streams


def test_one_stream_is_the_single_pass():
    model = make_model("lstm", 2, trained=True)
    ids = np.random.default_rng(1).integers(0, 20, 400)
    chunked = trace_ids(model, ids, streams=1, chunk_len=37, method="kernel")
    with torch.no_grad():
        x = model.embed(torch.from_numpy(ids)[None])
        for li, layer in enumerate(model.layers):
            x, _ = layer(x)
            # With the kernel, h comes straight from it, step for step: bit-identical.
            assert np.array_equal(chunked[f"L{li}.h"], x[0].numpy())
    # Our own loop over time, chunked, agrees with the kernel's whole pass.
    steps = trace_ids(model, ids, streams=1, chunk_len=37, method="steps")
    for key, v in steps.items():
        if key != "loss":
            _assert_close(v, chunked[key].astype(np.float64), key)
    # Gates and c are rebuilt by matrix products whose blocking depends on the chunk size:
    # equal up to float32 summation order.
    whole = trace_ids(model, ids, streams=1, chunk_len=400)
    for key, v in whole.items():
        if key != "loss":
            _assert_close(chunked[key], v.astype(np.float64), key)


def test_plan_covers_text_once_and_balances_rows():
    plan = plan_streams(1000, 4, 64, warmup=10)
    seen = np.zeros(1000, dtype=int)
    for k in range(plan.chunks):
        for b in range(plan.streams):
            p, m = plan.start[k, b], plan.length[k, b]
            seen[p : p + m] += 1
    assert (seen == 1).all()
    assert plan.runs.tolist() == [[0, 250], [250, 500], [500, 750], [750, 1000]]
    cold = plan.cold()
    assert cold.sum() == 40 and cold[250:260].all() and not cold[260]
    assert plan.distance()[260] == 10
    one = plan_streams(1000, 1, 64)
    assert one.runs.tolist() == [[0, 1000]] and one.streams == 1


def test_plan_resets_at_document_starts():
    docs = [(0, 30), (30, 35), (35, 900), (900, 1000)]
    plan = plan_streams(1000, 3, 16, warmup=4, documents=docs)
    starts = set(plan.runs[:, 0].tolist())
    assert {0, 30, 35, 900} <= starts  # every document start is a fresh state
    assert (np.diff(plan.runs, axis=1) <= 334).all()  # long documents cut for balance
    loads = (plan.length > 0).sum(0)  # chunks per row
    longest = int(np.ceil(np.diff(plan.runs, axis=1).max() / 16))
    assert loads.max() - loads.min() <= longest  # greedy (longest first) balance


def test_documents_never_share_state():
    model = make_model("lstm", 2, trained=True)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 20, 500)
    docs = [(0, 120), (120, 300), (300, 500)]
    got = trace_ids(model, ids, streams=2, chunk_len=32, documents=docs)
    for a, b in docs:
        alone = trace_ids(model, ids[a:b], chunk_len=1000)
        for key in ("L0.c", "L1.h", "L1.c"):
            np.testing.assert_allclose(got[key][a:b], alone[key], rtol=1e-4, atol=1e-5)
        assert np.isnan(got["loss"][a])


def test_stream_divergence_shrinks_with_distance():
    model = make_model("lstm", 1, hidden=16)
    ids = np.random.default_rng(4).integers(0, 20, 2000)
    df = stream_divergence(model, ids, 4, buckets=(0, 10, 100), chunk_len=64)
    assert set(df.columns) >= {"layer", "kind", "lo", "max", "median", "p99", "scale"}
    c = df[df.kind == "c"].set_index("lo")
    assert c.loc[0, "median"] > c.loc[100, "median"]
    same = stream_divergence(model, ids, 1, buckets=(0, 10), chunk_len=64)
    assert (same["max"] < 1e-5).all()
