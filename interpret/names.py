"""Neuron ids: one function parses them and one formats them.

A neuron is ``(layer, kind, unit)`` written ``L1.c.137`` (layer 1, cell state, unit 137).
Layers and units count from 0, as in PyTorch; ``L0`` reads the characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
# The blocks of a layer's weights, in PyTorch's row order (``weight_ih_l0``, ``weight_hh_l0``,
# the biases): the LSTM's four gates, the GRU's three, the plain RNN's one block (it computes h).
GATES: dict[str, tuple[str, ...]] = {
    "lstm": ("i", "f", "g", "o"),
    "gru": ("r", "z", "n"),
    "rnn": ("h",),
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


def _kinds_by_cell() -> str:
    return "; ".join(f"{' '.join(ks)} ({cell.upper()})" for cell, ks in KINDS.items())


def parse_neuron(text: str | Neuron) -> Neuron:
    """Parse ``L1.c.137``; raise ``ValueError`` with the expected form otherwise.

    Without a store or model to say which neurons exist, the message lists every cell type's
    kinds; :func:`check_neuron` says what one store or model holds.
    """
    if isinstance(text, Neuron):
        return text
    m = _NEURON_RE.match(str(text).strip())
    if not m or m.group(2) not in KIND_NAMES:
        raise ValueError(
            f"bad neuron id {str(text)[:40]!r}: expected L<layer>.<kind>.<unit> such as L1.c.137, "
            f"kind one of {_kinds_by_cell()}"
        )
    return Neuron(int(m.group(1)), m.group(2), int(m.group(3)))


def describe_neurons(layers: Sequence[int], kinds: Sequence[str], units: int) -> str:
    """What a store or model holds, in words: ``layers 0-1, kinds h c i f g o, units 0-255``."""
    ls = sorted(int(x) for x in layers)
    contiguous = len(ls) > 1 and ls == list(range(ls[0], ls[-1] + 1))
    span = f"{ls[0]}-{ls[-1]}" if contiguous else ", ".join(map(str, ls))
    return f"layers {span}, kinds {' '.join(kinds)}, units 0-{units - 1}"


def check_neuron(
    text: str | Neuron,
    layers: Sequence[int],
    kinds: Sequence[str],
    units: int,
    where: str = "this store",
) -> Neuron:
    """:func:`parse_neuron`, then check the neuron exists among ``layers`` x ``kinds`` x
    ``units``; either failure is a ``ValueError`` listing only what ``where`` holds."""
    valid = describe_neurons(layers, kinds, units)
    try:
        nrn = parse_neuron(text)
    except ValueError:
        raise ValueError(
            f"bad neuron id {str(text)[:40]!r}: expected L<layer>.<kind>.<unit> such as "
            f"L{max(layers)}.{kinds[0]}.0; {where} has {valid}"
        ) from None
    if nrn.layer not in layers or nrn.kind not in kinds or not 0 <= nrn.unit < units:
        raise ValueError(f"no neuron {nrn} in {where}: it has {valid}")
    return nrn
