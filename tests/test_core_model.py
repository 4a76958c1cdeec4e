"""The core: a ProjectionHead on a frozen encoder, both placements, save/load anywhere."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from modeling import ProjectionHead, build_model, find_head, save_model
from modeling.model.build import freeze
from modeling.model.projection_head import SOURCE_FILE
from tests.subprocess_load import load_in_subprocess
from tests.tiny_encoder import tiny_encoder

TEXTS = ["red leather boots", "a warm wool cup of tea", "the cat and the dog", "cheap phone case"]
PLACEMENTS = ["query", "symmetric"]


def perturb(model, seed: int = 0) -> None:
    """Move the head away from its identity start so a broken load could not pass by accident."""
    head = find_head(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def embeddings(model) -> dict[str, torch.Tensor]:
    return {
        "query": model.encode_query(TEXTS, convert_to_tensor=True),
        "document": model.encode_document(TEXTS, convert_to_tensor=True),
    }


def assert_same(expected: dict[str, torch.Tensor], loaded: dict) -> None:
    assert "error" not in loaded, loaded.get("error")
    for side in ("query", "document"):
        difference = (expected[side] - torch.tensor(loaded[side])).abs().max().item()
        assert difference <= 1e-6, f"{side}: max abs diff {difference}"


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_step_zero_equals_base(tiny, placement, kind):
    base = embeddings(tiny)
    model = build_model(tiny, kind=kind, placement=placement)
    got = embeddings(model)
    for side in ("query", "document"):
        assert torch.allclose(got[side], base[side], atol=1e-6), side


def test_query_only_documents_stay_base_after_training_moves_the_head(tiny):
    base = embeddings(tiny)
    model = build_model(tiny, kind="mlp", placement="query")
    perturb(model)
    got = embeddings(model)
    assert torch.allclose(got["document"], base["document"], atol=1e-6)
    assert not torch.allclose(got["query"], base["query"], atol=1e-3)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_load_matrix_local(tiny, tmp_path, placement):
    """(a) package installed, (b) package not importable, (c) (b) saved again and reloaded as (b)."""
    model = build_model(tiny, kind="mlp", placement=placement)
    perturb(model)
    expected = embeddings(model)
    folder = save_model(model, tmp_path / "model")
    modules = json.loads((folder / "modules.json").read_text())
    assert (folder / "frozen_head" / "projection_head.py").is_file()
    assert not list(folder.rglob("*.bin")), "weights must be safetensors only"

    with_package = load_in_subprocess(str(folder), TEXTS, hide_package=False)
    assert_same(expected, with_package)

    without_package = load_in_subprocess(str(folder), TEXTS, hide_package=True, resave=str(tmp_path / "resaved"))
    assert_same(expected, without_package)
    assert without_package["head_module"].startswith("transformers_modules.")

    resaved = tmp_path / "resaved"
    assert [p.relative_to(resaved).as_posix() for p in resaved.rglob("*.py")] == ["frozen_head/projection_head.py"]
    types = [entry["type"] for entry in json.loads((resaved / "modules.json").read_text())]
    router_configs = list(resaved.glob("*/router_config.json"))
    for config in router_configs:
        types += list(json.loads(config.read_text())["types"].values())
    assert "frozen_head/projection_head.ProjectionHead" in types
    assert not any(t.startswith("transformers_modules") for t in types), types
    assert_same(expected, load_in_subprocess(str(resaved), TEXTS, hide_package=True))
    assert [m["type"] for m in modules] == [m["type"] for m in json.loads((resaved / "modules.json").read_text())]


def test_load_without_trust_remote_code_says_to_pass_it(tiny, tmp_path):
    folder = save_model(build_model(tiny, placement="symmetric"), tmp_path / "model")
    result = load_in_subprocess(str(folder), TEXTS, trust=False, hide_package=False)
    assert "trust_remote_code=True" in result["error"]


def test_reduced_dimension_head(tiny):
    model = build_model(tiny, placement="symmetric", out_features=8)
    assert model.get_embedding_dimension() == 8
    assert model.encode(TEXTS).shape == (4, 8)
    assert find_head(model).init == "random"
    sample = tiny.encode(TEXTS * 4, convert_to_tensor=True)
    pca = build_model(tiny, placement="symmetric", out_features=4, pca_embeddings=sample)
    assert find_head(pca).init == "pca"
    with pytest.raises(ValueError, match="query-only head must keep the document dimension"):
        build_model(tiny, placement="query", out_features=8)


def test_pca_head_keeps_the_principal_subspace():
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 16))[0]
    data = (torch.randn(200, 16) * torch.tensor([10.0, 8, 6, 4] + [0.01] * 12)) @ basis.T + 3.0
    head = ProjectionHead(16, 4).fit_pca(data)
    projected = head({"sentence_embedding": data})["sentence_embedding"]
    # Distances between points survive a projection onto the 4-dim subspace that holds the variance.
    original = torch.cdist(data, data)
    kept = torch.cdist(projected, projected)
    assert (original - kept).abs().max() < 0.2
    assert projected.mean(dim=0).abs().max() < 1e-4  # centred


def test_head_for_another_encoder_width_fails_clearly(tiny, tmp_path):
    model = build_model(tiny, placement="symmetric")
    head = find_head(model)
    wider = tiny_encoder(tmp_path / "wide-bert", hidden=48)
    with pytest.raises(ValueError, match="32-dim embeddings but the encoder produces 48-dim"):
        build_model(wider, head=head, placement="symmetric")
    # A saved model whose head config disagrees with its encoder fails at load, not at first encode.
    folder = save_model(model, tmp_path / "model")
    wide_folder = tmp_path / "wide-model"
    save_model(build_model(wider, placement="symmetric"), wide_folder)
    for name in ("2_ProjectionHead",):
        for file in (folder / name).iterdir():
            (wide_folder / name / file.name).write_bytes(file.read_bytes())
    result = load_in_subprocess(str(wide_folder), TEXTS, hide_package=True)
    assert "built for 32-dim embeddings" in result["error"] and "48-dim" in result["error"]


def weights_hash(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_encoder_frozen_bit_identical_after_optimizer_steps(tiny):
    model = build_model(tiny, kind="mlp", placement="symmetric")
    encoder = model[0]
    before = weights_hash(encoder)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in find_head(model).parameters()}
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    model.train()
    assert not encoder.training and not any(m.training for m in encoder.modules()), "encoder must stay in eval"
    for _ in range(3):
        features = model.preprocess(TEXTS)
        out = model(features)["sentence_embedding"]
        loss = -(out[0] * out[1]).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert weights_hash(encoder) == before
    assert find_head(model).delta.abs().sum() > 0


def test_frozen_encoder_is_deterministic_in_train_mode(tiny):
    """Dropout would make two train-mode forwards differ; the pinned eval mode keeps them equal."""
    freeze(tiny[0])
    tiny.train()
    features = tiny.preprocess(TEXTS)
    first = tiny(dict(features))["sentence_embedding"]
    second = tiny(dict(tiny.preprocess(TEXTS)))["sentence_embedding"]
    assert torch.equal(first, second)


@pytest.mark.integration
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_real_minilm_round_trip_without_package(tmp_path, placement):
    """The default encoder (offline all-MiniLM-L6-v2): step 0 is the encoder; a trained-looking head reloads exactly."""
    from modeling import load_encoder

    encoder = load_encoder()
    base = embeddings(encoder)
    model = build_model(encoder, placement=placement)
    assert model.model_card_data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    step0 = embeddings(model)
    for side in ("query", "document"):
        assert torch.allclose(step0[side], base[side], atol=1e-6), side
    perturb(model)
    expected = embeddings(model)
    folder = save_model(model, tmp_path / "model")
    assert_same(expected, load_in_subprocess(str(folder), TEXTS, hide_package=True))


def _saved_query_model(tiny, folder):
    model = build_model(tiny, placement="query")
    perturb(model)
    return save_model(model, folder)


def test_truncated_head_file_fails_naming_the_file(tiny, tmp_path):
    folder = _saved_query_model(tiny, tmp_path / "model")
    weights = next(folder.glob("2_Router/*ProjectionHead/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    result = load_in_subprocess(str(folder), TEXTS, hide_package=True)
    assert "model.safetensors" in result["error"] and "ProjectionHead" in result["error"], result


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_head_weights_fail_naming_the_file(tiny, tmp_path, value):
    from safetensors.torch import load_file, save_file

    folder = _saved_query_model(tiny, tmp_path / "model")
    weights = next(folder.glob("2_Router/*ProjectionHead/model.safetensors"))
    state = load_file(weights)
    state["delta"][0, 0] = value
    save_file(state, weights)
    result = load_in_subprocess(str(folder), TEXTS, hide_package=True)
    assert "NaN or infinite" in result["error"] and str(weights.relative_to(folder)) in result["error"], result


def test_head_weights_follow_the_umask(tiny, tmp_path):
    folder = _saved_query_model(tiny, tmp_path / "model")
    weights = next(folder.glob("2_Router/*ProjectionHead/model.safetensors"))
    umask = os.umask(0)
    os.umask(umask)
    assert weights.stat().st_mode & 0o777 == 0o666 & ~umask


def test_every_saved_file_follows_the_umask(tiny, tmp_path):
    """safetensors writes 0600, the encoder's root model.safetensors included; the saved model must not keep that."""
    model = build_model(tiny, placement="query")
    previous = os.umask(0o022)
    try:
        folder = save_model(model, tmp_path / "model")
    finally:
        os.umask(previous)
    modes = {path.relative_to(folder).as_posix(): path.stat().st_mode & 0o777 for path in [folder, *folder.rglob("*")]}
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != (0o755 if (folder / name).is_dir() else 0o644)}
    assert not wrong, wrong
    assert "model.safetensors" in modes


