"""The synthetic text's ground truth: each run of text is recorded with the state it was
written in, and the runs become one label array per name.

The generator (``lstmscope.text.planted``) never re-parses its text: it tells the ``Emitter``
when it opens a string, a comment or a bracket, and the labels follow. They match the
conventions of ``lstmscope.analysis.features`` exactly, and on generated text
``features.compute`` returns the same arrays (the tests check it):

- ``in_url``, ``in_dquote``, ``in_squote``, ``in_string`` (either quote), ``in_comment``:
  ``bool``. Opening and closing quotes are inside their string; ``#``, ``//``, ``/*`` and
  ``*/`` are inside their comment; the line end after a ``#``/``//`` comment is not, line ends
  within ``/* */`` comments and docstrings are. Apostrophes (``don't``) are not quotes.
- ``depth_paren``, ``depth_square``, ``depth_curly``, ``depth_total``: ``int32``. An opening
  bracket has the depth it opens, a closing bracket still has the inner depth and the depth
  drops after it. Brackets inside strings and comments are text and do not count.
- ``indent``: ``int32``, the level (leading spaces // 4) of the line, the same for every
  character of the line including its ``\\n``.
- ``column`` (from 0) and ``to_eol`` (characters left before the ``\\n``; 0 on the ``\\n``):
  ``int32``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABELS = (
    "in_url",
    "in_dquote",
    "in_squote",
    "in_string",
    "in_comment",
    "depth_paren",
    "depth_square",
    "depth_curly",
    "depth_total",
    "indent",
    "column",
    "to_eol",
)


@dataclass(frozen=True, eq=False)  # eq on dicts of arrays would be ambiguous
class SyntheticText:
    """Generated text and its labels: ``labels[name]`` has shape ``[len(text)]``."""

    text: str
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.text)


# Emitter state flags, packed with the three depths into one int per run.
IN_URL, IN_DQUOTE, IN_SQUOTE, IN_COMMENT = 1, 2, 4, 8
_STRING_OR_COMMENT = IN_DQUOTE | IN_SQUOTE | IN_COMMENT
_KIND = {"(": 0, ")": 0, "[": 1, "]": 1, "{": 2, "}": 2}


class Emitter:
    """Appends text in runs, each with the state it was written in; tracks lines.

    Every run is written in one state, so labels come out as ``np.repeat(state, run_length)``
    instead of a Python append per character.
    """

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.lens: list[int] = []
        self.states: list[int] = []
        self.pos = 0
        self.flags = 0
        self.depth = [0, 0, 0]
        self.code = 0  # flags | paren << 4 | square << 8 | curly << 12
        self.line_start = 0
        self.line_indent = 0
        self.lines: list[int] = []  # flat (start, newline position, indent) per finished line

    def _pack(self) -> None:
        d = self.depth
        self.code = self.flags | (d[0] << 4) | (d[1] << 8) | (d[2] << 12)

    def set_flags(self, flags: int) -> None:
        self.flags = flags
        self._pack()

    @property
    def column(self) -> int:
        return self.pos - self.line_start

    @property
    def total_depth(self) -> int:
        return sum(self.depth)

    def put(self, s: str) -> None:
        """Write ``s`` (no line ends) in the current state."""
        if s:
            self.chunks.append(s)
            self.lens.append(len(s))
            self.states.append(self.code)
            self.pos += len(s)

    def open(self, ch: str) -> None:
        # Convention: the opening bracket already has the depth it opens.
        assert not self.flags & _STRING_OR_COMMENT, "a bracket in a string or comment is text"
        self.depth[_KIND[ch]] += 1
        self._pack()
        self.put(ch)

    def close(self, ch: str) -> None:
        # Convention: the closing bracket still has the inner depth; it drops after.
        assert not self.flags & _STRING_OR_COMMENT, "a bracket in a string or comment is text"
        self.put(ch)
        self.depth[_KIND[ch]] -= 1
        self._pack()

    def start_line(self, level: int, extra: int = 0) -> None:
        """Indent a fresh line to ``level`` (plus ``extra`` spaces that do not make a level)."""
        self.line_indent = level
        self.put(" " * (4 * level + extra))

    def newline(self) -> None:
        self.lines.extend((self.line_start, self.pos, self.line_indent))
        self.put("\n")
        self.line_start = self.pos
        self.line_indent = 0

    def mark(self) -> tuple[int, int, int]:
        return len(self.chunks), len(self.lines), self.pos

    def restore(self, mark: tuple[int, int, int]) -> None:
        """Drop everything after ``mark`` (taken between blocks, in the base state)."""
        n_chunks, n_lines, pos = mark
        del self.chunks[n_chunks:], self.lens[n_chunks:], self.states[n_chunks:]
        del self.lines[n_lines:]
        self.pos = self.line_start = pos
        self.line_indent = 0
        self.depth = [0, 0, 0]
        self.set_flags(0)

    def finish(self) -> SyntheticText:
        text = "".join(self.chunks)
        n = len(text)
        state = np.repeat(np.asarray(self.states, np.int32), np.asarray(self.lens, np.int64))  # [N]
        flags = state & 15
        paren = (state >> 4) & 15
        square = (state >> 8) & 15
        curly = (state >> 12) & 15
        lines = np.asarray(self.lines, dtype=np.int64).reshape(-1, 3)
        starts, ends, indents = lines[:, 0], lines[:, 1], lines[:, 2]
        lengths = ends - starts + 1  # the newline belongs to its line
        if self.line_start < n:  # a last line without a newline ends at the end of the text
            starts = np.append(starts, self.line_start)
            ends = np.append(ends, n)
            indents = np.append(indents, self.line_indent)
            lengths = np.append(lengths, n - self.line_start)
        pos = np.arange(n, dtype=np.int64)
        i32 = np.int32
        labels = {
            "in_url": (flags & IN_URL) != 0,
            "in_dquote": (flags & IN_DQUOTE) != 0,
            "in_squote": (flags & IN_SQUOTE) != 0,
            "in_string": (flags & (IN_DQUOTE | IN_SQUOTE)) != 0,
            "in_comment": (flags & IN_COMMENT) != 0,
            "depth_paren": paren.astype(i32),
            "depth_square": square.astype(i32),
            "depth_curly": curly.astype(i32),
            "depth_total": (paren + square + curly).astype(i32),
            "indent": np.repeat(indents, lengths).astype(i32),
            "column": (pos - np.repeat(starts, lengths)).astype(i32),
            "to_eol": (np.repeat(ends, lengths) - pos).astype(i32),
        }
        return SyntheticText(text, labels)
