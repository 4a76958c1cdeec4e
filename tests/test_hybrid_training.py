"""Training end to end: per-epoch hard negatives by default, the hybrid's weight saved with the model and carded."""

from __future__ import annotations

import json

import pytest

from modeling.hub import ROOT_FILES
from modeling.training.settings import parse_settings
from tests.training_fixtures import train_small_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_small_run(tmp_path_factory.mktemp("hybrid-run"), "--selection-carves", "2")


def test_hybrid_json_is_saved_with_the_model_and_shown_in_the_card(trained):
    hybrid = json.loads((trained / "hybrid.json").read_text())
    assert 0 <= hybrid["dense_weight"] <= 1 and hybrid["normalisation"] in ("min-max", "z-score")
    assert "dev split of training" in hybrid["source"] and "carved" in hybrid["source"]
    assert set(hybrid["dev_ndcg@10_by_weight"]) == {f"{0.1 * i:.1f}".rstrip("0").rstrip(".") for i in range(11)}
    card = (trained / "README.md").read_text()
    assert "Hybrid with BM25" in card and f"dense weight {hybrid['dense_weight']:g}" in card
    assert "Hard negatives" in card and "top 20" in card
    assert "hybrid.json" in ROOT_FILES  # pushed to the Hub with the model


def test_summary_records_the_negatives_and_the_pooled_selection(trained):
    summary = json.loads((trained / "training_summary.json").read_text())
    assert summary["hard_negatives"].startswith("1 per pair per epoch from the base's top 20")
    assert "averaged over 2 carves" in summary["selection"]
    assert any(p.name.startswith("carve-") for p in (trained / "trials").iterdir())


@pytest.mark.parametrize(
    "flags",
    [
        ["--negatives-per-pair", "3", "--hard-negatives", "2"],
        ["--negative-margin", "x"],
        ["--selection-carves", "0"],
        ["--negative-guard", "gist", "--negative-margin", "none"],
    ],  # fmt: skip
    ids=str,
)
def test_bad_negative_flags_exit_2(flags):
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(flags)
    assert exit_info.value.code == 2


def test_negative_flags_parse():
    settings = parse_settings(["--negative-margin", "none", "--hard-negatives", "3", "--negatives-per-pair", "3"])
    assert settings.negatives().describe().startswith("3 per pair per epoch from the base's top 3")
    assert settings.negatives().margin is None
    assert parse_settings(["--hard-negatives", "0"]).negatives() is None
    assert parse_settings(["--loss", "cosine-mse"]).negatives() is None  # labelled losses take no mined negatives
    assert parse_settings([]).negatives().margin is None
    assert parse_settings(["--negative-margin", "0"]).negatives().margin == 0.0
