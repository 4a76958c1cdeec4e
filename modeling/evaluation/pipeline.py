"""One evaluation run: the trained model, the bare encoder under it, BM25 and the hybrid, on the same queries.

``prepare`` checks everything that can be wrong (data, splits, model, fusion settings) in seconds; ``run`` then
does the heavy work as named stages (embed the corpus, BM25, choose the fusion weight, score queries a batch at a
time, summarise) and returns ``results_schema.EvaluationResults``. No file is written here: the caller writes the
JSON first, then the plots (``write_plots``), so a late failure never loses the numbers.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from modeling.cache.cached_input import prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.data.ir_data import DataError, IRData, available_splits, load_ir_data, load_qrels
from modeling.evaluation import significance
from modeling.evaluation.bm25 import BM25, BM25Settings
from modeling.evaluation.faiss_search import build_index, require_faiss, search_index
from modeling.evaluation.fusion import NORMALISATIONS, choose_fusion, convex, rrf
from modeling.evaluation.metric_names import MAIN_METRIC
from modeling.evaluation.metrics import mean_metrics, per_query_metrics
from modeling.evaluation.pair_scores import pair_scores, summarise
from modeling.evaluation.plots import plot_metric_change, plot_score_distributions
from modeling.evaluation.results_schema import DatasetInfo, EvaluationResults, ModelInfo, PValues
from modeling.evaluation.search import check_score, exact_search, to_run
from modeling.evaluation.slices import DEFINITION, SLICES, seen_unseen
from modeling.evaluation.systems import DenseEncoder, bare_encoder, documents_shared, has_head, load_model
from modeling.model.build import encoder_display_name
from modeling.model.layout import ModelLayout

logger = logging.getLogger(__name__)

DEV_SPLITS = ("dev", "validation")
HYBRID_FILE = "hybrid.json"  # written by training next to the model's config: the dense weight chosen on its dev split
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class EvaluationConfig:
    """Everything a run depends on; recorded in the results under ``settings``."""

    data: str
    model: str | None = None
    split: str = "test"
    train_split: str | None = "auto"  # "auto": the source's "train" split if it has one; None: no slices
    train_qrels: str | None = None  # a qrels .tsv from elsewhere (overrides train_split)
    dev_split: str | None = "auto"  # "auto": "dev" or "validation" if the source has one
    fusion: str = "auto"  # auto (convex when a weight is known: flag, dev split, hybrid.json; else RRF) | convex | rrf
    fusion_weight: float | None = None  # fixed dense weight for convex fusion (beats dev split and hybrid.json)
    fusion_normalisation: str | None = None  # min-max | z-score; default: the dev split's choice or hybrid.json's
    rrf_k: int = 60
    query_prompt: str | None = None
    document_prompt: str | None = None
    depth: int = 1000
    bm25: BM25Settings = field(default_factory=BM25Settings)
    search: str = "exact"  # exact | faiss
    faiss_index: str = "Flat"
    query_chunk: int = 512  # queries per block inside exact search
    query_batch: int = 128  # queries taken through fusion and metrics at once (bounds the runs held)
    search_batch: int = 4096  # queries searched per pass over the corpus (their top-k hits are held as tensors)
    doc_chunk: int = 16384  # corpus rows read from the cache at once (search, FAISS index building)
    batch_size: int = 64
    trust_remote_code: bool = False
    cache_dir: str | None = None
    cache_storage: str = "float32"  # float16 halves the cache on disk; SciFact's nDCG@10 did not move
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
    hybrid_file: dict[str, Any] | None = None  # the model's hybrid.json, when fusion weight comes from it


def _auto_split(requested: str | None, candidates: tuple[str, ...], splits: list[str], taken: set[str]) -> str | None:
    if requested != "auto":
        return requested
    return next((name for name in candidates if name in splits and name not in taken), None)


def check_split_name(split: str, what: str = "split") -> str:
    """A split is a name (``test``, ``dev``), never a path: ``../qrels/test`` would also name the output file."""
    if not SPLIT_NAME.match(split or "") or ".." in split:
        raise DataError(
            f"--{what} must be a split name such as 'test' or 'dev' (letters, digits, _ . -), got {split!r}."
        )
    return split


def read_hybrid_file(model: str | None) -> dict[str, Any] | None:
    """The model folder's ``hybrid.json`` (training's dense weight), checked; None when there is none."""
    if not model or not Path(model).expanduser().is_dir():
        return None
    path = Path(model).expanduser() / HYBRID_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        weight = float(data["dense_weight"])
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"{path}: unreadable ({type(error).__name__}: {error}); expected {{'dense_weight': 0..1, ...}}."
        ) from None
    if not 0 <= weight <= 1:
        raise ValueError(f"{path}: dense_weight must be in [0, 1], got {weight}.")
    if data.get("normalisation", "min-max") not in NORMALISATIONS:
        raise ValueError(
            f"{path}: normalisation {data.get('normalisation')!r} is not supported (one of {', '.join(NORMALISATIONS)})."
        )
    return {**data, "dense_weight": weight, "path": str(path)}


def prepare(config: EvaluationConfig) -> Prepared:
    """Load and validate data, splits and model; raise ``DataError`` / ``ModelError`` / ``ValueError`` before any work."""
    if config.fusion not in ("auto", "convex", "rrf"):
        raise ValueError(f"fusion must be auto, convex or rrf, got {config.fusion!r}.")
    if config.fusion_normalisation is not None and config.fusion_normalisation not in NORMALISATIONS:
        raise ValueError(
            f"fusion normalisation must be one of {', '.join(NORMALISATIONS)}, got {config.fusion_normalisation!r}."
        )
    if config.fusion_weight is not None and not 0 <= config.fusion_weight <= 1:
        raise ValueError(f"fusion weight must be in [0, 1], got {config.fusion_weight}.")
    if config.search not in ("exact", "faiss"):
        raise ValueError(f"search must be exact or faiss, got {config.search!r}.")
    if config.query_batch < 1 or config.search_batch < 1 or config.doc_chunk < 1:
        raise ValueError(
            f"query batch, search batch and doc chunk must be positive, got "
            f"{config.query_batch}, {config.search_batch} and {config.doc_chunk}."
        )
    if config.search == "faiss":
        require_faiss()
    check_split_name(config.split)
    for name, value in (("train-split", config.train_split), ("dev-split", config.dev_split)):
        if value not in (None, "auto"):
            check_split_name(value, name)
    logger.info("Loading %s (%s)", config.data, config.split)
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
    # The convex weight comes from, in order: --fusion-weight, the data's dev split, the model's hybrid.json.
    hybrid_file = None if config.fusion_weight is not None or dev_split else read_hybrid_file(config.model)
    has_weight = config.fusion_weight is not None or dev_split is not None or hybrid_file is not None
    fusion = config.fusion if config.fusion != "auto" else ("convex" if has_weight else "rrf")
    if fusion == "convex" and not has_weight:
        raise ValueError(
            "Convex fusion needs a weight: a dev split to choose it on (--dev-split), a fixed --fusion-weight, "
            f"or a {HYBRID_FILE} in the model folder."
        )
    tune = fusion == "convex" and config.fusion_weight is None and dev_split is not None
    dev = load_ir_data(config.data, dev_split) if tune else None
    warn_unjudged(data.qrels)
    logger.info(
        "%d queries, %d documents; loading model %s",
        len(data.queries),
        len(data.corpus),
        config.model or "default encoder",
    )
    model = load_model(config.model, config.trust_remote_code, config.device)
    score = check_score(model.similarity_fn_name or "cosine")
    return Prepared(
        config,
        data,
        train_qrels,
        train_split,
        train_source,
        dev,
        dev_split if dev else None,
        fusion,
        model,
        score,
        hybrid_file if fusion == "convex" and not tune and config.fusion_weight is None else None,
    )


def queries_without_relevant(qrels: dict[str, dict[str, int]]) -> list[str]:
    return [qid for qid, docs in qrels.items() if not any(grade > 0 for grade in docs.values())]


def warn_unjudged(qrels: dict[str, dict[str, int]]) -> None:
    """Queries whose judgements are all grade 0 score 0 on every metric: say so instead of lowering means silently."""
    empty = queries_without_relevant(qrels)
    if empty:
        shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        logger.warning(
            "Warning: %d of %d queries have no relevant (grade > 0) document and score 0 on every metric: %s",
            len(empty),
            len(qrels),
            shown,
        )


# --- stages of run -----------------------------------------------------------------------------------------------


@dataclass
class DenseSystem:
    """One dense system: its encoder, its corpus embeddings and (once encoded) its query embeddings."""

    encoder: DenseEncoder
    documents: Any  # a CachedMatrix: corpus rows read from the cache a block at a time, never all held
    queries: Any = None
    index: Any = None  # the FAISS index over ``documents`` (--search faiss), built once for all query batches


def _search(prepared: Prepared, queries: Any, system: DenseSystem) -> tuple[Any, Any]:
    config = prepared.config
    if config.search == "faiss":
        if system.index is None:
            system.index = build_index(system.documents, prepared.score, config.faiss_index, config.doc_chunk)
        return search_index(system.index, queries, config.depth, prepared.score)
    return exact_search(
        queries, system.documents, config.depth, prepared.score, config.query_chunk, config.doc_chunk, config.progress
    )


def embed_corpus(prepared: Prepared, cache: EmbeddingCache) -> tuple[dict[str, DenseSystem], str | None]:
    """The corpus through the bare encoder and, when the model moves documents too, through the trained model.

    Both are views over the cache (``CachedMatrix``), read a block at a time by search and pair scoring."""
    config, doc_texts = prepared.config, list(prepared.data.corpus.values())
    bare = DenseEncoder(bare_encoder(prepared.model), cache, config.batch_size)
    bare_docs = bare.document_rows(doc_texts, config.document_prompt, "Corpus", config.doc_chunk)
    systems = {"bare_encoder": DenseSystem(bare, bare_docs)}
    if not has_head(prepared.model):
        return systems, None
    trained = DenseEncoder(prepared.model, cache, config.batch_size)
    if documents_shared(prepared.model, trained, bare, doc_texts[:16], config.document_prompt):
        note, docs = "query-only head: document embeddings shared with the bare encoder (not re-embedded)", bare_docs
    else:
        placement = ModelLayout.of(prepared.model).placement
        routes = "query and document heads" if placement == "routes" else f"{placement} head"
        note = f"{routes}: corpus embedded through the document side of the model"
        docs = trained.document_rows(doc_texts, config.document_prompt, "Corpus (trained)", config.doc_chunk)
    return {"trained": DenseSystem(trained, docs), **systems}, note


def embed_queries(prepared: Prepared, dense: dict[str, DenseSystem]) -> None:
    """Every test query through every dense system (queries x dim: small next to the runs)."""
    texts = list(prepared.data.queries.values())
    for system in dense.values():
        system.queries = system.encoder.encode(texts, "query", prepared.config.query_prompt, "Queries")


def fusion_settings(prepared: Prepared, reference: str, dense: dict[str, DenseSystem], bm25: BM25) -> dict[str, Any]:
    """How the hybrid fuses, and where its convex weight came from (flag > dev split > hybrid.json; else RRF)."""
    config, fused = prepared.config, [reference, "bm25"]
    if prepared.fusion == "rrf":
        return {
            "method": "rrf",
            "k": config.rrf_k,
            "fused": fused,
            "why": "no dev split and no hybrid.json to give a convex weight",
        }

    def convex_settings(how: str, **rest: Any) -> dict[str, Any]:
        return {"method": f"convex {how}", "normalisation": how, "fused": fused, **rest}

    if config.fusion_weight is not None:
        how = config.fusion_normalisation or "min-max"
        return convex_settings(
            how, dense_weight=config.fusion_weight, weight_from="--fusion-weight on the command line"
        )
    if prepared.dev is not None:
        dev, system = prepared.dev, dense[reference]
        queries = system.encoder.encode(list(dev.queries.values()), "query", config.query_prompt, "Dev queries")
        dense_run = to_run(list(dev.queries), list(prepared.data.corpus), *_search(prepared, queries, system))
        how, weight, curves = choose_fusion(
            dense_run, bm25.search(dev.queries, config.depth), dev.qrels, normalisation=config.fusion_normalisation
        )
        chosen_on = f"{dev.name} [{prepared.dev_split}] ({len(dev.qrels)} queries)"
        return convex_settings(
            how,
            dense_weight=weight,
            weight_from=f"chosen on the data's dev split {chosen_on}",
            chosen_on=chosen_on,
            **{f"dev_{MAIN_METRIC}_by_weight": curves[how], f"dev_{MAIN_METRIC}_by_normalisation": curves},
        )
    hybrid = prepared.hybrid_file
    how = config.fusion_normalisation or hybrid.get("normalisation", "min-max")
    where = f"the model's {HYBRID_FILE} ({hybrid.get('source', 'no source given')}"
    where += (
        f", dev {MAIN_METRIC} {hybrid['dev_ndcg@10']:.4f})"
        if isinstance(hybrid.get("dev_ndcg@10"), (int, float))
        else ")"
    )
    return convex_settings(how, dense_weight=hybrid["dense_weight"], weight_from=where, hybrid_file=hybrid)


def score_queries(
    prepared: Prepared,
    reference: str,
    dense: dict[str, DenseSystem],
    bm25: BM25 | None,
    fusion: dict[str, Any] | None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Per-query metrics of every system (dense only without ``bm25``).

    Each pass over a corpus searches ``search_batch`` queries (their top-k hits held as tensors); runs, fusion and
    metrics then take ``query_batch`` of them at a time, so only one batch's runs (dicts) are ever held."""
    config, data = prepared.config, prepared.data
    doc_ids, query_ids = list(data.corpus), list(data.queries)
    names = [*dense, "bm25", "hybrid"] if bm25 is not None else [*dense]
    per_query: dict[str, dict[str, dict[str, float]]] = {name: {} for name in names}
    for block in range(0, len(query_ids), config.search_batch):
        count = min(config.search_batch, len(query_ids) - block)
        hits = {
            name: _search(prepared, system.queries[block : block + count], system) for name, system in dense.items()
        }
        for start in range(block, block + count, config.query_batch):
            ids = query_ids[start : min(start + config.query_batch, block + count)]
            rows = slice(start - block, start - block + len(ids))
            qrels = {qid: data.qrels[qid] for qid in ids}
            runs = {name: to_run(ids, doc_ids, scores[rows], indices[rows]) for name, (scores, indices) in hits.items()}
            if bm25 is not None:
                runs["bm25"] = bm25.search({qid: data.queries[qid] for qid in ids}, config.depth)
                if fusion["method"] == "rrf":
                    runs["hybrid"] = rrf([runs[reference], runs["bm25"]], config.rrf_k, config.depth)
                else:
                    runs["hybrid"] = convex(
                        runs[reference], runs["bm25"], fusion["dense_weight"], config.depth, fusion["normalisation"]
                    )
            for name, system_run in runs.items():
                per_query[name].update(per_query_metrics(qrels, system_run))
            logger.debug("scored queries %d-%d of %d", start + 1, start + len(ids), len(query_ids))
        del hits
    order = list(data.qrels)
    return {name: {qid: values[qid] for qid in order} for name, values in per_query.items()}


