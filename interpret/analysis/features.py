"""Per-character features: pure functions ``text -> array[len(text)]``.

A feature says, for every character of a text, something a reader could check by eye: is this
character inside a URL, inside a string literal, inside a comment, how deep in brackets, how far
from the end of the line. Ranking neurons against these finds the interpretable cells of
Karpathy et al. (2015). ``lstmscope.text.synthetic`` plants the same structure in generated text and
labels it while writing; on that text the two agree exactly (the tests check it).

Conventions (the exact rules, shared with ``lstmscope.text.synthetic``):

- Kinds: ``binary`` features are ``bool`` arrays, ``graded`` features are ``int32`` arrays.
- Line ends are ``\\r\\n``, ``\\r`` and ``\\n``. The line-end characters belong to the line
  they end: they get ``column`` = the length of the line's content and ``to_eol`` = 0.
  ``column`` counts from 0; ``to_eol`` is the number of content characters from this one to
  the line end (the last content character has 1; a last line without a line end ends at the
  end of the text).
- ``indent``: the leading whitespace of the line is measured with a space as 1 and a tab as 4,
  and the level is that width // 4. Every character of the line, line end included, gets it.
- Lexical state, from one left-to-right scan that knows code, strings and comments:

  - A string literal runs from its opening quote to its closing quote, both inside. ``"`` and
    ``'`` strings end at the next unescaped quote of the same kind or, unclosed, just before
    the line end (the line end is outside); ``\"\"\"`` and ``'''`` strings may span lines and,
    unclosed, run to the end of the text. A backslash escapes the next character (a line end
    too). String prefixes (``r b u f`` and pairs) are not inside.
  - A ``'`` preceded by a letter, digit or ``_`` is an apostrophe (``don't``, ``1990's``), not
    a quote, unless that word is a string prefix (``r'...'``, ``rb'...'``).
  - ``#`` comments run from the ``#`` to just before the line end. ``//`` starts a comment only
    where the previous non-blank character on its line is nothing or one of ``; { }``, so
    Python's floor division ``a // b`` stays code. ``/* ... */`` comments contain both
    delimiters and may span lines; unclosed, they run to the end of the text.
  - A URL met in code is skipped as a whole, so its ``#`` and ``//`` start nothing.
- ``in_url``: ``http://``, ``https://`` (any case) or ``www.``, not preceded by a letter or
  digit, then URL characters ``A-Za-z0-9 - . _ ~ : / ? # @ ! $ & + , ; = %``, the last of them
  not one of ``. , : ; ! ?`` (so a sentence's full stop is not part of its URL). Quotes,
  brackets, ``*``, ``<>`` and whitespace end a URL. URLs are found everywhere, so a URL in a
  comment is both ``in_url`` and ``in_comment``.
- Bracket depth counts ``()``, ``[]``, ``{}`` in code only (not in strings or comments). An
  opening bracket has the depth it opens (``(`` of ``f(x)`` has 1); a closing bracket still has
  the inner depth (``)`` has 1) and the depth drops after it. A closer with nothing open is
  ignored (depth never goes below 0). ``depth_total`` is its own count over all three kinds,
  so on mismatched text such as ``(]`` it is not the sum of the three.
- ``word_pos``: a word is a run of letters, digits and ``_`` (Python's ``\\w``); its first
  character has 1, the next 2, and so on; 0 outside words.
- Character classes follow ``str`` methods: ``isspace``, ``isalpha``, ``isdigit``,
  ``isupper``; ``is_punct`` is Unicode punctuation or symbol (categories P* and S*), which on
  ASCII is exactly ``string.punctuation``; ``is_newline`` is ``\\n`` or ``\\r``.

User features: ``regex_feature`` (inside any match of a pattern, checked by
:mod:`lstmscope.text.pattern` and run with the ``regex`` package's timeout), ``span_feature``
(inside selected spans), ``parse_feature_spec`` for the CLI's ``--feature 'name=REGEX'``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Literal

import numpy as np
import regex

from lstmscope.errors import LstmscopeError
from lstmscope.text.pattern import REGEX_TIMEOUT_S, compile_pattern

log = logging.getLogger(__name__)

BINARY = np.bool_
GRADED = np.int32


class FeatureError(LstmscopeError, ValueError):
    """A bad feature name, pattern or span; the message says what to change."""


@dataclass(frozen=True)
class Feature:
    """A named per-character feature. ``fn(text)`` returns an array of ``len(text)``."""

    name: str
    description: str
    kind: Literal["binary", "graded"]
    fn: Callable[[str], np.ndarray]

    def __call__(self, text: str) -> np.ndarray:
        return self.fn(text)


# --- the lexical scan --------------------------------------------------------------------------

_URL_CHARS = r"A-Za-z0-9\-._~:/?#@!$&+,;=%"
_URL_END = r"A-Za-z0-9\-_~/#@$&+=%"  # URL characters that may end a URL
URL_PATTERN = (
    rf"(?<![A-Za-z0-9])(?:[hH][tT][tT][pP][sS]?://|[wW][wW][wW]\.)[{_URL_CHARS}]*[{_URL_END}]"
)
_URL_RE = re.compile(URL_PATTERN)

# The next thing in code that changes state. URLs first so their `#` and `//` start nothing;
# triple quotes before single ones.
_CODE_RE = re.compile(
    rf"(?P<url>{URL_PATTERN})|(?P<dq3>\"\"\")|(?P<sq3>''')|(?P<dq>\")|(?P<sq>')"
    r"|(?P<hash>#)|(?P<slash2>//)|(?P<block>/\*)"
)
# String bodies as "unrolled loops" (normal* (special normal*)*): linear time, no backtracking.
_DQ_BODY = re.compile(r'[^"\\\r\n]*(?:\\(?:\r\n|[\s\S]|\Z)[^"\\\r\n]*)*')
_SQ_BODY = re.compile(r"[^'\\\r\n]*(?:\\(?:\r\n|[\s\S]|\Z)[^'\\\r\n]*)*")
_DQ3_BODY = re.compile(r'[^"\\]*(?:(?:\\[\s\S]|\\\Z|"(?!""))[^"\\]*)*')
_SQ3_BODY = re.compile(r"[^'\\]*(?:(?:\\[\s\S]|\\\Z|'(?!''))[^'\\]*)*")
_TO_EOL = re.compile(r"[^\r\n]*")
_PREFIXES = frozenset({"r", "b", "u", "f", "rb", "br", "fr", "rf"})


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _is_apostrophe(text: str, i: int) -> bool:
    """True if the ``'`` at ``i`` follows a word that is not a string prefix."""
    if i == 0 or not _is_word_char(text[i - 1]):
        return False
    # Prefixes are at most two letters, so three characters of look-back decide it.
    for k in (1, 2):
        word = text[i - k : i] if i >= k else ""
        if word.lower() in _PREFIXES and (i == k or not _is_word_char(text[i - k - 1])):
            return False
    return True


