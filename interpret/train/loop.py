"""The training loop: truncated BPTT over parallel contiguous streams, as char-rnn does it.

The training text is cut into ``batch_size`` contiguous streams; step ``k`` of an epoch reads
characters ``[k*T, (k+1)*T)`` of every stream and carries the recurrent state on from step
``k-1`` (detached), so the model sees long contexts at the cost of short backprop windows.
The data position is a pure function of the step, so resuming needs only the step, the
carried state, the optimiser and the RNG state, all saved in ``last.pt``.

Each step runs in a fixed, obvious order (nanoGPT): set the learning rate, evaluate and
checkpoint when due, forward/backward/clip/step, log.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from lstmscope.disk import atomic_write_text, folder_lock, remove_stale_temps
from lstmscope.errors import CheckpointError, LstmscopeError
from lstmscope.model.cells import CharRNN, ModelConfig, detach_state
from lstmscope.model.checkpoint import load_checkpoint, pick_device, save_checkpoint
from lstmscope.text.vocab import Vocab
from lstmscope.train.curves import line_plot_html
from torch import nn

log = logging.getLogger(__name__)
LN2 = math.log(2.0)


# What train writes into a run folder (atomically): the temps a killed run leaves are of these.
RUN_FILES = ("best.pt", "last.pt", "log.csv", "curve.html", "vocab.json", "config.json")


@dataclass(frozen=True)
class TrainConfig:
    seq_len: int = 128  # backprop window; state still flows across windows
    batch_size: int = 64  # parallel streams (split across ranks under torchrun)
    lr: float = 2e-3  # AdamW peak; char-level LSTMs like a high-ish rate
    min_lr_frac: float = 0.1  # cosine decays to this fraction of lr
    warmup_steps: int = 50  # short linear warm-up avoids an early blow-up with Adam
    schedule: str = "cosine"  # cosine | constant
    weight_decay: float = 0.01  # AdamW's decoupled decay, on matrices only
    grad_clip: float = 1.0  # exploding gradients are the classic RNN failure
    max_steps: int = 2000
    max_minutes: float = 0.0  # 0: no time limit
    eval_every: int = 200
    save_minutes: float = 5.0  # also save last.pt this often: a kill loses at most this much
    eval_chars: int = 200_000  # validation is capped so it costs a small share of training
    patience: int = 0  # evaluations without improvement before stopping; 0: never
    seed: int = 0
    bf16: bool = False  # autocast to bfloat16 (useful on GPUs and recent CPUs)
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant"):
            raise ValueError("schedule must be cosine or constant")
        for name in ("seq_len", "batch_size", "max_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.save_minutes < 0:
            raise ValueError("save_minutes must be at least 0 (0: save only at evaluations)")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    lo = cfg.lr * cfg.min_lr_frac
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * progress))


class StreamBatches:
    """Contiguous streams over one id array; batch ``k`` is a pure function of ``k``."""

    def __init__(self, ids: np.ndarray, batch: int, seq_len: int, rows: slice = slice(None)):
        self.stream_len = (len(ids) - 1) // batch
        if self.stream_len < seq_len + 1:
            raise LstmscopeError(
                f"training text too short: {len(ids):,} characters for {batch} streams of "
                f"{seq_len + 1} characters; lower --batch or --seq-len, or add text"
            )
        self.seq_len = seq_len
        usable = batch * self.stream_len
        data = torch.from_numpy(ids[: usable + 1].astype(np.int64))
        self.x = data[:usable].view(batch, self.stream_len)[rows]
        self.y = data[1 : usable + 1].view(batch, self.stream_len)[rows]
        self.steps_per_epoch = (self.stream_len - 1) // seq_len

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(x, y, fresh): ``fresh`` says an epoch starts here, so the state must be reset."""
        k = step % self.steps_per_epoch
        s = slice(k * self.seq_len, (k + 1) * self.seq_len)
        return self.x[:, s], self.y[:, s], k == 0


