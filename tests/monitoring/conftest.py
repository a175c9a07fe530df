"""A world that changes after its model was trained: a generated export whose leads shift
(source mix, pricing page views) from CUT on, a champion trained on the export cut at CUT,
and the real scorer (uvicorn, PostgreSQL) serving the leads open after CUT, as of their day,
with the CRM reporting the export's future as outcomes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from propensity.database import engine_for, migrate
from propensity.export_reader import load_export
from propensity.lifecycle import train_and_register
from propensity.models.bundle import ModelBundle
from propensity.monitoring.outcomes import from_export
from propensity.rows import lead_rows
from propensity.scoring import open_entities
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.tables import CrmExport, truncate_export
from propensity.training import TrainResult
from tests.conftest import fresh_postgres, quick_config
from tests.serving.conftest import Server, start_server
from tests.worlds import request_lead

CUT = pd.Timestamp("2025-07-01", tz="UTC")
AS_OF = [CUT + pd.Timedelta(days=14 * k) for k in range(1, 5)]
WINDOW = {"start": str(CUT.date()), "end": str((CUT + pd.Timedelta(days=70)).date())}
MQL = 30
LEADS, SEED = 4000, 5


def world(directory: Path, shift: bool) -> CrmExport:
    config = SyntheticConfig(n_leads=LEADS, seed=SEED,
                             shift_at=str(CUT.date()) if shift else None)
    tables, truth = generate_export(config)
    write_export(tables, truth, directory)
    return load_export(directory)


def champion_before_cut(export: CrmExport, data: Path, models: Path) -> TrainResult:
    """Trained on what was known at CUT, registered and promoted."""
    trained = train_and_register(truncate_export(export, CUT), quick_config(), data,
                                 gate="always", settings=Settings(models_dir=models))
    assert trained.promotion is not None and trained.promotion.promoted
    return trained.result


def open_after_cut(bundle: ModelBundle, export: CrmExport) -> pd.DataFrame:
    return pd.concat([open_entities(bundle, export, t) for t in AS_OF], ignore_index=True)


@dataclass
class Loop:
    server: Server
    export: CrmExport
    export_dir: Path
    result: TrainResult
    served: pd.DataFrame
    """lead_id, as_of, probability, score: what the scorer answered."""
    outcomes: list[dict[str, Any]]
    report: dict[str, Any]
    work: Path


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    work = tmp_path_factory.mktemp("loop")
    export = world(work / "export", shift=True)
    result = champion_before_cut(export, work / "export", work / "models")
    entities = open_after_cut(result.bundle, export)
    rows = lead_rows(export, entities)
    leads = [request_lead(r) for r in rows.to_dict("records")]
    found, _ = from_export(export, since=CUT)
    outcomes = [o.model_dump(mode="json") for o in found]
    before = os.environ.get("PROPENSITY_MONITOR_DAYS")
    os.environ["PROPENSITY_MONITOR_DAYS"] = "3650"  # the gauges' window holds the replay
    with fresh_postgres() as db:
        server = start_server(work / "models", db, work, data=work / "export")
        try:
            with server.client(server.admin_key) as http:
                base = http.get("/v1/thresholds").json()["version"]
                r = http.put("/v1/thresholds", json={"mql": MQL, "reason": "replay",
                                                     "base_version": base})
                assert r.status_code == 200, r.text
                answers = []
                for i in range(0, len(leads), 400):
                    r = http.post("/v1/score", json={"leads": leads[i:i + 400],
                                                     "explain": False})
                    assert r.status_code == 200, r.text
                    answers += r.json()["scores"]
                for i in range(0, len(outcomes), 5000):
                    r = http.post("/v1/outcomes", json={"outcomes": outcomes[i:i + 5000]})
                    assert r.status_code == 200, r.text
                r = http.get("/v1/monitoring", params=WINDOW)
                assert r.status_code == 200, r.text
            served = entities.assign(probability=[a["probability"] for a in answers],
                                     score=[a["score"] for a in answers])
            assert list(served["lead_id"]) == [a["lead_id"] for a in answers]
            yield Loop(server, export, work / "export", result, served, outcomes, r.json(),
                       work)
        finally:
            server.stop()
            if before is None:
                os.environ.pop("PROPENSITY_MONITOR_DAYS", None)
            else:
                os.environ["PROPENSITY_MONITOR_DAYS"] = before


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[sa.Engine]:
    """A migrated score database, SQLite and PostgreSQL (one test each)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/scores.db"
        migrate(url)
        engine = engine_for(url)
        yield engine
        engine.dispose()
        return
    with fresh_postgres() as url:
        migrate(url)
        engine = engine_for(url)
        yield engine
        engine.dispose()
