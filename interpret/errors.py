"""Errors the CLI turns into one clear line and a non-zero exit (no traceback)."""


class LstmscopeError(Exception):
    """A problem with the user's input or files; the message says what to do."""


class CheckpointError(LstmscopeError):
    pass


class CorpusError(LstmscopeError):
    pass


class StoreError(LstmscopeError):
    pass
