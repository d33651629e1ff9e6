"""Checkpoints: a dict of plain values saved atomically, loaded with ``weights_only=True``.

A run directory holds ``best.pt``, ``last.pt``, ``config.json`` and ``vocab.json``. The bundled
demo model (``interpret/demo/``) holds ``model.safetensors`` instead, so it loads with no pickle
at all. ``resolve_model`` accepts a run directory, a ``.pt``/``.safetensors`` file or ``demo``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lstmscope.disk import atomic_open, atomic_write_bytes, atomic_write_text
from lstmscope.errors import CheckpointError
from lstmscope.model.cells import CharRNN, ModelConfig
from lstmscope.text.vocab import Vocab

log = logging.getLogger(__name__)

FORMAT = "lstmscope-checkpoint"
VERSION = 1
DEMO_DIR = Path(__file__).parents[1] / "demo"


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (plain values and tensors only) atomically.

    A failed write (disk full, read-only folder) raises ``WriteError`` and leaves any earlier
    file at ``path`` as it was.
    """
    payload = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
USE_ANOTHER = "use another checkpoint (best.pt / last.pt) or retrain"
EXPORT_AGAIN = "export the model again with `lstmscope export-model`"


def _short(e: BaseException, limit: int = 160) -> str:
    """The informative part of a library's error message, on one line."""
    text = _ANSI.sub("", str(e)).strip()
    if "WeightsUnpickler error:" in text:  # torch's weights_only refusal: keep only the reason
        text = text.split("WeightsUnpickler error:", 1)[1]
        text = re.split(r"\n\s*\n|Check the documentation|\. Please use", text.strip())[0]
    text = re.split(r"\s*This is an internal miniz error", text)[0]
    text = " ".join(text.split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(data: object) -> str:
    """What a foreign checkpoint holds, in a few words."""
    if isinstance(data, dict):
        keys = [str(k) for k in list(data)[:3]]
        more = ", ..." if len(data) > 3 else ""
        return f"a dict of {', '.join(keys)}{more}" if keys else "an empty dict"
    if isinstance(data, torch.Tensor):
        return f"a bare tensor of shape {list(data.shape)}"
    name = type(data).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


# torch.save writes a zip archive; torch < 1.6 (and _use_new_zipfile_serialization=False) a
# pickle stream, which starts with the PROTO opcode.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_PICKLE_MAGIC = b"\x80"


def _check_magic(path: Path) -> None:
    """Refuse a file that is not a PyTorch file at all (a text file renamed ``.pt``) by its
    first bytes, before torch's loader fails on it with an unrelated error (``IndexError: pop
    from empty list``)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith((*_ZIP_MAGIC, _PICKLE_MAGIC)):
        return
    if any(m.startswith(head) for m in _ZIP_MAGIC):  # a zip cut inside its magic: truncated
        return
    if _looks_like_text(head):
        shown = head[:24].decode("utf-8", "replace").split("\n")[0]
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint: it is a text file (starting {shown!r}); give "
            "a best.pt / last.pt written by `lstmscope train`"
        )
    raise CheckpointError(
        f"{path}: unreadable checkpoint: not a PyTorch file (no zip or pickle header; it starts "
        f"{head[:8]!r}); {USE_ANOTHER}"
    )


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # only a character cut at the end of the sample
    return b"\x00" not in head


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint we wrote; anything else is refused with a message naming the file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path}: a folder, not a checkpoint file; give best.pt or last.pt inside it"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path}: empty file (0 bytes), truncated by an interrupted copy or a full disk; "
            f"{USE_ANOTHER}"
        )
    _check_magic(path)
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol: our error says enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        why = _short(e)
        if re.search(r"global|class", why, re.IGNORECASE):
            # weights_only met an object other than tensors and plain values and stopped before
            # building it: a foreign or malicious file. Nothing in it was run.
            raise CheckpointError(
                f"{path}: refused, it holds objects other than tensors and plain values ({why}); "
                "loading it could run code, so nothing in it was run; only load checkpoints "
                "written by lstmscope"
            ) from None
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({why}); it is not a PyTorch file, or it is truncated "
            f"or damaged (an interrupted copy, a full disk): {USE_ANOTHER}"
        ) from None
    except Exception as e:  # torch raises many types on garbage (KeyError, RuntimeError, ...)
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(e).__name__}: {_short(e, 120)}); it may be "
            f"truncated by an interrupted copy or a full disk: {USE_ANOTHER}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an lstmscope checkpoint (no '{FORMAT}' marker; it holds "
            f"{_describe(data)}); give a best.pt / last.pt written by `lstmscope train`"
        )
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: bad checkpoint format version {version!r}; {USE_ANOTHER}")
    if version > VERSION:
        raise CheckpointError(
            f"{path}: written by a newer lstmscope (format {version}; this version reads up to "
            f"{VERSION}); upgrade lstmscope"
        )
    for key in ("config", "vocab", "model"):
        if key not in data:
            raise CheckpointError(f"{path}: checkpoint is missing '{key}'; {USE_ANOTHER}")
    kinds = {"config": dict, "vocab": (list, tuple), "model": dict}
    for key, kind in kinds.items():
        if not isinstance(data[key], kind):
            raise CheckpointError(
                f"{path}: checkpoint's '{key}' is {_describe(data[key])}, not a "
                f"{'list' if key == 'vocab' else 'dict'}; the file is damaged: {USE_ANOTHER}"
            )
    return data


@dataclass(frozen=True)
class LoadedModel:
    model: CharRNN
    vocab: Vocab
    config: ModelConfig
    source: Path  # the file the weights came from
    sha256: str  # of that file, recorded in stores so they can say which model made them
    info: dict  # step, val bpc and anything else the checkpoint carried


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_model_path(spec: str | Path) -> Path:
    """``demo`` -> the bundled model; a run directory -> its best.pt (else last.pt)."""
    if str(spec) == "demo":
        path = DEMO_DIR / "model.safetensors"
        if not path.is_file():
            raise CheckpointError(
                "the bundled demo model is missing from this install; run 'make demo-model'"
            )
        return path
    p = Path(spec)
    if p.is_dir():
        for name in ("best.pt", "last.pt", "model.safetensors"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: no best.pt, last.pt or model.safetensors in this folder")
    if not p.exists():
        raise CheckpointError(f"{p}: no such run directory or checkpoint")
    return p


def _state_problems(state: object, want: dict[str, tuple[int, ...]]) -> str:
    """What is wrong with ``state`` as weights of shapes ``want`` ('' when nothing)."""
    if not isinstance(state, dict):
        return f"the weights are {_describe(state)}, not a name -> tensor mapping"
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        return f"{bad[0]} is {_describe(state[bad[0]])}, not a tensor"
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}")
        return "; ".join(parts)
    for k, shape in want.items():
        got = tuple(state[k].shape)
        if got != shape:
            return f"{k} is {list(got)} in the file, the config needs {list(shape)}"
        if not state[k].is_floating_point():
            return f"{k} holds {state[k].dtype}, not floating-point weights"
    return ""


def _build(
    config: ModelConfig, vocab: Vocab, state: object, path: Path, todo: str = USE_ANOTHER
) -> CharRNN:
    if config.vocab_size != len(vocab):
        raise CheckpointError(
            f"{path}: vocab has {len(vocab)} characters but the model expects {config.vocab_size}; "
            f"the vocab does not belong to these weights: {todo}"
        )
    # Compare shapes before allocating anything: a config that lies (hidden_size 10**6) must be
    # refused, not allocated. On the meta device a model has shapes but no memory.
    n_tensors = len(state) if isinstance(state, dict) else 0
    if config.num_layers > n_tensors:  # each layer holds several tensors: cheap bound first
        problem = (
            f"the config says {config.num_layers} layers but the file holds {n_tensors} tensors"
        )
    else:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in CharRNN(config).state_dict().items()}
        problem = _state_problems(state, want)
    if problem:
        c = config
        raise CheckpointError(
            f"{path}: weights do not fit the config ({c.cell}, num_layers {c.num_layers}, hidden_size "
            f"{c.hidden_size}, embed_dim {c.embed_dim}, vocab {c.vocab_size}): {problem}; the file "
            f"is damaged or its config was edited: {todo}"
        )
    model = CharRNN(config)
    model.load_state_dict(state)
    return model


def _config(data: object, where: Path, todo: str = USE_ANOTHER) -> ModelConfig:
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{where}: the model config is {_describe(data)}, not a dict of settings; {todo}"
        )
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: bad model config ({e}); {todo}") from None


def _vocab(chars: object, where: Path, todo: str = USE_ANOTHER) -> Vocab:
    if not isinstance(chars, (list, tuple)) or not all(isinstance(c, str) for c in chars):
        raise CheckpointError(f"{where}: the vocab is not a list of characters; {todo}")
    try:
        return Vocab(tuple(chars))
    except ValueError as e:
        raise CheckpointError(f"{where}: bad vocab ({e}); {todo}") from None


def _json_beside(model_file: Path, name: str, required: bool = True) -> dict:
    """``config.json`` / ``vocab.json`` / ``info.json`` next to a model.safetensors, as a dict."""
    path = model_file.parent / name
    if not path.is_file():
        if not required:
            return {}
        raise CheckpointError(
            f"{path}: missing; {model_file.name} needs the config.json and vocab.json written "
            f"beside it: {EXPORT_AGAIN}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e}); {EXPORT_AGAIN}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds {_describe(data)}, not a JSON object; {EXPORT_AGAIN}")
    return data


def load_model(spec: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    path = resolve_model_path(spec)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path}: unreadable safetensors file ({_short(e)}); it is truncated or damaged "
                f"(an interrupted copy, a full disk) or not a safetensors file: copy it again or "
                f"{EXPORT_AGAIN}"
            ) from None
        config_file = path.parent / "config.json"
        config_data = _json_beside(path, "config.json")
        if "model" not in config_data:
            raise CheckpointError(f"{config_file}: has no 'model' settings; {EXPORT_AGAIN}")
        config = _config(config_data["model"], config_file, EXPORT_AGAIN)
        vocab_file = path.parent / "vocab.json"
        vocab_data = _json_beside(path, "vocab.json")
        if vocab_data.get("format") != "lstmscope-vocab":
            raise CheckpointError(f"{vocab_file}: not an lstmscope vocab file; {EXPORT_AGAIN}")
        vocab = _vocab(vocab_data.get("chars"), vocab_file, EXPORT_AGAIN)
        info = _json_beside(path, "info.json", required=False)
        todo = EXPORT_AGAIN
    else:
        data = load_checkpoint(path)
        config = _config(data["config"], path)
        vocab = _vocab(data["vocab"], path)
        state = data["model"]
        info = {k: data[k] for k in ("step", "best_val_bpc", "val_bpc", "train") if k in data}
        todo = USE_ANOTHER
    model = _build(config, vocab, state, path, todo).to(device).eval()
    return LoadedModel(model, vocab, config, path, file_sha256(path), info)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError("--device cuda was asked for but no CUDA GPU is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise CheckpointError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def export_safetensors(
    spec: str | Path, out_dir: str | Path, extra_info: dict | None = None
) -> Path:
    """Package a trained model pickle-free: ``model.safetensors`` + ``config.json`` +
    ``vocab.json`` + ``info.json`` (how the bundled demo model ships)."""
    from safetensors.torch import save

    loaded = load_model(spec)
    out = Path(out_dir)
    state = {k: v.detach().contiguous().cpu() for k, v in loaded.model.state_dict().items()}
    # Serialised in memory (models we export are a few MB), then written atomically: a full
    # disk leaves no half file and no temp file behind.
    atomic_write_bytes(out / "model.safetensors", save(state))
    atomic_write_text(out / "config.json", json.dumps({"model": loaded.config.to_dict()}, indent=1))
    loaded.vocab.save(out / "vocab.json")
    info = {**loaded.info, **(extra_info or {}), "source_sha256": loaded.sha256}
    info.pop("train", None)
    atomic_write_text(out / "info.json", json.dumps(info, indent=1, default=str))
    return out / "model.safetensors"
