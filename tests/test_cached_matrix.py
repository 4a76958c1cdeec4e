"""The cache view (``CachedMatrix``): search, FAISS, pair scores and mining over it give what the in-memory tensor
gives, while no read ever exceeds one block of the corpus (checked on the view's read counter, not on memory)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling.cache.cached_input import prefix_model
from modeling.cache.cached_matrix import CachedMatrix
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.cache.keys import text_keys
from modeling.evaluation import pipeline
from modeling.evaluation.pair_scores import pair_scores
from modeling.evaluation.search import exact_search
from modeling.evaluation.systems import DenseEncoder
from modeling.model.build import build_model
from modeling.model.layout import ModelLayout
from modeling.training.negatives import HardNegatives, base_pools, cache_embedder, mine_pools
from tests.test_evaluate_cli import tiny_beir

DOCS = 300
CHUNK = 32


@pytest.fixture()
def filled(tiny, cache_root):
    """A cache holding synthetic rows for DOCS documents and 40 queries (written straight into its shards, in
    shards of 70 rows, so blocks cross shard boundaries), and the same rows as one tensor."""
    cache = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False)
    generator = np.random.default_rng(0)
    texts = [f"document {i}" for i in range(DOCS)] + [f"query {i}" for i in range(40)]
    rows = generator.standard_normal((len(texts), 32), dtype=np.float32)
    order = generator.permutation(len(texts))  # shards in another order than the texts
    for start in range(0, len(texts), 70):
        picked = order[start : start + 70]
        cache.store.append(text_keys([texts[i] for i in picked]), rows[picked])
    cache.refresh()
    return cache, texts[:DOCS], texts[DOCS:], torch.from_numpy(rows)


def test_rows_slices_and_gathers_equal_the_cache(filled):
    cache, documents, _, rows = filled
    view = CachedMatrix(cache, documents, chunk_rows=CHUNK)
    assert len(view) == DOCS and view.shape == (DOCS, 32)
    assert torch.equal(view[10:50], rows[10:50])
    assert torch.equal(view[[5, 299, 5, -1]], rows[[5, 299, 5, 299]])
    assert torch.equal(view[torch.tensor([7, 3])], rows[[7, 3]])
    assert torch.equal(torch.cat([block for _, block in view.chunks()]), rows[:DOCS])
    assert view.largest_read == 40
    with pytest.raises(ValueError, match="contiguous"):
        view[0:10:2]
    with pytest.raises(IndexError):
        view[[DOCS]]
    doubled = view.map(lambda block: 2 * block)
    assert torch.equal(doubled[3:6], 2 * rows[3:6])


@pytest.mark.parametrize("score", ["cosine", "dot", "euclidean"])
def test_exact_search_over_the_view_equals_the_tensor_reading_one_block_at_a_time(filled, score):
    cache, documents, _, rows = filled
    queries = torch.randn(25, 32, generator=torch.Generator().manual_seed(1))
    view = CachedMatrix(cache, documents, chunk_rows=CHUNK)
    expected = exact_search(queries, rows[:DOCS], 50, score)
    got = exact_search(queries, view, 50, score, query_chunk=7, doc_chunk=view.chunk_rows)
    assert torch.equal(got[1], expected[1])
    assert torch.allclose(got[0], expected[0], atol=1e-6)
    assert view.rows_read == DOCS and view.largest_read == CHUNK  # each row once, never more than a block


def test_faiss_index_over_the_view_is_built_block_by_block(filled):
    pytest.importorskip("faiss")
    from modeling.evaluation.faiss_search import build_index, search_index

    cache, documents, _, rows = filled
    queries = torch.randn(25, 32, generator=torch.Generator().manual_seed(2))
    view = CachedMatrix(cache, documents, chunk_rows=CHUNK)
    index = build_index(view, "cosine", "Flat", doc_chunk=CHUNK)
    scores, indices = search_index(index, queries, 20, "cosine")
    expected = exact_search(queries, rows[:DOCS], 20, "cosine")
    assert torch.equal(indices, expected[1]) and torch.allclose(scores, expected[0], atol=1e-5)
    assert index.ntotal == DOCS and view.largest_read == CHUNK


def test_pair_scores_gather_only_the_rows_asked_for(filled):
    cache, documents, _, rows = filled
    queries = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    doc_ids = {f"d{i}": i for i in range(DOCS)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 10}": 2} for i in range(4)}
    view = CachedMatrix(cache, documents, chunk_rows=CHUNK)
    got = pair_scores(queries, view, list(qrels), doc_ids, qrels, negatives_per_query=5)
    expected = pair_scores(queries, rows[:DOCS], list(qrels), doc_ids, qrels, negatives_per_query=5)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert view.rows_read == 4 * (2 + 5) and view.largest_read <= 5


@pytest.mark.parametrize("margin", [None, 0.1])
def test_mining_over_the_view_equals_the_tensor_with_a_running_top_k(filled, margin):
    cache, documents, _, rows = filled
    unit = torch.nn.functional.normalize
    queries = unit(torch.randn(30, 32, generator=torch.Generator().manual_seed(4)), dim=-1)
    corpus = unit(rows[:DOCS], dim=-1)
    row_queries = [i % 30 for i in range(45)]
    row_positives = [(7 * i) % DOCS for i in range(45)]
    positives = [sorted({p for q, p in zip(row_queries, row_positives) if q == query}) for query in range(30)]
    args = (row_queries, row_positives, positives)
    expected = mine_pools(queries, corpus, *args, pool=12, margin=margin)
    view = CachedMatrix(cache, documents, chunk_rows=CHUNK).map(lambda block: unit(block, dim=-1))
    got = mine_pools(queries, view, *args, pool=12, margin=margin, block_bytes=4 * CHUNK * 8)  # 8 rows a block
    assert got == expected
    assert all(len(pool) > 0 for pool in got)
    assert view.largest_read == CHUNK


def test_base_pools_read_the_corpus_from_the_cache_in_blocks(filled, monkeypatch):
    cache, documents, query_texts, _ = filled
    pairs = [(query_texts[i], documents[3 * i]) for i in range(20)] + [(query_texts[0], documents[100])]
    views = []

    def tensor_embed(texts, task):
        return cache.get(texts)

    def view_embed(texts, task):
        got = cache_embedder(cache, chunk_rows=CHUNK)(texts, task)
        views.append(got)
        return got

    for margin in (None, 0.05):
        settings = HardNegatives(pool=10, margin=margin)
        expected = base_pools(pairs, documents, tensor_embed, settings)
        assert base_pools(pairs, documents, view_embed, settings) == expected
    document_views = [view for view in views if isinstance(view, CachedMatrix)]
    assert len(document_views) == 2  # queries come as a tensor, the corpus as a view
    assert all(0 < view.largest_read <= CHUNK for view in document_views)


@pytest.mark.parametrize("placement", ["query", "symmetric", "routes"])
def test_document_rows_equal_encode_document(tiny, cache_root, placement):
    """The view applies the model's document side (head or none, then Normalize) per block, as encode does."""
    model = build_model(tiny, placement=placement)
    with torch.no_grad():
        for head in ModelLayout.of(model).heads:
            for parameter in head.parameters():
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)))
    cache = EmbeddingCache(prefix_model(model), root=cache_root, show_progress_bar=False)
    encoder = DenseEncoder(model, cache, batch_size=16)
    texts = [f"a red shoe number {i}" for i in range(50)]
    view = encoder.document_rows(texts, chunk_rows=16)
    assert torch.allclose(view[0:50], encoder.encode(texts, "document"), atol=1e-6)
    assert torch.allclose(view[[49, 0]], encoder.encode([texts[49], texts[0]], "document"), atol=1e-6)


