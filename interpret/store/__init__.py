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

from lstmscope.lazy import lazy_api
from lstmscope.store.reader import ActivationStore

# Lazy: the recorder imports torch and the model, which a reader does not need.
__getattr__, _recording = lazy_api(__name__, {"recorder": ["record", "RecordSummary"]})
__all__ = ["ActivationStore", *_recording]
