"""What happens around the requests: model reloads, shutdowns, the PostgreSQL log, parity."""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa

from propensity.registry import configure, promote
from propensity.settings import Settings
from propensity.tables import CrmExport
from tests.conftest import SmallTrained
from tests.serving.conftest import Server, register, start_server
from tests.serving.test_score_api import LEAD


def _count(server: Server) -> int:
    engine = sa.create_engine(server.db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM score_log")).scalar_one()
    engine.dispose()
    return int(n)


def test_champion_moves_without_dropping_requests_and_a_broken_version_is_refused(
    tmp_path: Path, registry: Path, small_export: CrmExport, small_dir: Path,
    small_trained: SmallTrained,
) -> None:
    """v2 and v3 are the session's model registered again (new versions are what the
    server follows; training them anew would add nothing but minutes)."""
    models = tmp_path / "models"
    shutil.copytree(registry, models)
    settings = Settings(models_dir=models)
    srv = start_server(models, f"sqlite:///{tmp_path / 'log.db'}", tmp_path, reload_seconds=1)
    try:
        stop = False
        codes: list[int] = []

        def hammer() -> None:
            with srv.client(srv.score_key) as http:
                while not stop:
                    codes.append(http.post("/v1/score", json={"leads": [LEAD]}).status_code)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(hammer) for _ in range(2)]
            v2 = register(small_export, small_dir, settings,
                          result=small_trained()).registered.version
            assert promote("lead-conversion", force=True, settings=settings).version == v2
            deadline = time.monotonic() + 60
            seen = "1"
            while time.monotonic() < deadline and seen != v2:
                with srv.client(srv.score_key) as http:
                    seen = http.post("/v1/score", json={"leads": [LEAD]}).json()["model"][
                        "version"]
                time.sleep(0.2)
            stop = True
            for f in futures:
                f.result()
        assert seen == v2  # picked up by the poller, within the minute
        assert codes and set(codes) == {200}  # nothing dropped during the swap
        # a champion whose files are broken: the old one keeps serving, /readyz says why
        v3 = register(small_export, small_dir, settings, result=small_trained()).registered.version
        client = configure(settings)
        source = client.get_model_version("lead-conversion", v3).source
        assert source.startswith("models:/m-")
        model_id = source.removeprefix("models:/")
        where = client.get_logged_model(model_id).artifact_location
        broken = list(Path(where.removeprefix("file://")).rglob("booster.txt"))
        assert len(broken) == 1
        broken[0].write_text("not a model")
        promote("lead-conversion", force=True, settings=settings)
        with srv.client(srv.admin_key) as http:
            http.post("/v1/admin/reload")
            ready = http.get("/readyz").json()
            version = http.post("/v1/score", json={"leads": [LEAD]}).json()["model"]["version"]
        assert version == v2
        assert "lead-conversion" in ready["errors"] and f"v{v3}" in ready["errors"][
            "lead-conversion"]
    finally:
        assert srv.stop()


def test_sigterm_flushes_every_acknowledged_score(tmp_path: Path, registry: Path) -> None:
    srv = start_server(registry, f"sqlite:///{tmp_path / 'log.db'}", tmp_path)
    acknowledged = 0
    with srv.client(srv.score_key) as http:
        for i in range(60):
            body = {"leads": [{**LEAD, "lead_id": f"t{i}-{j}"} for j in range(5)]}
            if http.post("/v1/score", json=body).status_code == 200:
                acknowledged += 5
    assert srv.stop()  # SIGTERM, right after the last response
    assert acknowledged == 300 and _count(srv) == acknowledged


def test_score_log_on_postgresql(tmp_path: Path, registry: Path, postgres_url: str) -> None:
    srv = start_server(registry, postgres_url, tmp_path)
    try:
        with srv.client(srv.score_key) as http:
            r = http.post("/v1/score", json={"leads": [LEAD, {**LEAD, "lead_id": "pg-2"}]})
            assert r.status_code == 200
            assert http.get("/readyz").json()["database"] == "ok"
    finally:
        assert srv.stop()
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT lead_id, probability, model_version, "
                                    "threshold_version FROM score_log ORDER BY lead_id")).all()
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    assert [r.lead_id for r in rows] == ["api-1", "pg-2"]
    assert rows[0].probability == r.json()["scores"][0]["probability"]
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from propensity.database import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert version == ScriptDirectory.from_config(cfg).get_current_head()


