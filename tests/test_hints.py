"""Every ``next:`` step the CLI prints runs as printed (issue 12.9).

Each scenario runs a command, reads the ``next:`` line(s) it printed, and runs every step it
names: the printed words unchanged, with only options that make it small appended (``--max-steps``
and a tiny model for ``train``, ``--port 0`` for ``serve``). The steps' own hints are followed in
turn, so a chain (corpus -> train -> record -> detect -> serve) is checked end to end.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lstmscope.cli import main
from lstmscope.text.corpus import Document
from lstmscope.text.recipes import RECIPES, Recipe
from lstmscope.text.synthetic import generate

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

# Appended to a printed step to keep it small; argparse takes the last value of an option.
SMALL = {
    "train": ["--max-steps", "4", "--eval-every", "2", "--hidden", "16", "--layers", "1",
              "--embed", "8", "--batch", "4", "--seq-len", "32", "--device", "cpu"],
    "compare": [],
    "sample": ["--length", "20"],
}  # fmt: skip


def hints(out: str) -> list[list[str]]:
    """The commands of every ``next:`` line in ``out``, split as a shell would."""
    cmds = []
    for line in out.splitlines():
        if "next: " not in line:
            continue
        for part in line.split("next: ", 1)[1].split("   |   "):
            words = shlex.split(part)
            assert words[0] == "lstmscope", f"not a command: {line!r}"
            cmds.append(words)
    assert cmds, f"no next step printed:\n{out}"
    return cmds


def serve_once(cwd: Path, cmd: list[str]) -> None:
    """Start the printed ``serve`` step on a free port, load its page, stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lstmscope", *cmd[1:], "--port", "0"], cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("lstmscope dashboard: "):
                url = line.split()[2]
                with urllib.request.urlopen(url, timeout=60) as r:
                    assert r.status == 200
                return
        pytest.fail(f"{shlex.join(cmd)} did not start:\n{''.join(seen)}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def follow(cwd: Path, out: str, capsys, done: set[str], depth: int = 0) -> None:
    """Run every step printed in ``out`` (and the steps those print), once each."""
    for cmd in hints(out):
        key = shlex.join(cmd)
        if key in done:
            continue
        done.add(key)
        if cmd[1] == "serve":
            serve_once(cwd, cmd)
            continue
        code = main([*cmd[1:], *SMALL.get(cmd[1], [])])
        res = capsys.readouterr()
        assert code == 0, f"printed step failed: {key}\n{res.err}"
        if depth < 4 and "next: " in res.out:
            follow(cwd, res.out, capsys, done, depth + 1)


def test_synthetic_chain(tmp_path, monkeypatch, capsys):
    """corpus build synthetic -> train -> sample, record -> detect, serve; export-model -> info."""
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "corpus", "build", "synthetic", "--chars", "20000"]) == 0
    out = capsys.readouterr().out
    assert hints(out) == [["lstmscope", "train", "--data", "data/synthetic", "-o",
                           "runs/synthetic"]]  # fmt: skip
    done: set[str] = set()
    follow(tmp_path, out, capsys, done)
    assert any(c.startswith("lstmscope detect") for c in done), done
    assert any(c.startswith("lstmscope serve") for c in done), done
    # record --if-missing on the store the chain made, and export-model
    assert main(["record", "runs/synthetic", "--data", "data/synthetic", "-o",
                 "stores/synthetic", "--if-missing"]) == 0  # fmt: skip
    assert hints(capsys.readouterr().out) == [["lstmscope", "serve", "stores/synthetic"]]
    assert main(["export-model", "runs/synthetic", "-o", "exported"]) == 0
    follow(tmp_path, capsys.readouterr().out, capsys, done)


def test_compare_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text(generate(6000, seed=2).text)
    assert main(["-q", "compare", "--data", "t.txt", "--cells", "gru,lstm", "--max-steps", "2",
                 "--hidden", "8", "--embed", "4", "--batch", "2", "--seq-len", "16",
                 "--eval-every", "1", "-o", "cmp", "--device", "cpu"]) == 0  # fmt: skip
    follow(tmp_path, capsys.readouterr().out, capsys, set())


def view_docs(**_) -> list[Document]:
    """A small stand-in for demo-view (which fetches through pip): held-out-style documents."""
    text = generate(8000, seed=9).text
    return [Document(f"doc{i}", text[i * 2000 : (i + 1) * 2000]) for i in range(4)]


def test_record_only_corpus(tmp_path, monkeypatch, capsys):
    """A corpus built only to be recorded (demo-view) must not suggest training on it, and its
    empty val split must be named, with --split train, when recorded without --split."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(RECIPES, "demo-view", Recipe("demo-view", "stand-in", view_docs))
    assert main(["-q", "corpus", "build", "demo-view"]) == 0
    out = capsys.readouterr().out
    assert hints(out) == [["lstmscope", "record", "demo", "--data", "data/demo-view", "--split",
                           "train", "-o", "stores/demo-view"]]  # fmt: skip
    follow(tmp_path, out, capsys, set())
    assert main(["record", "demo", "--data", "data/demo-view", "-o", "stores/v"]) == 2
    err = capsys.readouterr().err
    assert "the val split of data/demo-view is empty" in err and "pass --split train" in err


def test_corpus_too_small_to_validate(tmp_path, monkeypatch, capsys):
    """A corpus whose val split is under what train needs suggests recording it instead."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.py").write_text("def f(x):\n    return [x, (x + 1)]\n" * 30)
    assert main(["-q", "corpus", "build", "small.py", "-o", "data/small"]) == 0
    out = capsys.readouterr().out
    assert "train` needs 64" in out
    assert hints(out)[0][:2] == ["lstmscope", "record"]
    follow(tmp_path, out, capsys, set())
