"""Record every activation of a model over a text into an activation store.

``record`` checks what the output folder already holds (this recording, finished: nothing to
do; interrupted: resume it; anything else: refuse, or clear it with ``force``), opens or creates
the store's files (``lstmscope.store.layout``), runs the recording pass
(``lstmscope.store.chunks``) and writes the statistics, then ``meta.json``.

Interruption: the store directory holds ``record.json`` (what is being recorded) from the start
and ``progress/checkpoint.npz`` (chunks done, model state, statistics so far) every
``checkpoint_seconds``, written after the arrays are synced. Rerunning the same command resumes
from the checkpoint and produces the same store as an uninterrupted run; ``meta.json`` is written
last, so a store without it is refused by ``ActivationStore.open``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lstmscope import __version__
from lstmscope.disk import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    folder_lock,
    make_dir,
    remove_stale_temps,
    temp_owner,
)
from lstmscope.errors import StoreError
from lstmscope.model.checkpoint import LoadedModel
from lstmscope.model.plan import StreamPlan, plan_streams
from lstmscope.model.trace import check_selection
from lstmscope.store.chunks import ChunkLoop, Recording, StoreFiles, read_checkpoint
from lstmscope.store.encoding import PARAM_DTYPE, block_layout
from lstmscope.store.histograms import hist_edges
from lstmscope.store.layout import (
    ACTS,
    ARRAY_DTYPES,
    BLOCKS,
    COLD,
    DOCUMENTS,
    DTYPE,
    FORMAT,
    IDS,
    JOB,
    LOCK,
    META,
    PRED,
    PROGRESS,
    QUANTILES,
    RUNS,
    SAT_HIGH,
    SAT_LOW,
    STATS,
    STORE_FILES,
    TEXT,
    TOP_K,
    VERSION,
    hist_path,
    stats_path,
)
from lstmscope.store.streams import choose_streams

log = logging.getLogger(__name__)

CHUNK_BUDGET = 64 << 20  # bytes of float32 activations per layer and chunk: bounds memory


@dataclass(frozen=True)
class RecordSummary:
    path: Path
    n: int  # characters recorded
    bytes: int  # store size on disk
    unknown: int  # characters unseen in training (mapped to the unknown id)
    streams: int
    warmup: int
    cold: int  # positions left out of the statistics
    seconds: float  # wall time of this call
    chars_per_s: float  # recording speed of this call (0 when nothing was recorded)
    resumed_from: int  # characters already done by an interrupted run (0: a fresh start)
    already_complete: bool  # the store already held exactly this recording


def default_chunk_len(streams: int, hidden_size: int, kinds: int = 6) -> int:
    """Positions per stream and chunk: one layer's float32 kinds stay within ``CHUNK_BUDGET``."""
    per_position = 4 * hidden_size * max(kinds, 2)
    t = CHUNK_BUDGET // (per_position * max(streams, 1))
    return int(min(4096, max(32, t)))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def estimate_bytes(
    n: int, n_arrays: int, hidden_size: int, hist_bins: int = 0, blocks: int = 0
) -> int:
    """Peak disk use: activations (codes, and a centre and scale per block and unit), ids, cold,
    predictions, text; and per array the statistics with their histogram, twice (the progress
    checkpoint holds a copy while they are written), which is what dominates a small store."""
    per_char = n_arrays * hidden_size * 2 + 4 + 1 + 4 + 5 * 4 + 5 * 2 + 4
    scales = n_arrays * blocks * hidden_size * 2 * PARAM_DTYPE.itemsize
    return n * per_char + scales + 2 * n_arrays * hidden_size * (hist_bins + 4 * TOP_K + 16) * 8


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _job(loaded: LoadedModel, text_hash: str, n: int, plan: StreamPlan, layers, kinds, docs):
    return {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint_sha256": loaded.sha256,
        "text_sha256": text_hash,
        "n": n,
        "streams": plan.streams,
        "warmup": plan.warmup,
        "chunk_len": plan.chunk_len,
        "layers": list(layers),
        "kinds": list(kinds),
        "documents_sha256": None
        if docs is None
        else hashlib.sha256(np.ascontiguousarray(docs).tobytes()).hexdigest(),
    }


