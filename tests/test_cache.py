"""The v2 embedding cache: unambiguous keys, an identity that sees the normaliser, modes, corrupt shards."""

from __future__ import annotations

import copy
import logging
import os
import stat
import time

import numpy as np
import pytest
import torch

from modeling.cache import shard_store
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.cache.keys import encoder_fingerprint, text_key
from modeling.cache.shard_store import ShardStore

TEXTS = [
    f"the {c} {t} of {m}" for c in ("red", "blue", "green") for t in ("cat", "dog", "lamp") for m in ("wool", "metal")
]


def test_text_key_is_unambiguous_with_nul():
    assert text_key("b", "a\x00") != text_key("\x00b", "a")  # sha256(prompt NUL text) gave the same key
    assert text_key("a\x00b", None) != text_key("b", "a")
    assert text_key("x", None) == text_key("x", "")
    assert len({text_key(t, p) for t in ("", "\x00", "\x00\x00") for p in ("", "\x00")}) == 6


def test_fingerprint_sees_the_normaliser(tiny):
    other = copy.deepcopy(tiny)
    assert encoder_fingerprint(other) == encoder_fingerprint(tiny)
    other[0].tokenizer.backend_tokenizer.normalizer.lowercase = False  # same weights, other text handling
    assert encoder_fingerprint(other) != encoder_fingerprint(tiny)


def test_fingerprint_sees_max_length_prompts_and_dtype(tiny):
    base = encoder_fingerprint(tiny)
    shorter = copy.deepcopy(tiny)
    shorter.max_seq_length = 16
    prompted = copy.deepcopy(tiny)
    prompted.prompts = {"query": "query: "}
    half = copy.deepcopy(tiny).half()
    assert len({base, *map(encoder_fingerprint, (shorter, prompted, half))}) == 4


def test_lookups_match_the_encoder_and_survive_a_new_process(tiny, cache_root):
    cache = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False, chunk_texts=4)
    got = cache.get(TEXTS + TEXTS[:3], prompt="q: ")
    want = tiny.encode(TEXTS + TEXTS[:3], prompt="q: ", convert_to_tensor=True)
    assert torch.allclose(got, want, atol=1e-6)
    assert cache.encoded_texts == len(TEXTS)
    assert len(list(cache.directory.glob("*.keys.npy"))) >= len(TEXTS) // 4  # a shard per chunk
    again = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False)
    assert torch.equal(again.get(TEXTS, prompt="q: "), got[: len(TEXTS)])
    assert again.encoded_texts == 0
    assert again.missing(TEXTS) == TEXTS  # another prompt is another key


def test_float16_storage_is_close_and_separate(tiny, cache_root):
    full = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False).get(TEXTS)
    half = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False, storage="float16")
    assert half.get(TEXTS).dtype == torch.float32
    assert torch.allclose(half.get(TEXTS), full, atol=1e-3)
    assert half.encoded_texts == len(TEXTS)  # its own folder: never mixed with float32 rows


def test_files_follow_the_umask(tiny, cache_root):
    old = os.umask(0o022)
    try:
        cache = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False)
        cache.ensure(TEXTS)
    finally:
        os.umask(old)
    files = list(cache.directory.glob("*.npy"))
    assert files
    assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o644}  # not safetensors' 0600


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing-rows"])
def test_corrupt_shard_is_moved_aside_and_re_encoded(tiny, cache_root, caplog, damage):
    cache = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False, chunk_texts=64)
    want = cache.get(TEXTS)
    (emb,) = cache.directory.glob("*.emb.npy")
    if damage == "truncate":
        emb.write_bytes(emb.read_bytes()[:200])
    elif damage == "garbage":
        emb.write_bytes(b"not a numpy file at all" * 10)
    else:
        emb.unlink()
    with caplog.at_level(logging.WARNING):
        fresh = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False)
    assert emb.name[: -len(".emb.npy")] in caplog.text and "corrupt" in caplog.text
    assert len(fresh) == 0
    assert list((cache.directory / "corrupt").glob("*.keys.npy"))
    assert torch.allclose(fresh.get(TEXTS), want, atol=1e-6)
    assert fresh.encoded_texts == len(TEXTS)


def test_store_lookup_of_many_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_store, "MAX_OPEN", 3)  # ten shards, at most three files open
    store = ShardStore(tmp_path, dimension=3)
    rng = np.random.default_rng(0)
    keys = np.array([text_key(str(i)) for i in range(1000)], dtype="S16")
    rows = rng.normal(size=(1000, 3)).astype(np.float32)
    for start in range(0, 1000, 100):
        store.append(keys[start : start + 100], rows[start : start + 100])
    store.append(keys[:10], rows[:10] + 100)  # a key written twice (two processes raced) keeps its first row
    store.refresh()
    assert len(store) == 1000
    pick = rng.permutation(1000)[:64]
    found, shards, where = store.locate(keys[pick])
    assert found.all()
    np.testing.assert_array_equal(store.gather(shards, where), rows[pick])
    assert sum(shard._fd is not None for shard in store._shards) <= 3
    assert not store.contains(np.array([text_key("nope")], dtype="S16")).any()


def test_fill_with_worker_threads_equals_encode(tiny, cache_root):
    """Two chunks in flight (the CUDA default path, here on CPU): each thread has its own model copy."""
    cache = EmbeddingCache(tiny, root=cache_root, show_progress_bar=False, workers=2, chunk_texts=4, batch_size=2)
    assert cache.ensure(TEXTS) == len(TEXTS)
    assert torch.allclose(cache.get(TEXTS), tiny.encode(TEXTS, convert_to_tensor=True), atol=1e-6)
    assert len(list(cache.directory.glob("*.keys.npy"))) >= len(TEXTS) // 4


def test_cache_storage_flag_reaches_train_and_evaluate():
    """``--cache-storage float16`` is a setting of both commands (and part of a training run's identity)."""
    from modeling.cli.evaluate import parse_args as evaluate_args
    from modeling.training.identity import NOT_IDENTITY
    from modeling.training.settings import parse_settings

    assert parse_settings(["--cache-storage", "float16"]).cache_storage == "float16"
    assert parse_settings([]).cache_storage == "float32"
    assert "cache_storage" not in NOT_IDENTITY
    with pytest.raises(SystemExit):
        parse_settings(["--cache-storage", "int8"])
    assert evaluate_args(["--cache-storage", "float16"]).cache_storage == "float16"


def test_temp_files_of_killed_writers_are_removed_when_old(tmp_path):
    """A kill mid-write leaves ``.<shard>.<uuid>.tmp``; the next store removes it once it is an hour old, never a
    fresh one (another process may be writing it now)."""
    folder = tmp_path / "shards"
    folder.mkdir()
    old, fresh = folder / ".a.emb.npy.0.tmp", folder / ".b.emb.npy.1.tmp"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    two_hours_ago = time.time() - 2 * shard_store.STALE_TEMPORARY_SECONDS
    os.utime(old, (two_hours_ago, two_hours_ago))
    ShardStore(folder)
    assert not old.exists() and fresh.exists()
