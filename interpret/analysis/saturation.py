"""Gate saturation per layer and gate (Karpathy et al. 2015, section 4.2 and Fig. 3).

A gate unit is *left-saturated* at a position when its value is below 0.1 and
*right-saturated* when above 0.9. Plotting every unit's two fractions (x: left, y: right), one
panel per gate, shows the paper's findings at a glance: forget gates with units that are almost
always right-saturated (integrators that remember), and the first layer's gates rarely
saturated. The fractions come from the store's statistics (computed while recording, over the
warm positions), so this reads no activations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lstmscope.names import GATE_KINDS
from lstmscope.store.layout import SAT_HIGH, SAT_LOW

COLUMNS = ("neuron", "layer", "kind", "unit", "left", "right")


def saturation(store, layers: int | Sequence[int] | None = None) -> pd.DataFrame:
    """One row per gate unit: ``neuron layer kind unit left right``.

    ``left``/``right`` are the fractions of warm positions where the gate is below
    ``SAT_LOW`` (0.1) / above ``SAT_HIGH`` (0.9). Layers default to all; kinds are the gates the
    store recorded (LSTM ``i f o``, GRU ``r z``). Empty (with these columns) when the store holds
    no gates, e.g. an RNN or a store recorded with ``--kinds h,c``.
    """
    if isinstance(layers, int):
        layers = [layers]
    want = list(store.layers) if layers is None else [int(x) for x in layers]
    bad = [x for x in want if x not in store.layers]
    if bad:
        raise ValueError(
            f"layers {bad} are not in this store (it holds {', '.join(map(str, store.layers))})"
        )
    gates = [k for k in store.kinds if k in GATE_KINDS]
    frames = []
    H = store.hidden_size
    for li in [x for x in store.layers if x in want]:
        for kind in gates:
            st = store.stat_arrays(li, kind)
            frames.append(
                pd.DataFrame(
                    {
                        "neuron": [f"L{li}.{kind}.{u}" for u in range(H)],
                        "layer": np.full(H, li, dtype=np.int64),
                        "kind": kind,
                        "unit": np.arange(H, dtype=np.int64),
                        "left": np.asarray(st["sat_left"], dtype=np.float64),
                        "right": np.asarray(st["sat_right"], dtype=np.float64),
                    }
                )
            )
    if not frames:
        return pd.DataFrame({c: [] for c in COLUMNS})
    df = pd.concat(frames, ignore_index=True)
    df.attrs.update(low=SAT_LOW, high=SAT_HIGH)
    return df
