"""Chroma: ``SentenceTransformerEmbeddingFunction`` whose queries go through ``encode_query``.

Chroma calls the embedding function's ``__call__`` for documents and ``embed_query`` for ``query_texts``; the stock
function uses plain ``encode`` for both and has no setting. This subclass is registered under its own name, so a
persistent collection created with it reopens (in another process too) once this module is imported. With a
symmetric model or a bare encoder both sides give what ``encode`` gives (a documented pass-through).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from chromadb.api.types import Documents, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function
from chromadb.utils.embedding_functions.schemas import validate_config_schema
from chromadb.utils.embedding_functions.sentence_transformer_embedding_function import (
    SentenceTransformerEmbeddingFunction,
)

__all__ = ["FrozenHeadEmbeddingFunction"]


@register_embedding_function
class FrozenHeadEmbeddingFunction(SentenceTransformerEmbeddingFunction):
    """Same arguments as ``SentenceTransformerEmbeddingFunction`` (``model_name``, ``device``, ``trust_remote_code``...)."""

    def _encode(self, texts: Documents, side: str) -> Embeddings:
        encode = self._model.encode_query if side == "query" else self._model.encode_document
        vectors = encode(list(texts), convert_to_numpy=True, normalize_embeddings=self.normalize_embeddings)
        return [np.array(vector, dtype=np.float32) for vector in vectors]

    def __call__(self, input: Documents) -> Embeddings:
        return self._encode(input, "document")

    def embed_query(self, input: Documents) -> Embeddings:
        return self._encode(input, "query")

    @staticmethod
    def name() -> str:
        return "frozen_head"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> FrozenHeadEmbeddingFunction:
        return FrozenHeadEmbeddingFunction(
            model_name=config["model_name"],
            device=config["device"],
            normalize_embeddings=config["normalize_embeddings"],
            **config.get("kwargs", {}),
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        validate_config_schema(config, "sentence_transformer")  # the same config as the function it extends
