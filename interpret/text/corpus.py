"""Corpora: read files, folders and globs into documents; split; write and load corpus folders.

A built corpus is a folder with ``train.txt``, ``val.txt`` (UTF-8) and ``manifest.json`` (the
recipe, the sources, each document's offsets, the text's sha256). Documents are concatenated,
each followed by a newline; the manifest's offsets let recording reset state at document starts.
"""

from __future__ import annotations

import fnmatch
import glob as globlib
import hashlib
import json
import logging
import os
import stat
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lstmscope.disk import atomic_open, atomic_write_text
from lstmscope.errors import CorpusError

log = logging.getLogger(__name__)

# Suffixes read when a folder is given; anything else in a folder is skipped (not an error).
TEXT_SUFFIXES = {
    ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp", ".js", ".ts", ".java", ".go", ".rs",
    ".rb", ".sh", ".txt", ".md", ".rst", ".html", ".css", ".json", ".toml", ".yaml", ".yml",
    ".xml", ".tex", ".sql", ".cfg", ".ini", "",
}  # fmt: skip
MAX_FILE_BYTES = 64 << 20  # a single document larger than this is almost surely not text


@dataclass(frozen=True)
class Document:
    name: str
    text: str


@dataclass
class ReadReport:
    """What reading found: documents kept and, per reason, how many files were skipped."""

    documents: list[Document] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, path: Path | str, reason: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, str(path))

    def summary(self) -> str:
        chars = sum(len(d.text) for d in self.documents)
        s = f"{len(self.documents)} documents, {chars:,} characters"
        if self.skipped:
            parts = [f"{n} {r} (e.g. {self.examples[r]})" for r, n in self.skipped.most_common()]
            s += "; skipped " + "; ".join(parts)
        return s


