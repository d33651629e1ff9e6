"""Disk full and read-only output folders (issue #7, part 3).

What a user needs from the error: which path, that the disk is full or read-only, and that
nothing written earlier was lost (earlier checkpoints and stores still load).

How the faults are made, from most portable to most real:

- ``DiskBudget`` (in-process, any user): every write under one folder draws on a byte budget;
  past it the write fails with ENOSPC, as on a disk that fills up. Files stay sparse until
  written, as on ext4 or tmpfs.
- ``file_size_limit`` (``RLIMIT_FSIZE``, no root): the kernel refuses to grow any file past a
  size (EFBIG), through the real C paths (torch's zip writer, numpy's memmap). In-process for the
  library, in a subprocess for the CLI.
- a real tmpfs of a few hundred KiB: needs root and a kernel that lets us mount, else skipped.

Read-only: ``ReadOnly`` (in-process, any user) fails every write under a folder with EROFS;
chmod 0555 (not root: root ignores permission bits); a tmpfs remounted read-only (root).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import hashlib
import io
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmscope.cli import main
from lstmscope.disk import atomic_open, atomic_write_text, make_dir
from lstmscope.errors import LstmscopeError, StoreError, WriteError
from lstmscope.export.text import write_html
from lstmscope.model.cells import CharRNN, ModelConfig
from lstmscope.model.checkpoint import (
    LoadedModel,
    export_safetensors,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from lstmscope.store.reader import ActivationStore
from lstmscope.store.recorder import record
from lstmscope.text.corpus import Document, write_corpus
from lstmscope.text.vocab import Vocab
from lstmscope.train.loop import TrainConfig, train
from tests.conftest import CODE_SNIPPET

resource = pytest.importorskip("resource")  # POSIX only, like the faults made here

TEXT = CODE_SNIPPET * 3  # ~1,000 characters to record
PAGE = 4096


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# Fault injection


def _is_under(path: object, root: str) -> bool:
    if isinstance(path, int):
        return False
    try:
        p = os.path.realpath(os.fsdecode(path))
    except TypeError:
        return False
    return p == root or p.startswith(root + os.sep)


def _nbytes(data) -> int:
    if isinstance(data, str):
        return len(data.encode("utf-8", errors="surrogatepass"))
    return memoryview(data).nbytes


class _CountedFile:
    """A file object whose writes draw on a ``DiskBudget``; everything else is the file's."""

    def __init__(self, f, budget: DiskBudget, path: str):
        self._f, self._budget, self._path = f, budget, path

    def write(self, data):
        self._budget.take(_nbytes(data), self._path)
        return self._f.write(data)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


class DiskBudget:
    """Writes under ``root`` (``os.write``, ``os.pwrite``, file objects from ``open`` and
    ``os.fdopen``) draw on ``budget`` bytes; past it they raise ENOSPC. ``budget=None`` only
    counts, so a test can measure what a run writes, then give it less."""

    def __init__(self, monkeypatch, root: Path, budget: int | None = None):
        self.root = os.path.realpath(root)
        self.budget = budget
        self.used = 0
        self.log: list[tuple[str, int, str]] = []  # (file, bytes, call) per write, in order
        self._fds: dict[int, str] = {}
        self._lock = threading.Lock()
        real_open, real_close = os.open, os.close
        real_write, real_pwrite, real_fdopen = os.write, os.pwrite, os.fdopen
        real_file_open = builtins.open

        def os_open(path, flags, mode=0o777, **kw):
            fd = real_open(path, flags, mode, **kw)
            if kw.get("dir_fd") is None and _is_under(path, self.root):
                self._fds[fd] = os.fsdecode(path)
            else:
                self._fds.pop(fd, None)
            return fd

        def os_close(fd):
            self._fds.pop(fd, None)
            return real_close(fd)

        def os_write(fd, data):
            if fd in self._fds:
                self.take(_nbytes(data), self._fds[fd], "write")
            return real_write(fd, data)

        def os_pwrite(fd, data, offset):
            if fd in self._fds:
                self.take(_nbytes(data), self._fds[fd], "pwrite")
            return real_pwrite(fd, data, offset)

        def os_fdopen(fd, *args, **kw):
            f = real_fdopen(fd, *args, **kw)
            path = self._fds.get(fd)
            return f if path is None else _CountedFile(f, self, path)

        def file_open(file, mode="r", *args, **kw):
            f = real_file_open(file, mode, *args, **kw)
            if any(c in mode for c in "wax+") and _is_under(file, self.root):
                return _CountedFile(f, self, os.fsdecode(file))
            return f

        for name, fn in (("open", os_open), ("close", os_close), ("write", os_write),
                         ("pwrite", os_pwrite), ("fdopen", os_fdopen)):  # fmt: skip
            monkeypatch.setattr(os, name, fn)
        monkeypatch.setattr(builtins, "open", file_open)
        monkeypatch.setattr(io, "open", file_open)

    def take(self, n: int, path: str, call: str = "write") -> None:
        with self._lock:
            if self.budget is not None and self.used + n > self.budget:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.used += n
            self.log.append((path, n, call))

    def bytes_before(self, name: str = "", call: str = "") -> int:
        """Bytes written before the first ``call`` to a file whose name contains ``name``."""
        total = 0
        for path, n, c in self.log:
            if name in os.path.basename(path) and call in c:
                return total
            total += n
        raise AssertionError(f"no {call or 'write'} to a file named *{name}*")


