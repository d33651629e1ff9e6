"""Our layers against PyTorch's own multi-layer kernels and a step-by-step cell loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lstmscope.model.cells import (
    CharRNN,
    ModelConfig,
    count_parameters,
    layer_internals,
    parameter_breakdown,
)

KERNELS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _reference(model: CharRNN) -> nn.Module:
    """A stock multi-layer PyTorch module carrying the same weights as our layer stack."""
    cfg = model.config
    ref = KERNELS[cfg.cell](cfg.embed_dim, cfg.hidden_size, num_layers=cfg.num_layers,
                            batch_first=True)  # fmt: skip
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{k}").copy_(getattr(layer.rnn, f"{name}_l0"))
    return ref


def _stack(model: CharRNN, ids: torch.Tensor):
    x = model.embed(ids)
    finals = []
    for layer in model.layers:
        x, s = layer(x)
        finals.append(s)
    return x, finals


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_stack_matches_torch_multilayer(cell, layers):
    cfg = ModelConfig(cell=cell, vocab_size=30, embed_dim=12, hidden_size=24, num_layers=layers)
    model = CharRNN(cfg).eval()
    ref = _reference(model).eval()
    ids = torch.randint(0, 30, (4, 37))
    with torch.no_grad():
        ours, finals = _stack(model, ids)
        theirs, ref_state = ref(model.embed(ids))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ref_h = ref_state[0] if cell == "lstm" else ref_state
    for k, s in enumerate(finals):
        ours_h = s[0] if cell == "lstm" else s
        torch.testing.assert_close(ours_h[0], ref_h[k], rtol=1e-5, atol=1e-6)
        if cell == "lstm":
            torch.testing.assert_close(s[1][0], ref_state[1][k], rtol=1e-5, atol=1e-6)


def _cell_loop(layer, x):
    """Step-by-step LSTMCell on the same weights: the textbook reference for h and c."""
    cell = nn.LSTMCell(layer.rnn.input_size, layer.hidden_size)
    with torch.no_grad():
        cell.weight_ih.copy_(layer.rnn.weight_ih_l0)
        cell.weight_hh.copy_(layer.rnn.weight_hh_l0)
        cell.bias_ih.copy_(layer.rnn.bias_ih_l0)
        cell.bias_hh.copy_(layer.rnn.bias_hh_l0)
    h = torch.zeros(x.shape[0], layer.hidden_size)
    c = torch.zeros_like(h)
    hs, cs = [], []
    for t in range(x.shape[1]):
        h, c = cell(x[:, t], (h, c))
        hs.append(h)
        cs.append(c)
    return torch.stack(hs, 1), torch.stack(cs, 1)


def test_output_c_passes_the_cell_state():
    cfg = ModelConfig(cell="lstm", vocab_size=20, embed_dim=8, hidden_size=16, num_layers=2,
                      output="c")  # fmt: skip
    model = CharRNN(cfg).eval()
    ids = torch.randint(0, 20, (3, 50))
    with torch.no_grad():
        x0 = model.embed(ids)
        out0, _ = model.layers[0](x0)
        _, c_ref = _cell_loop(model.layers[0], x0)
        torch.testing.assert_close(out0, c_ref, rtol=1e-5, atol=1e-5)
        # layer 1 reads layer 0's cell state, not its h
        out1, _ = model.layers[1](out0)
        _, c1_ref = _cell_loop(model.layers[1], c_ref)
        torch.testing.assert_close(out1, c1_ref, rtol=1e-5, atol=1e-5)


def test_output_c_gradient_flows_to_all_weights():
    cfg = ModelConfig(cell="lstm", vocab_size=20, embed_dim=8, hidden_size=16, num_layers=2,
                      output="c")  # fmt: skip
    model = CharRNN(cfg)
    logits, _ = model(torch.randint(0, 20, (2, 10)))
    logits.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_internals_rebuild_h():
    cfg = ModelConfig(cell="lstm", vocab_size=20, embed_dim=8, hidden_size=16, num_layers=1)
    model = CharRNN(cfg).eval()
    with torch.no_grad():
        x = model.embed(torch.randint(0, 20, (2, 40)))
        layer = model.layers[0]
        state = layer.zero_state(2)
        h_seq, _ = layer.rnn(x, state)
        parts = layer_internals(layer, x, h_seq, state)
    torch.testing.assert_close(parts["o"] * torch.tanh(parts["c"]), h_seq, rtol=1e-5, atol=1e-6)


def test_forget_bias_initialised():
    cfg = ModelConfig(cell="lstm", vocab_size=10, embed_dim=4, hidden_size=8, forget_bias=1.0)
    model = CharRNN(cfg)
    for layer in model.layers:
        total = layer.rnn.bias_ih_l0 + layer.rnn.bias_hh_l0
        assert torch.allclose(total[8:16], torch.ones(8))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_parameter_breakdown_adds_up(cell):
    model = CharRNN(ModelConfig(cell=cell, vocab_size=77, embed_dim=10, hidden_size=33,
                                num_layers=3))  # fmt: skip
    rows = parameter_breakdown(model)
    assert sum(r["count"] for r in rows) == count_parameters(model)
    if cell == "lstm":
        gates = {r["gate"] for r in rows if r["part"] == "L1"}
        assert gates == {"input gate", "forget gate", "input block", "output gate"}


def test_config_validation():
    with pytest.raises(ValueError, match="output='c' needs an LSTM"):
        ModelConfig(cell="gru", vocab_size=5, output="c")
    with pytest.raises(ValueError, match="cell must be"):
        ModelConfig(cell="transformer", vocab_size=5)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"cell": "lstm", "vocab_size": 5, "bogus": 1})
