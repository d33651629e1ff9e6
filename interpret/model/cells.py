"""Character-level recurrent language models: an embedding, a stack of one-layer cells, a head.

One module per layer, each wrapping PyTorch's fused single-layer kernel (``nn.LSTM`` etc.), so
training is as fast as PyTorch makes it and every layer's sequence is visible. Parameters keep
PyTorch's layout (LSTM gate order i, f, g, o; GRU r, z, n), so parity with ``torch.nn.LSTM`` on
the same weights is testable and ``layer_internals`` can rebuild every gate from the h sequence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from lstmscope.names import GATES, KIND_NAMES, KINDS

CELLS = tuple(KINDS)  # lstm, gru, rnn


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "lstm"  # lstm | gru | rnn: the comparison Karpathy et al. make
    vocab_size: int = 0  # set from the training text's vocabulary
    embed_dim: int = 64  # characters are few; a small embedding costs little and helps a bit
    hidden_size: int = 256  # units per layer
    num_layers: int = 2  # two layers already grow the interpretable cells
    dropout: float = 0.0  # between layers and before the head; 0 for small models
    forget_bias: float = 1.0  # LSTM starts by remembering (Jozefowicz et al. 2015)
    output: str = "h"  # h: pass the recurrent vector on; c: pass the cell state (LSTM only)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if self.output not in ("h", "c"):
            raise ValueError(f"output must be 'h' or 'c', not {self.output!r}")
        if self.output == "c" and self.cell != "lstm":
            raise ValueError("output='c' needs an LSTM: only it has a cell state")
        for name in ("vocab_size", "embed_dim", "hidden_size", "num_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**data)


_KERNELS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RecurrentLayer(nn.Module):
    """One recurrent layer around PyTorch's fused kernel; batch-first ``[B, T, ·]``."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, output: str = "h"):
        super().__init__()
        self.cell, self.hidden_size, self.output = cell, hidden_size, output
        self.rnn = _KERNELS[cell](input_size, hidden_size, num_layers=1, batch_first=True)

    def zero_state(self, batch: int, device=None, dtype=torch.float32):
        z = torch.zeros(1, batch, self.hidden_size, device=device, dtype=dtype)
        return (z, z.clone()) if self.cell == "lstm" else z

    def forward(self, x: torch.Tensor, state=None):
        """``x`` ``[B, T, In]`` -> (output ``[B, T, H]``, final state in PyTorch's form)."""
        if state is None:
            state = self.zero_state(x.shape[0], x.device, x.dtype)
        h_seq, new_state = self.rnn(x, state)
        if self.output == "c":
            # The fused kernel returns only h; the cell-state sequence is rebuilt exactly from
            # x and h (two matmuls + an elementwise recurrence) and stays differentiable.
            out = layer_internals(self, x, h_seq, state, kinds=("c",))["c"]
            return out, new_state
        return h_seq, new_state


def _weights(layer: RecurrentLayer):
    r = layer.rnn
    return r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0


