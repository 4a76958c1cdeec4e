"""Pseudo-queries from the corpus (issue 13): what a first sentence is, and that distilling them is learned."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modeling.model.projection_head import ProjectionHead
from modeling.training.distill import PseudoQueries, distill, embed
from modeling.training.pseudo_queries import MAX_WORDS, first_sentence, pseudo_queries, sentences


def test_first_sentence_is_a_title_or_the_opening_sentence():
    assert first_sentence("A title of a paper. The abstract starts here.") == "A title of a paper."
    assert first_sentence("Kestrel blue running shoes for women") == "Kestrel blue running shoes for women"
    assert first_sentence("Background. We tested it in mice! More text.") == "Background. We tested it in mice!"
    assert len(first_sentence(" ".join(["word"] * 200)).split()) == MAX_WORDS
    assert first_sentence("   ") == ""


def test_pseudo_queries_drop_duplicates_and_empties_and_sample_a_large_corpus():
    corpus = ["The same title. Text one.", "The same title. Text two.", "  ", "Other title here. More."]
    assert pseudo_queries(corpus, limit=10) == ["The same title.", "Other title here."]
    big = [f"Title number {i}. Body." for i in range(100)]
    sample = pseudo_queries(big, limit=10, seed=1)
    assert (
        len(sample) == 10
        and sample == pseudo_queries(big, limit=10, seed=1)
        and set(sample) < {f"Title number {i}." for i in range(100)}
    )


def test_pseudo_queries_teach_rankings_the_training_queries_never_ask_for():
    """Training queries cover only a few directions; pseudo-queries elsewhere in the corpus ask the student to rank
    there too: their teacher agreement is higher with them than without (same seed, same steps)."""
    torch.manual_seed(0)
    documents = torch.randn(400, 16)
    queries = documents[:40, :] * torch.tensor([1.0] * 4 + [0.05] * 12) + 0.1 * torch.randn(40, 16)
    held_out = documents[200:260] + 0.1 * torch.randn(60, 16)  # queries about other documents

    def agreement(use_pseudo: bool) -> float:
        heads = nn.ModuleDict({"query": ProjectionHead(16, 6), "document": ProjectionHead(16, 6)})
        for head in heads.values():
            head.fit_pca(documents)
        pseudo = PseudoQueries(documents[100:], lambda x: x, batch=32) if use_pseudo else None
        distill(heads, heads["query"], heads["document"], lambda x: x, queries, documents, epochs=30,
                batch_size=16, learning_rate=1e-2, pseudo=pseudo)  # fmt: skip
        with torch.no_grad():
            student = embed(heads["query"], held_out) @ embed(heads["document"], documents).T
        return (student.argmax(-1) == torch.arange(200, 260)).float().mean().item()

    assert agreement(True) > agreement(False)


def test_sentences_join_short_ones_and_start_with_the_first_sentence():
    text = "A title of a paper. Background. We tested it in mice! " + " ".join(["long"] * 60) + ". Ok."
    found = sentences(text)
    assert found[0] == first_sentence(text) == "A title of a paper."
    assert found[1] == "Background. We tested it in mice!"  # the one-word sentence is joined to the next
    assert len(found[2].split()) == MAX_WORDS and len(found) == 3  # cut at MAX_WORDS; the trailing "Ok." dropped


def test_more_sentences_per_document_keep_the_first_ones_and_draw_the_rest_seeded():
    corpus = [f"Title {i} here. " + " ".join(f"Sentence {j} of document {i}." for j in range(6)) for i in range(20)]
    one = pseudo_queries(corpus, limit=1000)
    three = pseudo_queries(corpus, limit=1000, per_document=3, seed=4)
    assert three[:20] == one  # first sentences first, in corpus order
    assert len(three) == 60 and len(set(three)) == 60
    for i in range(20):  # two more from each document, never its first
        assert sum(f"of document {i}." in q for q in three[20:]) == 2
    assert three == pseudo_queries(corpus, limit=1000, per_document=3, seed=4)
    assert three != pseudo_queries(corpus, limit=1000, per_document=3, seed=5)
    capped = pseudo_queries(corpus, limit=30, per_document=3)
    assert len(capped) == 30 and capped[:20] == one  # the limit takes from the extra sentences first
    every = pseudo_queries(corpus, limit=1000, per_document=100)
    assert len(every) == 20 * 7
    with pytest.raises(ValueError, match="per_document"):
        pseudo_queries(corpus, limit=10, per_document=0)
