"""Odoo's predictive lead scoring as the model that ships: on a small export where it ranks
the holdout best it is what training ships, it is registered and promoted by the gate, and the
scorer over HTTP (a real uvicorn), the MLflow pyfunc and batch scoring give its leads the same
probability (1e-9), with Odoo's criteria as reasons: each field's log likelihood ratio.

The export: 1,500 generated leads whose intent the attributes explain almost wholly
(`intent_noise` 0.2) and no events table, so what separates buyers is what Odoo reads: the
stage and the lead's fields (here, as Odoo lets a user tick more fields, persona and job
function beside the defaults). The ordinary fixture export keeps its champion.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from propensity.export_reader import load_export
from propensity.funnel.journeys import build_journeys
from propensity.lifecycle import Trained, train_and_register
from propensity.models.bundle import ModelBundle
from propensity.models.odoo_learner import OdooScorer, field_columns
from propensity.models.odoo_pls import log_odds
from propensity.odoo_history import DEFAULT_COLUMNS, OdooPlsConfig, open_lead_fields
from propensity.registry import configure, list_versions, load_model
from propensity.rows import lead_rows
from propensity.scoring import score_export
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.tables import CrmExport
from tests.conftest import SmallTrained, quick_config
from tests.serving.conftest import Server, start_server
from tests.worlds import request_lead

TOLERANCE = 1e-9
ODOO = OdooPlsConfig(columns={**DEFAULT_COLUMNS, "persona": ["persona"],
                              "job_function": ["job_function"]})


@pytest.fixture(scope="module")
def odoo_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CrmExport, Trained]:
    """The small export, and its lead model trained, registered and put to the gate."""
    data = tmp_path_factory.mktemp("odoo-export")
    tables, truth = generate_export(SyntheticConfig(n_leads=1500, seed=5, intent_noise=0.2))
    write_export({k: v for k, v in tables.items() if k != "events"}, truth, data)
    export = load_export(data)
    models = tmp_path_factory.mktemp("odoo-store") / "models"
    trained = train_and_register(export, quick_config(odoo=ODOO.model_dump()), data,
                                 gate="first", settings=Settings(models_dir=models))
    return models, export, trained


@pytest.fixture(scope="module")
def odoo_server(tmp_path_factory: pytest.TempPathFactory,
                odoo_world: tuple[Path, CrmExport, Trained]) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("odoo-server")
    srv = start_server(odoo_world[0], f"sqlite:///{work / 'scores.db'}", work)
    yield srv
    srv.stop()


def test_odoo_ships_where_it_ranks_best(odoo_world: tuple[Path, CrmExport, Trained]) -> None:
    models, _, trained = odoo_world
    report = trained.result.report
    assert trained.result.bundle.learner == "odoo_pls"
    assert isinstance(trained.result.bundle.linear, OdooScorer)
    assert report["gate"]["passed"], report["gate"]
    odoo = [c for c in report["selection"]["candidates"] if c["learner"] == "odoo_pls"]
    assert len(odoo) == 1 and len(odoo[0]["fold_auc"]) == report["selection"]["folds"]
    # on the holdout it ranks at least as well as every other candidate judged there
    judged = {j["candidate"]: j["model_auc"] for j in report["holdout_judged"]}
    assert judged[odoo[0]["name"]] == max(judged.values())
    assert trained.promotion is not None and trained.promotion.promoted
    # its table counts only leads closed before each fit's cutoff: the holdout's for the
    # model measured there, the export's latest time for the one that ships
    measured = trained.result.evaluation_bundle.info["odoo_table"]
    assert pd.Timestamp(measured["closed_before"]) == pd.Timestamp(report["split"]["cutoff"])
    shipped = trained.result.bundle.info["odoo_table"]
    assert pd.Timestamp(shipped["closed_before"]) == odoo_world[1].latest_time()
    assert 0 < measured["closed_leads"] < shipped["closed_leads"]
    versions = list_versions(Settings(models_dir=models))
    assert versions["learner"].tolist() == ["odoo-pls"]
    shown = subprocess.run(
        [sys.executable, "-c", "from propensity.cli import main; main()", "models"],
        env={**os.environ, "PROPENSITY_MODELS_DIR": str(models), "COLUMNS": "250"},
        capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "odoo-pls" in shown.stdout, shown.stdout + shown.stderr


def _open_leads(export: CrmExport, bundle: ModelBundle) -> pd.DataFrame:
    """40 leads open 45 days before the export's end, batch-scored."""
    t = export.latest_time().normalize() - pd.Timedelta(days=45)
    return score_export(bundle, export, t).head(40)


