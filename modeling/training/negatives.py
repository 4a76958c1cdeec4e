"""Hard negatives drawn afresh at every epoch from a pool of the frozen base's top-k non-positive documents.

Why a pool and not the top few: the hardest documents of a sparsely judged set are often relevant ones nobody
judged (false negatives). The static top-3 of the base (``mine_hard_negatives``, sampling "top") taught the head to
push those away and lowered SciFact test nDCG@10; one negative drawn per pair per epoch from the top-20 dilutes
them while still showing the head the near misses it must learn to separate.

Why a margin: a document the base scores *above* the pair's positive is the likeliest false negative; with
``margin`` set, the pool only holds documents scoring at least ``margin`` below the positive (base cosine), the
same rule as the library's ``GISTEmbedLoss`` applies in-batch. ``gist_loss`` builds that loss with the frozen base
as guide, the alternative guard.

Mining is a matrix product of cached embeddings, no encoder call: the corpus is read from the cache a block of
rows at a time (``CachedMatrix``) and each block of pairs keeps a running top ``pool``, so a corpus of millions is
never held in memory.
The draw for a pair depends only on (seed, epoch, query, positive), so the batch sampler's duplicate check and the
collator see the same negatives, and a rerun draws the same ones.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from datasets import Dataset
from torch import Tensor
from transformers import TrainerCallback

from modeling.cache.cached_matrix import DEFAULT_CHUNK_ROWS, CachedMatrix

logger = logging.getLogger(__name__)

NEGATIVE_COLUMN = "negative"  # columns negative_<n>, numbered after any negatives the data gives


@dataclass(frozen=True)
class HardNegatives:
    """How hard negatives are drawn: ``per_pair`` of the base's top ``pool`` non-positives, redrawn every epoch.

    ``margin``: keep only documents the base scores at least this far below the pair's positive (None: no guard).
    """

    pool: int = 20
    per_pair: int = 1
    margin: float | None = None

    def __post_init__(self) -> None:
        if self.pool < 1 or self.per_pair < 1:
            raise ValueError(f"Hard negatives need pool >= 1 and per_pair >= 1, got {self.pool} and {self.per_pair}.")
        if self.per_pair > self.pool:
            raise ValueError(f"Cannot draw {self.per_pair} negatives per pair from a pool of {self.pool}.")
        if self.margin is not None and not -1.0 <= self.margin <= 2.0:
            raise ValueError(f"The margin is a cosine difference, in [-1, 2]; got {self.margin}.")

    def describe(self) -> str:
        guard = "no margin" if self.margin is None else f"at least {self.margin:g} below the positive"
        return f"{self.per_pair} per pair per epoch from the base's top {self.pool} non-positives ({guard})"


def mine_pools(
    query_embeddings: Tensor,
    document_embeddings,
    row_queries: Sequence[int],
    row_positives: Sequence[int],
    query_positives: Sequence[Sequence[int]],
    pool: int,
    margin: float | None = None,
    block_bytes: int = 1 << 28,
    doc_chunk: int | None = None,
) -> list[list[int]]:
    """For each (query, positive) row, the indices of the base's top ``pool`` documents that may be its negatives.

    Args:
        query_embeddings: ``(Q, d)`` unit vectors of the base encoder.
        document_embeddings: ``(D, d)`` unit vectors of the base encoder: a tensor, or a view read by row blocks and
            gathers (``CachedMatrix``).
        row_queries, row_positives: per row, its query's index (into Q) and its positive's index (into D).
        query_positives: per query, every positive document index (never a negative of that query).
        pool: documents kept per row, best first (fewer when fewer qualify).
        margin: with a value, only documents scoring at most ``score(positive) - margin`` qualify.
        block_bytes: score-matrix memory per block of rows (rows x ``doc_chunk`` float32).
        doc_chunk: documents read and scored at once (default: the view's ``chunk_rows``, else 16,384).
    """
    rows = len(row_queries)
    total = len(document_embeddings)
    doc_chunk = doc_chunk or getattr(document_embeddings, "chunk_rows", 16384)
    width = max(1, min(doc_chunk, total))
    block = max(1, block_bytes // (4 * width))
    queries = torch.as_tensor(list(row_queries), dtype=torch.long)
    # (row, positive document) pairs sorted by document, so each corpus block finds its own with one search
    mask_rows = torch.as_tensor([r for r, q in enumerate(row_queries) for _ in query_positives[q]], dtype=torch.long)
    mask_docs = torch.as_tensor([d for q in row_queries for d in query_positives[q]], dtype=torch.long)
    order = torch.argsort(mask_docs, stable=True)
    mask_rows, mask_docs = mask_rows[order], mask_docs[order]
    best_scores = torch.full((rows, 0), float("-inf"))
    best_indices = torch.zeros((rows, 0), dtype=torch.long)
    with torch.inference_mode():
        threshold = None
        if margin is not None:
            positive_scores = torch.empty(rows)
            for start in range(0, rows, width):  # gathers of at most a corpus block
                q = queries[start : start + width]
                positive_rows = document_embeddings[list(row_positives[start : start + width])].float()
                positive_scores[start : start + width] = (query_embeddings[q].float() * positive_rows).sum(1)
            threshold = positive_scores - margin
        for doc_start in range(0, total, width):
            documents = document_embeddings[doc_start : doc_start + width].float()
            doc_stop = doc_start + len(documents)
            low, high = torch.searchsorted(mask_docs, torch.tensor([doc_start, doc_stop])).tolist()
            merged_scores, merged_indices = [], []
            for start in range(0, rows, block):
                stop = min(start + block, rows)
                scores = query_embeddings[queries[start:stop]].float() @ documents.T
                in_block = (mask_rows[low:high] >= start) & (mask_rows[low:high] < stop)
                scores[mask_rows[low:high][in_block] - start, mask_docs[low:high][in_block] - doc_start] = float("-inf")
                if threshold is not None:
                    scores[scores > threshold[start:stop].unsqueeze(1)] = float("-inf")
                top = scores.topk(min(pool, scores.shape[1]), dim=1)
                candidates = torch.cat([best_scores[start:stop], top.values], dim=1)
                indices = torch.cat([best_indices[start:stop], top.indices + doc_start], dim=1)
                keep = candidates.topk(min(pool, candidates.shape[1]), dim=1)
                merged_scores.append(keep.values)
                merged_indices.append(indices.gather(1, keep.indices))
            best_scores, best_indices = torch.cat(merged_scores), torch.cat(merged_indices)
    return [
        [index for value, index in zip(values, indices) if value != float("-inf")]
        for values, indices in zip(best_scores.tolist(), best_indices.tolist())
    ]


def _unit(rows: Tensor) -> Tensor:
    return torch.nn.functional.normalize(rows.float(), dim=-1)


def base_pools(
    pairs: Sequence[tuple[str, str]], corpus: Sequence[str], embed, settings: HardNegatives
) -> dict[tuple[str, str], list[str]]:
    """(query, positive) -> the texts of its pool, mined with ``embed(texts, task) -> (n, d)`` of the frozen base
    (a tensor, or for documents a ``CachedMatrix``: the corpus is then read block by block).

    A query's positives (every row it appears in) are never in its pool. Rows whose pool comes out empty (the
    margin excluded everything) are left out: the epoch draw gives them random non-positive documents.
    """
    documents = list(dict.fromkeys([*corpus, *(positive for _, positive in pairs)]))
    doc_index = {text: i for i, text in enumerate(documents)}
    queries = list(dict.fromkeys(query for query, _ in pairs))
    query_index = {text: i for i, text in enumerate(queries)}
    query_positives: list[set[int]] = [set() for _ in queries]
    for query, positive in pairs:
        query_positives[query_index[query]].add(doc_index[positive])
    document_rows = embed(documents, "document")  # a tensor, or a CachedMatrix read block by block
    document_rows = document_rows.map(_unit) if hasattr(document_rows, "map") else _unit(document_rows)
    pools = mine_pools(
        _unit(embed(queries, "query")),
        document_rows,
        [query_index[q] for q, _ in pairs],
        [doc_index[p] for _, p in pairs],
        [sorted(p) for p in query_positives],
        settings.pool,
        settings.margin,
    )
    mined = {pair: [documents[i] for i in pool] for pair, pool in zip(pairs, pools) if pool}
    short = sum(1 for pool in pools if len(pool) < settings.pool)
    if short:
        logger.info("%d of %d pairs have fewer than %d candidate negatives", short, len(pools), settings.pool)
    return mined


class EpochNegatives:
    """A (query, positive) dataset with ``per_pair`` hard-negative columns redrawn from each pair's pool per epoch.

    ``dataset`` is an ordinary ``datasets.Dataset`` (its negative columns hold epoch 0's draw; a format transform
    replaces them with the current epoch's draw on every read); ``callback`` tells it the trainer's epoch.
    """

    def __init__(
        self,
        pairs: Dataset,
        pools: dict[tuple[str, str], list[str]],
        corpus: Sequence[str],
        per_pair: int = 1,
        seed: int = 0,
        first_column: int = 1,
    ) -> None:
        self.pools = pools
        self.per_pair = per_pair
        self.seed = seed
        self.epoch = 0
        self.corpus = list(dict.fromkeys(corpus))
        self.positives: dict[str, set[str]] = {}
        for query, positive in zip(pairs["query"], pairs["positive"]):
            self.positives.setdefault(query, set()).add(positive)
        if len(self.corpus) <= max(len(p) for p in self.positives.values()):
            raise ValueError("The corpus holds no document that is not a positive: no negative can be drawn.")
        self.columns = [f"{NEGATIVE_COLUMN}_{first_column + i}" for i in range(per_pair)]
        drawn = [self.draw(q, p) for q, p in zip(pairs["query"], pairs["positive"])]
        dataset = pairs
        for number, column in enumerate(self.columns):
            dataset = dataset.add_column(column, [row[number] for row in drawn])
        dataset.set_transform(self._transform)
        dataset.epoch_negatives = self  # found by ``epoch_callbacks`` when the trainer is built
        self.dataset = dataset

    def draw(self, query: str, positive: str) -> list[str]:
        """This epoch's negatives of one pair: distinct documents of its pool (random non-positives without one)."""
        rng = random.Random(f"{self.seed}\x00{self.epoch}\x00{query}\x00{positive}")
        pool = self.pools.get((query, positive))
        if pool:
            if len(pool) >= self.per_pair:
                return rng.sample(pool, self.per_pair)
            return [rng.choice(pool) for _ in range(self.per_pair)]
        known = self.positives.get(query, {positive})
        picks = []
        while len(picks) < self.per_pair:
            candidate = rng.choice(self.corpus)
            if candidate not in known:
                picks.append(candidate)
        return picks

    def _transform(self, batch: dict[str, list]) -> dict[str, list]:
        drawn = [self.draw(q, p) for q, p in zip(batch["query"], batch["positive"])]
        for number, column in enumerate(self.columns):
            if column in batch:
                batch[column] = [row[number] for row in drawn]
        return batch

    def callback(self) -> TrainerCallback:
        owner = self

        class RedrawEachEpoch(TrainerCallback):
            """Before each epoch's batches are drawn: point the dataset's transform at that epoch."""

            def on_epoch_begin(self, args, state, control, **kwargs):
                owner.epoch = round(state.epoch or 0)
                return control

        return RedrawEachEpoch()


def epoch_callbacks(dataset) -> list[TrainerCallback]:
    """The callback that redraws ``dataset``'s hard negatives each epoch, if it has any."""
    owner = getattr(dataset, "epoch_negatives", None)
    return [owner.callback()] if owner is not None else []


def epoch_negatives(
    pairs: Dataset, corpus: Sequence[str], embed, settings: HardNegatives, seed: int = 0, first_column: int = 1
) -> EpochNegatives:
    """Mine the pools with the frozen base and wrap ``pairs`` (columns query, positive) for per-epoch draws."""
    rows = list(zip(pairs["query"], pairs["positive"]))
    pools = base_pools(rows, corpus, embed, settings)
    return EpochNegatives(pairs, pools, corpus, settings.per_pair, seed, first_column)


def cache_embedder(cache, prompts: dict[str, str | None] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """``embed(texts, task)`` over the embedding cache: the frozen base's pooled embeddings, no encoder call.

    Queries come as one tensor; documents as a ``CachedMatrix`` (rows read from the cache ``chunk_rows`` at a time)."""
    prompts = prompts or {}

    def embed(texts: list[str], task: str):
        if task == "document":
            return CachedMatrix(cache, texts, prompts.get(task), chunk_rows=chunk_rows)
        return cache.get(texts, prompts.get(task))

    return embed


def gist_loss(twin, guide, scale: float = 20.0, margin: float = 0.0):
    """The library's ``GISTEmbedLoss`` with the frozen base as guide: in-batch (and hard) negatives the base scores
    above ``score(positive) - margin`` are masked out of the ranking loss.

    ``twin`` and ``guide`` share one cached input module (the guide is that module + Normalize), so both read the
    same cache and the guide needs no re-tokenising; the library decides that by comparing their tokenizers, so the
    shared input module is given the encoder's tokenizer and sequence length. Anchor-anchor and positive-positive
    contrasts are off: the loss is the ranking loss of ``mnrl`` with the guard, nothing else.
    """
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss

    inputs = twin[0]
    if guide[0] is not inputs:
        raise ValueError("The guide must share the training model's cached input module.")
    return GISTEmbedLoss(
        twin, guide, temperature=1.0 / scale, margin_strategy="absolute", margin=margin,
        contrast_anchors=False, contrast_positives=False,
    )  # fmt: skip


def base_guide(twin, encoder=None):
    """The frozen base as a model over the twin's cached input: ``[CachedEmbeddingInput, Normalize]``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.normalize import Normalize

    inputs = twin[0]
    if getattr(inputs, "tokenizer", None) is None:
        if encoder is None:
            raise ValueError("The first call of base_guide needs the encoder (its tokenizer marks the shared input).")
        inputs.tokenizer = encoder.tokenizer
        inputs.max_seq_length = encoder.max_seq_length
    return SentenceTransformer(modules=[inputs, Normalize()], device=str(twin.device))
