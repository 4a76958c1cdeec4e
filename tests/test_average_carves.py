"""--average-carves: the job on several carves, the saved head the mean of theirs, the hybrid weight chosen on all
their dev queries together."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from modeling.training.hybrid import HybridChoice, decide, pool_hybrid
from modeling.training.run import mean_state
from modeling.training.settings import parse_settings
from tests.training_fixtures import train_small_run


@pytest.fixture(scope="module")
def averaged(tmp_path_factory):
    return train_small_run(tmp_path_factory.mktemp("average-run"), "--no-interpolate", "--average-carves", "3")


def test_the_saved_head_is_the_mean_of_every_carves_refit(averaged):
    summary = json.loads((averaged / "training_summary.json").read_text())
    runs = summary["average_carves"]
    assert len(runs) == 3 and len({run["seed"] for run in runs}) == 3 and runs[0]["seed"] == 0
    assert all(run["learning_rate"] == 3e-3 and run["epoch"] >= 1 for run in runs)
    assert "mean of 3 runs' heads" in summary["selection"]
    refits = [averaged / "trials" / "refit"] + [
        averaged / "trials" / f"average-{run['seed']}" / "refit" for run in runs[1:]
    ]
    heads = [load_file(str(folder / "head.safetensors")) for folder in refits]
    assert not torch.equal(heads[0]["delta"], heads[1]["delta"])  # each run trained on its own carve and seed
    saved = load_file(str(averaged / "2_Router" / "query_0_ProjectionHead" / "model.safetensors"))
    expected = mean_state(heads)
    for key in ("delta", "bias"):
        torch.testing.assert_close(saved[key], expected[key])


def test_the_hybrid_weight_rests_on_every_carves_dev_queries(averaged):
    summary = json.loads((averaged / "training_summary.json").read_text())
    hybrid = json.loads((averaged / "hybrid.json").read_text())
    assert "dev splits of 3 carves" in hybrid["source"]
    assert hybrid == summary["hybrid"]


def test_the_card_says_the_head_is_a_mean_of_runs(averaged):
    card = (averaged / "README.md").read_text()
    assert "Saved head (--average-carves)" in card and "the head is the mean of 3 heads" in card


def test_mean_state_averages_floats_and_keeps_the_rest():
    states = [
        {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(2)},
        {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(2)},
    ]
    averaged = mean_state(states)
    assert torch.equal(averaged["w"], torch.tensor([2.0, 4.0])) and averaged["n"].item() == 2
    frozen = torch.randn(1000, generator=torch.Generator().manual_seed(0))  # e.g. a fixed PCA map
    assert not torch.equal(sum([frozen] * 5) / 5, frozen)  # float rounding: the plain mean would move it
    assert torch.equal(mean_state([{"f": frozen.clone()} for _ in range(5)])["f"], frozen)


def choice_from(scores: dict[float, list[float]]) -> HybridChoice:
    return decide({"min-max": scores, "z-score": scores}, "one carve", {})


def test_pooled_hybrid_decides_on_the_queries_of_every_carve():
    # Carve A alone: weight 0.9 leads by far. Carve B alone: 0.1 leads by far. Together 0.5 is best.
    a = {0.1: [0.1, 0.1, 0.1], 0.5: [0.6, 0.6, 0.6], 0.9: [0.9, 0.9, 0.9]}
    b = {0.1: [0.9, 0.9, 0.9], 0.5: [0.6, 0.6, 0.6], 0.9: [0.0, 0.0, 0.0]}
    assert choice_from(a).dense_weight == 0.9 and choice_from(b).dense_weight == 0.1
    pooled = pool_hybrid([choice_from(a), choice_from(b)], "two carves")
    assert pooled.dense_weight == 0.5 and pooled.source == "two carves"
    assert pooled.curve[0.5] == pytest.approx(0.6) and pooled.curve[0.9] == pytest.approx(0.45)
    assert len(pooled.scores["z-score"][0.5]) == 6


@pytest.mark.parametrize("flags", [["--average-carves", "0"], ["--average-carves", "2", "--selection-carves", "2"]])
def test_bad_average_flags_exit_2(flags):
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(flags)
    assert exit_info.value.code == 2


def test_with_a_given_dev_split_the_runs_differ_by_seed(tmp_path):
    from tests.training_fixtures import pair_rows, run_train, save_tiny_encoder, write_beir

    data = write_beir(tmp_path / "beir", pair_rows(160))
    code = run_train(save_tiny_encoder(tmp_path / "encoder"), data, tmp_path / "out", tmp_path / "cache",
                     "--epochs", "2", "--learning-rate", "3e-3", "--weight-decay", "0", "--average-carves", "2")  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert len(summary["average_carves"]) == 2 and not summary["refit_on_dev"]
    assert "each with its own seed, chosen on the data's dev split" in summary["selection"]
    assert (
        "each trained with its own seed and chosen on the data's dev split"
        in (tmp_path / "out" / "README.md").read_text()
    )
