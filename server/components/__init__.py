"""The parts of the dashboard page, one per file: the panels (a class each, with a ``root``
model, the data it draws and methods that fill it) and the helpers they share.

- ``controls`` — the control panel across the top (neuron, page, find, view) and the message
  line; ``page`` — where the panels go on the page.
- ``textview`` — the text, coloured by the neurons; ``textgrid`` — its presentation: where each
  character sits on the grid and which colour it gets (pure functions, no Bokeh).
- ``heatmap`` — neurons × positions under the text.
- ``card`` — the neuron card: statistics, histogram, contexts.
- ``ranking`` — every neuron ranked for a feature; ``saturation`` — the gate saturation plot;
  ``select_match`` — select & match; ``tables`` — data tables that always show their rows.
- ``links`` — the address bar following the view, and the export's download.
"""
