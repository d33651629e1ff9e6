"""Issue 12.3: a store written all or mostly cold opens
with a message that says so, and choosing the first neuron logs no traceback."""

import pytest

from lstmscope.store.reader import ActivationStore
from tests.test_server import page
from tests.test_streams import old_store, tiny  # noqa: F401  (fixture)


@pytest.mark.parametrize(
    ("streams", "says"),
    [(32, "all 30,000 positions are cold"), (20, "only 10,000 of 30,000 positions are warm")],
)
def test_a_cold_store_opens_with_a_message(tiny, tmp_path, monkeypatch, caplog, streams, says):  # noqa: F811
    from lstmscope.server.shared import Shared

    path = old_store(tiny, tmp_path / "s", 30_000, streams, 1000, monkeypatch)
    s = Shared(ActivationStore.open(path), workers=1)
    try:
        s._compute_initial()
        assert "Traceback" not in caplog.text and "failed" not in caplog.text
        app = page(s)
        assert app.message.kind == "warn" and says in app.message.text
        assert "record it again" in app.message.text
    finally:
        s.close()
