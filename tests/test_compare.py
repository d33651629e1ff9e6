"""compare: one parameter budget for every cell type, the same steps; reruns resume."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from lstmscope.model.cells import CharRNN, ModelConfig, count_parameters
from lstmscope.model.checkpoint import load_checkpoint
from lstmscope.text.vocab import Vocab
from lstmscope.train.compare import VARIANTS, compare, hidden_for_budget
from lstmscope.train.loop import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("base_hidden", [32, 128])
def test_every_variant_gets_the_lstm_budget(base_hidden):
    base = ModelConfig(vocab_size=80, embed_dim=16, hidden_size=base_hidden, num_layers=2)
    budget = count_parameters(CharRNN(replace(base, cell="lstm")))
    for name, (cell, output) in VARIANTS.items():
        h = hidden_for_budget(base, cell, output, budget)
        n = count_parameters(CharRNN(replace(base, cell=cell, output=output, hidden_size=h)))
        # The closest hidden size: one unit more or less is further from the budget.
        for other in (h - 1, h + 1):
            m = count_parameters(
                CharRNN(replace(base, cell=cell, output=output, hidden_size=other))
            )
            assert abs(n - budget) <= abs(m - budget), (name, h, other)
        assert abs(n - budget) / budget < 0.05, name
    # Cells with fewer gates get more units for the same parameters.
    sizes = {c: hidden_for_budget(base, *VARIANTS[c], budget) for c in ("rnn", "gru", "lstm")}
    assert sizes["rnn"] > sizes["gru"] > sizes["lstm"] == base_hidden


def test_compare_trains_each_cell_and_a_rerun_resumes(tmp_path, code_text, monkeypatch):
    import lstmscope.train.loop as train_mod

    vocab = Vocab.from_text(code_text)
    ids = vocab.encode(code_text)
    cut = len(ids) * 9 // 10
    base = ModelConfig(vocab_size=len(vocab), embed_dim=8, hidden_size=24, num_layers=1)
    tcfg = TrainConfig(seq_len=16, batch_size=8, lr=5e-3, max_steps=20, eval_every=10,
                       schedule="constant", device="cpu")  # fmt: skip
    cells = ["rnn", "gru", "lstm"]
    # An earlier comparison was killed while the GRU trained: it stopped at step 10.
    budget = count_parameters(CharRNN(replace(base, cell="lstm")))
    gru = replace(base, cell="gru", hidden_size=hidden_for_budget(base, "gru", "h", budget))
    train_mod.train(ids[:cut], ids[cut:], vocab, gru, tcfg, tmp_path / "gru", progress=False,
                    _stop_at=10)  # fmt: skip
    evals = []
    real_eval = train_mod.evaluate_bpc
    monkeypatch.setattr(
        train_mod, "evaluate_bpc", lambda *a, **k: evals.append(1) or real_eval(*a, **k)
    )
    table = compare(ids[:cut], ids[cut:], vocab, base, tcfg, cells, tmp_path, progress=False)
    # rnn and lstm evaluate at steps 0, 10 and 20; the GRU resumed after 10: only 20.
    assert len(evals) == 3 + 1 + 3
    assert sorted(table.cell) == sorted(cells)
    assert list(table.best_val_bpc) == sorted(table.best_val_bpc)
    assert (table.steps == 20).all()
    budget = table.set_index("cell").parameters["lstm"]
    assert (abs(table.parameters - budget) / budget < 0.05).all()
    for name in ("comparison.csv", "comparison.md", "comparison.html"):
        assert (tmp_path / name).stat().st_size > 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "comparison.csv"), table)
    logs = {c: (tmp_path / c / "log.csv").read_text() for c in cells}
    weights = {c: load_checkpoint(tmp_path / c / "last.pt")["model"] for c in cells}

    # A rerun retrains nothing that had finished: no evaluation, same logs, same weights.
    evals.clear()
    again = compare(ids[:cut], ids[cut:], vocab, base, tcfg, cells, tmp_path, progress=False)
    assert evals == []
    pd.testing.assert_frame_equal(again, table)
    for c in cells:
        assert (tmp_path / c / "log.csv").read_text() == logs[c]
        w = load_checkpoint(tmp_path / c / "last.pt")["model"]
        assert all((w[k] == weights[c][k]).all() for k in w)
