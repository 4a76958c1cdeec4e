"""Write the evaluation (trained vs bare encoder vs BM25) into a saved model's card.

``evaluate.py --card`` calls ``add_evaluation`` after training, when the numbers exist: it rewrites
only the block between the card's evaluation markers and the matching ``model-index`` entries, so
running it again replaces the previous evaluation instead of appending a second one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard

from model_card.card_data import EVALUATION_END, EVALUATION_START, SUMMARY_END, SUMMARY_START
from modeling.evaluation import metric_names
from modeling.evaluation.formatting import fmt as _fmt
from modeling.evaluation.formatting import fmt_delta as _delta
from modeling.evaluation.formatting import fmt_p, why_no_p
from modeling.evaluation.formatting import number as _number

SYSTEMS = {"trained": "This model", "base": "Base encoder", "bm25": "BM25", "hybrid": "Hybrid"}
SHORT = {"base": "base", "bm25": "BM25", "hybrid": "hybrid"}
# model-index metric type (lower case, the Hub's convention) -> display name; the list itself is metric_names'.
METRICS = {name.lower(): name for name in metric_names.METRICS}
SLICES = {"all": "All", "seen": "Seen", "unseen": "Unseen"}
MAIN_METRIC = metric_names.MAIN_METRIC.lower()
ALPHA = 0.05
FEW_QUERIES = 30  # a slice smaller than this is reported, with a warning that it cannot settle anything
TASK_TYPE, TASK_NAME = "information-retrieval", "Information Retrieval"
PLOTS_DIR = "evaluation"
_INSERT_BEFORE = ("## Limitations", "## Bias, Risks and Limitations", "## Training Details")


def add_evaluation(model_dir: str | Path, results: dict[str, Any], plots: Iterable[str | Path] = ()) -> Path:
    """Put ``results`` (see ``render_section``) and ``plots`` into ``<model_dir>/README.md``; returns its path.

    Plots are copied into ``<model_dir>/evaluation/`` unless already there. The card's YAML
    ``model-index`` gets this model's scores on all queries, replacing earlier ones for the same
    dataset and split. Idempotent: the same call twice leaves the same README.
    """
    model_dir = Path(model_dir)
    readme = model_dir / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(
            f"{readme} does not exist: save the model (which writes its card) before adding the evaluation."
        )
    trained = _slices((results.get("systems") or {}).get("trained"))
    if not trained.get("all"):
        raise ValueError("results['systems']['trained']['all'] is missing: there is no score of this model to report.")
    plot_paths = copy_plots(model_dir, plots)
    card = ModelCard.load(readme)
    card.text = replace_section(card.text, render_section(results, plot_paths))
    card.text = replace_block(card.text, SUMMARY_START, SUMMARY_END, render_summary(results))
    update_model_index(card, results, fallback_name=_title(card.text) or model_dir.name)
    card.save(readme)
    return readme


def render_section(results: dict[str, Any], plot_paths: Iterable[str] = ()) -> str:
    """The markdown between the markers.

    ``results``: ``{"dataset", "split", "systems": {system: {slice: {metric: value, "num_queries": n}}},
    "p_values": {system: {slice: p}}}``; optional ``"p_value_test"`` (how p was computed) and
    ``"p_value_metric"`` (default nDCG@10). Missing systems, slices and metrics are left out; unknown keys are ignored.
    """
    systems = {name: _slices(value) for name, value in (results.get("systems") or {}).items() if name in SYSTEMS}
    p_values = results.get("p_values") or {}
    others = [name for name in SYSTEMS if name != "trained" and systems.get(name, {}).get("all")]
    dataset, split = results.get("dataset", "unknown dataset"), results.get("split", "test")
    trained_all = systems["trained"]["all"]
    metrics = [m for m in METRICS if _number(trained_all.get(m)) is not None]
    p_metric = metric_names.canonical(results.get("p_value_metric", MAIN_METRIC))
    test = results.get("p_value_test", "paired test over queries")
    n = trained_all.get("num_queries")

    lines = [
        "## Evaluation",
        "",
        (f"Retrieval on **{dataset}** (`{split}` split{f', {n:,} queries' if isinstance(n, int) else ''}): "
        f"this model against {_join([_describe(name, results) for name in others]) or 'nothing else'}. "
        "Δ = this model − the other system."),
        "",
    ]
    header = ["Metric", SYSTEMS["trained"]] + [col for name in others for col in (SYSTEMS[name], f"Δ vs {SHORT[name]}")]
    lines += _table_header(header)
    for metric in metrics:
        mine = _number(trained_all.get(metric))
        row = [METRICS[metric], f"**{_fmt(mine)}**"]
        for name in others:
            theirs = _number(systems[name]["all"].get(metric))
            row += [_fmt(theirs), _delta(mine, theirs)]
        lines.append(_row(row))
    if p_values:
        lines.append(
            _row([f"p ({p_metric})", ""] + [col for name in others for col in ("", _p(p_values, name, "all"))])
        )
        lines += ["", f"p: {test} on per-query {p_metric}; below {ALPHA}, the difference is unlikely to be chance."]

    sliced = [s for s in ("seen", "unseen") if _number((systems["trained"].get(s) or {}).get(MAIN_METRIC)) is not None]
    empty = [s for s in ("seen", "unseen") if s in systems["trained"] and s not in sliced]
    if sliced:
        lines += ["", "### Seen vs unseen documents", ""]
        lines.append(
            f"{METRICS[MAIN_METRIC]} per slice of the queries. *Seen*: at least one relevant document of the query was a "
            "positive in the training pairs; *unseen*: none was. The head can learn which documents tend to be relevant, "
            "so the unseen slice is the fairer test of a corpus of new documents."
        )
        lines.append("")
        p_column = ("p",) if p_values else ()
        header = ["Queries", "n", SYSTEMS["trained"]] + [
            col for name in others for col in (SYSTEMS[name], f"Δ vs {SHORT[name]}", *p_column)
        ]
        lines += _table_header(header)
        for slice_name in ["all", *sliced]:
            mine_slice = systems["trained"].get(slice_name) or {}
            mine = _number(mine_slice.get(MAIN_METRIC))
            count = mine_slice.get("num_queries")
            row = [SLICES[slice_name], f"{count:,}" if isinstance(count, int) else "", f"**{_fmt(mine)}**"]
            for name in others:
                theirs = _number((systems[name].get(slice_name) or {}).get(MAIN_METRIC))
                row += [_fmt(theirs), _delta(mine, theirs)] + (
                    [_p(p_values, name, slice_name, count)] if p_values else []
                )
            lines.append(_row(row))
        if empty:
            lines += ["", f"No query falls in the {_join(empty)} slice."]

    reading = _reading(systems, p_values)
    if reading:
        lines += ["", "**Reading the numbers**", ""] + [f"- {sentence}" for sentence in reading]
    plot_paths = list(plot_paths)
    if plot_paths:
        lines += ["", "### Plots", ""]
        for path in plot_paths:
            lines += [f"![{Path(path).stem.replace('_', ' ').replace('-', ' ')}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"


def from_results(results: dict[str, Any]) -> dict[str, Any]:
    """evaluate's results (``modeling.evaluation.results_schema``) in the shape ``render_section`` reads."""
    counts = results["slices"]
    card_name = {"bare_encoder": "base"}  # the card's column key for the bare encoder
    systems = {
        card_name.get(name, name): {
            slice_name: {**values, "num_queries": counts[slice_name]} for slice_name, values in slices.items()
        }
        for name, slices in results["systems"].items()
    }
    significance = results["settings"]["significance"]
    return {
        "dataset": results["dataset"]["name"],
        "split": results["dataset"]["split"],
        "systems": systems,
        "p_values": {card_name.get(name, name): p for name, p in results["p_values"]["vs"].items()},
        "p_value_test": f"{significance['test']}, {significance['resamples']} resamples",
        "p_value_metric": significance["metric"],
        "hybrid_description": hybrid_description(results["settings"]["fusion"]),
    }


