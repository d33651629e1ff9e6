"""Tables whose rows always show their data.

BokehJS's ``DataTable`` redraws its rows when its CDS view's indices change or when the table
model itself changes. Replacing ``source.data`` with as many rows as before (the top 200 neurons
of one feature, then of another; the best neurons for one span, then for another) changes
neither, so the browser keeps drawing the previous rows under the new data: clicking a row then
picks a neuron that is not the one on screen. Checked on Bokeh 3.9 in Chromium (issue 12.1).

:class:`Rows` gives each new content a new ``ColumnDataSource``: setting ``table.source`` is a
change of the table model, which always re-renders the grid from the data it holds. Only public
Bokeh API is used, so the fix survives upgrades; the client keeps replaced sources (a few kB each),
so they carry no name (a name would stop being unique): scripts reach the rows through the table.
"""

from __future__ import annotations

from collections.abc import Callable

from bokeh.models import ColumnDataSource, DataTable

from lstmscope.server.state import chosen_row


class Rows:
    """The data of one ``DataTable``, replaced as a whole; ``on_row(k, data)`` on a click."""

    def __init__(self, table: DataTable, data: dict, on_row: Callable[[int, dict], None]):
        self.table = table
        self.on_row = on_row
        self.source = self._new(data)
        table.source = self.source

    def _new(self, data: dict) -> ColumnDataSource:
        src = ColumnDataSource(data)
        # Bound to its own source: a click that reaches a replaced table names that table's rows.
        src.selected.on_change("indices", lambda attr, old, new: self._clicked(src, new))
        return src

    def set(self, data: dict) -> None:
        """Show ``data`` (column name -> values), replacing every row."""
        self.source = self._new(data)
        self.table.source = self.source

    def clear(self) -> None:
        self.set({k: [] for k in self.source.data})

    @property
    def data(self) -> dict:
        return self.source.data

    def _clicked(self, src: ColumnDataSource, new) -> None:
        first = next(iter(src.data.values()), [])
        k = chosen_row(new, len(first))
        if k is not None:
            self.on_row(k, src.data)
