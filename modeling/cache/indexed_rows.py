"""Training look-ups by index: each distinct text of the training set gets an id once per trial.

The trainer's default path hashes every text of every batch into a cache key, and its NoDuplicates sampler
reads the dataset row by row (``dataset[i]``) to compare texts. Both are per-step Python work that, once the
encoder is cached, costs more than the head's update. Here, staying inside the library's trainer:
- ``CachedRows`` is the collator's ``preprocess_fn``: a batch's texts map to ids through one dict and their
  rows are gathered in one ``index_select`` from a float32 table of the training set's texts (read from the
  cache once);
- ``IndexedNoDuplicatesBatchSampler`` is the library's ``NoDuplicatesBatchSampler`` fed with those ids as its
  precomputed "hashes": one id per distinct text, so it makes exactly the batches the text path makes.
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


class IndexedNoDuplicatesBatchSampler(NoDuplicatesBatchSampler):
    """The library's NoDuplicates sampler reading precomputed text ids instead of ``dataset[i]`` per sample."""

    def __init__(self, dataset: Dataset, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("precompute_hashes", None)
        super().__init__(dataset, *args, **kwargs)
        self.precompute_hashes = True
        self._row_hashes = text_ids(self.dataset).matrix  # label columns were dropped by the parent


def use_indexed_sampler(args) -> None:
    """Swap the library's NoDuplicates sampler in ``args`` for ``IndexedNoDuplicatesBatchSampler`` (same batches)."""
    if args.batch_sampler in (BatchSamplers.NO_DUPLICATES, BatchSamplers.NO_DUPLICATES.value):
        args.batch_sampler = IndexedNoDuplicatesBatchSampler


def use_cached_rows(trainer, dataset: Dataset) -> None:
    """Make ``trainer``'s collator serve the cached twin's rows by id (see module docstring)."""
    cache = getattr(trainer.model[0], "cache", None)
    if not isinstance(cache, EmbeddingCache):
        return  # not a cached twin: the collator keeps tokenising
    trainer.data_collator.preprocess_fn = CachedRows(cache, text_ids(dataset).texts)
