"""Wilson score intervals, vectorised over groups.

scipy's `binomtest(...).proportion_ci(method="wilson")` gives the same numbers one group at a
time; a funnel table has a row per rep or campaign, so the closed form runs over arrays.
"""

from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054


def wilson(successes: np.ndarray, trials: np.ndarray, z: float = Z95) -> tuple[np.ndarray, ...]:
    """(rate, low, high) as fractions; NaN where there are no trials."""
    k = np.asarray(successes, dtype="float64")
    n = np.asarray(trials, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    bad = n <= 0
    return (np.where(bad, np.nan, p), np.where(bad, np.nan, centre - half),
            np.where(bad, np.nan, centre + half))
