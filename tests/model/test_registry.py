"""The MLflow store for real: runs, registry aliases, gated promotion, rollback, pyfunc parity."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from propensity.models.bundle import from_training
from propensity.models.online import example_rows, score_rows
from propensity.models.registry import (
    CHALLENGER,
    CHAMPION,
    configure,
    list_versions,
    load_model,
    log_and_register,
    promote,
    rollback,
)
from propensity.settings import Settings
from propensity.tables import CrmExport
from propensity.training import train_export
from tests.conftest import quick_config


def _register(export: CrmExport, path: Path, settings: Settings, **config: object) -> str:
    result = train_export(export, quick_config(**config))
    bundle = from_training(result, "export")
    example = example_rows(export, result.holdout[["lead_id", "as_of"]])
    reg = log_and_register(result, bundle, data={"path": str(path), "fingerprint": "x"},
                           input_example=example, settings=settings)
    return reg.version


def _roundtrip(small_export: CrmExport, small_dir: Path, settings: Settings) -> None:
    v1 = _register(small_export, small_dir, settings)
    assert promote("lead-conversion", settings=settings).reason == "first champion"
    bundle, version = load_model("lead-conversion", CHAMPION, settings=settings)
    assert version == v1
    # a deliberately weak challenger: a 1-round booster without calibration data to speak of
    v2 = _register(small_export, small_dir, settings,
                   booster={"num_iterations": 1, "learning_rate": 0.001, "num_leaves": 2})
    _, challenger = load_model("lead-conversion", CHALLENGER, settings=settings)
    assert challenger == v2 != v1
    refused = promote("lead-conversion", settings=settings)
    assert not refused.promoted and refused.champion_auc is not None
    assert refused.challenger_auc is not None and refused.challenger_auc < refused.champion_auc
    assert load_model("lead-conversion", CHAMPION, settings=settings)[1] == v1
    forced = promote("lead-conversion", force=True, settings=settings)
    assert forced.promoted and load_model("lead-conversion", settings=settings)[1] == v2
    back = rollback("lead-conversion", settings=settings)
    assert back.version == v1 and load_model("lead-conversion", settings=settings)[1] == v1
    versions = list_versions(settings)
    assert list(versions["version"]) == [int(v1), int(v2)]
    assert versions.set_index("version").loc[int(v1), "aliases"] == "champion"
    assert versions["roc_auc"].notna().all()
    # the pyfunc carries feature building, booster and calibrator: same number as the library
    pyfunc = mlflow.pyfunc.load_model("models:/lead-conversion@champion")
    rows = pyfunc.input_example
    assert isinstance(rows, pd.DataFrame) and len(rows) == 3
    via_mlflow = pyfunc.predict(rows)
    direct = score_rows(bundle, rows)
    assert np.abs(via_mlflow["probability"].to_numpy()
                  - direct["probability"].to_numpy()).max() < 1e-9


def test_registry_on_sqlite(tmp_path: Path, small_export: CrmExport, small_dir: Path) -> None:
    settings = Settings(models_dir=tmp_path / "models")
    _roundtrip(small_export, small_dir, settings)
    assert (tmp_path / "models" / "mlflow.db").exists()
    assert any((tmp_path / "models" / "artifacts").rglob("booster.txt"))


def test_registry_on_postgresql(tmp_path: Path, small_export: CrmExport, small_dir: Path,
                                postgres_url: str) -> None:
    settings = Settings(models_dir=tmp_path / "models", MLFLOW_TRACKING_URI=postgres_url)
    assert settings.tracking_uri.startswith("postgresql://")
    _roundtrip(small_export, small_dir, settings)
    assert configure(settings).search_registered_models()[0].name == "lead-conversion"
