"""Export: what a store shows, as standalone HTML (one file, nothing fetched, opens offline).

- :mod:`~lstmscope.export.colors` — colour scales and palettes, shared with the dashboard
- :mod:`~lstmscope.export.neurons` — what an export asks of a store, checked: the neurons, the
  range, and each neuron's colour scale
- :mod:`~lstmscope.export.text` — text coloured by neurons (:func:`export_range`), and the pieces
  every page is made of: escaping, the scoped CSS, coloured spans, the legend, the document
- :mod:`~lstmscope.export.matches` — every match of a pattern in its context, aligned
  (:func:`export_find`)
- :mod:`~lstmscope.export.card` — one neuron's statistics, histogram and contexts
  (:func:`export_card`)
- :mod:`~lstmscope.export.notebook` — the notebook view (:class:`NeuronView`, :func:`show`)
- :mod:`~lstmscope.export.report` — the report of ``lstmscope detect`` (HTML, SVG, CSV)
"""

from __future__ import annotations

from lstmscope.lazy import lazy_api

# The public API by name (``from lstmscope.export import export_range``), imported on first
# use: the card pulls in the analysis (and torch), which a notebook view need not pay for.
__getattr__, __all__ = lazy_api(
    __name__,
    {
        "text": ["export_range", "render_text_html", "html_document", "write_html", "visible_text"],
        "matches": ["export_find", "render_matches"],
        "card": ["export_card", "render_card"],
        "notebook": ["NeuronView", "show"],
        "colors": ["Scale", "SCALES", "scale_for"],
    },
)
