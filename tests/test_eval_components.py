"""BM25, fusion, significance, slices, pair scores and plots, each on a small hand-checkable example."""

import numpy as np
import pytest
import torch

from modeling.evaluation.bm25 import BM25, BM25Settings
from modeling.evaluation.fusion import choose_fusion, choose_weight, convex, min_max, rrf, z_score
from modeling.evaluation.pair_scores import pair_scores, summarise
from modeling.evaluation.plots import plot_metric_change, plot_score_distributions
from modeling.evaluation.significance import paired_p_value
from modeling.evaluation.slices import seen_unseen

CORPUS = {
    "d1": "The cat sat on the mat",
    "d2": "Dogs bark loudly at night",
    "d3": "A cat and a dog play",
    "d4": "Green tea in a cup",
}


def test_bm25_stems_drops_unmatched_and_reports_settings():
    bm25 = BM25(CORPUS)
    run = bm25.search({"q1": "cats", "q2": "the and a", "q3": "barking dogs"}, k=10)
    assert set(run["q1"]) == {"d1", "d3"}  # "cats" -> "cat"; documents without the term are not retrieved
    assert run["q2"] == {}  # stopwords only
    assert max(run["q3"], key=run["q3"].get) == "d2"
    assert all(score > 0 for hits in run.values() for score in hits.values())
    described = bm25.settings.describe()
    assert (described["k1"], described["b"], described["method"]) == (0.9, 0.4, "lucene")
    assert described["library"].startswith("bm25s ")
    # k1/b are really used: another b changes the scores of documents of different lengths.
    other = BM25(CORPUS, BM25Settings(k1=1.2, b=0.9)).search({"q1": "cats"})
    assert other["q1"] != run["q1"]