def decode_text(data: bytes) -> str | None:
    """UTF-8 (with or without BOM) or UTF-16 with a BOM, line ends normalised to ``\\n``.

    None for binary (a NUL character anywhere: images, archives, compiled files, UTF-32) or
    undecodable bytes. The result never holds a lone surrogate, so it can always be written.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return None
        if "\x00" in text:
            return None
    else:
        if b"\x00" in data:  # memchr: cheap even on a 64 MB file
            return None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None
    # One newline convention for the model, whatever the encoding (CRLF and CR -> LF).
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _has_magic(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def _walk(top: Path, report: ReadReport, enter: Callable[[str, str], bool]) -> Iterator:
    """``os.walk`` following links, each real folder once: a symlink loop is walked once.

    Yields ``(root, sorted file names)``; a sub-folder is entered only if ``enter(root, name)``.
    Unreadable folders are skipped and counted.
    """
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(
        top, followlinks=True, onerror=lambda e: report.skip(e.filename, "unreadable folders")
    ):
        try:
            st = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if enter(root, d))
        yield root, sorted(files)


def _glob_step(pattern: tuple[str, ...], states: frozenset[int], name: str) -> frozenset[int]:
    """Positions in ``pattern`` (path components) reachable after one more component ``name``.

    Glob's rules: ``**`` matches zero or more components, never hidden ones; other components
    match one name with ``fnmatch``, a leading ``.`` only if the pattern component has one.
    Start from ``_glob_close(pattern, {0})``; a path matches when ``len(pattern)`` is reachable
    after its last component.
    """
    nxt = set()
    for i in states:
        if i == len(pattern):
            continue
        pat = pattern[i]
        if pat == "**":
            if not name.startswith("."):
                nxt.add(i)
        elif (pat.startswith(".") or not name.startswith(".")) and fnmatch.fnmatchcase(name, pat):
            nxt.add(i + 1)
    return _glob_close(pattern, nxt)


def _glob_close(pattern: tuple[str, ...], states: set[int]) -> frozenset[int]:
    out = set(states)
    for i in sorted(out):  # ``**`` may match nothing: skip over a run of them
        while i < len(pattern) and pattern[i] == "**":
            i += 1
            out.add(i)
    return frozenset(out)


def _glob_files(spec: str, report: ReadReport) -> list[Path]:
    """Files matching a glob, sorted. ``**`` runs through ``_walk``, entering only folders the
    pattern can still match: ``glob.glob`` follows every symlink loop to the depth limit, once
    per looping link (exponential time)."""
    if "**" not in spec:
        # Folders are left out; FIFOs and broken links go on, to be skipped and counted.
        return [Path(m) for m in sorted(globlib.glob(spec)) if not os.path.isdir(m)]
    parts = Path(spec).parts
    k = next(i for i, part in enumerate(parts) if _has_magic(part))
    base, pattern = (os.path.join(*parts[:k]) if k else "."), parts[k:]
    states = {os.fspath(Path(base)): _glob_close(pattern, {0})}  # keyed as os.walk names roots

    def enter(root: str, name: str) -> bool:
        child = _glob_step(pattern, states[root], name)
        if child - {len(pattern)}:  # some component of the pattern is still to match
            states[os.path.join(root, name)] = child
            return True
        return False

    out = []
    for root, files in _walk(Path(base), report, enter):
        here = states.pop(root)
        for name in files:
            if len(pattern) in _glob_step(pattern, here, name):
                fp = Path(root) / name
                out.append(fp if k else Path(os.path.relpath(fp)))
    return sorted(out)


def _iter_candidate_files(spec: str, report: ReadReport) -> Iterator[Path]:
    p = Path(spec)
    # An existing path is taken as it is, even with glob characters in its name (data[1].txt).
    if _has_magic(spec) and not os.path.lexists(spec):
        matches = _glob_files(spec, report)
        if not matches:
            raise CorpusError(f"{spec}: the pattern matches no files")
        yield from matches
        return
    if p.is_file():
        yield p
        return
    if p.is_dir():
        skip = (".", "__pycache__")
        for root, files in _walk(p, report, lambda _root, d: not d.startswith(skip)):
            for name in files:
                fp = Path(root) / name
                if name.startswith("."):  # like hidden folders: .env, .DS_Store, .gitignore
                    report.skip(fp, "hidden files")
                elif fp.suffix.lower() in TEXT_SUFFIXES:
                    yield fp
                else:
                    report.skip(fp, "files with a non-text suffix")
        return
    if p.exists() or p.is_symlink():
        raise CorpusError(f"{spec}: not a regular file or folder (a broken link, a FIFO?)")
    raise CorpusError(f"{spec}: no such file or folder")


def _read_file(fp: Path, report: ReadReport, seen: set[tuple[int, int]]) -> bytes | None:
    """The bytes of a regular file not read before; None (skipped and counted) otherwise."""
    try:
        st = os.stat(fp)
    except OSError:
        report.skip(fp, "broken or looping links" if fp.is_symlink() else "unreadable files")
        return None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever; a device never ends
        report.skip(fp, "special files (FIFOs, sockets, devices)")
        return None
    if (st.st_dev, st.st_ino) in seen:  # one document per real file, however many links
        return None
    seen.add((st.st_dev, st.st_ino))
    if st.st_size > MAX_FILE_BYTES:
        report.skip(fp, f"files over {MAX_FILE_BYTES >> 20} MB")
        return None
    try:
        with open(fp, "rb") as f:
            # Sized by stat (read(n) allocates n bytes up front), then the rest of a file that
            # grew or lied about its size (as /proc does), up to the limit.
            data = f.read(st.st_size + 1)
            if len(data) > st.st_size:
                data += f.read(MAX_FILE_BYTES + 1 - len(data))
    except OSError:
        report.skip(fp, "unreadable files")
        return None
    if len(data) > MAX_FILE_BYTES:
        report.skip(fp, f"files over {MAX_FILE_BYTES >> 20} MB")
        return None
    return data


def _hint(report: ReadReport) -> str:
    """What to do when nothing was read, from why files were skipped."""
    tips = ["lstmscope reads text files in UTF-8 or UTF-16 (with a BOM)"]
    if report.skipped["files with a non-text suffix"] or report.skipped["hidden files"]:
        tips.append(
            "a folder is searched only for files with a text suffix (.txt, .py, .md, ...) that "
            "are not hidden: name other files, or a glob, directly"
        )
    if report.skipped["unreadable files"] or report.skipped["unreadable folders"]:
        tips.append("check the permissions of the unreadable ones")
    return "; ".join(tips)


def read_documents(specs: list[str] | str) -> ReadReport:
    """Read every file named by ``specs`` (files, folders, globs) as one document each.

    Binary, undecodable, unreadable and special files are skipped and counted; an empty result
    is a ``CorpusError`` that says what was skipped and what lstmscope reads.
    """
    if isinstance(specs, str):
        specs = [specs]
    report = ReadReport()
    seen: set[tuple[int, int]] = set()
    for spec in specs:
        for fp in _iter_candidate_files(str(spec), report):
            data = _read_file(fp, report, seen)
            if data is None:
                continue
            text = decode_text(data)
            if text is None:
                report.skip(fp, "binary or undecodable files")
            elif not text.strip():
                report.skip(fp, "empty files")
            else:
                report.documents.append(Document(str(fp), text))
    if not report.documents:
        detail = f" ({report.summary()})" if report.skipped else ""
        raise CorpusError(f"no text found in {', '.join(map(str, specs))}{detail}; {_hint(report)}")
    log.info("read %s", report.summary())
    return report


def split_documents(
    docs: list[Document], val_fraction: float = 0.05
) -> tuple[list[Document], list[Document]]:
    """Many documents: whole documents go to validation, chosen by a hash of their name (stable
    when files are added). Few documents: the last ``val_fraction`` of each one. A fraction of
    0 keeps everything in train (corpora made only to be recorded)."""
    if len(docs) >= 20:
        bucket = max(2, round(1 / val_fraction))
        # surrogatepass: a file name that is not UTF-8 arrives with surrogate escapes.
        val = [d for d in docs if zlib.crc32(d.name.encode("utf-8", "surrogatepass")) % bucket == 0]
        if val and len(val) < len(docs):
            names = {d.name for d in val}
            return [d for d in docs if d.name not in names], val
    train, val = [], []
    for d in docs:
        cut = int(len(d.text) * (1 - val_fraction))
        train.append(Document(d.name, d.text[:cut]))
        if cut < len(d.text):
            val.append(Document(d.name + "#val", d.text[cut:]))
    return train, val


def join_documents(docs: list[Document]) -> tuple[str, list[tuple[int, int]]]:
    """Concatenate, each document followed by one newline; return text and [start, stop) spans."""
    parts, spans, pos = [], [], 0
    for d in docs:
        t = d.text if d.text.endswith("\n") else d.text + "\n"
        parts.append(t)
        spans.append((pos, pos + len(t)))
        pos += len(t)
    return "".join(parts), spans


_CHUNK = 1 << 20  # characters encoded at a time: memory stays flat however long a document is


def _chunks(text: str) -> Iterator[bytes]:
    for i in range(0, len(text), _CHUNK):
        yield text[i : i + _CHUNK].encode("utf-8", "surrogatepass")


def sha256_text(text: str) -> str:
    """sha256 of the UTF-8 bytes (surrogates passed through), hashed a chunk at a time."""
    h = hashlib.sha256()
    for b in _chunks(text):
        h.update(b)
    return h.hexdigest()


def _check_storable(docs: list[Document]) -> None:
    for d in docs:
        if d.text.isascii():  # O(1) in CPython: no copy of a large document
            continue
        try:
            d.text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate: UTF-8 files cannot hold it
            raise CorpusError(
                f"document {d.name!r} holds {e.object[e.start : e.end]!r} at character "
                f"{e.start:,}, which UTF-8 cannot store; decode the source with decode_text "
                "or drop the character"
            ) from None


def _write_split(path: Path, part: list[Document]) -> tuple[int, str, list[tuple[int, int]]]:
    """``join_documents(part)`` streamed to ``path``: (characters, sha256, spans), without
    building the joined text or its bytes in memory."""
    h, spans, pos = hashlib.sha256(), [], 0
    with atomic_open(path, "wb") as f:
        for d in part:
            for b in _chunks(d.text):
                f.write(b)
                h.update(b)
            stop = pos + len(d.text)
            if not d.text.endswith("\n"):
                f.write(b"\n")
                h.update(b"\n")
                stop += 1
            spans.append((pos, stop))
            pos = stop
    return pos, h.hexdigest(), spans


def write_corpus(
    out: str | Path,
    docs: list[Document],
    *,
    recipe: str,
    extra: dict | None = None,
    val_fraction: float = 0.05,
    val_docs: list[Document] | None = None,
) -> dict:
    """Write ``train.txt``, ``val.txt`` and ``manifest.json`` (last) into ``out``.

    ``val_docs`` given: ``docs`` is the train split as it is and ``val_docs`` the validation.
    Text that UTF-8 cannot store (lone surrogates) is a ``CorpusError`` before anything is
    written.
    """
    out = Path(out)
    if val_docs is not None:
        train, val = list(docs), list(val_docs)
        docs = train + val
    else:
        train, val = split_documents(docs, val_fraction)
    _check_storable(docs)
    manifest: dict = {"format": "lstmscope-corpus", "version": 1, "recipe": recipe, **(extra or {})}
    for split, part in (("train", train), ("val", val)):
        chars, digest, spans = _write_split(out / f"{split}.txt", part)
        manifest[split] = {
            "file": f"{split}.txt",
            "chars": chars,
            "sha256": digest,
            "documents": [
                {"name": d.name, "start": s, "stop": e}
                for d, (s, e) in zip(part, spans, strict=True)
            ],
        }
    whole = hashlib.sha256()
    for d in docs:
        for b in _chunks(d.text):
            whole.update(b)
    manifest["sha256"] = whole.hexdigest()
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


@dataclass(frozen=True)
class TextSource:
    """Text to train on or record, with document spans (state never crosses a span start)."""

    text: str
    documents: tuple[tuple[int, int], ...]
    origin: str


def load_text(specs: list[str] | str, split: str = "train") -> TextSource:
    """A built corpus folder gives its ``split``; anything else is read as documents."""
    if isinstance(specs, str):
        specs = [specs]
    if len(specs) == 1 and (Path(specs[0]) / "manifest.json").is_file():
        folder = Path(specs[0])
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            part = manifest[split]
            # newline="": the text exactly as written (universal newlines would turn a \r
            # into \n and a \r\n into one character, so spans and lengths would drift).
            with open(folder / part["file"], encoding="utf-8", newline="") as f:
                text = f.read()
        except (OSError, ValueError, KeyError) as e:
            raise CorpusError(
                f"{folder}: broken corpus folder ({type(e).__name__}: {e}); rebuild it with "
                "'lstmscope corpus build'"
            ) from None
        if len(text) != part["chars"]:
            raise CorpusError(f"{folder / part['file']}: length differs from manifest; rebuild it")
        docs = tuple((d["start"], d["stop"]) for d in part["documents"])
        return TextSource(text, docs, f"{folder}:{split}")
    report = read_documents(specs)
    text, spans = join_documents(report.documents)
    return TextSource(text, tuple(spans), ", ".join(specs))


def load_train_val(data: list[str], val_data: list[str] | None) -> tuple[TextSource, str, str]:
    """(train source, train text, validation text) for training on ``data``.

    Validation comes from ``val_data``, else a corpus folder's val split, else the last 5%.
    """
    train_src = load_text(data, "train")
    if val_data:
        return train_src, train_src.text, load_text(val_data, "val").text
    if len(data) == 1 and (Path(data[0]) / "manifest.json").is_file():
        return train_src, train_src.text, load_text(data, "val").text
    cut = int(len(train_src.text) * 0.95)
    return train_src, train_src.text[:cut], train_src.text[cut:]


def load_record_text(
    data: list[str], split: str, max_chars: int = 0
) -> tuple[str, list[tuple[int, int]]]:
    """The text to record and its document spans: a corpus folder's ``split`` (or the files
    given), cut to its first ``max_chars`` characters when set."""
    src = load_text(data, split)
    text, docs = src.text, list(src.documents)
    if not text and len(data) == 1 and (Path(data[0]) / "manifest.json").is_file():
        other = "train" if split == "val" else "val"
        raise CorpusError(
            f"nothing to record: the {split} split of {data[0]} is empty"
            + (" (a corpus built only to be recorded keeps everything in train)"
               if split == "val" else "")
            + f"; pass --split {other}"
        )  # fmt: skip
    if max_chars and len(text) > max_chars:
        text = text[:max_chars]
        docs = [(a, min(b, max_chars)) for a, b in docs if a < max_chars]
    return text, docs
