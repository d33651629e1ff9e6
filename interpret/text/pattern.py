"""The one safe way to run a pattern a user typed: the ``regex`` package with a timeout.

A user's regular expression reaches the library from the CLI (``--feature name=/re/``), the
dashboard's find box and the export's search. Each is checked here, once, with the same limits:
not empty, at most :data:`MAX_PATTERN_LEN` characters, valid, never matching empty text, and
run under a ``timeout`` so a catastrophic pattern (``(a+)+$``) cannot hang a server thread.
"""

from __future__ import annotations

import logging
import time

import regex

log = logging.getLogger(__name__)

MAX_PATTERN_LEN = 1_000
REGEX_TIMEOUT_S = 1.0
MAX_FIND_MATCHES = 10_000  # one page; more is a job for the analysis module, not a page


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
    must not hang the dashboard); raises ``ValueError`` for an empty, too long, invalid, too
    slow or empty-matching pattern. ``literal=True`` finds ``pattern`` as plain text (its length
    is checked before escaping, so the limit means what the user typed).
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("empty pattern: give a regular expression that matches some text")
    if len(pattern) > MAX_PATTERN_LEN:
        raise ValueError(f"pattern is {len(pattern)} characters; the limit is {MAX_PATTERN_LEN}")
    if literal:
        pattern = regex.escape(pattern)
    if max_matches < 1:
        raise ValueError(f"max_matches must be >= 1, got {max_matches}")
    try:
        rx = regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"bad regular expression {pattern[:60]!r}: {e}") from None
    empty_hint = "make it match at least one character (e.g. use + instead of *)"
    if rx.search("", timeout=timeout) is not None:
        raise ValueError(f"pattern {pattern[:60]!r} matches the empty string; {empty_hint}")
    out: list[tuple[int, int]] = []
    more = False
    deadline = time.monotonic() + 10 * timeout  # the timeout is per search; bound the total too
    try:
        for m in rx.finditer(text, timeout=timeout, concurrent=True):
            a, b = m.span()
            if a == b:
                raise ValueError(
                    f"pattern {pattern[:60]!r} matches empty text (at position {a}); {empty_hint}"
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