def test_rrf_hand_checked():
    fused = rrf([{"q": {"a": 3.0, "b": 2.0}}, {"q": {"b": 9.0, "c": 1.0}}], k=60)
    assert fused["q"]["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["q"]["a"] == pytest.approx(1 / 61)
    assert fused["q"]["c"] == pytest.approx(1 / 62)
    assert list(fused["q"]) == ["b", "a", "c"]


def test_convex_hand_checked():
    assert min_max({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    dense, sparse = {"q": {"a": 0.9, "b": 0.5, "c": 0.7}}, {"q": {"b": 10.0, "d": 2.0}}
    fused = convex(dense, sparse, weight=0.25)["q"]
    assert fused["a"] == pytest.approx(0.25 * 1.0)
    assert fused["b"] == pytest.approx(0.25 * 0.0 + 0.75 * 1.0)
    assert fused["c"] == pytest.approx(0.25 * 0.5)
    assert fused["d"] == pytest.approx(0.0)
    assert convex(dense, sparse, 1.0)["q"]["a"] == 1.0


def test_z_score_and_statistics_from_the_top_of_the_run():
    z = z_score({"a": 1.0, "b": 3.0, "c": 2.0})
    assert (
        z["b"] == pytest.approx(1.2247, abs=1e-4) and z["c"] == pytest.approx(0.0) and z["a"] == pytest.approx(-z["b"])
    )
    # statistics over the top 2 only: the third document falls below 0 (min-max) instead of defining the floor
    scores = {"a": 4.0, "b": 3.0, "c": 1.0}
    assert min_max(scores, stats_depth=2) == {"a": 1.0, "b": 0.0, "c": -2.0}
    assert z_score(scores, stats_depth=2) == {"a": 1.0, "b": -1.0, "c": -5.0}


def test_convex_z_score_gives_absent_documents_the_run_floor():
    dense, sparse = {"q": {"a": 3.0, "b": 1.0, "c": 2.0}}, {"q": {"b": 2.0, "d": 4.0}}
    fused = convex(dense, sparse, weight=0.5, normalisation="z-score")["q"]
    za, zb = z_score(dense["q"]), z_score(sparse["q"])
    assert fused["a"] == pytest.approx(0.5 * za["a"] + 0.5 * min(zb.values()))
    assert fused["d"] == pytest.approx(0.5 * min(za.values()) + 0.5 * zb["d"])
    assert fused["b"] == pytest.approx(0.5 * za["b"] + 0.5 * zb["b"])
    with pytest.raises(ValueError, match="normalisation"):
        convex(dense, sparse, 0.5, normalisation="rank")


def test_choose_weight_prefers_the_better_system():
    qrels = {f"q{i}": {f"good{i}": 1} for i in range(5)}
    good = {f"q{i}": {f"good{i}": 1.0, f"bad{i}": 0.5, f"other{i}": 0.1} for i in range(5)}
    bad = {f"q{i}": {f"bad{i}": 1.0, f"other{i}": 0.8, f"good{i}": 0.1} for i in range(5)}
    weight, curve = choose_weight(good, bad, qrels)
    assert weight >= 0.6 and curve[1.0] == 1.0 and curve[0.0] < 1.0
    weight, _ = choose_weight(bad, good, qrels)
    assert weight <= 0.4
    how, weight, curves = choose_fusion(good, bad, qrels)
    assert how in ("min-max", "z-score") and weight >= 0.6 and set(curves) == {"min-max", "z-score"}


def test_paired_p_value():
    assert paired_p_value([0.1, 0.5, 0.7], [0.1, 0.5, 0.7]) == 1.0
    # 5 queries, each +0.2: the exact sign-flip distribution has 2 of 32 arrangements as extreme (two-sided).
    assert paired_p_value([0.6] * 5, [0.4] * 5) == pytest.approx(2 / 32)
    rng = np.random.default_rng(1)
    a = rng.random(60)
    strong = paired_p_value(a + 0.3, a + rng.normal(0, 0.05, 60), resamples=2000, seed=3)
    assert strong < 0.001
    noise = rng.normal(0, 0.1, 60)
    weak = paired_p_value(a + noise, a, resamples=2000, seed=3)
    assert weak > 0.01
    assert weak == paired_p_value(a + noise, a, resamples=2000, seed=3)  # seeded
    assert paired_p_value([], []) is None
    with pytest.raises(ValueError, match="same queries"):
        paired_p_value([1.0], [1.0, 2.0])


def test_seen_unseen_slices():
    train = {"t1": {"d1": 1, "d9": 0}, "t2": {"d2": 2}}
    test = {"a": {"d1": 1}, "b": {"d3": 1}, "c": {"d3": 1, "d2": 1}, "d": {"d9": 1}, "e": {"d1": 0, "d4": 1}}
    slices = seen_unseen(test, train)
    assert slices["all"] == ["a", "b", "c", "d", "e"]
    assert slices["seen"] == ["a", "c"]  # c: one of its relevant documents was a train positive
    assert slices["unseen"] == ["b", "d", "e"]  # d9 was judged non-relevant in train; d1 is not relevant for e
    assert seen_unseen(test, None) == {"all": ["a", "b", "c", "d", "e"]}


def test_pair_scores_and_plots(tmp_path):
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    docs = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
    doc_index = {f"d{i}": i for i in range(4)}
    relevant, non_relevant = pair_scores(
        queries, docs, ["q0", "q1"], doc_index, {"q0": {"d0": 1}, "q1": {"d1": 2}}, "cosine", 3, seed=0
    )
    assert relevant.tolist() == pytest.approx([1.0, 1.0])
    assert non_relevant.size >= 2 and (non_relevant < 1.0 - 1e-6).all()
    summary = summarise(relevant, non_relevant)
    assert summary["relevant_mean"] == pytest.approx(1.0) and summary["gap"] > 0
    scores = plot_score_distributions(
        {"base": (relevant, non_relevant), "trained": (relevant * 0.5, non_relevant)}, tmp_path / "s.png"
    )
    change = plot_metric_change({"q0": 0.5, "q1": 0.2}, {"q0": 0.1, "q1": 0.4}, ("trained", "base"), tmp_path / "c.png")
    for path in (scores, change):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_dev_curves_name_every_trial_of_the_grid(tmp_path):
    from modeling.evaluation.plots import plot_dev_curves, trial_label

    trials = [
        {"learning_rate": lr, "weight_decay": wd, "dev_history": [(1, 0.5), (2, 0.6)]}
        for lr in (1e-3, 3e-3, 1e-2)
        for wd in (0.0, 0.01)
    ]
    assert len({trial_label(trial) for trial in trials}) == 6  # six curves, six names
    assert plot_dev_curves(trials, 0.4, tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
