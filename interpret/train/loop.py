"""The training loop: truncated BPTT over parallel contiguous streams, as char-rnn does it.

The training text is cut into ``batch_size`` contiguous streams; step ``k`` of an epoch reads
characters ``[k*T, (k+1)*T)`` of every stream and carries the recurrent state on from step
``k-1`` (detached), so the model sees long contexts at the cost of short backprop windows.
The data position is a pure function of the step, so resuming needs only the step, the
carried state, the optimiser and the RNG state, all saved in ``last.pt``.

Each step runs in a fixed, obvious order (nanoGPT): set the learning rate, evaluate and
checkpoint when due, stop or save when asked, forward/backward/clip/step, log (``_Run.loop``).
Reading the text as streams and scoring it is ``evaluate``; several processes under torchrun
are ``dist``.
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
from torch import nn

from lstmscope.disk import atomic_write_text, folder_lock, remove_stale_temps
from lstmscope.errors import CheckpointError, LstmscopeError
from lstmscope.model.cells import CharRNN, ModelConfig, detach_state
from lstmscope.model.checkpoint import load_checkpoint, pick_device, save_checkpoint
from lstmscope.text.vocab import Vocab
from lstmscope.train import dist
from lstmscope.train.curves import line_plot_html
from lstmscope.train.evaluate import LN2, StreamBatches, evaluate_bpc

log = logging.getLogger(__name__)


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
    run = _Run(train_ids, vocab, model_cfg, cfg, run_dir, resume=resume, data_info=data_info)
    with _StopRequests(run.d.main) as stop:
        stopped = run.loop(val_ids, stop, progress=progress, stop_at=_stop_at)
    return run.finish(stopped)


def _optimizer(model: CharRNN, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on biases or the embedding)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.99),
    )  # fmt: skip


class _Run:
    """One training run: its model and files, and what the loop carries from step to step."""

    def __init__(
        self,
        train_ids: np.ndarray,
        vocab: Vocab,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        run_dir: Path,
        *,
        resume: bool,
        data_info: dict | None,
    ) -> None:
        self.cfg, self.model_cfg, self.vocab, self.run_dir = cfg, model_cfg, vocab, run_dir
        self.device, self.d, rows = dist.setup(pick_device(cfg.device), cfg.batch_size)
        torch.manual_seed(cfg.seed)
        self.model = CharRNN(model_cfg).to(self.device)
        self.opt = _optimizer(self.model, cfg)
        # Where training stands; a resume restores it from last.pt.
        self.step, self.best = 0, float("inf")
        self.state: list | None = None  # the recurrent state carried on (this rank's streams)
        self.history: list[dict] = []  # log.csv: one row per evaluation
        self.resumed_time: float | None = None  # training time the checkpoint had spent
        if resume and (run_dir / "last.pt").is_file():
            self._resume(run_dir / "last.pt", rows)
        elif resume:
            log.warning("--resume: no %s yet, starting fresh", run_dir / "last.pt")
        self.net: nn.Module = self.model
        if self.d.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.batches = StreamBatches(train_ids, cfg.batch_size, cfg.seq_len, rows)
        if self.d.main:
            self._write_config(data_info)

    def _resume(self, path: Path, rows: slice) -> None:
        """Continue from ``path``: weights, optimiser, step, carried state, RNG and log."""
        ck = load_checkpoint(path, map_location="cpu")
        if ck["config"] != self.model_cfg.to_dict():
            raise CheckpointError(
                f"{path}: --resume with a different model config; "
                "use the same flags or another -o folder"
            )
        if list(ck["vocab"]) != list(self.vocab.chars):
            raise CheckpointError(f"{path}: the vocab of this text differs")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.step, self.best = int(ck["step"]), float(ck["best_val_bpc"])
        self.state = dist.slice_state(ck.get("carry_state"), rows, self.device)
        torch.set_rng_state(ck["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in ck["rng"]:
            torch.cuda.set_rng_state(ck["rng"]["cuda"])
        self.history = _read_log(self.run_dir, self.step)
        self.resumed_time = ck.get("time_s")
        log.info("resumed from %s at step %d (best val %.4f bpc)", path, self.step, self.best)

    def _write_config(self, data_info: dict | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.vocab.save(self.run_dir / "vocab.json")
        atomic_write_text(
            self.run_dir / "config.json",
            json.dumps({"model": self.model_cfg.to_dict(), "train": asdict(self.cfg),
                        "data": data_info or {}}, indent=1),
        )  # fmt: skip

    def _start_clocks(self) -> None:
        # Time carries over a resume, so --max-minutes is the budget of the whole run.
        # The checkpoint says how long the run had trained (older ones: the last evaluation's time).
        elapsed = (
            self.resumed_time
            if self.resumed_time is not None
            else (self.history[-1]["time_s"] if self.history else 0.0)
        )
        self.t_start = time.time() - elapsed
        self.last_val = float("nan")
        self.last_save = time.time()
        # Since the last evaluation: the training loss (summed on the device, no sync per step),
        # evaluations without a new best, and the throughput window.
        self.run_loss, self.run_n, self.bad_evals = 0.0, 0, 0
        self.t_window, self.chars_window = time.time(), 0

    def loop(self, val_ids: np.ndarray, stop: _StopRequests, *, progress: bool,
             stop_at: int | None) -> str:  # fmt: skip
        """Train until a limit; returns why it stopped (``TrainResult.stopped``).

        Each step in a fixed order: set the learning rate, evaluate and checkpoint when due,
        stop or save when asked, train one step, log. ``stop_at`` (tests) stops at that step
        as Ctrl-C would.
        """
        from tqdm.auto import tqdm

        cfg = self.cfg
        self._start_clocks()
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (progress and self.d.main),
                   unit="step", dynamic_ncols=True)  # fmt: skip
        self.net.train()
        try:
            while True:
                lr = lr_at(self.step, cfg)
                for group in self.opt.param_groups:
                    group["lr"] = lr
                due = self.step % cfg.eval_every == 0 or self.step >= cfg.max_steps
                if due and not self._evaluated_here():  # not twice on resume
                    self._evaluate(val_ids, lr, bar)
                    if cfg.patience and self.bad_evals >= cfg.patience:
                        return "early_stop"
                if self.step >= cfg.max_steps:
                    return "max_steps"
                stopped = self._stop_or_save(stop.requested, stop_at)
                if stopped:
                    return stopped
                loss = self._train_step()
                self._log_step(loss, bar)
        finally:
            bar.close()

    def _evaluated_here(self) -> bool:
        """Whether the log's last row is this step (a resume does not evaluate it again)."""
        return bool(self.history) and self.history[-1]["step"] == self.step

    def _evaluate(self, val_ids: np.ndarray, lr: float, bar) -> None:
        """Score the validation text, save best.pt (when better) and last.pt, write the log."""
        cfg, d = self.cfg, self.d
        last_val = evaluate_bpc(self.model, val_ids, self.device, max_chars=cfg.eval_chars,
                                bf16=cfg.bf16)  # fmt: skip
        # Every rank must take the same best.pt and early-stop decisions (a save is a
        # collective): rank 0's value for all, not each rank's own rounding.
        self.last_val = last_val = dist.rank0_value(d, self.device, last_val)
        now = time.time()
        cps = self.chars_window * d.world / max(now - self.t_window, 1e-9)
        train_bpc = float(self.run_loss) / self.run_n / LN2 if self.run_n else float("nan")
        improved = last_val < self.best
        self.best = min(self.best, last_val)
        self.history.append({"step": self.step, "time_s": round(now - self.t_start, 2),
                             "train_bpc": train_bpc, "val_bpc": last_val, "lr": lr,
                             "chars_per_s": round(cps, 1)})  # fmt: skip
        # best.pt first: last.pt records the new best, so a kill between the two saves
        # must not leave best.pt behind (a resume would not see an improvement again).
        if improved:
            self.checkpoint("best.pt", last_val)
        self.checkpoint("last.pt", last_val)
        self.last_save = time.time()
        if d.main:
            _write_log(self.run_dir, self.history)
        bar.set_postfix(val_bpc=f"{last_val:.3f}", best=f"{self.best:.3f}")
        self.run_loss, self.run_n = 0.0, 0
        self.bad_evals = 0 if improved else self.bad_evals + 1
        self.t_window, self.chars_window = time.time(), 0

    def _stop_or_save(self, requested: bool, stop_at: int | None) -> str | None:
        """Why to stop before this step, or None; saves last.pt when ``save_minutes`` is due."""
        cfg = self.cfg
        # Clocks differ between ranks: time-based decisions are agreed, like Ctrl-C.
        timed_out = bool(cfg.max_minutes) and time.time() - self.t_start > cfg.max_minutes * 60
        save_due = bool(cfg.save_minutes) and time.time() - self.last_save > cfg.save_minutes * 60
        stop, save_due, timed_out = dist.agree(self.d, self.device, requested, save_due, timed_out)
        if timed_out:
            return "max_minutes"
        if stop or (stop_at is not None and self.step >= stop_at):
            return "interrupted"
        if save_due:  # between evaluations: a kill now loses at most save_minutes
            self.checkpoint("last.pt", self.last_val)
            self.last_save = time.time()
        return None

    def _train_step(self) -> torch.Tensor:
        """Forward, backward, clip, step; the recurrent state carries on, detached."""
        cfg, device = self.cfg, self.device
        x, y, fresh = self.batches.get(self.step)
        if fresh:
            self.state = None
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            logits, self.state = self.net(x, self.state)
            loss = nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1)
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.state = detach_state(self.state)
        self.step += 1
        self.chars_window += cfg.batch_size * cfg.seq_len
        self.run_loss, self.run_n = self.run_loss + loss.detach(), self.run_n + 1
        return loss

    def _log_step(self, loss: torch.Tensor, bar) -> None:
        if self.step % 10 == 0:  # float(loss) syncs a GPU, so the bar updates every 10 steps
            loss_v = float(loss.detach())
            el = max(time.time() - self.t_window, 1e-9)
            bar.set_postfix(loss=f"{loss_v:.3f}", bpc=f"{loss_v / LN2:.3f}",
                            val=f"{self.last_val:.3f}",
                            cps=f"{self.chars_window * self.d.world / el:,.0f}")  # fmt: skip
        bar.update(1)

    def checkpoint(self, name: str, val_bpc: float) -> None:
        """Save ``name`` in the run folder (rank 0; every rank calls it: the state is gathered)."""
        full_state = dist.gather_state(self.state, self.d)  # collective: every rank must call it
        if not self.d.main:
            return
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state()
        save_checkpoint(
            self.run_dir / name,
            {
                "config": self.model_cfg.to_dict(),
                "vocab": list(self.vocab.chars),
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "step": self.step,
                "best_val_bpc": self.best,
                "val_bpc": val_bpc,
                "train": asdict(self.cfg),
                "carry_state": [tuple(t.cpu() for t in s) if isinstance(s, tuple) else s.cpu()
                                for s in full_state] if full_state is not None else None,
                "rng": rng,
                "time_s": time.time() - self.t_start,  # elapsed, so a resume keeps the budget
            },
        )  # fmt: skip

    def finish(self, stopped: str) -> TrainResult:
        if stopped in ("interrupted", "max_minutes", "early_stop") and not self._evaluated_here():
            # Save where we are so --resume continues from here, not from the last evaluation.
            self.checkpoint("last.pt", self.last_val)
            if self.d.main:
                _write_log(self.run_dir, self.history)
        dist.finish(self.d)
        return TrainResult(self.run_dir, self.step, self.best, self.last_val, stopped)


class _StopRequests:
    """Ctrl-C / SIGTERM: finish the current step, then save last.pt and stop cleanly; a second
    signal stops at once. Installed only in the main process's main thread."""

    def __init__(self, main: bool) -> None:
        self.requested = False
        self._install = main and threading_is_main()
        self._old: dict = {}

    def _on_signal(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopRequests:
        if self._install:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
