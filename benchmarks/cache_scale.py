"""The v2 cache at scale: append synthetic 384-d rows in shards, then time random training-batch look-ups.

    python benchmarks/cache_scale.py --rows 1000000

Imports torch and sentence-transformers first (as training does), appends ``--rows`` rows in shards of
``--shard-rows`` through ``ShardStore.append``, opens the folder in a fresh ``ShardStore`` (as a new run would)
and looks up ``--batches`` random batches of 64 keys (hash-free: the keys are precomputed, as the training
collator resolves them once). Last line: ``peak_rss_gb=X lookup_ms_per_batch=Y`` (peak RSS of this process).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import sentence_transformers  # noqa: F401  (the import a training job pays, counted in the peak)
import torch

from modeling.cache.keys import KEY_DTYPE
from modeling.cache.shard_store import ShardStore


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--storage", choices=["float32", "float16"], default="float32")
    parser.add_argument("--dir", default=None, help="folder for the shards (default: a temporary one)")
    args = parser.parse_args()
    after_import = rss_gb()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        store = ShardStore(folder, dimension=args.dim)
        started = time.perf_counter()
        all_keys = []
        for start in range(0, args.rows, args.shard_rows):
            count = min(args.shard_rows, args.rows - start)
            keys = rng.bytes(16 * count)
            keys = np.frombuffer(keys, dtype=KEY_DTYPE).copy()
            rows = rng.standard_normal((count, args.dim), dtype=np.float32).astype(args.storage)
            store.append(keys, rows)
            all_keys.append(keys)
        all_keys = np.concatenate(all_keys)
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        reader = ShardStore(folder, dimension=args.dim)
        reader.refresh()
        open_s = time.perf_counter() - started
        assert len(reader) == args.rows
        batches = [all_keys[rng.integers(0, args.rows, args.batch_size)] for _ in range(args.batches)]
        started = time.perf_counter()
        for keys in batches:
            found, shards, rows = reader.locate(keys)
            torch.from_numpy(reader.gather(shards, rows))
        lookup_ms = (time.perf_counter() - started) / args.batches * 1000
        found, shards, rows = reader.locate(batches[0])
        assert found.all()
    print(
        f"rows={args.rows} shards={-(-args.rows // args.shard_rows)} storage={args.storage} "
        f"write_s={write_s:.1f} open_index_s={open_s:.2f} rss_after_import_gb={after_import:.2f}"
    )
    print(f"peak_rss_gb={rss_gb():.2f} lookup_ms_per_batch={lookup_ms:.3f}")


if __name__ == "__main__":
    main()
