"""Errors the CLI turns into one clear line and a non-zero exit (no traceback)."""

from __future__ import annotations

import errno as _errno
from pathlib import Path


class LstmscopeError(Exception):
    """A problem with the user's input or files; the message says what to do."""


class CheckpointError(LstmscopeError):
    pass


class CorpusError(LstmscopeError):
    pass


class StoreError(LstmscopeError):
    pass


# Why a write failed, in the words a user needs (the OS's strerror follows in brackets).
_WRITE_REASONS = {
    _errno.ENOSPC: "the disk is full",
    _errno.EDQUOT: "the disk quota is used up",
    _errno.EFBIG: "the file is larger than this file system or the file-size limit allows",
    _errno.EROFS: "the folder is on a read-only file system",
    _errno.EACCES: "no permission to write in that folder",
    _errno.EPERM: "no permission to write in that folder",
    _errno.EIO: "the disk reported an I/O error",
}
_FREE_SPACE = (_errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG)
_NO_WRITE = (_errno.EROFS, _errno.EACCES, _errno.EPERM)


class WriteError(LstmscopeError, OSError):
    """Writing an output failed: disk full, read-only folder, no permission.

    Also an ``OSError`` with the original ``errno``, so code that handles ``OSError`` keeps
    working. The message names the path and the reason, says whether an earlier version of the
    file is unchanged (``existed``; None: say nothing) and what to do.
    """

    def __init__(
        self, path: str | Path, cause: OSError, *, existed: bool | None = None, action="write"
    ):
        path = Path(path)
        reason = _WRITE_REASONS.get(cause.errno, "the write failed")
        if cause.errno is None and "requested and" in str(cause):  # numpy's short write
            reason = "the write was cut short, as on a full disk or past a file-size limit"
        detail = cause.strerror or str(cause)
        kept = {
            True: f"the previous {path.name} is unchanged; ",
            False: f"no partial {path.name} was left behind; ",
            None: "",
        }[existed]
        if cause.errno in _FREE_SPACE:
            todo = (
                "free some space (or choose another output folder) and run the same command again"
            )
        elif cause.errno in _NO_WRITE:
            todo = "choose a folder you can write to (or fix its permissions) and run again"
        else:
            todo = "check the disk's free space and the folder's permissions, then run again"
        super().__init__(f"cannot {action} {path}: {reason} ({detail}); {kept}{todo}")
        self.errno = cause.errno
        self.strerror = cause.strerror
        self.filename = str(path)

    def __str__(self) -> str:  # OSError would print "[Errno N] strerror: filename" instead
        return str(self.args[0])

    def __reduce__(self):  # picklable across processes, like any exception should be
        return (_rebuild_write_error, (self.args[0], self.errno, self.strerror, self.filename))


def _rebuild_write_error(message: str, errno: int | None, strerror, filename) -> WriteError:
    e = WriteError.__new__(WriteError)
    Exception.__init__(e, message)
    e.errno, e.strerror, e.filename = errno, strerror, filename
    return e


def write_failure(e: BaseException) -> OSError | None:
    """The ``OSError`` that made a write fail: ``e`` itself, or, where a library wrapped it
    (``torch.save`` turns a failed ``write`` into a ``RuntimeError`` about stream positions), a
    disk or permission error that ``e`` was raised from or while handling."""
    if isinstance(e, OSError):
        return e
    seen: set[int] = set()
    cur: BaseException | None = e.__cause__ or e.__context__
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno in _WRITE_REASONS:
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None
