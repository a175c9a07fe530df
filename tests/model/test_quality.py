"""Model quality, measured the way a user would meet it, against every baseline.

- The stress generator (slow decisions, four years, ~2% buying in 90 days, noise columns with
  hundreds of levels) knows each lead's exact probability: the shipped model, trained on the
  export cut at T and scoring the leads open at T, must come close to that truth.
- X Education through the CLI on a stratified quarter held out by the user, Olist out of time
  with `training/olist.toml`: the figures the issue sets, and never below logistic regression.
- The out-of-time split itself: the horizon gap and a vocabulary fitted before the cutoff.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from propensity.adapters.olist import import_olist
from propensity.adapters.x_education import POST_OUTCOME, import_x_education
from propensity.export_reader import load_export
from propensity.scoring import score_export
from propensity.single_table import load_single_table, single_table_options
from propensity.synthetic import (
    compare_with_truth,
    generate_export,
    stress_config,
    write_export,
)
from propensity.tables import CrmExport, truncate_export
from propensity.timestamps import to_micros
from propensity.training import TrainConfig, export_sets, train_export, train_table
from tests.conftest import ROOT, SmallTrained, quick_config, shared_file

BASELINES = ("points", "naive_bayes", "logistic_regression")


def _config(name: str) -> TrainConfig:
    return TrainConfig.model_validate(tomllib.loads((ROOT / "training" / name).read_text()))


def _beats_every_baseline(report: dict[str, object]) -> None:
    metrics = report["metrics"]  # type: ignore[index]
    assert "logistic_regression" in metrics and "naive_bayes" in metrics
    for name in BASELINES:
        if name in metrics:
            assert metrics["model"]["roc_auc"] >= metrics[name]["roc_auc"], name
    assert report["gate"]["passed"]  # type: ignore[index]


def test_stress_export_shipped_model_nears_the_truth_at_t(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Train on the export as it was at T, score every lead open at T, judge with the future."""
    path = tmp_path_factory.mktemp("stress")
    tables, truth = generate_export(stress_config(20_000, seed=11))
    write_export(tables, truth, path)
    full = load_export(path)
    t = pd.Timestamp("2025-07-01", tz="UTC")
    cut = truncate_export(full, t)
    result = train_export(cut, TrainConfig())
    _beats_every_baseline(result.report)
    assert result.report["shipped"]["fit"]["rows"] > result.report["rows"]["train"]
    scored = score_export(result.bundle, cut, t)
    judged = compare_with_truth(path, full, scored, t, 90)
    print(judged.line())
    assert judged.leads == len(scored) > 800
    assert 0.01 < judged.base_rate < 0.05
    assert judged.model_auc >= judged.truth_auc - 0.02
    assert judged.model_auc <= judged.truth_auc + 0.01  # beating the truth would be leakage
    assert judged.model_log_loss <= 1.08 * judged.truth_log_loss


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
    _beats_every_baseline(result.report)
    assert result.report["metrics"]["model"]["roc_auc"] >= 0.86
    assert result.report["rows"]["test"] == pytest.approx(0.25 * len(table.frame), abs=2)
    assert result.report["shipped"]["fit"]["rows"] == len(table.frame)  # every row ships
    assert any(c.startswith("tags alone") for c in result.report["post_outcome_checks"])


