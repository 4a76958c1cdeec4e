"""The library's multi-process pool (``encode_query(texts, device=["cpu", "cpu"])``) on saved models, loaded where
this package is not importable: from a folder and from the (fake) Hub, both placements, custom and stock format."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from model_card import install_card_data, prepare_card
from modeling.hub import push_model
from modeling.model.build import build_model, save_model
from modeling.model.stock import export_stock
from tests.fake_hub import FAKE_TOKEN, fake_hub  # noqa: F401  (fake_hub is a fixture)
from tests.subprocess_load import REPO_ROOT
from tests.test_core_model import perturb

TEXTS = ["red leather boots", "a warm wool cup of tea", "the cat and the dog", "cheap phone case", "blue mug"]

SCRIPT = r"""
import json, os, sys
spec = json.loads(sys.argv[1])
sys.path = [p for p in sys.path if "__editable__" not in p and os.path.abspath(p or ".") != spec["repo_root"]]
sys.path_hooks = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_importer_cache.clear()
try:
    import modeling
    raise SystemExit("this package must not be importable here")
except ImportError:
    pass
import numpy as np
from sentence_transformers import SentenceTransformer

if __name__ == "__main__":
    out = {}
    for source, trust in spec["models"]:
        model = SentenceTransformer(source, trust_remote_code=trust)
        single = {"query": model.encode_query(spec["texts"]), "document": model.encode_document(spec["texts"])}
        pool = model.start_multi_process_pool(["cpu", "cpu"])  # the library's pool API ...
        try:
            pooled = {"document": model.encode_document(spec["texts"], pool=pool, chunk_size=2)}
        finally:
            model.stop_multi_process_pool(pool)
        # ... and the device-list form (a pool per call), as LangChain's multi_process=True uses it
        pooled["query"] = model.encode_query(spec["texts"], device=["cpu", "cpu"], chunk_size=2)
        out[source] = {
            side: float(np.abs(single[side] - pooled[side]).max()) for side in ("query", "document")
        } | {"gap": float(np.abs(single["query"] - single["document"]).max())}
    print(json.dumps(out))
"""


def run_pooled(models: list[tuple[str, bool]], env: dict[str, str] | None = None, cwd: str | None = None) -> dict:
    spec = {"models": models, "texts": TEXTS, "repo_root": str(REPO_ROOT)}
    child_env = {**os.environ, **(env or {})}
    child_env.pop("PYTHONPATH", None)
    child_env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-I", "-c", SCRIPT, json.dumps(spec)],
        check=False,
        capture_output=True,
        text=True,
        env=child_env,
        cwd=cwd,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def saved_pair(tiny, folder, stock: bool) -> list[str]:
    paths = []
    for placement in ("query", "symmetric"):
        model = build_model(tiny, kind="linear", placement=placement)
        perturb(model)
        install_card_data(model)
        prepare_card(model, training_info={"dataset_name": "toy"})
        target = folder / f"{placement}-{'stock' if stock else 'custom'}"
        export_stock(model, target) if stock else save_model(model, target)
        paths.append(target)
    return paths


def check(result: dict) -> None:
    for source, diffs in result.items():
        assert diffs["query"] <= 1e-6 and diffs["document"] <= 1e-6, (source, diffs)
        is_query = "query" in source
        assert (diffs["gap"] > 1e-3) if is_query else (diffs["gap"] == 0), (source, diffs)


def test_pool_equals_single_process_from_a_folder_without_this_package(tiny, tmp_path):
    """Custom format (trust_remote_code=True) and stock format (without it), both placements."""
    models = [(str(p), True) for p in saved_pair(tiny, tmp_path, stock=False)]
    models += [(str(p), False) for p in saved_pair(tiny, tmp_path, stock=True)]
    check(run_pooled(models, cwd=str(tmp_path)))


def test_pool_equals_single_process_from_the_hub(tiny, tmp_path, fake_hub):  # noqa: F811
    paths = saved_pair(tiny, tmp_path, stock=False)
    repos = []
    for path in paths:
        repo = f"org/{path.name}"
        push_model(path, repo)
        repos.append(repo)
    env = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "child-hf-home"), "HF_TOKEN": FAKE_TOKEN}
    with fake_hub.serve() as endpoint:
        result = run_pooled([(repo, True) for repo in repos], env={**env, "HF_ENDPOINT": endpoint}, cwd=str(tmp_path))
    check(result)
