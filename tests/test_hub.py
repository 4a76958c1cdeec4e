"""Pushing to the Hub (a fake one): what is uploaded, that it loads back anywhere, and that the token stays secret."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from model_card import install_card_data, prepare_card
from modeling.hub import PushError, main, model_files, preflight, push_model
from modeling.model.build import build_model, find_head, save_model
from tests.fake_hub import FAKE_TOKEN, fake_hub  # noqa: F401  (fake_hub is a fixture)
from tests.subprocess_load import load_in_subprocess

TEXTS = ["red running shoes", "a blue coffee mug", "cheap wooden desk lamp"]
JUNK = {  # what a training output folder holds besides the model; none of it may be pushed
    "checkpoint-2/model.safetensors": b"old weights",
    "checkpoint-2/optimizer.pt": b"optimizer state",
    ".cache/huggingface/upload/x.lock": b"",
    "runs/events.out.tfevents": b"logs",
    "eval/Information-Retrieval_evaluation_dev_results.csv": b"epoch,steps\n",
    "training_args.bin": b"pickle",
    "trainer_state.json": b"{}",
    "embedding-cache/abc.npy": b"\x93NUMPY",
    "evaluation/per_query.json": b'{"q1": 0.5}',
}
PLOT = "evaluation/ndcg_by_slice.png"


def saved_model(encoder, placement: str, folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A model with a non-identity head, saved with its card; and its embeddings before any push."""
    model = build_model(encoder, kind="linear", placement=placement)
    with torch.no_grad():
        find_head(model).delta.add_(
            0.2 * torch.randn(find_head(model).delta.shape, generator=torch.Generator().manual_seed(1))
        )
    install_card_data(model)
    prepare_card(model, training_info={"dataset_name": "toy"})
    save_model(model, folder)
    expected = {"query": model.encode_query(TEXTS), "document": model.encode_document(TEXTS)}
    return folder, expected


def tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def child_env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    return {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "child-hf-home"),
        "HF_TOKEN": FAKE_TOKEN,
    }


@pytest.mark.parametrize("placement", ["query", "symmetric"])
def test_push_then_load_by_repo_id_in_a_fresh_process_without_this_package(tiny, tmp_path, fake_hub, placement):  # noqa: F811
    folder, expected = saved_model(tiny, placement, tmp_path / "model")
    saved = set(tree(folder))
    for name, data in {**JUNK, PLOT: b"\x89PNG fake"}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    before = tree(folder)
    repo_id = f"org/tiny-{placement}"

    url = push_model(folder, repo_id, private=placement == "query")

    assert url.endswith(fake_hub.repos[repo_id].sha)
    assert fake_hub.repos[repo_id].private is (placement == "query")
    pushed = fake_hub.files(repo_id)
    assert set(pushed) == saved | {PLOT}, "exactly the saved model plus the card's plot"
    assert {
        "frozen_head/projection_head.py",
        "modules.json",
        "README.md",
        "model.safetensors",
        "config_sentence_transformers.json",
    } <= set(pushed)
    assert any(path.endswith("ProjectionHead/model.safetensors") for path in pushed)
    assert f'SentenceTransformer("{repo_id}", trust_remote_code=True)' in pushed["README.md"].decode()
    assert tree(folder) == before, "the local folder is never modified"

    with fake_hub.serve() as endpoint:
        loaded = load_in_subprocess(repo_id, TEXTS, env=child_env(endpoint, tmp_path))
    assert "error" not in loaded, loaded
    assert loaded["head_module"].startswith("transformers_modules."), (
        "the head's code came from the repo, not this package"
    )
    for side in ("query", "document"):
        assert np.abs(np.array(loaded[side]) - expected[side]).max() <= 1e-6
    gap = np.abs(expected["query"] - expected["document"]).max()
    assert (gap > 1e-3) if placement == "query" else (gap == 0), "the head is applied where the placement says"


