"""Retrieval data (corpus, queries, graded qrels) from a BEIR folder or a ``datasets`` source, validated up front.

Training and evaluation both start here, so every bad input fails in seconds with a message that says what is
wrong and what was expected, before any model is loaded or any text is encoded.

Two kinds of source:

- **BEIR folder** (also what ``huggingface-cli download mteb/scifact`` leaves on disk): ``corpus.jsonl``
  (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv`` (header
  ``query-id corpus-id score``).
- **datasets source**: a Hub id or a local folder that ``datasets.load_dataset`` understands, in the
  BEIR-on-the-Hub layout: configs ``corpus`` and ``queries`` (one split each, same columns as above), and the
  qrels (``query-id``, ``corpus-id``, ``score``) as split ``<split>`` of config ``qrels`` or ``default`` of the same
  source, or of the separate dataset ``<source>-qrels`` (the ``BeIR/<name>`` + ``BeIR/<name>-qrels`` layout), or of
  an explicit ``qrels_source``.

A document's text is ``(title + " " + text).strip()``; ids are strings; grades are ints. ``IRData.queries`` holds
only the queries the split judges, and ``IRData.qrels`` keeps every grade (0 included) for the metrics.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEIR_FILES = ("corpus.jsonl", "queries.jsonl")
QRELS_HEADER = ("query-id", "corpus-id", "score")
SHOW = 5  # how many offending ids an error message lists


class DataError(ValueError):
    """Retrieval data that cannot be used as given (the message says what and where)."""


@dataclass
class IRData:
    """One split of a retrieval dataset.

    Args:
        name: A short name for reports (the folder or Hub id's last part).
        corpus: doc id -> document text.
        queries: query id -> query text (only the queries judged in this split).
        qrels: query id -> {doc id: graded relevance}; grades <= 0 mean judged non-relevant.
    """

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @property
    def relevant(self) -> dict[str, set[str]]:
        """query id -> the documents with relevance > 0 (what slicing and training positives use)."""
        return {qid: {doc for doc, grade in docs.items() if grade > 0} for qid, docs in self.qrels.items()}


def document_text(title: Any, text: Any) -> str:
    return f"{title or ''} {text}".strip()


def _show(items: Iterable[str]) -> str:
    items = list(items)
    more = f", ... ({len(items) - SHOW} more)" if len(items) > SHOW else ""
    return ", ".join(repr(item) for item in items[:SHOW]) + more


def _as_id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: ids must be strings (or ints), got {type(value).__name__} {value!r}.")
    return str(value)


def _as_text(value: Any, where: str, field: str, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be text, got {type(value).__name__} {value!r}.")
    return value


def _as_grade(value: Any, where: str) -> int:
    try:
        grade = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: relevance score must be an integer, got {value!r}.") from None
    if grade != int(grade):
        raise DataError(f"{where}: relevance score must be an integer, got {value!r}.")
    return int(grade)


def _collect_texts(rows: Iterable[tuple[str, dict[str, Any]]], kind: str, with_title: bool) -> dict[str, str]:
    """id -> text from records, rejecting missing/duplicate ids and non-text fields."""
    texts: dict[str, str] = {}
    duplicates: list[str] = []
    for where, row in rows:
        if "_id" not in row or "text" not in row:
            raise DataError(f"{where}: a {kind} record needs '_id' and 'text' fields, got {sorted(row)}.")
        key = _as_id(row["_id"], where)
        text = _as_text(row["text"], where, "text")
        if with_title:
            text = document_text(_as_text(row.get("title"), where, "title", optional=True), text)
        if key in texts:
            duplicates.append(key)
        texts[key] = text
    if duplicates:
        raise DataError(f"{kind}: {len(duplicates)} duplicate id(s): {_show(duplicates)}.")
    if not texts:
        raise DataError(f"{kind}: no records.")
    return texts


def _collect_qrels(rows: Iterable[tuple[str, Any, Any, Any]], split: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    conflicts: list[str] = []
    for where, qid, doc, score in rows:
        qid, doc, grade = _as_id(qid, where), _as_id(doc, where), _as_grade(score, where)
        judged = qrels.setdefault(qid, {})
        if doc in judged and judged[doc] != grade:
            conflicts.append(f"{qid}/{doc}")
        judged[doc] = grade
    if conflicts:
        raise DataError(
            f"qrels {split!r}: {len(conflicts)} (query, document) pair(s) graded twice differently: {_show(conflicts)}."
        )
    if not qrels:
        raise DataError(f"qrels {split!r} is empty: no judged queries in this split.")
    if not any(grade > 0 for docs in qrels.values() for grade in docs.values()):
        raise DataError(f"qrels {split!r} has no relevant (score > 0) judgement: nothing to evaluate or train on.")
    return qrels


def check_ids(
    name: str, corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]], split: str
) -> IRData:
    """Every qrels id must exist; keep only the judged queries."""
    unknown_queries = [qid for qid in qrels if qid not in queries]
    unknown_docs = sorted({doc for docs in qrels.values() for doc in docs if doc not in corpus})
    problems = []
    if unknown_queries:
        problems.append(f"{len(unknown_queries)} query id(s) not in the queries: {_show(unknown_queries)}")
    if unknown_docs:
        problems.append(f"{len(unknown_docs)} document id(s) not in the corpus: {_show(unknown_docs)}")
    if problems:
        raise DataError(f"{name}: qrels {split!r} name unknown ids; " + "; ".join(problems) + ".")
    return IRData(name=name, corpus=corpus, queries={qid: queries[qid] for qid in qrels}, qrels=qrels)


# --- BEIR folder -------------------------------------------------------------------------------------------------


def is_beir_folder(source: str | Path) -> bool:
    path = Path(source)
    return path.is_dir() and any((path / name).is_file() for name in BEIR_FILES)


def _not_utf8(path: Path, error: UnicodeDecodeError) -> DataError:
    return DataError(
        f"{path}: not UTF-8 text (byte {error.object[error.start : error.start + 1]!r} at offset {error.start}); "
        "re-save the file as UTF-8."
    )


def missing_local_path(source: str | Path | None) -> bool:
    """True when ``source`` is written as a local path (not a Hub id) and nothing is there.

    Local: starts with ``.``, ``/`` or ``~``, has more than one ``/``, or ends with a data file suffix; a Hub id is
    ``name`` or ``org/name``. Such a source is reported as a missing file, not as a failed Hub look-up.
    """
    if source is None:
        return False
    text = str(source)
    local = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    local = local or Path(text).suffix.lower() in {".csv", ".json", ".jsonl", ".parquet", ".tsv", ".txt"}
    return local and not Path(text).expanduser().exists()


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        yield from _jsonl_rows(path)
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: not valid JSON ({error.msg}).") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object per line.")
            yield where, row


def _tsv_qrels(path: Path) -> Iterator[tuple[str, Any, Any, Any]]:
    try:
        yield from _tsv_rows(path)
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from None


def _tsv_rows(path: Path) -> Iterator[tuple[str, Any, Any, Any]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None:
            return
        if tuple(cell.strip() for cell in header) != QRELS_HEADER:
            expected, got = "\t".join(QRELS_HEADER), "\t".join(header)
            raise DataError(f"{path}:1: expected the header {expected!r}, got {got!r}.")
        for number, row in enumerate(reader, 2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise DataError(
                    f"{path}:{number}: expected 3 tab-separated fields (query-id, corpus-id, score), got {row!r}."
                )
            yield f"{path}:{number}", row[0].strip(), row[1].strip(), row[2].strip()


def _beir_splits(folder: Path) -> list[str]:
    return sorted(path.stem for path in (folder / "qrels").glob("*.tsv"))


def load_beir_folder(folder: str | Path, split: str = "test") -> IRData:
    folder = Path(folder)
    wanted = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]
    missing = [path for path in wanted if not path.is_file()]
    if missing:
        splits = _beir_splits(folder)
        raise DataError(
            f"{folder} is not a complete BEIR folder: missing {', '.join(str(path) for path in missing)}. Expected "
            "corpus.jsonl (_id, title, text), queries.jsonl (_id, text) and qrels/<split>.tsv (query-id, corpus-id, "
            f"score); splits found: {splits or 'none'}."
        )
    qrels = _collect_qrels(_tsv_qrels(wanted[2]), split)
    corpus = _collect_texts(_jsonl(wanted[0]), "corpus", with_title=True)
    queries = _collect_texts(_jsonl(wanted[1]), "queries", with_title=False)
    return check_ids(folder.name, corpus, queries, qrels, split)


# --- datasets source ---------------------------------------------------------------------------------------------


def _config_names(source: str) -> list[str]:
    from datasets import get_dataset_config_names

    try:
        return list(get_dataset_config_names(source))
    except Exception as error:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        raise DataError(
            f"{source!r} is neither a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) nor a dataset "
            f"datasets can open ({type(error).__name__}: {error})."
        ) from None


def _qrels_location(source: str, qrels_source: str | None) -> tuple[str, str | None]:
    """(dataset, config) that holds the qrels splits."""
    if qrels_source:
        return qrels_source, None
    configs = _config_names(source)
    missing = [name for name in ("corpus", "queries") if name not in configs]
    if missing:
        raise DataError(
            f"{source}: missing config(s) {missing}; a datasets source needs configs 'corpus' and 'queries' (found {configs})."
        )
    for config in ("qrels", "default"):
        if config in configs:
            return source, config
    return f"{source}-qrels", None


def _split_names(dataset: str, config: str | None) -> list[str]:
    from datasets import get_dataset_split_names

    try:
        return list(get_dataset_split_names(dataset, config))
    except Exception as error:
        raise DataError(
            f"No qrels found at {dataset!r} (config {config!r}): {type(error).__name__}: {error}."
        ) from None


def _single_split(source: str, config: str) -> Any:
    from datasets import load_dataset

    parts = load_dataset(source, config)
    names = list(parts)
    if len(names) != 1 and config not in names:
        raise DataError(f"{source} config {config!r} has splits {names}; expected one (or one named {config!r}).")
    return parts[config if config in names else names[0]]


def _records(dataset: Any, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    columns = [name for name in ("_id", "title", "text") if name in dataset.column_names]
    for number, row in enumerate(dataset.select_columns(columns)):
        yield f"{kind} row {number}", row


def _datasets_qrels(source: str, split: str, qrels_source: str | None) -> dict[str, dict[str, int]]:
    from datasets import load_dataset

    dataset, config = _qrels_location(source, qrels_source)
    splits = _split_names(dataset, config)
    if split not in splits:
        raise DataError(f"{dataset} (config {config!r}) has no qrels split {split!r}; available: {splits}.")
    rows = load_dataset(dataset, config, split=split)
    missing = [name for name in QRELS_HEADER if name not in rows.column_names]
    if missing:
        raise DataError(f"qrels {split!r} of {dataset}: missing column(s) {missing} (have {rows.column_names}).")
    return _collect_qrels(
        ((f"qrels row {n}", r["query-id"], r["corpus-id"], r["score"]) for n, r in enumerate(rows)), split
    )


def load_datasets_source(source: str, split: str = "test", qrels_source: str | None = None) -> IRData:
    qrels = _datasets_qrels(source, split, qrels_source)
    corpus = _collect_texts(_records(_single_split(source, "corpus"), "corpus"), "corpus", with_title=True)
    queries = _collect_texts(_records(_single_split(source, "queries"), "queries"), "queries", with_title=False)
    return check_ids(str(source).rstrip("/").split("/")[-1], corpus, queries, qrels, split)


# --- entry points ------------------------------------------------------------------------------------------------


def load_ir_data(source: str | Path, split: str = "test", qrels_source: str | None = None) -> IRData:
    """Load and validate one split: a BEIR folder, else a ``datasets`` source (see the module docstring).

    Raises:
        DataError: missing files/configs/splits, an empty split, duplicate ids, non-text fields, or qrels naming
            ids that are not in the corpus or queries (counted, a few shown).
    """
    if is_beir_folder(source):
        return load_beir_folder(source, split)
    path = Path(source)
    if path.is_dir() and not any(path.iterdir()):
        raise DataError(f"{path} is an empty folder; expected a BEIR folder or a datasets folder.")
    if not path.exists() and (str(source).startswith((".", "/", "~")) or str(source).count("/") > 1):
        raise DataError(
            f"{source} does not exist (expected a BEIR folder or a datasets Hub id such as 'mteb/scifact')."
        )
    return load_datasets_source(str(source), split, qrels_source)


def load_qrels(source: str | Path, split: str, qrels_source: str | None = None) -> dict[str, dict[str, int]]:
    """Only the qrels of one split (e.g. train qrels for slicing), from a source or a ``.tsv`` file; ids unchecked."""
    path = Path(source)
    if path.suffix == ".tsv":
        if not path.is_file():
            raise DataError(
                f"qrels file {path} does not exist (expected a TSV with header 'query-id corpus-id score')."
            )
        return _collect_qrels(_tsv_qrels(path), path.stem)
    if is_beir_folder(path):
        if not (path / "qrels" / f"{split}.tsv").is_file():
            raise DataError(f"{path} has no qrels/{split}.tsv; splits found: {_beir_splits(path) or 'none'}.")
        return _collect_qrels(_tsv_qrels(path / "qrels" / f"{split}.tsv"), split)
    return _datasets_qrels(str(source), split, qrels_source)


def available_splits(source: str | Path, qrels_source: str | None = None) -> list[str]:
    """The qrels splits a source offers (e.g. ``['dev', 'test', 'train']``)."""
    if is_beir_folder(source):
        return _beir_splits(Path(source))
    dataset, config = _qrels_location(str(source), qrels_source)
    return sorted(_split_names(dataset, config))
