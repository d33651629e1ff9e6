"""Hostile files (issue #7, part 5): checkpoints and stores that are not ours, truncated, carrying
a pickle payload, or whose metadata lies. Each is refused with a message that names the file,
says what is wrong and what to do; none runs code or crashes with a raw library error.

Extends the spot checks in test_cli.py (truncated, foreign, pickle .pt through the CLI) and
test_store.py (a few lying meta.json fields, damaged acts/L*.npy) into a systematic sweep.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmscope import ActivationStore
from lstmscope.errors import CheckpointError, StoreError
from lstmscope.model.cells import CharRNN, ModelConfig
from lstmscope.model.checkpoint import (
    export_safetensors,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from lstmscope.store.recorder import record
from lstmscope.text.vocab import Vocab

TEXT = 'def f(x):\n    return [x, "y"]  # ok\n' * 20  # 720 characters
USE_ANOTHER = "use another checkpoint"
EXPORT_AGAIN = "export the model again"
RECORD_AGAIN = "record it again"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A valid checkpoint (1-layer LSTM, hidden 6) and its safetensors export beside it."""
    d = tmp_path_factory.mktemp("good")
    vocab = Vocab.from_text(TEXT)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=4, hidden_size=6, num_layers=1)
    save_checkpoint(d / "best.pt", {"config": cfg.to_dict(), "vocab": list(vocab.chars),
                                    "model": CharRNN(cfg).state_dict(), "step": 3})  # fmt: skip
    export_safetensors(d / "best.pt", d / "export")
    return d


@pytest.fixture(scope="module")
def payload(good) -> dict:
    return torch.load(good / "best.pt", weights_only=True)


