"""Append-only shards of (key, embedding) rows, read row by row without loading, that several processes share.

A shard is two ``.npy`` files: ``<name>.emb.npy`` (rows, float16 or float32) and ``<name>.keys.npy`` (``S16``
keys, one per row); a process merges every shard's keys into one sorted index (``np.searchsorted``). Files are
written to a temporary name (mode from the umask), fsynced and renamed; the keys file is renamed last, so a
shard exists for readers only once it is whole. Embeddings are never loaded: ``np.load(mmap_mode="r")``
checks a shard's header, rows are read with ``pread`` from the shared page cache, so a process holds the index
(24 bytes a row) and little else; at most ``MAX_OPEN`` shard files are open at once.
A shard that cannot be read (truncated, corrupt) is moved to ``corrupt/`` with a warning naming it; its
texts count as missing again and are re-encoded by the next ``ensure``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from modeling.cache.keys import KEY_DTYPE

logger = logging.getLogger(__name__)

KEYS_SUFFIX = ".keys.npy"
EMB_SUFFIX = ".emb.npy"
MAX_OPEN = 128  # shard files kept open (10M rows are 1,000 shards; the usual limit is 1,024 descriptors)
# A temp file is written by one np.save call, seconds at most: one this old was left by a killed writer.
STALE_TEMPORARY_SECONDS = 3600


def _write_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` atomically: temp file (mode from the umask), fsync, rename, fsync the folder."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "xb") as handle:  # open() honours the umask (mkstemp and safetensors would give 0600)
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class _Shard:
    """One shard's embeddings file: rows are read with ``os.pread`` (page cache only, nothing counted in RSS).

    A memory map would be simpler, but each scattered read faults in 16 pages around it (kernel fault-around,
    MADV_RANDOM does not stop it): random training look-ups then grow RSS toward the whole file.
    """

    def __init__(self, path: Path, header: np.memmap) -> None:
        self.path = path
        self.offset = header.offset
        self.dtype = header.dtype
        self.dim = header.shape[1]
        self.rows = header.shape[0]
        self.row_bytes = self.dtype.itemsize * self.dim
        self._fd: int | None = None

    def fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order); runs of consecutive rows are read in one call."""
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        first, last = int(sorted_rows[0]), int(sorted_rows[-1])
        if (last - first + 1) <= 4 * len(rows):  # dense request (e.g. a whole table): one read of the span
            span = bytearray((last - first + 1) * self.row_bytes)
            if os.preadv(self.fd(), [span], self.offset + first * self.row_bytes) != len(span):
                raise OSError(f"short read from {self.path}")
            block = np.frombuffer(span, dtype=self.dtype).reshape(-1, self.dim)
            return block[rows - first].astype(np.float32)
        buffer = bytearray(len(rows) * self.row_bytes)
        view = memoryview(buffer)
        breaks = np.nonzero(np.diff(sorted_rows) != 1)[0] + 1
        position = 0
        descriptor = self.fd()
        for run in np.split(sorted_rows, breaks):
            size = len(run) * self.row_bytes
            got = os.preadv(descriptor, [view[position : position + size]], self.offset + int(run[0]) * self.row_bytes)
            if got != size:
                raise OSError(f"short read from {self.path}")
            position += size
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        out[order] = np.frombuffer(buffer, dtype=self.dtype).reshape(len(rows), self.dim)
        return out


