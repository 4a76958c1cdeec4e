"""Per-epoch hard negatives: the pool (positives never in it, the margin guard), the draw, the trainer's epochs."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.training_args import (
    BatchSamplers,
    SentenceTransformerTrainingArguments,
)
from transformers import TrainerCallback

from modeling.cache.cached_input import cached_twin
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.model.build import build_model
from modeling.training.negatives import (
    EpochNegatives,
    HardNegatives,
    base_guide,
    base_pools,
    cache_embedder,
    epoch_negatives,
    gist_loss,
    mine_pools,
)


def unit(rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float), dim=-1)


def test_pool_is_best_first_without_the_querys_positives():
    queries = unit([[1.0, 0.0]])
    # documents at decreasing similarity to the query: 0 (same), 1, 2, 3, 4 (orthogonal)
    documents = unit([[1, 0], [1, 0.2], [1, 0.5], [1, 1], [0, 1]])
    pools = mine_pools(queries, documents, [0, 0], [0, 2], [[0, 2]], pool=3)
    assert pools == [[1, 3, 4], [1, 3, 4]]  # positives 0 and 2 of the query are never negatives, for either row


def test_margin_keeps_only_documents_below_the_positive():
    queries = unit([[1.0, 0.0]])
    documents = unit([[1, 0], [1, 0.2], [1, 0.5], [1, 1], [0, 1]])
    positive_score = float(queries[0] @ documents[2])
    pools = mine_pools(queries, documents, [0], [2], [[2]], pool=5, margin=0.0)
    assert pools == [[3, 4]]  # documents 0 and 1 score above the positive: likely unjudged relevant ones
    pools = mine_pools(
        queries, documents, [0], [2], [[2]], pool=5, margin=positive_score - float(queries[0] @ documents[3]) + 1e-4
    )
    assert pools == [[4]]
    assert mine_pools(queries, documents, [0], [0], [[0]], pool=5, margin=0.0) == [[1, 2, 3, 4]]


def test_blocks_give_the_same_pools():
    torch.manual_seed(0)
    queries, documents = unit(torch.randn(7, 8).tolist()), unit(torch.randn(50, 8).tolist())
    rows = [(q, (3 * q) % 50) for q in range(7)] + [(2, 11)]
    positives = [[p for q2, p in rows if q2 == q] for q in range(7)]
    args = ([r[0] for r in rows], [r[1] for r in rows], positives)
    whole = mine_pools(queries, documents, *args, pool=6, margin=0.05)
    blocked = mine_pools(queries, documents, *args, pool=6, margin=0.05, block_bytes=4 * 50)  # one row per block
    assert whole == blocked


@pytest.mark.parametrize(
    "settings", [{"pool": 0}, {"per_pair": 0}, {"pool": 2, "per_pair": 3}, {"margin": 5.0}], ids=str
)
def test_bad_settings_fail_clearly(settings):
    with pytest.raises(ValueError):
        HardNegatives(**settings)


def pairs_and_pools(count=30, pool=6):
    queries = [f"query {i}" for i in range(count)]
    positives = [f"answer {i}" for i in range(count)]
    distractors = [f"distractor {j}" for j in range(40)]
    pools = {(q, p): distractors[i % 10 : i % 10 + pool] for i, (q, p) in enumerate(zip(queries, positives))}
    return Dataset.from_dict({"query": queries, "positive": positives}), pools, positives + distractors


def test_draws_come_from_the_pool_change_with_the_epoch_and_repeat_with_the_seed():
    pairs, pools, corpus = pairs_and_pools()
    negatives = EpochNegatives(pairs, pools, corpus, per_pair=2, seed=0)
    assert negatives.dataset.column_names == ["query", "positive", "negative_1", "negative_2"]
    epochs = []
    for epoch in range(3):
        negatives.epoch = epoch
        rows = [negatives.dataset[i] for i in range(len(pairs))]
        for row in rows:
            drawn = [row["negative_1"], row["negative_2"]]
            assert len(set(drawn)) == 2 and set(drawn) <= set(pools[(row["query"], row["positive"])])
        epochs.append([(r["negative_1"], r["negative_2"]) for r in rows])
    assert epochs[0] != epochs[1] != epochs[2]
    negatives.epoch = 1
    assert [negatives.dataset[i]["negative_1"] for i in range(len(pairs))] == [e[0] for e in epochs[1]]
    again = EpochNegatives(pairs, pools, corpus, per_pair=2, seed=0)
    again.epoch = 2
    assert [tuple(again.draw(q, p)) for q, p in zip(pairs["query"], pairs["positive"])] == epochs[2]


def test_a_pair_without_pool_gets_random_non_positives():
    pairs = Dataset.from_dict({"query": ["q", "q", "r"], "positive": ["a", "b", "c"]})
    negatives = EpochNegatives(pairs, {("r", "c"): ["x"]}, ["a", "b", "c", "x", "y"], per_pair=1, seed=0)
    for epoch in range(20):
        negatives.epoch = epoch
        assert negatives.draw("q", "a")[0] in {"c", "x", "y"}  # never one of q's positives a and b
        assert negatives.draw("r", "c") == ["x"]
    with pytest.raises(ValueError, match="no document that is not a positive"):
        EpochNegatives(pairs, {}, ["a", "b"], per_pair=1)


def test_callback_follows_the_trainers_epoch():
    pairs, pools, corpus = pairs_and_pools()
    negatives = EpochNegatives(pairs, pools, corpus)
    negatives.callback().on_epoch_begin(None, SimpleNamespace(epoch=3.0000001), None)
    assert negatives.epoch == 3


class FakeCache:
    """The embedding cache's interface over fixed random vectors: texts -> embeddings, counting look-ups."""

    def __init__(self, prefix, dimension=32):
        self.prefix = prefix
        self.dimension = dimension
        self.seen: list[str] = []

    def get(self, texts, prompt=None):
        self.seen.extend(texts)
        rows = []
        for text in texts:
            generator = torch.Generator().manual_seed(
                int.from_bytes(text.encode()[:7].ljust(7, b"\0"), "little") + len(text)
            )
            rows.append(torch.randn(self.dimension, generator=generator))
        return torch.stack(rows)