def test_loading_without_trust_remote_code_says_to_pass_it(tiny, tmp_path, fake_hub):  # noqa: F811
    folder, _ = saved_model(tiny, "query", tmp_path / "model")
    push_model(folder, "org/untrusted")
    with fake_hub.serve() as endpoint:
        loaded = load_in_subprocess("org/untrusted", TEXTS, trust=False, env=child_env(endpoint, tmp_path))
    assert "trust_remote_code=True" in loaded.get("error", ""), loaded


def test_repush_mirrors_the_model_and_keeps_gitattributes(tiny, tmp_path, fake_hub):  # noqa: F811
    folder, _ = saved_model(tiny, "symmetric", tmp_path / "model")
    push_model(folder, "org/mirror")
    files = fake_hub.repos["org/mirror"].commits[-1][1]
    files["stale/old_head.safetensors"] = b"from an older layout"
    push_model(folder, "org/mirror")
    assert "stale/old_head.safetensors" not in fake_hub.repos["org/mirror"].files
    assert ".gitattributes" in fake_hub.repos["org/mirror"].files
    assert set(fake_hub.files("org/mirror")) == set(model_files(folder))


def test_token_never_appears_in_pushed_files_logs_or_output(tiny, tmp_path, fake_hub, caplog, capsys):  # noqa: F811
    folder, _ = saved_model(tiny, "query", tmp_path / "model")
    caplog.set_level(logging.DEBUG)

    assert main(["push", str(folder), "org/secret", "--private"]) == 0

    writes = [r for r in fake_hub.requests if r.method == "POST" and "validate-yaml" not in r.path]
    assert writes and all(r.authorization == f"Bearer {FAKE_TOKEN}" for r in writes), "the token from HF_TOKEN was used"
    captured = capsys.readouterr()
    assert "org/secret/commit/" in captured.out
    token = FAKE_TOKEN.encode()
    assert not [path for path, data in fake_hub.repos["org/secret"].files.items() if token in data]
    assert not [r.path for r in fake_hub.requests if FAKE_TOKEN in r.path or token in r.body]
    assert FAKE_TOKEN not in caplog.text + captured.out + captured.err
    assert not [p for p in folder.rglob("*") if p.is_file() and token in p.read_bytes()]


def test_token_from_the_standard_login(tiny, tmp_path, fake_hub, monkeypatch):  # noqa: F811
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN")
    login_token = "hf_FakeLoginToken9876543210"
    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True, exist_ok=True)
    Path(constants.HF_TOKEN_PATH).write_text(login_token)
    folder, _ = saved_model(tiny, "query", tmp_path / "model")
    push_model(folder, "org/login")
    assert fake_hub.requests[-1].authorization == f"Bearer {login_token}"


def test_failed_push_keeps_the_folder_and_says_how_to_retry(tiny, tmp_path, fake_hub, capsys):  # noqa: F811
    folder, _ = saved_model(tiny, "query", tmp_path / "my model")
    before = tree(folder)
    fake_hub.fail_on["commit"] = 403  # a 5xx would be retried with backoff by huggingface_hub: slow

    with pytest.raises(PushError) as failure:
        push_model(folder, "org/flaky", private=True)
    message = str(failure.value)
    assert "intact" in message and "may write to org" in message
    assert f"python -m modeling.hub push '{folder}' org/flaky --private" in message
    assert FAKE_TOKEN not in message
    assert tree(folder) == before

    assert main(["push", str(folder), "org/flaky"]) == 1
    assert "To retry: python -m modeling.hub push" in capsys.readouterr().err

    del fake_hub.fail_on["commit"]
    assert main(["push", str(folder), "org/flaky"]) == 0, "the printed retry works once the Hub is back"


@pytest.mark.parametrize(
    "breakage, says",
    [
        ("frozen_head/projection_head.py", "frozen_head/projection_head.py (the code of a module"),
        ("README.md", "README.md is missing"),
        ("model.safetensors", "no *.safetensors encoder weights"),
    ],
)
def test_incomplete_folder_is_refused_before_any_request(tiny, tmp_path, fake_hub, breakage, says):  # noqa: F811
    folder, _ = saved_model(tiny, "query", tmp_path / "model")
    (folder / breakage).unlink()
    with pytest.raises(ValueError, match="not a complete model") as refused:
        push_model(folder, "org/broken")
    assert says in str(refused.value)
    assert fake_hub.requests == []


