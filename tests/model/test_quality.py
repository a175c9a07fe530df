"""Model quality, measured by the pipeline on data it never saw.

The synthetic generator knows each lead's exact conversion probability, so the model's
out-of-time AUC is compared with the AUC of that truth on the same rows: it must come close,
and it must not beat it by more than noise (that would mean it sees the future).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from propensity.adapters.olist import import_olist
from propensity.adapters.x_education import POST_OUTCOME, import_x_education
from propensity.export import load_export
from propensity.single_table import load_single_table, single_table_options
from propensity.snapshots import lead_entities
from propensity.synthetic import TRUTH_FILE, truth_probability
from propensity.training import TrainConfig, train_export, train_table
from tests.conftest import ROOT, shared_file, synthetic_export


def _config(name: str) -> TrainConfig:
    return TrainConfig.model_validate(tomllib.loads((ROOT / "training" / name).read_text()))


def test_synthetic_model_approaches_the_truth_and_never_beats_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = tmp_path_factory.mktemp("synthetic-100k")
    export = synthetic_export(path, 100_000, seed=5)
    result = train_export(export, _config("default.toml"))
    holdout = result.holdout
    stages = lead_entities(export, sorted(holdout["as_of"].unique()), 90)
    rows = holdout.merge(stages[["lead_id", "as_of", "stage_index"]], on=["lead_id", "as_of"])
    assert len(rows) == len(holdout) > 10_000
    truth = pd.read_parquet(path / TRUTH_FILE).set_index("lead_id")
    p_true = truth_probability(truth.loc[rows["lead_id"], "intent"].to_numpy(),
                               rows["stage_index"].to_numpy(), 90)
    truth_auc = roc_auc_score(rows["label"], p_true)
    model_auc = roc_auc_score(rows["label"], rows["probability"])
    print(f"truth AUC {truth_auc:.4f}, model AUC {model_auc:.4f}")
    assert abs(model_auc - truth_auc) <= 0.03
    assert model_auc <= truth_auc + 0.01  # beating the truth would mean peeking at the future
    metrics = result.report["metrics"]
    assert metrics["model"]["ece"] < 0.02
    assert metrics["model"]["roc_auc"] > metrics["points"]["roc_auc"]
    assert metrics["model"]["roc_auc"] > metrics["naive_bayes"]["roc_auc"]


@pytest.fixture(scope="module")
def x_education(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("x-education")
    import_x_education(shared_file("x-education", "Leads.csv"), out)
    return out


def test_x_education_honest_model(x_education: Path) -> None:
    table_path, manifest = single_table_options(x_education)
    table = load_single_table(table_path, "converted", id_column="lead_id",
                              exclude=manifest.exclude,
                              post_outcome=manifest.post_outcome_columns("table"))
    result = train_table(table, _config("x-education.toml"))
    assert not set(POST_OUTCOME) & set(result.feature_names)
    m = result.report["metrics"]
    print({k: round(v["roc_auc"], 4) for k, v in m.items()})
    assert m["model"]["roc_auc"] >= 0.86
    for baseline in ("logistic_regression", "naive_bayes", "points"):
        assert m["model"]["roc_auc"] > m[baseline]["roc_auc"], baseline
    assert result.report["rows"]["test"] == pytest.approx(0.25 * len(table.frame), abs=2)
    assert any(c.startswith("tags alone") for c in result.report["post_outcome_checks"])


def test_x_education_with_leaky_columns_is_flagged(x_education: Path) -> None:
    table = load_single_table(x_education / "leads.csv", "converted", id_column="lead_id",
                              exclude=["lead_number"])
    result = train_table(table, _config("x-education.toml"))
    assert result.report["metrics"]["model"]["roc_auc"] > 0.95  # too good to be true
    assert any(w.startswith("tags alone separates") for w in result.report["warnings"])


def test_olist_out_of_time_auc_is_reported_beside_baselines(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    out = tmp_path_factory.mktemp("olist-train")
    import_olist(shared_file("olist-mql", "olist_marketing_qualified_leads_dataset.csv"),
                 shared_file("olist-mql", "olist_closed_deals_dataset.csv"), out)
    result = train_export(load_export(out, drop_bad_rows=True), _config("olist.toml"))
    m = result.report["metrics"]
    assert set(m) == {"model", "points", "naive_bayes", "logistic_regression"}
    assert all(0.0 <= v["roc_auc"] <= 1.0 for v in m.values())
    # the opportunity no longer gives the outcome away
    assert m["model"]["roc_auc"] < 0.9
    assert not any("open_opportunit" in w for w in result.report["warnings"])
    assert np.isfinite(m["model"]["log_loss"])


@pytest.mark.parametrize(("target", "label"), [("stage-advancement", "advanced"),
                                               ("account-propensity", "bought")])
def test_other_targets_train_and_rank(small_export: object, target: str, label: str) -> None:
    from tests.conftest import quick_config

    result = train_export(small_export, quick_config(model=target))  # type: ignore[arg-type]
    m = result.report["metrics"]["model"]
    assert m["roc_auc"] > 0.65, m
    assert result.holdout["label"].isin([0, 1]).all() and result.holdout["label"].sum() > 0
    if target == "account-propensity":
        assert "account_id" in result.holdout and "account_champion_engaged" in (
            result.feature_names)
    else:
        assert "current_stage" in result.feature_names
