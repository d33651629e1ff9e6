"""The handlers of the find box: search the whole text, mark the matches, step through them.

:class:`Finding` is one part of :class:`lstmscope.server.app.App` (a mixin). The search itself
(a literal, or a regular expression with a time limit) is ``Shared.find``, run off the event
loop; its matches are kept in ``matches`` and drawn by ``App.show_marks``.
"""

from __future__ import annotations

import bisect

from lstmscope.server.state import ViewState, to_query
from lstmscope.text.pattern import MAX_PATTERN_LEN


class Finding:
    """Find text (uses the App's ``state``, ``matches``, ``matches_more``, ``match_i``,
    ``runner``, ``jump``, ``show_marks`` and the find widgets of its ``controls``)."""

    def set_find(self, pattern: str, is_regex: bool) -> None:
        if len(pattern) > MAX_PATTERN_LEN:
            # Refused before it reaches the view: it would ride along in every URL update.
            raise ValueError(f"find: {len(pattern):,} characters; the limit is {MAX_PATTERN_LEN:,}")
        s = self.state.with_(find=pattern, regex=is_regex)
        self.state = s
        self.url.update(to_query(s))
        if not pattern:
            self.matches, self.match_i = [], -1
            self.controls.find_info.text = ""
            self.show_marks()
            return
        self.run_find(s, jump=True)

    def run_find(self, s: ViewState, jump: bool) -> None:
        """Search for ``s.find`` off the loop; then go to the first match from the window on
        (``jump``), or only mark the one inside the window."""
        self.controls.find_info.text = "<i>searching…</i>"

        def done(result: tuple[list[tuple[int, int]], bool]) -> None:
            self.matches, self.matches_more = result
            self.match_i = -1
            if not self.matches:
                self.controls.find_info.text = "no matches"
                self.show_marks()
                return
            starts = [a for a, _ in self.matches]
            i = bisect.bisect_left(starts, self.state.start)
            if jump:
                self.goto_match(i % len(self.matches))
            else:
                inside = i < len(starts) and starts[i] < min(self.state.stop, self.n)
                self.match_i = i if inside else -1
                self._find_info()
                self.show_marks()

        def fail(e: BaseException) -> None:
            self.matches, self.match_i = [], -1
            self.controls.find_info.text = "bad pattern"
            self.show_marks()
            self.report(e, "find: ")

        self.runner.submit(
            "find", lambda: self.shared.find(s.find, s.regex), self.guard(done), fail
        )

    def _find_info(self) -> None:
        n = f"{len(self.matches)}{'+' if self.matches_more else ''}"
        i = self.match_i + 1 if self.match_i >= 0 else "–"
        self.controls.find_info.text = f"match {i} / {n}"

    def is_match(self, span: tuple[int, int]) -> bool:
        """Whether ``span`` is the match chosen last."""
        return 0 <= self.match_i < len(self.matches) and self.matches[self.match_i] == span

    def goto_match(self, i: int) -> None:
        self.match_i = i
        a, b = self.matches[i]
        self._find_info()
        self.jump(a, b)

    def next_match(self, step: int) -> None:
        if not self.matches:
            raise ValueError("nothing found yet: type text to find first")
        if step == 0:  # a next and a previous click coalesced: nothing to do
            return
        # None chosen yet: the first step lands on the first (or the last) match.
        first = step - 1 if step > 0 else step
        i = self.match_i + step if self.match_i >= 0 else first
        self.goto_match(i % len(self.matches))
