"""lstmscope: see inside character-level recurrent language models."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str):
    # Lazy so `import lstmscope` stays cheap (torch is imported only where needed).
    if name == "ActivationStore":
        from lstmscope.store.reader import ActivationStore

        return ActivationStore
    raise AttributeError(name)