def _starts_line_comment(text: str, i: int) -> bool:
    """``//`` at ``i`` may be a comment if nothing but ``; { }`` or blanks precede it on its line."""
    j = i - 1
    while j >= 0 and text[j] in " \t":
        j -= 1
    return j < 0 or text[j] in "\r\n;{}"


def _open_round_square(segment: str) -> int:
    return segment.count("(") + segment.count("[") - segment.count(")") - segment.count("]")


def _scan(text: str) -> tuple[list[int], list[int], list[int]]:
    """Spans of double-quoted strings, single-quoted strings and comments.

    Each list is flat: ``[start0, stop0, start1, stop1, ...]`` with half-open spans. One pass
    over the tokens that change state (a regex search jumps over plain code), so the cost is per
    string or comment, not per character.
    """
    n = len(text)
    dq: list[int] = []
    sq: list[int] = []
    com: list[int] = []
    pos = 0
    search = _CODE_RE.search
    # Open ( and [ in code so far, counted only when a `//` needs it: a `//` that starts a
    # Python continuation line inside brackets is floor division, not a comment.
    track = "//" in text
    counted_to = 0
    open_rs = 0
    while pos < n:
        m = search(text, pos)
        if m is None:
            break
        kind = m.lastgroup
        start = m.start()
        if track and kind != "url":
            open_rs = max(0, open_rs + _open_round_square(text[counted_to:start]))
            counted_to = start
        if kind == "url":
            pos = m.end()
        elif kind == "dq3" or kind == "sq3":
            if kind == "sq3" and _is_apostrophe(text, start):
                pos = start + 1
                continue
            delim = text[start : start + 3]
            end = (_DQ3_BODY if kind == "dq3" else _SQ3_BODY).match(text, start + 3).end()
            stop = end + 3 if text.startswith(delim, end) else n
            (dq if kind == "dq3" else sq).extend((start, stop))
            pos = counted_to = stop
        elif kind == "dq" or kind == "sq":
            if kind == "sq" and _is_apostrophe(text, start):
                pos = start + 1
                continue
            end = (_DQ_BODY if kind == "dq" else _SQ_BODY).match(text, start + 1).end()
            stop = end + 1 if end < n and text[end] == text[start] else end
            (dq if kind == "dq" else sq).extend((start, stop))
            pos = counted_to = stop
        elif kind == "hash":
            stop = _TO_EOL.match(text, start).end()
            com.extend((start, stop))
            pos = counted_to = stop
        elif kind == "slash2":
            if open_rs > 0 or not _starts_line_comment(text, start):
                pos = start + 1
                continue
            stop = _TO_EOL.match(text, start).end()
            com.extend((start, stop))
            pos = counted_to = stop
        else:  # block comment
            close = text.find("*/", start + 2)
            stop = n if close < 0 else close + 2
            com.extend((start, stop))
            pos = counted_to = stop
    return dq, sq, com


