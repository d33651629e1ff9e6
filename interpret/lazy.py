"""A package that names its public API without importing it (PEP 562).

``from lstmscope.model import load_model`` should work, yet importing one module of a package
(``lstmscope.model.plan`` is numpy only) must not load all of them (torch, scikit-learn). A
package's ``__init__`` lists its modules and the public names of each; ``lazy_api`` makes the
``__getattr__`` that imports a name's module the first time the name is asked for, and the
package's ``__all__``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_api(
    package: str, api: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for ``package``; ``api`` maps each module to its names."""
    module_of = {name: module for module, names in api.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in module_of:
            return getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, list(module_of)