def test_local_problems_are_reported_before_any_request(tiny, tmp_path, fake_hub, monkeypatch):  # noqa: F811
    from huggingface_hub import constants

    folder, _ = saved_model(tiny, "query", tmp_path / "model")
    with pytest.raises(ValueError, match="org/name"):
        push_model(folder, "no-organisation")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ValueError, match="HF_TOKEN"):
        push_model(folder, "org/anonymous")
    with pytest.raises(ValueError, match="HF_TOKEN"):
        preflight("org/anonymous")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        push_model(folder, "org/offline", token=FAKE_TOKEN)
    assert fake_hub.requests == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert preflight("org/ok", token=FAKE_TOKEN) == FAKE_TOKEN


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["push", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "MODEL_DIR" in out and "ORG/NAME" in out and "--private" in out


@pytest.mark.integration
def test_default_encoder_model_round_trips_through_the_hub(tmp_path, fake_hub):  # noqa: F811
    """The real all-MiniLM-L6-v2 (offline copy) with a query-only head: push, load by repo id elsewhere, same embeddings."""
    folder, expected = saved_model(None, "query", tmp_path / "model")
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in (folder / "README.md").read_text()
    push_model(folder, "org/minilm-head")
    with fake_hub.serve() as endpoint:
        loaded = load_in_subprocess("org/minilm-head", TEXTS, env=child_env(endpoint, tmp_path))
    assert "error" not in loaded, loaded
    for side in ("query", "document"):
        assert np.abs(np.array(loaded[side]) - expected[side]).max() <= 1e-6


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_module_paths_leaving_the_folder_are_refused_and_nothing_is_staged(tiny, tmp_path, fake_hub, how, monkeypatch):  # noqa: F811
    import json
    import tempfile

    folder, _ = saved_model(tiny, "symmetric", tmp_path / "model")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text('{"secret": "not part of the model"}')
    (outside / "model.safetensors").write_bytes(b"someone else's weights")
    modules = json.loads((folder / "modules.json").read_text())
    if how == "symlink":
        (folder / "2_ProjectionHead" / "config.json").unlink()
        (folder / "2_ProjectionHead" / "config.json").symlink_to(outside / "config.json")
    else:
        modules[2]["path"] = "../outside" if how == "dotdot" else str(outside)
        (folder / "modules.json").write_text(json.dumps(modules))
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))

    with pytest.raises(ValueError, match="leads outside the folder"):
        push_model(folder, "org/escape")
    assert fake_hub.requests == []
    assert list(temp_root.iterdir()) == [], "nothing left in the temp folder"


def test_stock_model_pushes_and_loads_from_the_hub_without_remote_code(tiny, tmp_path, fake_hub):  # noqa: F811
    from modeling.model.stock import export_stock

    model = build_model(tiny, kind="linear", placement="query")
    with torch.no_grad():
        find_head(model).delta.add_(
            0.2 * torch.randn(find_head(model).delta.shape, generator=torch.Generator().manual_seed(1))
        )
    install_card_data(model)
    prepare_card(model, training_info={"dataset_name": "toy"})
    expected = {"query": model.encode_query(TEXTS), "document": model.encode_document(TEXTS)}
    folder = export_stock(model, tmp_path / "stock")
    push_model(folder, "org/stock")
    pushed = fake_hub.files("org/stock")
    assert not [name for name in pushed if name.endswith(".py")]
    assert 'SentenceTransformer("org/stock")' in pushed["README.md"].decode()
    with fake_hub.serve() as endpoint:
        loaded = load_in_subprocess("org/stock", TEXTS, trust=False, env=child_env(endpoint, tmp_path))
    assert "error" not in loaded, loaded
    for side in ("query", "document"):
        assert np.abs(np.array(loaded[side]) - expected[side]).max() <= 1e-6
