"""The hybrid's weight chosen on dev: even mix unless dev says otherwise beyond noise, near 0 where BM25 dominates."""

from __future__ import annotations

import random
import zlib

import pytest
import torch

from modeling.cache.cached_input import cached_twin
from modeling.model.build import build_model
from modeling.training.hybrid import (
    HYBRID_FILE,
    choose_hybrid,
    choose_weight,
    load_hybrid,
    paired_standard_error,
    save_hybrid,
)

GRID = [round(0.1 * i, 1) for i in range(11)]


def curve(means: dict[float, float], noise: float, queries: int = 80, seed: int = 0) -> dict[float, list[float]]:
    """Per-query scores: a shared per-query difficulty, each weight's mean, and independent noise."""
    rng = random.Random(seed)
    difficulty = [rng.uniform(-0.2, 0.2) for _ in range(queries)]
    return {w: [0.5 + d + means[w] + rng.gauss(0, noise) for d in difficulty] for w in means}


def test_a_flat_or_noisy_curve_keeps_the_even_mix():
    assert choose_weight(curve({w: 0.0 for w in GRID}, noise=0.0))[0] == 0.5
    # 0.9 is best by 0.01 on 80 queries with per-query noise 0.1: within noise (standard error ~0.016)
    noisy = curve({w: 0.01 if w == 0.9 else 0.0 for w in GRID}, noise=0.1)
    chosen, _best, _ = choose_weight(noisy)
    assert chosen == 0.5


def test_a_clear_winner_moves_the_weight():
    # BM25 far better: the dev mean falls steadily with the dense weight, with little noise
    clear = curve({w: -0.3 * w for w in GRID}, noise=0.01)
    chosen, best, error = choose_weight(clear)
    assert best == 0.0 and chosen <= 0.1 and error < 0.01


