"""Distillation variants on saved teachers: each epoch of a reduced student scored on outer dev queries, in seconds.

    python benchmarks/student_variants.py --study runs/outer --teachers runs/teachers --variants default pca-start

A full ``quality_study.py --dev-only`` run of the ``--out-dim`` default trains five teachers and chooses the student's
epoch on inner dev: about 2 minutes per carve, and the epoch choice adds noise of its own. This script holds the
teacher fixed (the full-width model a ``quality_study.py --variants average5 --dev-only ...`` run saved under
``--teachers``, the student's own teacher: mean of 5 runs, no anchor), distils it into 128-d students on the outer
carve's training queries and pseudo-queries with each variant's constants and several seeds, and scores every epoch
on that carve's dev queries (all, and the by-document half). Variants are compared by their mean over epochs and
seeds, not by one chosen epoch; a variant that leads here is then checked through ``quality_study.py`` (what
ships). It reads ``STUDY/outer-K`` (the BEIR folders ``--dev-only`` writes), never the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F
from torch import nn

from modeling.cache.cached_input import prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.data.ir_data import load_ir_data
from modeling.evaluation.metrics import MAIN_METRIC, mean_metrics, per_query_metrics
from modeling.evaluation.search import exact_search, to_run
from modeling.evaluation.slices import seen_unseen
from modeling.evaluation.systems import load_model
from modeling.model.layout import ModelLayout
from modeling.model.projection_head import ProjectionHead
from modeling.training.distill import PseudoQueries, distill, embed, start_at_teacher
from modeling.training.pseudo_queries import pseudo_queries

# name -> how it differs from the default: "start" of the query map ("teacher": the teacher projected by PCA, the
# default; "pca": as the documents), "scorer" of the pseudo-queries ("bare", the default; "mix": bare + teacher),
# "pseudo_weight" (3) and "pseudo_batch" (256), and distill() keyword arguments (scale, weight_decay)
VARIANTS: dict[str, dict] = {
    "default": {},
    "pca-start": {"start": "pca"},  # the default before this round
    "pseudo-batch1024": {"start": "pca", "pseudo_batch": 1024},
    "mix-scored": {"start": "pca", "scorer": "mix"},
    "scale10": {"start": "pca", "scale": 10.0},
    "scale40": {"start": "pca", "scale": 40.0},
    "decay1": {"weight_decay": 1.0},
    "decay10": {"weight_decay": 10.0},
    "pseudo1": {"pseudo_weight": 1.0},
    "pseudo6": {"pseudo_weight": 6.0},
}
EPOCHS = 20


def outer_carve(study: Path, teachers: Path, outer: int, teacher_variant: str) -> dict:
    """Cached pre-head embeddings, the teacher and the dev slices of one outer carve."""
    folder = study / f"outer-{outer}"
    dev, train = load_ir_data(folder, "test"), load_ir_data(folder, "train")
    model = load_model(str(teachers / f"outer-{outer}-runs" / teacher_variant / "seed-0"), trust_remote_code=True)
    head = ModelLayout.of(model).head.eval().requires_grad_(False)
    cache = EmbeddingCache(prefix_model(model), show_progress_bar=False)
    doc_ids = list(dev.corpus)
    texts = [dev.corpus[d] for d in doc_ids]
    positives = [train.queries[q] for q, docs in train.qrels.items() if any(g > 0 for g in docs.values())]
    return {
        "documents": cache.get(texts),
        "doc_ids": doc_ids,
        "queries": cache.get(list(dict.fromkeys(positives))),
        "dev_ids": list(dev.qrels),
        "dev_queries": cache.get([dev.queries[q] for q in dev.qrels]),
        "qrels": dev.qrels,
        "slices": seen_unseen(dev.qrels, train.qrels),
        "pseudo": cache.get(pseudo_queries(texts, 50_000)),
        "teacher": lambda x: head({"sentence_embedding": x})["sentence_embedding"],
    }


def slices(carve: dict, queries: torch.Tensor, documents: torch.Tensor) -> dict[str, float]:
    run = to_run(carve["dev_ids"], carve["doc_ids"], *exact_search(queries, documents, 100))
    per_query = per_query_metrics(carve["qrels"], run)
    return {name: mean_metrics(per_query, ids)[MAIN_METRIC] for name, ids in carve["slices"].items()}


def curve(carve: dict, variant: str, seed: int, out_dim: int) -> list[dict[str, float]]:
    """The student's outer-dev slices after each epoch (index 0: epoch 1)."""
    options = dict(VARIANTS[variant])
    start, scorer = options.pop("start", "teacher"), options.pop("scorer", "bare")
    pseudo_weight, pseudo_batch = options.pop("pseudo_weight", 3.0), options.pop("pseudo_batch", 256)
    query_map = ProjectionHead(carve["documents"].shape[1], out_dim, init="pca").fit_pca(carve["documents"])
    document_map = ProjectionHead(carve["documents"].shape[1], out_dim, init="pca").fit_pca(carve["documents"])
    maps = nn.ModuleDict({"query": query_map, "document": document_map})
    if start == "teacher":
        start_at_teacher(query_map, document_map, carve["teacher"], torch.cat([carve["queries"], carve["pseudo"]]))
    teacher = carve["teacher"]
    scorers = {"bare": lambda x: x, "mix": lambda x: F.normalize(x, dim=-1) + F.normalize(teacher(x), dim=-1)}
    pseudo = PseudoQueries(carve["pseudo"], scorers[scorer], pseudo_batch, pseudo_weight)
    result = distill(maps, query_map, document_map, carve["teacher"], carve["queries"], carve["documents"], EPOCHS,
                     seed=seed, pseudo=pseudo, **options)  # fmt: skip
    scores = []
    for state in result.states:
        maps.load_state_dict(state)
        with torch.no_grad():
            scores.append(
                slices(carve, embed(query_map, carve["dev_queries"]), embed(document_map, carve["documents"]))
            )
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="a quality_study.py --dev-only output (its outer-K folders)")
    parser.add_argument("--teachers", required=True, help="a quality_study.py --dev-only output with the teachers")
    parser.add_argument("--teacher-variant", default="average5")
    parser.add_argument("--outer", nargs="+", type=int, default=[100, 101, 102])
    parser.add_argument("--variants", nargs="+", default=["default", "pca-start"], choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out-dim", type=int, default=128)
    parser.add_argument("--output", help="write every curve here (JSON)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    curves: dict[str, list[list[dict]]] = {name: [] for name in args.variants}
    for outer in args.outer:
        carve = outer_carve(Path(args.study), Path(args.teachers), outer, args.teacher_variant)
        with torch.no_grad():
            bare = slices(carve, carve["dev_queries"], carve["documents"])
        print(f"outer {outer}: bare encoder all {bare['all']:.4f}, by-document half {bare['unseen']:.4f}", flush=True)
        for name in args.variants:
            for seed in args.seeds:
                curves[name].append(curve(carve, name, seed, args.out_dim))
                print(f"  {name} seed {seed}: epoch 20 {curves[name][-1][-1]['all']:.4f}", flush=True)
    print(f"\nMean over {len(args.outer)} outer carves x {len(args.seeds)} seeds, dev all / by-document half:\n")
    print("| variant | epochs 6-10 | epochs 11-15 | epochs 16-20 |\n|---|---|---|---|")
    for name, runs in curves.items():
        cells = []
        for low, high in ((5, 10), (10, 15), (15, 20)):
            mean = {s: statistics.fmean(r[e][s] for r in runs for e in range(low, high)) for s in ("all", "unseen")}
            cells.append(f"{mean['all']:.4f} / {mean['unseen']:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.output:
        Path(args.output).write_text(json.dumps(curves, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
