"""Hostile corpora: odd bytes and encodings, line ends, links, special files, huge and many files.

Every path through corpus building, training and recording either works or fails with an
``LstmscopeError`` whose message says what happened and what to do; the feature functions never
crash on any string. Property tests run derandomized, so a run is repeatable.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstmscope.analysis.features import (
    FEATURES,
    FeatureError,
    compute,
    parse_feature_spec,
    regex_feature,
    span_feature,
)
from lstmscope.cli import main
from lstmscope.errors import CorpusError, StoreError
from lstmscope.text.corpus import (
    Document,
    decode_text,
    join_documents,
    load_text,
    read_documents,
    split_documents,
    write_corpus,
)
from lstmscope.text.vocab import UNK, Vocab

REPO = Path(__file__).resolve().parents[1]

# --- strategies --------------------------------------------------------------------------------

# Every code point, lone surrogates included: a Python str may hold them, features must not care.
ANY_CHAR = st.characters(exclude_categories=())
# What the lexical scan, the line structure and the decoders react to.
PIECES = [
    "\r\n", "\r", "\n", "\x00", "\t", " ", "    ", "'", '"', "'''", '"""', "\\", "#", "//",
    "/*", "*/", "(", ")", "[", "]", "{", "}", ";", "http://a.io/x?q=1#f", "www.", "HTTPS://",
    "don't", "r'", 'b"', "_", "a", "1", "é", "\ufeff", "\u2028", "\x85", "\x0c", "\x1b",
    "\ufffd", "\U0001f600", "\ud800", "\udfff",
]  # fmt: skip
HOSTILE_TEXT = st.one_of(
    st.text(),
    st.text(ANY_CHAR, max_size=40),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(ANY_CHAR, max_size=3)), max_size=60).map(
        "".join
    ),
)
BOMS = [b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00"]
HOSTILE_BYTES = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from(BOMS), st.binary(max_size=200)).map(b"".join),
    # Text that is valid in some encoding, with a BOM or not: must decode, or be refused whole.
    st.tuples(HOSTILE_TEXT, st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-16-be"])).map(
        lambda t: t[0].encode(t[1], "surrogatepass")
    ),
)
# Derandomized: the same examples every run. Budgets keep the file well under a minute on two
# cores; the feature properties get the most, they are where a crash would hide.
PROPERTY = settings(
    derandomize=True,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEATURE_PROPERTY = settings(PROPERTY, max_examples=1000)

# --- reference implementations (plain loops, the rules of interpret/analysis/features.py's docstring) ---


def ref_lines(text: str) -> dict[str, np.ndarray]:
    """column, to_eol and indent, line by line: line ends are \\r\\n, \\r and \\n."""
    n = len(text)
    col, to_eol, indent = (np.zeros(n, dtype=np.int64) for _ in range(3))
    start = 0
    while start < n:
        end = start
        while end < n and text[end] not in "\r\n":
            end += 1
        stop = end
        if end < n:
            stop = end + (2 if text[end] == "\r" and text[end + 1 : end + 2] == "\n" else 1)
        width, k = 0, start
        while k < end and text[k] in " \t":
            width += 1 if text[k] == " " else 4
            k += 1
        for p in range(start, stop):
            col[p] = min(p, end) - start
            to_eol[p] = max(end - p, 0)
            indent[p] = width // 4
        start = stop
    return {"column": col, "to_eol": to_eol, "indent": indent}


def ref_word_pos(text: str) -> np.ndarray:
    out, run = np.zeros(len(text), dtype=np.int64), 0
    for i, c in enumerate(text):
        run = run + 1 if (c.isalnum() or c == "_") else 0
        out[i] = run
    return out


def ref_depth(text: str, code: np.ndarray, pairs: str) -> np.ndarray:
    opens, closes = set(pairs[::2]), set(pairs[1::2])
    out, d = np.zeros(len(text), dtype=np.int64), 0
    for i, c in enumerate(text):
        if code[i] and c in opens:
            d += 1
            out[i] = d
        elif code[i] and c in closes:
            out[i] = d  # a closer keeps the inner depth; one with nothing open is ignored
            d = max(0, d - 1)
        else:
            out[i] = d
    return out


URL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#@!$&+,;=%")


def run_starts(mask: np.ndarray) -> np.ndarray:
    """Positions where a run of True begins."""
    return np.flatnonzero(mask & ~np.concatenate(([False], mask[:-1])))


# --- 1. properties: features ------------------------------------------------------------------


@FEATURE_PROPERTY
@given(text=HOSTILE_TEXT)
def test_every_feature_on_any_text(text: str) -> None:
    n = len(text)
    feats = compute(text)
    assert list(feats) == list(FEATURES)  # the registry is the list: new features are covered
    for name, feat in FEATURES.items():
        alone = feat(text)  # each feature on its own, not only through the shared passes
        want = np.bool_ if feat.kind == "binary" else np.int32
        for arr in (feats[name], alone):
            assert arr.shape == (n,) and arr.dtype == want, name
        assert np.array_equal(feats[name], alone), name
        if feat.kind == "graded":
            assert (feats[name] >= 0).all(), name

    chars = list(text)
    # Character classes are the str methods, newline is exactly \r and \n.
    for name, fn in {
        "is_space": str.isspace,
        "is_letter": str.isalpha,
        "is_digit": str.isdigit,
        "is_upper": str.isupper,
        "is_punct": lambda c: unicodedata.category(c)[0] in "PS",
        "is_newline": lambda c: c in "\r\n",
    }.items():
        assert feats[name].tolist() == [fn(c) for c in chars], name
    # Line structure: column restarts after every line end, line ends sit at the content length.
    for name, ref in ref_lines(text).items():
        assert np.array_equal(feats[name], ref), name
    assert np.array_equal(feats["word_pos"], ref_word_pos(text))
    # Lexical spans never overlap, and each run starts at its opening delimiter.
    dq, sq, com = feats["in_dquote"], feats["in_squote"], feats["in_comment"]
    assert np.array_equal(feats["in_string"], dq | sq)
    assert not (dq & sq).any() and not (com & (dq | sq)).any()
    assert all(text[i] == '"' for i in run_starts(dq))
    assert all(text[i] == "'" for i in run_starts(sq))
    assert all(text[i] in "#/" for i in run_starts(com))
    assert all(chars[i] in URL_CHARS for i in np.flatnonzero(feats["in_url"]))
    # Brackets count in code only, closers clip at zero.
    code = ~(dq | sq | com)
    for name, pairs in [("depth_paren", "()"), ("depth_square", "[]"), ("depth_curly", "{}"),
                        ("depth_total", "()[]{}")]:  # fmt: skip
        assert np.array_equal(feats[name], ref_depth(text, code, pairs)), name


@FEATURE_PROPERTY
@given(text=HOSTILE_TEXT)
def test_line_end_conventions_agree(text: str) -> None:
    """CRLF and lone CR text labels like its LF form (what ``decode_text`` turns it into), so
    features computed on raw text and on a built corpus agree character for character."""
    lf = text.replace("\r\n", "\n").replace("\r", "\n")
    assert decode_text(text.encode("utf-8", "surrogatepass")) in (
        None,
        lf,
        lf.removeprefix("\ufeff"),
    )
    # The second character of each \r\n pair is the one the LF form drops.
    keep = np.array([not (c == "\n" and i and text[i - 1] == "\r") for i, c in enumerate(text)],
                    dtype=bool)  # fmt: skip
    raw, norm = compute(text), compute(lf)
    for name in FEATURES:
        assert np.array_equal(raw[name][keep], norm[name]), name


@settings(PROPERTY, max_examples=400)
@given(pattern=HOSTILE_TEXT, text=HOSTILE_TEXT, spans=st.lists(st.tuples(st.integers(-3, 70),
       st.integers(-3, 70)), max_size=4))  # fmt: skip
def test_user_features_never_crash(pattern: str, text: str, spans: list) -> None:
    """A user's pattern or span is a ``Feature`` or a ``FeatureError``, never a stack trace."""
    try:
        feat = parse_feature_spec("mine=" + pattern)
    except FeatureError as e:
        assert str(e)
    else:
        try:
            arr = feat(text)
        except FeatureError as e:  # only a timeout may stop a valid pattern
            assert "took over" in str(e)
        else:
            assert arr.shape == (len(text),) and arr.dtype == np.bool_
    try:
        arr = regex_feature("x", pattern, text, timeout=0.5)
        assert arr.shape == (len(text),) and arr.dtype == np.bool_
    except FeatureError as e:
        assert str(e)
    try:
        arr = span_feature(len(text), spans)
        assert arr.shape == (len(text),) and arr.dtype == np.bool_
    except FeatureError as e:
        assert "bad span" in str(e)


def test_features_on_huge_and_pathological_lines() -> None:
    """Linear time on inputs that trip naive scanners (unclosed strings, runs of quotes,
    backslashes, comment openers, URLs that never end)."""
    cases = {
        "one 1M line": "x" * 1_000_000,
        "quotes": '"' * 200_000,
        "apostrophes": "a'" * 100_000,
        "triple quotes": "'''" * 60_000,
        "backslashes": "\\" * 200_001,
        "comment openers": "/*" * 100_000,
        "slashes after blanks": "x" + " " * 100_000 + "//" * 50_000,
        "url": "http://" + "." * 200_000,
        "brackets": "(" * 100_000 + "]" * 100_000,
        "crlf": "\r\n" * 100_000 + "\r" * 100_000,
    }
    for label, text in cases.items():
        t0 = time.perf_counter()
        feats = compute(text)
        assert all(len(a) == len(text) for a in feats.values()), label
        assert time.perf_counter() - t0 < 20, label
    col = compute("x" * 1_000_000)["column"]
    assert col[-1] == 999_999 and col.dtype == np.int32


# --- 1. properties: decoding and reading --------------------------------------------------------


@settings(PROPERTY, max_examples=1000)
@given(data=HOSTILE_BYTES)
def test_decode_any_bytes(data: bytes) -> None:
    """Text with one newline convention, no NUL, storable as UTF-8; or None. Never an error."""
    text = decode_text(data)
    if text is not None:
        assert isinstance(text, str)
        assert "\r" not in text and "\x00" not in text
        text.encode("utf-8")  # strict: no lone surrogate can reach a corpus file


@settings(PROPERTY, max_examples=300)
@given(text=st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=80),
       enc=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"]))  # fmt: skip
def test_decode_text_round_trips_every_supported_encoding(text: str, enc: str) -> None:
    data = text.encode(enc)
    if enc in ("utf-16-le", "utf-16-be"):
        data = ("\ufeff".encode(enc)) + data  # a BOM is how a UTF-16 file says what it is
    lf = text.replace("\r\n", "\n").replace("\r", "\n")
    if enc == "utf-8" and lf.startswith("\ufeff"):
        lf = lf[1:]  # a leading U+FEFF in UTF-8 is read as a BOM
    assert decode_text(data) == lf


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scratch")


@PROPERTY
@given(data=HOSTILE_BYTES)
def test_read_documents_any_file(scratch: Path, data: bytes) -> None:
    """A file of any bytes is one document or a ``CorpusError`` naming why it was skipped."""
    path = scratch / "any.txt"
    path.write_bytes(data)
    try:
        rep = read_documents(str(path))
    except CorpusError as e:
        msg = str(e)
        assert "no text found" in msg and "UTF-8 or UTF-16" in msg
        assert "binary or undecodable" in msg or "empty files" in msg, msg
    else:
        assert [d.text for d in rep.documents] == [decode_text(data)]


@PROPERTY
@given(text=HOSTILE_TEXT)
def test_corpus_folder_round_trips_any_text(scratch: Path, text: str) -> None:
    """What ``write_corpus`` writes, ``load_text`` reads back exactly (\\r and all), or the
    write is refused with a ``CorpusError`` (lone surrogates cannot be stored as UTF-8)."""
    out = scratch / "rt"
    docs = [Document("a", text), Document("b", "tail")]
    try:
        m = write_corpus(out, docs, recipe="test")
    except CorpusError as e:
        assert "UTF-8 cannot store" in str(e)
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        return
    for split in ("train", "val"):
        src = load_text([str(out)], split)
        assert len(src.text) == m[split]["chars"]
        part = split_documents(docs)[split == "val"]
        assert src.text == "".join(d.text if d.text.endswith("\n") else d.text + "\n" for d in part)


@PROPERTY
@given(text=HOSTILE_TEXT)
def test_vocab_round_trips_any_text(scratch: Path, text: str) -> None:
    """A vocabulary of any text (NUL, lone surrogates, U+FFFD itself) survives JSON and
    encodes its own text losslessly; any other character is the unknown id, and counted."""
    vocab = Vocab.from_text(text)
    assert Vocab.from_json(vocab.to_json()) == vocab
    vocab.save(scratch / "vocab.json")
    assert Vocab.load(scratch / "vocab.json") == vocab
    ids = vocab.encode(text)
    assert ids.shape == (len(text),) and ids.dtype == np.int64
    assert vocab.decode(ids) == text and vocab.count_unknown(text) == 0
    unseen = next(c for c in "\U0001f600€\x00\ud800z" if c not in vocab.chars)
    assert vocab.encode(text + unseen)[-1] == vocab.unk_id == 0
    assert vocab.count_unknown(unseen + text + unseen) == 2


def test_damaged_vocab_file_is_a_clear_error(tmp_path, capsys):
    """``train --resume`` reads vocab.json: a damaged one was a KeyError traceback."""
    bad = [
        '{"format": "lstmscope-vocab", "version": 1}',
        '{"format": "lstmscope-vocab", "chars": "abc"}',
        '{"format": "lstmscope-vocab", "chars": ["\\ufffd", "ab"]}',
        '{"format": "lstmscope-vocab", "chars": ["\\ufffd", 3]}',
        "[1, 2]",
        "not json",
    ]
    for text in bad:
        (tmp_path / "vocab.json").write_text(text)
        with pytest.raises(ValueError):
            Vocab.load(tmp_path / "vocab.json")
    with pytest.raises(ValueError, match="single characters"):
        Vocab((UNK, "ab"))
    (tmp_path / "data.txt").write_text("some text to train on\n" * 20)
    (tmp_path / "vocab.json").write_text(bad[0])
    argv = ["-q", "train", "--data", str(tmp_path / "data.txt"), "-o", str(tmp_path), "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "damaged lstmscope vocab file" in err


# --- 2. fixed cases: building a corpus ----------------------------------------------------------


def build(src: Path | str, out: Path, capsys) -> tuple[int, str, str]:
    """``lstmscope corpus build SRC -o OUT``, in-process: (exit code, stdout, stderr)."""
    code = main(["corpus", "build", str(src), "-o", str(out)])
    res = capsys.readouterr()
    return code, res.out, res.err


def corpus_text(out: Path) -> str:
    """train + val of a built corpus, read back byte-exact."""
    return "".join((out / f"{s}.txt").read_bytes().decode("utf-8") for s in ("train", "val"))


def expected_text(*texts: str) -> str:
    """train + val that building gives for these document texts (split, then joined)."""
    train, val = split_documents([Document(f"d{i}", t) for i, t in enumerate(texts)])
    return join_documents(train)[0] + join_documents(val)[0]


def test_random_bytes_and_invalid_utf8(tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    (src / "noise.txt").write_bytes(rng.integers(1, 256, 100_000, dtype=np.uint8).tobytes())
    (src / "latin1.txt").write_bytes("café crème brûlée\n".encode("latin-1"))
    (src / "truncated.py").write_bytes("x = '✓'\n".encode()[:-3])  # cut inside a character
    code, _, err = build(src, tmp_path / "out", capsys)
    assert code == 2 and "Traceback" not in err
    assert "no text found" in err and "3 binary or undecodable files" in err
    assert "UTF-8 or UTF-16" in err  # and what lstmscope does read
    assert not (tmp_path / "out").exists()
    # Next to one good file, the corpus builds and the skip report counts the rest.
    (src / "good.md").write_text("fine text\n" * 20)
    code, _, err = build(src, tmp_path / "out", capsys)
    assert code == 0, err
    assert "1 documents" in err and "skipped 3 binary or undecodable files" in err
    assert corpus_text(tmp_path / "out") == expected_text("fine text\n" * 20)


@pytest.mark.parametrize("enc", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom_decodes_and_loads(tmp_path, capsys, enc):
    """UTF-16 is text, with its CRLF normalised like UTF-8's; the built corpus then loads (a
    \\r\\n left in train.txt made ``load_text`` fail: 'length differs from manifest')."""
    body = 'def f(x):\r\n    return "✓ naïve ☃" + x  # 𝄞\r\n' * 30
    data = body.encode(enc)
    if enc != "utf-16":
        data = "\ufeff".encode(enc) + data
    src = tmp_path / "w.py"
    src.write_bytes(data)
    code, _, err = build(src, tmp_path / "out", capsys)
    assert code == 0, err
    assert corpus_text(tmp_path / "out") == expected_text(body.replace("\r\n", "\n"))
    for split in ("train", "val"):
        assert "\r" not in load_text([str(tmp_path / "out")], split).text


def test_nul_bytes_mean_binary_anywhere(tmp_path):
    """Policy: a NUL anywhere makes a file binary (skipped, counted), not only in the first
    8 KiB; a NUL character decoded from UTF-16 too. No NUL ever reaches a vocabulary."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "head.txt").write_bytes(b"\x00abc\n")
    (src / "deep.txt").write_bytes(b"a" * 100_000 + b"\x00" + b"b\n")
    (src / "wide.txt").write_bytes("x\x00y".encode("utf-16"))
    (src / "utf32.txt").write_bytes("hello".encode("utf-32"))  # BOM ff fe 00 00: NULs
    (src / "ok.txt").write_text("plain\n")
    rep = read_documents(str(src))
    assert [Path(d.name).name for d in rep.documents] == ["ok.txt"]
    assert rep.skipped["binary or undecodable files"] == 4
    assert "4 binary or undecodable files" in rep.summary()


def test_crlf_and_cr_are_normalised_and_features_agree(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    raw = {
        "crlf.py": b'x = "a"\r\nif x:  # c\r\n    y = (1,\r\n         2)\r\n',
        "cr.txt": b"old mac\rline two\r\rend",
        "mixed.txt": b"a\r\nb\rc\nd\r",
    }
    for name, data in raw.items():
        (src / name).write_bytes(data)
    rep = read_documents(str(src))
    by_name = {Path(d.name).name: d.text for d in rep.documents}
    assert by_name["cr.txt"] == "old mac\nline two\n\nend"
    assert by_name["mixed.txt"] == "a\nb\nc\nd\n"
    code, _, err = build(src, tmp_path / "out", capsys)
    assert code == 0, err
    assert b"\r" not in (tmp_path / "out" / "train.txt").read_bytes()
    # The model sees LF text; the same features on the raw CRLF text give the same labels.
    text = raw["crlf.py"].decode()
    keep = np.array([not (c == "\n" and text[i - 1] == "\r") for i, c in enumerate(text)])
    raw_feats, lf_feats = compute(text), compute(by_name["crlf.py"])
    for name in FEATURES:
        assert np.array_equal(raw_feats[name][keep], lf_feats[name]), name
    assert lf_feats["depth_paren"].max() == 1 and lf_feats["indent"].max() == 2


def test_symlink_loops_are_walked_once(tmp_path):
    """Two looping folder links: a folder walk and a ``**`` glob finish at once (``glob.glob``
    followed each loop to the depth limit, once per link: 2**40 paths), each file read once."""
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.py").write_text("beta = 1\n")
    os.symlink("..", root / "sub" / "up")
    os.symlink("..", root / "sub" / "up2")
    os.symlink(root / "sub", root / "side")
    os.symlink("l2.txt", root / "l1.txt")  # a file link loop
    os.symlink("l1.txt", root / "l2.txt")
    os.symlink("gone.txt", root / "broken.txt")
    for spec in (root, root / "**" / "*.*", root / "**"):
        t0 = time.perf_counter()
        rep = read_documents(str(spec))
        assert time.perf_counter() - t0 < 5, spec
        assert sorted(d.text for d in rep.documents) == ["alpha\n", "beta = 1\n"], spec
        assert rep.skipped["broken or looping links"] == 3, (spec, rep.summary())
        assert "broken or looping links" in rep.summary()


def test_recursive_glob_keeps_glob_semantics(tmp_path, monkeypatch):
    """``**`` is walked by our loop-safe walker now; on a tree without loops it must pick
    exactly what ``glob.glob(recursive=True)`` picks (hidden names included or not)."""
    monkeypatch.chdir(tmp_path)
    for f in ["t/x.txt", "t/.hid.txt", "t/a/y.py", "t/a/b/z.txt", "t/a/b/c/w.txt",
              "t/.h/x/q.txt", "t/.h/r.txt", "t/a/.g/s.txt", "t/d1/e/u.txt", "t/d2/v.txt"]:  # fmt: skip
        Path(f).parent.mkdir(parents=True, exist_ok=True)
        Path(f).write_text(f + "\n")
    for pat in ["t/**", "t/**/*.txt", "t/**/b/**/*.txt", "t/*/**/*.txt", "t/d*/**", "t/**/.h/**",
                "t/.h/**/*.txt", "t/**/.*.txt", "**/*.py", "t/**/**/*.txt", "t/a/**/c/*",
                f"{tmp_path}/t/**/e/*.txt"]:  # fmt: skip
        want = sorted({m for m in glob.glob(pat, recursive=True) if os.path.isfile(m)})
        assert sorted(d.name for d in read_documents(pat).documents) == want, pat


def test_glob_characters_and_undecodable_names(tmp_path, capsys):
    """A real file named like a glob is read as itself; names that are not UTF-8 (surrogate
    escapes in Python) or hold a newline survive the split's name hash and the manifest."""
    odd = tmp_path / "data[1].txt"
    odd.write_text("bracketed\n")
    assert [d.text for d in read_documents(str(odd)).documents] == ["bracketed\n"]
    src = tmp_path / "names"
    src.mkdir()
    for i in range(25):  # 20+ documents: whole documents go to validation by a hash of the name
        (src / f"f{i:02d}.txt").write_text(f"doc {i}\n")
    (src / os.fsdecode(b"caf\xe9.txt")).write_text("latin-1 name\n")
    (src / "new\nline.txt").write_text("newline name\n")
    code, _, err = build(src, tmp_path / "out", capsys)
    assert code == 0, err
    text = corpus_text(tmp_path / "out")
    assert "latin-1 name\n" in text and "newline name\n" in text


@pytest.mark.timeout(60)
def test_fifo_and_devices_are_skipped_not_read(tmp_path):
    """A FIFO in a corpus folder used to block ``read_bytes`` forever (no writer ever comes)."""
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe.txt")
    os.symlink("/dev/zero", src / "zero.txt")  # a device never ends
    (src / "ok.txt").write_text("fine\n")
    rep = read_documents(str(src))
    assert [d.text for d in rep.documents] == ["fine\n"]
    assert rep.skipped["special files (FIFOs, sockets, devices)"] == 2
    with pytest.raises(CorpusError, match="not a regular file or folder"):
        read_documents(str(src / "pipe.txt"))


def test_unreadable_file_even_as_root(tmp_path):
    """``/proc/self/mem`` is a regular file whose read fails (EIO) for every user, root too."""
    if not Path("/proc/self/mem").exists():
        pytest.skip("needs Linux /proc")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("/proc/self/mem", src / "mem.txt")
    with pytest.raises(CorpusError) as e:
        read_documents(str(src))
    assert "1 unreadable files" in str(e.value) and "check the permissions" in str(e.value)
    (src / "ok.txt").write_text("fine\n")
    rep = read_documents(str(src))
    assert rep.skipped["unreadable files"] == 1 and len(rep.documents) == 1


def test_sizes_that_lie_and_files_over_the_limit(tmp_path):
    """/proc files say 0 bytes and hold text: read to the end all the same. A (sparse) 65 MB
    file is over the limit: skipped by its size, never read into memory."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "huge.txt").touch()
    os.truncate(src / "huge.txt", 65 << 20)
    if Path("/proc/self/status").exists():
        os.symlink("/proc/self/status", src / "status.txt")
    rep = read_documents(str(src))
    assert rep.skipped["files over 64 MB"] == 1
    if Path("/proc/self/status").exists():
        assert len(rep.documents) == 1 and "VmRSS" in rep.documents[0].text


def test_permission_denied_files_and_folders(tmp_path):
    """chmod 000 blocks nobody running as root, so the check drops root's permission override
    (``setpriv``) for the subprocess that reads: what an ordinary user meets."""
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "x.txt").write_text("hidden\n")
    (src / "secret.txt").write_text("secret\n")
    (src / "ok.txt").write_text("fine\n")
    os.chmod(src / "secret.txt", 0)
    os.chmod(src / "locked", 0)
    code = (
        "import sys; from lstmscope.text.corpus import read_documents as r; "
        "rep = r([sys.argv[1]]); print(rep.summary()); print(len(rep.documents))"
    )
    cmd = [sys.executable, "-c", code, str(src)]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: chmod cannot deny a read")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    finally:
        os.chmod(src / "locked", 0o755)
        os.chmod(src / "secret.txt", 0o644)
    if "Operation not permitted" in res.stderr:
        pytest.skip("this container does not allow dropping capabilities")
    assert res.returncode == 0, res.stderr
    assert "1 unreadable files" in res.stdout and "1 unreadable folders" in res.stdout
    assert res.stdout.splitlines()[-1] == "1"


def test_all_skipped_is_a_clear_error_with_advice(tmp_path, capsys):
    """An empty corpus stops in ``read_documents`` with what was skipped and what to do, as a
    ``CorpusError`` (library) and one line on stderr, exit 2 (CLI), for build and train alike."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "blank.txt").write_text(" \n\t\n")
    (src / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (src / "bin.txt").write_bytes(bytes(range(256)))
    (src / ".env").write_text("TOKEN=secret\n")  # hidden files are skipped like hidden folders
    with pytest.raises(CorpusError) as e:
        read_documents(str(src))
    msg = str(e.value)
    assert "1 hidden files" in msg and "TOKEN" not in msg
    for needle in ("no text found", "1 empty files", "1 binary or undecodable files",
                   "1 files with a non-text suffix", "UTF-8 or UTF-16", "name other files"):  # fmt: skip
        assert needle in msg, msg
    with pytest.raises(CorpusError, match="no text found"):
        load_text([str(src)])  # what train and record call
    for argv in (["corpus", "build", str(src), "-o", str(tmp_path / "c")],
                 ["-q", "train", "--data", str(src), "-o", str(tmp_path / "r")]):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "error: no text found" in err and "UTF-8 or UTF-16" in err
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()


def test_lone_surrogates_are_refused_by_write_corpus(tmp_path):
    with pytest.raises(CorpusError, match="UTF-8 cannot store") as e:
        write_corpus(tmp_path / "c", [Document("bad", "ok \ud800 no")], recipe="test")
    assert "'bad'" in str(e.value) and "character 3" in str(e.value)
    assert not (tmp_path / "c" / "manifest.json").exists()


@pytest.mark.slow
def test_50mb_single_line(tmp_path):
    """Built in a subprocess through the CLI, so its peak memory is its own."""
    if not Path("/proc/self/status").exists():
        pytest.skip("measures peak memory through Linux /proc")
    big = tmp_path / "line.txt"
    with open(big, "wb") as f:
        for _ in range(50):
            f.write(b"abcdefghi " * 100_000)  # 1 MB, no newline anywhere
    # Peak RSS after the build minus peak RSS after the same imports (argv[3] == "dry").
    # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at the parent's (pytest's) peak.
    script = (
        "import re, sys, time; from lstmscope import cli; from lstmscope.text import corpus, recipes; "
        "t = time.perf_counter(); "
        "code = 0 if sys.argv[3] == 'dry' else cli.main(['corpus', 'build', sys.argv[1], "
        "'-o', sys.argv[2]]); "
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
        "print(code, time.perf_counter() - t, int(hwm) // 1024)"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, str(big), str(tmp_path / "out"), mode],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        for mode in ("dry", "build")
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr
    code, seconds, peak_mb = runs[1].stdout.split()[-3:]
    growth = int(peak_mb) - int(runs[0].stdout.split()[-1])
    print(f"\n50 MB single line: built in {float(seconds):.1f} s, peak RSS +{growth} MB")
    assert code == "0" and float(seconds) < 120
    assert growth < 8 * 50, growth  # a few copies of the text, not one per character
    out = tmp_path / "out"
    size = sum((out / f"{s}.txt").stat().st_size for s in ("train", "val"))
    assert size == 50_000_000 + 2  # each split ends with the newline join_documents adds


@pytest.mark.slow
def test_100k_tiny_files(tmp_path, capsys):
    """Building stays linear in the number of files. The files live on tmpfs when there is one:
    making 100k inodes on a busy ext4 took 30 s, on tmpfs 1 s, and the build is what is timed."""
    shm = Path("/dev/shm")
    src = Path(
        tempfile.mkdtemp(prefix="lstmscope-many-", dir=shm if os.access(shm, os.W_OK) else tmp_path)
    )
    try:
        t0 = time.perf_counter()
        for i in range(100_000):
            sub = src / f"d{i // 1000:03d}"
            if i % 1000 == 0:
                sub.mkdir()
            fd = os.open(sub / f"f{i:06d}.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"" if i % 10_000 == 7 else f"x{i}\n".encode())
            os.close(fd)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        code, _, err = build(src, tmp_path / "out", capsys)
        seconds = time.perf_counter() - t0
        print(
            f"\n100,000 tiny files ({src.parent}): made in {made:.1f} s, built in {seconds:.1f} s"
        )
        assert code == 0, err
        assert "99990 documents" in err and "skipped 10 empty files" in err
        assert seconds < 120
        m = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert len(m["train"]["documents"]) + len(m["val"]["documents"]) == 99_990
    finally:
        shutil.rmtree(src, ignore_errors=True)  # 100k inodes: do not leave them behind


# --- 3. training on a hostile corpus and recording --------------------------------------------


def hostile_folder(root: Path) -> Path:
    """Code and prose in every supported encoding and line end, beside files that must be
    skipped: the corpus a real user's messy folder gives."""
    rng = np.random.default_rng(1)
    src = root / "messy"
    src.mkdir()
    code = 'def f(x):\n    """Doc ✓."""\n    return [x, {"k": (1, 2)}]  # see http://a.io/x\n'
    (src / "unix.py").write_text(code * 30)
    (src / "dos.py").write_bytes((code * 30).replace("\n", "\r\n").encode("utf-16"))
    (src / "mac.txt").write_bytes(("Naïve prose, ünïcödé\tand tabs.\r" * 40).encode("utf-8-sig"))
    (src / "ctrl.txt").write_text("esc \x1b[1m bold \x0c page \u2028 sep \u200b zw\n" * 20)
    (src / "noise.txt").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (src / "nul.txt").write_bytes(b"text\x00more\n")
    (src / "empty.md").write_bytes(b"")
    os.symlink(".", src / "loop")
    os.mkfifo(src / "pipe.txt")
    return src


@pytest.mark.timeout(300)
def test_train_and_record_on_a_hostile_corpus(tmp_path, capsys):
    from lstmscope.model.checkpoint import load_model
    from lstmscope.store.reader import ActivationStore
    from lstmscope.store.recorder import record

    src = hostile_folder(tmp_path)
    corpus = tmp_path / "corpus"
    code, _, err = build(src, corpus, capsys)
    assert code == 0, err
    for reason in ("2 binary or undecodable files", "1 empty files", "1 special files"):
        assert reason in err, err
    run = tmp_path / "run"
    assert main(["-q", "train", "--data", str(corpus), "-o", str(run), "--hidden", "8",
                 "--embed", "8", "--layers", "1", "--batch", "2", "--seq-len", "16",
                 "--max-steps", "3", "--eval-every", "2", "--warmup-steps", "1",
                 "--device", "cpu"]) == 0, capsys.readouterr().err  # fmt: skip
    capsys.readouterr()
    loaded = load_model(run, "cpu")
    assert "\r" not in loaded.vocab.chars and "\x00" not in loaded.vocab.chars

    # Record text the model never saw: unseen characters map to the unknown id and are counted.
    unseen = "\U0001f600€ž\x00"
    text = load_text([str(corpus)], "val").text + "plus " + unseen + "\n"
    assert loaded.vocab.count_unknown(text) == len(unseen)
    summary = record(loaded, text, tmp_path / "store", streams=2, warmup=4, progress=False)
    store = ActivationStore.open(tmp_path / "store")
    assert summary.unknown == len(unseen) == store.meta["unknown_chars"]
    assert store.text == text
    at = text.index(unseen)
    assert (store.ids[at : at + len(unseen)] == loaded.vocab.unk_id).all()
    feats = compute(store.text)
    assert all(len(a) == store.n for a in feats.values())

    # The same through the CLI, from a raw UTF-16 CRLF file: the note says how many.
    raw = tmp_path / "new.txt"
    raw.write_bytes(("ok " + unseen.replace("\x00", "") + "\r\n").encode("utf-16"))
    assert main(["-q", "record", str(run), "--data", str(raw), "-o", str(tmp_path / "s2"),
                 "--streams", "1", "--warmup", "0", "--device", "cpu"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "note: 3 characters were never seen in training" in out, out
    assert ActivationStore.open(tmp_path / "s2").text == "ok \U0001f600€ž\n"

    # Nothing to record, or only characters the model never saw.
    with pytest.raises(StoreError, match="nothing to record"):
        record(loaded, "", tmp_path / "s3", progress=False)
    only_unknown = record(loaded, unseen * 5, tmp_path / "s4", streams=1, warmup=0,
                          progress=False)  # fmt: skip
    assert only_unknown.unknown == only_unknown.n == 20


def test_too_little_text_to_train_is_a_clear_error(tmp_path, capsys):
    """A corpus that survives the skips but is tiny stops before training, with advice."""
    src = tmp_path / "tiny.txt"
    src.write_bytes("ab\r\n".encode("utf-16"))
    assert main(["-q", "train", "--data", str(src), "-o", str(tmp_path / "r"), "--device",
                 "cpu"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "error:" in err and ("give more text" in err or "add text" in err), err