def test_x_education_as_a_new_user_scores_it(tmp_path: Path) -> None:
    """The raw Leads.csv, a stratified quarter held out (seed 0), `train --table` on the rest,
    `score --table` on the quarter. Measured: 0.869 (0.856 before the refit on every row);
    the best LightGBM a grid searched on this very quarter found was 0.871."""
    raw = pd.read_csv(shared_file("x-education", "Leads.csv"))
    train, test = train_test_split(raw, test_size=0.25, stratify=raw["Converted"],
                                   random_state=0)
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    leaky = ("Tags,Lead Quality,Lead Profile,Asymmetrique Activity Index,"
             "Asymmetrique Profile Index,Asymmetrique Activity Score,"
             "Asymmetrique Profile Score,Last Activity,Last Notable Activity")
    env = {**os.environ, "PROPENSITY_MODELS_DIR": str(tmp_path / "models")}
    cli = str(Path(sys.executable).parent / "propensity")
    done = subprocess.run([cli, "train", "--table", str(tmp_path / "train.csv"), "--target",
                           "Converted", "--id-col", "Prospect ID", "--post-outcome", leaky],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([cli, "score", "--table", str(tmp_path / "test.csv"), "--alias",
                           "challenger", "--out", str(tmp_path / "scores.csv")],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = pd.read_csv(tmp_path / "scores.csv").set_index("Prospect ID")
    auc = roc_auc_score(test["Converted"], scores.loc[test["Prospect ID"], "probability"])
    print(f"X Education, scored by the CLI on the held-out quarter: AUC {auc:.4f}")
    assert auc >= 0.865


def test_x_education_with_leaky_columns_is_flagged(x_education: Path) -> None:
    table = load_single_table(x_education / "leads.csv", "converted", id_column="lead_id",
                              exclude=["lead_number"])
    # about the leak, not the model's quality: LightGBM's default setting, no grid search
    result = train_table(table, _config("x-education.toml").model_copy(update={"search": False}))
    assert result.report["metrics"]["model"]["roc_auc"] > 0.95  # too good to be true
    assert any(w.startswith("tags alone separates") for w in result.report["warnings"])


def test_olist_out_of_time_matches_the_plain_question(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    out = tmp_path_factory.mktemp("olist-train")
    import_olist(shared_file("olist-mql", "olist_marketing_qualified_leads_dataset.csv"),
                 shared_file("olist-mql", "olist_closed_deals_dataset.csv"), out)
    export = load_export(out)
    result = train_export(export, _config("olist.toml"))
    m = result.report["metrics"]
    print({k: round(v["roc_auc"], 4) for k, v in m.items()})
    assert m["model"]["roc_auc"] >= 0.68
    assert m["model"]["roc_auc"] >= m["logistic_regression"]["roc_auc"]
    _beats_every_baseline(result.report)
    assert "points" not in m  # no rule of the default points applies: no constant baseline
    assert not any("open_opportunit" in w for w in result.report["warnings"])
    # scoring ends leads as training did: none idle in its stage past stale_days
    assert result.bundle.stale_days == 30
    t = pd.Timestamp("2018-05-01", tz="UTC")
    scored = score_export(result.bundle, export, t)
    created = export.leads.set_index("lead_id").loc[scored["lead_id"], "created_at"]
    assert len(scored) > 100 and (t - created).max() <= pd.Timedelta(days=30)


@pytest.mark.parametrize(("target", "label"), [("stage-advancement", "advanced"),
                                               ("account-propensity", "bought")])
def test_other_targets_train_and_rank(small_trained: SmallTrained, target: str,
                                      label: str) -> None:
    result = small_trained(target)
    _beats_every_baseline(result.report)
    m = result.report["metrics"]["model"]
    assert m["roc_auc"] > 0.65, m
    assert result.holdout["label"].isin([0, 1]).all() and result.holdout["label"].sum() > 0
    if target == "account-propensity":
        assert "account_id" in result.holdout and "account_champion_engaged" in (
            result.feature_names)
    else:
        assert "current_stage" in result.feature_names


def test_the_evaluation_learns_only_labels_known_at_the_cutoff(small_export: CrmExport) -> None:
    """Every row the evaluation fit learns from has its label window closed before the first
    holdout snapshot: remove the gap and this fails."""
    config = quick_config()
    sets = export_sets(small_export, config)
    times = sets.evaluation.times
    is_test = np.zeros(len(times), dtype=bool)
    is_test[sets.test] = True
    horizon_us = config.snapshots.horizon_days * 86_400_000_000
    assert times[~is_test].max() + horizon_us <= times[is_test].min()
    assert sets.split["gap_days"] >= config.snapshots.horizon_days
    # the shipped model learns from more: every labelled snapshot, the holdout's included
    assert len(sets.shipping.y) > len(sets.evaluation.y) and sets.shipping.times.max() >= (
        times.max())


def test_the_evaluation_vocabulary_is_fitted_before_the_cutoff(small_export: CrmExport) -> None:
    """Categories and event types that first appear after the cutoff exist in the shipped
    model's vocabulary, not in the evaluated one's: fit it on the whole export and this fails."""
    config = quick_config()
    sets = export_sets(small_export, config)
    cutoff = pd.Timestamp(sets.split["cutoff"])
    leads = small_export.leads.copy()
    late = leads["created_at"] >= cutoff
    leads["source"] = leads["source"].astype("str").where(~late.to_numpy(), "late_source")
    assert small_export.events is not None
    events = small_export.events.astype({"lead_id": "str", "event_type": "str",
                                         "channel": "str"})
    after = to_micros(events["occurred_at"]) >= to_micros(pd.Series([cutoff]))[0]
    events.loc[after, "event_type"] = "late_event_type"
    export = CrmExport(leads=leads, events=events, stage_history=small_export.stage_history,
                       opportunities=small_export.opportunities, accounts=small_export.accounts)
    sets = export_sets(export, config)
    assert sets.evaluation_spec is not None and sets.shipping_spec is not None
    assert "late_source" not in sets.evaluation_spec.lead_categorical["source"]
    assert "late_event_type" not in sets.evaluation_spec.event_types
    assert "late_source" in sets.shipping_spec.lead_categorical["source"]
    assert "late_event_type" in sets.shipping_spec.event_types


def test_calibration_keeps_the_ranking(small_trained: SmallTrained) -> None:
    result = small_trained()
    bundle = result.evaluation_bundle
    margin = bundle.margin(result.holdout_X)
    p = bundle.predict(result.holdout_X)
    y = result.holdout["label"].to_numpy()
    assert abs(roc_auc_score(y, p) - roc_auc_score(y, margin)) <= 0.002
    assert len(np.unique(p)) >= 0.9 * len(np.unique(margin))  # no collapse onto a few steps
    shipped = result.report["shipped"]["calibration"]
    # out of fold, on the latest snapshot times (the population scored at the latest time)
    assert shipped["rows"] >= 2000 and shipped["to"] == result.report["shipped"]["fit"]["to"]
    assert shipped["from"] > result.report["shipped"]["fit"]["from"]
