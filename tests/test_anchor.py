"""--anchor-weight: a full-width query head keeps the bare encoder's ranking of the corpus's pseudo-queries."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modeling.model.projection_head import ProjectionHead
from modeling.training.anchor import Anchor, AnchoredLoss
from modeling.training.settings import parse_settings
from tests.training_fixtures import pair_rows, run_train, save_tiny_encoder, train_small_run, write_jsonl


class Inner(nn.Module):
    """A stand-in for the library's loss: a constant that stores a model, as the library's losses do."""

    def __init__(self):
        super().__init__()
        self.model = nn.Linear(1, 1)

    def forward(self, features, labels):
        return torch.tensor(0.25)


def anchored(head: nn.Module, weight: float = 2.0) -> AnchoredLoss:
    torch.manual_seed(0)
    anchor = Anchor(torch.randn(50, 8), torch.randn(30, 8), head, weight)
    return AnchoredLoss(Inner(), anchor, scale=20.0)


def test_the_term_is_zero_at_the_identity_start_and_pulls_a_moved_head_back():
    head = ProjectionHead(8, 8)  # identity start: the bare encoder's ranking exactly
    assert anchored(head)(None, None).item() == pytest.approx(0.25, abs=1e-6)
    with torch.no_grad():
        head.delta.add_(0.3 * torch.randn(8, 8))
    loss = anchored(head)(None, None)
    assert loss.item() > 0.25
    loss.backward()
    assert head.delta.grad.abs().sum() > 0  # the term trains the head


def test_the_term_is_the_weighted_kl_of_the_two_rankings():
    head = ProjectionHead(8, 8)
    with torch.no_grad():
        head.delta.add_(0.3 * torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))
    loss = anchored(head, weight=2.0)
    picked = loss.anchor.pseudo[torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(0))]
    docs = F.normalize(loss.anchor.documents, dim=-1)
    student = F.log_softmax(
        20 * F.normalize(head({"sentence_embedding": picked})["sentence_embedding"], dim=-1) @ docs.T, -1
    )
    teacher = F.softmax(20 * F.normalize(picked, dim=-1) @ docs.T, -1)
    expected = 0.25 + 2.0 * F.kl_div(student, teacher, reduction="batchmean")
    assert loss(None, None).item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.model is loss.inner.model  # the trainer swaps a distributed model in through it


def test_the_default_run_anchors_the_head_and_says_so(tmp_path):
    out = train_small_run(tmp_path, "--average-carves", "1")
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["anchor"].startswith("KL to the bare encoder's ranking of") and "weight 2" in summary["anchor"]
    assert "Pseudo-queries anchored to the bare encoder (--anchor-weight)" in (out / "README.md").read_text()
    off = train_small_run(tmp_path / "off", "--average-carves", "1", "--anchor-weight", "0")
    assert json.loads((off / "training_summary.json").read_text())["anchor"] == ""


def test_more_sentences_per_document_anchor_more_pseudo_queries(tmp_path):
    """--pseudo-sentences 3: each document's first sentence and two more of it join the anchor, and it says so."""

    rows = [{**row, "positive": f"{row['positive']}. Ask for {row['query']}. Or for {row['query']} again."}
            for row in pair_rows(160)]  # fmt: skip
    encoder, data = save_tiny_encoder(tmp_path / "encoder"), write_jsonl(tmp_path / "pairs.jsonl", rows)

    def anchor_of(folder, *flags):
        assert (
            run_train(encoder, data, folder, tmp_path / "cache", "--epochs", "1", "--average-carves", "1", *flags) == 0
        )
        return json.loads((folder / "training_summary.json").read_text())["anchor"]

    one, three = anchor_of(tmp_path / "one"), anchor_of(tmp_path / "three", "--pseudo-sentences", "3")
    assert (
        "(first sentences of documents)" in one and "(first sentences of documents and up to 2 more of each)" in three
    )
    count = lambda text: int(text.split(" pseudo-queries")[0].rsplit(" ", 1)[1].replace(",", ""))  # noqa: E731
    assert count(three) > count(one)


def test_bad_anchor_weight_exits_2():
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--anchor-weight", "-1"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--pseudo-sentences", "0"])
    assert exit_info.value.code == 2
