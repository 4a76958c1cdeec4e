"""Every snippet of "Use it in your stack" (modeling/integrations/snippets.py), run as printed, in the real client:
its query vectors equal ``encode_query`` and its document vectors ``encode_document`` (<= 1e-5), for the custom
format (trust_remote_code=True) and the stock format (without it). A client that is not installed is skipped
(``pip install -e ".[integrations]"``; LangChain: see README "Use it in your stack")."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from model_card import install_card_data, prepare_card
from modeling.integrations.snippets import BY_KEY, SNIPPETS, section
from modeling.model.build import build_model, save_model
from modeling.model.stock import export_stock
from tests.test_core_model import perturb

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIENT_MODULES = {
    "sentence-transformers": "sentence_transformers",
    "langchain": "langchain_huggingface",
    "llama-index": "llama_index.embeddings.huggingface",
    "haystack": "haystack_integrations.components.embedders.sentence_transformers",
    "chroma": "chromadb",
    "mteb": "mteb",
}


@pytest.fixture(scope="module")
def models(_tiny_encoder_session, tmp_path_factory):
    """A query-only model with a moved head, saved in both formats; plus a symmetric model and the bare encoder."""
    import copy

    folder = tmp_path_factory.mktemp("client-models")
    query = build_model(copy.deepcopy(_tiny_encoder_session), placement="query")
    perturb(query)
    install_card_data(query)
    prepare_card(query, training_info={"dataset_name": "toy"})
    save_model(query, folder / "custom")
    export_stock(query, folder / "stock")
    symmetric = build_model(copy.deepcopy(_tiny_encoder_session), placement="symmetric")
    perturb(symmetric)
    save_model(symmetric, folder / "symmetric")
    _tiny_encoder_session.save_pretrained(str(folder / "bare"))
    return folder


def run_snippet(key: str, model_path: Path, trust: bool) -> dict:
    pytest.importorskip(CLIENT_MODULES[key])
    code = BY_KEY[key].render(str(model_path), trust_remote_code=trust)
    if not trust:
        assert "trust_remote_code" not in code
    if key == "chroma":
        from chromadb.api.client import SharedSystemClient

        SharedSystemClient.clear_system_cache()  # a fresh in-memory Chroma per snippet run
    namespace: dict = {}
    exec(compile(code, f"<snippet {key}>", "exec"), namespace)  # noqa: S102  (the snippet, exactly as printed)
    return namespace


def assert_routed(namespace: dict, model_path: Path, trust: bool) -> None:
    reference = SentenceTransformer(str(model_path), trust_remote_code=trust)
    queries, documents = namespace["queries"], namespace["documents"]
    query_gap = np.abs(np.asarray(namespace["query_vectors"]) - reference.encode_query(queries)).max()
    document_gap = np.abs(np.asarray(namespace["document_vectors"]) - reference.encode_document(documents)).max()
    assert query_gap <= 1e-5, f"queries differ from encode_query by {query_gap}"
    assert document_gap <= 1e-5, f"documents differ from encode_document by {document_gap}"


@pytest.mark.parametrize("fmt", ["custom", "stock"])
@pytest.mark.parametrize("key", [key for key in BY_KEY if key != "mteb"])
def test_snippet_routes_queries_through_the_head(models, key, fmt):
    trust = fmt == "custom"
    namespace = run_snippet(key, models / fmt, trust)
    assert_routed(namespace, models / fmt, trust)
    reference = SentenceTransformer(str(models / fmt), trust_remote_code=trust)
    assert np.abs(reference.encode_query(["red boots"]) - reference.encode_document(["red boots"])).max() > 1e-3
    if key == "chroma":  # what Chroma stored for the documents is encode_document's
        stored = namespace["collection"].get(include=["embeddings"])["embeddings"]
        assert np.abs(np.asarray(stored) - reference.encode_document(namespace["documents"])).max() <= 1e-5


@pytest.mark.parametrize("fmt", ["custom", "stock"])
def test_mteb_snippet_and_mteb_routing(models, fmt, monkeypatch):
    """mteb.evaluate needs the SciFact download, so the snippet runs with evaluate recording its arguments; the
    routing is then checked on mteb's own wrapper, the one its retrieval tasks encode through."""
    mteb = pytest.importorskip("mteb")
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

    calls = []
    monkeypatch.setattr(mteb, "evaluate", lambda model, tasks: calls.append((model, tasks)) or "results")
    trust = fmt == "custom"
    namespace = run_snippet("mteb", models / fmt, trust)
    model, tasks = calls[0]
    assert [task.metadata.name for task in tasks] == ["SciFact"]
    wrapper = SentenceTransformerEncoderWrapper(model)
    texts = ["red boots", "a blue cup of tea"]
    from datasets import Dataset

    loader = DataLoader(Dataset.from_dict({"text": texts}), batch_size=2)
    encoded = {
        side: np.asarray(
            wrapper.encode(
                loader, task_metadata=tasks[0].metadata, hf_split="test", hf_subset="default", prompt_type=prompt
            )
        )
        for side, prompt in (("query", PromptType.query), ("document", PromptType.document))
    }
    assert np.abs(encoded["query"] - model.encode_query(texts)).max() <= 1e-5
    assert np.abs(encoded["document"] - model.encode_document(texts)).max() <= 1e-5
    assert namespace["results"] == "results"


