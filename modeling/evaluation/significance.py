"""Paired significance of a per-query metric difference between two systems on the same queries.

A two-sided paired randomisation (sign-flip) test through ``scipy.stats.permutation_test``, seeded: it swaps the
two systems' scores within each query at random and asks how often the mean difference is as large as observed
(Smucker, Allan and Carterette 2007 recommend it for IR).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import permutation_test

BATCH = 1000  # resamples evaluated at once: bounds memory at BATCH x queries floats, whatever --resamples is
DESCRIPTION = "two-sided paired randomisation test (scipy.stats.permutation_test, permutation_type='samples')"


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def paired_p_value(a: Sequence[float], b: Sequence[float], resamples: int = 10000, seed: int = 0) -> float | None:
    """p-value for "a and b have the same mean" on paired per-query values; ``None`` below two queries.

    One query cannot be permuted into a distribution (scipy raises), so such a slice reports no p-value
    (``formatting.why_no_p`` says why) instead of crashing after all the work.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"Paired test needs the same queries for both systems, got {a.shape} and {b.shape}.")
    if a.size < 2:
        return None
    if np.allclose(a, b, rtol=0, atol=1e-12):
        return 1.0
    result = permutation_test(
        (a, b),
        _mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
        batch=BATCH,
    )
    return float(result.pvalue)