def _diff(a: dict, b: dict) -> str:
    names = {
        "checkpoint_sha256": "model",
        "text_sha256": "text",
        "n": "text length",
        "documents_sha256": "documents",
    }
    keys = [k for k in a.keys() | b.keys() if a.get(k) != b.get(k)]
    return ", ".join(sorted(names.get(k, k) for k in keys)) or "nothing"


def _dir_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def _store_file(name: str) -> bool:
    """A store's own file, or the temp file of an atomic write of one."""
    return name in STORE_FILES or temp_owner(name) in STORE_FILES


def _clear_store(root: Path) -> None:
    """Remove a store's own files; refuse a folder that holds anything else."""
    foreign = [p.name for p in root.iterdir() if not _store_file(p.name)]
    if foreign:
        raise StoreError(
            f"{root} holds files that are not part of a store ({', '.join(sorted(foreign)[:3])}); "
            "it was not touched: choose another output folder"
        )
    for name in STORE_FILES:
        if name == LOCK:  # held by this process while it records
            continue
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _normalize_documents(documents, n: int) -> np.ndarray | None:
    if documents is None:
        return None
    docs = np.asarray(sorted((int(a), int(b)) for a, b in documents), dtype=np.int64).reshape(-1, 2)
    bad = (docs[:, 0] < 0) | (docs[:, 1] > n) | (docs[:, 1] < docs[:, 0])
    if bad.any():
        a, b = docs[bad.argmax()]
        raise StoreError(f"document ({a}, {b}) does not lie within the text of {n} characters")
    return docs


def record(
    loaded: LoadedModel,
    text: str,
    out: str | Path,
    *,
    documents: Sequence[tuple[int, int]] | None = None,
    streams: int | None = None,
    warmup: int | None = None,
    kinds: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    chunk_len: int | None = None,
    force: bool = False,
    progress: bool = True,
    checkpoint_seconds: float = 60.0,
    hook: Callable[[int], None] | None = None,
    _accelerator_path: bool = False,
) -> RecordSummary:
    """Record ``text`` through ``loaded``'s model into the store folder ``out``.

    ``streams`` contiguous parts of the text are read in parallel, each from a zero state (and
    the state is reset at every document start); the first ``warmup`` characters of each are
    marked cold and left out of the statistics. ``streams=1`` is the exact single pass. Not
    given, both are chosen from the text; at least half of the positions must stay warm
    (:func:`lstmscope.store.streams.choose_streams`).
    ``kinds``/``layers`` default to all. ``device`` defaults to where the model is.

    Rerunning with the same inputs resumes an interrupted recording, or returns at once when the
    store is complete; other inputs are refused unless ``force``. ``hook(chunk)`` is called after
    each chunk (tests use it to interrupt). ``_accelerator_path`` (tests) takes, on CPU, the road
    a GPU takes: the fused kernel plus the rebuild, and the statistics inline.
    """
    t_start = time.perf_counter()
    root = Path(out)
    model = loaded.model
    cfg = loaded.config
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    if next(model.parameters()).device != dev:
        model = copy.deepcopy(model).to(dev)
    n = len(text)
    if n == 0:
        raise StoreError("nothing to record: the text is empty")
    try:
        layers, kinds = check_selection(model, layers, kinds)
    except ValueError as e:
        raise StoreError(str(e)) from None
    H = cfg.hidden_size
    docs = _normalize_documents(documents, n)
    streams, warmup = choose_streams(n, streams, warmup, None if docs is None else docs.tolist())
    chunk_len = chunk_len or default_chunk_len(streams, H, len(kinds))
    plan = plan_streams(n, streams, chunk_len, warmup, None if docs is None else docs.tolist())
    th = text_sha256(text)
    job = _job(loaded, th, n, plan, layers, kinds, docs)
    rec = Recording(
        loaded, model, dev, text, root, plan, job, layers, kinds, docs, progress,
        checkpoint_seconds, hook, t_start, _accelerator_path,
    )  # fmt: skip

    # -- what is already there --------------------------------------------------------------
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root} is a file; choose a folder for the store")
    if root.is_dir():
        foreign = [p.name for p in root.iterdir() if not _store_file(p.name)]
        if foreign:
            raise StoreError(
                f"{root} exists and is not an lstmscope store (it holds "
                f"{', '.join(sorted(foreign)[:3])}); choose another output folder"
            )
    make_dir(root)
    busy = f"another `lstmscope record` is writing to {root} right now"
    with folder_lock(root, busy, StoreError):
        # A run killed mid-write left them; progress/ and stats/ hold only our files.
        remove_stale_temps(root, STORE_FILES)
        for folder in (root / PROGRESS, root / STATS):
            remove_stale_temps(folder)
        done = _settle_existing(rec, force)
        if done is not None:
            return done
        return _record_locked(rec)


