"""Metrics: a hand-checked example (graded and binary), trec_eval's tie order, and pytrec_eval's own numbers."""

import math
import random

import pytest
import pytrec_eval

from modeling.evaluation.metrics import METRICS, mean_metrics, per_query_metrics, trec_order, truncate

QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d4": 1}}
RUN = {"q1": {"d3": 0.9, "d1": 0.8, "d5": 0.7, "d2": 0.6}, "q2": {"d5": 0.9, "d6": 0.8}}


def test_hand_checked_graded():
    values = per_query_metrics(QRELS, RUN)
    # q1 ranks d3 (grade 0), d1 (2), d5 (unjudged), d2 (1): DCG = 2/log2(3) + 1/log2(5); ideal = 2/log2(2) + 1/log2(3).
    ndcg = (2 / math.log2(3) + 1 / math.log2(5)) / (2 + 1 / math.log2(3))
    assert values["q1"]["nDCG@10"] == pytest.approx(ndcg, abs=1e-6)
    assert values["q1"]["nDCG@10"] == pytest.approx(0.643322, abs=1e-6)
    assert values["q1"]["nDCG@100"] == pytest.approx(ndcg, abs=1e-6)
    assert values["q1"]["MRR@10"] == 0.5  # first relevant (grade > 0) at rank 2
    assert values["q1"]["Recall@10"] == 1.0
    assert values["q1"]["MAP@100"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert values["q2"] == {name: 0.0 for name in METRICS}  # its only relevant document was not retrieved
    means = mean_metrics(values)
    assert means["nDCG@10"] == pytest.approx(ndcg / 2, abs=1e-6)
    assert mean_metrics(values, ["q1"])["MRR@10"] == 0.5
    assert mean_metrics(values, [])["nDCG@10"] is None


def test_hand_checked_binary():
    binary = {qid: {doc: int(grade > 0) for doc, grade in docs.items()} for qid, docs in QRELS.items()}
    values = per_query_metrics(binary, RUN)
    ndcg = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert values["q1"]["nDCG@10"] == pytest.approx(ndcg, abs=1e-6)
    assert values["q1"]["nDCG@10"] == pytest.approx(0.650921, abs=1e-6)
    assert values["q1"]["MAP@100"] == pytest.approx(0.5)


def test_mrr_is_cut_at_10():
    run = {"q": {f"n{i:02d}": 1.0 - i / 100 for i in range(10)} | {"rel": 0.5}}  # relevant at rank 11
    assert per_query_metrics({"q": {"rel": 1}}, run)["q"]["MRR@10"] == 0.0
    full = pytrec_eval.RelevanceEvaluator({"q": {"rel": 1}}, {"recip_rank"}).evaluate(run)
    assert full["q"]["recip_rank"] == pytest.approx(1 / 11)  # trec_eval's own recip_rank has no cutoff


def test_ties_follow_trec_eval_order():
    # 12 documents with equal scores: trec_eval breaks ties by doc id, descending.
    run = {"q": {f"d{i:02d}": 1.0 for i in range(12)}}
    assert trec_order(run["q"])[:2] == ["d11", "d10"]
    assert list(truncate(run, 3)["q"]) == ["d11", "d10", "d09"]
    for relevant, rank in (("d00", 12), ("d03", 9), ("d11", 1)):
        full = pytrec_eval.RelevanceEvaluator({"q": {relevant: 1}}, {"recip_rank"}).evaluate(run)["q"]["recip_rank"]
        assert full == pytest.approx(1 / rank)  # the library agrees with trec_order
        assert per_query_metrics({"q": {relevant: 1}}, run)["q"]["MRR@10"] == pytest.approx(
            1 / rank if rank <= 10 else 0.0
        )


def reference_ndcg(grades: dict[str, int], scores: dict[str, float], depth: int) -> float:
    """Linear-gain nDCG (trec_eval's), written independently of the code under test."""
    ranked = sorted(scores, key=lambda doc: (scores[doc], doc), reverse=True)[:depth]
    dcg = sum(max(grades.get(doc, 0), 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:depth]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


@pytest.mark.parametrize("graded", [True, False])
def test_random_runs_equal_pytrec_eval_and_reference(graded):
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(300)]
    qrels = {
        f"q{j}": {doc: (rng.choice([0, 1, 2, 3]) if graded else rng.choice([0, 1])) for doc in rng.sample(docs, 8)}
        for j in range(25)
    }
    qrels = {qid: judged | {docs[j]: 1} for j, (qid, judged) in enumerate(qrels.items())}  # one relevant at least
    run = {qid: {doc: rng.random() for doc in rng.sample(docs, 150)} for qid in qrels}
    values = per_query_metrics(qrels, run)
    library = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10,100", "recall.10,100,1000", "map_cut.100"}).evaluate(
        run
    )
    for qid in qrels:
        assert values[qid]["nDCG@10"] == pytest.approx(library[qid]["ndcg_cut_10"], abs=1e-12)
        assert values[qid]["nDCG@100"] == pytest.approx(library[qid]["ndcg_cut_100"], abs=1e-12)
        assert values[qid]["Recall@100"] == pytest.approx(library[qid]["recall_100"], abs=1e-12)
        assert values[qid]["MAP@100"] == pytest.approx(library[qid]["map_cut_100"], abs=1e-12)
        assert values[qid]["nDCG@10"] == pytest.approx(reference_ndcg(qrels[qid], run[qid], 10), abs=1e-9)
        ranked = trec_order(run[qid])[:10]
        first = next((rank for rank, doc in enumerate(ranked, 1) if qrels[qid].get(doc, 0) > 0), None)
        assert values[qid]["MRR@10"] == pytest.approx(1 / first if first else 0.0)