ROGUE_SOURCE = """import pathlib
pathlib.Path({marker!r}).write_text(__file__)
from torch import nn


class ProjectionHead(nn.Module):
    pass
"""


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_missing_head_code_fails_and_imports_no_other_projection_head(tiny, tmp_path, placement):
    """With the head's file gone, sentence-transformers falls back to a plain import of the saved type's module.

    A ``projection_head.py`` (or a ``frozen_head`` package) in the current folder, first on the child's
    ``sys.path``, must never be imported: the load fails and names the missing file.
    """
    from modeling.evaluation.systems import ModelError, load_model
    from modeling.model.stock import convert_folder

    folder = save_model(build_model(tiny, placement=placement), tmp_path / "model")
    (folder / SOURCE_FILE).unlink()
    workdir, marker = tmp_path / "workdir", tmp_path / "rogue-code-ran"
    for name in ("projection_head.py", "frozen_head/__init__.py", "frozen_head/projection_head.py"):
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(ROGUE_SOURCE.format(marker=str(marker)))

    result = load_in_subprocess(str(folder), TEXTS, hide_package=False, cwd=str(workdir))
    assert not marker.exists(), f"imported {marker.read_text()} from outside the model folder"
    assert "frozen_head/projection_head" in result.get("error", ""), result
    with pytest.raises(ModelError, match="lacks frozen_head/projection_head.py"):  # this package's own loader
        load_model(str(folder), trust_remote_code=True)
    with pytest.raises(ValueError, match="lacks frozen_head/projection_head.py"):
        convert_folder(folder, tmp_path / "stock")
    assert not marker.exists()


