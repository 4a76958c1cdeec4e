"""The cache fill: a kill loses at most one chunk, and two gloo ranks split the work into the same cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling.cache.embedding_cache import EmbeddingCache
from tests import cache_fill_worker as worker
from tests.tiny_encoder import write_tiny_bert

WORKER = [sys.executable, str(Path(worker.__file__))]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return str(write_tiny_bert(tmp_path_factory.mktemp("fill-bert")))


def shard_rows(directory: Path) -> int:
    return sum(len(np.load(path)) for path in directory.glob("*.keys.npy"))


def test_killed_fill_keeps_its_chunks_and_the_rerun_encodes_only_the_rest(tmp_path, bert_dir):
    count = 200
    process = subprocess.Popen([*WORKER, "slow", bert_dir, str(tmp_path), str(count)])
    folder = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = list((tmp_path / "v2").glob("*/*.keys.npy"))
        if len(found) >= 2:
            folder = found[0].parent
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert folder is not None, "the fill wrote no shard before the kill"
    kept = shard_rows(folder)
    assert 0 < kept < count
    cache = EmbeddingCache(worker.load(bert_dir), root=tmp_path, batch_size=8, show_progress_bar=False)
    assert cache.directory == folder
    assert cache.ensure(worker.texts(count)) == count - kept  # only the rest is encoded
    full = worker.load(bert_dir).encode(worker.texts(count), convert_to_tensor=True)
    assert torch.allclose(cache.get(worker.texts(count)), full, atol=1e-6)


def test_two_gloo_ranks_split_the_fill_and_match_one_process(tmp_path, bert_dir):
    count, world = 150, 2
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen(
            [
                *WORKER,
                "rank",
                bert_dir,
                str(tmp_path / "shared"),
                str(count),
                str(tmp_path / "init"),
                str(rank),
                str(world),
                str(tmp_path / f"rank{rank}"),
            ],
            env=env,
        )
        for rank in range(world)
    ]
    assert [process.wait(timeout=300) for process in ranks] == [0, 0]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(world)]
    assert sum(report["encoded"] for report in reports) == count
    assert all(report["encoded"] == count // world for report in reports), reports  # split, not rank 0 alone
    assert all(report["rows"] == count for report in reports)  # after the barrier each rank reads all shards

    single = EmbeddingCache(worker.load(bert_dir), root=tmp_path / "single", batch_size=8, show_progress_bar=False)
    want = single.get(worker.texts(count))
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert (got - want).abs().max().item() <= 1e-6
