"""lstmscope: see inside character-level recurrent language models."""

from __future__ import annotations

import logging

from lstmscope.lazy import lazy_api

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


# The names a notebook starts from, imported on first use so that `import lstmscope` stays cheap
# (torch is imported only where needed).
__getattr__, __all__ = lazy_api(
    __name__, {"store.reader": ["ActivationStore"], "export.notebook": ["show"]}
)