def _mask(n: int, flat_spans: Sequence[int] | np.ndarray) -> np.ndarray:
    """Boolean mask of the union of half-open spans given flat as ``[s0, e0, s1, e1, ...]``."""
    spans = np.asarray(flat_spans, dtype=np.int64).reshape(-1, 2)
    if n == 0 or len(spans) == 0:
        return np.zeros(n, dtype=BINARY)
    diff = np.bincount(spans[:, 0], minlength=n + 1) - np.bincount(spans[:, 1], minlength=n + 1)
    return np.cumsum(diff[:n]) > 0


def _clipped_depth(opens: np.ndarray, closes: np.ndarray) -> np.ndarray:
    """Bracket depth with the closing-bracket convention and closers clipped at 0.

    ``after[t] = max(0, after[t-1] + open[t] - close[t])`` in closed form: for a walk clamped
    at 0, ``after = S - min(0, running min of S)`` with ``S`` the unclamped running sum. A
    closer reports the depth before it (the inner depth); anything else the depth after it.
    """
    if len(opens) == 0:
        return np.zeros(0, dtype=GRADED)
    s = np.cumsum(opens.astype(np.int64) - closes.astype(np.int64))
    after = s - np.minimum(np.minimum.accumulate(s), 0)
    before = np.concatenate(([0], after[:-1]))
    return np.where(closes, before, after).astype(GRADED)


# Character classes for ASCII, looked up by code point; the rest go through `str` methods once
# per distinct character.
_ASCII = [chr(i) for i in range(128)]
_CLASS_FNS: dict[str, Callable[[str], bool]] = {
    "is_space": str.isspace,
    "is_letter": str.isalpha,
    "is_digit": str.isdigit,
    "is_upper": str.isupper,
    "is_punct": lambda c: unicodedata.category(c)[0] in "PS",
    "is_newline": lambda c: c in "\r\n",
    "_word": _is_word_char,
}
_ASCII_TABLES = {k: np.array([f(c) for c in _ASCII], dtype=BINARY) for k, f in _CLASS_FNS.items()}