@pytest.mark.parametrize("key", ["llama-index", "chroma"])
@pytest.mark.parametrize("kind", ["symmetric", "bare"])
def test_adapters_pass_through_on_a_symmetric_model_or_a_bare_encoder(models, key, kind):
    """Documented: with no query route the adapters give encode_query / encode_document, i.e. the same vectors."""
    namespace = run_snippet(key, models / kind, trust=kind == "symmetric")
    assert_routed(namespace, models / kind, trust=kind == "symmetric")
    reference = SentenceTransformer(str(models / kind), trust_remote_code=True)
    assert np.abs(reference.encode_query(["red boots"]) - reference.encode(["red boots"])).max() <= 1e-6


def test_chroma_persistent_collection_reopens_in_a_new_process(models, tmp_path):
    pytest.importorskip("chromadb")
    import chromadb

    from modeling.integrations.chroma import FrozenHeadEmbeddingFunction

    chromadb.api.client.SharedSystemClient.clear_system_cache()
    function = FrozenHeadEmbeddingFunction(model_name=str(models / "custom"), trust_remote_code=True)
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    documents = ["Kestrel blue running shoes for women.", "A ceramic coffee mug, 350 ml.", "red leather boots"]
    client.create_collection("products", embedding_function=function).add(ids=["0", "1", "2"], documents=documents)
    del client
    chromadb.api.client.SharedSystemClient.clear_system_cache()
    script = """
import json, sys
import chromadb
import modeling.integrations.chroma  # registers FrozenHeadEmbeddingFunction with Chroma
collection = chromadb.PersistentClient(path=sys.argv[1]).get_collection("products")
function = collection.configuration["embedding_function"]  # what collection.query embeds with
queries = ["kicks for jogging in navy for her"]
hits = collection.query(query_texts=queries, n_results=3)
print(json.dumps({"type": type(function).__name__, "query": [list(map(float, v)) for v in function.embed_query(queries)],
                  "ids": hits["ids"][0], "distances": hits["distances"][0]}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "db")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reopened = json.loads(result.stdout.strip().splitlines()[-1])
    assert reopened["type"] == "FrozenHeadEmbeddingFunction"
    reference = SentenceTransformer(str(models / "custom"), trust_remote_code=True)
    query = reference.encode_query(["kicks for jogging in navy for her"])
    assert np.abs(np.asarray(reopened["query"]) - query).max() <= 1e-5
    expected = np.argsort(-(reference.encode_document(documents) @ query[0]))  # cosine on unit vectors
    assert reopened["ids"] == [str(i) for i in expected]


def test_readme_shows_exactly_the_tested_snippets():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf8")
    assert section() in readme, "README's 'Use it in your stack' differs from modeling/integrations/snippets.py"


def test_every_client_has_a_snippet_and_a_test_module():
    assert [snippet.key for snippet in SNIPPETS] == list(CLIENT_MODULES)
    for key in ("llama_index", "chroma"):
        source = (REPO_ROOT / "modeling" / "integrations" / f"{key}.py").read_text()
        assert "import" in source
    if importlib.util.find_spec("chromadb") is None:
        pytest.skip("chromadb not installed")
