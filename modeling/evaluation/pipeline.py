"""One evaluation run: the trained model, the bare encoder under it, BM25 and the hybrid, on the same queries.

``prepare`` checks everything that can be wrong (data, splits, model, fusion settings, output folder) in seconds;
``run`` then does the heavy work and returns one results dict (the JSON schema is in ``results_schema``).
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from modeling.model.build import encoder_display_name
from modeling.cache.cached_input import prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.evaluation import significance
from modeling.evaluation.bm25 import BM25, BM25Settings
from modeling.evaluation.systems import DenseEncoder, base_model, documents_shared, has_head, load_model
from modeling.evaluation.faiss_search import faiss_search, require_faiss
from modeling.evaluation.fusion import choose_weight, convex, rrf
from modeling.evaluation.metrics import MAIN_METRIC, Run, mean_metrics, per_query_metrics
from modeling.evaluation.pair_scores import pair_scores, summarise
from modeling.evaluation.plots import plot_metric_change, plot_score_distributions
from modeling.evaluation.search import check_score, exact_search, to_run
from modeling.evaluation.slices import DEFINITION, seen_unseen
from modeling.data.ir_data import DataError, IRData, available_splits, load_ir_data, load_qrels

DEV_SPLITS = ("dev", "validation")
SCHEMA_VERSION = 1


@dataclass
class EvaluationConfig:
    """Everything a run depends on; recorded in the results under ``settings``."""

    data: str
    model: str | None = None
    split: str = "test"
    train_split: str | None = "auto"  # "auto": the source's "train" split if it has one; None: no slices
    train_qrels: str | None = None  # a qrels .tsv from elsewhere (overrides train_split)
    dev_split: str | None = "auto"  # "auto": "dev" or "validation" if the source has one
    fusion: str = "auto"  # auto (convex with a dev split, else RRF) | convex | rrf
    fusion_weight: float | None = None  # fixed dense weight for convex fusion (no tuning)
    rrf_k: int = 60
    query_prompt: str | None = None
    document_prompt: str | None = None
    depth: int = 1000
    bm25: BM25Settings = field(default_factory=BM25Settings)
    search: str = "exact"  # exact | faiss
    faiss_index: str = "Flat"
    query_chunk: int = 512
    doc_chunk: int = 16384
    batch_size: int = 64
    trust_remote_code: bool = False
    cache_dir: str | None = None
    device: str | None = None
    resamples: int = 10000
    seed: int = 0
    negatives_per_query: int = 20
    progress: bool = True


@dataclass
class Prepared:
    config: EvaluationConfig
    data: IRData
    train_qrels: dict[str, dict[str, int]] | None
    train_split: str | None
    train_source: str | None
    dev: IRData | None
    dev_split: str | None
    fusion: str
    model: SentenceTransformer
    score: str


def log(message: str) -> None:
    print(f"[evaluate {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _auto_split(requested: str | None, candidates: tuple[str, ...], splits: list[str], taken: set[str]) -> str | None:
    if requested != "auto":
        return requested
    return next((name for name in candidates if name in splits and name not in taken), None)


def prepare(config: EvaluationConfig) -> Prepared:
    """Load and validate data, splits and model; raise ``DataError`` / ``ModelError`` / ``ValueError`` before any work."""
    if config.fusion not in ("auto", "convex", "rrf"):
        raise ValueError(f"fusion must be auto, convex or rrf, got {config.fusion!r}.")
    if config.fusion_weight is not None and not 0 <= config.fusion_weight <= 1:
        raise ValueError(f"fusion weight must be in [0, 1], got {config.fusion_weight}.")
    if config.search not in ("exact", "faiss"):
        raise ValueError(f"search must be exact or faiss, got {config.search!r}.")
    if config.search == "faiss":
        require_faiss()
    log(f"Loading {config.data} ({config.split})")
    data = load_ir_data(config.data, config.split)
    splits = available_splits(config.data)
    train_split = None if config.train_qrels else _auto_split(config.train_split, ("train",), splits, {config.split})
    if train_split is not None and train_split == config.split:
        raise DataError(f"The train split must differ from the evaluated split ({config.split!r}).")
    if train_split is not None and train_split not in splits:
        raise DataError(f"{config.data} has no qrels split {train_split!r} for slicing; available: {splits}.")
    train_source = config.train_qrels or (f"{config.data} [{train_split}]" if train_split else None)
    train_qrels = (
        load_qrels(config.train_qrels, "train")
        if config.train_qrels
        else (load_qrels(config.data, train_split) if train_split else None)
    )
    dev_split = _auto_split(config.dev_split, DEV_SPLITS, splits, {config.split, train_split or ""})
    if dev_split is not None and dev_split not in splits:
        raise DataError(
            f"{config.data} has no qrels split {dev_split!r} for choosing the fusion weight; available: {splits}."
        )
    fusion = (
        config.fusion
        if config.fusion != "auto"
        else ("convex" if dev_split or config.fusion_weight is not None else "rrf")
    )
    if fusion == "convex" and dev_split is None and config.fusion_weight is None:
        raise ValueError(
            "Convex fusion needs a dev split to choose its weight (--dev-split) or a fixed --fusion-weight."
        )
    dev = load_ir_data(config.data, dev_split) if fusion == "convex" and config.fusion_weight is None else None
    log(f"{len(data.queries)} queries, {len(data.corpus)} documents; loading model {config.model or 'default encoder'}")
    model = load_model(config.model, config.trust_remote_code, config.device)
    score = check_score(model.similarity_fn_name or "cosine")
    return Prepared(
        config, data, train_qrels, train_split, train_source, dev, dev_split if dev else None, fusion, model, score
    )


def _search(prepared: Prepared, queries: Any, documents: Any) -> tuple[Any, Any]:
    config = prepared.config
    if config.search == "faiss":
        return faiss_search(queries, documents, config.depth, prepared.score, config.faiss_index)
    return exact_search(
        queries, documents, config.depth, prepared.score, config.query_chunk, config.doc_chunk, config.progress
    )


def _dense_runs(
    prepared: Prepared, cache: EmbeddingCache
) -> tuple[dict[str, Run], dict[str, Run], dict[str, Any], dict[str, Any]]:
    """Test runs, dev runs, embeddings (for the score plot) and notes for every dense system."""
    config, data = prepared.config, prepared.data
    doc_ids, doc_texts = list(data.corpus), list(data.corpus.values())
    encoders = {"base": DenseEncoder(base_model(prepared.model), cache, config.batch_size)}
    if has_head(prepared.model):
        encoders = {"trained": DenseEncoder(prepared.model, cache, config.batch_size), **encoders}
    base_docs = encoders["base"].encode(doc_texts, "document", config.document_prompt, "Corpus")
    runs, dev_runs, embeddings, notes = {}, {}, {}, {}
    for name, encoder in encoders.items():
        if name == "trained" and documents_shared(
            prepared.model, encoder, encoders["base"], doc_texts[:16], config.document_prompt
        ):
            docs, notes["trained_documents"] = (
                base_docs,
                "query-only head: document embeddings shared with base (not re-embedded)",
            )
        elif name == "trained":
            docs = encoder.encode(doc_texts, "document", config.document_prompt, "Corpus (trained)")
            notes["trained_documents"] = "symmetric head: corpus embedded through the head"
        else:
            docs = base_docs
        query_ids = list(data.queries)
        queries = encoder.encode(list(data.queries.values()), "query", config.query_prompt, "Queries")
        log(f"Dense search: {name}, {len(query_ids)} queries x {len(doc_ids)} documents, top {config.depth}")
        runs[name] = to_run(query_ids, doc_ids, *_search(prepared, queries, docs))
        embeddings[name] = (queries, docs, query_ids)
        if prepared.dev is not None:
            dev_queries = encoder.encode(
                list(prepared.dev.queries.values()), "query", config.query_prompt, "Dev queries"
            )
            dev_runs[name] = to_run(list(prepared.dev.queries), doc_ids, *_search(prepared, dev_queries, docs))
    return runs, dev_runs, embeddings, notes


def _fusion(
    prepared: Prepared, dense: str, runs: dict[str, Run], dev_runs: dict[str, Run]
) -> tuple[Run, dict[str, Any]]:
    config = prepared.config
    if prepared.fusion == "rrf":
        settings = {
            "method": "rrf",
            "k": config.rrf_k,
            "fused": [dense, "bm25"],
            "why": "no dev split to choose a convex weight on",
        }
        return rrf([runs[dense], runs["bm25"]], config.rrf_k, config.depth), settings
    if config.fusion_weight is not None:
        weight, settings = config.fusion_weight, {"chosen_on": None, "why": "weight given on the command line"}
    else:
        weight, curve = choose_weight(dev_runs[dense], dev_runs["bm25"], prepared.dev.qrels)
        chosen_on = f"{prepared.dev.name} [{prepared.dev_split}] ({len(prepared.dev.qrels)} queries)"
        settings = {"chosen_on": chosen_on, "dev_nDCG@10_by_weight": curve}
    settings = {"method": "convex min-max", "dense_weight": weight, "fused": [dense, "bm25"], **settings}
    return convex(runs[dense], runs["bm25"], weight, config.depth), settings


def run(prepared: Prepared, output_dir: Path, started: float | None = None) -> dict[str, Any]:
    """Score every system, slice, test and plot; returns the results (see ``results_schema``)."""
    started = time.perf_counter() if started is None else started
    config, data = prepared.config, prepared.data
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    cache = EmbeddingCache(
        prefix_model(prepared.model),
        root=config.cache_dir,
        batch_size=config.batch_size,
        show_progress_bar=config.progress,
    )
    runs, dev_runs, embeddings, notes = _dense_runs(prepared, cache)
    timings["dense_s"], clock = time.perf_counter() - clock, time.perf_counter()

    log(f"BM25 (k1={config.bm25.k1}, b={config.bm25.b}): indexing {len(data.corpus)} documents")
    bm25 = BM25(data.corpus, config.bm25, progress=config.progress)
    runs["bm25"] = bm25.search(data.queries, config.depth)
    if prepared.dev is not None:
        dev_runs["bm25"] = bm25.search(prepared.dev.queries, config.depth)
    timings["bm25_s"], clock = time.perf_counter() - clock, time.perf_counter()

    reference = "trained" if "trained" in runs else "base"
    runs["hybrid"], fusion_settings = _fusion(prepared, reference, runs, dev_runs)
    timings["fusion_s"], clock = time.perf_counter() - clock, time.perf_counter()

    per_query = {name: per_query_metrics(data.qrels, system_run) for name, system_run in runs.items()}
    slices = seen_unseen(data.qrels, prepared.train_qrels)
    systems = {
        name: {slice_name: mean_metrics(values, qids) for slice_name, qids in slices.items()}
        for name, values in per_query.items()
    }
    p_values = {
        other: {
            slice_name: significance.paired_p_value(
                [per_query[reference][q][MAIN_METRIC] for q in qids],
                [per_query[other][q][MAIN_METRIC] for q in qids],
                config.resamples,
                config.seed,
            )
            for slice_name, qids in slices.items()
        }
        for other in runs
        if other != reference
    }
    timings["metrics_s"], clock = time.perf_counter() - clock, time.perf_counter()

    doc_index = {doc: i for i, doc in enumerate(data.corpus)}
    samples = {}
    for name, (queries, docs, query_ids) in embeddings.items():
        samples[name] = pair_scores(
            queries, docs, query_ids, doc_index, data.qrels, prepared.score, config.negatives_per_query, config.seed
        )
    stem = f"{data.name}-{config.split}"
    plots = [
        plot_score_distributions(
            {n: samples[n] for n in ("base", "trained") if n in samples},
            output_dir / f"{stem}-scores.png",
            prepared.score,
        )
    ]
    after, before = (reference, "base") if reference == "trained" else ("base", "bm25")
    plots.append(
        plot_metric_change(
            {q: v[MAIN_METRIC] for q, v in per_query[after].items()},
            {q: v[MAIN_METRIC] for q, v in per_query[before].items()},
            (after, before),
            output_dir / f"{stem}-ndcg10-change.png",
        )
    )
    timings["plots_s"] = time.perf_counter() - clock

    slice_of_query = {}
    for slice_name in ("seen", "unseen"):
        for qid in slices.get(slice_name, []):
            slice_of_query[qid] = slice_name
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": {
            "source": str(config.data),
            "name": data.name,
            "split": config.split,
            "queries": len(data.queries),
            "documents": len(data.corpus),
            "judgements": sum(len(docs) for docs in data.qrels.values()),
            "train_qrels": prepared.train_source,
        },
        "model": {
            "source": config.model or encoder_display_name(None),
            "has_head": "trained" in runs,
            "similarity": prepared.score,
            "documents": notes.get("trained_documents"),
        },
        "settings": {
            **{key: value for key, value in asdict(config).items() if key not in ("bm25", "progress")},
            "train_split": prepared.train_split,  # as resolved ("auto" -> the split used, or None)
            "dev_split": prepared.dev_split,
            "bm25": config.bm25.describe(),
            "fusion": fusion_settings,
            "significance": {
                "test": significance.DESCRIPTION,
                "metric": MAIN_METRIC,
                "reference": reference,
                "resamples": config.resamples,
                "seed": config.seed,
            },
            "slices": DEFINITION if prepared.train_qrels is not None else "no train qrels: no slices",
            "metrics": "trec_eval via pytrec_eval; MRR@10 = recip_rank on the run cut at 10",
        },
        "slices": {name: len(qids) for name, qids in slices.items()},
        "systems": systems,
        "p_values": {"reference": reference, "metric": MAIN_METRIC, "vs": p_values},
        "score_distributions": {name: summarise(*pair) for name, pair in samples.items()},
        "per_query": per_query,
        "slice_of_query": slice_of_query,
        "plots": [str(path) for path in plots],
        "encoder_calls": cache.encoded_texts,
        "timings_s": timings,
        "wall_time_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
