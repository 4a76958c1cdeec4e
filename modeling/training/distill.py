"""Distil a full-width query-only head into a reduced model (``--placement distill``, issue 13 design d).

The teacher is the default 384-d query-only head (documents stay the bare encoder's). The student is a ``routes``
model: a query map and a document map into ``out_dim``. The document map starts from PCA of the corpus; the query
map starts from the teacher's query vector projected by that PCA map (``start_at_teacher``), so step 0 already ranks
as the teacher does, as far as the reduced space can hold it. It learns to
reproduce the teacher's ranking of *the whole corpus* for every training query (KL divergence between the two
softmax distributions over all documents, at the ranking loss's scale), plus the bare encoder's document-document
cosines on random document samples. Every document is in every step's loss, so documents no training query touches
are placed by the teacher's scores too, not left where a pairwise loss would push them by accident. The query map,
though, only sees the training queries; ``PseudoQueries`` (one per document, ``modeling.training.pseudo_queries``)
ask it to rank every region of the corpus as their scorer does (the bare encoder by default: ``--pseudo-scorer``).

Why a loop of its own and not the library's trainer: the loss needs all corpus embeddings in every step (one
matrix product on cached embeddings), which the trainer's per-row datasets cannot express without re-reading the
corpus from the cache each batch; on cached tensors an epoch takes well under a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

DISTILL_LEARNING_RATE = 1e-3
DOCUMENT_SAMPLE = 512  # documents per step for the document-document term
DOCUMENT_WEIGHT = 1.0


def embed(head: nn.Module, x: Tensor) -> Tensor:
    """A head's normalised output for pre-head embeddings (what cosine similarity sees)."""
    return F.normalize(head({"sentence_embedding": x})["sentence_embedding"], dim=-1)


@dataclass
class DistillResult:
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    states: list[dict] = field(default_factory=list)  # the heads' state after each epoch (epoch e at index e - 1)
    start: dict = field(default_factory=dict)  # the heads' state before the first epoch (epoch 0)
    seconds: float = 0.0


def affine_map(function: Callable[[Tensor], Tensor], inputs: Tensor) -> tuple[Tensor, Tensor]:
    """(weight, bias) of the affine map that ``function`` is (read off the basis vectors, exact), or, when it is not
    affine on ``inputs`` (an MLP head), the least-squares affine fit over ``inputs``."""
    dim = inputs.shape[1]
    zero = function(torch.zeros(1, dim, dtype=inputs.dtype))
    weight, bias = (function(torch.eye(dim, dtype=inputs.dtype)) - zero).T, zero[0]
    outputs = function(inputs)
    if torch.allclose(inputs @ weight.T + bias, outputs, rtol=1e-3, atol=1e-4):
        return weight, bias
    design = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, outputs).solution  # (in + 1, out)
    return solution[:-1].T, solution[-1]


def start_at_teacher(query_head: nn.Module, document_head: nn.Module, teacher: Callable[[Tensor], Tensor],
                     inputs: Tensor) -> None:  # fmt: skip
    """Start the query map (its base weight and bias; its learned change zeroed) at the teacher's query vector mapped
    by the document map: the teacher's ranking, projected into the reduced space. For linear heads that is the
    document map composed with the teacher; otherwise its least-squares fit over ``inputs`` (pre-head query
    embeddings). Why: from a PCA start the query map must first relearn what the teacher already learned; on outer
    dev carves this start led the PCA start at every epoch (README, "Reduced models")."""
    with torch.no_grad():
        weight, bias = affine_map(lambda x: document_head({"sentence_embedding": teacher(x)})["sentence_embedding"],
                                  inputs)  # fmt: skip
        query_head.base_weight.copy_(weight)
        query_head.base_bias.copy_(bias)
        query_head.delta.zero_()
        query_head.bias.zero_()


def teacher_targets(teacher: Callable[[Tensor], Tensor], queries: Tensor, documents: Tensor, scale: float) -> Tensor:
    """log-softmax over all documents of the teacher's cosine scores, one row per query."""
    with torch.no_grad():
        scores = F.normalize(teacher(queries), dim=-1) @ F.normalize(documents, dim=-1).T
        return F.log_softmax(scale * scores, dim=-1)


