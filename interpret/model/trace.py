"""Everything a layer computed at every position, fast: the fused kernel plus two matmuls.

The fused kernel (``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``) gives each layer's h sequence. Once
h is known, ``x_t`` and ``h_{t-1}`` are known for every t, so all gate pre-activations come from
two large matrix products over the whole chunk; only the LSTM cell state needs a loop over time,
and that loop is elementwise (one ``addcmul`` per step on a ``[B, H]`` slice).

Arrays here are time-major: ``[T, B, H]`` (position in the chunk, stream, unit). The text is read
as ``B`` streams in parallel, each a queue of runs that start from a zero state (the plan:
``lstmscope.model.plan``). ``run_plan`` drives the model over a plan chunk by chunk, carrying
state between chunks, so memory is bounded by one chunk whatever the text length.

On CPU the LSTM and GRU take another road to the same numbers (``_lstm_steps``/``_gru_steps``):
our own loop over time that writes each gate where it is computed. There the fused kernel is a
loop of small products too, and rebuilding the gates afterwards doubles the matrix work;
measured on one core (2x256, B=32), the loop is 1.6x faster than kernel plus rebuild, and even
faster than the bare kernel. On an accelerator the per-step launches would dominate, so there the
kernel and the rebuild stay. Both are tested against the same step-by-step reference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lstmscope.model.cells import CharRNN, RecurrentLayer
from lstmscope.model.plan import StreamPlan, chunk_inputs, plan_streams
from lstmscope.names import KINDS

log = logging.getLogger(__name__)

TOP_K_PRED = 5  # next-character predictions kept per position
LN2 = math.log(2.0)

# ----------------------------------------------------------------------------------------------
# One layer, one chunk


class Workspace:
    """Scratch buffers reused chunk after chunk, keyed by name.

    Fresh multi-megabyte temporaries per chunk cost page faults; measured here, allocating the
    gate buffer anew made the rebuild's first matrix product 40% slower.
    """

    def __init__(self, device=None):
        self.device = torch.device(device) if device is not None else None
        self._bufs: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype=torch.float32, device=None
    ) -> torch.Tensor:
        numel = math.prod(shape)
        key = (name, dtype)
        buf = self._bufs.get(key)
        dev = device if device is not None else self.device
        if (
            buf is None
            or buf.numel() < numel
            or (dev is not None and buf.device != torch.device(dev))
        ):
            buf = torch.empty(numel, dtype=dtype, device=dev)
            self._bufs[key] = buf
        return buf[:numel].view(shape)


def _buffers(workspace: Workspace | None, x: torch.Tensor) -> Callable[..., torch.Tensor]:
    """``buf(name, shape)``: a buffer like ``x`` (dtype, device), from ``workspace`` if given."""

    def buf(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if workspace is None:
            return torch.empty(shape, dtype=x.dtype, device=x.device)
        return workspace.get(name, shape, x.dtype, x.device)

    return buf


def _zero_state(layer: RecurrentLayer, batch: int, device, dtype=torch.float32):
    return layer.zero_state(batch, device, dtype)


def c_recurrence_(ig: torch.Tensor, f: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """In place: turn ``ig`` ``[T, B, H]`` (holding ``i*g``) into the cell states ``c``.

    ``c_t = f_t * c_{t-1} + i_t * g_t``; ``c0`` ``[B, H]``. Time-major, so every step reads and
    writes one contiguous ``[B, H]`` slice and no per-step tensors are allocated.
    """
    ig[0].addcmul_(f[0], c0)
    for t in range(1, ig.shape[0]):
        ig[t].addcmul_(f[t], ig[t - 1])
    return ig


@torch.inference_mode()
def trace_layer(
    layer: RecurrentLayer,
    x: torch.Tensor,
    state=None,
    kinds: Sequence[str] = (),
    workspace: Workspace | None = None,
    method: str = "auto",
) -> tuple[dict[str, torch.Tensor], torch.Tensor, object]:
    """Run one layer over a chunk and rebuild what it computed.

    ``x`` ``[T, B, In]`` time-major. Returns ``(acts, output, new_state)``: ``acts`` maps each
    asked-for kind to ``[T, B, H]`` float32 (gates may be strided views into one buffer), ``output``
    ``[T, B, H]`` is what the layer passes on (h, or c when ``layer.output == "c"``), and
    ``new_state`` is in PyTorch's form, ready for the next chunk. Runs in inference mode: the
    rebuild works in place, and nothing here is meant to be differentiated. With a
    ``workspace`` the gates and c live in its reused buffers: valid until the next call.

    ``method``: ``"kernel"`` runs the fused kernel and rebuilds the gates from its h;
    ``"steps"`` (LSTM and GRU) is our own loop that keeps every gate as it computes it;
    ``"auto"`` takes steps on CPU, where it is faster, and the kernel elsewhere (and for the
    RNN, which has no gates to keep).
    """
    if method not in ("auto", "kernel", "steps"):
        raise ValueError(f"method must be auto, kernel or steps, not {method!r}")
    T, B, _ = x.shape
    if state is None:
        state = _zero_state(layer, B, x.device, x.dtype)
    if method == "auto":
        method = "steps" if layer.cell != "rnn" and x.device.type == "cpu" else "kernel"
    if method == "steps":
        if layer.cell == "rnn":
            raise ValueError("method 'steps' is for LSTM and GRU layers, not RNN")
        steps = _lstm_steps if layer.cell == "lstm" else _gru_steps
        return steps(layer, x, state, kinds, workspace)
    # The module is batch-first; a transposed view of time-major data is what the kernel wants
    # internally, and its output comes back as a transposed view of a time-major buffer.
    h_bt, new_state = layer.rnn(x.transpose(0, 1), state)
    h = h_bt.transpose(0, 1)  # [T, B, H]
    if not h.is_contiguous():
        h = h.contiguous()
    cell = layer.cell
    want = set(kinds)
    if layer.output == "c":
        want.add("c")
    acts: dict[str, torch.Tensor] = {}
    if "h" in want:
        acts["h"] = h
    if cell == "rnn" or not (want - {"h"}):
        return acts, h, new_state

    buf = _buffers(workspace, x)
    x2 = x.reshape(T * B, x.shape[2])
    if cell == "lstm":
        acts.update(_rebuild_lstm(layer.rnn, x2, h, state[0][0], state[1][0], want, buf))
        out = acts["c"] if layer.output == "c" else h
        return acts, out, new_state
    acts.update(_rebuild_gru(layer.rnn, x2, h, state[0], want, buf))
    return acts, h, new_state


def _rebuild_lstm(rnn, x2, h, h0, c0, want: set[str], buf) -> dict[str, torch.Tensor]:
    """The LSTM's gates (and c) in ``want``, from its input ``x2`` ``[T*B, In]``, the kernel's
    ``h`` ``[T, B, H]`` and the initial state ``h0``, ``c0`` ``[B, H]``."""
    T, B, H = h.shape
    w_ih, w_hh = rnn.weight_ih_l0, rnn.weight_hh_l0
    G = w_ih.shape[0]  # gates * H
    # pre = x W_ih^T + h_{t-1} W_hh^T + b: one product over all T*B rows, one over T-1 rows
    # of the kernel's own h (shifted by one), one [B, H] product for the initial state.
    pre = buf("pre", (T, B, G))
    torch.addmm(rnn.bias_ih_l0 + rnn.bias_hh_l0, x2, w_ih.t(), out=pre.view(T * B, G))
    if T > 1:
        pre[1:].view((T - 1) * B, G).addmm_(h[:-1].reshape((T - 1) * B, H), w_hh.t())
    pre[0].addmm_(h0, w_hh.t())
    i, f, g, o = pre.split(H, dim=2)
    torch.sigmoid_(pre[:, :, : 2 * H])
    torch.tanh_(g)
    torch.sigmoid_(o)
    acts: dict[str, torch.Tensor] = {}
    if "c" in want:
        c = torch.mul(i, g, out=buf("c", (T, B, H)))  # [T, B, H], becomes c in place
        acts["c"] = c_recurrence_(c, f, c0)
    for name, t in (("i", i), ("f", f), ("g", g), ("o", o)):
        if name in want:
            acts[name] = t
    return acts


def _rebuild_gru(rnn, x2, h, h0, want: set[str], buf) -> dict[str, torch.Tensor]:
    """The GRU's gates in ``want``, as :func:`_rebuild_lstm` does for the LSTM."""
    T, B, H = h.shape
    w_ih, w_hh, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_hh_l0
    G = w_ih.shape[0]  # gates * H
    # r and z come from the sum of both products; n needs the recurrent part alone.
    gi = buf("pre", (T, B, G))
    torch.addmm(rnn.bias_ih_l0, x2, w_ih.t(), out=gi.view(T * B, G))
    gh = buf("gh", (T, B, G))
    if T > 1:
        torch.addmm(b_hh, h[:-1].reshape((T - 1) * B, H), w_hh.t(), out=gh[1:].view((T - 1) * B, G))
    torch.addmm(b_hh, h0, w_hh.t(), out=gh[0])
    ir, iz, in_ = gi.split(H, dim=2)
    hr, hz, hn = gh.split(H, dim=2)
    r = torch.sigmoid_(ir.add_(hr))
    z = torch.sigmoid_(iz.add_(hz))
    n = torch.tanh_(in_.addcmul_(r, hn))
    return {name: t for name, t in (("r", r), ("z", z), ("n", n)) if name in want}


