"""The model: the network, everything a layer computes, checkpoints, sampling.

- :mod:`~lstmscope.model.cells` — ``ModelConfig`` and ``CharRNN``: an embedding, a stack of
  one-layer LSTM, GRU or RNN cells in PyTorch's parameter layout, a linear head
- :mod:`~lstmscope.model.plan` — which part of the text each batch row reads in each chunk
  (``plan_streams``: runs from a zero state, laid out over the streams)
- :mod:`~lstmscope.model.trace` — everything a layer computed at every position (h, c and every
  gate): ``run_plan`` drives the model over a plan chunk by chunk, ``trace_ids`` reads a short
  text in memory
- :mod:`~lstmscope.model.checkpoint` — training checkpoints and the pickle-free export:
  ``load_model`` (a run folder, a checkpoint, an exported model or ``demo``),
  ``save_checkpoint``, ``load_checkpoint``, ``export_safetensors``, ``pick_device``
- :mod:`~lstmscope.model.sample` — generation with temperature and top-k
  (``lstmscope.model.sample.sample``)

The model knows no disk format of the store and nothing of training.
"""

from __future__ import annotations

from lstmscope.lazy import lazy_api

# The public API, module by module (``from lstmscope.model import load_model``), imported
# on first use, so that importing one module (``plan`` is numpy only) does not load them all.
_API = {
    "cells": ("ModelConfig", "CharRNN", "count_parameters"),
    "plan": ("StreamPlan", "plan_streams"),
    "trace": ("run_plan", "trace_ids"),
    "checkpoint": (
        "LoadedModel",
        "load_model",
        "load_checkpoint",
        "save_checkpoint",
        "export_safetensors",
        "pick_device",
    ),
}
__getattr__, __all__ = lazy_api(__name__, _API)