def kl_rows(query_head: nn.Module, queries: Tensor, targets: Tensor, student_documents: Tensor, scale: float) -> Tensor:
    """KL(teacher || student) over all documents, averaged over the query rows."""
    logits = scale * embed(query_head, queries) @ student_documents.T
    return F.kl_div(F.log_softmax(logits, dim=-1), targets, log_target=True, reduction="batchmean")


def distillation_loss(
    query_head: nn.Module,
    document_head: nn.Module,
    queries: Tensor,
    targets: Tensor,
    documents: Tensor,
    scale: float,
    sample: Tensor | None = None,
    extra: tuple[Tensor, Tensor, float] | None = None,
) -> Tensor:
    """KL(teacher || student) over all documents, plus the document-document cosine MSE on ``sample`` (indices),
    plus ``weight`` x the KL of the ``extra`` (queries, targets, weight) rows (pseudo-queries)."""
    student_documents = embed(document_head, documents)
    loss = kl_rows(query_head, queries, targets, student_documents, scale)
    if extra is not None:
        loss = loss + extra[2] * kl_rows(query_head, extra[0], extra[1], student_documents, scale)
    if sample is not None and any(p.requires_grad for p in document_head.parameters()):
        picked = student_documents[sample]
        bare = F.normalize(documents[sample], dim=-1)
        loss = loss + DOCUMENT_WEIGHT * F.mse_loss(picked @ picked.T, bare @ bare.T)
    return loss


@dataclass
class PseudoQueries:
    """Extra queries made from the corpus (``modeling.training.pseudo_queries``) and the scorer whose ranking of the
    corpus they teach; ``batch`` of them join every step, their KL term weighted by ``weight``."""

    embeddings: Tensor
    teacher: Callable[[Tensor], Tensor]
    batch: int = 256
    weight: float = 1.0


def distill(
    container: nn.Module,
    query_head: nn.Module,
    document_head: nn.Module,
    teacher: Callable[[Tensor], Tensor],
    queries: Tensor,
    documents: Tensor,
    epochs: int,
    batch_size: int = 64,
    scale: float = 20.0,
    weight_decay: float = 0.0,
    learning_rate: float = DISTILL_LEARNING_RATE,
    seed: int = 0,
    pseudo: PseudoQueries | None = None,
) -> DistillResult:
    """Train the heads (those with ``requires_grad``) for ``epochs``; ``container`` holds both (its state is saved
    per epoch). Weight decay acts on each head's change from its start, so it pulls toward the PCA map. With
    ``pseudo``, each step also distils a random batch of pseudo-queries (their targets computed per batch, so a
    large corpus never holds a pseudo-queries x documents matrix)."""
    started = time.time()
    generator = torch.Generator().manual_seed(seed)
    targets = teacher_targets(teacher, queries, documents, scale)
    parameters = [p for p in container.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    result = DistillResult(start={k: v.detach().clone() for k, v in container.state_dict().items()})
    container.train()
    for epoch in range(epochs):
        order = torch.randperm(len(queries), generator=generator)
        total, steps = 0.0, 0
        for start in range(0, len(queries), batch_size):
            batch = order[start : start + batch_size]
            sample = torch.randint(0, len(documents), (min(DOCUMENT_SAMPLE, len(documents)),), generator=generator)
            extra = None
            if pseudo is not None and len(pseudo.embeddings):
                picked = pseudo.embeddings[
                    torch.randint(0, len(pseudo.embeddings), (pseudo.batch,), generator=generator)
                ]
                extra = (picked, teacher_targets(pseudo.teacher, picked, documents, scale), pseudo.weight)
            loss = distillation_loss(
                query_head, document_head, queries[batch], targets[batch], documents, scale, sample, extra
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        result.losses.append(total / max(steps, 1))
        result.states.append({k: v.detach().clone() for k, v in container.state_dict().items()})
        logger.info("distillation epoch %d: loss %.4f", epoch + 1, result.losses[-1])
    container.eval()
    result.seconds = time.time() - started
    return result
