"""The results as a markdown table (stdout, model card) and as a JSON file (every number, every query)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modeling.evaluation.metrics import METRICS

SYSTEM_ORDER = ("trained", "base", "bm25", "hybrid")
SHORT = {"Recall@10": "R@10", "Recall@100": "R@100", "Recall@1000": "R@1000"}


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def markdown_table(results: dict[str, Any]) -> str:
    """One row per (slice, system); the p column tests each system against the reference on per-query nDCG@10."""
    reference = results["p_values"]["reference"]
    names = [name for name in SYSTEM_ORDER if name in results["systems"]]
    header = [
        "slice",
        "system",
        "queries",
        "nDCG@10",
        f"p vs {reference}",
        *[SHORT.get(m, m) for m in METRICS if m != "nDCG@10"],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for slice_name, count in results["slices"].items():
        for name in names:
            values = results["systems"][name][slice_name]
            p = "(reference)" if name == reference else _p(results["p_values"]["vs"][name][slice_name])
            row = [
                slice_name,
                name,
                str(count),
                _number(values["nDCG@10"]),
                p,
                *[_number(values[m]) for m in METRICS if m != "nDCG@10"],
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def notes(results: dict[str, Any]) -> list[str]:
    """The settings a reader needs to trust the table, one line each."""
    settings = results["settings"]
    bm25, fusion, test = settings["bm25"], settings["fusion"], settings["significance"]
    lines = [
        f"BM25: {bm25['library']}, k1={bm25['k1']}, b={bm25['b']}, {bm25['method']} scoring, "
        f"stopwords={bm25['stopwords']}, stemmer={bm25['stemmer']} (Snowball).",
    ]
    if fusion["method"] == "rrf":
        lines.append(
            f"hybrid: reciprocal rank fusion (k={fusion['k']}) of {' + '.join(fusion['fused'])}; {fusion['why']}."
        )
    else:
        where = f"chosen on {fusion['chosen_on']}" if fusion.get("chosen_on") else fusion["why"]
        lines.append(
            f"hybrid: convex fusion of min-max scores, {fusion['fused'][0]} weight {fusion['dense_weight']} ({where})."
        )
    lines.append(
        f"p: {test['test']} on per-query {test['metric']}, each system vs {test['reference']}, "
        f"{test['resamples']} resamples, seed {test['seed']}."
    )
    if results["dataset"]["train_qrels"]:
        lines.append(f"slices ({results['dataset']['train_qrels']}): {settings['slices']}.")
    gaps = {
        name: summary["gap"] for name, summary in results["score_distributions"].items() if summary["gap"] is not None
    }
    if gaps:
        lines.append(
            "score gap (mean relevant - mean random non-relevant "
            f"{results['model']['similarity']}): " + ", ".join(f"{name} {gap:.3f}" for name, gap in gaps.items()) + "."
        )
    if results["model"].get("documents"):
        lines.append(f"trained documents: {results['model']['documents']}.")
    return lines


def render(results: dict[str, Any]) -> str:
    data = results["dataset"]
    title = (
        f"### Retrieval: {results['model']['source']} on {data['name']} ({data['split']}), "
        f"{data['queries']} queries, {data['documents']} documents"
    )
    return "\n".join([title, "", markdown_table(results), "", *[f"- {line}" for line in notes(results)]]) + "\n"


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    return path
