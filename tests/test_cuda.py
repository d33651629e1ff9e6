"""On a CUDA GPU, the tool computes what it computes on a CPU (skipped where there is no GPU).

CI has no GPU; these run on a machine that has one (``pytest tests/test_cuda.py``). They hold
the accelerator path (the fused kernel, then the gates rebuilt at once from ``x_t`` and
``h_{t-1}``) to the same step-by-step float32 reference as the CPU tests, and check that train
and record pick the GPU by themselves and write what a CPU run reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmscope import ActivationStore
from lstmscope.cli import main
from lstmscope.model.trace import trace_ids
from lstmscope.names import KINDS
from tests.test_trace import _assert_close, make_model, reference_trace

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def full_float32():
    """The reference is float32 arithmetic: TF32 (10-bit mantissa) would be a different method."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained-like"])
@pytest.mark.parametrize(
    ("cell", "output"), [("lstm", "h"), ("lstm", "c"), ("gru", "h"), ("rnn", "h")]
)
def test_gpu_trace_matches_step_by_step_reference(cell, output, trained):
    model = make_model(cell, 2, output, trained=trained)
    n = 300
    ids = np.random.default_rng(3).integers(0, 20, n)
    ref = reference_trace(model, ids)  # on the CPU
    # chunk_len 50 < n: the state is carried across chunks on the device, as when recording.
    ours = trace_ids(model.cuda(), ids, chunk_len=50)
    for li in range(2):
        for k in KINDS[cell]:
            _assert_close(ours[f"L{li}.{k}"], ref[f"L{li}.{k}"], f"L{li}.{k}")


def _corpus(tmp: Path) -> Path:
    from tests.conftest import CODE_SNIPPET

    (tmp / "code.py").write_text(CODE_SNIPPET * 40)
    return tmp / "code.py"


def test_train_and_record_pick_the_gpu_and_a_cpu_reads_the_result(tmp_path):
    data = _corpus(tmp_path)
    run = tmp_path / "run"
    assert main(["-q", "train", "--data", str(data), "-o", str(run), "--hidden", "32",
                 "--layers", "2", "--batch", "8", "--seq-len", "32", "--max-steps", "30",
                 "--eval-every", "10"]) == 0  # fmt: skip
    gpu, cpu = tmp_path / "gpu", tmp_path / "cpu"
    assert main(["-q", "record", str(run), "--data", str(data), "-o", str(gpu),
                 "--streams", "2", "--warmup", "50"]) == 0  # fmt: skip
    assert main(["-q", "record", str(run), "--data", str(data), "-o", str(cpu), "--device",
                 "cpu", "--streams", "2", "--warmup", "50"]) == 0  # fmt: skip
    meta = json.loads((gpu / "meta.json").read_text())
    assert "cuda" in json.dumps(meta), "record did not pick the GPU by itself"
    a, b = ActivationStore.open(gpu), ActivationStore.open(cpu)
    assert a.text == b.text and a.neurons == b.neurons
    for layer in a.layers:
        for kind in a.kinds:
            x = np.asarray(a.array(layer, kind)[:], dtype=np.float64)
            y = np.asarray(b.array(layer, kind)[:], dtype=np.float64)
            # Both are stored as int16 codes of a per-block, per-unit scale: the two runs may
            # differ by one code step plus float32 rounding of the trace itself.
            step = np.abs(y).max(axis=0) / 2**14 + 1e-6
            assert (np.abs(x - y) <= 2 * step + 1e-4 * (1 + np.abs(y))).all(), (layer, kind)
    np.testing.assert_allclose(a.loss[1:], b.loss[1:], atol=1e-3, rtol=1e-4)
