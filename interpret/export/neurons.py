"""What an export asks of a store, checked: which neurons, which range, which colour scale.

Every export (coloured text, matches, the card, the notebook view) names neurons, a range and
a scale the same way and colours each neuron as the dashboard does for the same values; this
is that one place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lstmscope.export.colors import DEFAULT_SCALE, SCALES, Scale, robust_stats, scale_for
from lstmscope.names import GATE_KINDS, parse_neuron

log = logging.getLogger(__name__)

MAX_NEURONS = 64


def neuron_ids(neurons: str | Sequence[str]) -> list[str]:
    """Canonical ids of ``neurons`` (one id or several), duplicates dropped, order kept."""
    items = [neurons] if isinstance(neurons, str) else list(neurons)
    ids: list[str] = []
    for x in items:
        nid = str(parse_neuron(x))
        if nid not in ids:
            ids.append(nid)
    if not ids:
        raise ValueError("no neurons given: name at least one, e.g. L1.c.137")
    if len(ids) > MAX_NEURONS:
        raise ValueError(f"{len(ids)} neurons; at most {MAX_NEURONS} fit in one export")
    return ids


def stats_row(store: Any, nid: str) -> Mapping[str, Any] | None:
    """The store's statistics row of ``nid``, or None when the store has none for it."""
    try:
        stats = store.stats
    except (AttributeError, FileNotFoundError, KeyError):
        return None
    if stats is None:
        return None
    try:
        row = stats.loc[nid]
    except (KeyError, AttributeError):
        return None
    return row if hasattr(row, "keys") and not hasattr(row, "columns") else None


def check_scale(scale: str | None) -> str:
    """``scale`` if it is one of :data:`~lstmscope.export.colors.SCALES` (None: the default)."""
    scale = scale or DEFAULT_SCALE
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    return scale


def neuron_scales(
    store: Any,
    ids: list[str],
    vals: np.ndarray | None,
    colormap: str | None,
    scale: str | None = None,
) -> list[Scale]:
    """One scale per neuron, as the dashboard builds it for the same values (``vals`` are
    the values shown, ``[T, K]``: the window scales are built from them)."""
    method = check_scale(scale)
    out = []
    for j, nid in enumerate(ids):
        row = stats_row(store, nid)
        if (row is None and vals is not None and method == "linear"
                and parse_neuron(nid).kind not in GATE_KINDS):  # fmt: skip
            # Without stored statistics the linear range comes from what is shown (logged: it
            # then differs between exports of the same neuron). The rank scales fall back to
            # the values shown by themselves, and their legend says so.
            log.info("no statistics for %s: scaling to the exported values", nid)
            row = robust_stats(vals[:, j])
        # Passed whatever the scale: scale_for uses them exactly when needs_values() says so,
        # as the dashboard does.
        shown = vals[:, j] if vals is not None else None
        out.append(scale_for(nid, row, colormap=colormap, method=method, values=shown))
    return out


def check_range(store: Any, start: int, stop: int, max_chars: int) -> None:
    """Refuse a range outside the store's text or longer than ``max_chars``."""
    n = int(store.n)
    if not 0 <= start < stop <= n:
        raise ValueError(f"range [{start}, {stop}) is not inside the store's text [0, {n})")
    if stop - start > max_chars:
        raise ValueError(
            f"{stop - start} characters is more than the {max_chars} an export may hold; "
            "export a narrower range"
        )