def hybrid_description(fusion: dict[str, Any]) -> str:
    """One phrase for how the hybrid was fused and where its weight came from."""
    if fusion.get("method") == "rrf":
        return f"reciprocal rank fusion (k={fusion.get('k')}) of this model and BM25 ({fusion.get('why', '')})"
    return (
        f"convex fusion of {fusion.get('normalisation', 'min-max')} normalised scores, weight {fusion.get('dense_weight')} on this model "
        f"({fusion.get('weight_from') or 'given on the command line'})"
    )


def replace_section(text: str, section: str) -> str:
    """``text`` with the block between the evaluation markers replaced (inserted if the card has none)."""
    return replace_block(text, EVALUATION_START, EVALUATION_END, section, insert_before=_INSERT_BEFORE)


def replace_block(
    text: str, start_marker: str, end_marker: str, content: str, insert_before: tuple[str, ...] = ()
) -> str:
    """Replace what lies between two markers; without them, insert before the first of ``insert_before`` (or not at all)."""
    block = f"{start_marker}\n{content.strip()}\n{end_marker}" if content.strip() else f"{start_marker}\n{end_marker}"
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end > start:
        return text[:start] + block + text[end + len(end_marker) :]
    if not insert_before:
        return text
    for heading in insert_before:
        at = text.find(f"\n{heading}\n")
        if at != -1:
            return text[: at + 1] + block + "\n\n" + text[at + 1 :]
    return text.rstrip() + "\n\n" + block + "\n"


