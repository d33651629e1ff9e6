"""Reading an activation store: ``ActivationStore`` opens one, checks it and serves its arrays.

Opening reads ``meta.json`` and the ``.npy`` headers only, and refuses a store that is
incomplete (recording was interrupted), damaged or of a newer format, saying what to do. The
files and their dtypes are listed in ``lstmscope.store.layout``; ``lstmscope.store.recorder``
writes them.

Activations are stored in a 16-bit block code (``lstmscope.store.encoding``: each block of
positions coded per unit relative to its own range; a decoded value is within ``7.8e-6`` of the
unit's range over the store plus ``6e-8`` of its magnitude (float32 rounding) plus ``6e-39``
(``encoding.error_bound``), where float16 lost 5e-4 of the range on counter cells); ``array``,
``neuron`` and ``window`` return float32 whatever the encoding. Statistics (``stats/``) are of
the float32 values (format 1 stores hold min, max and top/bottom values rounded to float16).
Format 1 stores (``acts/L*.npy`` float16, no ``runs.npy``, ``blocks.npy`` or ``.scale.npy``)
still open and read the same way.

The histogram grid of the statistics is in ``lstmscope.store.histograms``.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from lstmscope.errors import StoreError
from lstmscope.names import KINDS, Neuron, check_neuron
from lstmscope.store.encoding import (
    CODE_DTYPE,
    PARAM_DTYPE,
    BlockCodedArray,
    DecodedArray,
    Float16Array,
)
from lstmscope.store.histograms import hist_edges, histogram
from lstmscope.store.layout import (
    ACTS,
    ARRAY_DTYPES,
    BLOCKS,
    COLD,
    DOCUMENTS,
    DTYPES,
    FORMAT,
    IDS,
    JOB,
    LOSS,
    META,
    PRED_FILES,
    PROGRESS,
    QUANTILE_NAMES,
    QUANTILES,
    RUNS,
    TEXT,
    TOP_IDS,
    TOP_K,
    TOP_PROB,
    VERSION,
    act_path,
    hist_path,
    param_path,
    stats_path,
)
from lstmscope.text.vocab import Vocab

log = logging.getLogger(__name__)

INCOMPLETE = (
    "incomplete store: recording was interrupted; rerun the same `lstmscope record` command "
    "to resume"
)
# A store with meta.json was complete once: rerunning the same command would find it done and
# change nothing, so a damaged one needs --force.
DAMAGED = (
    "the store was changed or damaged after recording: record it again "
    "(`lstmscope record ... --force`)"
)

# ----------------------------------------------------------------------------------------------
# Reading .npy headers without reading data


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a .npy file; StoreError if it is not one."""
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except FileNotFoundError:
        raise StoreError(f"{path}: missing") from None
    except (ValueError, OSError) as e:
        raise StoreError(f"{path}: not a readable .npy file ({e})") from None
    if fortran:
        raise StoreError(f"{path}: stored column-major; the store expects time-major (C order)")
    return tuple(shape), np.dtype(dtype), offset


def check_npy(path: Path, shape: tuple[int, ...], dtype) -> None:
    """Refuse a file whose header or size does not match what meta.json promises.

    Reads the header only: the size comes from ``stat``, so this stays cheap for any N.
    """
    try:
        got_shape, got_dtype, offset = npy_header(path)
    except StoreError as e:  # in a store that has meta.json, it was complete once
        raise StoreError(f"{e}; {DAMAGED}") from None
    if got_shape != tuple(shape):
        raise StoreError(f"{path}: shape {got_shape}, but meta.json says {tuple(shape)}; {DAMAGED}")
    if got_dtype != np.dtype(dtype):
        raise StoreError(
            f"{path}: dtype {got_dtype}, but the store format needs {np.dtype(dtype)}; {DAMAGED}"
        )
    need = offset + int(np.prod(shape, dtype=np.int64)) * got_dtype.itemsize
    size = os.path.getsize(path)
    if size < need:
        raise StoreError(f"{path}: truncated ({size} bytes, needs {need}); {DAMAGED}")
    if size > need:  # np.save and open_memmap write exactly the header and the data
        raise StoreError(
            f"{path}: {size - need} bytes longer than its header says ({need}); {DAMAGED}"
        )


# ----------------------------------------------------------------------------------------------
# The store


