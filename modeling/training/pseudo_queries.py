"""Pseudo-queries made from the corpus itself, for distilling a reduced model (issue 13).

A query map learned only from the training queries is shaped by the documents those queries are about; queries
about other documents land in a space that was never asked to rank them. One short query per document (its first
sentence: a BEIR document's title, which ``ir_data`` puts first, or the opening sentence of a corpus without
titles) lets the distillation ask the reduced model to reproduce a ranking (the bare encoder's, by default) for every
document's region of the corpus, not only the trained ones.
"""

from __future__ import annotations

import random
import re

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MAX_WORDS = 48  # a pseudo-query is a query, not a passage: long first sentences are cut here
MIN_WORDS = 3  # shorter first sentences ("Background.") are no query: the next sentence is joined to them


def first_sentence(text: str, max_words: int = MAX_WORDS) -> str:
    """The document's opening sentence (at least ``MIN_WORDS`` words when the text has them), cut at ``max_words``."""
    taken: list[str] = []
    for sentence in SENTENCE_END.split(text.strip()):
        taken.extend(sentence.split())
        if len(taken) >= MIN_WORDS:
            break
    return " ".join(taken[:max_words])


def pseudo_queries(corpus: list[str], limit: int, seed: int = 0) -> list[str]:
    """One pseudo-query per document (a seeded sample of ``limit`` documents for a larger corpus), without
    duplicates or empty ones, in a stable order."""
    documents = corpus if len(corpus) <= limit else random.Random(seed).sample(corpus, limit)
    return list(dict.fromkeys(q for q in map(first_sentence, documents) if q))