def render_summary(results: dict[str, Any]) -> str:
    """Two sentences for the top of the card: the main number against each system, and the seen/unseen caveat."""
    systems = {name: _slices(value) for name, value in (results.get("systems") or {}).items() if name in SYSTEMS}
    mine = systems["trained"]
    value = _number(mine["all"].get(MAIN_METRIC))
    if value is None:
        return ""
    label, n = METRICS[MAIN_METRIC], mine["all"].get("num_queries")
    where = f"{results.get('dataset', 'the test set')}, {results.get('split', 'test')} split" + (
        f", {n:,} queries" if isinstance(n, int) else ""
    )
    against = [
        f"{_fmt(_number(systems[name]['all'].get(MAIN_METRIC)))} for {SYSTEMS[name] if name == 'bm25' else _describe(name, {})}"
        for name in ("base", "bm25", "hybrid")
        if _number((systems.get(name, {}).get("all") or {}).get(MAIN_METRIC)) is not None
    ]
    text = (
        f"**Evaluation at a glance** ({where}): {label} **{value:.4f}**"
        + (f" against {_join(against)}" if against else "")
        + f" ({label} scores the top 10 results; 1 is a perfect ranking)."
    )
    caveat = _slice_caveat(systems, results.get("p_values") or {})
    return f"> {text}{' ' + caveat if caveat else ''} Details in [Evaluation](#evaluation)."


def update_model_index(card: ModelCard, results: dict[str, Any], fallback_name: str) -> None:
    """Replace this dataset/split's information-retrieval entries in the card's ``model-index``."""
    dataset, split = str(results.get("dataset", "unknown")), str(results.get("split", "test"))
    trained_all = _slices((results.get("systems") or {}).get("trained")).get("all") or {}
    kept = [
        result
        for result in (card.data.eval_results or [])
        if not (result.task_type == TASK_TYPE and result.dataset_type == dataset and result.dataset_split == split)
    ]
    new = [
        EvalResult(
            task_type=TASK_TYPE,
            task_name=TASK_NAME,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=metric,
            metric_name=label,
            metric_value=round(value, 6),
        )
        for metric, label in METRICS.items()
        if (value := _number(trained_all.get(metric))) is not None
    ]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or fallback_name


def copy_plots(model_dir: Path, plots: Iterable[str | Path]) -> list[str]:
    """Copy plots into ``<model_dir>/evaluation/``; return their paths relative to the model folder."""
    target = model_dir / PLOTS_DIR
    relative = []
    for plot in plots:
        plot = Path(plot)
        if not plot.is_file():
            raise FileNotFoundError(f"Plot {plot} does not exist.")
        destination = target / plot.name
        if plot.resolve() != destination.resolve():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plot, destination)
        relative.append(f"{PLOTS_DIR}/{plot.name}")
    return relative


