"""Ablation: zero or clamp chosen neurons inside the running model and measure the loss.

Ranking and probes show that a neuron *correlates* with a feature; ablation tests whether the
model *uses* it. The model is rerun over the text with the chosen units of ``h``, ``c`` or a
gate overridden at every position of a span, and the per-character loss is compared with the
normal run, per character category (closing quotes, closing brackets, newlines, ...: see
:func:`lstmscope.analysis.losses.default_categories`).

How the rerun works (all conditions at once, one batch row each; row 0 is the normal run):

- The text is read in chunks, layer by layer, carrying every row's state. Outside the span,
  each layer runs PyTorch's fused kernel. Inside the span, a layer with something to override
  runs **step by step**: gates from ``x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh`` (the input
  product for the whole segment at once), the chosen gate units overridden, then
  ``c_t = f*c_{t-1} + i*g`` with the chosen ``c`` units overridden, then ``h_t = o*tanh(c_t)``
  with the chosen ``h`` units overridden. So an ablated cell state feeds the next step through
  the recurrence, an ablated ``h`` feeds both the recurrence and the layer above, and after the
  span the state carries the ablation's after-effects into the fused kernel.
- A position's value is overridden exactly where the store records it: ``L1.c.5`` at position
  ``t`` is the cell state after reading ``text[t]``.
- ``loss[t]`` is ``-log2 p(text[t] | text[:t])`` (NaN at 0), as in the store.

Ablating nothing reproduces the normal run exactly (row 0 runs the same code as the others; the
tests also check the step-by-step path against the fused kernel).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch

from lstmscope.analysis.losses import resolve_categories
from lstmscope.model.cells import CharRNN, RecurrentLayer
from lstmscope.names import KINDS, Neuron, parse_neuron

log = logging.getLogger(__name__)

LN2 = math.log(2.0)
CHUNK = 2048  # positions per chunk: bounds memory to [rows, CHUNK, H] per layer

Overrides = dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]  # (mask [B, H], value [B, H])


# ----------------------------------------------------------------------------------------------
# One layer, step by step, with overrides


def _ov(v: torch.Tensor, ov: Mapping[str, tuple[torch.Tensor, torch.Tensor]], kind: str):
    if kind in ov:
        mask, value = ov[kind]
        return torch.where(mask, value, v)
    return v


def _step_segment(
    layer: RecurrentLayer, x: torch.Tensor, state, ov: Mapping[str, tuple]
) -> tuple[torch.Tensor, object]:
    """Run ``layer`` over ``x`` ``[B, T, In]`` one step at a time, overriding ``ov`` kinds.

    Returns (output ``[B, T, H]``: h, or c when the layer passes c on; final state in PyTorch's
    form ``(h [1, B, H], c [1, B, H])`` or ``h``).
    """
    r = layer.rnn
    H = layer.hidden_size
    xi = torch.nn.functional.linear(x, r.weight_ih_l0, r.bias_ih_l0)  # [B, T, G*H]
    w_hh, b_hh = r.weight_hh_l0, r.bias_hh_l0
    outs = []
    if layer.cell == "lstm":
        h, c = state[0][0], state[1][0]  # [B, H]
        for t in range(x.shape[1]):
            pre = xi[:, t] + torch.nn.functional.linear(h, w_hh, b_hh)
            i, f, g, o = pre.split(H, dim=1)
            i = _ov(torch.sigmoid(i), ov, "i")
            f = _ov(torch.sigmoid(f), ov, "f")
            g = _ov(torch.tanh(g), ov, "g")
            o = _ov(torch.sigmoid(o), ov, "o")
            c = _ov(f * c + i * g, ov, "c")
            h = _ov(o * torch.tanh(c), ov, "h")
            outs.append(c if layer.output == "c" else h)
        return torch.stack(outs, 1), (h.unsqueeze(0), c.unsqueeze(0))
    h = state[0]
    if layer.cell == "gru":
        for t in range(x.shape[1]):
            gh = torch.nn.functional.linear(h, w_hh, b_hh)
            ir, iz, in_ = xi[:, t].split(H, dim=1)
            hr, hz, hn = gh.split(H, dim=1)
            rr = _ov(torch.sigmoid(ir + hr), ov, "r")
            z = _ov(torch.sigmoid(iz + hz), ov, "z")
            n = _ov(torch.tanh(in_ + rr * hn), ov, "n")
            h = _ov((1 - z) * n + z * h, ov, "h")
            outs.append(h)
        return torch.stack(outs, 1), h.unsqueeze(0)
    act = torch.tanh if r.nonlinearity == "tanh" else torch.relu
    for t in range(x.shape[1]):
        h = _ov(act(xi[:, t] + torch.nn.functional.linear(h, w_hh, b_hh)), ov, "h")
        outs.append(h)
    return torch.stack(outs, 1), h.unsqueeze(0)


def _fused_segment(layer: RecurrentLayer, x: torch.Tensor, state):
    if x.shape[1] == 0:
        return x.new_zeros((x.shape[0], 0, layer.hidden_size)), state
    return layer(x, state)


# ----------------------------------------------------------------------------------------------
# The whole model


def _check_neurons(model: CharRNN, neurons) -> list[Neuron]:
    cfg = model.config
    if isinstance(neurons, (str, Neuron)):
        neurons = [neurons]
    out = []
    for x in neurons:
        nrn = parse_neuron(x)
        if not 0 <= nrn.layer < cfg.num_layers:
            raise ValueError(f"{nrn}: the model has layers 0..{cfg.num_layers - 1}")
        if nrn.kind not in KINDS[cfg.cell]:
            raise ValueError(f"{nrn}: a {cfg.cell} layer has kinds {', '.join(KINDS[cfg.cell])}")
        if not 0 <= nrn.unit < cfg.hidden_size:
            raise ValueError(f"{nrn}: units are 0..{cfg.hidden_size - 1}")
        out.append(nrn)
    return out


@torch.inference_mode()
def ablation_losses(
    model: CharRNN,
    ids: np.ndarray,
    conditions: Sequence[Mapping[str | Neuron, float]],
    *,
    span: tuple[int, int] | None = None,
    device: str | torch.device | None = None,
    chunk: int = CHUNK,
    step_all: bool = False,
) -> np.ndarray:
    """Per-character loss in bits ``[1 + len(conditions), N]``: row 0 the normal run, row
    ``j + 1`` with ``conditions[j]`` (``{neuron: value}``) applied at every position of ``span``
    (default: the whole text). NaN at position 0. ``step_all`` runs every layer step by step
    inside the span even with nothing to override (the tests compare it with the fused run)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    a, b = (0, n) if span is None else (int(span[0]), int(span[1]))
    if not 0 <= a <= b <= n:
        raise ValueError(f"span ({a}, {b}) is not inside the text [0, {n}]")
    B = 1 + len(conditions)
    H = model.config.hidden_size
    # Overrides per layer: {layer: {kind: (mask [B, H], value [B, H])}}
    ovs: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for row, cond in enumerate(conditions, start=1):
        for nrn, value in cond.items():
            nrn = parse_neuron(nrn)
            per = ovs.setdefault(nrn.layer, {})
            if nrn.kind not in per:
                per[nrn.kind] = (
                    torch.zeros(B, H, dtype=torch.bool, device=device),
                    torch.zeros(B, H, device=device),
                )
            per[nrn.kind][0][row, nrn.unit] = True
            per[nrn.kind][1][row, nrn.unit] = float(value)
    state = [layer.zero_state(B, device) for layer in model.layers]
    loss = np.full((B, n), np.nan, dtype=np.float32)
    prev_logits = None  # [B, V] the prediction for the first character of the next chunk
    ids_t = torch.from_numpy(ids).to(device)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        x = model.embed(ids_t[s:e]).unsqueeze(0).expand(B, -1, -1).contiguous()  # [B, T, E]
        # Parts of this chunk outside / inside the span, in order.
        cuts = sorted({s, e, min(max(a, s), e), min(max(b, s), e)})
        parts = [(p, q, a <= p and q <= b) for p, q in itertools.pairwise(cuts)]
        for li, layer in enumerate(model.layers):
            ov = ovs.get(li)
            outs = []
            st = state[li]
            for p, q, inside in parts:
                xs = x[:, p - s : q - s]
                if inside and (ov or step_all):
                    y, st = _step_segment(layer, xs, st, ov or {})
                else:
                    y, st = _fused_segment(layer, xs, st)
                outs.append(y)
            state[li] = st
            x = model.drop(torch.cat(outs, 1))
        logits = model.head(x).float()  # [B, T, V]
        lp = torch.log_softmax(logits, dim=-1)
        if prev_logits is not None:
            loss[:, s] = (-prev_logits.gather(1, ids_t[s].expand(B, 1)) / LN2)[:, 0].cpu().numpy()
        if e - s > 1:
            tgt = ids_t[s + 1 : e].view(1, -1, 1).expand(B, -1, 1)
            loss[:, s + 1 : e] = (-lp[:, :-1].gather(2, tgt)[..., 0] / LN2).cpu().numpy()
        prev_logits = lp[:, -1]
    return loss