class _Text:
    """One text and the passes its features share, each computed at most once."""

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise TypeError(f"features need a str, got {type(text).__name__}")
        self.text = text
        self.n = len(text)

    @cached_property
    def codes(self) -> np.ndarray:  # [N] uint32 code points
        # surrogatepass: a Python str may hold lone surrogates, and they must not crash us.
        raw = self.text.encode("utf-32-le", "surrogatepass")
        return np.frombuffer(raw, dtype="<u4")

    @cached_property
    def idx(self) -> np.ndarray:  # [N]
        return np.arange(self.n, dtype=np.int64)

    def char_class(self, name: str) -> np.ndarray:
        return self._classes[name]

    @cached_property
    def _classes(self) -> dict[str, np.ndarray]:
        codes = self.codes
        ascii_mask = codes < 128
        out = {k: t[np.where(ascii_mask, codes, 0)] for k, t in _ASCII_TABLES.items()}
        if not ascii_mask.all():
            where = np.flatnonzero(~ascii_mask)
            uniq, inv = np.unique(codes[where], return_inverse=True)
            chars = [chr(int(c)) for c in uniq]
            for k, f in _CLASS_FNS.items():
                out[k][where] = np.array([f(c) for c in chars], dtype=BINARY)[inv]
        return out

    @cached_property
    def lines(self) -> dict[str, np.ndarray]:
        """Line number per position (``id``, [N]); per line its start and content end ([L]).

        A line's content ends where its line end begins (or at the end of the text).
        """
        n, codes = self.n, self.codes
        cr = codes == 13
        lf = codes == 10
        # A \r followed by \n is one two-character line end, which starts at the \r.
        lf_after_cr = lf & np.concatenate(([False], cr[:-1]))
        cr_before_lf = cr & np.concatenate((lf[1:], [False]))
        term_start = np.flatnonzero(cr | (lf & ~lf_after_cr))
        term_end = term_start + 1 + cr_before_lf[term_start]
        marker = np.zeros(n + 1, dtype=np.int64)
        marker[term_end] = 1
        line_id = np.cumsum(marker[:n])  # [N]
        line_starts = np.concatenate(([0], term_end))  # [L]
        content_ends = np.concatenate((term_start, [n]))  # [L]
        return {"id": line_id, "starts": line_starts, "ends": content_ends}

    @cached_property
    def spans(self) -> dict[str, np.ndarray]:
        dq, sq, com = _scan(self.text)
        return {
            "in_dquote": _mask(self.n, dq),
            "in_squote": _mask(self.n, sq),
            "in_comment": _mask(self.n, com),
        }

    @cached_property
    def in_url(self) -> np.ndarray:
        flat = [i for m in _URL_RE.finditer(self.text) for i in m.span()]
        return _mask(self.n, flat)

    @cached_property
    def code_mask(self) -> np.ndarray:
        s = self.spans
        return ~(s["in_dquote"] | s["in_squote"] | s["in_comment"])

    def _brackets(self, pairs: str) -> tuple[np.ndarray, np.ndarray]:
        codes, code = self.codes, self.code_mask
        opens = np.zeros(self.n, dtype=bool)
        closes = np.zeros(self.n, dtype=bool)
        for o, c in zip(pairs[::2], pairs[1::2], strict=True):
            opens |= codes == ord(o)
            closes |= codes == ord(c)
        return opens & code, closes & code

    def depth(self, pairs: str) -> np.ndarray:
        return _clipped_depth(*self._brackets(pairs))

    def column(self) -> np.ndarray:
        ln = self.lines
        lid = ln["id"]
        return (np.minimum(self.idx, ln["ends"][lid]) - ln["starts"][lid]).astype(GRADED)

    def to_eol(self) -> np.ndarray:
        ln = self.lines
        return np.maximum(ln["ends"][ln["id"]] - self.idx, 0).astype(GRADED)

    def indent(self) -> np.ndarray:
        ln, codes, n = self.lines, self.codes, self.n
        if n == 0:
            return np.zeros(0, dtype=GRADED)
        weight = np.where(codes == 32, 1, np.where(codes == 9, 4, 0))
        # First non-blank at or after each position (n if none): a reversed running minimum.
        first_non_ws = np.where(weight > 0, n, self.idx)
        first_non_ws = np.minimum.accumulate(first_non_ws[::-1])[::-1]
        first_non_ws = np.concatenate((first_non_ws, [n]))
        starts = ln["starts"]
        lead_end = np.minimum(first_non_ws[starts], ln["ends"])
        cum = np.concatenate(([0], np.cumsum(weight)))
        level = (cum[lead_end] - cum[starts]) // 4  # [L]
        return level[ln["id"]].astype(GRADED)

    def word_pos(self) -> np.ndarray:
        word = self.char_class("_word")
        last_break = np.maximum.accumulate(np.where(word, -1, self.idx))
        return np.where(word, self.idx - last_break, 0).astype(GRADED)