def test_evaluation_reads_the_corpus_a_block_at_a_time(tmp_path, tiny, cache_root):
    """The pipeline's dense systems are cache views; search and metrics read them one ``doc_chunk`` at a time, and
    the numbers equal those of a single block holding the whole corpus."""
    folder = tiny_beir(tmp_path / "toy")
    tiny.save_pretrained(str(tmp_path / "bare"))
    results = []
    for doc_chunk, search_batch in ((3, 2), (10_000, 4096)):
        config = pipeline.EvaluationConfig(
            data=str(folder), model=str(tmp_path / "bare"), cache_dir=str(cache_root), progress=False,
            doc_chunk=doc_chunk, search_batch=search_batch, query_batch=3, resamples=50,
        )  # fmt: skip
        prepared = pipeline.prepare(config)
        cache = EmbeddingCache(prefix_model(prepared.model), root=cache_root, show_progress_bar=False)
        dense, _ = pipeline.embed_corpus(prepared, cache)
        pipeline.embed_queries(prepared, dense)
        view = dense["bare_encoder"].documents
        assert isinstance(view, CachedMatrix) and len(view) == 8
        results.append(pipeline.score_queries(prepared, "bare_encoder", dense, None, None))
        assert 0 < view.largest_read <= doc_chunk
    assert results[0] == results[1] and set(results[0]) == {"bare_encoder"}
