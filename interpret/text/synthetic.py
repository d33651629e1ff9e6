"""Seeded synthetic text with planted structure, labelled by the generator as it writes.

``generate(n_chars, seed)`` mixes code-like blocks and prose-like paragraphs
(``lstmscope.text.planted``); what each planted cell (quote, URL, comment, bracket depth,
indentation, line position) should track is known exactly, from labels the generator records
while it writes (``lstmscope.text.labels`` has their conventions). ``write_synthetic_corpus``
makes a corpus folder of it, with the labels beside the text.

Generation is ``random.Random(seed)`` only, so a seed gives the same text on every platform.
The text is exactly ``n_chars`` long and (for ``n_chars >= 1``) ends with ``\\n``; pieces that
only make sense whole (a URL, ``/*``) are never cut, because the last few hundred characters
are plain filler words when a whole block would not fit.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np

from lstmscope.disk import atomic_open
from lstmscope.text.corpus import Document, write_corpus
from lstmscope.text.labels import Emitter, SyntheticText
from lstmscope.text.planted import Writer

log = logging.getLogger(__name__)


def generate(n_chars: int, seed: int = 0) -> SyntheticText:
    """Generate exactly ``n_chars`` characters of code and prose with ground-truth labels.

    Deterministic for a seed (``random.Random(seed)``, no global state). The label
    conventions are in ``lstmscope.text.labels``.
    """
    if n_chars < 0:
        raise ValueError(f"n_chars must be >= 0, got {n_chars}")
    rng = random.Random(seed)
    em = Emitter()
    w = Writer(rng, em)
    misses = 0
    while em.pos < n_chars:
        mark = em.mark()
        if rng.random() < 0.5:
            w.paragraph()
        else:
            w.code_block()
        if em.pos > n_chars:
            # Blocks are written whole (a cut URL or "/*" would change its meaning): take
            # back the one that overran and try a few more, then finish with filler words.
            em.restore(mark)
            misses += 1
            if misses >= 8 or n_chars - em.pos < 80:
                w.filler(n_chars - em.pos)
    out = em.finish()
    assert len(out.text) == n_chars, (len(out.text), n_chars)
    log.debug("generated %d synthetic characters (seed %d)", n_chars, seed)
    return out


def write_synthetic_corpus(out: Path, n_chars: int, seed: int, extra: dict) -> dict:
    """A corpus folder of synthetic text, with each split's labels in ``{split}.labels.npz``.

    Train and val are generated separately (val from another seed), so the generator's
    ground-truth labels line up with train.txt and val.txt character for character. Returns the
    manifest (``write_corpus``).
    """
    parts = {
        "train": generate(n_chars, seed),
        "val": generate(max(n_chars // 20, 2000), seed + 7919),
    }
    train = [Document(f"synthetic-seed{seed}", parts["train"].text)]
    val = [Document(f"synthetic-seed{seed + 7919}", parts["val"].text)]
    manifest = write_corpus(out, train, recipe="synthetic", extra=extra, val_docs=val)
    for split, gen in parts.items():
        assert manifest[split]["chars"] == len(gen.text)  # texts end with a newline: no padding
        with atomic_open(out / f"{split}.labels.npz", "wb") as f:
            np.savez_compressed(f, **gen.labels)
    return manifest
