"""How every evaluation number is written, in the terminal, the JSON's text fields and the card: one place."""

from __future__ import annotations

import math
from typing import Any

DECIMALS = 4
P_FLOOR = 1e-4  # p-values below this print as "< 0.0001" (10,000 resamples cannot resolve less)
MISSING = "–"


def number(value: Any) -> float | None:
    """``value`` as a finite float, else None (missing, NaN, not a number)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fmt(value: Any) -> str:
    """A metric value with 4 decimals; a dash when missing."""
    value = number(value)
    return MISSING if value is None else f"{value:.{DECIMALS}f}"


def fmt_delta(mine: Any, theirs: Any) -> str:
    a, b = number(mine), number(theirs)
    return MISSING if a is None or b is None else f"{a - b:+.{DECIMALS}f}"


def fmt_p(value: Any, why_missing: str | None = None) -> str:
    """A p-value: 4 decimals, ``< 0.0001`` below that; ``why_missing`` (e.g. ``n/a (1 query)``) or a dash if None."""
    value = number(value)
    if value is None:
        return why_missing or MISSING
    return f"< {P_FLOOR:.{DECIMALS}f}" if value < P_FLOOR else f"{value:.{DECIMALS}f}"


def why_no_p(num_queries: int | None) -> str:
    """What a missing p-value means: a slice too small for a paired test (one query cannot be permuted)."""
    if num_queries == 0:
        return "n/a (no query)"
    if num_queries == 1:
        return "n/a (1 query)"
    return MISSING