class ReadOnly:
    """Every write under ``root`` fails with EROFS, as on a read-only mount: opening for
    writing, creating folders, renaming, removing, changing modes."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def __init__(self, monkeypatch, root: Path):
        self.root = os.path.realpath(root)
        real = {n: getattr(os, n) for n in ("open", "mkdir", "replace", "rename", "unlink",
                                            "remove", "rmdir", "chmod", "truncate")}  # fmt: skip
        real_file_open = builtins.open

        def refuse(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

        def os_open(path, flags, mode=0o777, **kw):
            if flags & self.WRITE_FLAGS and _is_under(path, self.root):
                refuse(path)
            return real["open"](path, flags, mode, **kw)

        def os_mkdir(path, mode=0o777, **kw):
            if _is_under(path, self.root):
                if os.path.exists(path):  # what Linux says first, even on a read-only mount
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
                refuse(path)
            return real["mkdir"](path, mode, **kw)

        def guard(name: str) -> Callable:
            def fn(*paths, **kw):
                for p in paths[:2]:
                    if _is_under(p, self.root):
                        refuse(p)
                return real[name](*paths, **kw)

            return fn

        def file_open(file, mode="r", *args, **kw):
            if any(c in mode for c in "wax+") and _is_under(file, self.root):
                refuse(file)
            return real_file_open(file, mode, *args, **kw)

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "mkdir", os_mkdir)
        for name in ("replace", "rename", "unlink", "remove", "rmdir", "chmod", "truncate"):
            monkeypatch.setattr(os, name, guard(name))
        monkeypatch.setattr(builtins, "open", file_open)
        monkeypatch.setattr(io, "open", file_open)


@contextlib.contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """In this process, no file may grow past ``nbytes``: writes fail with EFBIG (SIGXFSZ, which
    would kill the process, is ignored). Only the soft limit changes, so it can be raised back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def _limit_file_size(nbytes: int) -> Callable[[], None]:
    """``preexec_fn`` for a subprocess: the same limit, set in the child only."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))

    return apply


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A real tmpfs of ``size`` bytes at ``path``; skips where mounting is not allowed."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; DiskBudget and RLIMIT_FSIZE cover this portably")
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                          str(path)], capture_output=True, text=True)  # fmt: skip
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode}); "
                    "DiskBudget and RLIMIT_FSIZE cover this portably")  # fmt: skip
    try:
        yield path
    finally:
        import gc

        gc.collect()  # drop memory maps of stores opened in the test, or the mount stays busy
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_read_only(path: Path) -> None:
    res = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot remount {path} read-only ({res.stderr.strip()})")


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def pages(folder: Path) -> int:
    """Pages ``folder`` takes on a tmpfs (each file rounds up to whole pages)."""
    return sum(-(-p.stat().st_size // PAGE) for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------
# Inputs: a tiny model and corpus


def small_model(path: Path, hidden: int = 6, layers: int = 1) -> LoadedModel:
    vocab = Vocab.from_text(CODE_SNIPPET)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=4, hidden_size=hidden, num_layers=layers)
    save_checkpoint(path, {"config": cfg.to_dict(), "vocab": list(vocab.chars),
                           "model": CharRNN(cfg).state_dict()})  # fmt: skip
    return load_model(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> LoadedModel:
    return small_model(tmp_path_factory.mktemp("model") / "m.pt")


@dataclass(frozen=True)
class TrainInputs:
    vocab: Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    model_cfg: ModelConfig

    def run(self, run_dir: Path, **kw) -> object:
        cfg = TrainConfig(seq_len=16, batch_size=4, max_steps=kw.pop("max_steps", 6),
                          eval_every=3, warmup_steps=2, device="cpu")  # fmt: skip
        return train(self.train_ids, self.val_ids, self.vocab, self.model_cfg, cfg, run_dir,
                     progress=False, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_training() -> TrainInputs:
    text = CODE_SNIPPET * 8
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    cut = len(ids) * 9 // 10
    mcfg = ModelConfig(vocab_size=len(vocab), embed_dim=16, hidden_size=16, num_layers=1)
    return TrainInputs(vocab, ids[:cut], ids[cut:], mcfg)


REC = dict(streams=2, warmup=8, chunk_len=64, progress=False)


def assert_disk_full(e: BaseException, *names: str) -> None:
    msg = str(e)
    assert "disk is full" in msg, msg
    for name in names:
        assert name in msg, msg


def assert_checkpoint_refused(msg: str, run: Path) -> None:
    """The first checkpoint that did not fit: best.pt (saved first when the evaluation
    improved) or last.pt; either way named, and said to be unchanged."""
    m = re.search(rf"cannot write {re.escape(str(run))}/(best|last)\.pt", msg)
    assert m, msg
    assert f"the previous {m.group(1)}.pt is unchanged" in msg, msg


# ----------------------------------------------------------------------------------------------
# (a) atomic writes


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("old")
    DiskBudget(monkeypatch, tmp_path, budget=100)
    with pytest.raises(WriteError) as ei:
        atomic_write_text(tmp_path / "notes.txt", "x" * 1000)
    assert ei.value.errno == errno.ENOSPC and isinstance(ei.value, OSError)
    assert_disk_full(ei.value, str(tmp_path / "notes.txt"), "the previous notes.txt is unchanged")
    assert "free some space" in str(ei.value)
    assert (tmp_path / "notes.txt").read_text() == "old"
    copy = pickle.loads(pickle.dumps(ei.value))  # crosses process boundaries intact
    assert type(copy) is WriteError and str(copy) == str(ei.value) and copy.errno == errno.ENOSPC
    # A new file: nothing half-written is left under its name or as a temp file.
    refused = pytest.raises(WriteError, match=r"no partial fresh\.bin was left behind")
    with refused, atomic_open(tmp_path / "fresh.bin") as f:
        f.write(b"a" * 60)  # fits
        f.write(b"b" * 60)  # the disk fills here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_atomic_write_past_the_file_size_limit(tmp_path):
    """The kernel's own EFBIG, through a buffered text file and through torch's zip writer."""
    (tmp_path / "a.txt").write_text("old")
    save_checkpoint(tmp_path / "c.pt", {"config": {}, "vocab": [], "model": {"w": torch.ones(4)}})
    with file_size_limit(50_000):
        with pytest.raises(WriteError) as ei:
            atomic_write_text(tmp_path / "a.txt", "x" * 200_000)
        with pytest.raises(WriteError) as ec:  # torch raises RuntimeError("unexpected pos ...")
            save_checkpoint(tmp_path / "c.pt", {"config": {}, "vocab": [],
                                                "model": {"w": torch.ones(100_000)}})  # fmt: skip
    for e, name in ((ei.value, "a.txt"), (ec.value, "c.pt")):
        assert e.errno == errno.EFBIG
        assert f"cannot write {tmp_path / name}" in str(e) and "file-size limit" in str(e)
        assert f"the previous {name} is unchanged" in str(e)
    assert (tmp_path / "a.txt").read_text() == "old"
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["model"]["w"], torch.ones(4))
    assert temp_files(tmp_path) == []


def test_short_write_without_errno_on_a_full_disk(tmp_path, monkeypatch):
    """numpy's ``tofile`` (``np.save`` into a real file) reports a short write as an OSError with
    no errno; on a disk with no room left that is a full disk, and the message says so."""
    x = tmp_path / "x.npy"
    x.write_bytes(b"old")
    with file_size_limit(50_000), pytest.raises(WriteError) as ei, atomic_open(x) as f:
        np.save(f, np.zeros(100_000))
    assert "requested and" in str(ei.value) and str(tmp_path / "x.npy") in str(ei.value)
    assert (tmp_path / "x.npy").read_bytes() == b"old" and temp_files(tmp_path) == []
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=4096))
    with file_size_limit(50_000), pytest.raises(WriteError) as ei, atomic_open(x) as f:
        np.save(f, np.zeros(100_000))
    assert ei.value.errno == errno.ENOSPC
    assert_disk_full(ei.value, str(tmp_path / "x.npy"), "the previous x.npy is unchanged")


def test_make_dir_names_the_folder(tmp_path, monkeypatch):
    ReadOnly(monkeypatch, tmp_path)
    with pytest.raises(WriteError, match=r"cannot create the folder .*/runs/a: the folder is on a "
                       r"read-only file system") as ei:  # fmt: skip
        make_dir(tmp_path / "runs" / "a")
    assert ei.value.errno == errno.EROFS
    assert make_dir(tmp_path) == tmp_path  # an existing folder is fine, even read-only


# ----------------------------------------------------------------------------------------------
# (b) a checkpoint saved over an existing one


def test_checkpoint_over_an_old_one_on_a_full_disk(tmp_path, monkeypatch, model):
    path = tmp_path / "best.pt"
    old = {"config": model.config.to_dict(), "vocab": list(model.vocab.chars),
           "model": model.model.state_dict(), "step": 7}  # fmt: skip
    save_checkpoint(path, old)
    before = path.read_bytes()
    budget = DiskBudget(monkeypatch, tmp_path, budget=len(before) // 2)
    with pytest.raises(WriteError) as ei:  # not torch's RuntimeError about stream positions
        save_checkpoint(path, {**old, "step": 8})
    assert isinstance(ei.value, LstmscopeError)
    assert_disk_full(ei.value, str(path), "the previous best.pt is unchanged")
    assert budget.used <= len(before) // 2
    assert path.read_bytes() == before and load_model(path).info["step"] == 7
    assert temp_files(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# (c) training when the disk fills mid-run


def test_training_when_the_disk_fills_after_the_first_evaluation(
    tmp_path, monkeypatch, tiny_training
):
    # Measure what the step-0 evaluation writes (vocab, config, last.pt, best.pt, log, curve).
    with monkeypatch.context() as m:
        probe = DiskBudget(m, tmp_path / "probe")
        tiny_training.run(tmp_path / "probe", _stop_at=0)
    step0 = probe.used
    # The same run on a disk with room for that and little more: the step-3 checkpoint, which
    # now also holds the optimiser state, does not fit.
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        DiskBudget(m, run, budget=step0 + 2048)
        with pytest.raises(WriteError) as ei:
            tiny_training.run(run)
    assert_disk_full(ei.value)
    assert_checkpoint_refused(str(ei.value), run)
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(run / name)["step"] == 0  # what was saved before still loads
    assert load_model(run).config == tiny_training.model_cfg
    assert temp_files(run) == []
    # Space freed: --resume continues from the last checkpoint to the end.
    result = tiny_training.run(run, resume=True)
    assert result.step == 6 and load_checkpoint(run / "last.pt")["step"] == 6


@pytest.mark.slow
def test_cli_training_past_the_file_size_limit(tmp_path):
    """The CLI as a user runs it, the kernel refusing to grow last.pt: one clear line, exit
    status 2, the step-0 checkpoints intact, and --resume carries on once there is room."""
    (tmp_path / "code.py").write_text(CODE_SNIPPET * 20)
    cmd = [sys.executable, "-m", "lstmscope", "-q", "train", "--data", str(tmp_path / "code.py"),
           "-o", str(tmp_path / "run"), "--hidden", "16", "--layers", "1", "--batch", "4",
           "--seq-len", "16", "--max-steps", "6", "--eval-every", "3", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Step-0 checkpoints hold the weights only (~45 kB); later ones add AdamW's two moments.
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                         preexec_fn=_limit_file_size(80_000))  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, res.stderr
    assert_checkpoint_refused(lines[0], tmp_path / "run")
    assert "file-size limit" in lines[0]
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(tmp_path / "run" / name)["step"] == 0
    assert temp_files(tmp_path / "run") == []
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 6


def test_training_on_a_full_tmpfs(tmp_path, tiny_training):
    probe = tmp_path / "probe"
    tiny_training.run(probe, _stop_at=0)  # the step-0 files, to size the disk
    step0_pages, ckpt_pages = pages(probe), -(-(probe / "last.pt").stat().st_size // PAGE)
    # Room for the step-0 files and half a checkpoint more: the step-3 last.pt (about 3x the
    # step-0 one) cannot be written beside the old one.
    with tmpfs(tmp_path / "disk", (step0_pages + ckpt_pages // 2 + 1) * PAGE) as disk:
        run = disk / "run"
        with pytest.raises(WriteError) as ei:
            tiny_training.run(run)
        assert ei.value.errno == errno.ENOSPC
        assert_disk_full(ei.value)
        assert_checkpoint_refused(str(ei.value), run)
        for name in ("best.pt", "last.pt"):
            assert load_checkpoint(run / name)["step"] == 0
        assert temp_files(run) == []


# ----------------------------------------------------------------------------------------------
# (d) recording when the disk fills


@pytest.fixture(scope="module")
def store_a(tmp_path_factory, model) -> Path:
    """A complete store, recorded before the disk fills; it must come out untouched."""
    path = tmp_path_factory.mktemp("disk") / "a"
    record(model, TEXT, path, **REC)
    return path


@pytest.fixture(scope="module")
def record_writes(tmp_path_factory, model) -> DiskBudget:
    """What recording TEXT writes, write by write (measured once)."""
    mp = pytest.MonkeyPatch()
    try:
        root = tmp_path_factory.mktemp("probe")
        budget = DiskBudget(mp, root)
        record(model, TEXT, root / "s", **REC)
    finally:
        mp.undo()
    return budget


def assert_arrays_equal(a: Path, b: Path) -> None:
    sa, sb = ActivationStore.open(a), ActivationStore.open(b)
    for li in sa.layers:
        for kind in sa.kinds:
            assert np.array_equal(sa.array(li, kind), sb.array(li, kind)), f"L{li}.{kind}"
    assert np.array_equal(sa.loss, sb.loss, equal_nan=True) and sa.text == sb.text


@pytest.mark.parametrize(
    "stage",
    ["arrays", "progress", "stats", "meta"],
    ids=["while-writing-activations", "at-the-progress-checkpoint", "at-the-statistics",
         "at-meta.json"],
)  # fmt: skip
def test_recording_when_the_disk_fills(tmp_path, monkeypatch, model, store_a, record_writes,
                                       stage):  # fmt: skip
    disk = tmp_path / "disk"
    shutil.copytree(store_a, disk / "a")
    before = tree_digest(disk / "a")
    total = record_writes.used
    budget = {
        "arrays": record_writes.bytes_before(call="pwrite") + 100,  # the activation rows
        "progress": record_writes.bytes_before("checkpoint.npz") + 100,
        "stats": record_writes.bytes_before("L0.h.npz") + 100,  # stats/L0.h.npz's temp file
        "meta": total - 200,  # everything but meta.json, the last file written
    }[stage]
    with monkeypatch.context() as m:
        DiskBudget(m, disk, budget=budget)
        with pytest.raises(LstmscopeError) as ei:
            record(model, TEXT, disk / "b", **REC)
    assert_disk_full(ei.value)
    if stage in ("stats", "meta"):
        assert str(disk / "b") in str(ei.value)
    assert tree_digest(disk / "a") == before  # the earlier store: not a byte changed
    ActivationStore.open(disk / "a")
    with pytest.raises(StoreError, match=r"incomplete store: .*rerun the same `lstmscope record`"):
        ActivationStore.open(disk / "b")
    # Space freed: the same command finishes the store, identical to an uninterrupted one.
    record(model, TEXT, disk / "b", **REC)
    assert_arrays_equal(disk / "a", disk / "b")


@pytest.mark.parametrize("stage", ["pwrite", "checkpoint.npz"])
def test_recording_disk_full_names_the_store(tmp_path, monkeypatch, model, record_writes, stage):
    before = record_writes.bytes_before(*(("", "pwrite") if stage == "pwrite" else (stage,)))
    with monkeypatch.context() as m:
        DiskBudget(m, tmp_path, budget=before + 100)
        with pytest.raises(LstmscopeError) as ei:
            record(model, TEXT, tmp_path / "b", **REC)
    assert_disk_full(ei.value, str(tmp_path / "b"))


def test_recording_past_the_file_size_limit_names_the_file(tmp_path, model):
    # The activation files are 1,000 x 6 x 2 = 12 kB: refused where numpy creates them.
    with file_size_limit(8_000), pytest.raises(LstmscopeError) as ei:
        record(model, TEXT, tmp_path / "b", **REC)
    assert str(tmp_path / "b") in str(ei.value)


def test_recording_past_the_file_size_limit_keeps_it_incomplete(tmp_path, model):
    """What holds today for the same fault: an error, and a store refused as incomplete."""
    with file_size_limit(8_000), pytest.raises((OSError, LstmscopeError)):
        record(model, TEXT, tmp_path / "b", **REC)
    with pytest.raises(StoreError, match=r"incomplete store"):
        ActivationStore.open(tmp_path / "b")


def test_recording_on_a_full_tmpfs(tmp_path, model, store_a):
    # Recording peaks at about 1.7x the finished store (the progress checkpoint holds the
    # running histograms): with one store on a disk of 2x, the second cannot finish; alone, it can.
    size = pages(store_a)
    with tmpfs(tmp_path / "disk", (2 * size + 16) * PAGE) as disk:
        shutil.copytree(store_a, disk / "a")  # an earlier store on the same disk
        before = tree_digest(disk / "a")
        # The free-space check refuses before writing anything...
        with pytest.raises(StoreError, match=r"the store needs about .* free; free some space"):
            record(model, TEXT, disk / "b", **REC)
        assert not (disk / "b" / "acts").exists()
        # ...and when the disk fills anyway (another program writing), the write says so.
        with pytest.MonkeyPatch.context() as m, pytest.raises(LstmscopeError) as ei:
            m.setattr("lstmscope.store.recorder.estimate_bytes", lambda *a, **k: 0)
            record(model, TEXT, disk / "b", **REC)
        assert_disk_full(ei.value, str(disk / "b"))
        assert tree_digest(disk / "a") == before
        ActivationStore.open(disk / "a")
        with pytest.raises(StoreError, match=r"incomplete store: .*rerun"):
            ActivationStore.open(disk / "b")
        shutil.rmtree(disk / "a")  # free space: the rerun finishes the store
        record(model, TEXT, disk / "b", **REC)
        assert ActivationStore.open(disk / "b").n == len(TEXT)


# ----------------------------------------------------------------------------------------------
# Read-only output folders


@dataclass(frozen=True)
class Writers:
    """Every kind of output a user can point at a folder."""

    model: LoadedModel
    run: Path  # a run directory with best.pt, for export-model
    training: TrainInputs


@pytest.fixture(scope="module")
def writers(tmp_path_factory, model, tiny_training) -> Writers:
    run = tmp_path_factory.mktemp("run")
    shutil.copy(model.source, run / "best.pt")
    return Writers(model, run, tiny_training)


WRITES: dict[str, Callable[[Writers, Path], object]] = {
    "checkpoint": lambda w, d: save_checkpoint(
        d / "best.pt",
        {
            "config": w.model.config.to_dict(),
            "vocab": list(w.model.vocab.chars),
            "model": w.model.model.state_dict(),
        },
    ),
    "store": lambda w, d: record(w.model, TEXT, d / "store", **REC),
    "corpus": lambda w, d: write_corpus(
        d / "corpus", [Document("a.py", CODE_SNIPPET * 4)], recipe="test"
    ),
    "export": lambda w, d: write_html(d / "neuron.html", "<p>hi</p>"),
    "export-model": lambda w, d: export_safetensors(w.run, d / "exported"),
    "train": lambda w, d: w.training.run(d / "run", max_steps=1),
}


def assert_refused(call: Callable[[], object], folder: Path, *words: str) -> None:
    """A clear error (ours, or an OSError naming the path) that names ``folder`` and says why;
    and nothing of the output appears."""
    with pytest.raises((LstmscopeError, OSError)) as ei:  # WriteError is both
        call()
    msg = str(ei.value)
    assert str(folder) in msg, msg
    assert any(w in msg.lower() for w in words), msg


def _earlier_files(folder: Path, model: LoadedModel) -> None:
    save_checkpoint(folder / "old.pt", {"config": model.config.to_dict(),
                                        "vocab": list(model.vocab.chars),
                                        "model": model.model.state_dict()})  # fmt: skip


@pytest.mark.parametrize("what", list(WRITES))
def test_read_only_folder_simulated(tmp_path, monkeypatch, writers, what):
    folder = tmp_path / "ro"
    folder.mkdir()
    _earlier_files(folder, writers.model)
    before = tree_digest(folder)
    with monkeypatch.context() as m:
        ReadOnly(m, folder)
        assert_refused(lambda: WRITES[what](writers, folder), folder, "read-only")
    assert tree_digest(folder) == before
    load_model(folder / "old.pt")


NOBODY = 65534


def run_as_nobody(check: Callable[[], None]) -> str:
    """Run ``check`` in a forked child that dropped root for uid/gid 65534: 'ok' or what failed.

    Root ignores permission bits, so this is how a root CI still tests chmod 0555. The child
    never returns into pytest; what it needs is imported first (it may not read root's files).
    """
    import safetensors.torch  # noqa: F401 - imported lazily by the writers
    import tqdm.auto  # noqa: F401

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = "ok"
        try:
            os.close(r)
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            except OSError as e:
                status = f"cannot drop root: {e}"
            else:
                check()
        except BaseException as e:
            status = f"{type(e).__name__}: {e}"
        finally:
            os.write(w, status.encode()[:60_000])
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    if out.startswith("cannot drop root"):
        pytest.skip(out)
    return out


@pytest.mark.parametrize("what", list(WRITES))
def test_read_only_folder_by_permissions(tmp_path, writers, what):
    """chmod 0555: as an ordinary user directly, as root in a child that became nobody."""
    as_root = os.geteuid() == 0
    if as_root and not hasattr(os, "fork"):
        pytest.skip("root ignores permission bits and cannot fork a non-root child here")
    # Root's pytest folders are private (0700): nobody needs a path it can walk.
    base = Path(tempfile.mkdtemp(prefix="lstmscope-ro-")) if as_root else tmp_path
    folder = base / "ro"
    try:
        base.chmod(0o755)
        run = base / "run"
        shutil.copytree(writers.run, run)
        run.chmod(0o755)  # copytree keeps the private 0700 of pytest's folder
        w = dataclasses.replace(writers, run=run)
        folder.mkdir()
        _earlier_files(folder, w.model)
        before = tree_digest(folder)
        folder.chmod(0o555)

        def check() -> None:
            assert_refused(lambda: WRITES[what](w, folder), folder, "permission")

        if as_root:
            out = run_as_nobody(check)
            assert out == "ok", out
        else:
            check()
        assert tree_digest(folder) == before
    finally:
        if folder.exists():
            folder.chmod(0o755)
        if as_root:
            shutil.rmtree(base, ignore_errors=True)


def test_read_only_tmpfs(tmp_path, writers):
    with tmpfs(tmp_path / "ro", 4 << 20) as folder:
        _earlier_files(folder, writers.model)
        before = tree_digest(folder)
        remount_read_only(folder)
        for what, write in WRITES.items():
            assert_refused(lambda write=write: write(writers, folder), folder, "read-only")
            assert tree_digest(folder) == before, what
        load_model(folder / "old.pt")


@pytest.mark.parametrize(
    ("args", "target"),
    [
        ("corpus build {src} -o {ro}/corpus", "corpus"),
        ("record {model} --data {src} -o {ro}/store --streams 2 --warmup 8", "store"),
        ("export-model {run} -o {ro}/exported", "exported"),
        ("train --data {src} -o {ro}/run --hidden 8 --layers 1 --batch 2 --seq-len 16 "
         "--max-steps 1 --device cpu", "run"),
    ],
    ids=["corpus", "record", "export-model", "train"],
)  # fmt: skip
def test_cli_read_only_folder(tmp_path, monkeypatch, capsys, writers, args, target):
    """One line on stderr naming the folder and saying it is read-only; a non-zero exit."""
    (tmp_path / "src.py").write_text(CODE_SNIPPET * 8)
    folder = tmp_path / "ro"
    folder.mkdir()
    fill = {"src": tmp_path / "src.py", "ro": folder, "model": writers.model.source,
            "run": writers.run}  # fmt: skip
    argv = ["-q", *args.format(**{k: str(v) for k, v in fill.items()}).split()]
    with monkeypatch.context() as m:
        ReadOnly(m, folder)
        rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert rc != 0 and len(lines) == 1, err
    assert str(folder / target) in lines[0] and "read-only" in lines[0].lower(), lines[0]
    assert list(folder.iterdir()) == []
