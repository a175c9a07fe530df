"""Which learner ships: LightGBM settings, logistic regression, their blend and Odoo's predictive
lead scoring (`odoo_learner`, when the problem carries Odoo's history), compared on the same
out-of-fold rows; and the out-of-fold margins every calibrator is fitted on.

Folds for exports hold whole entities (every snapshot of a lead, or of an account): a held
entity never appears in the rows its fold learns from, so a lead's outcome cannot be learned
from one snapshot and "predicted" in the next, and the long-lived non-buyers stay on both
sides (`entity_folds`). Single tables use stratified folds.

The search is a fixed count of fits: every setting of `GRID` (or its first) times every fold,
plus logistic regression per fold; nothing depends on time, so the same rows give the same
choice on any machine.

The winner has the best mean fold AUC; a simpler learner within `TOLERANCE` of it wins instead
(logistic regression, then LightGBM, then the blend, then Odoo's table, which reads none of a
lead's activity): equal ranking, cheaper reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from propensity.coding import Column
from propensity.models.booster import GRID, MAX_ROUNDS, lightgbm_params, train_booster
from propensity.models.linear import LinearScorer
from propensity.models.odoo_learner import OdooHistory, OdooScorer
from propensity.problems import PropensityError

TOLERANCE = 0.001
BLEND_WEIGHTS = (0.25, 0.5, 0.75)
MIN_FOLD_ROWS = 30
SIMPLICITY = {"logistic_regression": 0, "lightgbm": 1, "blend": 2, "odoo_pls": 3}
"""Odoo's table last: it reads a lead's fields and stage, none of its activity, so it wins
only where it ranks better by more than `TOLERANCE`."""

Fold = tuple[np.ndarray, np.ndarray]
"""(rows to learn from, held-out rows)."""


def _usable(y: np.ndarray, fit: np.ndarray, held: np.ndarray) -> bool:
    return (fit.size >= MIN_FOLD_ROWS and held.size >= MIN_FOLD_ROWS
            and len(np.unique(y[fit])) == 2 and len(np.unique(y[held])) == 2)


def entity_folds(groups: np.ndarray, y: np.ndarray, k: int, seed: int) -> list[Fold]:
    """k folds of whole entities (leads or accounts): a fold holds every snapshot of its
    entities and learns from every snapshot of the others, so no outcome is learned from one
    snapshot and "predicted" at another, and no non-buyer is dropped for being open long.

    Entities that ever convert are dealt round-robin apart from those that never do, after a
    seeded shuffle: each fold holds its share of both (docs/training.md has the numbers
    against the time blocks this replaces)."""
    codes, inverse = np.unique(groups, return_inverse=True)
    ever = np.zeros(codes.size, dtype=bool)
    ever[inverse[y == 1]] = True
    rng = np.random.default_rng(seed)
    fold_of = np.empty(codes.size, dtype="int64")
    for part in (np.flatnonzero(ever), np.flatnonzero(~ever)):
        fold_of[rng.permutation(part)] = np.arange(part.size) % k
    row_fold = fold_of[inverse]
    out = []
    for f in range(k):
        held = np.flatnonzero(row_fold == f)
        fit = np.flatnonzero(row_fold != f)
        if _usable(y, fit, held):
            out.append((fit, held))
    return out


def fold_rates(y: np.ndarray, folds: Sequence[Fold]) -> list[dict[str, float]]:
    """Each fold's positive rate on the rows it learns from beside the rows it holds out: a
    fold that learns at several times the rate it predicts has lost its non-buyers."""
    return [{"fit_rows": int(fit.size), "fit_rate": round(float(y[fit].mean()), 5),
             "held_rows": int(held.size), "held_rate": round(float(y[held].mean()), 5)}
            for fit, held in folds]


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[Fold]:
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.zeros(len(y)), y)]
    return [f for f in folds if _usable(y, *f)]


def lead_weights(groups: np.ndarray) -> np.ndarray:
    """1 / rows of the row's lead, scaled to mean 1: each lead counts once, whatever its age."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    return w * (len(w) / w.sum())


