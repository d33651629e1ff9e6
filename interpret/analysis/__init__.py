"""Analysis of an activation store: one module per question, each a pure function of the store.

- :mod:`~lstmscope.analysis.features` — what a character is (in a URL, a string, a comment,
  bracket depth, ...): the built-in features, user regexes and selected spans
- :mod:`~lstmscope.analysis.rank` — score every neuron against a feature (AP, AUROC, best-threshold
  F1/IoU, exact for the head; or Pearson r); :mod:`~lstmscope.analysis.metrics` holds the scores
  and their histogram bounds, :mod:`~lstmscope.analysis.rank_exact` the exact pass over the head
- :mod:`~lstmscope.analysis.contexts` — top, bottom and quantile-sampled contexts of a neuron
- :mod:`~lstmscope.analysis.saturation` — gate saturation per layer (Karpathy et al. Fig. 3)
- :mod:`~lstmscope.analysis.search` — select a span, find its neurons, find similar spans
- :mod:`~lstmscope.analysis.probe` — sparse linear probes with a control task
- :mod:`~lstmscope.analysis.ablate` — zero or clamp neurons inside the running model
- :mod:`~lstmscope.analysis.losses` — per-character loss by category and bracket distance
- :mod:`~lstmscope.analysis.drift` — units that trend with the distance from their run's start

Everything returns a tidy ``pandas.DataFrame`` (or plain arrays) and reads the store read-only;
nothing here writes files or prints. Results that are costly and depend only on the store (a
feature computed over its text, line numbers, suggested thresholds) are cached per store object
in :func:`store_cache`, so the dashboard pays for them once.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from lstmscope.lazy import lazy_api

_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def store_cache(store: Any) -> dict:
    """A dict that lives as long as ``store`` (the dashboard shares one store across threads)."""
    with _LOCK:
        try:
            return _CACHES.setdefault(store, {})
        except TypeError:  # an object that cannot be weakly referenced: no caching
            return {}


# The public API by name (``from lstmscope.analysis import rank_feature``), imported on first
# use: the modules pull in scikit-learn and torch, which a caller of one feature need not pay for.
__getattr__, _names = lazy_api(
    __name__,
    {
        "rank": ["rank_feature", "rank_many"],
        "contexts": ["contexts"],
        "saturation": ["saturation"],
        "search": ["select_neurons", "match_spans", "suggest_threshold"],
        "probe": ["probe"],
        "ablate": ["ablate", "ablate_many"],
        "losses": ["loss_by_category", "loss_by_distance"],
        "drift": ["drift"],
        "features": ["FEATURES", "Feature", "FeatureError", "parse_feature_spec"],
    },
)
__all__ = ["store_cache", *_names]
