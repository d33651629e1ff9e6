"""What the store holds against a float64 step-by-step reference, with planted counter cells.

A small LSTM gets a cell that adds exactly 1 a character (its i, f and g gates pinned at 1) and
one that integrates a character-dependent amount, so the cell state reaches several thousand,
where float16 keeps steps of 2 to 4 (the demo model's L1.c.0 climbs to 12,128 in steps of 8).
Recorded through ``record()`` with its default streams and warm-up, every unit must be within

- ``c``: 1e-4 of its own range (max - min over the stored positions),
- ``h``: 5e-4, gates ``i f g o``: 4e-3,

plus 2^-23 of its magnitude (a float32 model cannot be closer to float64 than its own rounding).
The encoding spends at most 7.8e-6 of the range and 6e-8 of the magnitude of that
(``encoding.error_bound``: half a code step, float32 rounding of the code and of the decoded
value); the rest is left for the float32 trace's own distance from float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmscope.store.encoding import error_bound
from lstmscope.store.reader import ActivationStore
from lstmscope.store.recorder import record
from tests.test_record import make_loaded, python_text

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = {"c": 1e-4, "h": 5e-4, "i": 4e-3, "f": 4e-3, "g": 4e-3, "o": 4e-3}
N = 160_000  # 32 default streams of 5,000 characters: the counter reaches 5,000


def plant_counters(loaded) -> None:
    """L0 unit 0 adds exactly 1 per character; L1 unit 3 adds tanh(w . x) (in -1..1)."""
    with torch.no_grad():
        for li, unit, w_g in ((0, 0, 0.0), (1, 3, 0.5)):
            rnn = loaded.model.layers[li].rnn
            H = rnn.hidden_size
            for gate in (0, 1, 2):  # i, f, g: weights off, bias 30 (sigmoid, tanh = 1.0)
                row = gate * H + unit
                rnn.weight_ih_l0[row] = 0.0
                rnn.weight_hh_l0[row] = 0.0
                rnn.bias_ih_l0[row] = 30.0
                rnn.bias_hh_l0[row] = 0.0
            if w_g:  # a character-dependent step instead of 1
                g = 2 * H + unit
                rnn.weight_ih_l0[g] = w_g * torch.linspace(-1, 1, rnn.input_size)
                rnn.bias_ih_l0[g] = 0.0


def reference_f64(model, ids: np.ndarray, runs: np.ndarray) -> dict[str, np.ndarray]:
    """Every kind of every layer in float64, one step at a time, each run from a zero state
    (the runs advance together, one row each)."""
    emb = model.embed.weight.detach().double().numpy()
    R = len(runs)
    lengths = runs[:, 1] - runs[:, 0]
    out: dict[str, np.ndarray] = {}
    H = model.layers[0].hidden_size
    for li in range(len(model.layers)):
        for k in "hcifgo":
            out[f"L{li}.{k}"] = np.zeros((len(ids), H))
    weights = []
    for layer in model.layers:
        r = layer.rnn
        weights.append(
            (
                r.weight_ih_l0.detach().double().numpy().T,
                r.weight_hh_l0.detach().double().numpy().T,
                (r.bias_ih_l0 + r.bias_hh_l0).detach().double().numpy(),
            )
        )
    state = [(np.zeros((R, H)), np.zeros((R, H))) for _ in model.layers]
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    for t in range(int(lengths.max())):
        rows = np.flatnonzero(lengths > t)
        pos = runs[rows, 0] + t
        x = emb[ids[pos]]
        for li, (wi, wh, b) in enumerate(weights):
            h, c = state[li]
            z = x @ wi + h[rows] @ wh + b
            i, f, g, o = (
                sig(z[:, :H]),
                sig(z[:, H : 2 * H]),
                np.tanh(z[:, 2 * H : 3 * H]),
                sig(z[:, 3 * H :]),
            )
            c_new = f * c[rows] + i * g
            h_new = o * np.tanh(c_new)
            c[rows], h[rows] = c_new, h_new
            for k, v in zip("hcifgo", (h_new, c_new, i, f, g, o), strict=True):
                out[f"L{li}.{k}"][pos] = v
            x = h_new
    return out


def test_store_matches_a_float64_reference_within_the_unit_ranges(tmp_path):
    loaded = make_loaded(tmp_path, hidden=8, layers=2, seed=3)
    plant_counters(loaded)
    text = python_text(N, seed=11)
    record(loaded, text, tmp_path / "s", progress=False)  # default streams and warm-up
    store = ActivationStore.open(tmp_path / "s")
    assert store.meta["streams"] > 1  # what the defaults chose: counters restart per run
    ref = reference_f64(loaded.model, loaded.vocab.encode(text), store.runs)
    counter = ref["L0.c"][:, 0]
    assert counter.max() > 4000 and np.allclose(np.diff(counter)[store.distance()[1:] > 0], 1)
    for li in store.layers:
        for kind in store.kinds:
            want = ref[f"L{li}.{kind}"]  # [N, H] float64
            got = store.array(li, kind).astype(np.float64)
            rng, mag = np.ptp(want, 0), np.abs(want).max(0)
            err = np.abs(got - want).max(0)
            assert (err <= TOL[kind] * rng + 2.0**-23 * mag).all(), (li, kind, err / rng)
            # and the encoding's share of that is far smaller than the tolerance
            assert (error_bound(rng, mag) <= 0.1 * TOL[kind] * rng + 2.0**-23 * mag).all()
    # The counter's steps survive: float16 would hold 4,000..5,000 in steps of 4.
    stored = store.neuron("L0.c.0").astype(np.float64)
    assert np.abs(stored - counter).max() <= 1e-4 * np.ptp(counter)
    f16 = counter.astype(np.float16).astype(np.float64)
    assert np.abs(f16 - counter).max() > 1e-4 * np.ptp(counter)  # the test can tell them apart


@pytest.mark.parametrize("accelerator", [False, True], ids=["compiled", "torch"])
def test_statistics_of_a_cell_past_float16s_range_are_true(tmp_path, accelerator):
    """A +1/char counter over 70k characters read as one stream: min, max, mean, top k and the
    quantiles are of the true values, not clamped at float16's 65,504 (the stats said max
    65,504 and mean 38,687 for 80k; the quantile colour scale painted the last 15k characters
    one colour)."""
    loaded = make_loaded(tmp_path, hidden=8, layers=2, seed=3)
    plant_counters(loaded)
    n = 70_000
    text = python_text(n, seed=1)
    record(loaded, text, tmp_path / "s", streams=1, warmup=0, progress=False,
           _accelerator_path=accelerator)  # fmt: skip
    store = ActivationStore.open(tmp_path / "s")
    col = store.neuron("L0.c.0").astype(np.float64)
    assert np.abs(col - np.arange(1, n + 1)).max() <= 1e-4 * n  # the codes keep them
    s = store.stat_arrays(0, "c")
    assert s["max"].dtype == np.float32 and s["max"][0] == n and s["min"][0] == 1
    assert s["mean"][0] == pytest.approx((n + 1) / 2, rel=1e-6)
    assert s["std"][0] == pytest.approx(col.std(), rel=1e-6)
    assert s["top_val"][0].tolist() == list(range(n, n - 50, -1))
    assert s["top_pos"][0].tolist() == list(range(n - 1, n - 51, -1))
    assert s["bottom_val"][0, :3].tolist() == [1, 2, 3]
    row = store.stats.loc["L0.c.0"]
    for name, q in (("q75", 0.75), ("q95", 0.95), ("q99", 0.99)):
        # linear within a bin, of values binned by their float16 rounding (steps of 32 here)
        assert abs(row[name] - np.quantile(col, q)) <= 32.0, name
    assert row["q99"] > 65504 and row["q99"] <= row["max"]
