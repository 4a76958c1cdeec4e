"""One metric list, one number formatter and one results schema for the terminal, the JSON and the card."""

import json

from model_card.evaluation import from_results, render_section
from modeling.evaluation.formatting import fmt, fmt_p, why_no_p
from modeling.evaluation.metric_names import MAIN_METRIC, METRICS, TREC_MEASURES, canonical
from modeling.evaluation.report import render
from modeling.evaluation.results_schema import SCHEMA_VERSION, EvaluationResults
from tests.test_evaluate_cli import head_model, run_evaluate, tiny_beir  # noqa: F401 (a fixture)


def test_one_formatter():
    assert fmt(0.123456) == "0.1235" and fmt(None) == "–" and fmt(float("nan")) == "–"
    assert fmt_p(0.00004) == "< 0.0001" and fmt_p(0.04199) == "0.0420" and fmt_p(1.0) == "1.0000"
    assert fmt_p(None, why_no_p(1)) == "n/a (1 query)"


def test_one_metric_list():
    assert MAIN_METRIC in METRICS and set(TREC_MEASURES) <= set(METRICS)
    assert canonical("ndcg@10") == "nDCG@10" and canonical("RECALL@100") == "Recall@100"


def test_terminal_json_and_card_agree(tmp_path, capsys, head_model, cache_root):  # noqa: F811
    data = tiny_beir(tmp_path / "toy")
    out = tmp_path / "o"
    code, stdout, stderr = run_evaluate(capsys, head_model, data, cache_root, out, "--trust-remote-code")
    assert code == 0, stderr
    raw = json.loads((out / "toy-test.json").read_text())
    results = EvaluationResults.read(out / "toy-test.json")
    assert results.schema_version == SCHEMA_VERSION and results.to_json() == raw  # the file round-trips
    assert render(raw) in stdout
    assert set(raw["systems"]["trained"]["all"]) == set(METRICS)  # display names in the JSON, no lower-case copy
    card = render_section(from_results(raw))
    p = raw["p_values"]["vs"]["bm25"]["all"]
    assert fmt_p(p) in card and fmt_p(p) in stdout  # the same p-value text in both
    assert fmt(raw["systems"]["trained"]["all"][MAIN_METRIC]) in card
