"""Frozen-encoder embeddings on disk, computed at most once per (encoder, prompt, text).

Nothing in sentence-transformers or datasets caches a frozen prefix's output across runs (the trainer
re-runs the encoder every step and every evaluation), so this store does: one folder per encoder
fingerprint under ``<root>/v2/`` (the v1 safetensors folders beside it are left as they are: nothing reads
or migrates them), append-only npy shards read row by row, never loaded whole (``shard_store``), filled
chunk by chunk (``fill``).
Under torchrun every rank encodes its share of the missing texts, then all read every shard.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor

from modeling.cache.distributed import barrier, rank_and_world
from modeling.cache.fill import fill, resolve_precision
from modeling.cache.keys import FORMAT_VERSION, encoder_fingerprint, text_key, text_keys
from modeling.cache.shard_store import ShardStore

logger = logging.getLogger(__name__)

PROJECT_HOME = Path(os.environ.get("FROZEN_HEAD_HOME", Path.home() / ".cache" / "frozen-head"))  # cache + demo data
DEFAULT_CACHE_ROOT = Path(os.environ.get("FROZEN_HEAD_CACHE", PROJECT_HOME / "embeddings"))
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}

__all__ = ["DEFAULT_CACHE_ROOT", "PROJECT_HOME", "EmbeddingCache", "encoder_fingerprint", "text_key"]


class EmbeddingCache:
    """Pre-head embeddings of one encoder prefix (e.g. ``[Transformer, Pooling]``).

    Args:
        prefix: The frozen modules in front of the head, as a ``SentenceTransformer``.
        root: Folder of all caches; each encoder gets ``<root>/v2/<fingerprint>-<precision>-<storage>``.
        batch_size: Encoding batch size for texts not cached yet (``None``: 64 on CPU, 512 on CUDA).
        show_progress_bar: Show a progress bar while encoding.
        storage: ``float32`` or ``float16`` rows on disk (look-ups always return float32).
        precision: ``auto`` (fp16 autocast on CUDA, fp32 on CPU), ``fp16`` or ``fp32``.
        chunk_texts, chunk_seconds: a shard is written every this many texts or about this many seconds.
        workers: chunks encoded at once (threads); ``None``: 4 on CUDA, 1 on CPU.
    """

    def __init__(
        self,
        prefix: SentenceTransformer,
        root: str | Path | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool = True,
        storage: str = "float32",
        precision: str = "auto",
        chunk_texts: int = 2048,
        chunk_seconds: float = 60.0,
        workers: int | None = None,
    ) -> None:
        if storage not in STORAGE_DTYPES:
            raise ValueError(f"Unknown cache storage {storage!r}; choose one of {sorted(STORAGE_DTYPES)}.")
        self.prefix = prefix
        on_cuda = prefix.device.type == "cuda"
        self.precision = resolve_precision(precision, prefix.device)
        self.storage = storage
        self.fingerprint = encoder_fingerprint(prefix)
        self.directory = (
            Path(root or DEFAULT_CACHE_ROOT) / FORMAT_VERSION / (f"{self.fingerprint}-{self.precision}-{storage}")
        )
        self.batch_size = batch_size or (512 if on_cuda else 64)
        self.workers = workers or (4 if on_cuda else 1)
        self.chunk_texts = chunk_texts
        self.chunk_seconds = chunk_seconds
        self.show_progress_bar = show_progress_bar
        self.encoded_texts = 0  # texts this instance sent through the encoder: the figure tests count
        self.store = ShardStore(self.directory, dimension=prefix.get_embedding_dimension())
        self.store.refresh()

    def __len__(self) -> int:
        return len(self.store)

    def refresh(self) -> None:
        """Open shards written since the last look (by this or another process)."""
        self.store.refresh()

    def missing(self, texts: Sequence[str], prompt: str | None = None) -> list[str]:
        """The distinct texts of ``texts`` not cached yet, in first-seen order."""
        distinct = list(dict.fromkeys(texts))
        if not distinct:
            return []
        present = self.store.contains(text_keys(distinct, prompt))
        return [text for text, here in zip(distinct, present) if not here]

    def ensure(self, texts: Sequence[str], prompt: str | None = None, description: str = "Encoding") -> int:
        """Encode and store the texts not cached yet; returns how many this process encoded.

        Under an initialised process group every rank must call this with the same texts: rank r encodes
        every world-th missing text (by length, so the shares cost alike), writes its own shards, and after a
        barrier every rank reads them all.
        """
        rank, world = rank_and_world()
        if world > 1:
            barrier()  # every rank sees the same shards before choosing the missing texts
            self.refresh()
        todo = self.missing(texts, prompt)
        if not todo:
            if world > 1:
                barrier()
            return 0
        if world > 1:
            todo = sorted(todo, key=len, reverse=True)[rank::world]
        if self.show_progress_bar and rank == 0:
            logger.info("%s: %d new texts with the frozen encoder (cache: %s)", description, len(todo), self.directory)
        encoded = self._encode(todo, prompt, description)
        if world > 1:
            barrier()
            self.refresh()
            left = self.missing(texts, prompt)  # only if a shard vanished meanwhile (moved aside as corrupt)
            if left:
                encoded += self._encode(left, prompt, description)
        return encoded

    def _encode(self, todo: list[str], prompt: str | None, description: str) -> int:
        dtype = STORAGE_DTYPES[self.storage]

        def write(chunk: list[str], rows: np.ndarray) -> None:
            self.store.append(text_keys(chunk, prompt), rows.astype(dtype, copy=False))
            self.encoded_texts += len(chunk)

        done = fill(
            self.prefix, todo, prompt, write,
            batch_size=self.batch_size, precision=self.precision, chunk_texts=self.chunk_texts,
            chunk_seconds=self.chunk_seconds, workers=self.workers,
            show_progress_bar=self.show_progress_bar, description=description,
        )  # fmt: skip
        self.store.refresh()
        return done

    def locate(self, texts: Sequence[str], prompt: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(shard, row)`` of each text, encoding what is missing first: resolve once, gather by index later."""
        keys = text_keys(texts, prompt)  # hashed once: this runs for every training batch
        found, shards, rows = self.store.locate(keys)
        if not found.all():
            self.ensure(texts, prompt)
            found, shards, rows = self.store.locate(keys)
            if not found.all():
                raise RuntimeError(f"{int((~found).sum())} texts are still missing from the cache {self.directory}")
        return shards, rows

    def gather(self, shards: np.ndarray, rows: np.ndarray) -> Tensor:
        """Embeddings at ``(shard, row)`` positions from ``locate``, shape ``(len(rows), dim)``, float32."""
        if len(rows) == 0:
            return torch.empty(0, self.prefix.get_embedding_dimension())
        return torch.from_numpy(self.store.gather(shards, rows))

    def get(self, texts: Sequence[str], prompt: str | None = None) -> Tensor:
        """Embeddings of ``texts`` (encoding what is missing first), shape ``(len(texts), dim)``."""
        return self.gather(*self.locate(list(texts), prompt))