def summarise_systems(
    per_query: dict[str, dict[str, dict[str, float]]],
    slices: dict[str, list[str]],
    reference: str,
    config: EvaluationConfig,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float | None]]]:
    """Mean metrics per system and slice, and each system's p-value against the reference per slice."""
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
        for other in per_query
        if other != reference
    }
    return systems, p_values


def score_samples(prepared: Prepared, dense: dict[str, DenseSystem]) -> dict[str, tuple[Any, Any]]:
    """Relevant and random non-relevant pair scores per dense system (the score-distribution plot and gap)."""
    config, data = prepared.config, prepared.data
    doc_index = {doc: i for i, doc in enumerate(data.corpus)}
    return {
        name: pair_scores(
            system.queries,
            system.documents,
            list(data.queries),
            doc_index,
            data.qrels,
            prepared.score,
            config.negatives_per_query,
            config.seed,
        )
        for name, system in dense.items()
    }


def run(prepared: Prepared, started: float | None = None) -> tuple[EvaluationResults, dict[str, tuple[Any, Any]]]:
    """Score every system on every slice with p-values; returns the results and the pair-score samples to plot.

    No file is written here (see ``write_plots``)."""
    started = time.perf_counter() if started is None else started
    config, data = prepared.config, prepared.data
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    cache = EmbeddingCache(
        prefix_model(prepared.model),
        root=config.cache_dir,
        storage=config.cache_storage,
        batch_size=config.batch_size,
        show_progress_bar=config.progress,
    )
    dense, documents_note = embed_corpus(prepared, cache)
    embed_queries(prepared, dense)
    reference = "trained" if "trained" in dense else "bare_encoder"
    timings["dense_s"], clock = time.perf_counter() - clock, time.perf_counter()

    logger.info("BM25 (k1=%s, b=%s): indexing %d documents", config.bm25.k1, config.bm25.b, len(data.corpus))
    bm25 = BM25(data.corpus, config.bm25, progress=config.progress)
    fusion = fusion_settings(prepared, reference, dense, bm25)
    timings["bm25_s"], clock = time.perf_counter() - clock, time.perf_counter()

    logger.info(
        "Scoring %d queries x %d documents, top %d, %d queries at a time",
        len(data.queries),
        len(data.corpus),
        config.depth,
        config.query_batch,
    )
    per_query = score_queries(prepared, reference, dense, bm25, fusion)
    slices = seen_unseen(data.qrels, prepared.train_qrels)
    systems, p_values = summarise_systems(per_query, slices, reference, config)
    samples = score_samples(prepared, dense)
    timings["metrics_s"] = time.perf_counter() - clock

    slice_of_query = {qid: name for name in SLICES[1:] for qid in slices.get(name, [])}
    return EvaluationResults(
        dataset=DatasetInfo(
            source=str(config.data),
            name=data.name,
            split=config.split,
            queries=len(data.queries),
            documents=len(data.corpus),
            judgements=sum(len(docs) for docs in data.qrels.values()),
            train_qrels=prepared.train_source,
            queries_without_relevant=queries_without_relevant(data.qrels),
        ),
        model=ModelInfo(
            source=config.model or encoder_display_name(None),
            has_head="trained" in dense,
            similarity=prepared.score,
            documents=documents_note,
        ),
        settings=_settings(prepared, reference, fusion),
        slices={name: len(qids) for name, qids in slices.items()},
        systems=systems,
        p_values=PValues(reference=reference, metric=MAIN_METRIC, vs=p_values),
        score_distributions={name: summarise(*pair) for name, pair in samples.items()},
        per_query=per_query,
        slice_of_query=slice_of_query,
        encoder_calls=cache.encoded_texts,
        timings_s=timings,
        wall_time_s=time.perf_counter() - started,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    ), samples


