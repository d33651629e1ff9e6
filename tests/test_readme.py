"""The README's figures for the bundled demo model are the model's own (issue 12.12).

They are read from the README's "The bundled demo model" section and compared with what ships in
``interpret/demo/`` (``info.json``, ``config.json``, the file sizes) and with how the Makefile's
``demo-model`` target trains it, so an edit on either side that is not made on the other fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lstmscope.cli import main
from lstmscope.model.checkpoint import DEMO_DIR

ROOT = Path(__file__).resolve().parent.parent


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README has no '## {title}' section"
    return " ".join(m.group(1).split())  # one line: figures may wrap


def number(text: str, pattern: str) -> str:
    m = re.search(pattern, text)
    assert m, f"README's demo model section does not match {pattern!r}:\n{text}"
    return m.group(1)


@pytest.fixture(scope="module")
def readme() -> str:
    return section("The bundled demo model")


@pytest.fixture(scope="module")
def info() -> dict:
    return json.loads((DEMO_DIR / "info.json").read_text(encoding="utf-8"))


def test_step(readme, info):
    assert int(number(readme, r"step ([\d,]+)").replace(",", "")) == info["step"]
    assert not re.search(r"[\d,]{4,} steps", readme), "a step count other than the weights'"


def test_bits_per_character(readme, info):
    by = info["val_bpc_by_corpus"]
    for label, key in (("Python code", "python"), ("Wikipedia", "wiki"),
                       ("pydoc prose", "pydoc"), ("overall", "all")):  # fmt: skip
        got = number(readme, rf"(\d\.\d+) on {label}" if key != "all" else r"(\d\.\d+) overall")
        assert got == f"{by[key]:.{len(got) - 2}f}", (label, got, by[key])
    got = number(readme, r"`best_val_bpc` of \**(\d\.\d+)")
    assert got == f"{info['best_val_bpc']:.{len(got) - 2}f}"


def test_characters_seen(readme, info):
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    target = make.split("\ndemo-model:", 1)[1].split("\n\n", 1)[0]
    batch = int(number(target, r"--batch (\d+)"))
    seq = int(number(target, r"--seq-len (\d+)"))
    assert f"{batch} × {seq} characters a step" in readme
    millions = int(number(readme, r"~(\d+)M characters"))
    assert millions == round(info["step"] * batch * seq / 1e6)
    minutes = number(target, r"--max-minutes (\d+)")
    assert f"up to {minutes} minutes" in readme


def test_shape_and_size(readme):
    cfg = json.loads((DEMO_DIR / "config.json").read_text(encoding="utf-8"))["model"]
    assert f"a {cfg['num_layers']}-layer {cfg['cell'].upper()}, {cfg['hidden_size']} units, " \
           f"embedding {cfg['embed_dim']}" in readme  # fmt: skip
    mib = sum(p.stat().st_size for p in DEMO_DIR.iterdir() if p.is_file()) / 2**20
    assert number(readme, r"\((\d+\.\d) MiB") == f"{mib:.1f}"


def test_info_demo_prints_the_readme_figures(readme, info, capsys):
    assert main(["info", "demo"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"step\s+{info['step']}\b", out)
    assert f"{info['best_val_bpc']:.4f}" in out
    for v in info["val_bpc_by_corpus"].values():
        assert f"{v:.4f}" in out