def _read_meta(root: Path) -> dict:
    if not root.exists():
        raise StoreError(f"{root}: no such store")
    if not root.is_dir():
        raise StoreError(f"{root}: a store is a directory, this is a file")
    meta_file = root / META
    if meta_file.exists() and not meta_file.is_file():
        raise StoreError(f"{meta_file}: a folder, not a file; {DAMAGED}")
    if not meta_file.is_file():
        if any((root / p).exists() for p in (JOB, PROGRESS, ACTS, IDS)):
            raise StoreError(f"{root}: {INCOMPLETE}")
        raise StoreError(
            f"{root}: not an activation store (no meta.json); make one with `lstmscope record`"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{meta_file}: unreadable ({e}); {DAMAGED}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(
            f"{meta_file}: not an lstmscope store (no '{FORMAT}' marker); make one with "
            "`lstmscope record`"
        )
    if "version" not in meta:
        raise StoreError(f"{meta_file}: missing 'version'; {DAMAGED}")
    version = meta["version"]
    if not _is_int(version) or version < 1:
        raise StoreError(f"{meta_file}: bad format version {version!r}; {DAMAGED}")
    if version > VERSION:
        raise StoreError(
            f"{root}: written by a newer lstmscope (store format {version}; this version reads up "
            f"to {VERSION}); upgrade lstmscope or record the store again"
        )
    return meta


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)  # JSON true is not a count


def _validate_meta(root: Path, meta: dict) -> None:
    """Every field the reader trusts has the right type and agrees with the others.

    Each refusal ends with what to do (``DAMAGED``): a meta.json that lies was edited or damaged.
    """
    where = root / META

    def bad(problem: str) -> StoreError:
        return StoreError(f"{where}: {problem}; {DAMAGED}")

    for key in ("n", "model", "vocab", "layers", "kinds", "hidden_size", "dtype"):
        if key not in meta:
            raise bad(f"missing '{key}'")
    n, H, model = meta["n"], meta["hidden_size"], meta["model"]
    if not _is_int(n) or n < 1:
        raise bad(f"n must be a positive integer, not {n!r}")
    if not _is_int(H) or H < 1:
        raise bad(f"hidden_size must be a positive integer, not {H!r}")
    if meta["dtype"] != DTYPES.get(meta["version"]):
        formats = " and ".join(f"{d} stores (format {v})" for v, d in DTYPES.items())
        raise StoreError(
            f"{where}: dtype {meta['dtype']!r}; this version reads {formats}; {DAMAGED}"
        )
    if meta["version"] >= 2:
        for key in ("blocks", "runs"):
            if not _is_int(meta.get(key)) or meta[key] < 1:
                raise bad(f"{key} must be a positive integer, not {meta.get(key)!r}")
    if not isinstance(model, dict):
        raise bad(f"'model' must be the model config, not {model!r}"[:200])
    cell = model.get("cell")
    if cell not in KINDS:
        raise bad(f"unknown cell type {cell!r}")
    if model.get("hidden_size", H) != H:
        raise bad(f"hidden_size {H} disagrees with the model config ({model.get('hidden_size')})")
    kinds, layers = meta["kinds"], meta["layers"]
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS[cell] for k in kinds):
        raise bad(f"kinds {kinds!r} are not kinds of a {cell} layer")
    n_layers = model.get("num_layers", 0)
    if (
        not isinstance(layers, list)
        or not layers
        or any(not _is_int(li) or not 0 <= li < n_layers for li in layers)
    ):
        raise bad(f"layers {layers!r} do not fit a {n_layers}-layer model")
    vocab = meta["vocab"]
    if not isinstance(vocab, list) or not all(isinstance(c, str) for c in vocab):
        raise bad("'vocab' is not a list of characters")
    if _is_int(model.get("vocab_size")) and len(vocab) != model["vocab_size"]:
        raise bad(f"vocab has {len(vocab)} characters but the model has {model['vocab_size']}")
    docs = meta.get("documents")
    if docs is not None and (not _is_int(docs) or docs < 0):
        raise bad(f"documents must be a count or null, not {docs!r}")