def test_http_batch_cli_and_pyfunc_give_the_same_probability(
    tmp_path: Path, server: Server, small_export: CrmExport, small_dir: Path,
) -> None:
    """Leads alone on their account and without an opportunity: the three paths agree."""
    t = pd.Timestamp("2025-04-01", tz="UTC")
    out = tmp_path / "batch.csv"
    cli = Path(sys.executable).parent / "propensity"
    env_models = {"PROPENSITY_MODELS_DIR": str(server.models_dir)}
    import os

    done = subprocess.run([str(cli), "score", str(small_dir), "--as-of", "2025-04-01",
                           "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, **env_models}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning" not in done.stderr, done.stderr
    for when, says in (("1999-01-01", "no lead was open at 1999-01-01"),
                       ("2031-01-01", "days after the export's last record")):
        late = subprocess.run([str(cli), "score", str(small_dir), "--as-of", when, "--out",
                               str(tmp_path / "late.csv")], capture_output=True, text=True,
                              env={**os.environ, **env_models}, check=False)
        assert late.returncode == 0 and "warning:" in late.stderr, late.stderr
        assert says in late.stderr, late.stderr
    batch = pd.read_csv(out).set_index("lead_id")
    leads = small_export.leads.set_index("lead_id")
    per_account = small_export.leads["account_id"].value_counts()
    assert small_export.opportunities is not None and small_export.accounts is not None
    with_opps = set(small_export.opportunities["lead_id"].astype("str"))
    sh = small_export.stage_history
    assert sh is not None
    sh = sh[sh["entered_at"] < t].astype({"lead_id": "str", "stage": "str"})
    accounts = small_export.accounts.set_index("account_id")
    events = small_export.events
    assert events is not None
    events = events[events["occurred_at"] < t].astype({"lead_id": "str"})
    bodies = []
    for lid in batch.index:
        acc = leads.loc[lid, "account_id"]
        if lid in with_opps or (not pd.isna(acc) and per_account[acc] > 1):
            continue
        lead = leads.loc[lid]
        body = {"lead_id": lid, "created_at": lead["created_at"].isoformat(),
                "as_of": t.isoformat(),
                **{c: (None if pd.isna(lead[c]) else str(lead[c])) for c in (
                    "source", "campaign", "account_id", "persona", "owner_id", "product",
                    "country", "job_function", "email_domain")},
                "events": [{"occurred_at": e.occurred_at.isoformat(),
                            "event_type": str(e.event_type), "channel": str(e.channel),
                            "value": None if pd.isna(e.value) else float(e.value)}
                           for e in events[events["lead_id"] == lid].itertuples()]}
        if not pd.isna(acc):
            body["account"] = {k: (v.item() if hasattr(v, "item") else str(v))
                               for k, v in accounts.loc[acc].to_dict().items()}
        body["stage_history"] = [{"stage": r.stage, "entered_at": r.entered_at.isoformat()}
                                 for r in sh[sh["lead_id"] == lid].itertuples()]
        bodies.append(body)
        if len(bodies) == 25:
            break
    assert len(bodies) >= 15
    with server.client(server.score_key) as http:
        r = http.post("/v1/score", json={"leads": bodies})
    assert r.status_code == 200, r.text
    via_http = np.array([s["probability"] for s in r.json()["scores"]])
    via_batch = batch.loc[[b["lead_id"] for b in bodies], "probability"].to_numpy()
    assert np.abs(via_http - via_batch).max() < 1e-9
    configure(Settings(models_dir=server.models_dir))
    pyfunc = mlflow.pyfunc.load_model("models:/lead-conversion@champion")
    import json

    rows = pd.DataFrame([{**{k: v for k, v in b.items() if k not in (
                              "events", "account", "stage_history")},
                          "events": json.dumps(b["events"]),
                          "stage_history": json.dumps(b["stage_history"]),
                          "account": json.dumps(b.get("account")) if b.get("account") else None}
                         for b in bodies])
    via_pyfunc = pyfunc.predict(rows, params=None)["probability"].to_numpy()
    assert np.abs(via_pyfunc - via_http).max() < 1e-9
    assert via_http.std() > 0.01

