"""The rows a loss trains on, from ``TrainingData``: given negatives kept, mined ones added.

Ranking losses get ``(query, positive, negative_1..k)`` rows: the negatives the data gives (columns
``negative...``, or label-0 rows of labelled data), then, with ``--hard-negatives N``, N more mined with the frozen
encoder. Labelled losses get ``(query, document, label)`` rows: the given labels, else each positive plus a given
negative (a random document where the query has none).
"""

from __future__ import annotations

import random

from datasets import Dataset

from modeling.data.training_data import TrainingData
from modeling.training.losses import LOSSES


def given_negative_rows(data: TrainingData, seed: int = 0) -> list[tuple[str, str, list[str]]]:
    """(query, positive, negatives) for every training pair, each row with the same number of given negatives.

    The number is the most negatives every query can supply (queries without any get random documents that are
    none of their positives); a query's negatives are spread over its positives in turn. Empty when the data gives
    no negative at all.
    """
    given = {query: data.negatives.get(query, []) for query in data.pairs}
    if not any(given.values()):
        return []
    count = max(1, min((len(negatives) for negatives in given.values() if negatives), default=1))
    rng = random.Random(seed)
    rows = []
    for query, positives in data.pairs.items():
        negatives = given[query]
        for index, positive in enumerate(positives):
            if negatives:
                chosen = [negatives[(index * count + k) % len(negatives)] for k in range(count)]
            else:
                chosen = [_random_negative(data, query, rng) for _ in range(count)]
            rows.append((query, positive, chosen))
    return rows


def _random_negative(data: TrainingData, query: str, rng: random.Random) -> str:
    known = set(data.pairs.get(query, ()))
    negative = rng.choice(data.corpus)
    while negative in known and len(known) < len(data.corpus):
        negative = rng.choice(data.corpus)
    return negative


def ranking_dataset(data: TrainingData, seed: int = 0) -> Dataset:
    """(query, positive[, negative_1..k]) rows, the input of the in-batch ranking loss."""
    rows = given_negative_rows(data, seed)
    if not rows:
        pairs = [(query, doc) for query, docs in data.pairs.items() for doc in docs]
        return Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    columns = {"query": [r[0] for r in rows], "positive": [r[1] for r in rows]}
    for k in range(len(rows[0][2])):
        columns[f"negative_{k + 1}"] = [r[2][k] for r in rows]
    return Dataset.from_dict(columns)


def labelled_dataset(data: TrainingData, seed: int = 0) -> Dataset:
    """(query, document, label) rows: the given labels, or each positive plus a given (else random) negative."""
    if data.labelled:
        rows = data.labelled
    else:
        rng = random.Random(seed)
        given = {query: data.negatives.get(query, []) for query in data.pairs}
        rows = []
        for query, docs in data.pairs.items():
            for index, doc in enumerate(docs):
                rows.append((query, doc, 1.0))
                negatives = given[query]
                negative = negatives[index % len(negatives)] if negatives else _random_negative(data, query, rng)
                rows.append((query, negative, 0.0))
    return Dataset.from_dict(
        {"query": [r[0] for r in rows], "document": [r[1] for r in rows], "label": [float(r[2]) for r in rows]}
    )


def training_dataset(data: TrainingData, loss: str, negatives, twin, seed: int = 0) -> Dataset:
    """The rows for ``loss``; hard negatives (``HardNegatives``, or an int K: the static top K) are added as
    columns after any given negatives, redrawn from each pair's pool every epoch (``epoch_callbacks``)."""
    from modeling.training.negatives import HardNegatives, cache_embedder, epoch_negatives

    if LOSSES[loss].labelled:
        return labelled_dataset(data, seed=seed)
    rows = ranking_dataset(data, seed=seed)
    if isinstance(negatives, int):
        negatives = HardNegatives(negatives, negatives, None) if negatives > 0 else None
    if negatives is None:
        return rows
    # Mined with the frozen base from the cache (no encoder call); a query's positives are never in its pool.
    given = sum(1 for c in rows.column_names if c.startswith("negative_"))
    return epoch_negatives(
        rows, data.corpus, cache_embedder(twin[0].cache), negatives, seed, first_column=given + 1
    ).dataset
