"""A float matrix in a ``.npy`` file, read one block of rows at a time, for corpora larger than memory.

``exact_search`` only needs ``len()`` and row slices. ``np.load(mmap_mode="r")`` also works, but mapped pages
that were read stay counted in the process's resident memory; plain reads here go through the page cache only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class NpyMatrix:
    """Row blocks of a 2-D ``.npy`` file: ``matrix[a:b]`` reads rows a..b-1 from disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self.path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if len(shape) != 2 or fortran:
            raise ValueError(f"{self.path}: expected a C-order 2-D array, got shape {shape} (fortran={fortran}).")
        self.shape, self.dtype = shape, dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("NpyMatrix reads contiguous row blocks only.")
        row_bytes = self.shape[1] * self.dtype.itemsize
        count = max(stop - start, 0) * self.shape[1]
        with self.path.open("rb") as handle:
            block = np.fromfile(handle, dtype=self.dtype, count=count, offset=self.offset + start * row_bytes)
        return block.reshape(-1, self.shape[1])


def write_npy_blocks(path: str | Path, blocks, rows: int, dim: int, dtype=np.float32) -> Path:
    """Write a ``(rows, dim)`` ``.npy`` file from an iterable of row blocks, never holding the whole matrix."""
    path = Path(path)
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (rows, dim)}
        )
        written = 0
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=dtype)
            handle.write(block.tobytes())
            written += len(block)
    if written != rows:
        raise ValueError(f"wrote {written} rows, expected {rows}.")
    return path
