"""Training look-ups by index: each distinct text of the training set gets an id once per trial.

The trainer's default path hashes every text of every batch into a cache key, and its NoDuplicates sampler
reads the dataset row by row (``dataset[i]``) to compare texts. Both are per-step Python work that, once the
encoder is cached, costs more than the head's update. Here, staying inside the library's trainer:
- ``CachedRows`` is the collator's ``preprocess_fn``: a batch's texts map to ids through one dict and their
  rows are gathered in one ``index_select`` from a float32 table of the training set's texts (read from the
  cache once);
- ``IndexedNoDuplicatesBatchSampler`` is the library's ``NoDuplicatesBatchSampler`` fed with those ids as its
  precomputed "hashes": one id per distinct text, so it makes exactly the batches the text path makes;
- ``IndexedBatches`` goes one step further for the training loader: the loader's dataset yields the sampler's row
  indices as they are, and the collator turns a batch of indices into the library collator's batch (same keys,
  tasks, labels and rows) with one gather per column, so no batch is read from Arrow and no text is looked up.
  Measured on ``benchmarks/trial_speed.py``: reading a batch from Arrow and mapping its texts to ids was ~1 ms of a
  ~3.7 ms step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
from sentence_transformers.sentence_transformer.training_args import BatchSamplers
from torch import Tensor

from modeling.cache.embedding_cache import EmbeddingCache

LABEL_COLUMNS = ("label", "labels", "score", "scores", "dataset_name")


def text_columns(dataset: Dataset) -> list[str]:
    return [column for column in dataset.column_names if column not in LABEL_COLUMNS]


class TextIds:
    """One id per distinct text over the dataset's text columns, and the ``rows x columns`` id matrix."""

    def __init__(self, dataset: Dataset) -> None:
        self.ids: dict[str, int] = {}
        columns = []
        for column in text_columns(dataset):
            values = dataset.with_format("arrow")[column].to_pylist()  # dataset[column] formats row by row: slow
            keys = (text if isinstance(text, str) else repr(text) for text in values)
            columns.append(
                np.fromiter((self.ids.setdefault(key, len(self.ids)) for key in keys), np.int64, len(values))
            )
        self.matrix = np.stack(columns, axis=1) if columns else np.zeros((len(dataset), 0), dtype=np.int64)
        self.texts = list(self.ids)


_LAST: dict[str, TextIds] = {}


def text_ids(dataset: Dataset) -> TextIds:
    """``TextIds`` of ``dataset``, built once for the sampler and the collator of one trial."""
    key = getattr(dataset, "_fingerprint", None)
    if key is None:
        return TextIds(dataset)
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = TextIds(dataset)
    return _LAST[key]


class CachedRows:
    """``preprocess_fn`` for the library's collator: ``{"sentence_embedding": rows}`` gathered by id."""

    def __init__(self, cache: EmbeddingCache, texts: Sequence[str]) -> None:
        self.cache = cache
        self.ids = {text: i for i, text in enumerate(texts)}
        self.tables: dict[str | None, Tensor] = {}

    def table(self, prompt: str | None) -> Tensor:
        if prompt not in self.tables:
            self.tables[prompt] = self.cache.get(list(self.ids), prompt)  # once per trial and prompt
        return self.tables[prompt]

    def __call__(self, inputs: Sequence[str], prompt: str | None = None, task: str | None = None, **kwargs: Any):
        ids = self.ids
        try:
            index = torch.tensor([ids[text] for text in inputs], dtype=torch.long)
        except (KeyError, TypeError):  # a text outside the training set (or not a text): the cache's own path
            return {"sentence_embedding": self.cache.get(list(inputs), prompt)}
        return {"sentence_embedding": self.table(prompt).index_select(0, index)}