def _settings(prepared: Prepared, reference: str, fusion: dict[str, Any]) -> dict[str, Any]:
    config = prepared.config
    return {
        **{key: value for key, value in asdict(config).items() if key not in ("bm25", "progress")},
        "train_split": prepared.train_split,  # as resolved ("auto" -> the split used, or None)
        "dev_split": prepared.dev_split,
        "bm25": config.bm25.describe(),
        "fusion": fusion,
        "significance": {
            "test": significance.DESCRIPTION,
            "metric": MAIN_METRIC,
            "reference": reference,
            "resamples": config.resamples,
            "seed": config.seed,
            "too_few_queries": "a slice with fewer than two queries gets no p-value (null)",
        },
        "slices": DEFINITION if prepared.train_qrels is not None else "no train qrels: no slices",
        "metrics": "trec_eval via pytrec_eval; MRR@10 = recip_rank on the run cut at 10",
    }


def write_plots(results: EvaluationResults, samples: dict[str, tuple[Any, Any]], output_dir: Path) -> list[str]:
    """The score-distribution and per-query change plots; call after the JSON is written."""
    stem = f"{results.dataset.name}-{results.dataset.split}"
    reference = results.p_values.reference
    plots = [
        plot_score_distributions(
            {n: samples[n] for n in ("bare_encoder", "trained") if n in samples},
            output_dir / f"{stem}-scores.png",
            results.model.similarity,
        )
    ]
    after, before = (reference, "bare_encoder") if reference == "trained" else ("bare_encoder", "bm25")
    plots.append(
        plot_metric_change(
            {q: v[MAIN_METRIC] for q, v in results.per_query[after].items()},
            {q: v[MAIN_METRIC] for q, v in results.per_query[before].items()},
            (after, before),
            output_dir / f"{stem}-ndcg10-change.png",
        )
    )
    results.plots = [str(path) for path in plots]
    return results.plots