class ShardStore:
    """The shards in one folder and a merged, sorted index over all their keys."""

    def __init__(self, directory: str | Path, dimension: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dimension = dimension
        self._names: list[str] = []
        self._shards: list[_Shard] = []
        self._keys = np.empty(0, dtype=KEY_DTYPE)  # sorted, unique
        self._shard_of = np.empty(0, dtype=np.int32)
        self._row_of = np.empty(0, dtype=np.int32)
        self._seen: set[str] = set()
        self._open_files: dict[int, None] = {}  # shards with an open file, least recently used first
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        """Delete temp files that killed writers left behind (never a live writer's: only ones an hour old)."""
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
        for temporary in self.directory.glob(".*.tmp"):
            try:
                if temporary.stat().st_mtime < cutoff:
                    temporary.unlink()
                    logger.info("removed %s, left by an interrupted cache write", temporary)
            except OSError:
                pass  # another process removed it first

    def __len__(self) -> int:
        return len(self._keys)

    def refresh(self) -> int:
        """Open shards written since the last look (by any process); returns how many were added."""
        new_keys, new_shards, new_rows = [], [], []
        for keys_path in sorted(self.directory.glob(f"*{KEYS_SUFFIX}")):
            name = keys_path.name[: -len(KEYS_SUFFIX)]
            if name in self._seen:
                continue
            opened = self._open(name)
            if opened is None:
                continue
            keys, embeddings = opened
            self._seen.add(name)
            self._names.append(name)
            self._shards.append(embeddings)
            new_keys.append(keys)
            new_shards.append(np.full(len(keys), len(self._shards) - 1, dtype=np.int32))
            new_rows.append(np.arange(len(keys), dtype=np.int32))
        if not new_keys:
            return 0
        keys = np.concatenate([self._keys, *new_keys])
        shard_of = np.concatenate([self._shard_of, *new_shards])
        row_of = np.concatenate([self._row_of, *new_rows])
        order = np.argsort(keys, kind="stable")  # stable: a key stored twice keeps its first shard
        keys = keys[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        self._keys, self._shard_of, self._row_of = keys[first], shard_of[order][first], row_of[order][first]
        return len(new_keys)

    def _open(self, name: str) -> tuple[np.ndarray, _Shard] | None:
        paths = [self.directory / f"{name}{suffix}" for suffix in (KEYS_SUFFIX, EMB_SUFFIX)]
        try:
            keys = np.load(paths[0], allow_pickle=False)
            embeddings = np.load(paths[1], mmap_mode="r", allow_pickle=False)
            if keys.dtype != KEY_DTYPE or keys.ndim != 1:
                raise ValueError(f"keys of dtype {keys.dtype} and shape {keys.shape}")
            if embeddings.ndim != 2 or len(embeddings) != len(keys):
                raise ValueError(f"{len(keys)} keys but embeddings of shape {embeddings.shape}")
            if self.dimension is not None and embeddings.shape[1] != self.dimension:
                raise ValueError(f"rows of {embeddings.shape[1]} numbers, expected {self.dimension}")
        except (OSError, ValueError, EOFError) as error:
            self._quarantine(name, paths, error)
            return None
        shard = _Shard(paths[1], embeddings)
        del embeddings  # the header was all we needed from the map
        return keys, shard

    def _quarantine(self, name: str, paths: list[Path], error: Exception) -> None:
        corrupt = self.directory / "corrupt"
        corrupt.mkdir(exist_ok=True)
        for path in paths:
            try:
                shutil.move(str(path), corrupt / path.name)
            except OSError:  # absent, or another process moved it first
                pass
        logger.warning(
            "Cache shard %s is unreadable (%s); moved to %s, its texts will be encoded again.",
            self.directory / f"{name}{KEYS_SUFFIX}",
            error,
            corrupt,
        )

    def append(self, keys: np.ndarray, embeddings: np.ndarray) -> str:
        """Write one shard (embeddings first, keys last: the keys file is what makes it visible)."""
        if len(keys) != len(embeddings):
            raise ValueError(f"{len(keys)} keys for {len(embeddings)} embeddings")
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"  # sorts in write order: first copy wins
        _write_npy(self.directory / f"{name}{EMB_SUFFIX}", np.ascontiguousarray(embeddings))
        _write_npy(self.directory / f"{name}{KEYS_SUFFIX}", np.ascontiguousarray(keys, dtype=KEY_DTYPE))
        _fsync_dir(self.directory)
        return name

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(found, shard, row)`` for each key; ``shard``/``row`` are meaningful where ``found``."""
        if len(self._keys) == 0:
            zeros = np.zeros(len(keys), dtype=np.int32)
            return np.zeros(len(keys), dtype=bool), zeros, zeros
        position = np.searchsorted(self._keys, keys)
        position = np.minimum(position, len(self._keys) - 1)
        found = self._keys[position] == keys
        return found, self._shard_of[position], self._row_of[position]

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return self.locate(keys)[0]

    def gather(self, shards: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``(shard, row)`` as one float32 array, reading only those rows from the mapped files."""
        dimension = self._shards[0].dim if self._shards else (self.dimension or 0)
        if out is None:
            out = np.empty((len(rows), dimension), dtype=np.float32)
        for shard in np.unique(shards):
            where = np.nonzero(shards == shard)[0]
            self._open_files.pop(int(shard), None)
            self._open_files[int(shard)] = None  # most recently used last
            out[where] = self._shards[shard].read(rows[where])
            while len(self._open_files) > MAX_OPEN:
                self._shards[next(iter(self._open_files))].close()
                self._open_files.pop(next(iter(self._open_files)))
        return out

    def close(self) -> None:
        """Close the shard files (they are reopened on the next look-up)."""
        for shard in self._shards:
            shard.close()
        self._open_files.clear()
