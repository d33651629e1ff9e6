"""Drift: units that trend with the distance from their run's start are found, stationary ones
are not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmscope.analysis import store_cache
from lstmscope.analysis.drift import COLUMNS, R_MIN, drift
from lstmscope.store.reader import ActivationStore
from lstmscope.store.recorder import record
from tests.test_fidelity import plant_counters
from tests.test_record import make_loaded, python_text

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift")
    loaded = make_loaded(tmp, hidden=8, layers=2, seed=4)
    plant_counters(loaded)  # L0.c.0 adds 1 a character; L1.c.3 a character-dependent step
    with torch.no_grad():  # L0.c.1 forgets everything every step: stationary by construction
        rnn = loaded.model.layers[0].rnn
        rnn.weight_ih_l0[8 + 1] = 0.0
        rnn.weight_hh_l0[8 + 1] = 0.0
        rnn.bias_ih_l0[8 + 1] = -30.0
    record(loaded, python_text(24_000, seed=2), tmp / "s", streams=8, warmup=200,
           progress=False)  # fmt: skip
    return ActivationStore.open(tmp / "s")


def test_a_planted_counter_drifts_and_a_stationary_unit_does_not(store):
    df = drift(store).set_index("neuron")
    assert list(drift(store).columns) == list(COLUMNS) and len(df) == len(store.neurons)
    c0 = df.loc["L0.c.0"]
    assert c0["drifting"] and c0["r"] > 0.99
    assert c0["slope"] == pytest.approx(1000.0, rel=1e-3)  # +1 a character
    assert c0["rise"] == pytest.approx(3000 - 200, rel=1e-2)  # over a run's warm part
    assert not df.loc["L0.c.1", "drifting"] and abs(df.loc["L0.c.1", "r"]) < 0.1
    assert not df.loc["L0.f.0", "drifting"]  # constant 1.0: no spread, r undefined
    assert np.isnan(df.loc["L0.f.0", "r"])
    # Of the random units, few trend: the threshold does not flag the stationary bulk.
    assert df["drifting"].mean() < 0.2 and (df["r"].abs() < R_MIN).sum() > 0.8 * len(df)


def test_drift_r_equals_numpy_on_the_stored_values(store):
    df = drift(store).set_index("neuron")
    warm = ~store.cold
    d = store.distance()[warm].astype(np.float64)
    for nid in ("L0.c.0", "L1.c.3", "L1.h.5", "L0.i.2"):
        x = store.neuron(nid)[warm].astype(np.float64)
        # the stats' std is of the float32 values, the product of the stored ones: ~1e-5 apart
        assert df.loc[nid, "r"] == pytest.approx(np.corrcoef(x, d)[0, 1], abs=1e-4), nid


class _Spoiled:
    """The store, with a NaN and an inf planted in cold rows of L0.c.0 and L1.h.5."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def array(self, layer, kind):
        arr = self._store.array(layer, kind)[:, :]
        cold = np.flatnonzero(self._store.cold)
        if (layer, kind) == (0, "c"):
            arr[cold[0], 0] = np.nan
        if (layer, kind) == (1, "h"):
            arr[cold[-1], 5] = np.inf
        return arr


def test_a_non_finite_value_in_a_cold_row_leaves_r_alone(store):
    """Cold rows are left out of r: a NaN or inf there (warm-up of a diverging model) made the
    unit's r NaN."""
    want = drift(store).set_index("neuron")
    got = drift(_Spoiled(store)).set_index("neuron")
    for nid in ("L0.c.0", "L1.h.5"):
        assert got.loc[nid, "r"] == pytest.approx(want.loc[nid, "r"], abs=1e-6), nid
        assert got.loc[nid, "drifting"] == want.loc[nid, "drifting"]


def test_drift_is_cached_per_store(store):
    first = drift(store)
    assert ("drift", R_MIN) in store_cache(store)
    again = drift(store)
    assert again is not first and again.equals(first)  # a copy: callers may change theirs
    assert drift(store, r_min=0.99)["drifting"].sum() <= first["drifting"].sum()


def test_the_dashboard_flags_drifting_units_in_the_card_and_the_ranking(store):
    """Issue 12.4: a counter's card says it drifts, a stationary unit's does not; the ranking
    marks exactly the drifting rows that ``drift`` flags."""
    from lstmscope.server.shared import Shared
    from tests.test_server import page

    flagged = set(drift(store).query("drifting")["neuron"])
    assert "L0.c.0" in flagged
    shared = Shared(store, workers=1)
    try:
        app = page(shared, {"neuron": ["L0.c.0"]})
        assert "drifts: r = 1.00" in app.card.title.text and "--streams" in app.card.title.text
        app.set_state(app.state.with_(neurons=("L0.c.1",)))
        assert "drifts" not in app.card.title.text
        app.tabs.active = 1
        app.controls.feature.value = "column"
        rows = app.rank.source.data
        assert len(rows["neuron"]) > 0
        marked = {n for n, d in zip(rows["neuron"], rows["drift"], strict=True) if d}
        assert marked == flagged & set(rows["neuron"])
        assert ("drift ⚠" in app.rank.legend.text) == bool(marked)
    finally:
        shared.close()
