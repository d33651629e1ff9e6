"""Where the model pays: per-character loss by category and by distance to the opener.

``loss[t]`` is the model's surprise at character ``t`` in bits, ``-log2 p(text[t] | text[:t])``
(the store's ``pred/loss.npy``; NaN where a recording run starts, so nothing predicted it).
Categories say what kind of character ``t`` is, e.g. a closing quote or a closing bracket: the
characters whose prediction needs a memory of something earlier. ``loss_by_distance`` then asks
how that memory fades: the loss of a closing bracket or quote against how many characters
earlier its opener was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lstmscope.analysis.features import compute

log = logging.getLogger(__name__)

OPENERS = {")": "(", "]": "[", "}": "{"}
DEFAULT_PAIRS = ("()", "[]", "{}", '""', "''")
DEFAULT_DISTANCE_BINS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` moved ``k`` places later (k > 0: out[t] = a[t - k]) with False at the ends."""
    out = np.zeros_like(a)
    if k > 0:
        out[k:] = a[:-k]
    elif k < 0:
        out[:k] = a[-k:]
    else:
        out[:] = a
    return out


def _span_ends(mask: np.ndarray, codes: np.ndarray, quote: str) -> tuple[np.ndarray, np.ndarray]:
    """(opening, closing) bool masks of quote characters that start / end a span of ``mask``."""
    q = codes == ord(quote)
    prev_in, next_in = _shift(mask, 1), _shift(mask, -1)
    opening = q & mask & ~prev_in
    closing = q & mask & prev_in & ~next_in
    return opening, closing


def default_categories(text: str) -> dict[str, np.ndarray]:
    """Named bool masks ``[N]`` over the character being predicted.

    ``all``; ``closing_quote`` (``closing_dquote``, ``closing_squote``): the quote that ends a
    string; ``opening_quote``; ``closing_bracket`` / ``opening_bracket`` in code (not inside
    strings or comments; a closer with nothing open is not counted); ``newline``;
    ``comment_end`` (the line end right after a ``#``/``//`` comment); ``in_string``,
    ``in_comment``, ``in_url`` (strings without their quotes); ``letter``; ``space`` (whitespace
    other than line ends).
    """
    f = compute(
        text,
        ["in_dquote", "in_squote", "in_comment", "in_url", "depth_total", "is_letter", "is_space"],
    )
    codes = _codes(text)
    n = len(text)
    od, cd = _span_ends(f["in_dquote"], codes, '"')
    osq, csq = _span_ends(f["in_squote"], codes, "'")
    in_string = f["in_dquote"] | f["in_squote"]
    code = ~(in_string | f["in_comment"])
    closers = np.isin(codes, [ord(c) for c in ")]}"]) & code
    openers = np.isin(codes, [ord(c) for c in "([{"]) & code
    newline = codes == 10
    return {
        "all": np.ones(n, dtype=bool),
        "closing_quote": cd | csq,
        "closing_dquote": cd,
        "closing_squote": csq,
        "opening_quote": od | osq,
        "closing_bracket": closers & (f["depth_total"] > 0),
        "opening_bracket": openers,
        "newline": newline,
        "comment_end": newline & _shift(f["in_comment"], 1),
        "in_string": in_string & ~(od | osq | cd | csq),
        "in_comment": f["in_comment"],
        "in_url": f["in_url"],
        "letter": f["is_letter"],
        "space": f["is_space"] & ~newline,
    }


def resolve_categories(text: str, categories=None) -> dict[str, np.ndarray]:
    """``None``: :func:`default_categories`; a sequence of names: those defaults; a mapping:
    ``{name: bool mask [N]}`` taken as given."""
    n = len(text)
    if categories is None or (
        isinstance(categories, Sequence) and not isinstance(categories, str)
        and all(isinstance(c, str) for c in categories)
    ):  # fmt: skip
        cats = default_categories(text)
        if categories is None:
            return cats
        unknown = [c for c in categories if c not in cats]
        if unknown:
            raise ValueError(f"unknown categories {unknown}: choose from {', '.join(cats)}")
        return {c: cats[c] for c in categories}
    if isinstance(categories, Mapping):
        out = {}
        for name, mask in categories.items():
            m = np.asarray(mask, dtype=bool)
            if m.shape != (n,):
                raise ValueError(f"category {name!r} has shape {m.shape}; expected ({n},)")
            out[str(name)] = m
        return out
    raise TypeError("categories must be None, a list of names or a {name: mask} mapping")


