"""The results as a markdown table (stdout, model card) and as a JSON file (every number, every query)."""

from __future__ import annotations

from typing import Any

from modeling.evaluation.formatting import fmt, fmt_p, why_no_p
from modeling.evaluation.metric_names import MAIN_METRIC, METRICS, SHORT

SYSTEM_ORDER = ("trained", "bare_encoder", "bm25", "hybrid")


def markdown_table(results: dict[str, Any]) -> str:
    """One row per (slice, system); the p column tests each system against the reference on per-query nDCG@10."""
    reference = results["p_values"]["reference"]
    names = [name for name in SYSTEM_ORDER if name in results["systems"]]
    header = [
        "slice",
        "system",
        "queries",
        SHORT[MAIN_METRIC],
        f"p vs {reference}",
        *[SHORT[m] for m in METRICS if m != MAIN_METRIC],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for slice_name, count in results["slices"].items():
        for name in names:
            values = results["systems"][name][slice_name]
            p = (
                "(reference)"
                if name == reference
                else fmt_p(results["p_values"]["vs"][name][slice_name], why_no_p(count))
            )
            row = [
                slice_name,
                name,
                str(count),
                fmt(values[MAIN_METRIC]),
                p,
                *[fmt(values[m]) for m in METRICS if m != MAIN_METRIC],
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def notes(results: dict[str, Any]) -> list[str]:
    """The settings a reader needs to trust the table, one line each."""
    settings = results["settings"]
    bm25, fusion, test = settings["bm25"], settings["fusion"], settings["significance"]
    lines = [
        (
            f"BM25: {bm25['library']}, k1={bm25['k1']}, b={bm25['b']}, {bm25['method']} scoring, "
            f"stopwords={bm25['stopwords']}, stemmer={bm25['stemmer']} (Snowball)."
        ),
    ]
    if fusion["method"] == "rrf":
        lines.append(
            f"hybrid: reciprocal rank fusion (k={fusion['k']}) of {' + '.join(fusion['fused'])}; {fusion['why']}."
        )
    else:
        where = fusion["weight_from"]
        lines.append(
            f"hybrid: convex fusion of {fusion.get('normalisation', 'min-max')} scores, {fusion['fused'][0]} weight {fusion['dense_weight']} ({where})."
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
    unjudged = results["dataset"].get("queries_without_relevant") or []
    if unjudged:
        lines.append(f"{len(unjudged)} queries have no relevant document (all grade 0) and score 0 on every metric.")
    if any(count < 2 for count in results["slices"].values()):
        lines.append("p: n/a for a slice of fewer than two queries (a paired test needs two).")
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
