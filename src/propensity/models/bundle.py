"""A trained model as one unit: how its inputs are built, how it scores, how it is calibrated.

Batch scoring, the MLflow pyfunc, the scorer and notebooks all score through `ModelBundle`, so
they cannot disagree about a lead: the same feature plan (export models) or table coder (single
tables), the same learner, the same calibration map. A bundle holds a lead model, a
stage-advancement model or an account model alike; `target` says which.

The learner is whichever won on validation: LightGBM, logistic regression, a blend of their
margins, or Odoo's predictive lead scoring (`odoo_learner`: its naive-Bayes log-odds are
additive, so it sits where the logistic part does). Each gives a margin (log-odds) and exact
per-feature contributions that sum to it, so reasons work the same for all four. Files:
`model.json` (everything but the trees; Odoo's table as JSON) and, for LightGBM,
`booster.txt` in LightGBM's own text format: nothing pickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd

from propensity.coding import Column, Vocabulary, encode, not_a_number
from propensity.features.definitions import FeaturePlan
from propensity.features.online import LeadInputError, OnlineFeatures, finite_number
from propensity.features.spec import FeatureSpec
from propensity.models.calibration import Calibrator
from propensity.models.linear import LinearScorer
from propensity.models.odoo_learner import OdooScorer
from propensity.models.outlook import OUTLOOK_DIR, Outlook
from propensity.models.single_row import SingleRow, raw_contributions, raw_margins
from propensity.problems import PropensityError
from propensity.tables import CrmExport, ExportIndex
from propensity.targets import target_named

BOOSTER_FILE = "booster.txt"
META_FILE = "model.json"
Kind = Literal["export", "table"]
Learner = Literal["lightgbm", "logistic_regression", "blend", "odoo_pls"]
LEARNERS: tuple[Learner, ...] = ("lightgbm", "logistic_regression", "blend", "odoo_pls")
LEARNER_NAMES = {"lightgbm": "lightgbm", "logistic_regression": "logistic", "blend": "blend",
                 "odoo_pls": "odoo-pls"}
"""What `propensity models` and the score response call each learner."""


def learner_name(learner: str) -> str:
    """A learner's short public name (an unknown one as it is stored)."""
    return LEARNER_NAMES.get(learner, learner)
FEW_ROWS = 64
"""Below this many rows one thread predicts faster (OpenMP start-up costs more than it saves)."""


def threads_for(rows: int) -> int:
    return 1 if rows < FEW_ROWS else 0


