"""Corpora: read files, folders and globs into documents; split; write and load corpus folders.

A built corpus is a folder with ``train.txt``, ``val.txt`` (UTF-8) and ``manifest.json`` (the
recipe, the sources, each document's offsets, the text's sha256). Documents are concatenated,
each followed by a newline; the manifest's offsets let recording reset state at document starts.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import logging
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from interpret.errors import CorpusError
from interpret.io import atomic_write_text

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
    """UTF-8 (with or without BOM) or UTF-16 with a BOM; None for binary or undecodable bytes."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    if b"\x00" in data[:8192]:
        return None  # NUL bytes in the head: binary (images, archives, compiled files)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    # Normalise line ends so the model sees one newline convention (CRLF and CR -> LF).
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _iter_candidate_files(spec: str, report: ReadReport):
    p = Path(spec)
    if any(ch in spec for ch in "*?["):
        matches = sorted(globlib.glob(spec, recursive=True))
        if not matches:
            raise CorpusError(f"{spec}: the pattern matches no files")
        for m in matches:
            if Path(m).is_file():
                yield Path(m)
        return
    if p.is_file():
        yield p
        return
    if p.is_dir():
        seen: set[tuple[int, int]] = set()
        # followlinks with an inode check: a symlink loop is walked once, never forever.
        for root, dirs, files in os.walk(
            p, followlinks=True, onerror=lambda e: report.skip(e.filename, "unreadable folders")
        ):
            try:
                st = os.stat(root)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            for name in sorted(files):
                fp = Path(root) / name
                if fp.suffix.lower() in TEXT_SUFFIXES:
                    yield fp
                else:
                    report.skip(fp, "files with a non-text suffix")
        return
    if p.exists() or p.is_symlink():
        raise CorpusError(f"{spec}: not a regular file or folder (a broken link?)")
    raise CorpusError(f"{spec}: no such file or folder")


def read_documents(specs: list[str] | str) -> ReadReport:
    """Read every file named by ``specs`` (files, folders, globs) as one document each.

    Binary and undecodable files are skipped and counted; an empty result is a ``CorpusError``.
    """
    if isinstance(specs, str):
        specs = [specs]
    report = ReadReport()
    seen: set[str] = set()  # one document per real file, however many links reach it
    for spec in specs:
        for fp in _iter_candidate_files(str(spec), report):
            real = os.path.realpath(fp)
            if real in seen:
                continue
            seen.add(real)
            try:
                if fp.stat().st_size > MAX_FILE_BYTES:
                    report.skip(fp, f"files over {MAX_FILE_BYTES >> 20} MB")
                    continue
                data = fp.read_bytes()
            except OSError:
                report.skip(fp, "unreadable files")
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
        raise CorpusError(f"no text found in {', '.join(map(str, specs))}{detail}")
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
        val = [d for d in docs if zlib.crc32(d.name.encode()) % bucket == 0]
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


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


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
    """
    out = Path(out)
    if val_docs is not None:
        train, val = list(docs), list(val_docs)
        docs = train + val
    else:
        train, val = split_documents(docs, val_fraction)
    manifest: dict = {"format": "lstmscope-corpus", "version": 1, "recipe": recipe, **(extra or {})}
    for split, part in (("train", train), ("val", val)):
        text, spans = join_documents(part)
        atomic_write_text(out / f"{split}.txt", text)
        manifest[split] = {
            "file": f"{split}.txt",
            "chars": len(text),
            "sha256": sha256_text(text),
            "documents": [
                {"name": d.name, "start": s, "stop": e}
                for d, (s, e) in zip(part, spans, strict=True)
            ],
        }
    manifest["sha256"] = sha256_text("".join(d.text for d in docs))
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
            manifest = json.loads((folder / "manifest.json").read_text())
            part = manifest[split]
            text = (folder / part["file"]).read_text(encoding="utf-8")
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
