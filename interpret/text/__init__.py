"""Text in: the character vocabulary, corpora and their recipes, the planted synthetic corpus.

- :mod:`~lstmscope.text.vocab` — ``Vocab``: characters to ids and back (id 0: unknown)
- :mod:`~lstmscope.text.corpus` — reading files, folders and globs as documents
  (``read_documents``), writing a corpus folder (``write_corpus``: train.txt, val.txt,
  manifest.json) and loading one back (``load_text``, ``load_train_val``, ``load_record_text``)
- :mod:`~lstmscope.text.recipes` — the built-in corpora by name (``RECIPES``)
- :mod:`~lstmscope.text.synthetic` — seeded synthetic text with planted structure
  (``generate``) and its corpus folder with the labels (``write_synthetic_corpus``)
- :mod:`~lstmscope.text.planted` — the pieces ``generate`` writes: code (indentation,
  brackets, strings, comments) and prose (quotes, parentheses, URLs)
- :mod:`~lstmscope.text.labels` — the synthetic text's ground-truth labels (``SyntheticText``,
  ``LABELS``), recorded as the text is written
- :mod:`~lstmscope.text.pattern` — the one safe way to run a user's regular expression
  (``compile_pattern``, ``find_matches``: length and time limits)
"""

from __future__ import annotations

from lstmscope.lazy import lazy_api

# The public API, module by module (``from lstmscope.text import Vocab``), imported on first
# use: the store's reader needs the vocabulary alone.
_API = {
    "vocab": ("Vocab",),
    "corpus": (
        "Document",
        "read_documents",
        "write_corpus",
        "load_text",
        "load_train_val",
        "load_record_text",
    ),
    "recipes": ("RECIPES",),
    "synthetic": ("generate", "write_synthetic_corpus"),
    "labels": ("SyntheticText", "LABELS"),
    "pattern": ("compile_pattern", "find_matches"),
}
__getattr__, __all__ = lazy_api(__name__, _API)
