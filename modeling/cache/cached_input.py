"""Training-time input module: serves the frozen encoder's embeddings from an ``EmbeddingCache``.

The model the trainer sees is ``[CachedEmbeddingInput, head (or Router), Normalize]``; the model that is
saved is ``[Transformer, Pooling, head, Normalize]`` with the very same head object, so its
embeddings equal what training saw while the encoder never runs inside the training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import InputModule
from torch import Tensor

from modeling.cache.embedding_cache import EmbeddingCache
from modeling.model.layout import ModelLayout


class CachedEmbeddingInput(InputModule):
    """Looks texts up in the cache (encoding any it has not seen) instead of tokenising them."""

    config_keys: list[str] = ["dimension"]

    def __init__(self, dimension: int, cache: EmbeddingCache | None = None) -> None:
        super().__init__()
        self.dimension = dimension
        self.cache = cache

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, Tensor]:
        if self.cache is None:
            raise RuntimeError("CachedEmbeddingInput has no cache attached; it is a training-time module only.")
        bad = [text for text in inputs if not isinstance(text, str)]
        if bad:
            raise TypeError(f"Expected texts, got {type(bad[0]).__name__}: {bad[0]!r}")
        return {"sentence_embedding": self.cache.get(list(inputs), prompt)}

    def forward(self, features: dict[str, Tensor], **kwargs: Any) -> dict[str, Tensor]:
        return features

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        self.save_config(output_path)  # no weights: checkpoints hold the head only

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> CachedEmbeddingInput:
        hub_kwargs = {
            key: kwargs[key] for key in ("token", "cache_folder", "revision", "local_files_only") if key in kwargs
        }
        return cls(**cls.load_config(model_name_or_path=model_name_or_path, subfolder=subfolder, **hub_kwargs))


def prefix_model(model: SentenceTransformer) -> SentenceTransformer:
    """The encoder prefix of ``model`` as its own model (shares the modules, so no copy of the weights)."""
    return SentenceTransformer(modules=ModelLayout.of(model).prefix, device=str(model.device))


def cached_twin(model: SentenceTransformer, cache: EmbeddingCache) -> SentenceTransformer:
    """``model`` with its encoder prefix replaced by cache look-ups; the head is shared, not copied."""
    dimension = cache.prefix.get_embedding_dimension()
    twin = ModelLayout.of(model).to_model(model, prefix=[CachedEmbeddingInput(dimension, cache)])
    twin.model_card_data = model.model_card_data
    return twin