def _in_string(t: _Text) -> np.ndarray:
    return t.spans["in_dquote"] | t.spans["in_squote"]


# name -> (kind, description, getter). Order is the order `compute` returns.
_SPECS: dict[str, tuple[str, str, Callable[[_Text], np.ndarray]]] = {
    "in_url": ("binary", "inside an http://, https:// or www. URL", lambda t: t.in_url),
    "in_dquote": (
        "binary",
        'inside a "..." or """...""" string, quotes included',
        lambda t: t.spans["in_dquote"],
    ),
    "in_squote": (
        "binary",
        "inside a '...' or '''...''' string, quotes included (apostrophes excluded)",
        lambda t: t.spans["in_squote"],
    ),
    "in_string": ("binary", "inside a string literal of either quote", _in_string),
    "in_comment": (
        "binary",
        "inside a # or // line comment or a /* */ block comment",
        lambda t: t.spans["in_comment"],
    ),
    "depth_paren": ("graded", "open ( brackets, outside strings and comments", partial(_Text.depth, pairs="()")),
    "depth_square": ("graded", "open [ brackets, outside strings and comments", partial(_Text.depth, pairs="[]")),
    "depth_curly": ("graded", "open { brackets, outside strings and comments", partial(_Text.depth, pairs="{}")),
    "depth_total": ("graded", "open brackets of any kind, outside strings and comments", partial(_Text.depth, pairs="()[]{}")),
    "indent": ("graded", "indentation level of the line (leading spaces + 4 per tab) // 4", _Text.indent),
    "column": ("graded", "position in the line, from 0", _Text.column),
    "to_eol": ("graded", "characters left before the line end (0 on the line end)", _Text.to_eol),
    "word_pos": ("graded", "position in the current word from 1 (0 outside words)", _Text.word_pos),
    "is_space": ("binary", "whitespace (str.isspace)", partial(_Text.char_class, name="is_space")),
    "is_letter": ("binary", "a letter (str.isalpha)", partial(_Text.char_class, name="is_letter")),
    "is_digit": ("binary", "a digit (str.isdigit)", partial(_Text.char_class, name="is_digit")),
    "is_upper": ("binary", "an upper-case letter (str.isupper)", partial(_Text.char_class, name="is_upper")),
    "is_punct": ("binary", "punctuation or symbol (Unicode P* or S*)", partial(_Text.char_class, name="is_punct")),
    "is_newline": ("binary", "a line-end character (\\n or \\r)", partial(_Text.char_class, name="is_newline")),
}  # fmt: skip


def _single(getter: Callable[[_Text], np.ndarray], dtype: type, text: str) -> np.ndarray:
    return np.asarray(getter(_Text(text)), dtype=dtype)


FEATURES: dict[str, Feature] = {
    name: Feature(
        name, desc, kind, partial(_single, getter, BINARY if kind == "binary" else GRADED)
    )
    for name, (kind, desc, getter) in _SPECS.items()
}


