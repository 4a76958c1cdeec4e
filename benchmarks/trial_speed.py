"""Steps/s of one trial through the library's trainer against a plain torch loop doing the same updates.

    python benchmarks/trial_speed.py

A 50,000-pair synthetic set (distinct query and document texts) whose 384-d embeddings are written straight
into the cache (so nothing is encoded), batch 64, MNRL with in-batch negatives, query-side linear head:
- trainer: ``run_trial`` exactly as train.py runs it (the library's ``SentenceTransformerTrainer``, NoDuplicates
  sampling, dev evaluation every epoch on a 1,000-document dev set, the best epoch kept, resume points every
  ``--checkpoint-seconds`` 60: none in a trial this short, as in train.py), steps / wall time of ``run_trial``,
  its fixed costs (trainer set-up, reading the training rows from the cache) included;
- plain: AdamW with the same learning rate, warmup-then-linear schedule and gradient clipping (1.0), the
  same loss on the same cached rows held in one tensor, random batches, steps / wall time.
Both single-threaded (``torch.set_num_threads(1)``). ``--baseline`` also runs the trainer without the
index loader and sampler (the per-text cache look-up path) for the before/after figure.
Last line: ``trainer_steps_per_s=X plain_steps_per_s=Y``; the target is X >= 0.5 Y.

Where a trial's time went (py-spy, this benchmark, 2 shared CPU cores; issue 11 item 6).
Before: ~3.7 ms a step against the plain loop's ~1.3 ms (ratio 0.27-0.47). Of the trainer's epoch, reading the
batch was 29 % (the rows from Arrow ~10 %, texts -> ids and the gather ~9 %, the first read of the training rows
from the cache ~5 %, the NoDuplicates sampler ~4 %), the forward (twin + MNRL) 21 %, backward 17 %, AdamW + schedule
12 % (accelerate asking for ``lomo_optim`` twice a step, a filesystem search, ~3 %), clipping 7 %, the library's
second ``zero_grad`` 3 %; per trial ~0.5 s of ``gc.collect`` (accelerate's ``free_memory``), a checkpoint every
epoch ~0.1 s (on SciFact, 20 epochs x 7 trials, a third of the training time) and a dev evaluation ~0.04 s.
After (``modeling.training.trial.CachedRowsTrainer``, ``modeling.cache.indexed_rows.IndexedBatches``): the loader
yields the sampler's row indices and one gather per column makes the batch; the best epoch is a copy of the head
in memory, checkpoints are timed resume points; no full ``gc.collect``, no second ``zero_grad``, the lomo answer
cached, the sampler's ids as tuples; the dev corpus of a query-only head is embedded once per trial, not every
epoch (``modeling.training.dev.DevEvaluator``; on SciFact, ~85 % of each evaluation). The epoch is now forward
28 %, backward 25 %, batches 20 % (half of it the one read of the training rows from the cache, ~0.6 s for
100,000 texts; the library's sampler ~6 % of the epoch), AdamW + schedule 9 %, clipping 9 %: what is left over the
plain loop is the library's own per-step Python (module calls, the Router, the loss's second normalisation, the
callbacks) and that one read. Measured in one session (load 3.4-4.4), main then this code, alternating:
before 370/889, 323/832, 398/904 steps/s (ratio 0.42, 0.39, 0.44); after 515/917, 327/538, 490/882 (0.56, 0.61,
0.56); quieter (load 1.2-2.1): 318/815, 289/790 (0.39, 0.37) against 460/831, 489/867 (0.55, 0.56).
SciFact ``train.py`` (the same heads, bit for bit): training 50.0 s before, 23.2 s after with OMP_NUM_THREADS=1 back
to back; with torch's 2 threads on this shared 2-core machine thread contention dominates (wall ~ user time) and
pairs ranged from 528 vs 129 s to 187 vs 187 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.base.modules.normalize import Normalize
from sentence_transformers.sentence_transformer.modules import Pooling
from transformers import get_linear_schedule_with_warmup

from modeling.cache.cached_input import cached_twin, prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.cache.keys import text_keys
from modeling.model.build import build_model, find_head
from modeling.training import trial as trial_module
from modeling.training.dev import dev_evaluator
from modeling.training.settings import WARMUP_RATIO, TrainSettings, Trial
from modeling.training.trial import head_state, run_trial
from tests.tiny_encoder import write_tiny_bert

WORDS = [
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "lamp",
    "desk",
    "wool",
    "metal",
    "cup",
    "tea",
    "bag",
    "shoe",
    "boot",
    "chair",
    "table",
    "phone",
    "cable",
]


def synthetic_texts(count: int, prefix: str, words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{prefix}{i} " + " ".join(rng.choice(WORDS, words)) for i in range(count)]


def fill_synthetic(cache: EmbeddingCache, texts: list[str], seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((len(texts), cache.prefix.get_embedding_dimension()), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    for start in range(0, len(texts), 10_000):
        cache.store.append(text_keys(texts[start : start + 10_000]), rows[start : start + 10_000])
    cache.refresh()
    return torch.from_numpy(rows)


def trainer_run(model, cache, dataset, evaluator, settings, trial, workdir: Path, indexed: bool) -> tuple[float, int]:
    head = find_head(model)
    twin = cached_twin(model, cache)
    hooks = trial_module.use_cached_rows, trial_module.use_indexed_sampler
    if not indexed:  # the library's own collator path (per-text cache keys) and NoDuplicates sampler
        trial_module.use_cached_rows = lambda trainer, dataset: None
        trial_module.use_indexed_sampler = lambda args: None
    try:
        started = time.perf_counter()
        result = run_trial(twin, head, dataset, evaluator, ([], []), settings, trial, workdir, use_guard=False)
        seconds = time.perf_counter() - started
    finally:
        trial_module.use_cached_rows, trial_module.use_indexed_sampler = hooks
    return result.steps / seconds, result.steps


def plain_run(head, queries: torch.Tensor, documents: torch.Tensor, settings, trial, steps: int) -> float:
    optimizer = torch.optim.AdamW(head.parameters(), lr=trial.learning_rate, weight_decay=trial.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(WARMUP_RATIO * steps), steps)
    generator = torch.Generator().manual_seed(0)
    head.train()
    started = time.perf_counter()
    done = 0
    while done < steps:
        for batch in torch.randperm(len(queries), generator=generator).split(settings.batch_size):
            if len(batch) < settings.batch_size or done == steps:
                continue
            q = F.normalize(head({"sentence_embedding": queries[batch]})["sentence_embedding"], dim=-1)
            d = F.normalize(documents[batch], dim=-1)
            loss = F.cross_entropy(settings.scale * q @ d.T, torch.arange(len(batch)))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)  # the trainer's max_grad_norm default
            optimizer.step()
            schedule.step()
            done += 1
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--baseline", action="store_true", help="also time the trainer without the index collator")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        bert = write_tiny_bert(folder / "bert", hidden=384)
        transformer = Transformer(str(bert), max_seq_length=32)
        encoder = SentenceTransformer(modules=[transformer, Pooling(384), Normalize()], device="cpu")
        torch.manual_seed(0)
        model = build_model(encoder, placement="query")
        model.model_card_data.generate_widget_examples = False  # as train.py: no encoder call for the card
        cache = EmbeddingCache(prefix_model(model), root=folder / "cache", show_progress_bar=False)
        queries = synthetic_texts(args.pairs, "query ", 6, seed=1)
        documents = synthetic_texts(args.pairs, "document ", 40, seed=2)
        q_rows = fill_synthetic(cache, queries, seed=1)
        d_rows = fill_synthetic(cache, documents, seed=2)
        dataset = Dataset.from_dict({"query": queries, "document": documents})
        dev = range(args.pairs - 100, args.pairs)
        evaluator = dev_evaluator(
            {f"q{i}": queries[i] for i in dev},
            {f"d{i}": documents[i] for i in range(args.pairs - 1000, args.pairs)},
            {f"q{i}": {f"d{i}"} for i in dev},
        )
        settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, placement="query", show_progress=False)
        trial = Trial(1e-3, 0.0)
        head = find_head(model)
        start = head_state(head)
        rows = {}
        modes = [True, False] if args.baseline else [True]
        for indexed in modes:
            head.load_state_dict(start)
            rows[indexed] = trainer_run(
                model, cache, dataset, evaluator, settings, trial, folder / f"trial-{indexed}", indexed
            )
            print(f"trainer ({'index collator' if indexed else 'per-text look-up'}): "
                  f"{rows[indexed][0]:.1f} steps/s over {rows[indexed][1]} steps", flush=True)  # fmt: skip
        head.load_state_dict(start)
        plain = plain_run(head, q_rows, d_rows, settings, trial, rows[True][1])
    print(f"plain loop: {plain:.1f} steps/s; ratio trainer/plain {rows[True][0] / plain:.2f}")
    print(f"trainer_steps_per_s={rows[True][0]:.1f} plain_steps_per_s={plain:.1f}")


if __name__ == "__main__":
    main()
