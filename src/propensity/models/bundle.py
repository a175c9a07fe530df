"""A trained model as one unit: feature building, booster and calibrator, saved as plain files.

The MLflow pyfunc, batch scoring, the scorer and notebooks all score through `ModelBundle`, so
they cannot disagree about a lead: same features, same booster, same calibration map.
Files: `booster.txt` (LightGBM's own text format), `model.json` (kind, target, horizon,
feature spec or table columns, categories, calibration arrays): nothing pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd

from propensity.features import FeatureSpec, build_lead_features
from propensity.features.account import build_account_features
from propensity.problems import PropensityError
from propensity.single_table import table_features
from propensity.tables import CrmExport

BOOSTER_FILE = "booster.txt"
META_FILE = "model.json"
Kind = Literal["export", "table"]


@dataclass
class ModelBundle:
    kind: Kind
    target: str
    booster: lgb.Booster
    feature_names: list[str]
    categories: dict[str, list[str]]
    calibration_x: np.ndarray
    calibration_y: np.ndarray
    horizon_days: int | None = None
    spec: FeatureSpec | None = None
    id_column: str | None = None

    # --- features -------------------------------------------------------------------------
    def features_for_export(self, export: CrmExport, entities: pd.DataFrame) -> pd.DataFrame:
        if self.spec is None:
            raise PropensityError("this model was trained on a single table: score a table")
        if self.target == "account-propensity":
            return build_account_features(export, self.spec, entities)
        return build_lead_features(export, self.spec, entities)

    def features_for_table(self, frame: pd.DataFrame) -> pd.DataFrame:
        return table_features(frame, self.feature_names, self.categories)

    # --- prediction -----------------------------------------------------------------------
    def predict_features(self, X: pd.DataFrame, *, threads: int = 0) -> np.ndarray:
        """Calibrated probabilities; threads=1 for a few rows (OpenMP start-up costs more)."""
        if len(X) == 0:
            return np.zeros(0)
        raw = np.asarray(self.booster.predict(X[self.feature_names], num_threads=threads))
        return np.interp(raw, self.calibration_x, self.calibration_y)

    def contributions(self, X: pd.DataFrame, *, threads: int = 0) -> np.ndarray:
        return np.asarray(self.booster.predict(X[self.feature_names], pred_contrib=True,
                                               num_threads=threads))

    # --- files ------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / BOOSTER_FILE))
        meta: dict[str, Any] = {
            "kind": self.kind, "target": self.target, "feature_names": self.feature_names,
            "categories": self.categories, "horizon_days": self.horizon_days,
            "calibration_x": self.calibration_x.tolist(),
            "calibration_y": self.calibration_y.tolist(),
            "spec": None if self.spec is None else self.spec.model_dump(mode="json"),
            "id_column": self.id_column,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        booster = lgb.Booster(model_file=str(directory / BOOSTER_FILE))
        return cls(
            kind=meta["kind"], target=meta["target"], booster=booster,
            feature_names=meta["feature_names"], categories=meta["categories"],
            calibration_x=np.asarray(meta["calibration_x"]),
            calibration_y=np.asarray(meta["calibration_y"]),
            horizon_days=meta["horizon_days"],
            spec=None if meta["spec"] is None else FeatureSpec.model_validate(meta["spec"]),
            id_column=meta.get("id_column"),
        )


def from_training(result: Any, kind: Kind, id_column: str | None = None) -> ModelBundle:
    """The bundle of a `TrainResult` (the booster at its best iteration)."""
    b = result.booster
    booster = b.booster_
    # keep only the trees up to the early-stopping point, so every scorer predicts the same
    model_str = booster.model_to_string(num_iteration=booster.best_iteration)
    trimmed = lgb.Booster(model_str=model_str)
    horizon = result.params.get("snapshots", {}).get("horizon_days") if kind == "export" else None
    return ModelBundle(kind=kind, target=result.target, booster=trimmed,
                     feature_names=list(b.feature_names_), categories=result.categories,
                     calibration_x=b.calibration_x_, calibration_y=b.calibration_y_,
                     horizon_days=horizon, spec=result.spec, id_column=id_column)