def compute(
    text: str, names: Iterable[str] | None = None, extra: Sequence[Feature] = ()
) -> dict[str, np.ndarray]:
    """Compute built-in features (all, or ``names``) and ``extra`` user features on ``text``.

    Shared passes (the lexical scan, line structure, character classes) run once for all.
    Returns ``{name: array[len(text)]}`` in registry order, then ``extra`` in the given order.
    """
    names = list(FEATURES) if names is None else list(names)
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise FeatureError(
            f"unknown feature {', '.join(map(repr, unknown))}: choose from {', '.join(FEATURES)}"
        )
    t = _Text(text)
    out: dict[str, np.ndarray] = {}
    for name in names:
        kind, _, getter = _SPECS[name]
        out[name] = np.asarray(getter(t), dtype=BINARY if kind == "binary" else GRADED)
    for feat in extra:
        out[feat.name] = np.asarray(feat(text))
    return out


# --- user features -----------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def _checked_pattern(pattern: str) -> regex.Pattern:
    """The user's pattern compiled by the one user-pattern check (``lstmscope.text.pattern``)."""
    try:
        return compile_pattern(pattern)
    except ValueError as e:
        raise FeatureError(str(e)) from None


def regex_feature(
    name: str, pattern: str, text: str, timeout: float = REGEX_TIMEOUT_S
) -> np.ndarray:
    """Binary feature: True on characters inside any match of ``pattern`` in ``text``.

    Runs with the ``regex`` package's ``timeout`` (seconds for the whole scan), so a
    catastrophically backtracking pattern raises ``FeatureError`` instead of hanging a server
    thread. Patterns longer than ``MAX_PATTERN_LEN`` characters or matching the empty string
    are rejected (:func:`lstmscope.text.pattern.compile_pattern`, the one user-pattern check).
    Zero-width matches inside the text (``\\b``, lookarounds) mark nothing.
    """
    compiled = _checked_pattern(pattern)
    flat: list[int] = []
    try:
        for m in compiled.finditer(text, timeout=timeout, concurrent=True):
            if m.end() > m.start():
                flat.extend(m.span())
    except TimeoutError:
        raise FeatureError(
            f"feature {name!r}: pattern {pattern[:60]!r} took over {timeout:g} s on "
            f"{len(text):,} characters (catastrophic backtracking?); simplify it"
        ) from None
    return _mask(len(text), flat)


def parse_feature_spec(spec: str, timeout: float = REGEX_TIMEOUT_S) -> Feature:
    """Parse the CLI's ``--feature 'name=REGEX'`` into a binary ``Feature``.

    The name is a letter or ``_`` then letters, digits, ``_ . -`` (at most 64); it must not
    shadow a built-in feature. Everything after the first ``=`` is the pattern.
    """
    name, sep, pattern = spec.partition("=")
    name = name.strip()
    if not sep:
        raise FeatureError(
            f"bad feature {spec[:60]!r}: expected name=REGEX, e.g. 'todo=TODO|FIXME'"
        )
    if not _NAME_RE.fullmatch(name):
        raise FeatureError(
            f"bad feature name {name[:60]!r}: use a letter or _ then letters, digits, _ . - "
            "(at most 64 characters)"
        )
    if name in FEATURES:
        raise FeatureError(f"feature name {name!r} is built in; choose another name")
    _checked_pattern(pattern)  # fail now, at parse time, not on first use
    return Feature(
        name,
        f"inside a match of /{pattern}/",
        "binary",
        partial(regex_feature, name, pattern, timeout=timeout),
    )


def span_feature(n: int, spans: Iterable[tuple[int, int]]) -> np.ndarray:
    """Binary feature of length ``n``: True inside any half-open span ``(start, stop)``."""
    if n < 0:
        raise FeatureError(f"length must be >= 0, got {n}")
    flat: list[int] = []
    for span in spans:
        try:
            start, stop = (int(v) for v in span)
        except (TypeError, ValueError):
            raise FeatureError(f"bad span {span!r}: expected (start, stop)") from None
        if not 0 <= start <= stop <= n:
            raise FeatureError(f"bad span ({start}, {stop}): need 0 <= start <= stop <= {n}")
        flat.extend((start, stop))
    return _mask(n, flat)
