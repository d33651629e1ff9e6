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
from dataclasses import dataclass
from pathlib import Path

import torch

from interpret.errors import CheckpointError
from interpret.io import atomic_open
from interpret.model import CharRNN, ModelConfig
from interpret.vocab import Vocab

log = logging.getLogger(__name__)

FORMAT = "lstmscope-checkpoint"
VERSION = 1
DEMO_DIR = Path(__file__).parent / "demo"


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (plain values and tensors only) atomically."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint we wrote; anything else is refused with a message naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses arbitrary pickled objects: a foreign or malicious file.
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused, it holds objects other than tensors and plain values ({first}); "
            "only load checkpoints written by lstmscope"
        ) from None
    except Exception as e:  # torch raises many types on garbage (KeyError, RuntimeError, ...)
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e)[:120]}); it may be "
            "truncated by an interrupted copy: use another checkpoint (best.pt / last.pt) or retrain"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an lstmscope checkpoint (no '{FORMAT}' marker)")
    if data.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer lstmscope (format {data['version']})")
    for key in ("config", "vocab", "model"):
        if key not in data:
            raise CheckpointError(f"{path}: checkpoint is missing '{key}'")
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


def _build(config: ModelConfig, vocab: Vocab, state: dict, path: Path) -> CharRNN:
    if config.vocab_size != len(vocab):
        raise CheckpointError(
            f"{path}: vocab has {len(vocab)} characters but the model expects {config.vocab_size}; "
            "the vocab.json does not belong to this checkpoint"
        )
    model = CharRNN(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the config ({str(e)[:160]})") from None
    return model


def load_model(spec: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    path = resolve_model_path(spec)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = path.parent
        try:
            state = load_file(str(path))
            config = ModelConfig.from_dict(
                json.loads((folder / "config.json").read_text())["model"]
            )
            vocab = Vocab.load(folder / "vocab.json")
            info = (
                json.loads((folder / "info.json").read_text())
                if (folder / "info.json").is_file()
                else {}
            )
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: cannot load ({type(e).__name__}: {e})") from None
    else:
        data = load_checkpoint(path)
        try:
            config = ModelConfig.from_dict(data["config"])
            vocab = Vocab(tuple(data["vocab"]))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: bad config or vocab in checkpoint ({e})") from None
        state = data["model"]
        info = {k: data[k] for k in ("step", "best_val_bpc", "val_bpc", "train") if k in data}
    model = _build(config, vocab, state, path).to(device).eval()
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
    from safetensors.torch import save_file

    from interpret.io import atomic_write_text

    loaded = load_model(spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in loaded.model.state_dict().items()}
    tmp = out / ".model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(out / "model.safetensors")
    atomic_write_text(out / "config.json", json.dumps({"model": loaded.config.to_dict()}, indent=1))
    loaded.vocab.save(out / "vocab.json")
    info = {**loaded.info, **(extra_info or {}), "source_sha256": loaded.sha256}
    info.pop("train", None)
    atomic_write_text(out / "info.json", json.dumps(info, indent=1, default=str))
    return out / "model.safetensors"
