"""Frozen-encoder embeddings on disk, computed at most once per (encoder, prompt, text).

Nothing in sentence-transformers or datasets caches a frozen prefix's output across runs (the trainer
re-runs the encoder every step and every evaluation), so this small store does: one folder per encoder
fingerprint (a hash of its weights and module configs), append-only safetensors shards keyed by
``sha256(prompt NUL text)``. A second run with other hyperparameters on the same data makes zero
encoder calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from torch import Tensor

PROJECT_HOME = Path(os.environ.get("FROZEN_HEAD_HOME", Path.home() / ".cache" / "frozen-head"))  # cache + demo data
DEFAULT_CACHE_ROOT = Path(os.environ.get("FROZEN_HEAD_CACHE", PROJECT_HOME / "embeddings"))


def encoder_fingerprint(prefix: SentenceTransformer) -> str:
    """Identity of the modules that produce the pre-head embedding: their types, configs and weights."""
    digest = hashlib.sha256()
    for module in prefix:
        config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
        digest.update(f"{type(module).__name__}:{json.dumps(config, sort_keys=True, default=str)}".encode())
    digest.update(f"max_seq_length={prefix.max_seq_length}".encode())
    tokenizer = getattr(prefix, "tokenizer", None)
    if tokenizer is not None:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for name, tensor in sorted(prefix.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


def text_key(text: str, prompt: str | None) -> bytes:
    return hashlib.sha256(f"{prompt or ''}\x00{text}".encode()).digest()


class EmbeddingCache:
    """Pre-head embeddings of one encoder prefix (e.g. ``[Transformer, Pooling]``).

    Args:
        prefix: The frozen modules in front of the head, as a ``SentenceTransformer``.
        root: Folder of all caches; each encoder gets a subfolder named by its fingerprint.
        batch_size: Encoding batch size for texts not cached yet.
        show_progress_bar: Show a progress bar while encoding.
    """

    def __init__(
        self,
        prefix: SentenceTransformer,
        root: str | Path | None = None,
        batch_size: int = 64,
        show_progress_bar: bool = True,
    ) -> None:
        self.prefix = prefix
        self.fingerprint = encoder_fingerprint(prefix)
        self.directory = Path(root or DEFAULT_CACHE_ROOT) / self.fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.encoded_texts = 0  # texts this instance sent through the encoder: the figure tests count
        self._rows: dict[bytes, tuple[int, int]] = {}
        self._shards: list[Tensor] = []
        self._loaded: set[str] = set()
        self.refresh()

    def __len__(self) -> int:
        return len(self._rows)

    def refresh(self) -> None:
        """Read shards written since the last look (by this or another process)."""
        for path in sorted(self.directory.glob("shard-*.safetensors")):
            if path.name in self._loaded:
                continue
            tensors = load_file(str(path))
            shard = len(self._shards)
            self._shards.append(tensors["embeddings"])
            for row, key in enumerate(tensors["keys"]):
                self._rows.setdefault(bytes(key.tolist()), (shard, row))
            self._loaded.add(path.name)

    def missing(self, texts: Sequence[str], prompt: str | None = None) -> list[str]:
        """The distinct texts of ``texts`` not cached yet, in first-seen order."""
        seen: dict[str, None] = {}
        for text in texts:
            if text not in seen and text_key(text, prompt) not in self._rows:
                seen[text] = None
        return list(seen)

    def ensure(self, texts: Sequence[str], prompt: str | None = None, description: str = "Encoding") -> int:
        """Encode and store the texts that are not cached yet; returns how many were encoded."""
        todo = self.missing(texts, prompt)
        if not todo:
            return 0
        if self.show_progress_bar:
            print(f"{description}: {len(todo)} new texts with the frozen encoder (cache: {self.directory})", flush=True)
        was_training = self.prefix.training
        self.prefix.eval()
        with torch.inference_mode():
            embeddings = self.prefix.encode(
                todo,
                prompt=prompt or None,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                show_progress_bar=self.show_progress_bar,
            )
        self.prefix.train(was_training)
        keys = torch.tensor([list(text_key(text, prompt)) for text in todo], dtype=torch.uint8)
        self._write_shard(keys, embeddings.float().cpu())
        self.encoded_texts += len(todo)
        return len(todo)

    def _write_shard(self, keys: Tensor, embeddings: Tensor) -> None:
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        temporary = self.directory / f".{name}.tmp"
        save_file({"keys": keys.contiguous(), "embeddings": embeddings.contiguous()}, str(temporary))
        os.replace(temporary, self.directory / name)  # atomic: a crash never leaves half a shard
        self.refresh()

    def get(self, texts: Sequence[str], prompt: str | None = None) -> Tensor:
        """Embeddings of ``texts`` (encoding what is missing first), shape ``(len(texts), dim)``."""
        keys = [text_key(text, prompt) for text in texts]  # hashed once: this runs for every training batch
        if any(key not in self._rows for key in keys):
            self.ensure(texts, prompt)
        rows = [self._rows[key] for key in keys]
        if not rows:
            return torch.empty(0, self.prefix.get_embedding_dimension())
        return torch.stack([self._shards[shard][row] for shard, row in rows])
