"""Training data in, as ``datasets`` datasets, validated before any model is loaded.

Accepted sources:
- a BEIR folder (corpus.jsonl, queries.jsonl, qrels/train.tsv and optionally qrels/dev.tsv; graded scores:
  any grade > 0 is a positive);
- any ``datasets`` source (Hub id, local folder, or a CSV/JSON/JSONL/Parquet file) with columns
  ``query, positive[, negative...]`` (pairs, optionally with negatives) or ``query, document, label``
  (labelled pairs, labels in [0, 1]).

The dev split (for choosing the grid point, the epoch and the interpolation) is the BEIR dev qrels when present,
else a seeded share of the training queries, half held out by query and half by document (see ``_carve_dev``): a
query and all its pairs land on one side, never both.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset

from modeling.data.ir_data import DataError, available_splits, is_beir_folder, load_ir_data, missing_local_path

LOCAL_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".tsv": "csv"}
MIN_DEV_QUERIES = 5


@dataclass
class TrainingData:
    """Everything training needs, as plain text.

    Attributes:
        name: Short name for reports and the card.
        pairs: query -> positive documents (training side only).
        negatives: query -> known negatives (given as columns or label 0); may be empty.
        labelled: (query, document, label) rows when the source was labelled pairs, else empty.
        dev_queries, dev_corpus, dev_relevant: the dev retrieval task used for model selection.
        dev_unseen: dev query ids held out by document (their relevant documents are no training positive).
        corpus: every known document text (for mining negatives).
        source_columns: the columns the source had (for the card).
    """

    name: str
    pairs: dict[str, list[str]]
    negatives: dict[str, list[str]] = field(default_factory=dict)
    labelled: list[tuple[str, str, float]] = field(default_factory=list)
    dev_queries: dict[str, str] = field(default_factory=dict)
    dev_corpus: dict[str, str] = field(default_factory=dict)
    dev_relevant: dict[str, set[str]] = field(default_factory=dict)
    corpus: list[str] = field(default_factory=list)
    source_columns: list[str] = field(default_factory=list)
    dev_unseen: set[str] = field(default_factory=set)
    dev_carved: bool = False
    held_out: dict = field(default_factory=dict)  # what carving the dev split took out of training

    @property
    def num_pairs(self) -> int:
        return sum(len(docs) for docs in self.pairs.values())

    def with_dev_merged(self) -> TrainingData:
        """All the training data again (train + the carved dev), for the final refit with chosen settings."""
        if not self.dev_carved:
            return self
        pairs = {**self.pairs, **self.held_out["pairs"]}
        negatives = {**self.negatives, **{q: n for q, n in self.held_out["negatives"].items() if n}}
        return TrainingData(
            name=self.name,
            pairs=pairs,
            negatives=negatives,
            labelled=self.labelled + self.held_out["labelled"],
            dev_queries=self.dev_queries,
            dev_corpus=self.dev_corpus,
            dev_relevant=self.dev_relevant,
            corpus=self.corpus,
            source_columns=self.source_columns,
        )

    def all_texts(self) -> tuple[list[str], list[str]]:
        """(query texts, document texts) that training and dev evaluation will ever look up."""
        queries = list(self.pairs) + list(self.dev_queries.values()) + [q for q, _, _ in self.labelled]
        documents = list(self.corpus) + list(self.dev_corpus.values())
        return list(dict.fromkeys(queries)), list(dict.fromkeys(documents))


def load_training_data(source: str | Path, dev_fraction: float = 0.1, seed: int = 0) -> TrainingData:
    """Load and validate a training source; raises ``DataError`` with what to fix."""
    if missing_local_path(source):
        raise DataError(f"Training data {str(source)!r}: file not found (no such file or folder).")
    if is_beir_folder(source):
        return _from_beir(Path(source), dev_fraction, seed)
    return _from_table(_load_table(str(source)), Path(str(source)).name, dev_fraction, seed)


def _from_beir(folder: Path, dev_fraction: float, seed: int) -> TrainingData:
    splits = available_splits(folder)
    if "train" not in splits:
        raise DataError(f"{folder} has no qrels/train.tsv (found splits: {splits}); training needs train qrels.")
    train = load_ir_data(folder, "train")
    positives = train.relevant
    pairs: dict[str, list[str]] = {}
    for qid, docs in positives.items():
        if docs and not train.queries[qid].strip():
            raise DataError(
                f"{folder}/queries.jsonl: query {qid!r} (judged in qrels/train.tsv) has an empty text. Fix or drop it."
            )
        if docs:
            pairs.setdefault(train.queries[qid], []).extend(train.corpus[doc] for doc in sorted(docs))
    if not pairs:
        raise DataError(f"{folder}/qrels/train.tsv has no positive judgment (score > 0): nothing to train on.")
    data = TrainingData(
        name=folder.name, pairs=pairs, corpus=list(train.corpus.values()), source_columns=["query", "positive"]
    )
    if "dev" in splits:
        dev = load_ir_data(folder, "dev")
        data.dev_queries = dict(dev.queries)
        data.dev_corpus = dict(dev.corpus)
        data.dev_relevant = {qid: docs for qid, docs in dev.relevant.items() if docs}
        overlap = set(data.pairs) & set(data.dev_queries.values())
        for text in overlap:  # a query judged in both: keep it on the dev side only
            del data.pairs[text]
        return data
    corpus_ids = {text: doc for doc, text in train.corpus.items()}
    _carve_dev(data, dev_fraction, seed, corpus_ids)
    return data


def _load_table(source: str) -> Dataset:
    path = Path(source)
    try:
        if path.is_file():
            if path.suffix.lower() not in LOCAL_FORMATS:
                raise DataError(f"{source}: unknown file type {path.suffix!r}; use one of {sorted(LOCAL_FORMATS)}.")
            if not path.read_bytes().strip():
                raise DataError(f"The training data {source!r} is empty (0 rows).")
            kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            loaded = load_dataset(LOCAL_FORMATS[path.suffix.lower()], data_files=str(path), split="train", **kwargs)
        else:
            loaded = load_dataset(source)
    except DataError:
        raise
    except FileNotFoundError as error:
        raise DataError(f"Cannot find training data {source!r}: {error}") from error
    except Exception as error:  # datasets raises many types for an unusable source
        raise DataError(f"Cannot load training data {source!r} with datasets.load_dataset: {error}") from error
    if isinstance(loaded, DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{source} has splits {list(loaded)} but no 'train' split to train on.")
        loaded = loaded["train"]
    return loaded


def _text_column(table: Dataset, column: str) -> list[str]:
    values = table[column]
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise DataError(
                f"Column {column!r} must hold text, but row {row} is {type(value).__name__}: {value!r}. "
                "Fix or drop that row."
            )
        if not value.strip():
            raise DataError(f"Column {column!r} has an empty text in row {row}.")
    return values


def _from_table(table: Dataset, name: str, dev_fraction: float, seed: int) -> TrainingData:
    columns = list(table.column_names)
    if len(table) == 0:
        raise DataError(f"The training data {name!r} is empty (0 rows).")
    if "query" not in columns:
        raise DataError(
            f"The training data needs a 'query' column; found {columns}. Expected columns 'query, positive[, negative...]' "
            "or 'query, document, label'. Rename your columns (e.g. dataset.rename_column('question', 'query'))."
        )
    queries = _text_column(table, "query")
    data = TrainingData(name=name, pairs={}, source_columns=columns)
    if "positive" in columns:
        positives = _text_column(table, "positive")
        negative_columns = [c for c in columns if c.startswith("negative")]
        negative_values = [_text_column(table, c) for c in negative_columns]
        for row, (query, positive) in enumerate(zip(queries, positives)):
            data.pairs.setdefault(query, []).append(positive)
            for values in negative_values:
                data.negatives.setdefault(query, []).append(values[row])
    elif "document" in columns:
        label_column = next((c for c in ("label", "score", "labels", "scores") if c in columns), None)
        if label_column is None:
            raise DataError(f"Labelled pairs need a 'label' column next to 'query' and 'document'; found {columns}.")
        documents = _text_column(table, "document")
        labels = table[label_column]
        for row, label in enumerate(labels):
            if (
                not isinstance(label, (int, float))
                or isinstance(label, bool)
                or math.isnan(label)
                or not 0 <= label <= 1
            ):
                raise DataError(
                    f"Column {label_column!r} must hold numbers in [0, 1]; row {row} has {label!r}. "
                    "Relevance labels are 1 (relevant) or 0 (not), or a graded score scaled into [0, 1]."
                )
        for query, document, label in zip(queries, documents, labels):
            data.labelled.append((query, document, float(label)))
            if label >= 0.5:
                data.pairs.setdefault(query, []).append(document)
            else:
                data.negatives.setdefault(query, []).append(document)
        if not data.pairs:
            raise DataError(f"No row of {name!r} has a label >= 0.5: there is no positive pair to learn from.")
    else:
        raise DataError(
            f"The training data needs a 'positive' column (query, positive[, negative...]) or 'document' and 'label' "
            f"columns (query, document, label); found {columns}."
        )
    data.corpus = list(dict.fromkeys(doc for docs in (*data.pairs.values(), *data.negatives.values()) for doc in docs))
    _carve_dev(data, dev_fraction, seed, {text: f"doc-{i}" for i, text in enumerate(data.corpus)})
    return data


def _carve_dev(data: TrainingData, fraction: float, seed: int, doc_ids: dict[str, str]) -> None:
    """Move a seeded share of the queries (with all their pairs) to a dev retrieval task.

    Half of the share is held out by *document*: a sample of positive documents leaves training together with
    every query that has one of them, so those dev queries look for documents training never saw. The other half
    is held out by query. Picking the learning rate, epoch and interpolation on this mix rewards a head that
    helps on new documents too, not only one that memorises the training positives.
    """
    rng = random.Random(seed)
    queries = sorted(data.pairs)
    count = max(MIN_DEV_QUERIES, round(fraction * len(queries)))
    if len(queries) < 2 * count:
        raise DataError(
            f"Only {len(queries)} distinct training queries: too few to hold out {count} for the dev split that picks "
            "the learning rate and epoch. Provide more pairs or a BEIR folder with qrels/dev.tsv."
        )
    documents = sorted({doc for docs in data.pairs.values() for doc in docs})
    held_documents: set[str] = set()
    unseen: list[str] = []
    for doc in rng.sample(documents, len(documents)):
        if len(unseen) >= count // 2:
            break
        held_documents.add(doc)
        unseen = [query for query in queries if held_documents & set(data.pairs[query])]
    remaining = [query for query in queries if query not in set(unseen)]
    dev = unseen + rng.sample(remaining, max(0, count - len(unseen)))
    data.dev_unseen, data.dev_carved = set(), True
    held_pairs, held_negatives = {}, {}
    for number, query in enumerate(sorted(dev)):
        qid = f"dev-{number}"
        data.dev_queries[qid] = query
        held_pairs[query] = data.pairs.pop(query)
        data.dev_relevant[qid] = {doc_ids[doc] for doc in held_pairs[query]}
        held_negatives[query] = data.negatives.pop(query, [])
        if query in unseen:
            data.dev_unseen.add(qid)
    data.held_out = {
        "pairs": held_pairs,
        "negatives": held_negatives,
        "labelled": [row for row in data.labelled if row[0] not in data.pairs],
    }
    data.labelled = [row for row in data.labelled if row[0] in data.pairs]
    data.dev_corpus = {doc_ids[text]: text for text in data.corpus}
