"""Keep a full-width query head's ranking of the corpus's own pseudo-queries at the bare encoder's (``--anchor-weight``).

Why: the ranking loss only sees queries about training documents, so the head also learns "was a training
positive" as a prior (on SciFact's unseen test queries it doubled the share of training positives in the top 10).
Pseudo-queries from every document (its first sentence, and with ``--pseudo-sentences`` others;
``modeling.training.pseudo_queries``) cover the whole corpus;
a KL term between the head's and the bare encoder's softmax over the documents for a random batch of them asks the
head to leave the ranking of documents no training query touches where the encoder had it. The same term, with
the bare encoder scoring, is what places those documents in a distilled reduced model (``distill.py``).

Written by hand because no library loss adds a term on inputs outside the batch; it wraps the library's loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ANCHOR_BATCH = 64  # pseudo-queries per step


class Anchor:
    """The pre-head embeddings of the pseudo-queries and the (normalised) documents they are ranked against."""

    def __init__(self, pseudo: Tensor, documents: Tensor, head: nn.Module, weight: float, seed: int = 0,
                 source: str = "first sentences of documents") -> None:  # fmt: skip
        self.pseudo, self.documents = pseudo.float(), F.normalize(documents.float(), dim=-1)
        self.head, self.weight, self.seed, self.source = head, weight, seed, source

    def describe(self) -> str:
        return (f"KL to the bare encoder's ranking of {len(self.pseudo):,} pseudo-queries ({self.source}) over "
                f"{len(self.documents):,} documents, weight {self.weight:g}")  # fmt: skip


class AnchoredLoss(nn.Module):
    """``inner`` (the library's loss) + ``anchor.weight`` x KL(bare encoder || head) over the documents, for a random
    batch of pseudo-queries each step (the softmax at the ranking loss's ``scale``)."""

    def __init__(self, inner: nn.Module, anchor: Anchor, scale: float) -> None:
        super().__init__()
        self.inner, self.anchor, self.scale = inner, anchor, scale
        self.generator = torch.Generator().manual_seed(anchor.seed)

    @property
    def model(self):  # the trainer then swaps a wrapped (distributed) model into ``inner``, a child of this loss
        return self.inner.model

    def forward(self, sentence_features, labels) -> Tensor:
        loss = self.inner(sentence_features, labels)
        anchor = self.anchor
        picked = anchor.pseudo[torch.randint(0, len(anchor.pseudo), (ANCHOR_BATCH,), generator=self.generator)]
        picked = picked.to(loss.device)
        documents = anchor.documents.to(loss.device)
        head = F.normalize(anchor.head({"sentence_embedding": picked})["sentence_embedding"], dim=-1)
        student = F.log_softmax(self.scale * head @ documents.T, dim=-1)
        teacher = F.softmax(self.scale * F.normalize(picked, dim=-1) @ documents.T, dim=-1)
        return loss + anchor.weight * F.kl_div(student, teacher, reduction="batchmean")

    def get_config_dict(self) -> dict:
        inner = self.inner.get_config_dict() if hasattr(self.inner, "get_config_dict") else {}
        return {**inner, "anchor": self.anchor.describe()}
