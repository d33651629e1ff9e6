"""The recording pass, chunk by chunk: code, fold and write what the trace yields; checkpoint.

``trace.run_plan`` drives the model over ``B`` streams in chunks of ``T`` positions. For each
layer :class:`ChunkLoop` codes the kinds in the store's 16-bit block encoding (one block per
stream and chunk, ``lstmscope.store.encoding``; compiled on CPU), folds them into the per-neuron
statistics on the device (``lstmscope.store.stats``) and hands the rows to the writer thread
(``lstmscope.store.pipeline``); then it writes the model's predictions. On CPU the coding,
statistics and predictions run in a second thread that reads the trace's buffers in place while
the main thread traces on.

Every ``checkpoint_seconds`` the pass queues a progress checkpoint (chunks done, model state,
statistics so far) behind the writes it covers; :func:`read_checkpoint` and
:meth:`ChunkLoop.resume` read it back, so an interrupted recording goes on where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lstmscope.disk import atomic_open
from lstmscope.errors import WriteError
from lstmscope.model.cells import CharRNN
from lstmscope.model.checkpoint import LoadedModel
from lstmscope.model.plan import StreamPlan, chunk_inputs
from lstmscope.model.trace import Workspace, predictions, run_plan
from lstmscope.store.encoding import CODE_DTYPE, PARAM_DTYPE, encode_torch
from lstmscope.store.histograms import F16_MAX
from lstmscope.store.layout import CHECKPOINT, LOSS, PRED_FILES, act_path, param_path
from lstmscope.store.pipeline import BufferPool, LendingWorkspace, NpyFile, StatsWorker, Writer
from lstmscope.store.stats import KindStats, load_kernels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recording:
    """One call of ``record``, fixed before anything is written: what, where and how."""

    loaded: LoadedModel
    model: CharRNN  # loaded.model, on `device`
    device: torch.device
    text: str
    root: Path  # the store's folder
    plan: StreamPlan
    job: dict  # what record.json holds: a resume or a rerun must match it
    layers: tuple[int, ...]
    kinds: tuple[str, ...]
    docs: np.ndarray | None  # [D, 2] document spans, sorted; None: the text is one piece
    progress: bool  # show a progress bar
    checkpoint_seconds: float
    hook: Callable[[int], None] | None  # called after each chunk (tests interrupt with it)
    t_start: float  # time.perf_counter() when record was called
    accelerator_path: bool  # (tests) on CPU, the road a GPU takes

    @property
    def hidden_size(self) -> int:
        return self.loaded.config.hidden_size


@dataclass
class StoreFiles:
    """The store's ``.npy`` files that a recording writes by offset, open for ``pwrite``."""

    acts: dict[tuple[int, str], NpyFile]  # codes [N, H] per (layer, kind)
    scales: dict[tuple[int, str], NpyFile]  # [K, 2, H] centre and scale per block and unit
    pred: dict[str, NpyFile]  # "loss", "top_ids", "top_prob"

    @classmethod
    def open(cls, rec: Recording, n_blocks: int, create: bool) -> StoreFiles:
        """Open the files (``create``: as zero-filled sparse files, written chunk by chunk)."""
        root, plan, H = rec.root, rec.plan, rec.hidden_size
        n = plan.n
        keys = [(li, kind) for li in rec.layers for kind in rec.kinds]
        acts = {k: NpyFile(act_path(root, *k), CODE_DTYPE, (n, H), create) for k in keys}
        scales = {
            k: NpyFile(param_path(root, *k), PARAM_DTYPE, (n_blocks, 2, H), create) for k in keys
        }
        pred = {}
        for name, (dtype, tail) in PRED_FILES.items():
            # No character precedes a run's start: its loss is NaN.
            nan_at = plan.runs[:, 0] if name == LOSS else None
            pred[Path(name).stem] = NpyFile(root / name, dtype, (n, *tail), create, nan_at)
        return cls(acts, scales, pred)

    def all(self) -> tuple[NpyFile, ...]:
        return (*self.acts.values(), *self.scales.values(), *self.pred.values())

    def sync(self) -> None:
        for f in self.all():
            try:
                f.sync()
            except OSError as e:  # a disk that fills while flushing: name the file
                raise WriteError(f.path, e) from e

    def close(self) -> None:
        for f in self.all():
            f.close()


