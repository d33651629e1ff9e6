"""The view a tab shows, and its round trip through the page URL (deep links).

``/?neuron=L1.c.137&neuron=L0.h.3&start=5000&size=2000&feature=in_url&find=http`` opens the
text at position 5000, coloured by ``L1.c.137`` with ``L0.h.3`` stacked under it, the
``in_url`` track below and matches of ``http`` marked; ``&scale=logit`` colours on another
scale (:data:`lstmscope.export.colors.SCALES`), ``&lane=row`` draws the feature track as a full row
(``off``: not at all; the default is a thin strip). Every field is checked; a bad one is
reported on the page and replaced by its default, never a failed session. No field names a file:
the store is fixed when the server starts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlencode

from lstmscope.analysis.features import FEATURES
from lstmscope.export.colors import DEFAULT_SCALE, SCALES

PAGE_SIZES = (1000, 2000, 4000, 8000)
DEFAULT_SIZE = 2000
MAX_NEURONS = 8  # stacked rows; more would not fit a screen
MAX_ARG_LEN = 1000  # longer URL values are refused, not parsed
LANE_MODES = ("thin", "row", "off")  # how the feature track is drawn under the text
DEFAULT_LANE = "thin"


@dataclass(frozen=True)
class ViewState:
    neurons: tuple[str, ...]  # the first one colours the text; the rest are stacked under it
    start: int = 0  # first position of the window
    size: int = DEFAULT_SIZE
    feature: str | None = None  # feature track under the text (and the ranking's feature)
    find: str = ""
    regex: bool = False
    scale: str = DEFAULT_SCALE  # colour scale, one of lstmscope.export.colors.SCALES
    lane: str = DEFAULT_LANE  # the feature track: one of LANE_MODES

    @property
    def primary(self) -> str:
        return self.neurons[0]

    @property
    def stop(self) -> int:
        return self.start + self.size

    def with_(self, **changes) -> ViewState:
        return replace(self, **changes)


def to_query(state: ViewState) -> str:
    """The URL query for ``state`` (defaults left out, so links stay short)."""
    items: list[tuple[str, str]] = [("neuron", nid) for nid in state.neurons]
    items.append(("start", str(state.start)))
    if state.size != DEFAULT_SIZE:
        items.append(("size", str(state.size)))
    if state.feature:
        items.append(("feature", state.feature))
    if state.find:
        items.append(("find", state.find))
        if state.regex:
            items.append(("regex", "1"))
    if state.scale != DEFAULT_SCALE:
        items.append(("scale", state.scale))
    if state.lane != DEFAULT_LANE:
        items.append(("lane", state.lane))
    # surrogatepass: a browser can send a lone surrogate in the find box (JavaScript strings
    # allow them); strict UTF-8 would make every later address-bar update fail.
    return urlencode(items, errors="surrogatepass")


def _decode(values: list[bytes] | list[str]) -> list[str]:
    out = []
    for v in values:
        s = v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
        out.append(s)
    return out


def parse_query(
    args: dict, default: ViewState, n: int, check_neuron
) -> tuple[ViewState, list[str]]:
    """A view from request arguments (``{name: [bytes, ...]}``) and the problems found.

    ``check_neuron(text) -> id`` raises ValueError for an id the store lacks.
    """
    problems: list[str] = []
    get = {k: _decode(v) for k, v in (args or {}).items()}
    for k, vs in get.items():
        if any(len(v) > MAX_ARG_LEN for v in vs):
            problems.append(f"URL field {k!r} is longer than {MAX_ARG_LEN} characters: ignored")
            get[k] = []
    state = default
    neurons: list[str] = []
    for raw in get.get("neuron", []):
        for part in raw.replace(",", " ").split():
            try:
                nid = check_neuron(part)
            except ValueError as e:
                problems.append(f"URL neuron: {e}")
                continue
            if nid not in neurons:
                neurons.append(nid)
    if len(neurons) > MAX_NEURONS:
        problems.append(f"URL names {len(neurons)} neurons; showing the first {MAX_NEURONS}")
        neurons = neurons[:MAX_NEURONS]
    if neurons:
        state = state.with_(neurons=tuple(neurons))
    size = _int_arg(get, "size", problems)
    if size is not None:
        if size in PAGE_SIZES:
            state = state.with_(size=size)
        else:
            problems.append(
                f"URL size {size}: choose one of {', '.join(map(str, PAGE_SIZES))}; "
                f"using {state.size}"
            )
    start = _int_arg(get, "start", problems)
    if start is not None:
        if 0 <= start < n:
            state = state.with_(start=start)
        else:
            problems.append(f"URL start {start} is outside the text (0–{n - 1}); showing 0")
    feats = get.get("feature", [])
    if feats:
        name = feats[-1].strip()
        if name in ("", "none"):
            state = state.with_(feature=None)
        elif name in FEATURES:
            state = state.with_(feature=name)
        else:
            problems.append(f"URL feature {name[:40]!r} is not a built-in feature")
    for key, allowed in (("scale", SCALES), ("lane", LANE_MODES)):
        vals = get.get(key, [])
        if vals:
            v = vals[-1].strip()
            if v in allowed:
                state = state.with_(**{key: v})
            else:
                problems.append(f"URL {key} {v[:40]!r}: choose one of {', '.join(allowed)}")
    finds = get.get("find", [])
    if finds and finds[-1]:
        state = state.with_(find=finds[-1], regex=get.get("regex", ["0"])[-1] in ("1", "true"))
    return state, problems


def _int_arg(get: dict[str, list[str]], key: str, problems: list[str]) -> int | None:
    vals = get.get(key, [])
    if not vals:
        return None
    raw = vals[-1].strip()
    try:
        return int(raw)
    except ValueError:
        problems.append(f"URL {key} {raw[:40]!r} is not a whole number")
        return None


def parse_position(text: str, n: int) -> int:
    """A position typed by the user (``12345`` or ``12,345``); ValueError outside ``0..n-1``."""
    raw = text.strip().replace(",", "").replace("_", "")
    try:
        pos = int(raw)
    except ValueError:
        raise ValueError(f"position {text.strip()[:40]!r} is not a whole number") from None
    if not 0 <= pos < n:
        raise ValueError(f"position {pos} is outside the text (0–{n - 1})")
    return pos


def window_around(pos: int, size: int, n: int) -> int:
    """A window start that shows ``pos`` a little below the top, so the reader sees what led
    up to it."""
    return max(0, min(pos - size // 8, max(n - size, 0)))


def chosen_row(indices, n: int) -> int | None:
    """The first of a table's selected ``indices`` that names one of its ``n`` rows, or None.

    Selections come from the browser: an index past the end or below zero (which Python would
    read from the end) is ignored, not trusted.
    """
    for k in indices or ():
        if isinstance(k, int) and 0 <= k < n:
            return k
    return None
