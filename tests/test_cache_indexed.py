"""Training look-ups by text id: the same batches as the library's sampler and the same trained head."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

from modeling.cache.cached_input import cached_twin, prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.cache.indexed_rows import CachedRows, IndexedBatches, IndexedNoDuplicatesBatchSampler, text_ids
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


# --- issue 11.6: the fast trial is the trial the library's trainer runs by itself ---------------------------------


def epoch_negatives_dataset(count: int = 120) -> Dataset:
    from modeling.training.negatives import EpochNegatives

    rows = pair_rows(count)
    corpus = [r["positive"] for r in rows] + [f"an unrelated document {i}" for i in range(40)]
    pools = {(r["query"], r["positive"]): corpus[i + 1 : i + 6] for i, r in enumerate(rows[: count // 2])}
    return EpochNegatives(Dataset.from_list(rows), pools, corpus, per_pair=1, seed=0).dataset  # half random


def labelled_rows_dataset(count: int = 120) -> Dataset:
    rows = pair_rows(count)
    return Dataset.from_list(
        [{"query": r["query"], "document": r["positive"], "label": 1.0} for r in rows]
        + [{"query": r["query"], "document": rows[i - 1]["positive"], "label": 0.0} for i, r in enumerate(rows)]
    )


def reference_trial(twin, head, dataset, evaluator, settings, trial_point, folder):
    """The trial as before issue 11.6: the library's trainer, collator (a per-text cache look-up) and checkpoints, a
    checkpoint every epoch and ``load_best_model_at_end``; only the indexed sampler, which run_trial already used."""
    from dataclasses import replace

    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    from modeling.training.dev import DEV_METRIC
    from modeling.training.negatives import epoch_callbacks

    args = settings.training_arguments(trial_point, folder, trial.router_mapping(dataset, settings.layout))
    args = replace(args, load_best_model_at_end=True)
    trial.use_indexed_sampler(args)
    trainer = SentenceTransformerTrainer(
        model=twin, args=args, train_dataset=dataset, loss=trial.trial_loss(twin, settings), evaluator=evaluator,
        callbacks=epoch_callbacks(dataset),
    )  # fmt: skip
    trainer.train()
    history = [(e["epoch"], e[DEV_METRIC]) for e in trainer.state.log_history if DEV_METRIC in e]
    return head_state(head), history, trainer.state.best_metric


@pytest.mark.parametrize(("kind", "loss"), [("pairs", "mnrl"), ("epoch-negatives", "mnrl"), ("labelled", "cosine-mse")])
def test_a_trial_trains_the_head_the_library_trainer_trains_alone(tiny, cache_root, tmp_path, monkeypatch, kind, loss):
    dataset = {"pairs": pairs_dataset, "epoch-negatives": epoch_negatives_dataset, "labelled": labelled_rows_dataset}
    torch.manual_seed(0)
    model = build_model(tiny, placement="query")
    model.model_card_data.generate_widget_examples = False
    cache = EmbeddingCache(prefix_model(model), root=cache_root, show_progress_bar=False)
    head, twin = find_head(model), cached_twin(model, cache)
    start = head_state(head)
    rows = pair_rows(160)[120:]
    evaluator = dev_evaluator(
        {f"q{i}": r["query"] for i, r in enumerate(rows)},
        {f"d{i}": r["positive"] for i, r in enumerate(rows)},
        {f"q{i}": {f"d{i}"} for i in range(len(rows))},
    )
    settings = TrainSettings(epochs=5, batch_size=16, placement="query", loss=loss, show_progress=False)
    point = Trial(1e-2, 0.0)
    served = []
    original = IndexedBatches.__call__
    monkeypatch.setattr(IndexedBatches, "__call__", lambda self, indices: served.append(1) or original(self, indices))

    result = run_trial(twin, head, dataset[kind](), evaluator, ([], []), settings, point, tmp_path / "fast",
                       use_guard=False)  # fmt: skip
    fast = head_state(head)
    monkeypatch.undo()
    head.load_state_dict(start)
    expected, history, best = reference_trial(twin, head, dataset[kind](), evaluator, settings, point, tmp_path / "ref")

    assert served, "the trial did not take the index path"
    assert result.dev_history == history and result.best_dev == best
    for key in expected:
        assert torch.equal(fast[key], expected[key]), key
    assert not torch.equal(fast["delta"], start["delta"])
    if kind == "pairs":  # the best epoch is not the last: the kept head is the best epoch's, not the last one's
        assert result.best_epoch < history[-1][0]


@pytest.mark.parametrize(("placement", "embeds"), [("query", 1), ("symmetric", 3)])
def test_the_dev_evaluator_embeds_the_corpus_again_only_when_the_document_side_changed(
    tiny, cache_root, monkeypatch, placement, embeds
):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from modeling.training.dev import DEV_EVALUATOR_SETTINGS, dev_evaluator

    torch.manual_seed(0)
    model = build_model(tiny, placement=placement)
    twin = cached_twin(model, EmbeddingCache(prefix_model(model), root=cache_root, show_progress_bar=False))
    rows = pair_rows(60)
    queries = {f"q{i}": r["query"] for i, r in enumerate(rows)}
    corpus = {f"d{i}": r["positive"] for i, r in enumerate(rows)}
    relevant = {f"q{i}": {f"d{i}"} for i in range(len(rows))}
    mine = dev_evaluator(queries, corpus, relevant)
    library = InformationRetrievalEvaluator(queries, corpus, relevant, **DEV_EVALUATOR_SETTINGS)
    calls = []
    encode_document = twin.encode_document
    monkeypatch.setattr(twin, "encode_document", lambda *a, **k: calls.append(1) or encode_document(*a, **k))
    head = find_head(model)
    for step in range(3):
        ours = mine(twin)
        calls_before = len(calls)
        assert ours == library(twin)
        del calls[calls_before:]  # the library's own evaluator's call
        with torch.no_grad():
            head.delta.add_(0.05 * torch.randn_like(head.delta))
        head.load_state_dict(head_state(head)) if step == 1 else None  # a load counts as a change too
    assert len(calls) == embeds