class ActivationStore:
    """Read access to a recorded store. Opening reads meta.json and .npy headers only."""

    def __init__(self, root: Path, meta: dict):
        self.path = Path(root)
        self.meta = meta
        self.n: int = meta["n"]
        self.hidden_size: int = meta["hidden_size"]
        self.cell: str = meta["model"]["cell"]
        self.layers: tuple[int, ...] = tuple(meta["layers"])
        self.kinds: tuple[str, ...] = tuple(meta["kinds"])
        self._arrays: dict[str, np.ndarray] = {}
        self._decoded: dict[tuple[int, str], DecodedArray] = {}
        self._text: str | None = None
        self._stats = None

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> ActivationStore:
        root = Path(path)
        meta = _read_meta(root)
        _validate_meta(root, meta)
        store = cls(root, meta)
        store._check_files()
        return store

    def _check_files(self) -> None:
        n, H = self.n, self.hidden_size
        check_npy(self.path / IDS, (n,), ARRAY_DTYPES[IDS])
        check_npy(self.path / COLD, (n,), ARRAY_DTYPES[COLD])
        for name, (dtype, tail) in PRED_FILES.items():
            check_npy(self.path / name, (n, *tail), dtype)
        coded = self.meta["version"] >= 2
        if coded:
            check_npy(self.path / RUNS, (self.meta["runs"], 2), ARRAY_DTYPES[RUNS])
            check_npy(self.path / BLOCKS, (self.meta["blocks"] + 1,), ARRAY_DTYPES[BLOCKS])
        for li in self.layers:
            for kind in self.kinds:
                if coded:
                    check_npy(act_path(self.path, li, kind), (n, H), CODE_DTYPE)
                    shape = (self.meta["blocks"], 2, H)
                    check_npy(param_path(self.path, li, kind), shape, PARAM_DTYPE)
                else:
                    check_npy(act_path(self.path, li, kind), (n, H), np.float16)
                nb = len(hist_edges(kind)) - 1
                check_npy(hist_path(self.path, li, kind), (H, nb), np.int64)
                if not stats_path(self.path, li, kind).is_file():
                    raise StoreError(f"{stats_path(self.path, li, kind)}: missing; {DAMAGED}")
        text = self.path / TEXT
        if not text.is_file():
            raise StoreError(f"{text}: missing; {DAMAGED}")
        # UTF-8 spends 1 to 4 bytes a character: a size outside [n, 4n] cannot hold n of them.
        size = text.stat().st_size
        if not n <= size <= 4 * n:
            raise StoreError(
                f"{text}: {size} bytes cannot hold the {n} characters meta.json says; {DAMAGED}"
            )
        if self.meta.get("documents") is not None:
            check_npy(self.path / DOCUMENTS, (self.meta["documents"], 2), ARRAY_DTYPES[DOCUMENTS])

    def __repr__(self) -> str:
        return (
            f"ActivationStore({str(self.path)!r}, n={self.n}, cell={self.cell}, "
            f"layers={list(self.layers)}, kinds={''.join(self.kinds)}, H={self.hidden_size})"
        )

    # -- plain data ------------------------------------------------------------------------
    def _load(self, rel: str) -> np.ndarray:
        if rel not in self._arrays:
            self._arrays[rel] = np.load(self.path / rel, mmap_mode="r")
        return self._arrays[rel]

    @property
    def text(self) -> str:
        if self._text is None:
            path = self.path / TEXT
            try:
                text = path.read_bytes().decode("utf-8", errors="surrogatepass")
            except UnicodeDecodeError as e:
                raise StoreError(
                    f"{path}: not UTF-8 (byte {e.start} is {e.object[e.start : e.start + 1]!r}); "
                    f"{DAMAGED}"
                ) from None
            except OSError as e:
                raise StoreError(f"{path}: unreadable ({e}); {DAMAGED}") from None
            if len(text) != self.n:
                raise StoreError(
                    f"{path}: {len(text)} characters, but meta.json says "
                    f"{self.n}; the store was modified after recording: record it again "
                    "(`lstmscope record ... --force`)"
                )
            self._text = text
        return self._text

    @property
    def vocab(self) -> Vocab:
        return Vocab(tuple(self.meta["vocab"]))

    @property
    def ids(self) -> np.ndarray:
        return self._load(IDS)  # [N] int32

    @property
    def cold(self) -> np.ndarray:
        return self._load(COLD)  # [N] bool

    @property
    def loss(self) -> np.ndarray:
        return self._load(LOSS)  # [N] float32 bits

    @property
    def top_ids(self) -> np.ndarray:
        return self._load(TOP_IDS)  # [N, 5]

    @property
    def top_prob(self) -> np.ndarray:
        return self._load(TOP_PROB)  # [N, 5]

    @property
    def documents(self) -> np.ndarray | None:
        """``[D, 2]`` (start, stop) per document, or None when the text was one piece."""
        if self.meta.get("documents") is None:
            return None
        path = self.path / DOCUMENTS
        docs = np.load(path)  # [D, 2]; shape and dtype were checked at open
        if len(docs) and (
            (docs[:, 0] < 0).any() or (docs[:, 1] > self.n).any() or (docs[:, 1] < docs[:, 0]).any()
        ):
            raise StoreError(f"{path}: spans outside the text of {self.n} characters; {DAMAGED}")
        return docs

    def top_predictions(self, pos: int) -> list[tuple[str, float]]:
        """The model's five likeliest next characters after position ``pos``, with probabilities."""
        pos = self._check_pos(pos)
        chars = self.meta["vocab"]
        ids = self.top_ids[pos]
        if ((ids < 0) | (ids >= len(chars))).any():
            raise StoreError(
                f"{self.path / TOP_IDS}: ids {ids.tolist()} at position {pos} are "
                f"outside the vocab of {len(chars)}; {DAMAGED}"
            )
        return [(chars[int(i)], float(p)) for i, p in zip(ids, self.top_prob[pos], strict=True)]

    def _check_pos(self, pos) -> int:
        pos = int(pos)
        if not 0 <= pos < self.n:
            raise ValueError(f"position {pos} is outside the text (0..{self.n - 1})")
        return pos

    # -- neurons ---------------------------------------------------------------------------
    @property
    def neurons(self) -> list[str]:
        """Every neuron id, in layer, kind, unit order."""
        return [
            f"L{li}.{k}.{u}"
            for li in self.layers
            for k in self.kinds
            for u in range(self.hidden_size)
        ]

    def resolve(self, neuron: str | Neuron) -> Neuron:
        """The :class:`Neuron` for an id, or ``ValueError`` naming the layers, kinds and units
        this store holds (an LSTM store lists no GRU kinds)."""
        return check_neuron(neuron, self.layers, self.kinds, self.hidden_size)

    def _stream(self, layer: int, kind: str) -> None:
        if layer not in self.layers or kind not in self.kinds:
            raise ValueError(
                f"no L{layer}.{kind} in this store: layers {','.join(map(str, self.layers))}, "
                f"kinds {','.join(self.kinds)}"
            )

    def array(self, layer: int, kind: str) -> DecodedArray:
        """``[N, H]`` of one layer and kind: an array-like over the memory-mapped file whose
        indexing (``a[i:j]``, ``a[rows]``, ``a[:, unit]``, ``np.asarray(a)``) returns float32."""
        self._stream(layer, kind)
        key = (layer, kind)
        if key not in self._decoded:
            rel = act_path(Path(), layer, kind).as_posix()
            if self.meta["version"] >= 2:
                params = self._load(param_path(Path(), layer, kind).as_posix())
                arr = BlockCodedArray(self._load(rel), params, self.block_starts)
            else:
                arr = Float16Array(self._load(rel))
            self._decoded[key] = arr
        return self._decoded[key]

    @property
    def block_starts(self) -> np.ndarray:
        """``[K + 1]`` int64 (format 2): each coded block's first position, then N."""
        if "blocks" not in self._arrays:
            path = self.path / BLOCKS
            starts = np.load(path)  # shape and dtype were checked at open
            if starts[0] != 0 or starts[-1] != self.n or (np.diff(starts) <= 0).any():
                raise StoreError(f"{path}: not increasing from 0 to {self.n}; {DAMAGED}")
            self._arrays["blocks"] = starts
        return self._arrays["blocks"]

    @property
    def runs(self) -> np.ndarray:
        """``[R, 2]`` (start, stop) of the runs: spans read from a zero state, in text order.

        Format 1 stores did not keep them: there they are where the loss is NaN (no character
        precedes a run's start), which a diverged model's NaN losses would add to.
        """
        if "runs" not in self._arrays:
            path = self.path / RUNS
            if self.meta["version"] >= 2:
                runs = np.load(path)  # shape and dtype were checked at open
            else:
                starts = np.union1d([0], np.flatnonzero(np.isnan(self.loss)))
                runs = np.stack([starts, np.append(starts[1:], self.n)], axis=1)
            if runs[0, 0] != 0 or runs[-1, 1] != self.n or (runs[1:, 0] != runs[:-1, 1]).any():
                raise StoreError(f"{path}: runs do not tile the text 0..{self.n}; {DAMAGED}")
            self._arrays["runs"] = runs
        return self._arrays["runs"]

    def distance(self) -> np.ndarray:
        """``[N]`` int64: each position's distance from the start of its run (0 at the start)."""
        starts = np.zeros(self.n, dtype=np.int64)
        starts[self.runs[:, 0]] = self.runs[:, 0]
        return np.arange(self.n, dtype=np.int64) - np.maximum.accumulate(starts)

    def neuron(self, neuron: str | Neuron) -> np.ndarray:
        """One neuron over the whole text: float32 ``[N]``."""
        nrn = self.resolve(neuron)
        return self.array(nrn.layer, nrn.kind)[:, nrn.unit]

    def window(self, start: int, stop: int, neurons) -> np.ndarray:
        """float32 ``[stop - start, len(neurons)]``; ``stop`` is clipped to N like a slice."""
        start, stop = int(start), int(stop)
        if start < 0 or stop < start:
            raise ValueError(f"bad window {start}:{stop}: need 0 <= start <= stop")
        if start > self.n:
            raise ValueError(f"window start {start} is past the end of the text ({self.n})")
        stop = min(stop, self.n)
        if isinstance(neurons, (str, Neuron)):
            neurons = [neurons]
        parsed = [self.resolve(x) for x in neurons]
        out = np.empty((stop - start, len(parsed)), dtype=np.float32)
        groups: dict[tuple[int, str], list[int]] = {}
        for j, nrn in enumerate(parsed):
            groups.setdefault((nrn.layer, nrn.kind), []).append(j)
        for (li, kind), cols in groups.items():
            units = [parsed[j].unit for j in cols]
            out[:, cols] = self.array(li, kind)[start:stop, np.asarray(units)]
        return out

    # -- statistics ------------------------------------------------------------------------
    def stat_arrays(self, layer: int, kind: str) -> dict[str, np.ndarray]:
        """Raw per-neuron statistics of one layer and kind.

        ``count`` (warm positions), ``mean std min max`` ``[H]``, ``quantiles`` ``[7, H]`` at
        ``QUANTILES``, ``sat_left sat_right`` ``[H]`` (NaN unless a gate), ``top_pos top_val
        bottom_pos bottom_val`` ``[H, 50]`` (best first; -1 / NaN pad short texts),
        ``hist_counts`` ``[H, bins]`` and ``hist_edges`` ``[bins + 1]``.
        """
        self._stream(layer, kind)
        path = stats_path(self.path, layer, kind)
        if not zipfile.is_zipfile(path):  # else np.load takes it for a pickle and says so
            raise StoreError(f"{path}: not an .npz archive (truncated or overwritten); {DAMAGED}")
        try:
            with np.load(path) as z:
                out = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise StoreError(f"{path}: unreadable ({e}); {DAMAGED}") from None
        H = self.hidden_size
        for key, shape in (
            *((k, (H,)) for k in ("mean", "std", "min", "max", "sat_left", "sat_right")),
            ("quantiles", (len(QUANTILES), H)),
            *((k, (H, TOP_K)) for k in ("top_pos", "top_val", "bottom_pos", "bottom_val")),
        ):
            if key not in out:
                raise StoreError(f"{path}: no '{key}' array; {DAMAGED}")
            if out[key].shape != shape:
                raise StoreError(
                    f"{path}: '{key}' has shape {out[key].shape}, expected {shape}; {DAMAGED}"
                )
        out["hist_counts"] = self._load(hist_path(Path(), layer, kind).as_posix())
        out["hist_edges"] = hist_edges(kind)
        return out

    @property
    def stats(self):
        """``pandas.DataFrame``, one row per neuron (index: neuron id)."""
        if self._stats is None:
            import pandas as pd

            frames = []
            for li in self.layers:
                for kind in self.kinds:
                    s = self.stat_arrays(li, kind)
                    H = self.hidden_size
                    cols = {
                        "layer": np.full(H, li),
                        "kind": [kind] * H,
                        "unit": np.arange(H),
                        "mean": s["mean"],
                        "std": s["std"],
                        "min": s["min"],
                        "max": s["max"],
                    }
                    cols.update(zip(QUANTILE_NAMES, s["quantiles"], strict=True))
                    cols["sat_left"] = s["sat_left"]
                    cols["sat_right"] = s["sat_right"]
                    index = [f"L{li}.{kind}.{u}" for u in range(H)]
                    frames.append(pd.DataFrame(cols, index=pd.Index(index, name="neuron")))
            self._stats = pd.concat(frames)
        return self._stats

    def hist(self, neuron: str | Neuron, rows=None) -> tuple[np.ndarray, np.ndarray]:
        """``(counts [bins], edges [bins + 1])`` of one neuron over the warm positions.

        With ``rows`` (a bool mask ``[N]`` or position indices) the counts are of those rows
        only, on the same grid, cold rows included unless the mask leaves them out: so
        ``hist(n)[0] - hist(n, rows=on & ~store.cold)[0]`` is the histogram of the rest.
        """
        nrn = self.resolve(neuron)
        edges = hist_edges(nrn.kind)
        if rows is None:
            hist = self._load(hist_path(Path(), nrn.layer, nrn.kind).as_posix())
            counts = np.asarray(hist[nrn.unit])
            return counts, edges
        rows = np.asarray(rows)
        rows = rows.nonzero()[0] if rows.dtype == bool else rows
        return histogram(self.array(nrn.layer, nrn.kind)[rows, nrn.unit], nrn.kind), edges
