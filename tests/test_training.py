"""train.py: encoder computed once, frozen, cached == uncached, collapse guard, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import transformer as transformer_module

from modeling import find_head
from modeling.cache.cached_input import cached_twin, prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.cli import train
from modeling.data.training_data import load_training_data
from tests.training_fixtures import pair_rows, run_train, state_hash, write_beir, write_jsonl

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def count_encoder_texts(monkeypatch):
    """Counts the texts that go through any Transformer forward (the frozen encoder's real work)."""
    counter = {"texts": 0}
    original = transformer_module.Transformer.forward

    def counting_forward(self, features, *args, **kwargs):
        counter["texts"] += int(features["input_ids"].shape[0])
        return original(self, features, *args, **kwargs)

    monkeypatch.setattr(transformer_module.Transformer, "forward", counting_forward)
    return counter


def test_encoder_runs_once_per_unique_text_then_never(tmp_path, encoder_dir, count_encoder_texts):
    data = write_beir(tmp_path / "beir", pair_rows(80))
    training = load_training_data(data)
    queries, documents = training.all_texts()
    unique = len({*queries, *documents})  # no prompt: a text seen as query and as document is one cache entry

    code = run_train(
        encoder_dir, data, tmp_path / "run1", tmp_path / "cache", "--epochs", "2", "--learning-rate", "1e-3", "3e-3"
    )
    assert code == 0
    assert count_encoder_texts["texts"] == unique
    summary = json.loads((tmp_path / "run1" / "training_summary.json").read_text())
    assert summary["encoder_calls"] == unique
    assert (tmp_path / "run1" / "evaluation" / "training-dev-curves.png").stat().st_size > 1000

    count_encoder_texts["texts"] = 0
    code = run_train(
        encoder_dir,
        data,
        tmp_path / "run2",
        tmp_path / "cache",
        "--epochs",
        "3",
        "--learning-rate",
        "2e-3",
        "--kind",
        "mlp",
    )
    assert code == 0
    assert count_encoder_texts["texts"] == 0
    assert json.loads((tmp_path / "run2" / "training_summary.json").read_text())["encoder_calls"] == 0


def test_saved_model_equals_what_training_saw_and_encoder_is_untouched(tmp_path, encoder_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(100))
    assert (
        run_train(encoder_dir, data, tmp_path / "run", tmp_path / "cache", "--epochs", "2", "--learning-rate", "3e-3")
        == 0
    )
    trained = SentenceTransformer(str(tmp_path / "run"), trust_remote_code=True)
    original = SentenceTransformer(str(encoder_dir))
    assert state_hash(trained[0]) == state_hash(original[0]), "the frozen encoder's weights changed"
    head = find_head(trained)
    assert head.delta.abs().sum() > 0, "the head did not train"

    texts = [row["query"] for row in pair_rows(100)[:20]]
    cache = EmbeddingCache(prefix_model(trained), root=tmp_path / "cache", show_progress_bar=False)
    twin = cached_twin(trained, cache)
    for encode in ("encode_query", "encode_document"):
        uncached = getattr(trained, encode)(texts, convert_to_tensor=True)
        cached = getattr(twin, encode)(texts, convert_to_tensor=True)
        assert torch.allclose(uncached, cached, atol=1e-5), encode
    assert cache.encoded_texts == 0, "the training cache should already hold these texts"
    assert not list((tmp_path / "run").glob("trials/*/checkpoints")), "finished trials keep no checkpoints"


def test_users_failing_recipe_trips_the_guard_and_defaults_do_not(tmp_path, encoder_dir, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(120))
    naive = ["--kind", "mlp", "--init", "default", "--loss", "cosine-mse", "--learning-rate", "1e-5", "--epochs", "3"]
    assert run_train(encoder_dir, data, tmp_path / "naive", tmp_path / "cache", *naive) == 3
    err = capsys.readouterr().err
    assert "stopped by the collapse guard" in err
    assert "1e-05 is too low for a head; try 1e-3" in err
    assert "use the ranking loss" in err

    assert (
        run_train(
            encoder_dir, data, tmp_path / "default", tmp_path / "cache", "--epochs", "3", "--learning-rate", "3e-3"
        )
        == 0
    )
    summary = json.loads((tmp_path / "default" / "training_summary.json").read_text())
    assert summary["guard"].startswith("passed")
    assert not any(trial["stopped"] for trial in summary["trials"])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "empty"),
        ([{"question": "a", "answer": "b"}] * 20, "needs a 'query' column"),
        ([{"query": "a", "text": "b"}] * 20, "needs a 'positive' column"),
        ([{"query": f"q{i}", "document": "d", "label": 1.5} for i in range(20)], "numbers in [0, 1]"),
        ([{"query": f"q{i}", "document": "d", "label": float("nan")} for i in range(20)], "numbers in [0, 1]"),
        ([{"query": f"q{i}", "positive": i} for i in range(20)], "must hold text"),
    ],
)
def test_bad_training_input_fails_before_any_model_loads(tmp_path, rows, message, capsys, monkeypatch):
    # Patched where the run looks it up (modeling.training.run imported the name), so the patch really bites.
    monkeypatch.setattr(
        "modeling.training.run.load_encoder", lambda *a, **k: pytest.fail("model loaded before validation")
    )
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert train.main(["--data", str(path), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_qrels_naming_unknown_ids_fail_clearly(tmp_path, capsys):
    folder = write_beir(tmp_path / "beir", pair_rows(40))
    with open(folder / "qrels" / "train.tsv", "a") as qrels:
        qrels.write("q1\tno-such-doc\t1\nno-such-query\td1\t1\n")
    assert train.main(["--data", str(folder), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no-such-doc" in err and "no-such-query" in err


def test_hard_negatives_never_take_another_positive_of_the_query(tmp_path, encoder_dir):
    from modeling.training.dataset import ranking_dataset, training_dataset

    rows = pair_rows(60)
    rows += [{"query": rows[i]["query"], "positive": rows[i + 1]["positive"]} for i in range(0, 40, 2)]
    data = load_training_data(write_jsonl(tmp_path / "pairs.jsonl", rows), dev_fraction=0.1)
    encoder = SentenceTransformer(str(encoder_dir))
    cache = EmbeddingCache(prefix_model(encoder), root=tmp_path / "cache", show_progress_bar=False)
    twin = cached_twin(encoder, cache)
    mined = training_dataset(data, "mnrl", 3, twin)
    assert len(mined.column_names) == 5 and len(ranking_dataset(data)) >= len(mined) > 0
    for row in mined:
        values = list(row.values())
        positives = set(data.pairs[values[0]])
        assert not positives & set(values[2:]), f"a known positive was mined as a negative for {values[0]!r}"


def test_torchrun_two_processes_finishes(tmp_path, encoder_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(120))
    output = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
        str(REPO / "train.py"), "--encoder", str(encoder_dir), "--data", str(data), "--output-dir", str(output),
        "--cache-dir", str(tmp_path / "cache"), "--quiet", "--epochs", "2", "--learning-rate", "3e-3", "--weight-decay", "0", "--batch-size", "16",
        "--hard-negatives", "0",  # on this tiny random encoder, 2 epochs with hard negatives keep the identity on dev
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["trained_dev"]["ndcg@10"] > 0
    model = SentenceTransformer(str(output), trust_remote_code=True)
    assert find_head(model).delta.abs().sum() > 0
