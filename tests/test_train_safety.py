"""train.py loses nothing and does nothing wrong in silence: resume, output folders, bad input, given negatives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from modeling.cli import train
from modeling.data.training_data import load_training_data
from tests.training_fixtures import file_hash, pair_rows, run_train, wait_for, write_beir, write_jsonl

REPO = Path(__file__).resolve().parent.parent
QUICK = ("--epochs", "2", "--learning-rate", "1e-3", "--weight-decay", "0")


@pytest.fixture()
def no_model_load(monkeypatch):
    """Fails the test if the run gets as far as loading the encoder (the error must come before any work)."""
    monkeypatch.setattr("modeling.training.run.load_encoder", lambda *a, **k: pytest.fail("model loaded"))


# --- issue 9.1: --resume continues exactly the run it was given ------------------------------------------------


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("--epochs", "3"), "epochs: stored 2, now 3"),
        (("--kind", "mlp"), "kind: stored 'linear', now 'mlp'"),
        (("--loss", "cosine-mse"), "loss: stored 'mnrl', now 'cosine-mse'"),
        (("OTHER-DATA",), "the data differs"),
    ],
)
def test_resume_refuses_trials_of_another_run(tmp_path, encoder_dir, capsys, change, says):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(100))
    other = write_jsonl(tmp_path / "other.jsonl", pair_rows(100, seed=1))
    output, cache = tmp_path / "run", tmp_path / "cache"
    assert run_train(encoder_dir, data, output, cache, *QUICK) == 0
    before = file_hash(output / "model.safetensors")
    capsys.readouterr()
    quick = dict(zip(QUICK[::2], QUICK[1::2]))
    if change == ("OTHER-DATA",):
        code = run_train(encoder_dir, other, output, cache, *[x for kv in quick.items() for x in kv], "--resume")
    else:
        quick.update(dict(zip(change[::2], change[1::2])))
        code = run_train(encoder_dir, data, output, cache, *[x for kv in quick.items() for x in kv], "--resume")
    assert code == 2
    err = capsys.readouterr().err
    assert says in err and "start fresh" in err and "--resume" in err
    assert file_hash(output / "model.safetensors") == before, "the refused run changed the saved model"


def test_resume_with_the_same_run_reuses_its_trials(tmp_path, encoder_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(100))
    output, cache = tmp_path / "run", tmp_path / "cache"
    assert run_train(encoder_dir, data, output, cache, *QUICK) == 0
    trial = output / "trials" / "lr-0.001-wd-0" / "trial.json"
    stamp = trial.stat().st_mtime_ns
    assert run_train(encoder_dir, data, output, cache, *QUICK, "--resume") == 0
    assert trial.stat().st_mtime_ns == stamp, "a finished trial of the same run was retrained"


# --- issue 9.2: a killed trial continues from its last complete checkpoint, bit-identical ----------------------


def test_kill_minus_nine_then_resume_continues_mid_trial_and_matches_an_uninterrupted_run(tmp_path, encoder_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(120))

    def command(output: Path) -> list[str]:
        return [
            sys.executable, str(REPO / "train.py"), "--encoder", str(encoder_dir), "--data", str(data),
            "--output-dir", str(output), "--cache-dir", str(tmp_path / "cache"), "--quiet", "--no-refit",
            "--epochs", "30", "--learning-rate", "1e-3", "--weight-decay", "0", "--batch-size", "8",
            "--checkpoint-seconds", "0",  # a resume point every epoch (the default waits 60 s between them)
        ]  # fmt: skip

    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    output = tmp_path / "killed"
    process = subprocess.Popen(command(output), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = output / "trials" / "lr-0.001-wd-0" / "checkpoints"
    try:
        assert wait_for(lambda: len(list(checkpoints.glob("checkpoint-*/trainer_state.json"))) >= 2, timeout=240)
    finally:
        process.kill()  # SIGKILL: no cleanup, exactly a crash
        process.wait()
    assert not (output / "modules.json").exists(), "the run finished before it was killed; make it longer"
    weights = list(checkpoints.rglob("*.safetensors"))
    assert weights and all(p.stat().st_size < 100_000 for p in weights), "checkpoints must hold the head only"

    resumed = subprocess.run(
        [*command(output), "--resume"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = subprocess.run(
        command(tmp_path / "straight"), env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert straight.returncode == 0, straight.stderr[-3000:]

    trial = json.loads((output / "trials" / "lr-0.001-wd-0" / "trial.json").read_text())
    assert trial["resumed_from_step"] > 0, "the rerun started the trial at step 0"
    uninterrupted = json.loads((tmp_path / "straight" / "trials" / "lr-0.001-wd-0" / "trial.json").read_text())
    assert trial["steps"] == uninterrupted["steps"]
    for name in ("trials/lr-0.001-wd-0/head.safetensors", "model.safetensors"):
        assert file_hash(output / name) == file_hash(tmp_path / "straight" / name), name
    heads = [sorted((p.relative_to(root), file_hash(p)) for p in root.rglob("*.safetensors") if "trials" not in p.parts)
             for root in (output, tmp_path / "straight")]  # fmt: skip
    assert heads[0] == heads[1], "the resumed model differs from the uninterrupted one"


# --- issue 9.3: the output folder -----------------------------------------------------------------------------


def test_a_folder_of_someone_elses_files_is_refused_before_any_work(tmp_path, capsys, no_model_load):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(100))
    folder = tmp_path / "theirs"
    folder.mkdir()
    for name in ("README.md", "config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text(f"their {name}")
    assert train.main(["--data", str(data), "--output-dir", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "not empty" in err
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert (folder / "README.md").read_text() == "their README.md"


def test_an_output_dir_naming_a_file_is_an_error_before_work(tmp_path, capsys, no_model_load):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(100))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--data", str(data), "--output-dir", str(tmp_path / "file.txt"), "--quiet"])
    assert exit_info.value.code == 2
    assert "is a file" in capsys.readouterr().err


def test_retraining_replaces_an_earlier_model_as_a_whole(tmp_path, encoder_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(100))
    output, cache = tmp_path / "run", tmp_path / "cache"
    assert run_train(encoder_dir, data, output, cache, *QUICK) == 0
    stale = output / "evaluation" / "old-plot.png"
    stale.write_bytes(b"stale")
    assert run_train(encoder_dir, data, output, cache, *QUICK) == 0
    assert not stale.exists(), "a plot of the previous model survived the retraining"
    assert (output / "evaluation" / "training-dev-curves.png").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")], "staging folders left behind"
    assert SentenceTransformer(str(output), trust_remote_code=True).encode_query(["red shoe"]).shape == (1, 32)


# --- issue 9.10: bad input, a clear error before work, exit code 2 ---------------------------------------------


def test_a_relative_data_path_that_does_not_exist_is_a_missing_file(tmp_path, capsys, monkeypatch, no_model_load):
    monkeypatch.chdir(tmp_path)
    assert train.main(["--data", "nope.csv", "--output-dir", "out", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nope.csv" in err and "file not found" in err and "Hub" not in err


def test_a_relative_encoder_path_that_does_not_exist_is_a_missing_file(tmp_path, capsys, monkeypatch, no_model_load):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(100))
    monkeypatch.chdir(tmp_path)
    assert train.main(["--data", str(data), "--encoder", "./no-encoder", "--output-dir", "out", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no-encoder" in err and "file not found" in err


def test_a_latin1_corpus_names_the_file(tmp_path, capsys, no_model_load):
    folder = write_beir(tmp_path / "beir", pair_rows(40))
    corpus = folder / "corpus.jsonl"
    corpus.write_bytes(corpus.read_bytes() + '{"_id": "x", "title": "", "text": "café"}\n'.encode("latin-1"))
    assert train.main(["--data", str(folder), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(corpus) in err and "UTF-8" in err


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_query_in_a_beir_folder_is_rejected_like_in_a_csv(tmp_path, capsys, text, no_model_load):
    folder = write_beir(tmp_path / "beir", pair_rows(40))
    lines = (folder / "queries.jsonl").read_text().splitlines()
    lines[0] = json.dumps({"_id": "q0", "text": text})
    (folder / "queries.jsonl").write_text("\n".join(lines) + "\n")
    assert train.main(["--data", str(folder), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 2
    assert "empty text" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags", [("--learning-rate", "nan"), ("--learning-rate", "inf"), ("--dev-fraction", "-1"), ("--dev-fraction", "1")]
)
def test_flags_out_of_range_are_rejected_by_the_parser(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(list(flags))
    assert exit_info.value.code == 2
    assert flags[0] in capsys.readouterr().err


# --- issue 10, first bullet: negatives given in the data reach the loss -----------------------------------------


def _rows_with_negatives(negatives_seed: int) -> list[dict]:
    rows = pair_rows(60)
    others = pair_rows(60, seed=100 + negatives_seed)
    return [{**row, "negative": other["positive"]} for row, other in zip(rows, others)]


def _loss_of(dataset, encoder, loss_name: str) -> float:
    from modeling.training.losses import make_loss

    loss = make_loss(loss_name, encoder)
    texts = [c for c in dataset.column_names if c != "label"]
    features = [encoder.tokenize(dataset[column]) for column in texts]
    labels = torch.tensor(dataset["label"]) if "label" in dataset.column_names else None
    with torch.no_grad():
        return float(loss(features, labels))


@pytest.mark.parametrize("loss_name", ["mnrl", "cosine-mse", "contrastive"])
def test_given_negatives_reach_the_loss(tmp_path, encoder_dir, loss_name):
    from modeling.training.dataset import training_dataset

    encoder = SentenceTransformer(str(encoder_dir))
    datasets = []
    for seed in (0, 1):
        data = load_training_data(write_jsonl(tmp_path / f"pairs{seed}.jsonl", _rows_with_negatives(seed)))
        datasets.append(training_dataset(data, loss_name, 0, twin=None))
    if loss_name == "mnrl":
        assert datasets[0].column_names == ["query", "positive", "negative_1"]
    given = {row["negative"] for row in _rows_with_negatives(0)}
    texts = set(datasets[0]["negative_1"] if loss_name == "mnrl" else datasets[0]["document"])
    assert given & texts, "no given negative is in the training rows"
    assert _loss_of(datasets[0], encoder, loss_name) != pytest.approx(_loss_of(datasets[1], encoder, loss_name))


def test_given_negatives_are_kept_and_mined_ones_added(tmp_path, encoder_dir):
    from modeling.cache.cached_input import cached_twin, prefix_model
    from modeling.cache.embedding_cache import EmbeddingCache
    from modeling.training.dataset import training_dataset

    data = load_training_data(write_jsonl(tmp_path / "pairs.jsonl", _rows_with_negatives(0)))
    encoder = SentenceTransformer(str(encoder_dir))
    twin = cached_twin(encoder, EmbeddingCache(prefix_model(encoder), root=tmp_path / "cache", show_progress_bar=False))
    rows = training_dataset(data, "mnrl", 2, twin)
    assert rows.column_names == ["query", "positive", "negative_1", "negative_2", "negative_3"]
    for row in rows:
        assert row["negative_1"] in data.negatives[row["query"]], "the given negative comes first"


def test_resume_points_are_timed_and_the_best_epoch_travels_with_them(tmp_path):
    """A checkpoint is let through once ``--checkpoint-seconds`` passed (0: every epoch), and holds the best so far."""
    from types import SimpleNamespace

    from transformers import TrainerControl

    from modeling.training.trial import BestEpochInMemory, ResumePoints, head_state

    def epoch_end(points: ResumePoints) -> bool:
        control = TrainerControl(should_save=True)
        return points.on_epoch_end(None, None, control).should_save

    assert epoch_end(ResumePoints(0)) is True
    assert epoch_end(ResumePoints(60)) is False
    waited = ResumePoints(60)
    waited.last -= 61
    assert epoch_end(waited) is True

    head = torch.nn.Linear(3, 3)
    best = BestEpochInMemory(head, "eval_dev")
    state = SimpleNamespace(global_step=4, is_world_process_zero=True)
    best.on_evaluate(None, state, None, metrics={"eval_dev": 0.5})
    kept = head_state(head)
    with torch.no_grad():
        head.weight.add_(1.0)
    best.on_evaluate(None, SimpleNamespace(global_step=8), None, metrics={"eval_dev": 0.5})  # a tie: the first stays
    (tmp_path / "checkpoint-8").mkdir()
    best.on_save(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=8, is_world_process_zero=True),
                 None)  # fmt: skip
    again = BestEpochInMemory(head, "eval_dev")
    again.restore(str(tmp_path / "checkpoint-8"))
    again.on_train_end(None, None, None)
    assert again.step == 4 and all(torch.equal(head.state_dict()[k], v) for k, v in kept.items())
