"""A lead's outlook, how much and when, as the lead-conversion bundle ships and scores it.

Two fitted parts read the same model matrix as the probability (so a request builds its
features once): a discrete-time hazard model (`HazardCurve`: P(converted by d days) for every
d, monotone) and quantile models of the won amount (`AmountQuantiles`: an 80% interval, the
median, the mean). `propensity.forecast` fits them (`hazard.HazardModel`, `amount.AmountModel`
add `fit` to these classes); this module holds what scoring needs of them and their files, so
that `models/` (the bundle) never imports the forecast, which imports `models/`.

`Outlook` is the pair in a bundle. `Outlook.predict` is the one place the response's
`horizons`, `expected_days`, `expected_amount` (with its interval) and `expected_revenue` are
computed: the scorer, its fast path and batcher, batch scoring, the pyfunc and the forecast's
per-lead table all read them from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from propensity.coding import Column
from propensity.features.definitions import STAGE_COLUMN
from propensity.models.calibration import Calibrator, calibrate_columns
from propensity.models.single_row import ROW_BY_ROW, SingleRow, raw_contributions, raw_margins

EDGES: tuple[int, ...] = (0, 30, 60, 90, 120, 180, 270, 365, 540, 730)
"""Period boundaries in days after the as-of time: 30, 60, 90 and 180 are period ends, so
the curve there is read without interpolation."""
HORIZONS: tuple[int, ...] = (30, 60, 90, 180)
"""The days a lead's P(converted by d) is given at (`horizons` in a score)."""
REVENUE_DAYS = 90
"""The window of a lead's expected revenue: P(converted within it) x expected amount."""
QUANTILES = (0.1, 0.5, 0.9)
"""The amount's 80% interval and median, on the log scale."""
OUTLOOK_DIR = "outlook"
STACKED_ROWS = 200_000
"""Up to this many (lead, period) rows the hazard booster predicts them in one call."""
_META = "outlook-v2.json"
"""The outlook's JSON since its hazard trees start from the stage x period table: a name the
loaders before it do not read, so that a rolled-back scorer serves no outlook rather than
these trees without their base margin (wrong hazards, silently)."""
_LEGACY_META = "outlook.json"
"""Saved before the table: trees trained from a zero margin, read as such."""


