"""Reading corpora: files, folders, globs, odd encodings; splits and the corpus folder."""

from __future__ import annotations

import json
import os

import pytest

from lstmscope.errors import CorpusError
from lstmscope.text.corpus import (
    Document,
    decode_text,
    load_text,
    read_documents,
    split_documents,
    write_corpus,
)
from lstmscope.text.recipes import RECIPES, python_docs, python_stdlib_mini


def test_decode_variants():
    assert decode_text("héllo\r\nworld\r".encode()) == "héllo\nworld\n"
    assert decode_text("\ufeffbom".encode()) == "bom"
    assert decode_text("utf16 ✓".encode("utf-16")) == "utf16 ✓"
    assert decode_text(b"\x89PNG\r\n\x1a\n\x00\x00") is None
    assert decode_text(b"caf\xe9") is None  # latin-1, not UTF-8


def test_folder_glob_and_skips(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("hello\n")
    (tmp_path / "sub" / "c.bin").write_bytes(b"\x00\x01")
    (tmp_path / "bad.txt").write_bytes(b"ok \xc3\x28 invalid utf-8")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")  # a symlink loop is walked once
    rep = read_documents([str(tmp_path)])
    names = sorted(os.path.basename(d.name) for d in rep.documents)
    assert names == ["a.py", "b.txt"]
    assert rep.skipped["binary or undecodable files"] == 1
    assert rep.skipped["files with a non-text suffix"] == 1
    rep = read_documents([str(tmp_path / "**" / "*.txt")])
    assert [os.path.basename(d.name) for d in rep.documents] == ["b.txt"]


def test_empty_and_missing(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        read_documents([str(tmp_path / "missing")])
    with pytest.raises(CorpusError, match="matches no files"):
        read_documents([str(tmp_path / "*.nothing")])


def test_split_many_and_few():
    many = [Document(f"d{i}", f"text {i}\n" * 10) for i in range(100)]
    tr, va = split_documents(many)
    assert 1 <= len(va) <= 15 and len(tr) + len(va) == 100
    few = [Document("one", "a" * 1000)]
    tr, va = split_documents(few)
    assert len(tr[0].text) == 950 and len(va[0].text) == 50


def test_corpus_folder_round_trip(tmp_path):
    docs = [Document("a", "first doc"), Document("b", "second doc\n")]
    m = write_corpus(tmp_path, docs, recipe="test")
    src = load_text([str(tmp_path)], "train")
    assert src.text == (tmp_path / "train.txt").read_text()
    for (s, e), d in zip(src.documents, m["train"]["documents"], strict=True):
        assert src.text[s:e].startswith(d["name"][:0])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["sha256"]) == 64


def test_builtin_recipes_from_the_interpreter():
    mini = python_stdlib_mini()
    total = sum(len(d.text) for d in mini)
    assert len(mini) >= 20 and 700_000 < total < 2_000_000
    docs = python_docs()
    assert sum(len(d.text) for d in docs) > 200_000
    assert {"python-stdlib", "synthetic", "wiki", "linux", "shakespeare"} <= set(RECIPES)


def test_synthetic_corpus_labels_line_up(tmp_path):
    import numpy as np

    from lstmscope.analysis.features import compute
    from lstmscope.cli import main

    assert main(["corpus", "build", "synthetic", "--chars", "30000", "-o", str(tmp_path)]) == 0
    for split in ("train", "val"):
        text = (tmp_path / f"{split}.txt").read_text(encoding="utf-8")
        labels = np.load(tmp_path / f"{split}.labels.npz")
        feats = compute(text, list(labels.files))
        for name in labels.files:
            assert len(labels[name]) == len(text)
            assert np.array_equal(labels[name], feats[name]), (split, name)
