"""Neuron ids: one function parses them and one formats them.

A neuron is ``(layer, kind, unit)`` written ``L1.c.137`` (layer 1, cell state, unit 137).
Layers and units count from 0, as in PyTorch; ``L0`` reads the characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Kinds each cell type records, in the order a layer computes them.
KINDS: dict[str, tuple[str, ...]] = {
    "lstm": ("h", "c", "i", "f", "g", "o"),
    "gru": ("h", "r", "z", "n"),
    "rnn": ("h",),
}
KIND_NAMES = {
    "h": "hidden (recurrent vector)",
    "c": "cell (state vector)",
    "i": "input gate",
    "f": "forget gate",
    "g": "input block",
    "o": "output gate",
    "r": "reset gate",
    "z": "update gate",
    "n": "new gate",
}
# Kinds whose values lie in (0, 1): gates get a sequential colour scale and saturation stats.
GATE_KINDS = frozenset({"i", "f", "o", "r", "z"})

_NEURON_RE = re.compile(r"^L(\d{1,3})\.([a-z])\.(\d{1,6})$")


@dataclass(frozen=True, order=True)
class Neuron:
    layer: int
    kind: str
    unit: int

    def __str__(self) -> str:
        return f"L{self.layer}.{self.kind}.{self.unit}"

    @property
    def stream(self) -> str:
        """The store array this neuron lives in, e.g. ``L1.c``."""
        return f"L{self.layer}.{self.kind}"


def parse_neuron(text: str | Neuron) -> Neuron:
    """Parse ``L1.c.137``; raise ``ValueError`` with the expected form otherwise."""
    if isinstance(text, Neuron):
        return text
    m = _NEURON_RE.match(str(text).strip())
    if not m or m.group(2) not in KIND_NAMES:
        raise ValueError(
            f"bad neuron id {str(text)[:40]!r}: expected L<layer>.<kind>.<unit> such as L1.c.137, "
            f"kind one of {', '.join(KIND_NAMES)}"
        )
    return Neuron(int(m.group(1)), m.group(2), int(m.group(3)))


def format_neuron(layer: int, kind: str, unit: int) -> str:
    return str(Neuron(layer, kind, unit))
