"""Seen / unseen query slices: is a gain real, or the head remembering which documents were train positives?

A test query is "seen" when at least one of its relevant documents was a positive in the training qrels, and
"unseen" when none was. A head can raise seen queries just by pulling the train positives up for every query
(a prior over documents, not better matching); only the unseen slice shows generalisation.
"""

from __future__ import annotations

SLICES = ("all", "seen", "unseen")
DEFINITION = "seen: at least one relevant (grade > 0) document of the test query is a train positive; unseen: none is"


def train_positives(train_qrels: dict[str, dict[str, int]]) -> set[str]:
    return {doc for docs in train_qrels.values() for doc, grade in docs.items() if grade > 0}


def seen_unseen(
    qrels: dict[str, dict[str, int]], train_qrels: dict[str, dict[str, int]] | None
) -> dict[str, list[str]]:
    """Slice name -> query ids; only ``all`` without train qrels."""
    slices = {"all": list(qrels)}
    if train_qrels is None:
        return slices
    positives = train_positives(train_qrels)
    seen = {qid for qid, docs in qrels.items() if any(grade > 0 and doc in positives for doc, grade in docs.items())}
    slices["seen"] = [qid for qid in qrels if qid in seen]
    slices["unseen"] = [qid for qid in qrels if qid not in seen]
    return slices
