"""The models' own error: how far the level of every lead's curve may be off at once.

The coin flips of the leads (each converts or not with its own chance) are not the only
uncertainty in a forecast: the chances themselves are estimates, and they move together. A
curve that is 20% too high at T is 20% too high for every lead, so the error does not average
out over thousands of leads the way the coin flips do. Without it the backtest's 80% ranges
held the actual count in 43-67% of quarters.

Two parts, both on the log-odds of P(converted within the forecast window), both read from
the history before T only (never from the quarters the backtest judges):

- **the level's standard error**: a level read from the held-out leads, with I = sum of
  p(1 - p) over those rows (the Fisher information of a shift of the log-odds), is known to
  within 1 / sqrt(I); the curve's level is anchored on more rows than those (every past row
  of each stage, `HazardModel.anchor`), so this errs on the wide side;
- **the drift between times**: at every past snapshot time whose window had closed by T, the
  held-out leads' expected count E (sum of p), its coin-flip variance V (sum of p(1 - p)) and
  their actual count A. Whatever of (A - E)^2 is not coin flips, (A - E)^2 - V, is the level
  moving from one time to the next; tau^2 = sum((A - E)^2 - V) / sum(E^2), floored at 0 (a
  method-of-moments estimate of a common relative error's variance).

The simulation draws one shift per draw, normal with sd sqrt(se^2 + tau^2), and applies it to
every lead's curve in that draw (`simulate.simulate(level_sd=...)`).
"""

from __future__ import annotations

import numpy as np

from propensity.forecast.hazard import HazardModel
from propensity.snapshot_rows import SnapshotRows


def level_sd(hazard: HazardModel, rows: SnapshotRows, held_out: np.ndarray,
             days: float) -> float:
    """Sd of the log-odds shift common to every lead's P(converted within `days`), read on
    the `held_out` snapshot rows whose window had closed: their curves as the fit's
    calibration scored them (`HazardModel.held_curve_`, the same rows when `held_out` is the
    fit's hold-out), the booster not run again."""
    seen = held_out & rows.observed(days)
    if not seen.any():
        return 0.0
    held = hazard.held_curve_
    if held is None or len(held) != int(held_out.sum()):
        held = hazard.curve(rows.X[held_out])
    p = hazard.by_days(held[seen[held_out]], [days])[:, 0]
    return shared_error_sd(p, rows.converted_within(days)[seen], rows.as_of_us[seen])


def shared_error_sd(p: np.ndarray, y: np.ndarray, times: np.ndarray) -> float:
    """sqrt(se^2 + tau^2) of the module's docstring from each row's probability `p`, outcome
    `y` and snapshot time (rows of one time share their error)."""
    var = p * (1 - p)
    info = float(var.sum())
    se2 = 1 / info if info > 0 else 0.0
    _, at = np.unique(times, return_inverse=True)
    expected = np.bincount(at, weights=p)
    actual = np.bincount(at, weights=np.asarray(y, dtype="float64"))
    flips = np.bincount(at, weights=var)
    denom = float((expected ** 2).sum())
    tau2 = max(0.0, float(((actual - expected) ** 2 - flips).sum()) / denom) if denom else 0.0
    return float(np.sqrt(se2 + tau2))