def test_model_saved_by_an_earlier_version_loads_and_saves_in_the_new_layout(tiny, tmp_path):
    """Earlier versions shipped ``projection_head.py`` at the root with the type ``projection_head.ProjectionHead``."""
    model = build_model(tiny, kind="mlp", placement="query")
    perturb(model)
    expected = embeddings(model)
    folder = save_model(model, tmp_path / "model")
    source = (folder / SOURCE_FILE).read_text()
    old_source = source.replace(f'SOURCE_FILE = "{SOURCE_FILE}"', 'SOURCE_FILE = "projection_head.py"')
    assert old_source != source
    (folder / "projection_head.py").write_text(old_source)
    (folder / SOURCE_FILE).unlink()
    (folder / SOURCE_FILE).parent.rmdir()
    for config in [folder / "modules.json", *folder.rglob("router_config.json")]:
        config.write_text(config.read_text().replace("frozen_head/projection_head.", "projection_head."))

    loaded = load_in_subprocess(str(folder), TEXTS, hide_package=True, resave=str(tmp_path / "resaved"))
    assert_same(expected, loaded)
    resaved = tmp_path / "resaved"
    assert (resaved / "projection_head.py").is_file()  # the old file saves itself where it always did
    assert_same(expected, load_in_subprocess(str(resaved), TEXTS, hide_package=True))


def test_deepcopy_keeps_the_class_and_pickle_rebuilds_the_head(tiny):
    import copy
    import pickle

    model = build_model(tiny, kind="linear", placement="query")
    perturb(model)
    head = find_head(model)
    assert type(copy.deepcopy(head)) is type(head)
    rebuilt = pickle.loads(pickle.dumps(head))  # by value: no module 'frozen_head/projection_head' exists
    x = torch.randn(3, head.in_features)
    assert torch.equal(
        rebuilt({"sentence_embedding": x.clone()})["sentence_embedding"],
        head({"sentence_embedding": x.clone()})["sentence_embedding"],
    )