def read_checkpoint(root: Path, job: dict) -> dict | None:
    """The progress checkpoint of this ``job`` in ``root``, or None (then the recording starts
    over: none was written, it is unreadable, or it belongs to another recording)."""
    path = root / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        log.warning("%s is unreadable (%s); starting over", path, e)
        return None
    if str(data.get("job", "")) != json.dumps(job, sort_keys=True):
        log.warning("%s belongs to another recording; starting over", path)
        return None
    return data


class ChunkLoop:
    """Records the plan's chunks into the open ``files``, folding the statistics in ``stats``."""

    def __init__(self, rec: Recording, files: StoreFiles, ids: np.ndarray, block_of: np.ndarray):
        self.rec, self.plan, self.files, self.ids = rec, rec.plan, files, ids
        self.block_of = block_of  # [chunks, B]: row of each (chunk, stream) block in .scale.npy
        self.dev = rec.device
        self.B, self.T, self.H = rec.plan.streams, rec.plan.chunk_len, rec.hidden_size
        self.ws = Workspace(self.dev)
        # The accelerator road's statistics are torch's, also when tests take it on CPU.
        fused = self.dev.type == "cpu" and not rec.accelerator_path
        self.stats = {
            key: KindStats(key[1], self.H, self.dev, workspace=self.ws, fused=fused)
            for key in files.acts
        }
        self.kernels = load_kernels() if fused else None  # the compiled encoder, or encode_torch
        # Enough buffers for two layers' worth of kinds in flight: the writer never starves.
        self.pool = BufferPool((self.B, self.T, self.H), self.dev, 2 * len(rec.kinds) + 2)
        # Per chunk: the positions each row covers, which rows are warm, text positions of rows.
        self.ar_t = torch.arange(self.T, device=self.dev).view(self.T, 1)  # [T, 1]
        self.chunk: dict = {}
        # Created in run(), so that whatever happens they are closed there.
        self.writer: Writer | None = None
        self.worker: StatsWorker | None = None
        self.trace_ws: LendingWorkspace | None = None

    def resume(self, ckpt: dict | None) -> tuple[int, list | None]:
        """``(first chunk, model state before it)``: ``(0, None)`` for a fresh start, else the
        checkpoint's, whose statistics are loaded into ``self.stats``."""
        if ckpt is None:
            return 0, None
        start_chunk = int(ckpt["next_chunk"])
        state = []
        for li, layer in enumerate(self.rec.model.layers):
            h = torch.from_numpy(ckpt[f"state.{li}.h"]).to(self.dev)
            state.append(
                (h, torch.from_numpy(ckpt[f"state.{li}.c"]).to(self.dev))
                if layer.cell == "lstm"
                else h
            )
        for (li, kind), st in self.stats.items():
            st.load_state_dict({f: ckpt[f"L{li}.{kind}.{f}"] for f in KindStats.FIELDS})
        return start_chunk, state

    # -- the pass ---------------------------------------------------------------------------
    def run(self, start_chunk: int, state: list | None, done_chars: int) -> float:
        """Record the chunks from ``start_chunk`` on (``state``: the model's state before it);
        returns the seconds it took. Whatever happens, the threads stop, the caller's thread
        count comes back and the files are closed."""
        from tqdm.auto import tqdm

        threads_before = torch.get_num_threads()
        t_rec = time.perf_counter()
        last_ckpt = time.perf_counter()
        bar = None
        ok = False
        try:
            self.writer = Writer()
            # On CPU the statistics run in a second thread (see StatsWorker); on an accelerator
            # they are queued on the device anyway. The two threads share the cores: each taking
            # them all made them fight (2 cores: 100k context switches per 100k characters, 15%
            # more CPU and a slower wall clock).
            if self.dev.type == "cpu" and not self.rec.accelerator_path:
                self.worker = StatsWorker(max(1, threads_before // 2))
                torch.set_num_threads(max(1, threads_before - threads_before // 2))
            self.trace_ws = LendingWorkspace(self.dev) if self.worker is not None else None
            bar = tqdm(
                total=self.plan.n, initial=done_chars, unit="char", unit_scale=True,
                desc="record", disable=not self.rec.progress, mininterval=0.5, smoothing=0.1,
            )  # fmt: skip
            self._loop(bar, start_chunk, state, last_ckpt)
            ok = True
        finally:
            if bar is not None:
                bar.close()
            if self.worker is not None:
                self.worker.close(discard=not ok)
            torch.set_num_threads(threads_before)
            if self.writer is not None:
                self.writer.close()
            self.files.close()
        return time.perf_counter() - t_rec

    def _loop(self, bar, start_chunk: int, state: list | None, last_ckpt: float) -> None:
        rec, plan, worker = self.rec, self.plan, self.worker
        k = start_chunk - 1
        for res in run_plan(
            rec.model, self.ids, plan, layers=rec.layers, kinds=rec.kinds, device=self.dev,
            start_chunk=start_chunk, state=state, on_layer=self.on_layer, predict=worker is None,
            workspace=self.trace_ws, method="kernel" if rec.accelerator_path else "auto",
        ):  # fmt: skip
            k = res.k
            if self.chunk.get("k") != k:
                # No layer was recorded in this chunk (cannot happen, but cheap).
                self.begin_chunk(k)
            if worker is None:
                self.write_predictions(k, res.loss, res.top_ids, res.top_prob, self.chunk["spans"])
            else:
                worker.put(
                    lambda k=k, logits=res.logits, spans=self.chunk["spans"]: (
                        self.write_predictions(
                            k, *predictions(logits, *chunk_inputs(plan, k, self.ids)[1:]), spans
                        )
                    )
                )
            bar.update(int(plan.length[k].sum()))
            if rec.hook is not None:
                rec.hook(k)
            if k + 1 < plan.chunks and time.perf_counter() - last_ckpt >= rec.checkpoint_seconds:
                self.save_checkpoint(k + 1, res.state)
                last_ckpt = time.perf_counter()
            state = res.state
        if k + 1 == plan.chunks and start_chunk < plan.chunks:
            self.save_checkpoint(plan.chunks, state)
        if worker is not None:
            worker.drain()
        self.writer.drain()

    def save_checkpoint(self, next_chunk: int, state: list) -> None:
        """Queue a checkpoint behind the writes of every chunk before ``next_chunk``.

        The writer thread makes those writes durable (fsync) and then writes the checkpoint, so
        a checkpoint never claims rows that a crash could lose, and the trace does not wait
        for the disk meanwhile.
        """
        if self.worker is not None:
            self.worker.drain()  # the statistics (and the writes they queue) are up to date
        payload = {
            "next_chunk": np.asarray(next_chunk),
            "job": np.asarray(json.dumps(self.rec.job, sort_keys=True)),
        }
        # Copies: on CPU .numpy() shares memory with tensors that keep changing.
        for li, s in enumerate(state):
            if isinstance(s, tuple):
                payload[f"state.{li}.h"] = s[0].cpu().numpy().copy()
                payload[f"state.{li}.c"] = s[1].cpu().numpy().copy()
            else:
                payload[f"state.{li}.h"] = s.cpu().numpy().copy()
        for (li, kind), st in self.stats.items():
            for f, a in st.state_dict().items():
                payload[f"L{li}.{kind}.{f}"] = a.copy()

        def commit() -> None:
            self.files.sync()
            with atomic_open(self.rec.root / CHECKPOINT) as fh:
                np.savez(fh, **payload)

        self.writer.put(commit)

    # -- one chunk --------------------------------------------------------------------------
    def begin_chunk(self, k: int) -> None:
        """Where chunk ``k``'s rows go: their warm rows, text positions and file spans."""
        plan, B, dev, ar_t = self.plan, self.B, self.dev, self.ar_t
        start = torch.from_numpy(plan.start[k]).to(dev).view(1, B)
        length = torch.from_numpy(plan.length[k]).to(dev).view(1, B)
        offset = torch.from_numpy(plan.offset[k]).to(dev).view(1, B)
        warm = (ar_t < length) & (ar_t + offset >= plan.warmup)  # [T, B]
        pos = (start + ar_t).view(-1)  # [T*B], t-major like the acts
        if bool(warm.all()):
            sel_tb = None
        else:
            sel_tb = warm.view(-1).nonzero().view(-1)
            pos = pos.index_select(0, sel_tb)
        spans = {}
        for key, f in (*self.files.acts.items(), *self.files.pred.items()):
            spans[key] = [
                (b, f.offset + int(plan.start[k, b]) * f.row_bytes, int(plan.length[k, b]))
                for b in range(B)
                if plan.length[k, b] > 0
            ]
        # Each real (chunk, stream) row is one block: one row of every .scale.npy.
        sf = next(iter(self.files.scales.values()))
        spans["scale"] = [
            (b, sf.offset + int(self.block_of[k, b]) * sf.row_bytes, 1)
            for b in range(B)
            if plan.length[k, b] > 0
        ]
        self.chunk = dict(k=k, sel_tb=sel_tb, pos=pos, spans=spans)

    def on_layer(self, k: int, li: int, acts: dict[str, torch.Tensor]) -> None:
        """The trace's callback: layer ``li``'s kinds ``[T, B, H]`` of chunk ``k``."""
        if self.chunk.get("k") != k:
            self.begin_chunk(k)
        ctx = dict(self.chunk)
        if self.worker is None:
            for kind, v in acts.items():
                self.fold(li, kind, v, ctx)
            return
        # The acts are read in place by the worker: they live in buffers lent by trace_ws
        # (or, on the kernel road, h is the kernel's own output), given back once folded.
        for kind, v in acts.items():
            self.worker.put(lambda li=li, kind=kind, v=v: self.fold(li, kind, v, ctx))
        lent = self.trace_ws.take_lent()
        self.worker.put(lambda: None, lambda: self.trace_ws.give_back(lent))

    def fold(self, li: int, kind: str, v: torch.Tensor, ctx: dict) -> None:
        """Code ``v`` ``[T, B, H]`` for the store (one block per stream, in the [B, T, H] order
        of the file so each row is one write), fold it into the statistics, queue the writes."""
        T, B, H, ws, k = self.T, self.B, self.H, self.ws, ctx["k"]
        sel_tb, pos = ctx["sel_tb"], ctx["pos"]
        codes = self.pool.take()
        # Moments and top/bottom k are of the float32 values; histograms count the stored
        # values (rounded to float16 for the grid), so a reader's histogram of any rows is
        # exactly a part of them (rank subtracts one from the other).
        v16 = ws.get("v16", (T, B, H), torch.float16)
        if self.kernels is not None:
            params = np.empty((B, 2, H), dtype=PARAM_DTYPE)
            dec = ws.get("dec", (T, B, H), torch.float32)
            self.kernels.encode_chunk(
                v.numpy(), self.plan.length[k], codes.numpy(), params, dec.numpy()
            )
            v16.copy_(dec)  # clamped to float16's range already
        else:
            params, dec = encode_torch(v, self.plan.length[k], codes)
            v16.copy_(dec).clamp_(-F16_MAX, F16_MAX)
        # Moments, min/max and top/bottom k fold the float32 values unclamped (a cell state may
        # pass float16's 65,504); only the histogram's float16 grid clamps (v16, above).
        v2 = v.reshape(T * B, H)
        h2 = v16.view(T * B, H)
        if sel_tb is not None:
            n_sel = sel_tb.numel()
            v2 = torch.index_select(v2, 0, sel_tb, out=ws.get("vsel", (n_sel, H), v2.dtype))
            h2 = torch.index_select(h2, 0, sel_tb, out=ws.get("hsel", (n_sel, H), h2.dtype))
        self.stats[(li, kind)].update(v2, h2, pos)
        files, spans = self.files, ctx["spans"]
        self.writer.write(files.scales[(li, kind)], params.reshape(B, 1, 2 * H), spans["scale"])
        if self.dev.type == "cpu":
            self.writer.write(
                files.acts[(li, kind)], codes.numpy(), spans[(li, kind)],
                lambda buf=codes: self.pool.give(buf),
            )  # fmt: skip
        else:
            host = codes.cpu().numpy()
            self.pool.give(codes)
            self.writer.write(files.acts[(li, kind)], host, spans[(li, kind)])

    def write_predictions(self, k: int, loss, top_ids, top_prob, spans: dict) -> None:
        """Queue chunk ``k``'s per-character loss ``[T, B]`` and top-5 predictions ``[T, B, 5]``."""
        plan, B, pred = self.plan, self.B, self.files.pred
        # Loss: row b at t predicts position start+t+1; write it there (the NaN at run
        # starts was filled in when the file was created).
        loss = loss.t().contiguous().cpu().numpy()  # [B, T]
        loss_spans = [
            (b, pred["loss"].offset + (int(plan.start[k, b]) + 1) * 4, m)
            for b in range(B)
            if (m := min(int(plan.length[k, b]), int(plan.run_stop[k, b] - plan.start[k, b] - 1)))
            > 0
        ]  # fmt: skip
        self.writer.write(pred["loss"], loss, loss_spans)
        top_ids = top_ids.transpose(0, 1).to(torch.int32).contiguous().cpu().numpy()
        top_prob = top_prob.transpose(0, 1).to(torch.float16).contiguous().cpu().numpy()
        self.writer.write(pred["top_ids"], top_ids, spans["top_ids"])
        self.writer.write(pred["top_prob"], top_prob, spans["top_prob"])
