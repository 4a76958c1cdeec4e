"""Exact chunked search equals full search (any chunking, any score, arrays and memmaps); FAISS Flat equals it too."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modeling.evaluation.faiss_search import faiss_available, faiss_search
from modeling.evaluation.search import exact_search, to_run


def data(seed=0, queries=37, documents=523, dim=16):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(queries, dim, generator=generator), torch.randn(documents, dim, generator=generator)


def full_search(queries, documents, k, score):
    if score == "cosine":
        scores = F.normalize(queries, dim=-1) @ F.normalize(documents, dim=-1).T
    elif score == "dot":
        scores = queries @ documents.T
    else:
        scores = -torch.cdist(queries, documents)
    return scores.topk(min(k, documents.shape[0]), dim=1)


@pytest.mark.parametrize("score", ["cosine", "dot", "euclidean"])
@pytest.mark.parametrize("query_chunk,doc_chunk", [(5, 7), (64, 100), (1000, 1000), (1, 523)])
def test_chunked_equals_full(score, query_chunk, doc_chunk):
    queries, documents = data()
    expected = full_search(queries, documents, 20, score)
    scores, indices = exact_search(queries, documents, 20, score, query_chunk=query_chunk, doc_chunk=doc_chunk)
    assert torch.equal(indices, expected.indices)
    torch.testing.assert_close(scores, expected.values, rtol=0, atol=1e-5)


def test_k_larger_than_corpus_and_numpy_memmap(tmp_path):
    queries, documents = data(documents=30)
    path = tmp_path / "docs.npy"
    np.save(path, documents.numpy())
    memmap = np.load(path, mmap_mode="r")
    scores, indices = exact_search(queries.numpy(), memmap, 1000, "dot", doc_chunk=8)
    expected = full_search(queries, documents, 1000, "dot")
    assert indices.shape == (37, 30)
    assert torch.equal(indices, expected.indices)


def test_to_run_and_bad_arguments():
    queries, documents = data(queries=2, documents=5)
    scores, indices = exact_search(queries, documents, 3, "dot")
    run = to_run(["a", "b"], [f"d{i}" for i in range(5)], scores, indices)
    assert list(run) == ["a", "b"] and all(len(hits) == 3 for hits in run.values())
    assert run["a"][f"d{indices[0, 0].item()}"] == pytest.approx(scores[0, 0].item())
    with pytest.raises(ValueError, match="Unsupported similarity 'manhattan'"):
        exact_search(queries, documents, 3, "manhattan")
    with pytest.raises(ValueError, match="positive"):
        exact_search(queries, documents, 0, "dot")


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (optional extra 'faiss')")
@pytest.mark.parametrize("score", ["cosine", "dot", "euclidean"])
def test_faiss_flat_equals_exact(score):
    queries, documents = data()
    scores, indices = faiss_search(queries, documents, 20, score, doc_chunk=100)
    expected_scores, expected_indices = exact_search(queries, documents, 20, score)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=1e-4)


def test_on_disk_npy_matrix_equals_in_memory(tmp_path):
    from modeling.evaluation.npy_matrix import NpyMatrix, write_npy_blocks

    queries, documents = data()
    path = write_npy_blocks(
        tmp_path / "docs.npy", (documents[s : s + 100].numpy() for s in range(0, 523, 100)), 523, 16
    )
    assert np.array_equal(np.load(path), documents.numpy())  # a standard .npy file
    matrix = NpyMatrix(path)
    assert len(matrix) == 523 and np.array_equal(matrix[500:600], documents[500:].numpy())
    scores, indices = exact_search(queries, matrix, 20, "cosine", doc_chunk=64)
    expected = full_search(queries, documents, 20, "cosine")
    assert torch.equal(indices, expected.indices)
    with pytest.raises(ValueError, match="expected 523"):
        write_npy_blocks(tmp_path / "short.npy", [documents[:10].numpy()], 523, 16)