class _Margins:
    """The outlook's boosters predicted as the bundle's booster is (`single_row.raw_margins`):
    LightGBM's single-row path for a request's few rows, one call for more, on one thread, as
    the boosters were trained (a booster read from its file would take every core: on a busy
    machine, threads waiting for a core made one lead's outlook 10 ms and the forecast
    slower). This holds each booster's single-row handle, made when first needed."""

    def __init__(self) -> None:
        self._single: dict[int, SingleRow] = {}

    def _one(self, booster: lgb.Booster) -> SingleRow:
        one = self._single.get(id(booster))
        if one is None:
            one = self._single[id(booster)] = SingleRow(booster)
        return one

    def margins(self, booster: lgb.Booster, X: np.ndarray, few: int = ROW_BY_ROW
                ) -> np.ndarray:
        """Raw scores; row by row up to `few` rows."""
        return raw_margins(booster, X, self._one(booster), few=few)

    def contributions(self, booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
        return raw_contributions(booster, X, self._one(booster))

    def __deepcopy__(self, memo: dict[int, Any]) -> _Margins:
        return _Margins()  # LightGBM's handles are not copied: made again when used

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._single = {}


def with_period(X: np.ndarray, k: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The hazard model's rows: the lead's features, the period's start and its width."""
    return np.column_stack([X, edges[k], edges[k + 1] - edges[k]])


def stacked(X: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`with_period`'s rows of every period for every row of `X`, period after period (row
    k * n + i is row i in period k): written into one array, not tiled and stacked (three
    copies of a request's row cost more than the trees' walk of it)."""
    n, f, m = X.shape[0], X.shape[1], len(edges) - 1
    out = np.empty((m, n, f + 2))
    out[:, :, :f] = X
    out[:, :, f] = edges[:-1, None]
    out[:, :, f + 1] = (edges[1:] - edges[:-1])[:, None]
    return out.reshape(m * n, f + 2)


def _clip(x: np.ndarray | float, low: float, high: float) -> np.ndarray:
    """`np.clip`'s values (NaN stays NaN) by its two ufuncs: `np.clip` costs ~10 us a call of
    wrappers, on a request's one row several times the arithmetic."""
    return np.minimum(np.maximum(x, low), high)


def logit(p: np.ndarray) -> np.ndarray:
    p = _clip(p, 1e-7, 1 - 1e-7)
    return np.asarray(np.log(p / (1 - p)))


def interpolate(curve: np.ndarray, edges: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Cumulative probabilities at `days` from their values at `edges`: a constant daily
    hazard inside a period (the log of survival is linear there); past the last edge, flat."""
    d = _clip(days, 0, edges[-1])
    k = _clip(np.searchsorted(edges, d, side="right") - 1, 0, len(edges) - 2)
    frac = (d - edges[k]) / (edges[k + 1] - edges[k])
    log_s = np.log(_clip(1 - curve, 1e-12, 1))
    out = 1 - np.exp(log_s[:, k] + frac * (log_s[:, k + 1] - log_s[:, k]))
    return np.maximum.accumulate(_clip(out, 0, 1), axis=1)


def median_days(curve: np.ndarray, edges: tuple[int, ...]) -> np.ndarray:
    """The first whole day by which half of a lead's eventual conversion probability (within
    the longest observed window) is reached: the median time to convert among leads that
    will. Solved inside the period where the curve crosses half (its log survival is linear
    there: `interpolate`), not read off a grid of every day (a tenth of the cost)."""
    e = np.asarray(edges, dtype="float64")
    ls = np.log(_clip(1 - curve, 1e-12, 1))
    ever = 1 - np.exp(ls[:, -1])
    half = ever / 2
    reached = 1 - np.exp(ls)
    j = _clip(np.argmax(reached >= half[:, None], axis=1), 1, len(e) - 1)
    rows = np.arange(len(curve))
    a, b = ls[rows, j - 1], ls[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = _clip((np.log1p(-half) - a) / (b - a), 0, 1)
    days = np.ceil(e[j - 1] + frac * (e[j] - e[j - 1]) - 1e-9)
    return np.where(ever > 0, days, np.nan)


def cumulative(margins: np.ndarray) -> np.ndarray:
    """(n, periods + 1) P(converted by each edge) from each period's hazard log-odds: one
    minus the product of the periods' chances of not converting, column 0 being 0."""
    h = 1 / (1 + np.exp(-margins))  # the binary objective's own transform, on every path
    h = _clip(h, 0, 1 - 1e-9)
    n = margins.shape[0]
    survive = np.concatenate([np.ones((n, 1)), np.cumprod(1 - h, axis=1)], axis=1)
    return np.asarray(1 - survive)


@dataclass
class HazardCurve:
    """P(converted by d days) for leads open at a time, from their features as of it."""

    edges: tuple[int, ...] = EDGES
    booster_: lgb.Booster | None = field(default=None, repr=False)
    calibrators_: dict[int, Calibrator] = field(default_factory=dict)
    max_days_: int = 0
    """The longest window any training row had observed: 'ever' means within it."""
    columns_: list[Column] = field(default_factory=list)
    base_: np.ndarray | None = field(default=None, repr=False)
    """(stages, periods) log-odds of the past hazard of leads by their stage at the snapshot
    and the period: the margin the trees start from and add to (`base_margin`). None in an
    outlook saved before it existed (its trees were learned from zero): nothing is added."""
    _fast: _Margins = field(default_factory=_Margins, init=False, repr=False, compare=False)
    _stage: tuple[list[Column], int | None] | None = field(default=None, init=False,
                                                           repr=False, compare=False)

    def base_margins(self, X: np.ndarray) -> np.ndarray:
        """(n, periods): the table's log-odds for each row of `X` in each period; its row is
        the lead's `current_stage` (the matrix's own column, so every path reads the same
        number); a stage the table has no row for (or none known) reads the table's last
        row, the periods' overall hazards."""
        if self.base_ is None:
            return np.zeros((len(X), len(self.edges) - 1))
        return np.asarray(self.base_[self.stage_rows(X)])

    def stage_rows(self, X: np.ndarray) -> np.ndarray:
        """Each row's row of `base_`: its stage index, or the last row (all stages)."""
        assert self.base_ is not None
        overall = self.base_.shape[0] - 1
        at = self.stage_column()
        if at is None:
            return np.full(len(X), overall)
        stage = X[:, at]
        ok = np.isfinite(stage) & (stage >= 0) & (stage < overall)
        return np.where(ok, stage, overall).astype("int64")  # NaN is not ok: not read

    def stage_column(self) -> int | None:
        """Where the matrix holds `current_stage` (None: not one of `columns_`), looked up
        once for each list of columns (a request's lookup by name cost ~5 us of 150 names)."""
        if self._stage is None or self._stage[0] is not self.columns_:
            names = [c.name for c in self.columns_]
            self._stage = (self.columns_,
                           names.index(STAGE_COLUMN) if STAGE_COLUMN in names else None)
        return self._stage[1]

    def tree_margins(self, X: np.ndarray) -> np.ndarray:
        """(n, periods) the trees' log-odds of each row's hazard in each period, without the
        table's (`base_margins`). Every period of every row in one call of the booster (a
        call costs ~15 us whatever its size; a row's prediction does not depend on the
        others)."""
        if self.booster_ is None:
            raise RuntimeError("the hazard model is not fitted")
        edges = np.asarray(self.edges, dtype="float64")
        n, m = X.shape[0], len(self.edges) - 1
        if n * m <= STACKED_ROWS:
            raw = self._fast.margins(self.booster_, stacked(X, edges), few=ROW_BY_ROW * m)
            return np.asarray(raw.reshape(m, n).T)
        # a forecast's million leads: one period at a time (memory)
        return np.column_stack([self._fast.margins(
            self.booster_, with_period(X, np.full(n, k), edges)) for k in range(m)])

    def raw_curve(self, X: np.ndarray, trees: np.ndarray | None = None) -> np.ndarray:
        """(n, len(edges)) uncalibrated P(converted by each edge), column 0 being 0; `trees`:
        `tree_margins(X)` when already computed (the booster is the cost)."""
        return cumulative((self.tree_margins(X) if trees is None else trees)
                          + self.base_margins(X))

    def curve(self, X: np.ndarray, trees: np.ndarray | None = None) -> np.ndarray:
        """(n, len(edges)) calibrated P(converted by each edge), non-decreasing along edges."""
        return self.calibrated(self.raw_curve(X, trees))

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """`curve` from `raw_curve`'s values."""
        out = raw.copy()
        column = {edge: j for j, edge in enumerate(self.edges[1:], start=1)}
        calibrate_columns({column[e]: c for e, c in self.calibrators_.items() if e in column},
                          logit(raw), out)  # logit of every column: one call, not eight
        out[:, 0] = 0.0
        return np.asarray(np.maximum.accumulate(out, axis=1))

    def by_days(self, curve: np.ndarray, days: np.ndarray | list[float]) -> np.ndarray:
        """P(converted by each of `days`) from `curve` (see `interpolate`). Days that are all
        edges in increasing order (the score's horizons, the revenue window) are the curve's
        own columns, read without the interpolation's arithmetic, which returns them there
        (to 1e-15) at ten numpy calls' cost on a request's one row."""
        wanted = [float(d) for d in days]
        if set(wanted) <= set(self.edges) and wanted == sorted(wanted):
            return curve[:, [self.edges.index(int(d)) for d in wanted]]
        return interpolate(curve, np.asarray(self.edges, dtype="float64"),
                           np.asarray(wanted, dtype="float64"))


@dataclass
class AmountQuantiles:
    """Median, mean and an 80% interval of the amount a lead's deal will be won for."""

    boosters_: dict[float, lgb.Booster] = field(default_factory=dict, repr=False)
    widen_: float = 0.0
    """Conformal correction on the log scale, added to both ends of the interval."""
    smear_: float = 1.0
    fallback_: float = 0.0
    """Mean won amount of the history: the estimate when too few wins to learn from."""
    _fast: _Margins = field(default_factory=_Margins, init=False, repr=False, compare=False)

    def quantiles(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """amount_low (10%), amount_median, amount_high (90%), expected_amount (mean)."""
        if not self.boosters_:
            flat = np.full(X.shape[0], self.fallback_)
            return flat, flat, flat, flat
        lo, mid, hi = (self._fast.margins(self.boosters_[q], X) for q in QUANTILES)
        lo, hi = np.minimum(lo, mid) - self.widen_, np.maximum(hi, mid) + self.widen_
        return (np.exp(np.minimum(lo, mid)), np.exp(mid), np.exp(np.maximum(hi, mid)),
                np.exp(mid) * self.smear_)

    def contributions(self, X: np.ndarray) -> np.ndarray | None:
        """(rows, features + 1): each feature's part of the median's log amount (bias last),
        the amount's reasons; None without a model (the history's mean for every lead)."""
        median = self.boosters_.get(0.5)
        if median is None:
            return None
        return self._fast.contributions(median, X)


@dataclass
class Predicted:
    """A batch of leads' outlook, one entry per row of the matrix."""

    curve: np.ndarray
    """(n, len(edges)): P(converted by each edge)."""
    horizons: np.ndarray
    """(n, len(HORIZONS)): P(converted by each of HORIZONS days), non-decreasing."""
    expected_days: np.ndarray
    """Median days to convert among leads that will (NaN when none will)."""
    amount_low: np.ndarray
    amount_median: np.ndarray
    amount_high: np.ndarray
    expected_amount: np.ndarray
    expected_revenue: np.ndarray
    """P(converted within REVENUE_DAYS) x expected_amount."""
    contributions: np.ndarray | None
    """The amount's reasons (log amount), when asked and there is an amount model."""


@dataclass
class Outlook:
    """When (the hazard curve) and how much (the amount), shipped inside a bundle."""

    hazard: HazardCurve
    amount: AmountQuantiles
    revenue_days: int = REVENUE_DAYS
    info: dict[str, Any] = field(default_factory=dict)
    """What it was fitted on: rows, conversions, won leads, as of when."""

    def predict(self, X: np.ndarray, explain: bool | np.ndarray = False,
                trees: np.ndarray | None = None) -> Predicted:
        """Every outlook figure of the matrix's rows (the probability's matrix); the amount's
        reasons for the rows `explain` marks (a boolean mask, or every row or none): a
        row's SHAP values cost ~10 times its three amounts, so rows that did not ask for
        reasons are not explained."""
        curve = self.hazard.curve(X, trees)
        # two reads: `by_days` keeps its days' values non-decreasing in the order given
        within = self.hazard.by_days(curve, [self.revenue_days])[:, 0]
        low, median, high, mean = self.amount.quantiles(X)
        return Predicted(curve=curve, horizons=self.hazard.by_days(curve, list(HORIZONS)),
                         expected_days=median_days(curve, self.hazard.edges),
                         amount_low=low, amount_median=median, amount_high=high,
                         expected_amount=mean, expected_revenue=within * mean,
                         contributions=self._contributions(X, explain))

    def _contributions(self, X: np.ndarray, explain: bool | np.ndarray) -> np.ndarray | None:
        """(rows, features + 1), NaN in the rows not explained; None when none is."""
        if isinstance(explain, bool) or explain.all() or not explain.any():
            return self.amount.contributions(X) if np.all(explain) else None
        mask = np.asarray(explain, dtype=bool)
        some = self.amount.contributions(X[mask])
        if some is None:
            return None
        out = np.full((len(X), some.shape[1]), np.nan)
        out[mask] = some
        return out

    def save(self, directory: Path) -> None:
        """Boosters in LightGBM's text format, the rest in JSON: nothing pickled."""
        directory.mkdir(parents=True, exist_ok=True)
        if self.hazard.booster_ is not None:
            self.hazard.booster_.save_model(str(directory / "hazard.txt"))
        for q, booster in self.amount.boosters_.items():
            booster.save_model(str(directory / f"amount-{q}.txt"))
        meta = {"edges": list(self.hazard.edges), "max_days": self.hazard.max_days_,
                "calibrators": {str(k): c.to_dict() for k, c in self.hazard.calibrators_.items()},
                "base_margin": None if self.hazard.base_ is None
                else self.hazard.base_.tolist(),
                "columns": [{"name": c.name, "categories": None if c.categories is None
                             else list(c.categories)} for c in self.hazard.columns_],
                "quantiles": list(self.amount.boosters_), "widen": self.amount.widen_,
                "smear": self.amount.smear_, "fallback": self.amount.fallback_,
                "revenue_days": self.revenue_days, "info": self.info}
        (directory / _META).write_text(json.dumps(meta, indent=1, default=float))

    @classmethod
    def load(cls, directory: Path) -> Outlook | None:
        """The outlook saved in `directory`, None when there is none (a bundle without)."""
        found = [directory / n for n in (_META, _LEGACY_META) if (directory / n).exists()]
        if not found:
            return None
        meta = json.loads(found[0].read_text())
        if found[0].name == _LEGACY_META:
            meta["base_margin"] = None
        hazard_file = directory / "hazard.txt"
        hazard = HazardCurve(
            edges=tuple(meta["edges"]), max_days_=meta["max_days"],
            booster_=lgb.Booster(model_file=str(hazard_file)) if hazard_file.exists() else None,
            calibrators_={int(k): Calibrator.from_dict(v)
                          for k, v in meta["calibrators"].items()},
            base_=None if meta.get("base_margin") is None
            else np.asarray(meta["base_margin"], dtype="float64"),
            columns_=[Column(c["name"], None if c["categories"] is None
                             else tuple(c["categories"])) for c in meta["columns"]])
        amount = AmountQuantiles(
            boosters_={float(q): lgb.Booster(model_file=str(directory / f"amount-{q}.txt"))
                       for q in meta["quantiles"]},
            widen_=meta["widen"], smear_=meta["smear"], fallback_=meta["fallback"])
        return cls(hazard, amount, meta["revenue_days"], meta.get("info", {}))