def _text_loss(source, include_cold: bool) -> tuple[str, np.ndarray]:
    if isinstance(source, tuple):
        text, loss = source
        loss = np.asarray(loss, dtype=np.float64)
        if loss.shape != (len(text),):
            raise ValueError(f"loss has shape {loss.shape}; the text has {len(text)} characters")
        return text, loss
    loss = np.asarray(source.loss, dtype=np.float64).copy()
    if not include_cold:
        loss[np.asarray(source.cold, dtype=bool)] = np.nan
    return source.text, loss


def loss_by_category(source, categories=None, *, include_cold: bool = False) -> pd.DataFrame:
    """Mean loss per category: ``category n mean_bits total_bits share``.

    ``source`` is a store (its ``loss``, cold positions left out unless ``include_cold``) or a
    ``(text, loss [N])`` pair. ``share`` is the category's part of all the bits paid. NaN
    losses (run starts) are left out.
    """
    text, loss = _text_loss(source, include_cold)
    cats = resolve_categories(text, categories)
    ok = np.isfinite(loss)
    total = float(loss[ok].sum())
    rows = []
    for name, mask in cats.items():
        m = mask & ok
        s = float(loss[m].sum())
        rows.append(
            {"category": name, "n": int(m.sum()),
             "mean_bits": s / m.sum() if m.any() else float("nan"), "total_bits": s,
             "share": s / total if total > 0 else float("nan")}
        )  # fmt: skip
    return pd.DataFrame.from_records(rows)


def matching_pairs(text: str, pairs: Sequence[str] = DEFAULT_PAIRS) -> pd.DataFrame:
    """Every closing bracket or quote with its opener: ``pair open close distance``.

    Brackets are matched with a stack, in code only (not in strings or comments), so ``(`` in a
    string does not count; a closer that does not match the innermost opener is skipped. Quotes
    are the ends of the string spans of :mod:`lstmscope.analysis.features` (``"`` and ``'``; for triple
    quotes the last quote character of each delimiter).
    """
    codes = _codes(text)
    f = compute(text, ["in_dquote", "in_squote", "in_comment"])
    recs: list[tuple[str, int, int]] = []
    brackets = [p for p in pairs if p[0] != p[1]]
    if brackets:
        code = ~(f["in_dquote"] | f["in_squote"] | f["in_comment"])
        chars = "".join(brackets)
        pos = np.flatnonzero(np.isin(codes, [ord(c) for c in chars]) & code)
        closer_of = {p[1]: p for p in brackets}
        stack: list[tuple[str, int]] = []
        for p in pos.tolist():
            ch = text[p]
            if ch in closer_of:
                pair = closer_of[ch]
                if stack and stack[-1][0] == pair[0]:
                    recs.append((pair, stack.pop()[1], p))
            else:
                stack.append((ch, p))
    for q, name in (('"', "in_dquote"), ("'", "in_squote")):
        if q + q not in pairs:
            continue
        mask = f[name]
        starts = np.flatnonzero(mask & ~_shift(mask, 1))
        stops = np.flatnonzero(mask & ~_shift(mask, -1))
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            if b > a and text[a] == q and text[b] == q:
                recs.append((q + q, a, b))
    df = pd.DataFrame.from_records(recs, columns=["pair", "open", "close"])
    df["distance"] = df["close"] - df["open"]
    return df.sort_values("close", kind="stable").reset_index(drop=True)


def loss_by_distance(
    source,
    *,
    pairs: Sequence[str] = DEFAULT_PAIRS,
    bins: Sequence[int] = DEFAULT_DISTANCE_BINS,
    include_cold: bool = False,
) -> pd.DataFrame:
    """Loss of closing brackets and quotes against the distance to their opener.

    One row per pair kind and distance bin ``[lo, hi)``: ``pair lo hi n mean_bits``; ``pair``
    ``all`` pools the kinds. Distances are in characters (``close - open``).
    """
    text, loss = _text_loss(source, include_cold)
    m = matching_pairs(text, pairs)
    m["bits"] = loss[m["close"].to_numpy()] if len(m) else np.empty(0)
    m = m[np.isfinite(m["bits"])]
    edges = np.asarray([*bins, np.iinfo(np.int64).max], dtype=np.int64)
    rows = []
    for pair in [*pairs, "all"]:
        sub = m if pair == "all" else m[m["pair"] == pair]
        b = np.searchsorted(edges, sub["distance"].to_numpy(), side="right") - 1
        for j in range(len(edges) - 1):
            sel = b == j
            cnt = int(sel.sum())
            rows.append(
                {"pair": pair, "lo": int(edges[j]),
                 "hi": int(edges[j + 1]) if j + 2 < len(edges) else None, "n": cnt,
                 "mean_bits": float(sub["bits"].to_numpy()[sel].mean()) if cnt else float("nan")}
            )  # fmt: skip
    return pd.DataFrame.from_records(rows)
