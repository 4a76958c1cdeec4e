"""Encoding the missing texts in chunks, each written as a shard as soon as it is done.

A kill loses at most the chunks in flight (``workers`` of them, each ``chunk_texts`` texts or about
``chunk_seconds`` of work; one on CPU); the rerun finds the written shards and encodes only the rest. Texts are sorted by length (longest first, as
``encode`` does inside a call) so batches carry little padding; on a GPU the encoder runs under fp16
autocast with larger batches, and ``workers`` threads encode consecutive chunks so one chunk's tokenisation
(Rust, outside the GIL) overlaps another's forward pass.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: fp16 autocast on CUDA, fp32 elsewhere (CPU autocast would be bf16, too coarse for a cache)."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"Unknown encoding precision {precision!r}; choose auto, fp16 or fp32.")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 encoding needs a CUDA device; use fp32 on CPU.")
    return precision


class ThreadModels:
    """One copy of the prefix per worker thread: a fast tokenizer must not be called from two threads at once
    (it mutates its truncation/padding state: "Already borrowed"); the copies share no state, and MiniLM's
    weights are 90 MB a copy."""

    def __init__(self, prefix: SentenceTransformer, workers: int) -> None:
        self.prefix = prefix
        self.workers = workers
        self.local = threading.local()

    def get(self) -> SentenceTransformer:
        if self.workers <= 1:
            return self.prefix
        model = getattr(self.local, "model", None)
        if model is None:
            model = self.local.model = copy.deepcopy(self.prefix)
        return model


def encode_texts(
    prefix: SentenceTransformer | ThreadModels,
    texts: Sequence[str],
    prompt: str | None,
    batch_size: int,
    precision: str,
) -> np.ndarray:
    """The library's ``encode`` of ``texts`` as float32 rows, under fp16 autocast when asked."""
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.float16) if precision == "fp16" else contextlib.nullcontext()
    )
    if isinstance(prefix, ThreadModels):
        prefix = prefix.get()
    with torch.inference_mode(), autocast:
        embeddings = prefix.encode(
            list(texts), prompt=prompt or None, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
    return np.asarray(embeddings, dtype=np.float32)


def fill(
    prefix: SentenceTransformer,
    texts: Sequence[str],
    prompt: str | None,
    write: Callable[[list[str], np.ndarray], None],
    batch_size: int,
    precision: str = "fp32",
    chunk_texts: int = 2048,
    chunk_seconds: float = 60.0,
    workers: int = 1,
    show_progress_bar: bool = False,
    description: str = "Encoding",
) -> int:
    """Encode ``texts`` (distinct, not cached) chunk by chunk, calling ``write(chunk, rows)`` after each."""
    if not texts:
        return 0
    order = sorted(texts, key=len, reverse=True)
    total, done, started = len(order), 0, time.perf_counter()
    bar = None
    if show_progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=description, unit="text")
    size = min(chunk_texts, batch_size * 4)  # a short first chunk measures the rate
    position = 0
    pending: deque = deque()
    was_training = prefix.training
    prefix.eval()
    models = ThreadModels(prefix, workers)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            while position < total or pending:
                while position < total and len(pending) < max(1, workers):
                    chunk = order[position : position + size]
                    position += len(chunk)
                    pending.append((chunk, pool.submit(encode_texts, models, chunk, prompt, batch_size, precision)))
                chunk, future = pending.popleft()
                write(chunk, future.result())
                done += len(chunk)
                elapsed = time.perf_counter() - started
                rate = done / max(elapsed, 1e-9)
                # Next chunks: at most chunk_texts texts and about chunk_seconds of work, whole batches.
                size = min(chunk_texts, max(batch_size, int(rate * chunk_seconds) // batch_size * batch_size))
                if bar is not None:
                    bar.update(len(chunk))
                    bar.set_postfix_str(f"{rate:.0f} texts/s")
                logger.info(
                    "%s: %d/%d texts, %.0f texts/s, ~%.0f s left", description, done, total, rate, (total - done) / rate
                )
    finally:
        prefix.train(was_training)
        if bar is not None:
            bar.close()
    return done
