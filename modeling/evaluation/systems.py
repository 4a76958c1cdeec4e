"""The dense systems: the model under test, the bare encoder under its head, both served by one embedding cache.

``cached_twin`` runs every text through the frozen encoder at most once ever (across systems, runs and the
training that came before); a query-only head reuses the bare encoder's document embeddings outright.
"""

from __future__ import annotations

from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor

from modeling.cache.cached_input import cached_twin
from modeling.cache.cached_matrix import DEFAULT_CHUNK_ROWS, CachedMatrix, document_side
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.model.build import default_encoder_path, placement_of
from modeling.model.code_files import LIBRARY_PREFIX, missing_code_files, module_types
from modeling.model.layout import ModelLayout

DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


class ModelError(ValueError):
    """A model that cannot be loaded or evaluated (the message says why and what to do)."""


def custom_module_types(source: str) -> list[str]:
    """Module classes outside sentence-transformers that a local model folder names, Router routes included (they
    need trust_remote_code)."""
    if not (Path(source) / "modules.json").is_file():
        return []
    return [kind for kind in module_types(source) if not kind.startswith(LIBRARY_PREFIX)]


def load_model(source: str | None, trust_remote_code: bool = False, device: str | None = None) -> SentenceTransformer:
    """The model to evaluate; ``None`` is the offline all-MiniLM-L6-v2. Raises ``ModelError`` with the reason."""
    path = default_encoder_path() if source is None else str(source)
    if (
        source is not None
        and (path.startswith((".", "/", "~")) or Path(path).exists())
        and not Path(path).expanduser().is_dir()
    ):
        raise ModelError(f"Model folder {path} does not exist.")
    custom = custom_module_types(path)
    if custom and not trust_remote_code:
        raise ModelError(
            f"{path} uses custom module code ({', '.join(custom)}), which sentence-transformers >= 6 only imports "
            "with trust_remote_code: rerun with --trust-remote-code if you trust this folder."
        )
    missing = missing_code_files(path) if (Path(path) / "modules.json").is_file() else []
    if missing:
        raise ModelError(
            f"{path} lacks {', '.join(missing)}: the code of a module its config names. The folder is incomplete; "
            "save or download the model again."
        )
    try:
        return SentenceTransformer(path, device=device, trust_remote_code=trust_remote_code)
    except Exception as error:
        hint = ""
        if "trust_remote_code" in str(error) and not trust_remote_code:
            hint = " It contains custom code: rerun with --trust-remote-code if you trust it."
        elif not Path(path).exists():
            hint = " (not a local folder; loading a Hub id needs network access or a copy in the Hugging Face cache)"
        raise ModelError(f"Cannot load model {path!r}: {type(error).__name__}: {error}{hint}") from None


def has_head(model: SentenceTransformer) -> bool:
    return ModelLayout.of(model).head is not None


def bare_encoder(model: SentenceTransformer) -> SentenceTransformer:
    """The bare encoder under the head: the model's encoder prefix (+ Normalize when the model normalises)."""
    layout = ModelLayout.of(model)
    return model if layout.head is None else layout.bare(model)


def resolve_prompt(model: SentenceTransformer, task: str, prompt: str | None) -> str | None:
    """The prompt ``encode_query`` / ``encode_document`` would apply, so the cache can be filled up front."""
    if prompt is not None:
        return prompt
    names = ("query",) if task == "query" else DOCUMENT_PROMPT_NAMES
    for name in names:
        if name in model.prompts:
            return model.prompts[name]
    return model.prompts.get(model.default_prompt_name) if model.default_prompt_name else None


class DenseEncoder:
    """Encodes texts for one model through the shared cache: ``encode(texts, "query" | "document")``."""

    def __init__(self, model: SentenceTransformer, cache: EmbeddingCache, batch_size: int = 1024) -> None:
        self.model = model
        self.cache = cache
        self.twin = cached_twin(model, cache)
        self.batch_size = batch_size

    def encode(self, texts: list[str], task: str, prompt: str | None = None, description: str = "Encoding") -> Tensor:
        prompt = resolve_prompt(self.model, task, prompt)
        self.cache.ensure(texts, prompt, description=description)  # one pass for all missing texts, one shard
        method = self.twin.encode_query if task == "query" else self.twin.encode_document
        with torch.inference_mode():
            return (
                method(
                    texts, prompt=prompt, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False
                )
                .float()
                .cpu()
            )

    def document_rows(
        self,
        texts: list[str],
        prompt: str | None = None,
        description: str = "Corpus",
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> CachedMatrix:
        """The documents as ``encode(texts, "document")`` embeds them, served from the cache a block at a time.

        The cached pre-head rows go through the model's document side (head or none, then Normalize) per block read,
        so no embedding of the whole corpus is ever held or written."""
        prompt = resolve_prompt(self.model, "document", prompt)
        self.cache.ensure(texts, prompt, description=description)
        return CachedMatrix(self.cache, texts, prompt, document_side(self.twin), chunk_rows)


def documents_shared(
    model: SentenceTransformer, trained: DenseEncoder, bare: DenseEncoder, sample: list[str], prompt: str | None
) -> bool:
    """Whether the trained model embeds documents exactly as the bare encoder (a query-only head), checked on a sample."""
    if placement_of(model) != "query" or not sample:
        return False
    return torch.allclose(
        trained.encode(sample, "document", prompt), bare.encode(sample, "document", prompt), atol=1e-6
    )