def _lstm_steps(
    layer: RecurrentLayer,
    x: torch.Tensor,
    state,
    kinds: Sequence[str],
    workspace: Workspace | None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, object]:
    """The LSTM on CPU: our own loop over time that writes every gate where it is computed.

    On a CPU the fused kernel is itself a loop of one ``[B, H] x [H, 4H]`` product and a few
    elementwise steps per position, so recomputing every gate afterwards (the rebuild) doubles
    the matrix work. Here the input products for the whole chunk are one ``addmm``; each step
    adds ``h_{t-1} W_hh^T`` in place and applies the nonlinearities in place, so the gates, c and
    h land straight in their ``[T, B, ·]`` buffers. Measured on one core (2x256, B=32): 92k
    positions/s per layer for everything, against 77k for the kernel alone and 58k for kernel
    plus rebuild. On an accelerator the per-step launches would dominate: there the kernel and
    the rebuild stay (``trace_layer``).
    """
    T, B, _ = x.shape
    H = layer.hidden_size
    r = layer.rnn
    w_hh_t = r.weight_hh_l0.t()
    G = 4 * H

    buf = _buffers(workspace, x)

    pre = buf("pre", (T, B, G))
    torch.addmm(r.bias_ih_l0 + r.bias_hh_l0, x.reshape(T * B, -1), r.weight_ih_l0.t(),
                out=pre.view(T * B, G))  # fmt: skip
    hs, cs = buf("h", (T, B, H)), buf("c", (T, B, H))
    h, c = state[0][0], state[1][0]
    for t in range(T):
        p = pre[t]  # [B, 4H] contiguous; columns i | f | g | o
        p.addmm_(h, w_hh_t)
        torch.sigmoid_(p[:, : 2 * H])
        torch.tanh_(p[:, 2 * H : 3 * H])
        torch.sigmoid_(p[:, 3 * H :])
        ct, ht = cs[t], hs[t]
        torch.mul(p[:, :H], p[:, 2 * H : 3 * H], out=ct)
        ct.addcmul_(p[:, H : 2 * H], c)
        torch.tanh(ct, out=ht).mul_(p[:, 3 * H :])
        h, c = ht, ct
    i, f, g, o = pre.split(H, dim=2)
    every = {"h": hs, "c": cs, "i": i, "f": f, "g": g, "o": o}
    acts = {k: every[k] for k in kinds}
    out = cs if layer.output == "c" else hs
    # The buffers are reused by the next chunk: the carried state must be a copy.
    return acts, out, (hs[-1:].clone(), cs[-1:].clone())