@torch.no_grad()
def evaluate_bpc(
    model: CharRNN,
    ids: np.ndarray,
    device,
    *,
    streams: int = 32,
    seq_len: int = 256,
    max_chars: int = 0,
    bf16: bool = False,
) -> float:
    """Bits per character of ``model`` on ``ids``, read as carried-state streams."""
    if max_chars and len(ids) > max_chars:
        ids = ids[:max_chars]
    streams = max(1, min(streams, (len(ids) - 1) // 2))
    batches = StreamBatches(ids, streams, min(seq_len, (len(ids) - 1) // streams - 1))
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    for k in range(batches.steps_per_epoch):
        x, y, _ = batches.get(k)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, state = model(x.to(device), state)
        loss = nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), y.to(device).reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += y.numel()
    model.train(was_training)
    return total / max(count, 1) / LN2


# --- distributed helpers: a no-op when not launched by torchrun --------------------------------


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def _gather_state(state: list, d: Dist) -> list:
    """The carried state of every stream (all ranks), so a checkpoint can resume anywhere."""
    if d.world == 1 or state is None:
        return state
    import torch.distributed as dist

    out = []
    for s in state:
        parts = s if isinstance(s, tuple) else (s,)
        full = []
        for t in parts:
            bufs = [torch.empty_like(t) for _ in range(d.world)]
            dist.all_gather(bufs, t.contiguous())
            full.append(torch.cat(bufs, dim=1))
        out.append(tuple(full) if isinstance(s, tuple) else full[0])
    return out


def _slice_state(state: list | None, rows: slice, device) -> list | None:
    if state is None:
        return None
    cut = [tuple(t[:, rows].to(device) for t in s) if isinstance(s, tuple)
           else s[:, rows].to(device) for s in state]  # fmt: skip
    return cut


# --- the run -----------------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_val_bpc: float
    last_val_bpc: float
    stopped: str  # why it stopped: max_steps, max_minutes, early_stop, interrupted


LOG_FIELDS = ("step", "time_s", "train_bpc", "val_bpc", "lr", "chars_per_s")


def _write_log(run_dir: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(run_dir / "log.csv", buf.getvalue())
    steps = [r["step"] for r in rows]
    atomic_write_text(
        run_dir / "curve.html",
        line_plot_html(
            {
                "train bpc": (steps, [r["train_bpc"] for r in rows]),
                "val bpc": (steps, [r["val_bpc"] for r in rows]),
            },
            title=f"training curve: {run_dir.name}",
            xlabel="step",
            ylabel="bits per character",
        ),
    )


def _read_log(run_dir: Path, upto: int) -> list[dict]:
    path = run_dir / "log.csv"
    if not path.is_file():
        return []
    rows = []
    for r in csv.DictReader(path.open()):
        row = {k: float(r[k]) if r.get(k) not in (None, "") else float("nan") for k in LOG_FIELDS}
        row["step"] = int(row["step"])
        if row["step"] <= upto:
            rows.append(row)
    return rows


def train(
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    vocab: Vocab,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    data_info: dict | None = None,
    _stop_at: int | None = None,
) -> TrainResult:
    """Train (or resume) a model; everything lands in ``run_dir``. Returns why it stopped.

    ``_stop_at`` (tests) stops at that step exactly as Ctrl-C would. Only one training writes
    to a ``run_dir`` at a time; temp files of a run killed mid-save are removed.
    """
    run_dir = Path(run_dir)
    kw = dict(resume=resume, progress=progress, data_info=data_info, _stop_at=_stop_at)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes
        return _train(train_ids, val_ids, vocab, model_cfg, cfg, run_dir, **kw)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LstmscopeError(f"cannot create the run folder {run_dir}: {e.strerror}") from None
    busy = f"another `lstmscope train` is writing to {run_dir} right now; use another -o folder"
    with folder_lock(run_dir, busy):
        remove_stale_temps(run_dir, RUN_FILES)
        return _train(train_ids, val_ids, vocab, model_cfg, cfg, run_dir, **kw)


def _train(
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    vocab: Vocab,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool,
    progress: bool,
    data_info: dict | None,
    _stop_at: int | None,
) -> TrainResult:
    from tqdm.auto import tqdm

    device = pick_device(cfg.device)
    d = init_distributed(device)
    if d.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", d.rank)))
        torch.cuda.set_device(device)
    if cfg.batch_size % d.world:
        raise LstmscopeError(f"--batch {cfg.batch_size} must divide by the {d.world} processes")
    per_rank = cfg.batch_size // d.world
    rows = slice(d.rank * per_rank, (d.rank + 1) * per_rank)

    torch.manual_seed(cfg.seed)
    model = CharRNN(model_cfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.99),
    )  # fmt: skip
    step, best, state, history, resumed_time = 0, float("inf"), None, [], None
    if resume and (run_dir / "last.pt").is_file():
        ck = load_checkpoint(run_dir / "last.pt", map_location="cpu")
        if ck["config"] != model_cfg.to_dict():
            raise CheckpointError(
                f"{run_dir / 'last.pt'}: --resume with a different model config; "
                "use the same flags or another -o folder"
            )
        if list(ck["vocab"]) != list(vocab.chars):
            raise CheckpointError(f"{run_dir / 'last.pt'}: the vocab of this text differs")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, best = int(ck["step"]), float(ck["best_val_bpc"])
        state = _slice_state(ck.get("carry_state"), rows, device)
        torch.set_rng_state(ck["rng"]["torch"])
        if device.type == "cuda" and "cuda" in ck["rng"]:
            torch.cuda.set_rng_state(ck["rng"]["cuda"])
        history = _read_log(run_dir, step)
        resumed_time = ck.get("time_s")
        log.info("resumed from %s at step %d (best val %.4f bpc)", run_dir / "last.pt", step, best)
    elif resume:
        log.warning("--resume: no %s yet, starting fresh", run_dir / "last.pt")

    net = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    batches = StreamBatches(train_ids, cfg.batch_size, cfg.seq_len, rows)
    chars_per_step = cfg.batch_size * cfg.seq_len

    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        vocab.save(run_dir / "vocab.json")
        atomic_write_text(
            run_dir / "config.json",
            json.dumps({"model": model_cfg.to_dict(), "train": asdict(cfg), "data": data_info or {}},
                       indent=1),
        )  # fmt: skip

    def checkpoint(name: str, val_bpc: float) -> None:
        full_state = _gather_state(state, d)  # collective: every rank must call it
        if not d.main:
            return
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state()
        save_checkpoint(
            run_dir / name,
            {
                "config": model_cfg.to_dict(),
                "vocab": list(vocab.chars),
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "best_val_bpc": best,
                "val_bpc": val_bpc,
                "train": asdict(cfg),
                "carry_state": [tuple(t.cpu() for t in s) if isinstance(s, tuple) else s.cpu()
                                for s in full_state] if full_state is not None else None,
                "rng": rng,
                "time_s": time.time() - t_start,  # elapsed, so a resume keeps the budget
            },
        )  # fmt: skip

    # Ctrl-C / SIGTERM: finish the current step, then save last.pt and stop cleanly.
    interrupted = {"flag": False}

    def on_signal(signum, frame):
        if interrupted["flag"]:
            raise KeyboardInterrupt
        interrupted["flag"] = True

    old_handlers = {}
    if d.main and threading_is_main():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, on_signal)

    # Time carries over a resume, so --max-minutes is the budget of the whole run.
    # The checkpoint says how long the run had trained (older ones: the last evaluation's time).
    elapsed = (
        resumed_time if resumed_time is not None else (history[-1]["time_s"] if history else 0.0)
    )
    t_start, stopped = time.time() - elapsed, "max_steps"
    last_val = float("nan")
    last_save = time.time()
    run_loss, run_n, bad_evals = 0.0, 0, 0
    t_window, chars_window = time.time(), 0
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (progress and d.main),
               unit="step", dynamic_ncols=True)  # fmt: skip
    net.train()
    try:
        while True:
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            due = step % cfg.eval_every == 0 or step >= cfg.max_steps
            if due and not (history and history[-1]["step"] == step):  # not twice on resume
                last_val = evaluate_bpc(model, val_ids, device, max_chars=cfg.eval_chars,
                                        bf16=cfg.bf16)  # fmt: skip
                # Every rank must take the same best.pt and early-stop decisions (a save is a
                # collective): rank 0's value for all, not each rank's own rounding.
                last_val = _rank0_value(d, device, last_val)
                now = time.time()
                cps = chars_window * d.world / max(now - t_window, 1e-9)
                train_bpc = float(run_loss) / run_n / LN2 if run_n else float("nan")
                improved = last_val < best
                best = min(best, last_val)
                history.append({"step": step, "time_s": round(now - t_start, 2),
                                "train_bpc": train_bpc, "val_bpc": last_val, "lr": lr,
                                "chars_per_s": round(cps, 1)})  # fmt: skip
                # best.pt first: last.pt records the new best, so a kill between the two saves
                # must not leave best.pt behind (a resume would not see an improvement again).
                if improved:
                    checkpoint("best.pt", last_val)
                checkpoint("last.pt", last_val)
                last_save = time.time()
                if d.main:
                    _write_log(run_dir, history)
                bar.set_postfix(val_bpc=f"{last_val:.3f}", best=f"{best:.3f}")
                run_loss, run_n, bad_evals = 0.0, 0, 0 if improved else bad_evals + 1
                t_window, chars_window = time.time(), 0
                if cfg.patience and bad_evals >= cfg.patience:
                    stopped = "early_stop"
                    break
            if step >= cfg.max_steps:
                break
            # Clocks differ between ranks: time-based decisions are agreed, like Ctrl-C.
            timed_out = bool(cfg.max_minutes) and time.time() - t_start > cfg.max_minutes * 60
            save_due = bool(cfg.save_minutes) and time.time() - last_save > cfg.save_minutes * 60
            stop, save_due, timed_out = _agree(d, device, interrupted["flag"], save_due, timed_out)
            if timed_out:
                stopped = "max_minutes"
                break
            if stop or (_stop_at is not None and step >= _stop_at):
                stopped = "interrupted"
                break
            if save_due:  # between evaluations: a kill now loses at most save_minutes
                checkpoint("last.pt", last_val)
                last_save = time.time()

            x, y, fresh = batches.get(step)
            if fresh:
                state = None
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                logits, state = net(x, state)
                loss = nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            state = detach_state(state)
            step += 1
            chars_window += chars_per_step
            run_loss, run_n = run_loss + loss.detach(), run_n + 1  # summed on device: no sync
            if step % 10 == 0:  # float(loss) syncs a GPU, so the bar updates every 10 steps
                loss_v = float(loss.detach())
                el = max(time.time() - t_window, 1e-9)
                bar.set_postfix(loss=f"{loss_v:.3f}", bpc=f"{loss_v / LN2:.3f}",
                                val=f"{last_val:.3f}", cps=f"{chars_window * d.world / el:,.0f}")  # fmt: skip
            bar.update(1)
    finally:
        bar.close()
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    if stopped in ("interrupted", "max_minutes", "early_stop") and not (
        history and history[-1]["step"] == step
    ):
        # Save where we are so --resume continues from here, not from the last evaluation.
        checkpoint("last.pt", last_val)
        if d.main:
            _write_log(run_dir, history)
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()  # a clean exit: no rank aborts on a peer's closed socket
    return TrainResult(run_dir, step, best, last_val, stopped)


def _agree(d: Dist, device: torch.device, *flags: bool) -> tuple[bool, ...]:
    """Each flag true on any rank is true on all: every rank stops (or saves) at the same step,
    or the collectives deadlock. The tensor lives on ``device``: NCCL reduces only CUDA
    tensors."""
    if d.world == 1:
        return flags
    import torch.distributed as dist

    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t)
    return tuple(bool(x > 0) for x in t.tolist())


def _rank0_value(d: Dist, device: torch.device, value: float) -> float:
    """``value`` as rank 0 has it, on every rank."""
    if d.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