def test_served_pyfunc_and_batch_agree_with_odoos_reasons(
        odoo_world: tuple[Path, CrmExport, Trained], odoo_server: Server) -> None:
    models, export, _ = odoo_world
    settings = Settings(models_dir=models)
    bundle, _ = load_model("lead-conversion", settings=settings)
    batch = _open_leads(export, bundle)
    assert len(batch) == 40
    rows = lead_rows(export, batch[["lead_id", "as_of"]])
    body = {"leads": [request_lead(r) for r in rows.to_dict("records")], "explain": True}
    with odoo_server.client(odoo_server.score_key) as http:
        r = http.post("/v1/score", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"]["learner"] == "odoo-pls"
    served = np.array([s["probability"] for s in answer["scores"]])
    expected = batch["probability"].to_numpy()
    assert np.abs(served - expected).max() < TOLERANCE
    configure(settings)
    pyfunc = mlflow.pyfunc.load_model("models:/lead-conversion@champion")
    piped = pyfunc.predict(rows)
    assert np.abs(piped["probability"].to_numpy() - expected).max() < TOLERANCE
    _reasons_are_odoos_criteria(bundle, export, batch, answer["scores"])


def _reasons_are_odoos_criteria(bundle: ModelBundle, export: CrmExport, batch: pd.DataFrame,
                                scores: list[dict[str, Any]]) -> None:
    """Each reason is a field Odoo counted for the lead, its impact the log likelihood ratio
    of the lead's value, computed from the export (not the model matrix); the highest 3 above
    1 and the lowest 3 below it."""
    assert isinstance(bundle.linear, OdooScorer)
    where = field_columns(bundle.columns, bundle.linear.config)
    column_field = {bundle.columns[i].name: f for f, i in where.items()}
    leads = open_lead_fields(export, batch[["lead_id", "as_of"]], bundle.linear.config,
                       journeys=build_journeys(export))
    _, terms = log_odds(bundle.linear.table, leads)
    kept = [v in bundle.categories[bundle.columns[where[f]].name]
            for f, v in zip(terms["field"], terms["value"], strict=True)]
    terms = terms[kept]  # a value the vocabulary folds is one Odoo's table never saw
    counted = 0
    for i, s in enumerate(scores):
        mine = terms[terms["lead"] == i].set_index("field")["log_odds"]
        pos, neg = s["reasons"]["positive"], s["reasons"]["negative"]
        assert len(pos) <= 3 and len(neg) <= 3
        for reason in pos + neg:
            impact = mine[column_field[reason["feature"]]]
            assert reason["impact"] == pytest.approx(impact, abs=1e-4)
            counted += 1
        assert [r["impact"] for r in pos] == sorted(mine[mine > 0].round(4), reverse=True)[:3]
        assert [r["impact"] for r in neg] == sorted(mine[mine < 0].round(4))[:3]
    assert counted >= 40


def test_the_fixture_exports_keep_their_champion(small_trained: SmallTrained) -> None:
    """Odoo's table is tried on the ordinary fixture export and loses there by a wide margin
    (measured: fold AUC 0.801 against the blend's 0.850), so its champion is what it was."""
    report = small_trained("lead-conversion").report
    learners = {c["learner"]: c["mean_auc"] for c in report["selection"]["candidates"]}
    assert "odoo_pls" in learners
    assert report["selection"]["learner"] != "odoo_pls"
    assert learners["odoo_pls"] < max(learners.values()) - 0.01
