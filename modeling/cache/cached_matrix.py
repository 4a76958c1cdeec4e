"""A read-only ``(N, d)`` matrix of N texts' cached embeddings, read from the cache's shards a block at a time.

Search, FAISS index building, pair scoring and hard-negative mining need ``len()``, row slices and row gathers of
the corpus embeddings, never all of them at once. This view resolves each text to its ``(shard, row)`` once (8
bytes a text) and reads only the rows asked for (``ShardStore.gather``: ``pread`` through the page cache, nothing
counted in the process's memory), so a process holds one block of the corpus, not the corpus.
Hand-written because the rows of N texts lie scattered over append-only shards (in the order they were written,
found through a sorted key index): neither a numpy memory map nor a torch tensor can present them as one matrix in
the texts' order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

DEFAULT_CHUNK_ROWS = 16384  # rows per block read by the streaming callers (24 MB of 384-d float32)

Transform = Callable[[Tensor], Tensor]


class ReadCounter:
    """Rows read in all, and the most read at once."""

    def __init__(self) -> None:
        self.rows = 0
        self.largest = 0

    def add(self, count: int) -> None:
        self.rows += count
        self.largest = max(self.largest, count)


class CachedMatrix:
    """Rows of ``texts`` (under ``prompt``) from ``cache``, passed through ``transform`` block by block.

    Args:
        cache: An ``EmbeddingCache``; texts it lacks are encoded once, here (``cache.locate``). An object with
            ``get(texts, prompt)`` only is read through ``get`` per block.
        texts: The rows' texts, in row order.
        prompt: The prompt the rows were cached under.
        transform: Applied to every block of float32 rows read (e.g. the model's document side: head and Normalize;
            it must map rows independently); ``None`` serves the cached rows as they are.
        chunk_rows: Rows per block for streaming callers (``chunks``, ``exact_search(doc_chunk=...)``).

    ``m[a:b]`` and ``m[indices]`` return float32 tensors; ``rows_read`` and ``largest_read`` count what was read
    (the tests' proof that the whole matrix was never read at once).
    """

    def __init__(
        self,
        cache: Any,
        texts: Sequence[str],
        prompt: str | None = None,
        transform: Transform | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        located: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, got {chunk_rows}.")
        self.cache = cache
        self.prompt = prompt
        self.transform = transform
        self.chunk_rows = chunk_rows
        self.texts: list[str] | None = None
        if located is None and not hasattr(cache, "locate"):  # a cache with ``get`` only: look texts up per read
            self.texts = list(texts)
            located = (np.zeros(len(self.texts), dtype=np.int32), np.arange(len(self.texts)))
        self.shards, self.rows = located if located is not None else cache.locate(list(texts), prompt)
        self.reads = ReadCounter()
        self._width: int | None = None

    def map(self, transform: Transform) -> CachedMatrix:
        """The same rows with ``transform`` applied after this view's own (no second look-up of the texts)."""
        inner = self.transform
        composed = transform if inner is None else (lambda rows: transform(inner(rows)))
        view = CachedMatrix(self.cache, (), self.prompt, composed, self.chunk_rows, (self.shards, self.rows))
        view.texts, view.reads = self.texts, self.reads  # one counter for the rows and every view of them
        return view

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def rows_read(self) -> int:
        return self.reads.rows

    @property
    def largest_read(self) -> int:
        return self.reads.largest

    @property
    def shape(self) -> tuple[int, int]:
        if self._width is None:
            self._width = int(self._read(np.zeros(1, dtype=np.int64)).shape[1]) if len(self) else 0
        return len(self), self._width

    def __getitem__(self, index: slice | Sequence[int] | np.ndarray | Tensor) -> Tensor:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("CachedMatrix slices contiguous rows only.")
            positions = np.arange(start, max(start, stop))
        else:
            if isinstance(index, Tensor):
                index = index.cpu().numpy()
            positions = np.asarray(index, dtype=np.int64).reshape(-1)
            if len(positions) and (positions.min() < -len(self) or positions.max() >= len(self)):
                raise IndexError(f"row index out of range for a matrix of {len(self)} rows")
            positions = np.where(positions < 0, positions + len(self), positions)
        return self._read(positions)

    def _read(self, positions: np.ndarray) -> Tensor:
        self.reads.add(len(positions))
        if len(positions) == 0:
            return torch.empty(0, self._width or 0)
        if self.texts is not None:
            block = self.cache.get([self.texts[i] for i in positions.tolist()], self.prompt)
        else:
            block = self.cache.gather(self.shards[positions], self.rows[positions])
        if self.transform is not None:
            with torch.inference_mode():
                block = self.transform(block).float().cpu()
        return block

    def chunks(self, chunk_rows: int | None = None):
        """``(start, rows)`` blocks in order, each at most ``chunk_rows`` (default: the view's) rows."""
        size = chunk_rows or self.chunk_rows
        for start in range(0, len(self), size):
            yield start, self[start : start + size]


def document_side(twin: Any) -> Transform:
    """A block transform running ``twin``'s modules after its cached input on the document route (its document head
    or none, then Normalize): what ``twin.encode_document`` does to cached rows, one block at a time."""

    def transform(rows: Tensor) -> Tensor:
        with torch.inference_mode():
            out = twin({"sentence_embedding": rows.to(twin.device)}, task="document")["sentence_embedding"]
            if twin.truncate_dim:
                out = out[..., : twin.truncate_dim]  # as encode's truncate_dim
            return out.float().cpu()

    return transform
