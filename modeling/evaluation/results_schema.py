"""The one shape of an evaluation's results: what ``pipeline`` returns, the JSON file holds and the card reads.

A dataclass per block, ``to_json`` / ``from_json`` for the file; metric keys are ``metric_names.METRICS``'s
display names everywhere (``nDCG@10``), system keys are ``SYSTEMS``. Bump ``SCHEMA_VERSION`` when a key changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: "base" -> "bare_encoder"; p-values None below two queries; fusion "weight_from"
SYSTEMS = ("trained", "bare_encoder", "bm25", "hybrid")  # the order of every table

Metrics = dict[str, float | None]  # metric display name -> mean (None for an empty slice)


@dataclass
class DatasetInfo:
    source: str
    name: str
    split: str
    queries: int
    documents: int
    judgements: int
    train_qrels: str | None
    queries_without_relevant: list[str] = field(default_factory=list)  # all judgements grade <= 0: scored 0


@dataclass
class ModelInfo:
    source: str
    has_head: bool
    similarity: str
    documents: str | None


@dataclass
class PValues:
    reference: str
    metric: str
    vs: dict[str, dict[str, float | None]]  # system -> slice -> p (None: fewer than two queries)


@dataclass
class EvaluationResults:
    dataset: DatasetInfo
    model: ModelInfo
    settings: dict[str, Any]
    slices: dict[str, int]  # slice -> number of queries
    systems: dict[str, dict[str, Metrics]]  # system -> slice -> metric -> value
    p_values: PValues
    score_distributions: dict[str, dict[str, Any]]
    per_query: dict[str, dict[str, dict[str, float]]]  # system -> query id -> metric -> value
    slice_of_query: dict[str, str]
    encoder_calls: int
    timings_s: dict[str, float]
    wall_time_s: float
    peak_rss_mb: float
    plots: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            **{k: v for k, v in asdict(self).items() if k != "schema_version"},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvaluationResults:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"results schema {data.get('schema_version')!r}, this code reads {SCHEMA_VERSION}.")
        parts = {"dataset": DatasetInfo, "model": ModelInfo, "p_values": PValues}
        known = {f.name for f in fields(cls)}
        values = {key: parts[key](**value) if key in parts else value for key, value in data.items() if key in known}
        return cls(**values)

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> EvaluationResults:
        return cls.from_json(json.loads(Path(path).read_text()))