def _values(model: CharRNN, ids, nrns: list[Neuron], mode: str, value, device) -> list[float]:
    if mode == "zero":
        return [0.0] * len(nrns)
    if mode == "clamp":
        if value is None:
            raise ValueError("mode='clamp' needs a value (a number, or one per neuron)")
        if isinstance(value, Mapping):
            return [float(value[str(x)]) for x in nrns]
        vals = np.broadcast_to(np.asarray(value, dtype=np.float64), (len(nrns),))
        return [float(v) for v in vals]
    if mode == "mean":
        from lstmscope.model.trace import trace_ids

        layers = sorted({x.layer for x in nrns})
        kinds = sorted({x.kind for x in nrns})
        acts = trace_ids(model, ids, layers=layers, kinds=kinds, device=device)
        return [float(acts[x.stream][:, x.unit].mean()) for x in nrns]
    raise ValueError(f"mode must be 'zero', 'clamp' or 'mean', not {mode!r}")


def ablate_many(
    loaded,
    text: str,
    conditions: Mapping[str, Sequence[str | Neuron]],
    *,
    span: tuple[int, int] | None = None,
    mode: Literal["zero", "clamp", "mean"] = "zero",
    value: float | Sequence[float] | Mapping[str, float] | None = None,
    categories=None,
    after: int = 0,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """:func:`ablate` for several neuron sets at once (one batch row each, one pass).

    Returns one row per condition and category, with a leading ``condition`` column.
    """
    model = loaded.model if hasattr(loaded, "model") else loaded
    vocab = loaded.vocab if hasattr(loaded, "vocab") else None
    if vocab is None:
        raise TypeError("ablate needs a LoadedModel (lstmscope.model.checkpoint.load_model)")
    ids = vocab.encode(text)
    n = len(ids)
    if n < 2:
        raise ValueError("the text needs at least 2 characters: one to read, one to predict")
    names = list(conditions)
    conds = []
    for name in names:
        nrns = _check_neurons(model, conditions[name])
        vals = _values(model, ids, nrns, mode, value, device)
        conds.append(dict(zip([str(x) for x in nrns], vals, strict=True)))
    loss = ablation_losses(model, ids, conds, span=span, device=device)
    a, b = (0, n) if span is None else (int(span[0]), int(span[1]))
    # Reported positions: the predictions made from states inside the span (t-1 in [a, b)),
    # plus `after` characters past it, where the ablation's after-effects still show.
    region = np.zeros(n, dtype=bool)
    region[a + 1 : min(n, b + 1 + after)] = True
    cats = resolve_categories(text, categories)
    base = loss[0]
    rows = []
    for j, name in enumerate(names, start=1):
        for cat, mask in cats.items():
            m = mask & region & np.isfinite(base)
            cnt = int(m.sum())
            lb = float(base[m].mean()) if cnt else float("nan")
            la = float(loss[j][m].mean()) if cnt else float("nan")
            rows.append({"condition": name, "category": cat, "n": cnt, "loss": lb,
                         "loss_ablated": la, "delta": la - lb})  # fmt: skip
    df = pd.DataFrame.from_records(rows)
    df.attrs.update(span=(a, b), mode=mode, after=after)
    return df


def ablate(
    loaded_model,
    text: str,
    neurons: Sequence[str | Neuron] | str,
    *,
    span: tuple[int, int] | None = None,
    mode: Literal["zero", "clamp", "mean"] = "zero",
    value: float | Sequence[float] | Mapping[str, float] | None = None,
    categories=None,
    after: int = 0,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Loss change per character category when ``neurons`` are zeroed (``mode="zero"``),
    clamped to ``value`` (``"clamp"``: one number, one per neuron, or ``{neuron: value}``) or
    set to their mean over the text (``"mean"``) at every position of ``span`` (default: all).

    Columns ``category n loss loss_ablated delta`` (mean bits per character; ``delta > 0``:
    the ablation hurts). Only the predictions made from states inside the span are counted,
    plus ``after`` characters past it. ``categories``: None (the defaults of
    :func:`~lstmscope.analysis.losses.default_categories`), a list of their names, or
    ``{name: bool mask [len(text)]}``.
    """
    df = ablate_many(
        loaded_model, text, {"ablated": neurons}, span=span, mode=mode, value=value,
        categories=categories, after=after, device=device,
    )  # fmt: skip
    return df.drop(columns="condition")