class RowIndices(torch.utils.data.Dataset):
    """A loader dataset of ``length`` rows whose batch is the sampler's list of row indices itself."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index

    def __getitems__(self, indices: list[int]) -> list[int]:
        return indices


class IndexedBatches:
    """Collator of ``RowIndices`` batches: what the library's collator makes of the same rows, gathered by id.

    Columns, tasks (router mapping), prompts and labels are resolved once with the library collator's own rules.
    Per-epoch hard negatives (``EpochNegatives``, a dataset transform) are drawn per row exactly as the transform
    draws them, then looked up by id (the cache's own path for a text outside the training set).
    """

    def __init__(self, collator, rows: CachedRows, dataset: Dataset) -> None:
        ids = text_ids(dataset)
        self.rows = rows
        self.texts = ids.texts
        self.matrix = torch.from_numpy(ids.matrix)
        self.columns = text_columns(dataset)
        label = next((c for c in collator.valid_label_columns if c in dataset.column_names), None)
        self.labels = None if label is None else torch.tensor(dataset.with_format("arrow")[label].to_pylist())
        mapping, prompts = collator._resolve_router_mapping({}), collator._resolve_prompts({})
        self.tasks = [collator._get_task_for_column(c, i, mapping) for i, c in enumerate(self.columns)]
        self.prompts = [collator._get_prompt_for_column(prompts, c) for c in self.columns]
        self.negatives = getattr(dataset, "epoch_negatives", None)
        self.drawn = set(self.negatives.columns) if self.negatives is not None else set()

    @staticmethod
    def usable(collator, dataset: Dataset) -> bool:
        """Whether every batch of ``dataset`` can be served by id: text columns and at most the one label column
        the collator reads, and no transform other than per-epoch negatives."""
        columns = dataset.column_names
        label = next((c for c in collator.valid_label_columns if c in columns), None)
        if [c for c in columns if c in LABEL_COLUMNS] != ([label] if label else []):
            return False  # the collator would read some other column (e.g. dataset_name) than text_columns does
        features = dataset.features
        if any(getattr(features[c], "dtype", None) not in ("string", "large_string") for c in text_columns(dataset)):
            return False
        transform = dataset.format.get("format_kwargs", {}).get("transform")
        owner = getattr(dataset, "epoch_negatives", None)
        return transform is None or (owner is not None and owner.dataset is dataset)

    def loader(self, loader: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
        """The library's training loader with this collator: its batch sampler, over ``RowIndices``."""
        extra = (
            {"persistent_workers": loader.persistent_workers, "prefetch_factor": loader.prefetch_factor}
            if loader.num_workers
            else {}
        )
        return torch.utils.data.DataLoader(
            RowIndices(len(self.matrix)),
            batch_sampler=loader.batch_sampler,
            collate_fn=self,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            **extra,
        )

    def __call__(self, indices: Sequence[int]) -> dict[str, Any]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        ids = self.matrix.index_select(0, rows)
        batch: dict[str, Any] = {}
        if self.labels is not None:
            batch["label"] = self.labels.index_select(0, rows)
        drawn = self._draw(ids) if self.drawn else {}
        for position, column in enumerate(self.columns):
            prompt = self.prompts[position]
            if column in drawn:
                embeddings = self.rows(drawn[column], prompt)["sentence_embedding"]
            else:
                embeddings = self.rows.table(prompt).index_select(0, ids[:, position])
            batch[f"{column}_sentence_embedding"] = embeddings
            if self.tasks[position] is not None:
                batch[f"{column}_task"] = self.tasks[position]
        return batch

    def _draw(self, ids: Tensor) -> dict[str, list[str]]:
        """This epoch's negatives of the batch's rows: the dataset transform's own draw."""
        query, positive = self.columns.index("query"), self.columns.index("positive")
        texts = self.texts
        draws = [self.negatives.draw(texts[q], texts[p]) for q, p in ids[:, [query, positive]].tolist()]
        return {column: [row[n] for row in draws] for n, column in enumerate(self.negatives.columns)}


class IndexedNoDuplicatesBatchSampler(NoDuplicatesBatchSampler):
    """The library's NoDuplicates sampler reading precomputed text ids instead of ``dataset[i]`` per sample."""

    def __init__(self, dataset: Dataset, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("precompute_hashes", None)
        super().__init__(dataset, *args, **kwargs)
        self.precompute_hashes = True
        # label columns were dropped by the parent; tuples of Python ints, not the parent's ndarray rows: the same
        # ids compare and hash alike, and its per-sample set look-ups run ~35 % faster
        self._row_hashes = [tuple(row) for row in text_ids(self.dataset).matrix.tolist()]


def use_indexed_sampler(args) -> None:
    """Swap the library's NoDuplicates sampler in ``args`` for ``IndexedNoDuplicatesBatchSampler`` (same batches)."""
    if args.batch_sampler in (BatchSamplers.NO_DUPLICATES, BatchSamplers.NO_DUPLICATES.value):
        args.batch_sampler = IndexedNoDuplicatesBatchSampler


def use_cached_rows(trainer, dataset: Dataset) -> None:
    """Make ``trainer``'s collator serve the cached twin's rows by id, and, where the trainer takes it
    (``indexed_batches``) and the dataset allows it, its training batches by row index (see module docstring)."""
    cache = getattr(trainer.model[0], "cache", None)
    if not isinstance(cache, EmbeddingCache):
        return  # not a cached twin: the collator keeps tokenising
    rows = CachedRows(cache, text_ids(dataset).texts)
    trainer.data_collator.preprocess_fn = rows
    if hasattr(trainer, "indexed_batches") and IndexedBatches.usable(trainer.data_collator, dataset):
        trainer.indexed_batches = IndexedBatches(trainer.data_collator, rows, dataset)
