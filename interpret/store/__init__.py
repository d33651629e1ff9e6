"""The activation store: recording a model over a text, and reading what it recorded.

- :mod:`~lstmscope.store.layout` — every file name, dtype and the format version of a store
- :mod:`~lstmscope.store.reader` — ``ActivationStore``: open, check and read a store
- :mod:`~lstmscope.store.recorder` — ``record``: what the output folder holds, resume, finish
- :mod:`~lstmscope.store.chunks` — the recording pass, chunk by chunk, and its checkpoints
- :mod:`~lstmscope.store.pipeline` — the writer and statistics threads, ``.npy`` files by offset
- :mod:`~lstmscope.store.stats` — running per-neuron statistics (``KindStats``)
- :mod:`~lstmscope.store.kernels` — those statistics and the encoder compiled with numba (CPU)
- :mod:`~lstmscope.store.encoding` — the 16-bit block code of the activations, and its decoders
- :mod:`~lstmscope.store.histograms` — the fixed histogram grid of each kind
- :mod:`~lstmscope.store.streams` — how many streams a recording reads, and their warm-up

Reading needs numpy only: ``record`` (torch) is imported when first asked for, so that
``from lstmscope.store import ActivationStore`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lstmscope.store.reader import ActivationStore

if TYPE_CHECKING:
    from lstmscope.store.recorder import RecordSummary, record

__all__ = ["ActivationStore", "RecordSummary", "record"]


def __getattr__(name: str):
    # Lazy: the recorder imports torch and the model, which a reader does not need.
    if name in ("record", "RecordSummary"):
        from lstmscope.store import recorder

        return getattr(recorder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
