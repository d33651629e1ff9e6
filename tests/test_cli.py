"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstmscope.cli import main
from lstmscope.model.checkpoint import load_checkpoint


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstmscope", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def assert_clean_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from tests.conftest import CODE_SNIPPET

    d = tmp_path_factory.mktemp("cli")
    (d / "code.py").write_text(CODE_SNIPPET * 20)
    assert main(["-q", "train", "--data", str(d / "code.py"), "-o", str(d / "run"), "--hidden",
                 "16", "--layers", "1", "--batch", "4", "--seq-len", "16", "--max-steps", "4",
                 "--eval-every", "2", "--device", "cpu"]) == 0  # fmt: skip
    return d / "run"


def test_missing_path(tmp_path):
    res = run("train", "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "r"))
    assert_clean_error(res, "no such file or folder")
    assert not (tmp_path / "r").exists()


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("   \n")
    res = run("train", "--data", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "r"))
    assert_clean_error(res, "no text found", "empty files")
    assert not (tmp_path / "r").exists()


def test_binary_only_folder(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "a.txt").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "bin" / "b.py").write_bytes(b"\xff\xfe\x00\xd8" + b"\x00" * 100)  # bad UTF-16
    res = run("corpus", "build", str(tmp_path / "bin"), "-o", str(tmp_path / "c"))
    assert_clean_error(res, "no text found", "binary or undecodable")
    assert not (tmp_path / "c").exists()


def test_truncated_checkpoint(run_dir, tmp_path):
    data = (run_dir / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    res = run("info", str(tmp_path / "cut.pt"))
    assert_clean_error(res, "cut.pt", "truncated")


def test_foreign_checkpoint(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "other.pt")
    assert_clean_error(run("info", str(tmp_path / "other.pt")), "not an lstmscope checkpoint")
    (tmp_path / "text.pt").write_text("hello")
    assert_clean_error(run("sample", str(tmp_path / "text.pt")), "text.pt")


class Boom:
    def __reduce__(self):
        return (Path("/tmp/lstmscope-pwned").touch, ())


def test_pickle_payload_does_not_execute(tmp_path):
    torch.save({"format": "lstmscope-checkpoint", "x": Boom()}, tmp_path / "evil.pt")
    Path("/tmp/lstmscope-pwned").unlink(missing_ok=True)
    assert_clean_error(run("info", str(tmp_path / "evil.pt")), "evil.pt", "refused")
    assert not Path("/tmp/lstmscope-pwned").exists()


def test_vocab_mismatch(run_dir, tmp_path):
    ck = load_checkpoint(run_dir / "best.pt")
    ck["vocab"] = ck["vocab"][:-3]
    torch.save(ck, tmp_path / "mismatch.pt")
    assert_clean_error(run("info", str(tmp_path / "mismatch.pt")), "vocab")


def test_info_breakdown_matches(run_dir, capsys):
    assert main(["info", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "forget gate" in out and "input block" in out and ", matches)" in out


def test_sample_is_deterministic(run_dir, capsys):
    main(["sample", str(run_dir), "--length", "40", "--seed", "1", "--prime", "def"])
    a = capsys.readouterr().out
    main(["sample", str(run_dir), "--length", "40", "--seed", "1", "--prime", "def"])
    assert a == capsys.readouterr().out and a.startswith("def")


def test_cuda_without_gpu_is_clear(run_dir):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_clean_error(run("sample", str(run_dir), "--device", "cuda"), "no CUDA GPU")


# ----------------------------------------------------------------------------------------------
# Issue 12.10 / 12.11: options an export would drop are refused; messages name what exists


@pytest.fixture(scope="module")
def store_dir(run_dir) -> Path:
    out = run_dir.parent / "store"
    assert main(["-q", "record", str(run_dir), "--data", str(run_dir.parent / "code.py"), "-o",
                 str(out), "--device", "cpu"]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--card", "--neuron", "L0.c.2"], ["--card shows one neuron, got 2", "L0.c.1, L0.c.2"]),
        (["--card", "--find", "def"], ["--card cannot be combined with --find"]),
        (["--card", "--range", "0:100"], ["--card cannot be combined with --range"]),
        (["--find", "def", "--range", "0:100"], ["--find searches the whole text"]),
    ],
)
def test_export_refuses_what_it_would_drop(store_dir, tmp_path, extra, needles):
    res = run(
        "export", str(store_dir), "--neuron", "L0.c.1", *extra, "-o", str(tmp_path / "x.html")
    )
    assert_clean_error(res, *needles)
    assert not (tmp_path / "x.html").exists()


def test_export_card_of_one_neuron_still_works(store_dir, tmp_path):
    assert main(["export", str(store_dir), "--neuron", "L0.c.1", "--card", "-o",
                 str(tmp_path / "card.html")]) == 0  # fmt: skip
    assert (tmp_path / "card.html").stat().st_size > 0


def test_text_file_named_pt(tmp_path):
    (tmp_path / "notes.pt").write_text("just some notes\nnot weights\n")
    res = run("info", str(tmp_path / "notes.pt"))
    assert_clean_error(res, "notes.pt", "not a PyTorch checkpoint", "text file")
    assert "IndexError" not in res.stderr


@pytest.mark.parametrize("nid", ["L0.z.3", "L0.x.3", "L0.c.999", "L3.c.0", "cell7"])
def test_bad_neuron_lists_only_what_the_store_has(store_dir, tmp_path, nid):
    res = run("export", str(store_dir), "--neuron", nid, "--range", "0:50", "-o",
              str(tmp_path / "x.html"))  # fmt: skip
    assert_clean_error(res, "layers 0, kinds h c i f g o, units 0-15")
    line = res.stderr.strip().splitlines()[-1]
    assert "GRU" not in line and " r z n" not in line
