"""The stock format: a linear head as the library's own Dense (in its Router for queries), loading without
trust_remote_code and without this package, with the custom format's embeddings."""

from __future__ import annotations

import json
import re

import pytest
import torch

from model_card import install_card_data, prepare_card
from modeling.integrations.snippets import STACK_START
from modeling.model.build import build_model, save_model
from modeling.model.stock import StockFormatError, convert_folder, export_stock, main, module_types, to_stock
from tests.subprocess_load import load_in_subprocess
from tests.test_core_model import TEXTS, assert_same, embeddings, perturb


@pytest.mark.parametrize("placement, out_features", [("query", None), ("symmetric", None), ("symmetric", 8)])
def test_stock_export_loads_without_remote_code_and_equals_custom(tiny, tmp_path, placement, out_features):
    model = build_model(tiny, placement=placement, out_features=out_features)
    perturb(model)
    expected = embeddings(model)
    folder = export_stock(model, tmp_path / "stock")
    types = module_types(folder)
    assert all(kind.startswith("sentence_transformers.") for kind in types), types
    assert "sentence_transformers.base.modules.dense.Dense" in types
    assert not list(folder.rglob("*.py"))
    loaded = load_in_subprocess(str(folder), TEXTS, trust=False, hide_package=True)
    assert_same(expected, loaded)
    gap = (expected["query"] - expected["document"]).abs().max().item()
    assert (gap > 1e-3) if placement == "query" else gap == 0


def test_identity_start_is_a_residual_dense_and_trains_like_the_head(tiny):
    model = build_model(tiny, placement="symmetric")
    dense = to_stock(model)[2]
    assert dense.use_residual and torch.count_nonzero(dense.linear.weight) == 0  # y = x + D x + b, D = 0 at step 0


def test_mlp_head_is_refused_naming_kind_linear(tiny, tmp_path):
    model = build_model(tiny, kind="mlp", placement="query")
    with pytest.raises(StockFormatError, match="--kind linear"):
        export_stock(model, tmp_path / "stock")
    assert not (tmp_path / "stock").exists(), "nothing written before the error"


def test_weights_follow_the_umask(tiny, tmp_path):
    model = build_model(tiny, placement="query")
    stock = export_stock(model, tmp_path / "stock")
    custom = save_model(model, tmp_path / "custom")
    head_weights = list(custom.glob("*/*/model.safetensors")) + list(stock.rglob("*.safetensors"))
    assert head_weights
    for path in head_weights:
        assert path.stat().st_mode & 0o777 == 0o644, (path, oct(path.stat().st_mode))  # umask 022 in tests


def card_model(tiny, placement: str, kind: str = "linear"):
    model = build_model(tiny, kind=kind, placement=placement)
    perturb(model)
    install_card_data(model)
    prepare_card(model, training_info={"dataset_name": "toy"})
    return model


@pytest.mark.parametrize("placement", ["query", "symmetric"])
def test_card_says_which_format(tiny, tmp_path, placement):
    model = card_model(tiny, placement)
    custom = (save_model(model, tmp_path / "custom") / "README.md").read_text()
    stock = (export_stock(model, tmp_path / "stock") / "README.md").read_text()
    assert "**Format: custom.**" in custom and "trust_remote_code=True" in custom
    assert "**Format: stock.**" in stock and not re.search(r"trust_remote_code\W+True", stock)
    assert STACK_START in custom and STACK_START in stock


def test_convert_cli_turns_a_custom_folder_into_a_stock_one(tiny, tmp_path, capsys):
    model = card_model(tiny, "query")
    expected = embeddings(model)
    source = save_model(model, tmp_path / "custom")
    assert main([str(source), str(tmp_path / "stock")]) == 0
    target = tmp_path / "stock"
    assert all(kind.startswith("sentence_transformers.") for kind in module_types(target))
    assert_same(expected, load_in_subprocess(str(target), TEXTS, trust=False, hide_package=True))
    card = (target / "README.md").read_text()
    assert "**Format: stock.**" in card and not re.search(r"trust_remote_code\W+True", card)
    assert "projection_head.py" not in card
    # bad input: exit code 2 with a message, nothing overwritten
    assert main([str(source), str(target)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([str(target), str(tmp_path / "again")]) == 2
    assert "already in the stock format" in capsys.readouterr().err
    mlp = save_model(card_model(tiny, "query", kind="mlp"), tmp_path / "mlp")
    assert main([str(mlp), str(tmp_path / "mlp-stock")]) == 2
    assert "--kind linear" in capsys.readouterr().err
    modules = json.loads((target / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Router", "Normalize"]


def test_convert_refuses_a_folder_that_is_no_model(tmp_path):
    with pytest.raises(ValueError, match="no modules.json"):
        convert_folder(tmp_path, tmp_path / "out")


def test_train_format_stock_saves_a_stock_model_whose_card_says_so(tmp_path, capsys):
    from tests.training_fixtures import pair_rows, run_train, save_tiny_encoder, write_beir

    encoder = save_tiny_encoder(tmp_path / "encoder")
    data = write_beir(tmp_path / "data", pair_rows(60))
    out = tmp_path / "run"
    args = (
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--learning-rate",
        "1e-3",
        "--weight-decay",
        "0",
        "--format",
        "stock",
    )
    assert run_train(encoder, data, out, tmp_path / "cache", *args) == 0
    assert "trust_remote_code" not in capsys.readouterr().out.split("load it with")[-1].splitlines()[0]
    assert all(kind.startswith("sentence_transformers.") for kind in module_types(out))
    card = (out / "README.md").read_text()
    assert "**Format: stock.**" in card and not re.search(r"trust_remote_code\W+True", card)
    loaded = load_in_subprocess(str(out), TEXTS, trust=False, hide_package=True)
    assert "error" not in loaded, loaded


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--format", "onnx"], "invalid choice: 'onnx'"),
        (["--format", "stock", "--kind", "mlp"], "--kind linear"),
    ],
)
def test_train_format_bad_input_exits_2_before_any_work(tmp_path, capsys, argv, says):
    from modeling.cli import train

    with pytest.raises(SystemExit) as stopped:
        train.main(["--output-dir", str(tmp_path / "out"), *argv])
    assert stopped.value.code == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
