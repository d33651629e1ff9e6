"""The page's arrangement: controls across the top, then the text and the tabs (neuron card,
ranking, ...) side by side when the window is wide enough, the tabs under the text when not.

Every panel keeps its own pixel width (the text grid is drawn at a fixed cell size, so that a
click lands on the character under the pointer); what adapts is where the panels go: rows
whose children wrap onto the next line (CSS ``flex-wrap`` on Bokeh's own row element) instead
of one fixed-width column. At 1600 px the text and the card share the first screen; at
1280 px the card follows the text.
"""

from __future__ import annotations

from bokeh.layouts import column, row
from bokeh.models import LayoutDOM

from lstmscope.server.components.controls import WRAP_ROW

GAP = 16  # px between the text and the tabs
TABS_WIDTH = 730  # px: the most the tabs take beside the text (a wider tab scrolls inside)
TABS_MIN = 570  # px: the neuron card; with less room than that the tabs go under the text


def page_layout(
    controls: LayoutDOM,
    message: LayoutDOM,
    text: LayoutDOM,
    below_text: list[LayoutDOM],
    tabs: LayoutDOM,
) -> LayoutDOM:
    """The page's root: ``controls`` and ``message`` across the top; ``text`` (with
    ``below_text`` under it, e.g. the heatmap) beside ``tabs``."""
    left = column(text, *below_text, name="text_panel")
    # The tabs take TABS_MIN to TABS_WIDTH beside the text (the basis is the minimum: a
    # wrapping row breaks lines by it); a wider tab (Select & match's two tables) scrolls
    # sideways inside rather than pushing the whole panel under the text.
    right = column(
        tabs, name="tabs_panel",
        styles={"flex": f"1 1 {TABS_MIN}px", "min-width": f"{TABS_MIN}px",
                "max-width": f"{TABS_WIDTH}px", "overflow-x": "auto", "overflow-y": "hidden"},
    )  # fmt: skip
    body = row(left, right, name="body", stylesheets=[WRAP_ROW], spacing=GAP)
    return column(controls, message, body, name="root")
