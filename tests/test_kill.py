"""SIGKILL at random moments and inside atomic writes: nothing on disk is ever half-written.

Training and recording run in subprocesses that are killed (``kill -9``, no chance to clean up)
several times at seeded random moments, and once exactly inside a save (after the temp file is
written, before the rename; and half-way through writing it). After every kill each checkpoint
on disk loads and a store either opens complete or is refused as incomplete; rerunning the same
command finishes the job, and the result equals an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmscope.disk import temp_owner
from lstmscope.errors import StoreError
from lstmscope.model.checkpoint import load_checkpoint
from lstmscope.store.reader import ActivationStore
from tests.test_record import assert_same_store, make_loaded, python_text

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}

# A small model, evaluated and saved every 4 steps, so kills often land in or near a save.
TRAIN_FLAGS = ["--hidden", "32", "--layers", "1", "--embed", "16", "--batch", "8",
               "--seq-len", "32", "--eval-every", "4", "--save-minutes", "0", "--lr", "5e-3",
               "--device", "cpu", "--seed", "0"]  # fmt: skip
STEPS = 300


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lstmscope", "-q", "train", "--data", str(data), "-o", str(out),
            "--max-steps", str(STEPS), *TRAIN_FLAGS, *extra]  # fmt: skip


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if temp_owner(p.name)] if folder.is_dir() else []


def _assert_checkpoints_load(run: Path) -> int:
    """Every .pt in ``run`` loads; returns last.pt's step (0 when there is none yet)."""
    for p in run.glob("*.pt"):
        load_checkpoint(p)  # raises CheckpointError on a half-written file
    return int(load_checkpoint(run / "last.pt")["step"]) if (run / "last.pt").exists() else 0


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "code.py"
    path.write_text(python_text(60_000, seed=3), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def straight_run(corpus, tmp_path_factory) -> Path:
    """The same training, never interrupted."""
    out = tmp_path_factory.mktemp("straight") / "run"
    res = subprocess.run(_train_cmd(corpus, out), env=ENV, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert load_checkpoint(out / "last.pt")["step"] == STEPS
    return out


@pytest.mark.timeout(600)
def test_training_killed_three_times_ends_with_the_same_weights(corpus, straight_run, tmp_path):
    rng = np.random.default_rng(7)
    run = tmp_path / "run"
    kills, steps_seen = 0, []
    while kills < 3:
        before = _assert_checkpoints_load(run) if run.exists() else 0
        proc = subprocess.Popen(_train_cmd(corpus, run, "--resume"), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        # Wait until this run has saved a random number of steps past where the last one
        # stopped, then kill after a random delay: mid-step, mid-evaluation or mid-save.
        target = before + int(rng.integers(4, 60))
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if load_checkpoint(run / "last.pt")["step"] >= target:
                    break
            except Exception:  # not there yet, or being replaced right now
                pass
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0.0, 0.05)))
        if proc.poll() is not None:
            pytest.fail(f"training ended before kill {kills + 1}: {proc.stderr.read()[-1500:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        kills += 1
        steps_seen.append(_assert_checkpoints_load(run))
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] < STEPS
    res = subprocess.run(_train_cmd(corpus, run, "--resume"), env=ENV, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert load_checkpoint(run / "last.pt")["step"] == STEPS
    _assert_same_weights(straight_run / "last.pt", run / "last.pt")
    _assert_same_weights(straight_run / "best.pt", run / "best.pt")
    assert not _temps(run), "temp files of killed saves must be cleaned up"
    # The log holds each evaluation once, in order, though some were computed twice.
    steps = [int(r.split(",")[0]) for r in (run / "log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS


# Dies inside the Nth save of last.pt: after writing the temp file and before renaming it
# ("rename"), or half-way through writing it ("write").
DIE_IN_SAVE = """
import io, os, sys, torch
from lstmscope import cli
from lstmscope.model import checkpoint
from lstmscope.train import loop as train
how, nth = sys.argv[1], int(sys.argv[2])
seen = {"n": 0, "target": ""}
real_save, real_replace, real_ck = torch.save, os.replace, train.save_checkpoint

def save_checkpoint(path, payload):
    seen["target"] = str(path)
    return real_ck(path, payload)

def save(obj, f, *a, **k):
    if how == "write" and seen["target"].endswith("last.pt"):
        seen["n"] += 1
        if seen["n"] == nth:
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os._exit(9)
    return real_save(obj, f, *a, **k)

def replace(src, dst):
    if how == "rename" and str(dst).endswith("last.pt"):
        seen["n"] += 1
        if seen["n"] == nth:
            os._exit(9)
    return real_replace(src, dst)

checkpoint.torch.save = save
train.save_checkpoint = save_checkpoint
os.replace = replace
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("how", ["rename", "write"])
@pytest.mark.timeout(300)
def test_training_killed_inside_a_save_keeps_the_previous_checkpoint(
    corpus, straight_run, tmp_path, how
):
    run = tmp_path / "run"
    argv = _train_cmd(corpus, run)[3:]  # after "python -m lstmscope"
    res = subprocess.run([sys.executable, "-c", DIE_IN_SAVE, how, "6", *argv], env=ENV,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 9, res.stderr[-2000:]
    assert _temps(run), "the killed save should have left its temp file"
    # The 6th save of last.pt died: the 5th (step 16) is what is on disk, whole.
    assert _assert_checkpoints_load(run) == 16
    res = subprocess.run(_train_cmd(corpus, run, "--resume"), env=ENV, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert not _temps(run)
    _assert_same_weights(straight_run / "last.pt", run / "last.pt")
    # best.pt is saved before last.pt, so no kill leaves it behind the best evaluation.
    _assert_same_weights(straight_run / "best.pt", run / "best.pt")


def test_a_second_training_into_the_same_folder_is_refused(corpus, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(corpus, run, "--max-steps", "100000"), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (run / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        res = subprocess.run(_train_cmd(corpus, run, "--resume"), env=ENV, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert res.returncode != 0
        assert "another `lstmscope train` is writing to" in res.stderr
    finally:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------------------------
# Recording

RECORD_KW = dict(streams=3, warmup=15, chunk_len=25)

RECORD_SCRIPT = """
import os, sys, time, torch
torch.set_num_threads(1)
from lstmscope.model.checkpoint import load_model
from lstmscope.store.recorder import record
model, text_path, out, die_at = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
if die_at:  # die just before renaming this file into place
    real = os.replace
    def replace(src, dst):
        if str(dst).endswith(die_at):
            os._exit(9)
        return real(src, dst)
    os.replace = replace
text = open(text_path, encoding="utf-8").read()
record(load_model(model), text, out, progress=False, checkpoint_seconds=0,
       hook=lambda k: time.sleep(0.01), **%r)
""" % (RECORD_KW,)  # noqa: UP031


@pytest.fixture(scope="module")
def rec_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec")
    loaded = make_loaded(tmp)
    text = python_text(8000, seed=5)
    (tmp / "text.txt").write_text(text, encoding="utf-8")
    from lstmscope.store.recorder import record

    record(loaded, text, tmp / "whole", progress=False, **RECORD_KW)
    return loaded, text, tmp


def _record_proc(loaded, tmp: Path, out: Path, die_at: str = "") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RECORD_SCRIPT, str(loaded.source), str(tmp / "text.txt"),
         str(out), die_at], env=ENV, stderr=subprocess.PIPE,
    )  # fmt: skip


def _assert_refused_or_complete(out: Path, whole: Path) -> bool:
    """A store opens only if it is complete (and then equals the uninterrupted one)."""
    try:
        ActivationStore.open(out)
    except StoreError as e:
        assert "incomplete store" in str(e) or "not an lstmscope store" in str(e), str(e)
        return False
    assert_same_store(whole, out)
    return True


@pytest.mark.timeout(600)
def test_recording_killed_at_random_moments_finishes_the_same_store(rec_setup):
    loaded, text, tmp = rec_setup
    out = tmp / "cut"
    rng = np.random.default_rng(11)
    ckpt = out / "progress" / "checkpoint.npz"
    for _ in range(4):
        proc = _record_proc(loaded, tmp, out)
        deadline = time.time() + 120
        # First kill may land before anything is written; later ones after some progress.
        while time.time() < deadline and proc.poll() is None and not ckpt.exists():
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.5)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        if _assert_refused_or_complete(out, tmp / "whole"):
            break
    from lstmscope.store.recorder import record

    summary = record(loaded, text, out, progress=False, **RECORD_KW)
    assert summary.already_complete or summary.resumed_from > 0
    assert_same_store(tmp / "whole", out)


@pytest.mark.parametrize("die_at", ["meta.json", "checkpoint.npz", "ids.npy", "record.json"])
@pytest.mark.timeout(300)
def test_recording_killed_inside_a_write_is_refused_then_finished(rec_setup, die_at):
    loaded, text, tmp = rec_setup
    out = tmp / f"die-{die_at}"
    proc = _record_proc(loaded, tmp, out, die_at)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 9, err.decode()[-2000:]
    with pytest.raises(StoreError):
        ActivationStore.open(out)
    from lstmscope.store.recorder import record

    record(loaded, text, out, progress=False, **RECORD_KW)  # the same command finishes it
    assert_same_store(tmp / "whole", out)
    leftovers = [p for p in out.rglob("*") if temp_owner(p.name)]
    assert not leftovers, leftovers
    assert json.loads((out / "meta.json").read_text())["n"] == len(text)
