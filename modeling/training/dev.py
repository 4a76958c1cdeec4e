"""Model selection's dev side: the dev retrieval evaluator, its metrics, and the collapse guard's probe pairs.

A dev metric is added here (the evaluator's ``*_at_k`` lists); ``dev_metrics`` returns every metric the evaluator
computes under its short name (``ndcg@10``, ``mrr@10``, ...), and ``DEV_METRIC`` is the one selection maximises.

The dev evaluation runs after every epoch of every trial. With a query-only head the documents take the bare
encoder's route, so the dev corpus embeds to the same vectors every time: ``DevEvaluator`` keeps them while no
tensor the document route reads has changed (on SciFact, embedding the 5,183 dev documents was ~85 % of an
evaluation, most of it the library checking each text for a media URL).
"""

from __future__ import annotations

import random
import weakref

from sentence_transformers.base.modules.router import Router
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

DEV_NAME = "dev"
SELECTION_METRIC = "ndcg@10"
DEV_METRIC = f"eval_{DEV_NAME}_cosine_{SELECTION_METRIC}"  # the key the trainer logs and selects the epoch by


def document_side_state(model) -> tuple:
    """Identity and version of every tensor ``encode_document`` can read (all the model's, except those only a
    Router's other routes hold): the same key means the same document embeddings. A tensor's version counts its
    in-place changes, so an optimizer step or a ``load_state_dict`` on the document side changes the key."""
    skipped: set[int] = set()
    for module in model.modules():
        if isinstance(module, Router):
            try:
                route = module._resolve_route(task="document", modality="text")
            except ValueError:
                continue
            used = {id(t) for t in module.sub_modules[route].state_dict(keep_vars=True).values()}
            for name, modules in module.sub_modules.items():
                if name != route:
                    skipped |= {id(t) for t in modules.state_dict(keep_vars=True).values()} - used
    return tuple((id(t), t._version) for t in model.state_dict(keep_vars=True).values() if id(t) not in skipped)


class DevEvaluator(InformationRetrievalEvaluator):
    """The library's IR evaluator, embedding the corpus again only when the model's document side changed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._documents: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (state, {chunk: emb})

    def embed_inputs(self, model, sentences, encode_fn_name=None, prompt_name=None, prompt=None, **kwargs):
        if encode_fn_name != "document" or kwargs:
            return super().embed_inputs(model, sentences, encode_fn_name, prompt_name, prompt, **kwargs)
        state = document_side_state(model)
        stored = self._documents.get(model)
        if stored is None or stored[0] != state:
            stored = self._documents[model] = (state, {})
        chunk = (prompt_name, prompt, tuple(sentences))
        if chunk not in stored[1]:
            stored[1][chunk] = super().embed_inputs(model, sentences, encode_fn_name, prompt_name, prompt)
        return stored[1][chunk]


# The library evaluator's settings for dev (besides the data).
DEV_EVALUATOR_SETTINGS = {
    "name": DEV_NAME,
    "batch_size": 512,
    "show_progress_bar": False,
    "write_csv": False,
    "mrr_at_k": [10],
    "ndcg_at_k": [10],
    "accuracy_at_k": [1, 10],
    "precision_recall_at_k": [10, 100],
    "map_at_k": [100],
}


def dev_evaluator(queries: dict[str, str], corpus: dict[str, str], relevant: dict[str, set[str]]):
    return DevEvaluator(queries=queries, corpus=corpus, relevant_docs=relevant, **DEV_EVALUATOR_SETTINGS)


def dev_metrics(evaluator, model) -> dict[str, float]:
    """The evaluator's cosine metrics under their short names (``ndcg@10``, ``recall@100``, ...)."""
    scores = evaluator(model)
    prefix = f"{evaluator.name}_cosine_"
    return {key[len(prefix) :]: float(value) for key, value in scores.items() if key.startswith(prefix)}


def probe_pairs(
    queries: dict[str, str], corpus: dict[str, str], relevant: dict[str, set[str]], size: int = 64, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Positive and random-negative (query, document) pairs from the dev split, for the collapse guard."""
    rng = random.Random(seed)
    ids = sorted(queries)
    rng.shuffle(ids)
    doc_ids = sorted(corpus)
    positives, negatives = [], []
    for qid in ids[:size]:
        relevant_docs = sorted(relevant.get(qid, ()))
        if not relevant_docs:
            continue
        positives.append((queries[qid], corpus[rng.choice(relevant_docs)]))
        negative = rng.choice(doc_ids)
        while negative in relevant[qid] and len(relevant[qid]) < len(doc_ids):
            negative = rng.choice(doc_ids)
        negatives.append((queries[qid], corpus[negative]))
    return positives, negatives
