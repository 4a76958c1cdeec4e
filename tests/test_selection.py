"""Selection over carves: other carves of the same data, pooled dev curves, a veto that knows its error bar."""

from __future__ import annotations

import random

import pytest

from modeling.data.training_data import load_training_data
from modeling.training.selection import average_curves, carve_seeds, pooled_choice, recarve, vetoed
from tests.training_fixtures import pair_rows, write_beir, write_jsonl


def test_carve_seeds_start_with_the_runs_seed_and_are_distinct():
    seeds = carve_seeds(7, 4)
    assert seeds[0] == 7 and len(set(seeds)) == 4 and carve_seeds(7, 4) == seeds
    with pytest.raises(ValueError):
        carve_seeds(0, 0)


def test_recarve_moves_other_queries_to_dev_and_keeps_every_pair(tmp_path):
    data = load_training_data(write_jsonl(tmp_path / "pairs.jsonl", pair_rows(200)), dev_fraction=0.1, seed=0)
    other = recarve(data, 0.1, seed=1)
    assert other.dev_carved and len(other.dev_queries) == pytest.approx(len(data.dev_queries), abs=3)
    assert set(other.dev_queries.values()) != set(data.dev_queries.values())
    everything = {**data.pairs, **data.held_out["pairs"]}
    assert {**other.pairs, **other.held_out["pairs"]} == everything
    assert not set(other.pairs) & set(other.dev_queries.values())  # a query is on one side only
    for qid, query in other.dev_queries.items():  # qrels point at the documents of that query's pairs
        assert {other.dev_corpus[doc] for doc in other.dev_relevant[qid]} == set(everything[query])
    assert other.dev_unseen  # half of the carve is still held out by document


def test_a_given_dev_split_is_not_recarved(tmp_path):
    data = load_training_data(write_beir(tmp_path / "beir", pair_rows(80)))
    with pytest.raises(ValueError, match="given"):
        recarve(data, 0.1, seed=1)


def test_pooled_choice_averages_over_carves():
    histories = {
        # lucky on one carve, poor on the others
        "a": [[(1, 0.60), (2, 0.90)], [(1, 0.60), (2, 0.50)], [(1, 0.60), (2, 0.52)]],
        # steady
        "b": [[(1, 0.70), (2, 0.72)], [(1, 0.71), (2, 0.70)], [(1, 0.69), (2, 0.71)]],
    }
    choice = pooled_choice(histories)
    assert choice.key == "b" and choice.epoch == 2 and choice.mean_dev == pytest.approx(0.71)
    assert choice.per_carve == (0.72, 0.70, 0.71)


def test_pooled_choice_uses_epochs_every_carve_reached():
    histories = {"a": [[(1, 0.5), (2, 0.9)], [(1, 0.6)]], "b": [[(1, 0.55)], [(1, 0.56)]]}
    choice = pooled_choice(histories)
    assert (choice.key, choice.epoch) == ("b", 1)
    with pytest.raises(ValueError):
        pooled_choice({"a": [[]]})


def test_average_curves():
    assert average_curves([{0.5: 0.6, 1.0: 0.8}, {0.5: 0.7, 1.0: 0.6}]) == pytest.approx({0.5: 0.65, 1.0: 0.7})


def test_the_veto_ignores_noise_and_catches_a_real_loss():
    rng = random.Random(0)
    reference = [rng.uniform(0.3, 0.9) for _ in range(60)]
    # a 0.01 mean deficit with per-query swings of +-0.2: far inside 1.64 standard errors (a fixed 0.005 would veto)
    noisy = [r - 0.01 + rng.uniform(-0.2, 0.2) for r in reference]
    assert not vetoed(noisy, reference)
    # a steady 0.03 deficit on every query: beyond noise
    worse = [r - 0.03 + rng.uniform(-0.01, 0.01) for r in reference]
    assert vetoed(worse, reference)
    better = [r + 0.03 for r in reference]
    assert not vetoed(better, reference)
    assert not vetoed([], [])
    with pytest.raises(ValueError):
        vetoed([0.1], [0.1, 0.2])
