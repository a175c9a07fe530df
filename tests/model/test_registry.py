"""The MLflow store for real: runs, registry aliases, gated promotion, rollback, pyfunc parity."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import typer

from propensity.export_reader import fingerprint
from propensity.problems import PropensityError
from propensity.registry import (
    CHALLENGER,
    CHAMPION,
    UnknownModel,
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
from propensity.training import TrainResult, train_export
from tests.conftest import SmallTrained, quick_config


def _register(export: CrmExport, path: Path, settings: Settings,
              result: TrainResult | None = None, **config: object) -> str:
    """Register `result`, or what `quick_config(**config)` trains on `export`."""
    result = result or train_export(export, quick_config(**config))
    example = lead_rows(export, result.holdout[["lead_id", "as_of"]].head(3))
    reg = log_and_register(result, data={"path": str(path), "fingerprint": fingerprint(path)},
                           input_example=example, settings=settings)
    return reg.version


def _roundtrip(small_export: CrmExport, small_dir: Path, settings: Settings,
               trained: SmallTrained, again: TrainResult | None = None) -> None:
    """`again`: the pipeline's second result (None: trained here, fresh, to be compared
    with the session's first, `trained()`)."""
    v1 = _register(small_export, small_dir, settings, trained())
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
    v3 = _register(small_export, small_dir, settings, again)
    same = promote("lead-conversion", settings=settings)
    assert not same.promoted and same.champion_auc is not None
    assert same.challenger_auc == same.champion_auc and "does not beat" in same.reason
    forced = promote("lead-conversion", version=v2, force=True, settings=settings)
    assert forced.promoted and forced.warning and "loses to" in forced.warning
    assert load_model("lead-conversion", settings=settings)[1] == v2
    back = rollback("lead-conversion", settings=settings)
    assert back.version == v1 and load_model("lead-conversion", settings=settings)[1] == v1
    # issue 31: a second rollback went forward again, to v2; each goes one further back
    for version in (v2, v3):
        assert promote("lead-conversion", version=version, force=True,
                       settings=settings).promoted
    assert [rollback("lead-conversion", settings=settings).version for _ in "ab"] == [v2, v1]
    with pytest.raises(PropensityError, match="no earlier champion"):
        rollback("lead-conversion", settings=settings)
    assert load_model("lead-conversion", settings=settings)[1] == v1
    versions = list_versions(settings).set_index("version")
    assert list(versions.index) == [int(v1), int(v2), int(v3)]
    assert versions.loc[int(v1), "aliases"] == "champion"
    assert list(versions["gate"]) == ["passed", "failed", "passed"]
    with pytest.raises(UnknownModel, match="models: lead-conversion"):
        load_model("lead-convresion", settings=settings)
    assert versions["roc_auc"].notna().all()
    # the pyfunc carries feature building, learner and calibrator: same number as the library
    pyfunc = mlflow.pyfunc.load_model("models:/lead-conversion@champion")
    rows = pyfunc.input_example
    assert isinstance(rows, pd.DataFrame) and len(rows) == 3
    via_mlflow = pyfunc.predict(rows)
    direct = score_rows(bundle, rows)
    assert np.abs(via_mlflow["probability"].to_numpy()
                  - direct["probability"].to_numpy()).max() < 1e-9


def test_registry_on_sqlite(tmp_path: Path, small_export: CrmExport, small_dir: Path,
                            small_trained: SmallTrained) -> None:
    settings = Settings(models_dir=tmp_path / "models")
    _roundtrip(small_export, small_dir, settings, small_trained)
    assert (tmp_path / "models" / "mlflow.db").exists()
    assert any((tmp_path / "models" / "artifacts").rglob("booster.txt"))


def test_registry_on_postgresql(tmp_path: Path, small_export: CrmExport, small_dir: Path,
                                postgres_url: str, small_trained: SmallTrained) -> None:
    """The store on PostgreSQL; that the same pipeline gives the same model again is
    `test_registry_on_sqlite`'s fresh training."""
    settings = Settings(models_dir=tmp_path / "models", MLFLOW_TRACKING_URI=postgres_url)
    assert settings.tracking_uri.startswith("postgresql://")
    _roundtrip(small_export, small_dir, settings, small_trained, again=small_trained())
    assert configure(settings).search_registered_models()[0].name == "lead-conversion"


def test_a_table_model_never_shares_a_name_with_export_models(
        tmp_path: Path, small_export: CrmExport, small_dir: Path,
        small_trained: SmallTrained) -> None:
    """Issue 31: `train --table` registered under lead-conversion and took the export model's
    challenger alias. A table model has its own name; one under an export model's is refused
    before anything is logged."""
    from propensity.registry import table_model_name, table_models
    from propensity.single_table import load_single_table
    from propensity.training import train_table

    settings = Settings(models_dir=tmp_path / "models")
    _register(small_export, small_dir, settings, small_trained())
    rng = np.random.default_rng(0)
    n = 600
    visits = rng.poisson(3, n)
    pd.DataFrame({"Lead Id": [f"x{i}" for i in range(n)], "visits": visits,
                  "Won": np.where(rng.random(n) < 0.2 + 0.1 * (visits > 3), "yes", "no")}
                 ).to_csv(tmp_path / "t.csv", index=False)
    table = load_single_table(tmp_path / "t.csv", "Won")
    assert table.id_column == "Lead Id"  # found without being named: unique, named like an id
    result = train_table(table, quick_config())
    example = table.frame.head(3).drop(columns="Won")
    with pytest.raises(PropensityError, match="lead-conversion holds models that score exports"):
        log_and_register(result, data={"path": "t.csv"}, input_example=example,
                         settings=settings)
    name = table_model_name("Won")
    assert name == "table-won"
    reg = log_and_register(result, data={"path": "t.csv"}, input_example=example,
                           settings=settings, name=name)
    assert (reg.name, reg.version) == (name, "1") and table_models(settings) == [name]
    assert load_model("lead-conversion", CHALLENGER, settings=settings)[0].kind == "export"
    assert load_model(name, CHALLENGER, settings=settings)[0].id_column == "Lead Id"


def test_train_exits_1_when_the_first_gate_refuses_and_nothing_ships(
        tmp_path: Path, small_export: CrmExport, small_dir: Path,
        small_trained: SmallTrained) -> None:
    """The README's exit 1 for a challenger the gate refuses holds for `train`'s first
    champion too: with no champion before, a refusal leaves none, and `train && serve` must
    stop there (it exited 0). The verdict is training's (a baseline beat every candidate, as
    in `_roundtrip`'s tiny tree); here the session's model's report says so, sparing a fit."""
    from propensity.cli.models import _print_registered
    from propensity.lifecycle import register_and_gate
    from propensity.registry import version_of

    settings = Settings(models_dir=tmp_path / "models")
    lost = small_trained()
    lost.report["gate"] = {"passed": False, "model_auc": 0.61, "loses_to": {"points": 0.64}}
    refused = register_and_gate(lost, small_export, small_dir, gate="first", settings=settings)
    assert refused.promotion is not None and not refused.promotion.promoted
    with pytest.raises(typer.Exit) as exited:
        _print_registered(refused)
    assert exited.value.exit_code == 1
    assert version_of(configure(settings), "lead-conversion", CHAMPION) is None
    shipped = register_and_gate(small_trained(), small_export, small_dir, gate="first",
                                settings=settings)
    assert shipped.promotion is not None and shipped.promotion.promoted
    _print_registered(shipped)  # a first champion: exit 0
