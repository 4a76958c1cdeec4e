"""The model card: facts read from the model and the run, valid YAML, and an evaluation section whose numbers are the JSON's."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard, ModelCardData, metadata_load
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

import modeling.model.build
from model_card import (
    EVALUATION_END,
    EVALUATION_START,
    HeadModelCardData,
    add_evaluation,
    install_card_data,
    prepare_card,
)
from model_card.card_data import SUMMARY_END, SUMMARY_START
from model_card.evaluation import METRICS
from modeling.model.build import DEFAULT_ENCODER_NAME, build_model, find_head, save_model
from tests.fake_hub import fake_hub  # noqa: F401  (fixture)

PAIRS = {
    "query": ["red shoe", "blue cup", "warm tea", "cheap lamp", "wooden desk", "leather bag"],
    "document": [
        "red shoes for running",
        "a blue cup of coffee",
        "warm green tea in a mug",
        "a cheap desk lamp",
        "a wooden office desk",
        "a leather travel bag",
    ],
}
VERDICT = "passed: mean cosine between unrelated texts 0.41 (limit 0.90)"
TRAINING_INFO = {
    "dataset_name": "toy-pairs",
    "num_pairs": 6,
    "loss": "MultipleNegativesRankingLoss",
    "learning_rate": 0.01,
    "epochs": 2,
    "collapse_guard_verdict": VERDICT,
    "dev_metrics": {"ndcg@10": 0.5123, "mrr@10": 0.4711},
    "encoder_calls": 12,
    "data_license": "CC BY-NC 2.0",
    "an_extra_fact": "kept",
}


def train_and_save(encoder, placement: str, folder: Path) -> tuple[Path, object]:
    """The training script's order of calls, on the tiny encoder: install, train a few steps, prepare, save."""
    model = build_model(encoder, kind="linear", placement=placement)
    install_card_data(model, language="en")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(folder.parent / "trainer-out"),
        num_train_epochs=2,
        per_device_train_batch_size=3,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        router_mapping={"query": "query", "document": "document"} if placement == "query" else {},
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(PAIRS), loss=MultipleNegativesRankingLoss(model)
    )
    trainer.train()
    prepare_card(model, training_info=TRAINING_INFO)
    save_model(model, folder)
    return folder, model


@pytest.fixture(scope="module")
def _trained_once(_tiny_encoder_session, tmp_path_factory):
    return train_and_save(copy.deepcopy(_tiny_encoder_session), "query", tmp_path_factory.mktemp("trained") / "model")


@pytest.fixture()
def trained_query_model(_trained_once, tmp_path):
    """The trained query-only model (shared, read-only) and a fresh copy of its folder for this test."""
    folder, model = _trained_once
    return Path(shutil.copytree(folder, tmp_path / "model")), model


def results_json(seed: int, slices: bool = True, systems=("trained", "base", "bm25", "hybrid")) -> dict:
    """An evaluation JSON shaped like evaluate.py's, with random numbers (so nothing can be hard-coded)."""
    rng = np.random.default_rng(seed)
    counts = {"all": 30, "seen": 19, "unseen": 11} if slices else {"all": 30}

    def scores(count: int) -> dict:
        return {**{metric: float(rng.uniform(0.2, 0.9)) for metric in METRICS}, "num_queries": count}

    return {
        "dataset": "toy-scifact",
        "split": "test",
        "systems": {name: {slice_: scores(n) for slice_, n in counts.items()} for name in systems},
        "p_values": {
            name: {slice_: float(rng.uniform(0, 0.2)) for slice_ in counts} for name in systems if name != "trained"
        },
        "p_value_test": "paired randomisation test",
        "per_query": {"q1": 0.5},  # an extra key evaluate.py may add
    }