@dataclass
class Candidate:
    name: str
    learner: str
    setting: dict[str, Any] | None = None
    iterations: int | None = None
    blend_weight: float = 1.0
    fold_auc: list[float] = field(default_factory=list)
    oof: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Out-of-fold margins, NaN for rows no fold held out."""

    @property
    def auc(self) -> float:
        return float(np.mean(self.fold_auc)) if self.fold_auc else float("nan")

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "learner": self.learner, "setting": self.setting,
                "iterations": self.iterations, "blend_weight": self.blend_weight,
                "fold_auc": [round(a, 5) for a in self.fold_auc], "mean_auc": round(self.auc, 5)}


@dataclass
class Problem:
    """The rows a selection or a fit works on: matrix, labels, weights, columns."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    columns: list[Column]
    rows_per_lead: float
    entities: int
    overrides: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None
    """Entity code per row: what Odoo's table leaves out for a fold."""
    odoo: OdooHistory | None = None
    """Closed leads Odoo's table may count (lead models on exports); None: no Odoo candidate."""

    def subset(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.X[idx], self.y[idx], self.w[idx]


def _oof(n: int, folds: Sequence[Fold], margins: Sequence[np.ndarray]) -> np.ndarray:
    out = np.full(n, np.nan)
    for (_, held), m in zip(folds, margins, strict=True):
        out[held] = m
    return out


def _fold_auc(y: np.ndarray, folds: Sequence[Fold], margins: Sequence[np.ndarray]) -> list[float]:
    return [float(roc_auc_score(y[held], m)) for (_, held), m in zip(folds, margins, strict=True)]


def _silent(_: str) -> None:
    """No progress lines (callers that show none)."""


def evaluate_lightgbm(p: Problem, folds: Sequence[Fold], setting: dict[str, Any],
                      note: Callable[[str], None] = _silent) -> Candidate:
    """Each fold stops early on its held rows; one tree count for all (the best mean held log
    loss: `train_booster`).
    `note` hears of each fold's fit: on all labelled history one takes seconds."""
    params = lightgbm_params(setting, p.rows_per_lead, p.entities, p.overrides)
    boosters, curves = [], []
    for k, (fit, held) in enumerate(folds, 1):
        note(f"  lightgbm ({params['num_leaves']} leaves, "
             f"{round(params['min_data_in_leaf'] / p.rows_per_lead)} leads per leaf), "
             f"fold {k} of {len(folds)}")
        X, y, w = p.subset(fit)
        booster, curve = train_booster(X, y, w, p.columns, params, MAX_ROUNDS,
                                       valid=(p.X[held], p.y[held]))
        boosters.append(booster)
        curves.append(curve)
    longest = max(len(c) for c in curves)
    padded = np.array([c + [c[-1]] * (longest - len(c)) for c in curves])
    rounds = int(np.argmax(padded.mean(axis=0))) + 1
    margins = [np.asarray(b.predict(p.X[held], raw_score=True, num_iteration=rounds))
               for b, (_, held) in zip(boosters, folds, strict=True)]
    leads = round(params["min_data_in_leaf"] / p.rows_per_lead)
    name = f"lightgbm ({params['num_leaves']} leaves, {leads} leads per leaf, {rounds} trees)"
    return Candidate(name, "lightgbm", dict(setting), rounds, 1.0, _fold_auc(p.y, folds, margins),
                     _oof(len(p.y), folds, margins))


def evaluate_linear(p: Problem, folds: Sequence[Fold], C: float = 0.5,
                    note: Callable[[str], None] = _silent) -> Candidate:
    margins = []
    for k, (fit, held) in enumerate(folds, 1):
        note(f"  logistic regression, fold {k} of {len(folds)}")
        X, y, w = p.subset(fit)
        margins.append(LinearScorer(p.columns, C=C).fit(X, y, w).margin(p.X[held]))
    return Candidate("logistic regression", "logistic_regression", {"C": C}, None, 0.0,
                     _fold_auc(p.y, folds, margins), _oof(len(p.y), folds, margins))


def _odoo_scorer(p: Problem, rows: np.ndarray | None = None) -> OdooScorer:
    """Odoo's table of the closed leads but those of entities outside `rows` (default all)."""
    assert p.odoo is not None and p.groups is not None
    out = None if rows is None else np.setdiff1d(p.groups, p.groups[rows])
    return p.odoo.scorer(p.columns, out)


def evaluate_odoo(p: Problem, folds: Sequence[Fold],
                  note: Callable[[str], None] = _silent) -> Candidate:
    """Odoo's predictive lead scoring per fold: its table counts every closed lead but the
    fold's held ones, and scores the held rows (no weights, no setting: Odoo has none)."""
    margins = []
    for k, (fit, held) in enumerate(folds, 1):
        note(f"  odoo-pls, fold {k} of {len(folds)}")
        margins.append(_odoo_scorer(p, fit).margin(p.X[held]))
    return Candidate("odoo-pls (Odoo's predictive lead scoring)", "odoo_pls", None, None, 0.0,
                     _fold_auc(p.y, folds, margins), _oof(len(p.y), folds, margins))


def evaluate_blend(p: Problem, folds: Sequence[Fold], booster: Candidate,
                   linear: Candidate) -> Candidate:
    best: Candidate | None = None
    for weight in BLEND_WEIGHTS:
        margins = [weight * booster.oof[held] + (1 - weight) * linear.oof[held]
                   for _, held in folds]
        cand = Candidate(f"blend ({weight:.2f} x {booster.name} + {1 - weight:.2f} x logistic "
                         "regression)", "blend", booster.setting, booster.iterations, weight,
                         _fold_auc(p.y, folds, margins), _oof(len(p.y), folds, margins))
        if best is None or cand.auc > best.auc:
            best = cand
    assert best is not None
    return best


@dataclass
class Choice:
    """The learner that ships, with everything needed to fit it again on other rows."""

    learner: str
    setting: dict[str, Any] | None
    iterations: int | None
    blend_weight: float
    C: float
    name: str
    why: str


def _candidates(p: Problem, folds: Sequence[Fold], search: bool,
                learners: Sequence[str], note: Callable[[str], None]) -> list[Candidate]:
    """Every learner asked for, on the same folds, in a fixed order: the LightGBM settings
    (also fitted when only the blend needs them), logistic regression, then their blend."""
    tried: list[Candidate] = []
    boosters: list[Candidate] = []
    linear = None
    if "lightgbm" in learners or "blend" in learners:
        for setting in GRID if search else GRID[:1]:
            boosters.append(evaluate_lightgbm(p, folds, setting, note))
        tried += boosters if "lightgbm" in learners else []
    if "logistic_regression" in learners or "blend" in learners:
        linear = evaluate_linear(p, folds, note=note)
        tried += [linear] if "logistic_regression" in learners else []
    if "blend" in learners and boosters and linear is not None:
        best_booster = max(boosters, key=lambda c: c.auc)
        tried.append(evaluate_blend(p, folds, best_booster, linear))
    if "odoo_pls" in learners and p.odoo is not None:
        tried.append(evaluate_odoo(p, folds, note))
    return tried


def _winner(tried: list[Candidate], n_folds: int) -> tuple[Candidate, str]:
    """The simplest candidate within `TOLERANCE` of the best mean fold AUC, and why."""
    top = max(c.auc for c in tried)
    close = [c for c in tried if c.auc >= top - TOLERANCE]
    winner = min(close, key=lambda c: (SIMPLICITY[c.learner], -c.auc))
    best = max(tried, key=lambda c: c.auc)
    others = ", ".join(f"{c.name} {c.auc:.4f}" for c in tried if c is not winner)
    why = (f"best mean fold AUC ({winner.auc:.4f}) over {n_folds} folds" if winner is best
           else f"within {TOLERANCE} AUC of the best ({best.name}, {best.auc:.4f}) and simpler")
    why += f"; also tried: {others}" if others else ""
    return winner, why


def select(p: Problem, folds: Sequence[Fold], *, search: bool = True,
           learners: Sequence[str] = ("lightgbm", "logistic_regression", "blend"),
           note: Callable[[str], None] = _silent,
           ) -> tuple[Choice, Candidate, list[Candidate]]:
    """Every candidate on the same folds; the winner, its own out-of-fold record, and all
    (`note` hears of each fit as it starts)."""
    tried = _candidates(p, folds, search, learners, note)
    if not tried:
        raise PropensityError(f"no learner to try among {', '.join(learners)}: odoo_pls scores "
                              "leads (lead conversion on an export) only")
    winner, why = _winner(tried, len(folds))
    return as_choice(winner, why), winner, tried


def as_choice(candidate: Candidate, why: str) -> Choice:
    """What fitting a candidate again needs."""
    C = float((candidate.setting or {}).get("C", 0.5)) if candidate.learner == (
        "logistic_regression") else 0.5
    return Choice(candidate.learner, candidate.setting, candidate.iterations,
                  candidate.blend_weight, C, candidate.name, why)


def resize(choice: Choice, p: Problem, folds: Sequence[Fold],
           note: Callable[[str], None] = _silent) -> tuple[Choice, np.ndarray]:
    """The same learner and setting on other rows: its tree count decided again on folds of
    those rows (a count chosen on a fifth of the data is not the count for all of it), and
    its out-of-fold margins there (what its calibration is fitted on)."""
    if choice.learner == "logistic_regression":
        return choice, evaluate_linear(p, folds, choice.C, note).oof
    if choice.learner == "odoo_pls":
        return choice, evaluate_odoo(p, folds, note).oof
    booster = evaluate_lightgbm(p, folds, choice.setting or {}, note)
    oof = booster.oof
    name = booster.name
    if choice.learner == "blend":
        linear = evaluate_linear(p, folds, choice.C, note)
        oof = choice.blend_weight * booster.oof + (1 - choice.blend_weight) * linear.oof
        name = (f"blend ({choice.blend_weight:.2f} x {booster.name} + "
                f"{1 - choice.blend_weight:.2f} x logistic regression)")
    return replace(choice, iterations=booster.iterations, name=name), oof


def fit_choice(choice: Choice, p: Problem, rows: np.ndarray | None = None
               ) -> tuple[lgb.Booster | None, LinearScorer | OdooScorer | None]:
    """The chosen learner fitted on `rows` (default all) with its chosen tree count; Odoo's
    table takes the additive part's place (its margin is additive too)."""
    if choice.learner == "odoo_pls":
        return None, _odoo_scorer(p, rows)
    idx = np.arange(len(p.y)) if rows is None else rows
    X, y, w = p.subset(idx)
    booster = linear = None
    if choice.learner in ("lightgbm", "blend"):
        params = lightgbm_params(choice.setting or {}, p.rows_per_lead, p.entities, p.overrides)
        booster, _ = train_booster(X, y, w, p.columns, params, choice.iterations or 100)
    if choice.learner in ("logistic_regression", "blend"):
        linear = LinearScorer(p.columns, C=choice.C).fit(X, y, w)
    return booster, linear


def margin_of(choice: Choice, booster: lgb.Booster | None,
              linear: LinearScorer | OdooScorer | None,
              X: np.ndarray) -> np.ndarray:
    out = np.zeros(len(X))
    if booster is not None:
        out += choice.blend_weight * np.asarray(booster.predict(X, raw_score=True))
    if linear is not None:
        out += (1 - choice.blend_weight) * linear.margin(X)
    return out


def oof_margins(choice: Choice, p: Problem, folds: Sequence[Fold]) -> np.ndarray:
    """Out-of-fold margins of the chosen learner at its chosen size (what calibration needs)."""
    margins = []
    for fit, held in folds:
        booster, linear = fit_choice(choice, p, fit)
        margins.append(margin_of(choice, booster, linear, p.X[held]))
    return _oof(len(p.y), folds, margins)