def _gru_steps(
    layer: RecurrentLayer,
    x: torch.Tensor,
    state,
    kinds: Sequence[str],
    workspace: Workspace | None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, object]:
    """The GRU on CPU, as ``_lstm_steps``: r, z and n land in their buffers as computed.

    PyTorch's GRU: ``r, z = sigmoid(x W_i{r,z} + h W_h{r,z} + b)``, ``n = tanh(x W_in + b_in +
    r * (h W_hn + b_hn))``, ``h' = (1 - z) * n + z * h``; so the recurrent product needs its own
    scratch row (``n`` uses its third part alone).
    """
    T, B, _ = x.shape
    H = layer.hidden_size
    r = layer.rnn
    w_hh_t, b_hh = r.weight_hh_l0.t(), r.bias_hh_l0
    G = 3 * H

    buf = _buffers(workspace, x)

    pre = buf("pre", (T, B, G))
    torch.addmm(r.bias_ih_l0, x.reshape(T * B, -1), r.weight_ih_l0.t(), out=pre.view(T * B, G))
    hs = buf("h", (T, B, H))
    gh = torch.empty(B, G, dtype=x.dtype, device=x.device)
    h = state[0]
    for t in range(T):
        p = pre[t]  # [B, 3H]: r | z | n
        torch.addmm(b_hh, h, w_hh_t, out=gh)
        rz = p[:, : 2 * H].add_(gh[:, : 2 * H]).sigmoid_()
        n = p[:, 2 * H :].addcmul_(rz[:, :H], gh[:, 2 * H :]).tanh_()
        ht = hs[t]
        torch.sub(h, n, out=ht).mul_(rz[:, H:]).add_(n)  # n + z * (h - n)
        h = ht
    rr, z, n = pre.split(H, dim=2)
    every = {"h": hs, "r": rr, "z": z, "n": n}
    acts = {k: every[k] for k in kinds}
    return acts, hs, hs[-1:].clone()