def table(text: str, first_cell: str) -> dict[str, list[str]]:
    """Rows of the markdown table whose header row starts with ``first_cell``: {row label: cells}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().strip("*") for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def section(readme: str) -> str:
    return readme[readme.index(EVALUATION_START) : readme.index(EVALUATION_END)]


def test_card_states_the_head_the_frozen_encoder_and_the_run(trained_query_model):
    folder, model = trained_query_model
    text = (folder / "README.md").read_text()
    head = find_head(model)
    encoder_parameters = sum(p.numel() for module in list(model)[:2] for p in module.parameters())

    assert "**frozen**" in text
    assert "- **Head:** linear, query-only" in text
    assert f"- **Head dimensions:** {head.in_features} → {head.out_features}" in text
    assert "- **Head initialisation:** identity" in text
    assert (
        f"{head.num_trainable_parameters():,} trained (the head); {encoder_parameters:,} frozen (the encoder)" in text
    )
    # training: what the library's callback gathered, and our facts
    assert "#### toy-pairs" in text and "* Size: 6 training samples" in text
    assert "<code>query</code> and <code>document</code>" in text and "<code>red shoe</code>" in text
    assert "MultipleNegativesRankingLoss" in text and "### Training Hyperparameters" in text
    assert "### Training Logs" in text and len(re.findall(r"^\| [\d.]+ +\| \d+ +\|", text, re.M)) == 4
    assert f"- **Collapse guard:** {VERDICT}" in text
    assert (
        "| Training pairs | 6 |" in text and "| Learning rate | 0.01 |" in text and "| An extra fact | kept |" in text
    )
    assert table(text, "Metric")["ndcg@10"] == ["0.5123"]
    # usage that works, and the query-only promise
    assert 'model = SentenceTransformer("sentence_transformers_model_id", trust_remote_code=True)' in text
    assert "model.encode_query(" in text and "model.encode_document(" in text
    assert "Your existing index stays valid" in text
    # limitations, plainly
    limitations = text[text.index("## Limitations") : text.index("## Training Details")]
    assert "unseen" in limitations and "CC BY-NC 2.0" in limitations and "trust_remote_code=True" in limitations


def test_front_matter_validates(trained_query_model, fake_hub):  # noqa: F811
    folder, _ = trained_query_model
    metadata = metadata_load(folder / "README.md")
    assert metadata["library_name"] == "sentence-transformers"
    assert metadata["pipeline_tag"] == "sentence-similarity"
    assert metadata["license"] == "apache-2.0"
    assert {"sentence-transformers", "projection-head", "frozen-encoder", "loss:MultipleNegativesRankingLoss"} <= set(
        metadata["tags"]
    )
    ModelCardData(**metadata)  # raises on a malformed model-index
    ModelCard.load(folder / "README.md").validate()  # huggingface_hub's check, answered by the fake Hub's validator
    assert any(r.path == "/api/validate-yaml" for r in fake_hub.requests)


def test_default_encoder_is_named_by_its_hub_id_offline(tiny, monkeypatch):
    """Offline the library cannot find ``base_model``; the card still names the default encoder's Hub id."""
    folder = tiny[0].auto_model.config._name_or_path
    monkeypatch.setattr(
        modeling.model.build, "default_encoder_path", lambda: folder
    )  # tiny stands in for the gt folder
    model = build_model(tiny, placement="query")
    card = install_card_data(model)
    assert card.base_model == DEFAULT_ENCODER_NAME
    assert (
        f"base_model: {DEFAULT_ENCODER_NAME}" in ModelCard.from_template(card, template_path=card.template_path).content
    )


def test_a_local_encoder_is_named_but_not_claimed_as_base_model(trained_query_model):
    folder, model = trained_query_model
    assert "base_model" not in metadata_load(folder / "README.md")
    assert model.model_card_data.encoder_name in (folder / "README.md").read_text()


def test_query_only_card_promise_holds(tiny):
    """The card says an index of the base encoder stays valid: documents are embedded exactly as before."""
    base = copy.deepcopy(tiny)
    model = build_model(tiny, placement="query")
    with torch.no_grad():
        find_head(model).delta.normal_(0, 0.2)
    texts = PAIRS["document"]
    assert np.array_equal(model.encode_document(texts), base.encode(texts))
    assert not np.allclose(model.encode_query(texts), base.encode(texts))


def test_symmetric_card_asks_to_reembed(tiny, tmp_path):
    folder, _ = train_and_save(tiny, "symmetric", tmp_path / "model")
    text = (folder / "README.md").read_text()
    assert "- **Head:** linear, symmetric" in text and "Re-embed your corpus" in text
    assert "existing index stays valid" not in text
    assert 'SentenceTransformer("sentence_transformers_model_id", trust_remote_code=True)' in text