def _prev_h(h_seq: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    # h_{t-1} for every t: the initial state, then the sequence shifted by one.  # [B, T, H]
    return torch.cat([h0[0].unsqueeze(1), h_seq[:, :-1]], dim=1)


def cell_recurrence(f: torch.Tensor, ig: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """``c_t = f_t * c_{t-1} + ig_t`` over time; ``f``, ``ig`` ``[B, T, H]``, ``c0`` ``[B, H]``."""
    steps = []
    c = c0
    for t in range(f.shape[1]):
        c = torch.addcmul(ig[:, t], f[:, t], c)
        steps.append(c)
    return torch.stack(steps, dim=1)


def layer_internals(
    layer: RecurrentLayer, x: torch.Tensor, h_seq: torch.Tensor, state, kinds=None
) -> dict[str, torch.Tensor]:
    """Everything a layer computed at every position, rebuilt from its input and h sequence.

    All gate pre-activations come from two matrix products over the whole sequence (x_t and
    h_{t-1} are both known once the fused kernel has run); only the LSTM cell state needs a
    loop, and that loop is elementwise. Returns ``{kind: [B, T, H]}``.
    """
    w_ih, w_hh, b_ih, b_hh = _weights(layer)
    h0 = state[0] if layer.cell == "lstm" else state
    out: dict[str, torch.Tensor] = {"h": h_seq}
    if layer.cell == "rnn":
        return out
    hp = _prev_h(h_seq, h0)
    gi = torch.nn.functional.linear(x, w_ih, b_ih)  # [B, T, G*H]
    gh = torch.nn.functional.linear(hp, w_hh, b_hh)  # [B, T, G*H]
    if layer.cell == "lstm":
        pre = gi + gh
        i, f, g, o = pre.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        if kinds is None or "c" in kinds:
            out["c"] = cell_recurrence(f, i * g, state[1][0])
        out.update(i=i, f=f, g=g, o=o)
    else:  # gru
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        out.update(r=r, z=z, n=n)
    if kinds is not None:
        out = {k: v for k, v in out.items() if k in kinds}
    return out


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        sizes = [config.embed_dim] + [config.hidden_size] * (config.num_layers - 1)
        self.layers = nn.ModuleList(
            RecurrentLayer(config.cell, n_in, config.hidden_size, config.output) for n_in in sizes
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.reset_forget_bias()

    def reset_forget_bias(self) -> None:
        """Set the LSTM forget gate's total bias (b_ih + b_hh) to ``config.forget_bias``."""
        if self.config.cell != "lstm":
            return
        h = self.config.hidden_size
        with torch.no_grad():
            for layer in self.layers:
                layer.rnn.bias_ih_l0[h : 2 * h].fill_(self.config.forget_bias)
                layer.rnn.bias_hh_l0[h : 2 * h].zero_()

    def zero_state(self, batch: int, device=None) -> list:
        return [layer.zero_state(batch, device) for layer in self.layers]

    def forward(self, ids: torch.Tensor, state: list | None = None):
        """``ids`` ``[B, T]`` -> (logits ``[B, T, V]``, new state: one entry per layer)."""
        x = self.embed(ids)
        state = state or [None] * len(self.layers)
        new_state = []
        for layer, s in zip(self.layers, state, strict=True):
            x, s = layer(x, s)
            x = self.drop(x)
            new_state.append(s)
        return self.head(x), new_state


def detach_state(state: list) -> list:
    return [tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach() for s in state]


def parameter_breakdown(model: CharRNN) -> list[dict]:
    """Rows ``{part, gate, source, count}`` whose counts add up to the model's parameters.

    Recurrent layers are split by gate (LSTM: input gate, forget gate, input block, output
    gate) and by what each gate reads: the layer input, the recurrent vector, or a bias.
    """
    rows = [{"part": "embedding", "gate": "", "source": "", "count": model.embed.weight.numel()}]
    for li, layer in enumerate(model.layers):
        w_ih, w_hh, b_ih, b_hh = _weights(layer)
        gates = GATES[layer.cell]
        h = layer.hidden_size
        for gi, gate in enumerate(gates):
            sl = slice(gi * h, (gi + 1) * h)
            for source, tensor in (
                ("input weights", w_ih[sl]),
                ("recurrent weights", w_hh[sl]),
                ("bias (input)", b_ih[sl]),
                ("bias (recurrent)", b_hh[sl]),
            ):
                rows.append(
                    {
                        "part": f"L{li}",
                        "gate": _gate_name(gate),
                        "source": source,
                        "count": tensor.numel(),
                    }
                )
    rows.append(
        {"part": "head", "gate": "", "source": "weights", "count": model.head.weight.numel()}
    )
    rows.append({"part": "head", "gate": "", "source": "bias", "count": model.head.bias.numel()})
    return rows


def _gate_name(gate: str) -> str:
    """A block of weights in words: the gate's name, or ``hidden`` for the plain RNN's one block."""
    return "hidden" if gate == "h" else KIND_NAMES[gate]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