# ----------------------------------------------------------------------------------------------
# All layers and the head, one chunk


@dataclass
class ChunkTrace:
    acts: dict[tuple[int, str], torch.Tensor]  # (layer, kind) -> [T, B, H] float32
    logits: torch.Tensor | None  # [T, B, V]
    state: list  # per layer, PyTorch form; feed to the next chunk


def check_selection(model: CharRNN, layers, kinds) -> tuple[tuple[int, ...], tuple[str, ...]]:
    cell = model.config.cell
    n_layers = len(model.layers)
    layers = tuple(range(n_layers)) if layers is None else tuple(int(x) for x in layers)
    kinds = KINDS[cell] if kinds is None else tuple(kinds)
    bad_l = [x for x in layers if not 0 <= x < n_layers]
    if bad_l:
        raise ValueError(f"no layer {bad_l[0]}: this model has layers 0..{n_layers - 1}")
    bad_k = [k for k in kinds if k not in KINDS[cell]]
    if bad_k:
        raise ValueError(
            f"kind {bad_k[0]!r} does not exist in a {cell.upper()}: kinds are {','.join(KINDS[cell])}"
        )
    if len(set(layers)) != len(layers) or len(set(kinds)) != len(kinds):
        raise ValueError("layers and kinds must not repeat")
    return tuple(sorted(layers)), tuple(k for k in KINDS[cell] if k in kinds)


@torch.inference_mode()
def trace_chunk(
    model: CharRNN,
    ids: torch.Tensor,
    state: list | None = None,
    *,
    layers: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    head: bool = True,
    on_layer: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    workspace: Workspace | None = None,
    method: str = "auto",
) -> ChunkTrace:
    """Trace ``ids`` ``[T, B]`` (time-major) through every layer, carrying ``state``.

    Dropout is not applied: this is the model in evaluation mode. With ``on_layer``, each
    layer's acts are handed over as soon as they exist and not kept, so memory holds one layer;
    a ``workspace`` (only with ``on_layer``) then reuses one set of buffers for every layer and
    chunk, and the acts are valid only during the callback.
    """
    if workspace is not None and on_layer is None:
        raise ValueError("a workspace reuses buffers across layers: it needs on_layer")
    layers, kinds = check_selection(model, layers, kinds)
    state = state or [None] * len(model.layers)
    x = model.embed(ids)  # [T, B, E]
    last = max(layers) if (layers and not head) else len(model.layers) - 1
    acts: dict[tuple[int, str], torch.Tensor] = {}
    new_state = []
    for li, layer in enumerate(model.layers):
        if li > last:
            new_state.append(state[li])
            continue
        want = kinds if li in layers else ()
        layer_acts, x, s = trace_layer(layer, x, state[li], want, workspace, method)
        new_state.append(s)
        layer_acts = {k: v for k, v in layer_acts.items() if k in want}
        if on_layer is not None:
            on_layer(li, layer_acts)
        else:
            acts.update({(li, k): v for k, v in layer_acts.items()})
    logits = model.head(x) if head else None
    return ChunkTrace(acts, logits, new_state)


# ----------------------------------------------------------------------------------------------
# Driving the model over a plan


@dataclass
class ChunkResult:
    k: int  # chunk index in the plan
    acts: dict[tuple[int, str], torch.Tensor]  # [T, B, H]; empty when on_layer took them
    loss: torch.Tensor | None  # [T, B] float32 bits for the character AFTER each position
    top_ids: torch.Tensor | None  # [T, B, 5] int64: next-character predictions
    top_prob: torch.Tensor | None  # [T, B, 5] float32
    state: list  # carried into chunk k + 1
    logits: torch.Tensor | None = None  # [T, B, V]: set instead of loss/top_* when predict=False


def reset_rows(state: list, keep: torch.Tensor) -> list:
    """Zero the state of rows where ``keep`` ``[B]`` is 0 (a run starts there)."""
    keep = keep.view(1, -1, 1)
    out = []
    for s in state:
        if s is None:
            out.append(None)
        elif isinstance(s, tuple):
            out.append(tuple(t * keep for t in s))
        else:
            out.append(s * keep)
    return out


