"""Training look-ups by text id: the same batches as the library's sampler and the same trained head."""

from __future__ import annotations

import torch
from datasets import Dataset
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

from modeling.cache.cached_input import cached_twin, prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.cache.indexed_rows import CachedRows, IndexedNoDuplicatesBatchSampler, text_ids
from modeling.model.build import build_model, find_head
from modeling.training import trial
from modeling.training.dev import dev_evaluator
from modeling.training.settings import TrainSettings, Trial
from modeling.training.trial import head_state, run_trial
from tests.training_fixtures import pair_rows


def pairs_dataset(count: int = 120) -> Dataset:
    rows = pair_rows(count)
    rows += [{"query": rows[i]["query"], "positive": rows[i + 1]["positive"]} for i in range(0, 30, 3)]  # repeats
    return Dataset.from_list(rows)


def test_indexed_sampler_makes_the_library_batches():
    dataset = pairs_dataset()
    for seed in (0, 1):
        kwargs = {"batch_size": 16, "drop_last": True, "seed": seed}
        mine = list(IndexedNoDuplicatesBatchSampler(dataset, generator=torch.Generator(), **kwargs))
        theirs = list(NoDuplicatesBatchSampler(dataset, generator=torch.Generator(), **kwargs))
        assert mine == theirs and len(mine) > 3


def test_cached_rows_equal_the_cache(tiny, cache_root):
    dataset = pairs_dataset(40)
    cache = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False)
    rows = CachedRows(cache, text_ids(dataset).texts)
    texts = dataset["query"][:7] + ["a text outside the training set"]
    assert torch.equal(rows(texts)["sentence_embedding"], cache.get(texts))


def train_once(tiny, cache_root, tmp_path, name, monkeypatch, indexed: bool):
    if not indexed:
        monkeypatch.setattr(trial, "use_cached_rows", lambda trainer, dataset: None)
        monkeypatch.setattr(trial, "use_indexed_sampler", lambda args: None)
    torch.manual_seed(0)
    model = build_model(tiny, placement="query")
    model.model_card_data.generate_widget_examples = False
    cache = EmbeddingCache(prefix_model(model), root=cache_root, show_progress_bar=False)
    dataset = pairs_dataset()
    rows = pair_rows(140)[120:]
    evaluator = dev_evaluator(
        {f"q{i}": r["query"] for i, r in enumerate(rows)},
        {f"d{i}": r["positive"] for i, r in enumerate(rows)},
        {f"q{i}": {f"d{i}"} for i in range(len(rows))},
    )
    head = find_head(model)
    settings = TrainSettings(epochs=2, batch_size=16, placement="query", show_progress=False)
    result = run_trial(cached_twin(model, cache), head, dataset, evaluator, ([], []), settings, Trial(3e-3, 0.0),
                       tmp_path / name, use_guard=False)  # fmt: skip
    monkeypatch.undo()
    return head_state(head), result


def test_trainer_with_the_index_collator_trains_the_same_head(tiny, cache_root, tmp_path, monkeypatch):
    indexed, result = train_once(tiny, cache_root, tmp_path, "indexed", monkeypatch, indexed=True)
    plain, plain_result = train_once(tiny, cache_root, tmp_path, "plain", monkeypatch, indexed=False)
    assert result.steps == plain_result.steps > 0
    assert result.dev_history == plain_result.dev_history
    for key in plain:
        assert torch.equal(indexed[key], plain[key]), key
    assert any(not torch.equal(indexed[key], value) for key, value in head_state(find_head(build_model(tiny))).items())
