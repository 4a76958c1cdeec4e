"""LlamaIndex: ``HuggingFaceEmbedding`` whose queries go through ``encode_query`` and texts through ``encode_document``.

``HuggingFaceEmbedding`` calls plain ``encode`` on both sides (with its own empty prompts) and has no setting to
route queries, so a query-only head would be skipped silently. With a symmetric model or a bare encoder both calls
give what ``encode`` gives (a documented pass-through).
"""

from __future__ import annotations

from llama_index.embeddings.huggingface import HuggingFaceEmbedding

__all__ = ["FrozenHeadEmbedding"]


class FrozenHeadEmbedding(HuggingFaceEmbedding):
    """Drop-in for ``HuggingFaceEmbedding(model_name=..., trust_remote_code=...)``."""

    @classmethod
    def class_name(cls) -> str:
        return "FrozenHeadEmbedding"

    def _encode(self, texts: list[str], side: str) -> list[list[float]]:
        """Like ``HuggingFaceEmbedding._embed`` (its prompts, batch size, normalisation, process pool), but routed."""
        encode = self._model.encode_query if side == "query" else self._model.encode_document
        kwargs = {
            "prompt_name": "query" if side == "query" else "text",  # the instructions HuggingFaceEmbedding set
            "batch_size": self.embed_batch_size,
            "normalize_embeddings": self.normalize,
            "show_progress_bar": self.show_progress_bar,
        }
        if not self._parallel_process:
            return encode(texts, **kwargs).tolist()
        pool = self._model.start_multi_process_pool(target_devices=self._target_devices)
        try:
            return encode(texts, pool=pool, **kwargs).tolist()
        finally:
            self._model.stop_multi_process_pool(pool)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode([query], "query")[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text], "document")[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(list(texts), "document")

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._get_text_embeddings(texts)