def refused(call: Callable[[], object], error: type, path: Path, *words: str) -> str:
    """``call`` raises ``error``, naming ``path`` and saying each of ``words``."""
    with pytest.raises(error) as ei:
        call()
    msg = str(ei.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in: {msg}"
    assert "Traceback" not in msg and len(msg) < 600, msg  # one readable line
    return msg


# ----------------------------------------------------------------------------------------------
# Checkpoints: not ours, truncated, empty


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    for load in (load_checkpoint, load_model):
        refused(lambda load=load: load(path), CheckpointError, path, "unreadable checkpoint",
                "not a PyTorch file", USE_ANOTHER)  # fmt: skip


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.touch()
    refused(lambda: load_model(path), CheckpointError, path, "empty file (0 bytes)", USE_ANOTHER)


@pytest.mark.parametrize("keep", [1, 2, 10, 64, 0.25, 0.5, 0.9, -22, -1])
def test_truncated_checkpoint(tmp_path, good, keep):
    """Cut anywhere: inside the zip magic, the pickle, the tensor data, the central directory."""
    data = (good / "best.pt").read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path = tmp_path / "cut.pt"
    path.write_bytes(data[:n])
    msg = refused(lambda: load_model(path), CheckpointError, path, "unreadable checkpoint",
                  "truncated", USE_ANOTHER)  # fmt: skip
    assert "refused" not in msg  # damage is not mistaken for a malicious file


@pytest.mark.parametrize(
    ("obj", "holds"),
    [
        ({"a": 1}, "a dict of a"),
        ("state_dict", "a dict of embed.weight, layers.0.rnn.weight_ih_l0"),
        (torch.zeros(3, 2), "a bare tensor of shape [3, 2]"),
        ([1, 2, 3], "a list"),
        ({}, "an empty dict"),
        ({"format": "nanogpt", "model": {}}, "a dict of format, model"),
    ],
    ids=["dict", "bare-state-dict", "tensor", "list", "empty-dict", "other-format"],
)
def test_torch_file_that_is_not_ours(tmp_path, payload, obj, holds):
    path = tmp_path / "other.pt"
    torch.save(payload["model"] if obj == "state_dict" else obj, path)
    refused(lambda: load_model(path), CheckpointError, path, "not an lstmscope checkpoint", holds,
            "written by `lstmscope train`")  # fmt: skip


def test_a_folder_or_nothing(tmp_path, good):
    refused(lambda: load_checkpoint(good), CheckpointError, good, "a folder, not a checkpoint file",
            "best.pt")  # fmt: skip
    (tmp_path / "empty").mkdir()
    refused(lambda: load_model(tmp_path / "empty"), CheckpointError, tmp_path / "empty",
            "no best.pt, last.pt or model.safetensors")  # fmt: skip
    for load in (load_checkpoint, load_model):
        refused(lambda load=load: load(tmp_path / "nope.pt"), CheckpointError,
                tmp_path / "nope.pt", "no such")  # fmt: skip
    # a folder named like a checkpoint
    (tmp_path / "dir.pt").mkdir()
    refused(lambda: load_checkpoint(tmp_path / "dir.pt"), CheckpointError, tmp_path / "dir.pt",
            "a folder")  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Checkpoints: pickle payloads must never run


class Payload:
    """Unpickling this creates ``marker``: proof that the loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    "where",
    ["top-level", "inside-our-dict", "as-a-weight", "legacy-format", "plain-pickle",
     "plain-pickle-protocol-5"],
)  # fmt: skip
def test_pickle_payload_is_refused_unexecuted(tmp_path, payload, where):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    bomb = Payload(marker)
    if where == "top-level":
        torch.save(bomb, path)
    elif where == "inside-our-dict":
        torch.save({**payload, "step": bomb}, path)
    elif where == "as-a-weight":
        torch.save({**payload, "model": {**payload["model"], "head.bias": bomb}}, path)
    elif where == "legacy-format":  # torch's pre-1.6 format goes through another unpickler
        torch.save({**payload, "x": bomb}, path, _use_new_zipfile_serialization=False)
    else:  # not even a torch file; protocol 2 is what torch's own pickles use
        protocol = 5 if where.endswith("5") else 2
        path.write_bytes(pickle.dumps({"format": "lstmscope-checkpoint", "x": bomb}, protocol))
    words = (
        # torch's weights_only unpickler stops at protocol 5's first opcode, before any object
        ("unreadable checkpoint", "not a PyTorch file")
        if where.endswith("5")
        else ("refused", "objects other than tensors and plain values", "nothing in it was run",
              "only load checkpoints written by lstmscope")
    )  # fmt: skip
    for load in (load_checkpoint, load_model):
        refused(lambda load=load: load(path), CheckpointError, path, *words)
    assert not marker.exists()
    with contextlib.suppress(Exception):  # what a careless loader would do: the payload is live
        torch.load(path, weights_only=False)
    assert marker.exists()


# ----------------------------------------------------------------------------------------------
# Checkpoints whose contents lie


def _variant(payload: dict, **changes) -> dict:
    out = dict(payload)
    for k, v in changes.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v
    return out


def _cfg(payload: dict, **changes) -> dict:
    return {**payload["config"], **changes}


LIES: dict[str, tuple[Callable[[dict], dict], tuple[str, ...]]] = {
    "hidden-size": (lambda p: _variant(p, config=_cfg(p, hidden_size=8)),
                    ("weights do not fit the config", "hidden_size 8",
                     "layers.0.rnn.weight_ih_l0 is [24, 4] in the file, the config needs [32, 4]",
                     USE_ANOTHER)),
    "more-layers": (lambda p: _variant(p, config=_cfg(p, num_layers=2)),
                    ("weights do not fit the config", "missing layers.1.rnn.weight_ih_l0")),
    "other-cell": (lambda p: _variant(p, config=_cfg(p, cell="gru")),
                   ("weights do not fit the config", "the config needs [18, 4]")),
    "unknown-cell": (lambda p: _variant(p, config=_cfg(p, cell="transformer")),
                     ("bad model config", "cell must be one of lstm, gru, rnn", USE_ANOTHER)),
    "unknown-key": (lambda p: _variant(p, config=_cfg(p, n_heads=8)),
                    ("bad model config", "unknown model config keys: n_heads")),
    "missing-key": (lambda p: _variant(p, config={k: v for k, v in p["config"].items()
                                                  if k != "hidden_size"}),
                    ("weights do not fit the config", "hidden_size 256")),  # the default
    "config-not-dict": (lambda p: _variant(p, config="lstm"),
                        ("'config' is a str, not a dict", USE_ANOTHER)),
    "vocab-size": (lambda p: _variant(p, vocab=p["vocab"][:-2]),
                   ("vocab has", "but the model expects", "does not belong")),
    "vocab-not-chars": (lambda p: _variant(p, vocab=[1, 2, 3]),
                        ("the vocab is not a list of characters",)),
    "vocab-no-unknown": (lambda p: _variant(p, vocab=[*p["vocab"][1:], "\x00"]),
                         ("bad vocab", "unknown character")),
    "weights-missing": (lambda p: _variant(p, model={k: v for k, v in p["model"].items()
                                                     if not k.startswith("head")}),
                        ("missing head.weight, head.bias",)),
    "weights-extra": (lambda p: _variant(p, model={**p["model"], "adapter": torch.zeros(2)}),
                      ("unexpected adapter",)),
    "weights-not-tensor": (lambda p: _variant(p, model={**p["model"], "head.bias": [0.0] * 5}),
                           ("head.bias is a list, not a tensor",)),
    "weights-int": (lambda p: _variant(p, model={k: v.to(torch.int32)
                                                 for k, v in p["model"].items()}),
                    ("holds torch.int32, not floating-point weights",)),
    "weights-not-dict": (lambda p: _variant(p, model=torch.zeros(3)),
                         ("'model' is a bare tensor of shape [3], not a dict",)),
    "no-config": (lambda p: _variant(p, config=None), ("checkpoint is missing 'config'",)),
    "no-vocab": (lambda p: _variant(p, vocab=None), ("checkpoint is missing 'vocab'",)),
    "no-weights": (lambda p: _variant(p, model=None), ("checkpoint is missing 'model'",)),
    "future-version": (lambda p: _variant(p, version=2),
                       ("written by a newer lstmscope (format 2", "upgrade lstmscope")),
    "version-string": (lambda p: _variant(p, version="1"), ("bad checkpoint format version '1'",)),
    "version-bool": (lambda p: _variant(p, version=True), ("bad checkpoint format version True",)),
}  # fmt: skip


@pytest.mark.parametrize("lie", list(LIES))
def test_checkpoint_that_lies(tmp_path, payload, lie):
    change, words = LIES[lie]
    path = tmp_path / "lie.pt"
    torch.save(change(payload), path)
    refused(lambda: load_model(path), CheckpointError, path, *words)


def test_huge_config_is_refused_without_allocating(tmp_path, payload):
    """hidden_size 10**7 would ask for ~1.6 PB of weights: compared on the meta device first."""
    path = tmp_path / "huge.pt"
    torch.save(_variant(payload, config=_cfg(payload, hidden_size=10**7, embed_dim=10**7)), path)
    t0 = time.perf_counter()
    refused(lambda: load_model(path), CheckpointError, path, "weights do not fit the config")
    assert time.perf_counter() - t0 < 10
    torch.save(_variant(payload, config=_cfg(payload, num_layers=10**6)), path)
    t0 = time.perf_counter()
    refused(lambda: load_model(path), CheckpointError, path, "the config says 1000000 layers")
    assert time.perf_counter() - t0 < 10


# ----------------------------------------------------------------------------------------------
# safetensors exports


def _export(tmp_path: Path, good: Path) -> Path:
    d = tmp_path / "export"
    shutil.copytree(good / "export", d)
    return d


@pytest.mark.parametrize("cut", [0, 4, 8, 50, 0.5, -1])
def test_truncated_safetensors(tmp_path, good, cut):
    d = _export(tmp_path, good)
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut % len(data)])
    for spec in (d, f):
        refused(lambda spec=spec: load_model(spec), CheckpointError, f,
                "unreadable safetensors file", "truncated or damaged", EXPORT_AGAIN)  # fmt: skip


@pytest.mark.parametrize("what", ["random", "header-length-lies", "a-torch-file", "a-pickle"])
def test_corrupt_safetensors(tmp_path, good, what):
    d = _export(tmp_path, good)
    f = d / "model.safetensors"
    data = f.read_bytes()
    marker = tmp_path / "pwned"
    f.write_bytes({
        "random": np.random.default_rng(1).bytes(len(data)),
        "header-length-lies": struct.pack("<Q", 10**12) + data[8:],
        "a-torch-file": (good / "best.pt").read_bytes(),
        "a-pickle": pickle.dumps(Payload(marker)),
    }[what])  # fmt: skip
    refused(lambda: load_model(d), CheckpointError, f, "unreadable safetensors file")
    assert not marker.exists()


def _json(path: Path, data) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data))


SIDECARS: dict[str, tuple[Callable[[Path, dict], None], str, tuple[str, ...]]] = {
    "config-missing": (lambda d, c: (d / "config.json").unlink(), "config.json",
                       ("missing", "needs the config.json and vocab.json", EXPORT_AGAIN)),
    "config-invalid-json": (lambda d, c: _json(d / "config.json", "{"), "config.json",
                            ("unreadable", EXPORT_AGAIN)),
    "config-a-list": (lambda d, c: _json(d / "config.json", [1]), "config.json",
                      ("not a JSON object",)),
    "config-no-model": (lambda d, c: _json(d / "config.json", {}), "config.json",
                        ("has no 'model' settings",)),
    "config-hidden-lies": (lambda d, c: _json(d / "config.json", {"model": {**c, "hidden_size": 9}}),
                           "model.safetensors", ("weights do not fit the config", "hidden_size 9",
                                                 EXPORT_AGAIN)),
    "config-bad-cell": (lambda d, c: _json(d / "config.json", {"model": {**c, "cell": "xl"}}),
                        "config.json", ("bad model config", "cell must be one of")),
    "vocab-missing": (lambda d, c: (d / "vocab.json").unlink(), "vocab.json", ("missing",)),
    "vocab-not-ours": (lambda d, c: _json(d / "vocab.json", {"chars": ["a"]}), "vocab.json",
                       ("not an lstmscope vocab file",)),
    "vocab-short": (lambda d, c: _json(d / "vocab.json", {"format": "lstmscope-vocab",
                                                          "chars": ["\ufffd", "a"]}),
                    "model.safetensors", ("vocab has 2 characters but the model expects",)),
    "info-a-list": (lambda d, c: _json(d / "info.json", [1]), "info.json",
                    ("not a JSON object",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SIDECARS))
def test_safetensors_sidecar_files(tmp_path, good, payload, case):
    d = _export(tmp_path, good)
    change, named, words = SIDECARS[case]
    change(d, payload["config"])
    refused(lambda: load_model(d), CheckpointError, d / named, *words)


def test_untouched_export_loads(tmp_path, good):
    assert load_model(_export(tmp_path, good)).info.get("step") == 3


# ----------------------------------------------------------------------------------------------
# Stores


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    """A real store: 2-layer LSTM, hidden 6, all six kinds, 720 characters."""
    d = tmp_path_factory.mktemp("store")
    vocab = Vocab.from_text(TEXT)
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=4, hidden_size=6, num_layers=2)
    save_checkpoint(d / "m.pt", {"config": cfg.to_dict(), "vocab": list(vocab.chars),
                                 "model": CharRNN(cfg).state_dict()})  # fmt: skip
    record(load_model(d / "m.pt"), TEXT, d / "s", streams=2, warmup=8, progress=False)
    return d / "s"


@pytest.fixture
def damaged(store_dir, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(store_dir, dst)
    return dst


def edit_meta(root: Path, **changes) -> None:
    meta = json.loads((root / "meta.json").read_text())
    for k, v in changes.items():
        if v is ...:
            meta.pop(k)
        else:
            meta[k] = v
    (root / "meta.json").write_text(json.dumps(meta))


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size if size >= 0 else os.path.getsize(path) + size)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


N, H = len(TEXT), 6
META = "meta.json"

# name -> (damage, the file the message names, words it must say). All refused at open.
AT_OPEN: dict[str, tuple[Callable[[Path], None], str, tuple[str, ...]]] = {
    "meta-invalid-json": (lambda r: (r / META).write_text("{\"n\": 7"), META, ("unreadable",)),
    "meta-empty": (lambda r: (r / META).write_text(""), META, ("unreadable",)),
    "meta-not-utf8": (lambda r: (r / META).write_bytes(b"\xff\xfe{}"), META, ("unreadable",)),
    "meta-a-list": (lambda r: (r / META).write_text("[]"), META,
                    ("not an lstmscope store", "`lstmscope record`")),
    "meta-a-folder": (lambda r: ((r / META).unlink(), (r / META).mkdir()), META,
                      ("a folder, not a file",)),
    **{f"meta-missing-{k}": (lambda r, k=k: edit_meta(r, **{k: ...}), META, (f"missing '{k}'",))
       for k in ("n", "model", "vocab", "layers", "kinds", "hidden_size", "dtype", "version")},
    "n-bigger": (lambda r: edit_meta(r, n=N + 1), "ids.npy",
                 (f"shape ({N},), but meta.json says ({N + 1},)",)),
    "n-smaller": (lambda r: edit_meta(r, n=N - 100), "ids.npy",
                  (f"shape ({N},), but meta.json says ({N - 100},)",)),
    "n-a-string": (lambda r: edit_meta(r, n=str(N)), META, ("n must be a positive integer",)),
    "n-true": (lambda r: edit_meta(r, n=True), META, ("n must be a positive integer, not True",)),
    "n-zero": (lambda r: edit_meta(r, n=0), META, ("n must be a positive integer, not 0",)),
    "dtype-float32": (lambda r: edit_meta(r, dtype="float32"), META,
                      ("dtype 'float32'; this version reads float16 stores",)),
    "dtype-bfloat16": (lambda r: edit_meta(r, dtype="bfloat16"), META, ("dtype 'bfloat16'",)),
    "hidden-both-lie": (lambda r: edit_meta(r, hidden_size=7,
                                            model={**json.loads((r / META).read_text())["model"],
                                                   "hidden_size": 7}),
                        "acts/L0.h.npy", (f"shape ({N}, 6), but meta.json says ({N}, 7)",)),
    "hidden-true": (lambda r: edit_meta(r, hidden_size=True), META,
                    ("hidden_size must be a positive integer",)),
    "layers-beyond-model": (lambda r: edit_meta(r, layers=[0, 1, 2]), META,
                            ("do not fit a 2-layer model",)),
    "layers-a-string": (lambda r: edit_meta(r, layers="01"), META, ("do not fit",)),
    "layers-an-int": (lambda r: edit_meta(r, layers=1), META, ("do not fit",)),
    "layers-empty": (lambda r: edit_meta(r, layers=[]), META, ("do not fit",)),
    "model-more-layers": (lambda r: edit_meta(r, layers=[0, 1, 2], model={
                              **json.loads((r / META).read_text())["model"], "num_layers": 3}),
                          "acts/L2.h.npy", ("missing",)),
    "kinds-a-string": (lambda r: edit_meta(r, kinds="hc"), META, ("are not kinds of a lstm",)),
    "kinds-null": (lambda r: edit_meta(r, kinds=None), META, ("are not kinds of a lstm",)),
    "kinds-of-a-gru": (lambda r: edit_meta(r, kinds=["r", "z"]), META, ("not kinds of a lstm",)),
    "cell-lies": (lambda r: edit_meta(r, model={**json.loads((r / META).read_text())["model"],
                                                "cell": "gru"}), META, ("not kinds of a gru",)),
    "model-not-a-dict": (lambda r: edit_meta(r, model="lstm"), META,
                         ("'model' must be the model config",)),
    "vocab-short": (lambda r: edit_meta(r, vocab=["\ufffd", "a"]), META,
                    ("vocab has 2 characters but the model has",)),
    "vocab-not-chars": (lambda r: edit_meta(r, vocab=5), META, ("not a list of characters",)),
    "documents-without-file": (lambda r: edit_meta(r, documents=2), "documents.npy", ("missing",)),
    "documents-a-string": (lambda r: edit_meta(r, documents="all"), META,
                           ("documents must be a count or null",)),
    "version-future": (lambda r: edit_meta(r, version=3), "", (
        "written by a newer lstmscope (store format 3; this version reads up to 2)",
        "upgrade lstmscope or record the store again")),
    "version-a-string": (lambda r: edit_meta(r, version="1"), META, ("bad format version '1'",)),
    "version-zero": (lambda r: edit_meta(r, version=0), META, ("bad format version 0",)),
    **{f"truncated-{rel.replace('/', '-')}-{cut}": (
        lambda r, rel=rel, cut=cut: truncate(r / rel, cut), rel,
        ("truncated",) if cut else ("not a readable .npy file",))
       for rel in ("acts/L0.h.npy", "acts/L1.c.npy", "acts/L1.c.scale.npy", "ids.npy", "cold.npy",
                   "pred/loss.npy", "pred/top_ids.npy", "pred/top_prob.npy", "stats/L1.o.hist.npy")
       for cut in (0, 200, -1)},
    "header-cut": (lambda r: truncate(r / "acts/L0.f.npy", 40), "acts/L0.f.npy",
                   ("not a readable .npy file",)),
    "acts-longer": (lambda r: append(r / "acts/L0.h.npy", b"\0" * 64), "acts/L0.h.npy",
                    ("64 bytes longer than its header says",)),
    "acts-transposed": (lambda r: np.save(r / "acts/L0.h.npy", np.zeros((H, N), np.float16)),
                        "acts/L0.h.npy", (f"shape ({H}, {N}), but meta.json says ({N}, {H})",)),
    "acts-3d": (lambda r: np.save(r / "acts/L1.g.npy", np.zeros((N, H, 1), np.float16)),
                "acts/L1.g.npy", ("shape", "but meta.json says")),
    "acts-column-major": (lambda r: np.save(r / "acts/L0.i.npy",
                                            np.asfortranarray(np.zeros((N, H), np.float16))),
                          "acts/L0.i.npy", ("column-major",)),
    "acts-float32": (lambda r: np.save(r / "acts/L0.o.npy", np.zeros((N, H), np.float32)),
                     "acts/L0.o.npy", ("dtype float32, but the store format needs int16",)),
    "ids-int64": (lambda r: np.save(r / "ids.npy", np.zeros(N, np.int64)), "ids.npy",
                  ("dtype int64",)),
    "ids-big-endian": (lambda r: np.save(r / "ids.npy", np.zeros(N, ">i4")), "ids.npy",
                       ("dtype >i4",)),
    "ids-objects": (lambda r: np.save(r / "ids.npy", np.array([None] * N), allow_pickle=True),
                    "ids.npy", ("dtype object",)),
    "hist-wrong-bins": (lambda r: np.save(r / "stats/L0.c.hist.npy", np.zeros((H, 10), np.int64)),
                        "stats/L0.c.hist.npy", ("shape (6, 10)",)),
    "text-shorter": (lambda r: (r / "text.txt").write_text(TEXT[:-50]), "text.txt",
                     (f"{N - 50} bytes cannot hold the {N} characters meta.json says",)),
    "text-far-longer": (lambda r: (r / "text.txt").write_text(TEXT * 5), "text.txt",
                        ("bytes cannot hold",)),
    **{f"missing-{rel.replace('/', '-')}": (lambda r, rel=rel: (r / rel).unlink(), rel,
                                            ("missing",))
       for rel in ("acts/L1.o.npy", "acts/L1.o.scale.npy", "ids.npy", "cold.npy", "runs.npy",
                   "blocks.npy", "pred/loss.npy", "pred/top_ids.npy", "stats/L0.f.npz",
                   "stats/L0.f.hist.npy", "text.txt")},
    "text-a-folder": (lambda r: ((r / "text.txt").unlink(), (r / "text.txt").mkdir()),
                      "text.txt", ("missing",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(AT_OPEN))
def test_store_refused_at_open(damaged, case):
    damage, named, words = AT_OPEN[case]
    damage(damaged)
    msg = refused(lambda: ActivationStore.open(damaged), StoreError, damaged / named, *words)
    if case not in ("version-future", "meta-a-list"):  # the rest were damaged after recording
        assert RECORD_AGAIN in msg and "--force" in msg, msg


def test_size_checks_at_open_read_no_activation_data(damaged, monkeypatch):
    """Opening stays cheap: headers and sizes only, even to refuse a truncated array."""
    truncate(damaged / "acts/L1.h.npy", -2)

    def boom(*a, **k):
        raise AssertionError("open() must not load arrays")

    monkeypatch.setattr(np, "load", boom)
    monkeypatch.setattr(np, "memmap", boom)
    refused(lambda: ActivationStore.open(damaged), StoreError, damaged / "acts/L1.h.npy",
            "truncated")  # fmt: skip


def _stats_npz(root: Path, **changes) -> None:
    path = root / "stats/L1.o.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    with open(path, "wb") as f:  # np.savez would add ".npz" to a str path that lacks it
        np.savez(f, **arrays)


# Damage only reading the data can see: refused at first access, naming the file.
ON_ACCESS: dict[str, tuple[Callable[[Path], None], Callable, str, tuple[str, ...]]] = {
    "text-one-char-more": (lambda r: (r / "text.txt").write_text(TEXT + "x"),
                           lambda s: s.text, "text.txt",
                           (f"{N + 1} characters, but meta.json says {N}",)),
    "text-multibyte": (lambda r: (r / "text.txt").write_text("é" * (N // 2 + 1)),
                       lambda s: s.text, "text.txt", ("characters, but meta.json says",)),
    "text-not-utf8": (lambda r: (r / "text.txt").write_bytes(b"\xff" * N),
                      lambda s: s.text, "text.txt", ("not UTF-8 (byte 0 is b'\\xff')",)),
    "stats-garbage": (lambda r: (r / "stats/L1.o.npz").write_bytes(b"garbage"),
                      lambda s: s.stat_arrays(1, "o"), "stats/L1.o.npz",
                      ("not an .npz archive",)),
    "stats-truncated": (lambda r: truncate(r / "stats/L1.o.npz", 300),
                        lambda s: s.stats, "stats/L1.o.npz", ("not an .npz archive",)),
    "stats-pickle": (lambda r: _stats_npz(r, mean=np.array([None] * H)),
                     lambda s: s.stat_arrays(1, "o"), "stats/L1.o.npz",
                     ("unreadable", "allow_pickle")),
    "stats-missing-array": (lambda r: _stats_npz(r, mean=None),
                            lambda s: s.stats, "stats/L1.o.npz", ("no 'mean' array",)),
    "stats-wrong-shape": (lambda r: _stats_npz(r, quantiles=np.zeros((7, H + 1))),
                          lambda s: s.stat_arrays(1, "o"), "stats/L1.o.npz",
                          ("'quantiles' has shape (7, 7), expected (7, 6)",)),
    "top-ids-outside-vocab": (lambda r: np.save(r / "pred/top_ids.npy",
                                                np.full((N, 5), 999, np.int32)),
                              lambda s: s.top_predictions(10), "pred/top_ids.npy",
                              ("outside the vocab",)),
    "documents-outside-text": (lambda r: (edit_meta(r, documents=1),
                                          np.save(r / "documents.npy",
                                                  np.array([[5, N + 9]], np.int64))),
                               lambda s: s.documents, "documents.npy",
                               (f"spans outside the text of {N} characters",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ON_ACCESS))
def test_store_refused_on_first_access(damaged, case):
    damage, access, named, words = ON_ACCESS[case]
    damage(damaged)
    store = ActivationStore.open(damaged)  # cheap checks pass: the damage is inside the data
    msg = refused(lambda: access(store), StoreError, damaged / named, *words)
    assert RECORD_AGAIN in msg, msg


def test_untouched_store_still_opens(store_dir):
    s = ActivationStore.open(store_dir)
    assert s.n == N and s.text == TEXT and len(s.stats) == 2 * 6 * H
    assert s.documents is None and len(s.top_predictions(3)) == 5
