"""``train.py --push-to-hub``: trains, saves, pushes the model (and only it) to the fake Hub; bad repo ids fail early."""

from __future__ import annotations

import pytest

from modeling.cli import train
from tests.fake_hub import FAKE_TOKEN, fake_hub  # noqa: F401  (fake_hub is a fixture)
from tests.training_fixtures import pair_rows, save_tiny_encoder, write_jsonl


def test_train_with_push_to_hub(tmp_path, fake_hub, capsys):  # noqa: F811
    encoder = save_tiny_encoder(tmp_path / "encoder")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(100))
    output = tmp_path / "run"
    code = train.main([
        "--encoder", str(encoder), "--data", str(data), "--output-dir", str(output), "--cache-dir", str(tmp_path / "cache"),
        "--quiet", "--epochs", "2", "--learning-rate", "3e-3", "--push-to-hub", "org/pushed-head", "--private",
    ])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    pushed = fake_hub.files("org/pushed-head")
    assert fake_hub.repos["org/pushed-head"].private
    assert {"frozen_head/projection_head.py", "modules.json", "README.md", "training_summary.json"} & set(pushed) == {
        "frozen_head/projection_head.py", "modules.json", "README.md",
    }  # fmt: skip
    assert not any(path.startswith(("trials/", "checkpoints/")) for path in pushed)
    assert "evaluation/training-dev-curves.png" in pushed
    assert FAKE_TOKEN not in out.out + out.err
    assert all(FAKE_TOKEN.encode() not in content for content in pushed.values())


@pytest.mark.parametrize("repo_id", ["no-slash", "org/"])
def test_bad_repo_id_fails_before_training(tmp_path, repo_id, capsys, monkeypatch):
    monkeypatch.setattr(
        "modeling.training.run.train", lambda *a, **k: pytest.fail("trained before checking the repo id")
    )
    try:
        code = train.main(["--output-dir", str(tmp_path / "run"), "--push-to-hub", repo_id, "--quiet"])
    except SystemExit as exit_:  # argparse's own check of the ORG/NAME shape
        code = exit_.code
    assert code == 2
    assert "org" in capsys.readouterr().err.lower()
