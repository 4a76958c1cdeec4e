"""Subprocess side of tests/test_cache_fill.py: a slow fill to kill, and one torchrun-like rank of a fill."""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from modeling.cache.embedding_cache import EmbeddingCache


def load(bert_dir: str) -> SentenceTransformer:
    transformer = Transformer(bert_dir, max_seq_length=32)
    return SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension())], device="cpu")


def texts(count: int) -> list[str]:
    words = ["red", "blue", "green", "cat", "dog", "lamp", "desk", "wool", "metal", "cup", "tea", "bag"]
    return [f"{words[i % 12]} {words[(i // 12) % 12]} {words[(i // 144) % 12]} {i}" for i in range(count)]


def slow_fill(bert_dir: str, cache_dir: str, count: int) -> None:
    model = load(bert_dir)
    model[0].register_forward_hook(lambda *args: time.sleep(0.2))  # slow enough to be killed mid-way
    EmbeddingCache(model, root=cache_dir, batch_size=8, chunk_texts=8, show_progress_bar=False).ensure(texts(count))


def rank_fill(bert_dir: str, cache_dir: str, count: int, init_file: str, rank: int, world: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cache = EmbeddingCache(load(bert_dir), root=cache_dir, batch_size=8, chunk_texts=16, show_progress_bar=False)
    encoded = cache.ensure(texts(count))
    embeddings = cache.get(texts(count))
    torch.save(embeddings, f"{out}.pt")
    with open(f"{out}.json", "w") as handle:
        json.dump({"encoded": encoded, "rank": rank, "pid": os.getpid(), "rows": len(cache)}, handle)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1] == "slow":
        slow_fill(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        rank_fill(
            sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
        )