def _settle_existing(rec: Recording, force: bool) -> RecordSummary | None:
    """Make way for ``rec`` in its (locked) folder: the summary when the folder already holds
    this finished recording; else None, once the folder holds nothing or an interrupted run of
    this recording (another one is refused unless ``force``, then cleared)."""
    root, n = rec.root, rec.plan.n
    if (root / META).is_file():
        try:
            m = json.loads((root / META).read_text(encoding="utf-8"))
            old_job = m.get("record", {}).get("job", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            m, old_job = {}, {}
        if old_job == rec.job and not force:
            log.info("%s already holds this recording; nothing to do", root)
            return RecordSummary(
                root, n, _dir_size(root), int(m.get("unknown_chars", 0)), rec.plan.streams,
                rec.plan.warmup, int(m.get("cold", 0)), time.perf_counter() - rec.t_start, 0.0,
                n, True,
            )  # fmt: skip
        if not force:
            raise StoreError(
                f"{root} already holds a recording that differs in {_diff(old_job, rec.job)}; "
                "use --force to replace it, or choose another output folder"
            )
        _clear_store(root)
    elif (root / JOB).is_file():
        try:
            old_job = json.loads((root / JOB).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old_job = {}
        if old_job != rec.job:
            if not force:
                raise StoreError(
                    f"{root} holds an interrupted recording that differs in "
                    f"{_diff(old_job, rec.job)}; rerun that command to finish it, use --force "
                    "to start over, or choose another output folder"
                )
            _clear_store(root)
    else:
        _clear_store(root)  # leftovers of a run killed before it wrote record.json
    return None


def _record_locked(rec: Recording) -> RecordSummary:
    """Record into ``rec.root``, locked and holding nothing but this recording's files."""
    plan = rec.plan
    # One block of the encoding per stream and chunk: its centre and scale go to row
    # block_of[k, b] of each .scale.npy, in text order.
    block_starts, block_of = block_layout(plan.start, plan.length, plan.n)
    n_blocks = len(block_starts) - 1
    ckpt, files = _resumable(rec, n_blocks)
    fresh = ckpt is None
    if fresh:
        _start_over(rec, n_blocks)
    unknown = rec.loaded.vocab.count_unknown(rec.text)
    if unknown:
        log.warning(
            "%d of %d characters were never seen in training; they map to the unknown id",
            unknown,
            plan.n,
        )
    cold = plan.cold()  # at most half: lstmscope.store.streams.choose_streams saw to it
    ids = _write_inputs(rec, cold, block_starts, fresh)
    if fresh:  # zero-filled sparse files, written chunk by chunk
        files = StoreFiles.open(rec, n_blocks, create=True)
    loop = ChunkLoop(rec, files, ids, block_of)
    start_chunk, state = loop.resume(ckpt)
    done_chars = int(plan.length[:start_chunk].sum())
    if not fresh:
        log.info("resuming %s at character %d of %d", rec.root, done_chars, plan.n)
    rec_s = loop.run(start_chunk, state, done_chars)

    # -- finish: statistics, then meta.json last -------------------------------------------------
    for (li, kind), st in loop.stats.items():
        members, counts = st.finalize()
        with atomic_open(stats_path(rec.root, li, kind)) as fh:
            np.savez(fh, **members)
        with atomic_open(hist_path(rec.root, li, kind)) as fh:
            np.save(fh, counts)
    n_cold = int(cold.sum())
    meta = _meta(rec, unknown, n_cold, n_blocks, rec_s)
    atomic_write_text(rec.root / META, json.dumps(meta, indent=1))
    # .lock stays: unlinking a lock while holding it lets two later runs each lock their own.
    for name in (PROGRESS, JOB):
        p = rec.root / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
    size = _dir_size(rec.root)
    recorded = plan.n - done_chars
    summary = RecordSummary(
        rec.root, plan.n, size, unknown, plan.streams, plan.warmup, n_cold,
        time.perf_counter() - rec.t_start, recorded / rec_s if rec_s > 0 else 0.0, done_chars,
        False,
    )  # fmt: skip
    log.info(
        "recorded %s: %s", rec.root, json.dumps({k: str(v) for k, v in asdict(summary).items()})
    )
    return summary


def _resumable(rec: Recording, n_blocks: int) -> tuple[dict | None, StoreFiles | None]:
    """An interrupted run's checkpoint and its files, open to go on writing; or (None, None)."""
    ckpt = read_checkpoint(rec.root, rec.job) if (rec.root / JOB).is_file() else None
    if ckpt is None:
        return None, None
    try:
        return ckpt, StoreFiles.open(rec, n_blocks, create=False)
    except StoreError as e:
        log.warning("cannot resume (%s); starting over", e)
        return None, None


def _start_over(rec: Recording, n_blocks: int) -> None:
    """Check the disk has room, remove what an earlier run wrote, then write record.json."""
    root, n, H, kinds = rec.root, rec.plan.n, rec.hidden_size, rec.kinds
    need = estimate_bytes(
        n, len(rec.layers) * len(kinds), H, max(len(hist_edges(k)) for k in kinds), n_blocks
    )
    free = shutil.disk_usage(root).free
    if need > free:
        raise StoreError(
            f"the store needs about {_size(need)} and {root} has {_size(free)} free; free "
            "some space, or record fewer --kinds/--layers or characters (--max-chars)"
        )
    for name in (ACTS, STATS, PRED, PROGRESS):
        if (root / name).exists():
            shutil.rmtree(root / name)
    atomic_write_text(root / JOB, json.dumps(rec.job, indent=1, sort_keys=True))


def _write_inputs(
    rec: Recording, cold: np.ndarray, block_starts: np.ndarray, fresh: bool
) -> np.ndarray:
    """Write the text and the arrays beside the activations (unless a resumed run did);
    the text's ids ``[N]``."""
    root, plan = rec.root, rec.plan
    if not fresh and (root / IDS).is_file():
        return np.load(root / IDS)
    ids = rec.loaded.vocab.encode(rec.text).astype(ARRAY_DTYPES[IDS])
    atomic_write_bytes(root / TEXT, rec.text.encode("utf-8", errors="surrogatepass"))
    # ids.npy last: a resume that finds it skips this whole group.
    small = {COLD: cold, RUNS: plan.runs, BLOCKS: block_starts, IDS: ids}
    if rec.docs is not None:
        small = {DOCUMENTS: rec.docs, **small}
    for name, arr in small.items():
        with atomic_open(root / name) as f:
            np.save(f, arr)
    return ids


def _meta(rec: Recording, unknown: int, n_cold: int, n_blocks: int, rec_s: float) -> dict:
    """What meta.json holds (written last: a store without it is incomplete)."""
    loaded, plan, kinds = rec.loaded, rec.plan, rec.kinds
    return {
        "format": FORMAT,
        "version": VERSION,
        "n": plan.n,
        "model": loaded.config.to_dict(),
        "vocab": list(loaded.vocab.chars),
        "checkpoint": str(loaded.source),
        "checkpoint_sha256": loaded.sha256,
        "model_info": loaded.info,
        "text_sha256": rec.job["text_sha256"],
        "streams": plan.streams,
        "warmup": plan.warmup,
        "cold": n_cold,
        "layers": list(rec.layers),
        "kinds": list(kinds),
        "hidden_size": rec.hidden_size,
        "dtype": DTYPE,
        "unknown_chars": unknown,
        "documents": None if rec.docs is None else len(rec.docs),
        "runs": len(plan.runs),
        "blocks": n_blocks,
        "stats": {
            "top_k": TOP_K,
            "quantiles": list(QUANTILES),
            "saturation": [SAT_LOW, SAT_HIGH],
            "hist_bins": {k: len(hist_edges(k)) - 1 for k in kinds},
        },
        "record": {
            "job": rec.job,
            "chunk_len": plan.chunk_len,
            "device": str(rec.device),
            "lstmscope": __version__,
            "torch": torch.__version__,
            "seconds": round(rec_s, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
