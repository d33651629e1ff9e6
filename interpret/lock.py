"""One writer per output folder, and what a killed writer leaves behind.

``train`` and ``record`` each hold an advisory lock on their output folder while they write, so
a second run into the same folder fails at once instead of interleaving files. Under that lock
the temp files of atomic writes (``.NAME.XXXX.tmp``, see ``interpret.io``) can only be leftovers
of a run that was killed mid-write: they are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Collection, Iterator
from pathlib import Path

from interpret.errors import LstmscopeError, WriteError

log = logging.getLogger(__name__)

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