def predictions(logits: torch.Tensor, y, has_next):
    """``(loss [T, B], top_ids [T, B, 5], top_prob [T, B, 5])`` from ``logits`` ``[T, B, V]``;
    ``y``/``has_next`` ``[T, B]`` numpy from ``chunk_inputs``. Loss is in bits, NaN without a
    next character."""
    device = logits.device
    lp = torch.log_softmax(logits.float(), dim=-1)  # [T, B, V]
    yt = torch.from_numpy(y).to(device)
    loss = lp.gather(2, yt.unsqueeze(2)).squeeze(2).mul_(-1.0 / LN2)  # [T, B]
    loss.masked_fill_(~torch.from_numpy(has_next).to(device), float("nan"))
    top_lp, top_ids = lp.topk(TOP_K_PRED, dim=2)
    return loss, top_ids, top_lp.exp_()


def zero_model_state(model: CharRNN, batch: int, device) -> list:
    return [layer.zero_state(batch, device) for layer in model.layers]


def run_plan(
    model: CharRNN,
    ids: np.ndarray,
    plan: StreamPlan,
    *,
    layers: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    device: torch.device | str | None = None,
    start_chunk: int = 0,
    state: list | None = None,
    head: bool = True,
    on_layer: Callable[[int, int, dict[str, torch.Tensor]], None] | None = None,
    predict: bool = True,
    workspace: Workspace | None = None,
    method: str = "auto",
) -> Iterator[ChunkResult]:
    """Yield one ``ChunkResult`` per chunk of ``plan``, from ``start_chunk`` on.

    ``state`` is the model state after chunk ``start_chunk - 1`` (for resuming); rows whose run
    starts at a chunk get a zero state there. ``on_layer(k, layer, acts)`` sees each layer's acts
    as soon as they exist (memory then holds one layer). Runs under ``torch.inference_mode``.
    With ``predict=False`` the head's logits are handed over (``ChunkResult.logits``) instead of
    loss and predictions, for a caller that computes those elsewhere (``predictions``). A
    ``workspace`` (with ``on_layer``) replaces the one made here.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ids = np.asarray(ids)
    B = plan.streams
    workspace = workspace if workspace is not None else Workspace(device)
    with torch.inference_mode():
        if state is None:
            state = zero_model_state(model, B, device)
        for k in range(start_chunk, plan.chunks):
            x, y, has_next = chunk_inputs(plan, k, ids)
            keep = torch.from_numpy(plan.offset[k] != 0).to(device=device, dtype=torch.float32)
            state = reset_rows(state, keep)
            xt = torch.from_numpy(x).to(device)
            cb = None if on_layer is None else (lambda li, a, k=k: on_layer(k, li, a))
            tr = trace_chunk(
                model, xt, state, layers=layers, kinds=kinds, head=head, on_layer=cb,
                workspace=workspace if cb is not None else None, method=method,
            )  # fmt: skip
            loss = top_ids = top_prob = logits = None
            if head and predict:
                loss, top_ids, top_prob = predictions(tr.logits, y, has_next)
            elif head:
                logits = tr.logits
            yield ChunkResult(k, tr.acts, loss, top_ids, top_prob, tr.state, logits)
            state = tr.state


def trace_ids(
    model: CharRNN,
    ids: np.ndarray | Sequence[int],
    *,
    layers: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    streams: int = 1,
    chunk_len: int = 1024,
    documents: Sequence[tuple[int, int]] | None = None,
    device: torch.device | str | None = None,
    method: str = "auto",
) -> dict[str, np.ndarray]:
    """Every asked-for activation of a (short) text in memory: ``{"L0.c": [N, H] float32}``.

    ``streams=1`` (the default) is the exact single pass. Also returns ``"loss"`` ``[N]`` bits
    (NaN at run starts). For long texts use ``lstmscope.store.recorder``, which writes to disk.
    """
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    plan = plan_streams(n, streams, chunk_len, 0, documents)
    layers, kinds = check_selection(model, layers, kinds)
    H = model.config.hidden_size
    out = {f"L{li}.{k}": np.zeros((n, H), dtype=np.float32) for li in layers for k in kinds}
    loss = np.full(n, np.nan, dtype=np.float32)
    for res in run_plan(model, ids, plan, layers=layers, kinds=kinds, device=device, method=method):
        for b in range(plan.streams):
            p, m = int(plan.start[res.k, b]), int(plan.length[res.k, b])
            if m == 0:
                continue
            for (li, kind), v in res.acts.items():
                out[f"L{li}.{kind}"][p : p + m] = v[:m, b].float().cpu().numpy()
            stop = int(plan.run_stop[res.k, b])
            q = min(p + m + 1, stop)
            loss[p + 1 : q] = res.loss[: q - p - 1, b].cpu().numpy()
    out["loss"] = loss
    return out
