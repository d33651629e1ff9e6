"""Training: the loop, the cell comparison, the training curves.

- :mod:`~lstmscope.train.loop` — ``train`` with a ``TrainConfig``: truncated BPTT over parallel
  streams, resumable from ``last.pt``; each step in a fixed order (learning rate, evaluate,
  checkpoint, step, log); writes the run folder atomically
- :mod:`~lstmscope.train.evaluate` — the text as carried-state streams (``StreamBatches``) and
  the bits per character a model scores on it (``evaluate_bpc``, ``val_bpc_by_corpus``)
- :mod:`~lstmscope.train.dist` — several processes under ``torchrun``: each trains its share
  of the streams, and they agree on every save and stop
- :mod:`~lstmscope.train.compare` — RNN, GRU, LSTM and LSTM passing its cell state, trained at
  one parameter budget and time (``lstmscope.train.compare.compare``)
- :mod:`~lstmscope.train.curves` — the training curves as a small standalone SVG page
"""

from __future__ import annotations

from lstmscope.lazy import lazy_api

# The public API, module by module (``from lstmscope.train import train``), imported on
# first use.
_API = {
    "loop": ("train", "TrainConfig", "TrainResult"),
    "evaluate": ("evaluate_bpc", "val_bpc_by_corpus"),
}
__getattr__, __all__ = lazy_api(__name__, _API)