def test_paired_standard_error():
    assert paired_standard_error([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert paired_standard_error([1.0, 0.0], [0.0, 0.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        choose_weight({0.5: [1.0], 0.6: [1.0, 2.0]})


class VectorCache:
    """The embedding cache's interface over given vectors (unknown texts: a fixed random vector each)."""

    def __init__(self, prefix, vectors: dict[str, torch.Tensor], dimension: int = 32):
        self.prefix, self.vectors, self.dimension = prefix, vectors, dimension

    def get(self, texts, prompt=None):
        rows = []
        for text in texts:
            if text not in self.vectors:
                seed = zlib.crc32(text.encode())  # by text, not by call order: any read order gets the same vectors
                self.vectors[text] = torch.randn(self.dimension, generator=torch.Generator().manual_seed(seed))
            rows.append(self.vectors[text])
        return torch.stack(rows)


WORDS = [
    "apple",
    "banana",
    "cherry",
    "grape",
    "lemon",
    "mango",
    "olive",
    "peach",
    "pear",
    "plum",
    "berry",
    "melon",
    "kiwi",
    "lime",
    "fig",
    "date",
]


def task(count: int = 16):
    """Queries sharing a rare word with their relevant document and common words with many others, so BM25 ranks
    the relevant one first and a list of partial matches after it (what min-max then spreads over [0, 1])."""
    queries = {f"q{i}": f"{WORDS[i]} question words" for i in range(count)}
    corpus = {f"d{i}": f"all about {WORDS[i]}" for i in range(count)}
    corpus.update({f"x{j}": "question " + "words " * (j % 3) + "pad " * j for j in range(30)})
    return queries, corpus, {f"q{i}": {f"d{i}"} for i in range(count)}


def twin_with(tiny, vectors):
    return cached_twin(build_model(tiny, kind="linear", placement="query"), VectorCache(tiny, vectors))


def test_bm25_dominant_data_pushes_the_weight_toward_bm25(tiny):
    queries, corpus, relevant = task()
    twin = twin_with(tiny, {})  # random embeddings: the dense run is noise
    choice = choose_hybrid(twin, queries, corpus, relevant, source="test dev")
    assert choice.curve[0.0] > 0.9 and choice.curve[0.0] - choice.curve[0.5] > 0.05
    # 0 ... 0.4 all rank every relevant document first here: the even mix is out, the nearest equal weight is kept
    assert choice.dense_weight < 0.5 and choice.dev_ndcg == pytest.approx(max(choice.curve.values()))


def test_dense_dominant_data_pushes_the_weight_toward_the_model(tiny, tmp_path):
    queries, corpus, relevant = task()
    # the dense model maps each query onto its document; BM25 only sees words shared with the wrong document
    queries = {qid: f"something {i}" for i, qid in enumerate(queries)}
    corpus = {doc: (f"{WORDS[int(doc[1:])]} other {int(doc[1:]) + 1} something" if doc.startswith("d") else text)
              for doc, text in corpus.items()}  # fmt: skip
    vectors = {}
    for i, (qid, text) in enumerate(queries.items()):
        vectors[text] = vectors[corpus[f"d{i}"]] = torch.nn.functional.one_hot(torch.tensor(i), 32).float()
    for doc, text in corpus.items():  # padding opposite one query each (not noise that depends on the read order):
        if doc.startswith("x"):  # min-max then puts BM25's wrong document mid-way on the dense side
            vectors[text] = -torch.nn.functional.one_hot(torch.tensor(int(doc[1:]) % 16), 32).float()
    twin = twin_with(tiny, vectors)
    choice = choose_hybrid(twin, queries, corpus, relevant, source="dev split of training (16 queries)")
    assert choice.curve[1.0] == pytest.approx(1.0)
    assert choice.dense_weight > 0.5 and choice.dev_ndcg == pytest.approx(1.0)

    path = save_hybrid(choice, tmp_path)
    assert path.name == HYBRID_FILE
    saved = load_hybrid(tmp_path)
    assert saved["dense_weight"] == choice.dense_weight and saved["normalisation"] == choice.normalisation
    assert set(saved["dev_ndcg@10_by_normalisation"]) == {"min-max", "z-score"}
    assert saved["source"] == "dev split of training (16 queries)" and saved["dev_ndcg@10"] == choice.dev_ndcg
    assert saved["bm25"]["k1"] == 0.9


def test_the_normalisation_with_the_better_dev_score_is_kept(tiny, monkeypatch):
    """choose_hybrid keeps the normalisation whose best weight scores higher on dev, whichever it is."""
    import modeling.training.hybrid as hybrid

    queries, corpus, relevant = task()
    twin = twin_with(tiny, {})
    real = hybrid.convex
    for better in ("min-max", "z-score"):
        # the other normalisation's fused runs are reversed: it ranks every relevant document last
        def rigged(dense, sparse, weight, depth, normalisation, better=better):
            fused = real(dense, sparse, weight, depth, normalisation)
            if normalisation == better:
                return fused
            return {q: {d: -s for d, s in run.items()} for q, run in fused.items()}

        monkeypatch.setattr(hybrid, "convex", rigged)
        choice = choose_hybrid(twin, queries, corpus, relevant, source="test dev")
        assert choice.normalisation == better
        assert choice.curve == choice.curves[better] and max(choice.curves[better].values()) > max(
            v for how, curve in choice.curves.items() if how != better for v in curve.values()
        )


def test_load_hybrid_rejects_a_bad_normalisation(tmp_path):
    (tmp_path / HYBRID_FILE).write_text('{"dense_weight": 0.5, "normalisation": "softmax"}')
    with pytest.raises(ValueError, match="normalisation"):
        load_hybrid(tmp_path)


def test_load_hybrid_rejects_a_bad_weight(tmp_path):
    assert load_hybrid(tmp_path) is None
    (tmp_path / HYBRID_FILE).write_text('{"dense_weight": 1.5}')
    with pytest.raises(ValueError, match="dense_weight"):
        load_hybrid(tmp_path)


def test_no_judged_dev_query_fails_clearly(tiny):
    queries, corpus, _ = task()
    with pytest.raises(ValueError, match="no judged query"):
        choose_hybrid(twin_with(tiny, {}), queries, corpus, {}, source="x")