def _reading(systems: dict[str, dict], p_values: dict) -> list[str]:
    """Sentences that say what the tables mean, each computed from them; no claim beyond what the numbers and p support."""
    sentences = []
    base, mine, label = systems.get("base", {}), systems["trained"], METRICS[MAIN_METRIC]
    overall = _diff(mine.get("all"), base.get("all"))
    if overall is not None:
        sentences.append(
            f"All queries: {label} {overall:+.4f} against the base encoder ({_p_phrase(p_values, 'base', 'all')}), "
            f"{_verdict(overall, p_values, 'base', 'all')}."
        )
    caveat = _slice_caveat(systems, p_values)
    if caveat:
        sentences.append(caveat)
    seen, unseen = _diff(mine.get("seen"), base.get("seen")), _diff(mine.get("unseen"), base.get("unseen"))
    if seen is not None and unseen is not None:
        sentence = (
            f"Against the base encoder: {seen:+.4f} on queries with documents seen in training; {unseen:+.4f} on queries "
            f"with unseen documents ({_p_phrase(p_values, 'base', 'unseen')}), {_verdict(unseen, p_values, 'base', 'unseen')}."
        )
        if seen > 0 and seen >= 2 * max(unseen, 0):
            sentence += " Most of the gain is on documents seen in training: for a corpus of new documents, expect the unseen figure."
        sentences.append(sentence)
    for name in ("bm25", "hybrid"):
        versus = _diff(mine.get("all"), systems.get(name, {}).get("all"))
        if versus is not None:
            sentences.append(
                f"All queries: {label} {versus:+.4f} against {'BM25' if name == 'bm25' else 'the hybrid'} "
                f"({_p_phrase(p_values, name, 'all')}), {_verdict(versus, p_values, name, 'all')}."
            )
    return sentences


def _slice_caveat(systems: dict[str, dict], p_values: dict) -> str:
    """How many queries are in each slice, and whether the unseen slice can say anything."""
    mine = systems["trained"]
    counts = {name: (mine.get(name) or {}).get("num_queries") for name in ("all", "seen", "unseen")}
    if not all(isinstance(count, int) for count in counts.values()) or not counts["all"]:
        return ""
    share = round(100 * counts["seen"] / counts["all"])
    sentence = f"{counts['seen']:,} of the {counts['all']:,} queries ({share}%) have a relevant document that was a training positive."
    if counts["unseen"] < FEW_QUERIES:
        sentence += (
            f" Only {counts['unseen']:,} have none: too few to tell how the model does on documents "
            "not seen in training."
        )
    return sentence


def _verdict(delta: float, p_values: dict, system: str, slice_name: str) -> str:
    p = _number((p_values.get(system) or {}).get(slice_name))
    if p is None:
        return "better (no significance test)" if delta > 0 else "not better"
    if p >= ALPHA:
        return f"no significant difference at {ALPHA}"
    return "significantly better" if delta > 0 else "significantly worse"


def _describe(name: str, results: dict[str, Any]) -> str:
    """How the intro names a system; ``results["encoder"]`` / ``results["hybrid_description"]`` refine it if given."""
    if name == "base":
        return f"the bare base encoder ({results['encoder']})" if results.get("encoder") else "the bare base encoder"
    if name == "hybrid":
        return (
            f"a hybrid ({results['hybrid_description']})"
            if results.get("hybrid_description")
            else "a hybrid of this model and BM25"
        )
    return SYSTEMS[name]


def _slices(system: Any) -> dict[str, dict]:
    """``{slice: metrics}``; a flat metrics dict counts as the ``all`` slice."""
    if not isinstance(system, dict):
        return {}
    if any(isinstance(value, dict) for value in system.values()):
        return {key: _metric_keys(value) for key, value in system.items() if isinstance(value, dict)}
    return {"all": _metric_keys(system)}


def _metric_keys(values: dict) -> dict:
    """Metric keys in any spelling (``nDCG@10`` from evaluate's JSON, ``ndcg@10``) as the card's model-index types."""
    return {
        metric_names.canonical(key).lower() if key != "num_queries" else key: value for key, value in values.items()
    }


def _diff(mine: dict | None, theirs: dict | None) -> float | None:
    a, b = _number((mine or {}).get(MAIN_METRIC)), _number((theirs or {}).get(MAIN_METRIC))
    return None if a is None or b is None else a - b


def _p(p_values: dict, system: str, slice_name: str, num_queries: int | None = None) -> str:
    return fmt_p(
        (p_values.get(system) or {}).get(slice_name), why_missing=why_no_p(num_queries) if num_queries in (0, 1) else ""
    )


def _p_phrase(p_values: dict, system: str, slice_name: str) -> str:
    value = _p(p_values, system, slice_name)
    return "no p-value" if not value else f"p {value}" if value.startswith("<") else f"p = {value}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _table_header(columns: list[str]) -> list[str]:
    return [_row(columns), _row([":--"] + ["--:"] * (len(columns) - 1))]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _title(text: str) -> str | None:
    return next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), None)