class SnapshotEpochs(TrainerCallback):
    def __init__(self, cache):
        self.cache, self.epochs = cache, []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.cache.seen = []

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epochs.append({t for t in self.cache.seen if t.startswith("distractor")})


def test_the_trainer_sees_fresh_negatives_each_epoch(tiny, tmp_path):
    pairs, pools, corpus = pairs_and_pools(count=32, pool=8)
    model = build_model(tiny, kind="linear", placement="query")
    cache = FakeCache(tiny)
    twin = cached_twin(model, cache)
    negatives = EpochNegatives(pairs, pools, corpus, per_pair=1, seed=0)
    snapshot = SnapshotEpochs(cache)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=3, per_device_train_batch_size=8, learning_rate=1e-3,
        save_strategy="no", report_to="none", use_cpu=True, batch_sampler=BatchSamplers.NO_DUPLICATES,
        router_mapping={"query": "query", "positive": "document", "negative_1": "document"}, disable_tqdm=True,
    )  # fmt: skip
    trainer = SentenceTransformerTrainer(
        model=twin, args=args, train_dataset=negatives.dataset, loss=MultipleNegativesRankingLoss(twin),
        callbacks=[negatives.callback(), snapshot],
    )  # fmt: skip
    trainer.train()
    assert len(snapshot.epochs) == 3
    allowed = {doc for pool in pools.values() for doc in pool}
    for seen in snapshot.epochs:
        assert seen and seen <= allowed
    # the draws the loss saw in epoch e are exactly the pool draws for epoch e
    for epoch, seen in enumerate(snapshot.epochs):
        negatives.epoch = epoch
        assert seen == {negatives.draw(q, p)[0] for q, p in zip(pairs["query"], pairs["positive"])}
    assert snapshot.epochs[0] != snapshot.epochs[1]


def test_pools_from_the_cache_exclude_every_positive(tiny, cache_root):
    cache = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False)
    pairs = [("red shoe", "a red shoe"), ("red shoe", "red leather shoe"), ("blue lamp", "a blue lamp")]
    corpus = ["a red shoe", "red leather shoe", "a blue lamp", "green mug", "red boot", "blue desk lamp", "tea cup"]
    pools = base_pools(pairs, corpus, cache_embedder(cache), HardNegatives(pool=3))
    assert set(pools) == set(pairs)
    for (query, _), pool in pools.items():
        positives = {p for q, p in pairs if q == query}
        assert len(pool) == 3 and not positives & set(pool)
    wrapped = epoch_negatives(Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [p for _, p in pairs]}),
                              corpus, cache_embedder(cache), HardNegatives(pool=3), seed=1)  # fmt: skip
    assert wrapped.dataset[0]["negative_1"] in pools[pairs[0]]


def test_gist_guard_masks_what_the_base_scores_above_the_positive(tiny):
    model = build_model(tiny, kind="linear", placement="query")
    cache = FakeCache(tiny)
    twin = cached_twin(model, cache)
    guide = base_guide(twin, tiny)
    queries = ["q one", "q two", "q three", "q four"]
    positives = ["p one", "p two", "p three", "p four"]
    features = [twin[0].preprocess(queries), twin[0].preprocess(positives)]
    for feature, task in zip(features, ("query", "document")):
        feature["task"] = task
    labels = torch.zeros(len(queries))
    plain = MultipleNegativesRankingLoss(twin, scale=20.0)(copy.deepcopy(features), labels)
    guarded = gist_loss(twin, guide, scale=20.0, margin=0.0)(copy.deepcopy(features), labels)
    loose = gist_loss(twin, guide, scale=20.0, margin=-10.0)(copy.deepcopy(features), labels)  # masks nothing
    # at the identity start the model is the guide: every in-batch document scoring above a positive is masked
    scores = (
        torch.nn.functional.normalize(cache.get(queries), dim=-1)
        @ torch.nn.functional.normalize(cache.get(positives), dim=-1).T
    )
    assert (scores > scores.diagonal().unsqueeze(1)).any()  # the batch has something to mask
    assert guarded < plain - 1e-4
    assert torch.isclose(loose, plain, atol=1e-5)