def test_install_keeps_what_was_recorded_and_registers_the_model(tiny):
    model = build_model(tiny, placement="symmetric")
    model.model_card_data.add_tags("custom-tag")
    card = install_card_data(model, model_id="org/name")
    assert isinstance(model.model_card_data, HeadModelCardData) and card.model is model
    assert "custom-tag" in card.tags and card.model_id == "org/name" and card.ir_model


def test_evaluation_numbers_match_the_json(trained_query_model, tmp_path):
    folder, _ = trained_query_model
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(results_json(seed=3)))
    results = json.loads(results_path.read_text())
    plot = tmp_path / "plots" / "ndcg_by_slice.png"
    plot.parent.mkdir()
    plot.write_bytes(b"\x89PNG not really")

    add_evaluation(folder, results, [plot])

    text = section((folder / "README.md").read_text())
    systems, p_values = results["systems"], results["p_values"]
    main = table(text, "Metric")
    for metric, label in METRICS.items():
        cells = main[label]
        mine = systems["trained"]["all"][metric]
        assert float(cells[0]) == pytest.approx(mine, abs=5e-5)
        for index, name in enumerate(["base", "bm25", "hybrid"]):
            theirs = systems[name]["all"][metric]
            assert float(cells[1 + 2 * index]) == pytest.approx(theirs, abs=5e-5)
            assert float(cells[2 + 2 * index]) == pytest.approx(mine - theirs, abs=1e-4)
    p_row = next(cells for label, cells in main.items() if label.startswith("p ("))
    assert [float(p_row[2 + 2 * i]) for i in range(3)] == pytest.approx(
        [p_values[n]["all"] for n in ("base", "bm25", "hybrid")], abs=5e-5
    )
    slices = table(text, "Queries")
    for label, cells in slices.items():
        slice_ = label.lower()
        assert int(cells[0]) == systems["trained"][slice_]["num_queries"]
        assert float(cells[1]) == pytest.approx(systems["trained"][slice_]["ndcg@10"], abs=5e-5)
        assert float(cells[2]) == pytest.approx(systems["base"][slice_]["ndcg@10"], abs=5e-5)
        assert float(cells[4]) == pytest.approx(p_values["base"][slice_], abs=5e-5)
    assert "paired randomisation test" in text and "Reading the numbers" in text
    assert "](evaluation/ndcg_by_slice.png)" in text
    assert (folder / "evaluation" / "ndcg_by_slice.png").read_bytes() == plot.read_bytes()
    index = metadata_load(folder / "README.md")["model-index"]
    ours = {
        m["type"]: m["value"]
        for r in index[0]["results"]
        if r["dataset"]["type"] == "toy-scifact"
        for m in r["metrics"]
    }
    assert ours == pytest.approx({metric: systems["trained"]["all"][metric] for metric in METRICS}, abs=1e-6)


def test_add_evaluation_is_idempotent_and_replaces_old_numbers(trained_query_model, tmp_path):
    folder, _ = trained_query_model
    readme = folder / "README.md"
    add_evaluation(folder, results_json(seed=1))
    once = readme.read_text()
    add_evaluation(folder, results_json(seed=1))
    assert readme.read_text() == once

    newer = results_json(seed=2)
    add_evaluation(folder, newer)
    text = readme.read_text()
    assert text.count(EVALUATION_START) == 1 and text.count("## Evaluation\n") == 1
    assert f"**{newer['systems']['trained']['all']['ndcg@10']:.4f}**" in text
    results = [r for r in metadata_load(readme)["model-index"][0]["results"] if r["dataset"]["type"] == "toy-scifact"]
    assert sum(len(r["metrics"]) for r in results) == len(METRICS)
    assert "## Limitations" in text and "## Training Details" in text, "the rest of the card is untouched"


def test_add_evaluation_tolerates_missing_slices_systems_and_p_values(trained_query_model):
    folder, _ = trained_query_model
    results = results_json(seed=4, slices=False, systems=("trained", "base"))
    del results["p_values"]
    add_evaluation(folder, results)
    text = section((folder / "README.md").read_text())
    assert "Seen vs unseen" not in text and "BM25 |" not in text and "p (" not in text
    assert table(text, "Metric")["nDCG@10"][0] == f"{results['systems']['trained']['all']['ndcg@10']:.4f}"
    with pytest.raises(ValueError, match="trained"):
        add_evaluation(folder, {"systems": {"base": {}}})


