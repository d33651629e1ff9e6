"""The notebook view: neurons over a range of a store, shown inline by Jupyter.

``show(store, "L1.c.137", 5000, 7000)`` in a notebook cell displays the text coloured by the
neuron (Jupyter calls ``_repr_html_``, the same fragment :func:`~lstmscope.export.text.export_range`
puts in a page); ``.save(path)`` writes it as a standalone HTML file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lstmscope.export.neurons import check_range, check_scale, neuron_ids
from lstmscope.export.text import DEFAULT_WRAP, Tooltips, export_range, range_fragment, write_html


class NeuronView:
    """A notebook view of neurons over a range: ``_repr_html_`` is the export's fragment.

    ``NeuronView(store, "L1.c.137", 0, 2000)``; ``stop`` defaults to ``start + 2000``.
    """

    def __init__(
        self,
        store: Any,
        neurons: str | Sequence[str],
        start: int = 0,
        stop: int | None = None,
        *,
        colormap: str | None = None,
        tooltips: Tooltips = "auto",
        wrap: int = DEFAULT_WRAP,
        max_chars: int = 50_000,
        scale: str | None = None,
    ) -> None:
        self.store = store
        self.neurons = neuron_ids(neurons)
        self.start = int(start)
        self.stop = int(stop) if stop is not None else min(int(store.n), self.start + 2000)
        self.colormap = colormap
        self.tooltips = tooltips
        self.wrap = wrap
        self.max_chars = max_chars
        self.scale = check_scale(scale)
        check_range(store, self.start, self.stop, max_chars)

    def __repr__(self) -> str:
        return f"NeuronView({', '.join(self.neurons)}, {self.start}:{self.stop})"

    def _repr_html_(self) -> str:
        return range_fragment(
            self.store, self.neurons, self.start, self.stop, colormap=self.colormap,
            tooltips=self.tooltips, wrap=self.wrap, max_chars=self.max_chars, scale=self.scale,
        )  # fmt: skip

    def to_html(self, title: str | None = None) -> str:
        return export_range(
            self.store, self.neurons, self.start, self.stop, title=title,
            colormap=self.colormap, tooltips=self.tooltips, wrap=self.wrap,
            max_chars=self.max_chars, scale=self.scale,
        )  # fmt: skip

    def save(self, path: str | Path, title: str | None = None) -> Path:
        return write_html(path, self.to_html(title))


def show(
    store: Any, neurons: str | Sequence[str], start: int = 0, stop: int | None = None, **kw: Any
) -> NeuronView:
    """In a notebook: the text of ``store`` coloured by ``neurons`` over ``[start, stop)``
    (default 2,000 characters). Returns a :class:`NeuronView`; ``.save(path)`` writes it as
    standalone HTML. Keywords go to :class:`NeuronView` (``colormap``, ``tooltips``, ``wrap``)."""
    for nid in [neurons] if isinstance(neurons, str) else neurons:
        store.resolve(nid)  # a wrong id fails here, with what is valid, not at display
    return NeuronView(store, neurons, start, stop, **kw)
