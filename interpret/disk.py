"""Safe writes to disk: atomic file writes, and one writer per output folder.

Atomic writes: a temp file in the same folder, fsync, then ``os.replace``.

A reader (or a resumed run) therefore sees either the old file or the new one, never half. A
write that fails (disk full, read-only folder) removes its temp file and raises ``WriteError``,
which names the file and says the previous version is unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO

from lstmscope.errors import LstmscopeError, WriteError, write_failure

log = logging.getLogger(__name__)


def _read_umask() -> int:
    # os.umask can only be read by setting it: done once, at import (before any writer thread
    # exists), since a file another thread creates in between would get mode 0666.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    path = Path(path)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(path, e, existed=existed) from e
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding, newline="" if encoding else None) as f:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs read like any file
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # A failed write often surfaces as something else (torch.save: a RuntimeError about
        # stream positions), with the OSError as its context: report the OSError, plainly.
        cause = None if isinstance(e, LstmscopeError) else write_failure(e)
        if cause is not None and cause.errno is None and _nearly_full(path.parent):
            # numpy's tofile reports a short write ("N requested and M written") with no errno;
            # measured before the temp file goes, a disk that is now full explains it.
            cause = OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}; {cause}")
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if cause is not None and isinstance(e, Exception):
            raise WriteError(path, cause, existed=existed) from e
        raise


def _nearly_full(folder: Path, slack: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < slack
    except OSError:
        return False


def make_dir(path: str | Path) -> Path:
    """``mkdir -p`` that fails with a ``WriteError`` naming the folder (read-only, no space)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(path, e, action="create the folder") from e
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


# One writer per output folder, and what a killed writer leaves behind.
#
# ``train`` and ``record`` each hold an advisory lock on their output folder while they write,
# so a second run into the same folder fails at once instead of interleaving files. Under that
# lock the temp files of atomic writes (``.NAME.XXXX.tmp``) can only be leftovers of a run that
# was killed mid-write: they are removed.

LOCK_NAME = ".lock"
_TEMP = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")


@contextlib.contextmanager
def folder_lock(
    root: str | Path, busy: str, error: type[LstmscopeError] = LstmscopeError
) -> Iterator[None]:
    """Hold ``root/.lock`` exclusively; raise ``error(busy)`` at once if another process has it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a second writer is the user's problem
        yield
        return
    try:
        fd = os.open(Path(root) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a read-only folder or a full disk: say so, and where
        raise WriteError(Path(root) / LOCK_NAME, e, action="create the lock file") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise error(busy) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock, also when the process is killed


def temp_owner(name: str) -> str | None:
    """The file an atomic-write temp name belongs to (``.meta.json.k3j_x.tmp`` -> ``meta.json``)."""
    m = _TEMP.match(name)
    return m.group("name") if m else None


def remove_stale_temps(folder: str | Path, owners: Collection[str] | None = None) -> list[str]:
    """Delete atomic-write temp files in ``folder`` (call only while holding its lock).

    Only temps of the files in ``owners`` go (None: any, for a folder that is all ours): a run
    folder may be a user's folder with other programs' ``.name.x.tmp`` files in it.
    """
    removed: list[str] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        owner = temp_owner(p.name)
        if owner is not None and (owners is None or owner in owners) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p.name)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted run in %s", len(removed), folder)
    return removed
