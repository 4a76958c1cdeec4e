"""BM25 baseline through bm25s, with the settings reported next to its numbers.

Defaults follow Anserini's BEIR "flat" runs (k1=0.9, b=0.4, Lucene scoring) with English stopwords and the
Snowball English stemmer (PyStemmer); the tokeniser differs from Lucene's, so figures land near, not on,
Anserini's (SciFact: 0.6789 published).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import bm25s
import Stemmer

from modeling.evaluation.metrics import Run


@dataclass(frozen=True)
class BM25Settings:
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stopwords: str = "en"
    stemmer: str = "english"

    def describe(self) -> dict:
        return {"library": f"bm25s {bm25s.__version__}", **asdict(self)}


class BM25:
    """A bm25s index over a corpus, searched with ``search(queries, k)``."""

    def __init__(self, corpus: dict[str, str], settings: BM25Settings = BM25Settings(), progress: bool = False) -> None:
        self.settings = settings
        self.doc_ids = list(corpus)
        self._stemmer = Stemmer.Stemmer(settings.stemmer)
        tokens = self._tokenize(list(corpus.values()), progress)
        self.retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
        self.retriever.index(tokens, show_progress=progress)

    def _tokenize(self, texts: list[str], progress: bool = False) -> bm25s.tokenization.Tokenized:
        return bm25s.tokenize(texts, stopwords=self.settings.stopwords, stemmer=self._stemmer, show_progress=progress)

    def search(self, queries: dict[str, str], k: int = 1000, progress: bool = False) -> Run:
        """query id -> {doc id: BM25 score} for the top ``k`` documents with a positive score."""
        if not queries:
            return {}
        tokens = self._tokenize(list(queries.values()))
        indices, scores = self.retriever.retrieve(tokens, k=min(k, len(self.doc_ids)), show_progress=progress)
        run: Run = {}
        for qid, row_indices, row_scores in zip(queries, indices, scores):
            # bm25s pads with zero-score documents; a document sharing no term with the query is not retrieved.
            run[qid] = {self.doc_ids[i]: float(s) for i, s in zip(row_indices.tolist(), row_scores.tolist()) if s > 0}
        return run
