"""Pseudo-queries made from the corpus itself, for the anchor and for distilling a reduced model (issues 10, 13).

A query map learned only from the training queries is shaped by the documents those queries are about; queries
about other documents land in a space that was never asked to rank them. Short queries from every document (its
first sentence: a BEIR document's title, which ``ir_data`` puts first, or the opening sentence of a corpus without
titles; with ``per_document`` > 1 also other sentences of it, drawn at random) let the anchor and the distillation ask
the head to keep a ranking (the bare encoder's, by default) for every document's region of the corpus, not only the
trained ones. Later sentences matter where real queries ask about what a document says rather than what it is
called (a claim checked against an abstract's findings, a feature of a product).
"""

from __future__ import annotations

import random
import re

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MAX_WORDS = 48  # a pseudo-query is a query, not a passage: long first sentences are cut here
MIN_WORDS = 3  # shorter first sentences ("Background.") are no query: the next sentence is joined to them


def sentences(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """The document's sentences of at least ``MIN_WORDS`` words (a shorter one is joined to the next), each cut at
    ``max_words``; the first is ``first_sentence``."""
    taken: list[str] = []
    pending: list[str] = []
    for sentence in SENTENCE_END.split(text.strip()):
        pending.extend(sentence.split())
        if len(pending) >= MIN_WORDS:
            taken.append(" ".join(pending[:max_words]))
            pending = []
    if pending and (not taken or len(pending) >= MIN_WORDS):
        taken.append(" ".join(pending[:max_words]))
    return taken


def first_sentence(text: str, max_words: int = MAX_WORDS) -> str:
    """The document's opening sentence (at least ``MIN_WORDS`` words when the text has them), cut at ``max_words``."""
    return next(iter(sentences(text, max_words)), "")


def pseudo_description(per_document: int) -> str:
    """What the pseudo-queries are, for logs, the training summary and the card."""
    if per_document == 1:
        return "first sentences of documents"
    return f"first sentences of documents and up to {per_document - 1} more of each"


def pseudo_queries(corpus: list[str], limit: int, seed: int = 0, per_document: int = 1) -> list[str]:
    """Up to ``limit`` pseudo-queries, without duplicates or empty ones, in a stable order: each document's first
    sentence, plus ``per_document - 1`` of its other sentences drawn at random (seeded). A corpus with more
    documents than ``limit`` is sampled first (seeded); when the sentences exceed ``limit``, a seeded sample of them
    is kept (first sentences first)."""
    if per_document < 1:
        raise ValueError(f"per_document must be >= 1, got {per_document}.")
    rng = random.Random(seed)
    documents = corpus if len(corpus) <= limit else rng.sample(corpus, limit)
    firsts, others = [], []
    for text in documents:
        found = sentences(text)
        if found:
            firsts.append(found[0])
            rest = found[1:]
            others.extend(rng.sample(rest, min(per_document - 1, len(rest))))
    firsts = list(dict.fromkeys(firsts))
    seen = set(firsts)
    others = [q for q in dict.fromkeys(others) if q not in seen]
    if len(firsts) + len(others) > limit:
        keep = set(rng.sample(range(len(others)), max(limit - len(firsts), 0)))
        others = [q for i, q in enumerate(others) if i in keep]
    return firsts[:limit] + others
