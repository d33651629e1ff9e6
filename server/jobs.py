"""The handlers that fill the tabs and the export: each runs a slow library call off the event
loop (through :class:`~lstmscope.server.runner.Runner`) and shows its result when it is back.

:class:`Jobs` is one part of :class:`lstmscope.server.app.App` (a mixin): the neuron card (its
statistics at once, the sampled contexts a moment later), the ranking for the feature, the gate
saturation plot, select & match, and the HTML export of the view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd

from lstmscope.export.text import export_range
from lstmscope.server.runner import user_error

log = logging.getLogger("server")

# Clicking through units with the spinner should not start a column scan per click.
CONTEXTS_DELAY_MS = 800


def show_failure(show: Callable[[str], None], what: str, e: BaseException, *why: object) -> None:
    """A failed job in its panel: an error the user can fix as it is; a bug as "``what`` failed
    (its type)", logged with its traceback (``why``: the log message and its arguments)."""
    text = user_error(e)
    show(text or f"{what} failed ({type(e).__name__})")
    if text is None:
        log.error(*why, exc_info=e)


class Jobs:
    """Slow work for the tabs (uses the App's ``runner``, ``guard``, ``report``, ``state``,
    ``selection``, ``tab_shown`` and the components it fills)."""

    _card_token = 0  # the latest card scheduled (see schedule_card)
    _sampled: str | None = None  # the neuron whose sampled contexts the card shows

    # -- feature ranking --------------------------------------------------------------------
    def load_rank(self, feature: str | None) -> None:
        """Rank every neuron for ``feature`` into the Ranking tab (a prompt without one)."""
        if feature is None:
            self.rank.prompt()
            return
        self.rank.loading(feature)

        def fail(e: BaseException) -> None:
            show_failure(self.rank.failed, "ranking", e, "ranking %s failed", feature)

        self.runner.submit(
            "rank",
            # Off the loop, with the ranking: which units drift (counters), flagged in its rows.
            lambda: (self.shared.rank(feature), self.shared.drifting(wait=True)),
            self.guard(lambda got: self.rank.update(feature, got[0], got[1])),
            fail,
        )

    # -- card and saturation ----------------------------------------------------------------
    def schedule_card(self, nid: str) -> None:
        """The card after the text: on the server it is filled on the next tick, so the
        recoloured text goes out first, and a card for a neuron already replaced is skipped."""
        if self.runner.inline:
            self._load_card(nid)
            return
        self._card_token += 1
        token = self._card_token

        def go() -> None:
            if token == self._card_token:
                self.guard(self._load_card)(nid)

        self.doc.add_next_tick_callback(go)

    def _load_card(self, nid: str) -> None:
        """Statistics, histogram and the recorded top/bottom contexts at once; the sampled
        contexts (a pass over the whole column) a moment later, if the neuron is still shown."""
        self.card.update(nid, self.state.scale)
        self.card.show_contexts(nid, self.shared.quick_contexts(nid))
        self._sampled = None
        # The column scan only for a card someone is looking at (done when its tab opens).
        if self.tab_shown() != "card":
            return
        self._load_sampled(nid)

    def card_opened(self) -> None:
        """The card's tab was opened: sample the shown neuron's contexts if not done yet."""
        if self._sampled != self.state.primary:
            self._load_sampled(self.state.primary)

    def _load_sampled(self, nid: str) -> None:
        self.card.loading()

        def fail(e: BaseException) -> None:
            show_failure(self.card.failed, "contexts", e, "contexts of %s failed", nid)

        self.runner.submit(
            "card",
            lambda: self.shared.contexts(nid),
            self.guard(lambda df: self._show_sampled(nid, df)),
            fail,
            executor=self.shared.background,
            delay_ms=CONTEXTS_DELAY_MS,
        )

    def _show_sampled(self, nid: str, df: pd.DataFrame) -> None:
        self.card.show_contexts(nid, df)
        self._sampled = nid

    def load_saturation(self) -> None:
        """Every gate unit's saturation into the Gate saturation tab."""

        def done(df: pd.DataFrame) -> None:
            self.saturation.update(df)
            self.saturation.mark(self.state.primary)

        self.runner.submit(
            "saturation",
            self.shared.saturation,
            self.guard(done),
            lambda e: self.saturation.failed(user_error(e) or "saturation failed"),
        )

    # -- select and match -------------------------------------------------------------------
    def on_select(self) -> None:
        span = self.text.selected_span()
        self.selection = span
        self.select.set_span(span, self.shared.text)
        self.show_marks()

    def find_neurons(self) -> None:
        if self.selection is None:
            raise ValueError("select a span in the text first")
        a, b = self.selection
        self.select.busy(f"finding neurons on inside {a:,}–{b:,} and off around it…")

        def matched(df: pd.DataFrame) -> None:
            self.select.show_matches(df, self.shared.text)

        def found(df: pd.DataFrame) -> None:
            self.select.show_neurons(df)
            chosen = self.select.matching_set(df)
            if len(chosen):
                self.select.status.text += " · matching…"
                self.runner.submit(
                    "match", lambda: self.shared.match_spans(chosen), self.guard(matched), fail
                )

        def fail(e: BaseException) -> None:
            show_failure(self.select.failed, "search", e, "select and match failed")

        self.runner.submit(
            "select", lambda: self.shared.select_neurons(a, b), self.guard(found), fail
        )

    # -- export -----------------------------------------------------------------------------
    def export(self) -> None:
        s = self.state
        stop = min(s.stop, self.n)
        name = f"lstmscope-{s.primary}-{s.start}-{stop}.html"
        self.message.show("preparing the export…", "busy")

        def done(doc_html: str) -> None:
            self.download.send(name, doc_html)
            self.message.show(f"exported {name} ({len(doc_html) / 1e3:.0f} kB)", "info")

        self.runner.submit(
            "export",
            lambda: export_range(self.shared.store, list(s.neurons), s.start, stop, scale=s.scale),
            self.guard(done),
            lambda e: self.report(e, "export: "),
        )
