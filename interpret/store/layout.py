"""The activation store's layout: every file name, dtype and the format version, in one place.

::

    STORE/
      meta.json                 written last, atomically: without it the store is incomplete
      text.txt                  UTF-8, exactly what was recorded (N = len(text) characters)
      ids.npy                   int32 [N]       vocabulary ids (0 = a character unseen in training)
      cold.npy                  bool  [N]       the first `warmup` positions of every run
      runs.npy                  int64 [R, 2]    (start, stop) of the runs, each read from a zero state
      blocks.npy                int64 [K + 1]   first position of each block of the encoding, then N
      documents.npy             int64 [D, 2]    (start, stop) of each document, when given
      acts/L{layer}.{kind}.npy        int16 [N, H]       codes, time-major, one file per layer and kind
      acts/L{layer}.{kind}.scale.npy  float32 [K, 2, H]  per block and unit: centre, scale
      stats/L{layer}.{kind}.npz       per-neuron moments, quantiles, top/bottom positions
      stats/L{layer}.{kind}.hist.npy  int64 [H, bins] histogram counts (edges: hist_edges(kind))
      pred/loss.npy             float32 [N]     bits, -log2 p(text[t] | text[:t]); NaN at run starts
      pred/top_ids.npy          int32 [N, 5]    the model's top 5 for the character AFTER t
      pred/top_prob.npy         float16 [N, 5]

    While recording (record.json and progress/ are removed once meta.json is written):
      record.json               what is being recorded (the job), from the start
      progress/checkpoint.npz   chunks done, model state, statistics so far
      .lock                     held by the recording process; stays, as unlinking a held lock
                                lets two later runs each lock their own

The activation codes and their dtypes (``CODE_DTYPE``, ``PARAM_DTYPE``) are the block encoding's,
in ``lstmscope.store.encoding``; the histogram grid per kind is in ``lstmscope.store.histograms``.
Format 1 stores (``acts/L*.npy`` float16, no ``runs.npy``, ``blocks.npy`` or ``.scale.npy``) still
open and read the same way. ``lstmscope.store.recorder`` writes this layout and
``lstmscope.store.reader`` reads it; both take the names below from here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FORMAT = "lstmscope-store"
VERSION = 2  # what record writes
DTYPES = {1: "float16", 2: "q16"}  # meta.json "dtype" of each format version this one reads
DTYPE = DTYPES[VERSION]

# The statistics' shape, written to meta.json's "stats" by the recorder.
TOP_K = 50  # top and bottom positions kept per neuron
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
QUANTILE_NAMES = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
SAT_LOW, SAT_HIGH = 0.1, 0.9  # a gate value below/above counts as saturated (Karpathy et al.)

# ----------------------------------------------------------------------------------------------
# File names, relative to the store's folder

META = "meta.json"
JOB = "record.json"
TEXT = "text.txt"
IDS = "ids.npy"
COLD = "cold.npy"
RUNS, BLOCKS = "runs.npy", "blocks.npy"  # format 2
DOCUMENTS = "documents.npy"
ACTS, STATS, PRED, PROGRESS = "acts", "stats", "pred", "progress"
CHECKPOINT = f"{PROGRESS}/checkpoint.npz"
LOCK = ".lock"
LOSS, TOP_IDS, TOP_PROB = f"{PRED}/loss.npy", f"{PRED}/top_ids.npy", f"{PRED}/top_prob.npy"

# Everything a store's folder may hold (an atomic write's temp file aside): a folder holding
# anything else is not a store, and record refuses to touch it.
STORE_FILES = (
    META,
    JOB,
    TEXT,
    IDS,
    COLD,
    RUNS,
    BLOCKS,
    DOCUMENTS,
    ACTS,
    STATS,
    PRED,
    PROGRESS,
    LOCK,
)

# The dtypes of the arrays beside the activations (their shapes: see the table above).
ARRAY_DTYPES = {
    IDS: np.dtype(np.int32),
    COLD: np.dtype(np.bool_),
    RUNS: np.dtype(np.int64),
    BLOCKS: np.dtype(np.int64),
    DOCUMENTS: np.dtype(np.int64),
}
TOP_N = 5  # the model's likeliest next characters kept per position
PRED_FILES = {  # name -> (dtype, trailing shape)
    LOSS: ("float32", ()),
    TOP_IDS: ("int32", (TOP_N,)),
    TOP_PROB: ("float16", (TOP_N,)),
}


def act_path(root: Path, layer: int, kind: str) -> Path:
    return Path(root) / ACTS / f"L{layer}.{kind}.npy"


def param_path(root: Path, layer: int, kind: str) -> Path:
    return Path(root) / ACTS / f"L{layer}.{kind}.scale.npy"


def stats_path(root: Path, layer: int, kind: str) -> Path:
    return Path(root) / STATS / f"L{layer}.{kind}.npz"


def hist_path(root: Path, layer: int, kind: str) -> Path:
    return Path(root) / STATS / f"L{layer}.{kind}.hist.npy"