@dataclass
class ModelBundle:
    kind: Kind
    target: str
    columns: list[Column]
    learner: str
    """lightgbm, logistic_regression, blend or odoo_pls."""
    calibrator: Calibrator
    booster: lgb.Booster | None = None
    linear: LinearScorer | OdooScorer | None = None
    """The additive part: logistic regression, or Odoo's table (learner odoo_pls)."""
    blend_weight: float = 1.0
    """Weight of the LightGBM margin in a blend (the linear margin gets the rest)."""
    horizon_days: int | None = None
    stale_days: int | None = None
    spec: FeatureSpec | None = None
    id_column: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """What shipped: rows, time span, iterations, calibration rows, why this learner."""
    outlook: Outlook | None = None
    """When and how much (`models.outlook`), read from this model's matrix: shipped, saved,
    registered and promoted with it, so a score's outlook is its probability's version."""

    # --- inputs ---------------------------------------------------------------------------
    @cached_property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @cached_property
    def categories(self) -> dict[str, list[str]]:
        return {c.name: list(c.categories) for c in self.columns if c.categories is not None}

    @cached_property
    def matrix_key(self) -> str:
        """What the model matrix is built from (spec and columns): two models with equal keys
        score one matrix, so a request's second model skips the features (compared per
        request, where comparing the specs themselves cost 10 us)."""
        return json.dumps([None if self.spec is None else self.spec.key, self.feature_names])

    @cached_property
    def plan(self) -> FeaturePlan:
        if self.spec is None:
            raise PropensityError("this model was trained on a single table: score a table")
        return FeaturePlan(self.spec)

    @cached_property
    def online(self) -> OnlineFeatures:
        """The one-lead executor of this model's feature plan."""
        return OnlineFeatures(self.plan)

    def features_for_export(self, export: CrmExport | ExportIndex, entities: pd.DataFrame
                            ) -> np.ndarray:
        """The model matrix of entity rows (its target entity's key, `as_of`)."""
        return target_named(self.target).entity.matrix(export, self.plan, entities)

    def features_for_table(self, frame: pd.DataFrame) -> np.ndarray:
        """A single table's rows as the model matrix (absent columns are missing)."""
        out = np.full((len(frame), len(self.columns)), np.nan)
        for i, col in enumerate(self.columns):
            if col.name in frame:
                out[:, i] = encode(frame[col.name], col.categories)
        return out

    def features_for_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows as mappings (a request's leads): the same rule as `features_for_table`,
        value by value."""
        coders = [None if c.categories is None else Vocabulary(c.categories)
                  for c in self.columns]
        out = np.full((len(records), len(self.columns)), np.nan)
        for r, record in enumerate(records):
            for i, (col, coder) in enumerate(zip(self.columns, coders, strict=True)):
                value = record.get(col.name)
                if coder is None and not_a_number(value):  # as `score --table` refuses it
                    raise LeadInputError((r, col.name), f"{value!r} is not a number, and the "
                                         f"model reads {col.name} as one")
                out[r, i] = (finite_number(value, (r, col.name)) if coder is None
                             else coder.code(value))
        return out

    # --- scoring ----------------------------------------------------------------------------
    @cached_property
    def single_row(self) -> SingleRow | None:
        """LightGBM's one-row fast path (a request for one lead)."""
        return None if self.booster is None else SingleRow(self.booster)

    def _booster_output(self, X: np.ndarray, threads: int | None, contrib: bool) -> np.ndarray:
        assert self.booster is not None
        one = self.single_row if threads is None else None
        t = threads_for(len(X)) if threads is None else threads
        if contrib:
            return raw_contributions(self.booster, X, one, t)
        return raw_margins(self.booster, X, one, t)

    def _combined(self, X: np.ndarray, threads: int | None, contrib: bool) -> np.ndarray:
        w = self.blend_weight
        out: np.ndarray | None = None
        if self.booster is not None and w > 0:
            out = self._booster_output(X, threads, contrib)
            if w != 1:
                out = w * out
        if self.linear is not None and w < 1:
            linear = (1 - w) * (self.linear.contributions(X) if contrib
                                else self.linear.margin(X))
            out = linear if out is None else out + linear
        if out is None:
            raise ValueError("a model with neither a booster nor a linear part")
        return out

    def margin(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Log-odds before calibration."""
        return self._combined(X, threads, contrib=False)

    def contributions(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        """(rows, features + 1) in log-odds, the bias last; each row sums to its margin."""
        return self._combined(X, threads, contrib=True)

    def predict(self, X: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Calibrated probabilities of the model matrix's rows."""
        if len(X) == 0:
            return np.zeros(0)
        return self.calibrator(self.margin(X, threads))

    def predict_with_contributions(self, X: np.ndarray, threads: int | None = None
                                   ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and contributions in one pass (the margin is the contributions' sum)."""
        contrib = self.contributions(X, threads)
        return self.calibrator(contrib.sum(axis=1)), contrib

    # --- files ------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.booster is not None:
            self.booster.save_model(str(directory / BOOSTER_FILE))
        meta: dict[str, Any] = {
            "kind": self.kind, "target": self.target, "learner": self.learner,
            "columns": [{"name": c.name, "categories": None if c.categories is None
                         else list(c.categories)} for c in self.columns],
            "calibrator": self.calibrator.to_dict(), "blend_weight": self.blend_weight,
            "linear": None if self.linear is None else self.linear.to_dict(),
            "horizon_days": self.horizon_days, "stale_days": self.stale_days,
            "spec": None if self.spec is None else self.spec.model_dump(mode="json"),
            "id_column": self.id_column, "info": self.info,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=1, default=float))
        if self.outlook is not None:
            self.outlook.save(directory / OUTLOOK_DIR)

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        columns = [Column(c["name"], None if c["categories"] is None else tuple(c["categories"]))
                   for c in meta["columns"]]
        booster_file = directory / BOOSTER_FILE
        return cls(
            kind=meta["kind"], target=meta["target"], columns=columns, learner=meta["learner"],
            calibrator=Calibrator.from_dict(meta["calibrator"]),
            booster=lgb.Booster(model_file=str(booster_file)) if booster_file.exists() else None,
            linear=_additive(meta["learner"], columns, meta["linear"]),
            blend_weight=meta["blend_weight"], horizon_days=meta["horizon_days"],
            stale_days=meta.get("stale_days"),
            spec=None if meta["spec"] is None else FeatureSpec.model_validate(meta["spec"]),
            id_column=meta.get("id_column"), info=meta.get("info", {}),
            outlook=Outlook.load(directory / OUTLOOK_DIR),
        )


def _additive(learner: str, columns: list[Column], data: dict[str, Any] | None
              ) -> LinearScorer | OdooScorer | None:
    """The additive part from its JSON: Odoo's table for odoo_pls, else logistic regression."""
    if data is None:
        return None
    if learner == "odoo_pls":
        return OdooScorer.from_dict(columns, data)
    return LinearScorer.from_dict(columns, data)