@pytest.mark.integration
def test_demo_run_card_matches_its_evaluation_json():
    """A model trained on the demo data by train.py and evaluated with ``evaluate.py --card``, if one exists in runs/."""
    runs = Path(__file__).resolve().parent.parent / "runs"
    found = [
        (path.parent.parent, json.loads(path.read_text()))
        for path in sorted(runs.glob("**/evaluation/*.json"))
        if (path.parent.parent / "README.md").is_file() and '"systems"' in path.read_text()[:100000]
    ]
    if not found:
        pytest.skip("no evaluated demo run in runs/")
    for model_dir, results in found:
        text = section((model_dir / "README.md").read_text())
        main = table(text, "Metric")
        for metric, label in METRICS.items():
            value = results["systems"]["trained"]["all"].get(metric)
            if value is not None:
                assert float(main[label][0]) == pytest.approx(value, abs=5e-5), (model_dir, metric)


def test_train_then_evaluate_card_matches_the_evaluation_json(tmp_path):
    """train.py (with the card hook) then ``evaluate.py --card`` on tiny data: the card's numbers are the JSON's."""
    from modeling.cli import evaluate
    from modeling.cli import train
    from tests.training_fixtures import pair_rows, save_tiny_encoder, write_beir

    data = write_beir(tmp_path / "beir", pair_rows(60))
    encoder = save_tiny_encoder(tmp_path / "tiny")
    run, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--quiet", "--cache-dir", str(cache)]
    assert (
        train.main(
            [
                "--encoder",
                str(encoder),
                "--data",
                str(data),
                "--output-dir",
                str(run),
                "--epochs",
                "2",
                "--batch-size",
                "16",
                "--learning-rate",
                "1e-3",
                "3e-3",
                *common,
            ]
        )
        == 0
    )
    summary = json.loads((run / "training_summary.json").read_text())
    text = (run / "README.md").read_text()
    assert f"- **Collapse guard:** {summary['guard']}" in text
    assert table(text, "Metric")["ndcg@10"][0] == f"{summary['trained_dev']['ndcg@10']:.4f}"
    trials = table(text, "Learning rate")
    assert {float(rate) for rate in trials} == {1e-3, 3e-3}
    assert "| Learning rates tried | 0.001, 0.003 |" in text

    argv = ["--model", str(run), "--data", str(data), "--split", "dev", "--dev-split", "none", "--train-split", "train"]
    assert evaluate.main([*argv, "--trust-remote-code", "--card", "--resamples", "200", *common]) == 0
    results = json.loads(next((run / "evaluation").glob("*.json")).read_text())
    main = table(section((run / "README.md").read_text()), "Metric")
    for system, column in (("trained", 0), ("bare_encoder", 1), ("bm25", 3)):
        assert float(main["nDCG@10"][column]) == pytest.approx(results["systems"][system]["all"]["nDCG@10"], abs=5e-5)
    plots = [Path(p).name for p in results["plots"]]
    assert plots and all(f"](evaluation/{name})" in (run / "README.md").read_text() for name in plots)


def test_summary_under_the_introduction_states_the_main_number_and_the_slice_caveat(trained_query_model):
    folder, _ = trained_query_model
    results = results_json(seed=5)
    results["systems"]["trained"]["unseen"]["num_queries"] = 4
    results["systems"]["trained"]["seen"]["num_queries"] = 26
    add_evaluation(folder, results)
    text = (folder / "README.md").read_text()
    summary = text[text.index(SUMMARY_START) : text.index(SUMMARY_END)]
    assert text.index(SUMMARY_END) < text.index("## Model Details"), "the summary sits under the introduction"
    assert f"**{results['systems']['trained']['all']['ndcg@10']:.4f}**" in summary
    assert f"{results['systems']['bm25']['all']['ndcg@10']:.4f} for BM25" in summary
    assert "26 of the 30 queries (87%)" in summary and "Only 4 have none: too few" in summary
