"""The one safe way to run a pattern a user typed: the ``regex`` package with a timeout.

A user's regular expression reaches the library from the CLI (``--feature name=/re/``), the
dashboard's find box and the export's search. Each is checked here, once, with the same limits
(:func:`compile_pattern`: not empty, at most :data:`MAX_PATTERN_LEN` characters, valid, never
matching the empty string), and run under a ``timeout`` so a catastrophic pattern (``(a+)+$``)
cannot hang a server thread: :func:`find_matches` here, ``regex_feature`` in
:mod:`lstmscope.analysis.features`.
"""

from __future__ import annotations

import logging
import time

import regex

log = logging.getLogger(__name__)

MAX_PATTERN_LEN = 1_000
REGEX_TIMEOUT_S = 1.0
MAX_FIND_MATCHES = 10_000  # one page; more is a job for the analysis module, not a page
EMPTY_HINT = "make it match at least one character (e.g. use + instead of *)"


def compile_pattern(
    pattern: str, *, literal: bool = False, timeout: float = REGEX_TIMEOUT_S
) -> regex.Pattern:
    """A user's pattern, checked and compiled; ``ValueError`` says what to change.

    Refused: not a string or empty, longer than :data:`MAX_PATTERN_LEN` characters (checked
    before a ``literal`` pattern is escaped, so the limit means what the user typed), invalid,
    or matching the empty string (it would mark or find nothing). Running it is the caller's
    part, with ``timeout=``: the ``regex`` package stops a catastrophic pattern there.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("empty pattern: give a regular expression that matches some text")
    if len(pattern) > MAX_PATTERN_LEN:
        raise ValueError(f"pattern is {len(pattern)} characters; the limit is {MAX_PATTERN_LEN}")
    if literal:
        pattern = regex.escape(pattern)
    try:
        rx = regex.compile(pattern)
    except (regex.error, ValueError, OverflowError, RecursionError) as e:
        raise ValueError(f"bad regular expression {pattern[:60]!r}: {e}") from None
    try:
        matches_empty = rx.search("", timeout=timeout) is not None
    except TimeoutError:  # cannot happen on "" in practice; the run's own timeout decides then
        matches_empty = False
    if matches_empty:
        raise ValueError(f"pattern {pattern[:60]!r} matches the empty string; {EMPTY_HINT}")
    return rx


def find_matches(
    text: str,
    pattern: str,
    *,
    max_matches: int = 50,
    timeout: float = REGEX_TIMEOUT_S,
    literal: bool = False,
) -> tuple[list[tuple[int, int]], bool]:
    """Spans of the first ``max_matches`` matches of a user pattern, and whether there are more.

    Uses the ``regex`` package with a ``timeout`` for the whole scan (a catastrophic pattern
    must not hang the dashboard); raises ``ValueError`` for a pattern :func:`compile_pattern`
    refuses, one that is too slow or one that matches empty text somewhere. ``literal=True``
    finds ``pattern`` as plain text.
    """
    if max_matches < 1:
        raise ValueError(f"max_matches must be >= 1, got {max_matches}")
    rx = compile_pattern(pattern, literal=literal, timeout=timeout)
    pattern = rx.pattern
    out: list[tuple[int, int]] = []
    more = False
    deadline = time.monotonic() + 10 * timeout  # the timeout is per search; bound the total too
    try:
        for m in rx.finditer(text, timeout=timeout, concurrent=True):
            a, b = m.span()
            if a == b:
                raise ValueError(
                    f"pattern {pattern[:60]!r} matches empty text (at position {a}); {EMPTY_HINT}"
                )
            if len(out) == max_matches:
                more = True
                break
            out.append((a, b))
            if time.monotonic() > deadline:
                more = True
                log.info("find: stopped after %d matches (time limit)", len(out))
                break
    except TimeoutError:
        raise ValueError(
            f"pattern {pattern[:60]!r} took longer than {timeout:g} s; simplify it "
            "(nested repeats such as (a+)+ backtrack exponentially)"
        ) from None
    return out, more
