"""Vocab: characters <-> ids, with an unknown-character id so any later text can be encoded."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstmscope.disk import atomic_write_text

UNK = "\ufffd"  # shown where the model saw a character it never met in training


@dataclass(frozen=True)
class Vocab:
    """``chars[0]`` is the unknown character; the rest are sorted so vocabularies diff cleanly."""

    chars: tuple[str, ...]

    def __post_init__(self) -> None:
        if not all(isinstance(c, str) and len(c) == 1 for c in self.chars):
            raise ValueError("vocab entries must be single characters")  # else they never match
        if not self.chars or self.chars[0] != UNK:
            raise ValueError("vocab must start with the unknown character")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("vocab has repeated characters")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.chars)})

    @classmethod
    def from_text(cls, text: str, min_count: int = 1) -> Vocab:
        counts = Counter(text)
        chars = sorted(c for c, n in counts.items() if n >= min_count and c != UNK)
        return cls((UNK, *chars))

    @property
    def unk_id(self) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Ids as int64 ``[len(text)]``; unseen characters map to ``unk_id``."""
        index = self._index  # type: ignore[attr-defined]
        # A translation table through a single bytes pass would be faster still, but chars may be
        # any code point; a list comprehension over a dict does ~20M chars/s, enough here.
        return np.fromiter((index.get(c, 0) for c in text), dtype=np.int64, count=len(text))

    def count_unknown(self, text: str) -> int:
        index = self._index  # type: ignore[attr-defined]
        return sum(1 for c in text if c not in index)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"format": "lstmscope-vocab", "version": 1, "chars": list(self.chars)})

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != "lstmscope-vocab":
            raise ValueError("not an lstmscope vocab file")
        chars = data.get("chars")
        # A damaged file must be a ValueError (one line from the CLI), not a KeyError/TypeError.
        if not isinstance(chars, list):
            raise ValueError("damaged lstmscope vocab file: 'chars' must be a list of characters")
        return cls(tuple(chars))

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
