"""The MLflow store for real: runs, registry aliases, gated promotion, rollback, pyfunc parity."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from propensity.export import fingerprint
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
from propensity.rows import lead_rows
from propensity.scoring import score_rows
from propensity.settings import Settings
from propensity.tables import CrmExport
from propensity.training import train_export
from tests.conftest import quick_config


def _register(export: CrmExport, path: Path, settings: Settings, **config: object) -> str:
    result = train_export(export, quick_config(**config))
    example = lead_rows(export, result.holdout[["lead_id", "as_of"]].head(3))
    reg = log_and_register(result, data={"path": str(path), "fingerprint": fingerprint(path)},
                           input_example=example, settings=settings)
    return reg.version


def _roundtrip(small_export: CrmExport, small_dir: Path, settings: Settings) -> None:
    v1 = _register(small_export, small_dir, settings)
    first = promote("lead-conversion", settings=settings)
    assert first.promoted and first.reason == "first champion: passes the gate"
    bundle, version = load_model("lead-conversion", CHAMPION, settings=settings)
    assert version == v1
    # a deliberately weak challenger: one tiny tree, which its own baselines beat
    v2 = _register(small_export, small_dir, settings, learners=["lightgbm"],
                   booster={"num_iterations": 1, "learning_rate": 0.001, "num_leaves": 2})
    _, challenger = load_model("lead-conversion", CHALLENGER, settings=settings)
    assert challenger == v2 != v1
    refused = promote("lead-conversion", settings=settings)
    assert not refused.promoted and "gate" in refused.reason and "loses to" in refused.reason
    assert load_model("lead-conversion", CHAMPION, settings=settings)[1] == v1
    # the same pipeline again: passes the gate, but does not beat the champion it equals
    v3 = _register(small_export, small_dir, settings)
    same = promote("lead-conversion", settings=settings)
    assert not same.promoted and same.champion_auc is not None
    assert same.challenger_auc == same.champion_auc and "does not beat" in same.reason
    forced = promote("lead-conversion", version=v2, force=True, settings=settings)
    assert forced.promoted and forced.warning and "loses to" in forced.warning
    assert load_model("lead-conversion", settings=settings)[1] == v2
    back = rollback("lead-conversion", settings=settings)
    assert back.version == v1 and load_model("lead-conversion", settings=settings)[1] == v1
    versions = list_versions(settings).set_index("version")
    assert list(versions.index) == [int(v1), int(v2), int(v3)]
    assert versions.loc[int(v1), "aliases"] == "champion"
    assert list(versions["gate"]) == ["passed", "failed", "passed"]
    assert versions["roc_auc"].notna().all()
    # the pyfunc carries feature building, learner and calibrator: same number as the library
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
