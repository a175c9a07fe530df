"""`propensity push`: scores written back through the official clients to local stand-ins of
HubSpot's batch update and Salesforce's sObject Collections, under 429s, 5xx, per-record
refusals, a CRM that stops answering and a process killed mid-run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from propensity.database import crm_push_runs, crm_push_written, engine_for, migrate
from propensity.push.plan import DEFAULT_FIELDS, load_fields
from propensity.push.records import Crm, Outgoing
from propensity.push.run import dry_run, push
from propensity.push.writers import HubSpotWriter, PushStopped, Retries, SalesforceWriter, Writer
from tests.crm_write_standins import (
    TOKEN,
    HubSpotStandIn,
    SalesforceStandIn,
    StandIn,
    plan_of,
    self_signed,
)

FAST = Retries(attempts=20, backoff=0.0)


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    url = f"sqlite:///{tmp_path / 'push.db'}"
    migrate(url)
    return engine_for(url)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def crm_of(tls: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[type[object]]:
    started: list[StandIn] = []
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[0]))

    class Crms:
        @staticmethod
        def start(crm: Crm, ids: list[str], retries: Retries = FAST, **faults: object
                  ) -> tuple[StandIn, Writer]:
            if crm == "hubspot":
                hub = HubSpotStandIn(ids, **faults)  # type: ignore[arg-type]
                started.append(hub)
                return hub, HubSpotWriter(TOKEN, "contacts", hub.start(), retries)
            sf = SalesforceStandIn(ids, **faults)  # type: ignore[arg-type]
            started.append(sf)
            return sf, SalesforceWriter(sf.start(tls), TOKEN, "Lead", retries)

    yield Crms
    for s in started:
        s.stop()


CRMS = pytest.mark.parametrize("crm", ["hubspot", "salesforce"])


@CRMS
def test_every_record_written_once_or_reported(crm: Crm, crm_of: type, engine: sa.Engine
                                               ) -> None:
    plan = plan_of(crm, 1500)
    ids = [o.record_id for o in plan]
    refuse = set(ids[::97])
    standin, writer = crm_of.start(crm, ids, rate_429=0.2, retry_after="0", rate_5xx=0.05,
                                   refuse=refuse, seed=3)
    result = push(engine, crm, plan, writer)
    assert standin.statuses[429] > 0 and standin.statuses[502] + standin.statuses[503] > 0
    assert set(result.refused) == refuse
    assert all(r in ("OBJECT_NOT_FOUND" if crm == "hubspot" else "ENTITY_IS_DELETED")
               for r in (v.split(":")[0] for v in result.refused.values()))
    assert {i: standin.writes[i] for i in ids} == {i: int(i not in refuse) for i in ids}
    for o in plan:
        if o.record_id not in refuse:
            assert standin.values[o.record_id] == o.values
    assert (result.written, result.unchanged) == (len(ids) - len(refuse), 0)
    sizes = {"hubspot": 100, "salesforce": 200}[crm]
    assert standin.accepted == -(-len(ids) // sizes)  # full batches: no write went twice


def test_retry_after_is_waited_out(crm_of: type, engine: sa.Engine) -> None:
    plan = plan_of("hubspot", 400)
    standin, writer = crm_of.start("hubspot", [o.record_id for o in plan], rate_429=0.4,
                                   retry_after="1", seed=3)
    push(engine, "hubspot", plan, writer)
    log = standin.log
    waits = [log[i + 1][0] - t for i, (t, status) in enumerate(log[:-1]) if status == 429]
    assert len(waits) >= 2 and min(waits) >= 0.95, waits
    assert sum(standin.writes.values()) == 400


@CRMS
def test_second_push_writes_only_what_changed(crm: Crm, crm_of: type, engine: sa.Engine
                                              ) -> None:
    plan = plan_of(crm, 450)
    standin, writer = crm_of.start(crm, [o.record_id for o in plan])
    push(engine, crm, plan, writer)
    requests = len(standin.log)
    again = push(engine, crm, plan, writer)
    assert len(standin.log) == requests and (again.written, again.unchanged) == (0, 450)
    score = DEFAULT_FIELDS[crm].score
    moved = [*plan[:3], Outgoing(plan[3].record_id, {**plan[3].values, score: "100"}), *plan[4:]]
    third = push(engine, crm, moved, writer)
    assert third.written == 1 and standin.writes[plan[3].record_id] == 2
    assert sum(standin.writes.values()) == 451


@CRMS
def test_dry_run_writes_nothing(crm: Crm, crm_of: type, engine: sa.Engine) -> None:
    plan = plan_of(crm, 300)
    standin, writer = crm_of.start(crm, [o.record_id for o in plan])
    push(engine, crm, plan[:100], writer)
    with engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(crm_push_runs)).scalar()
    result = dry_run(engine, crm, plan)
    assert (result.written, result.unchanged, result.total) == (200, 100, 300)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(crm_push_runs)
                            ).scalar() == before
    assert sum(standin.writes.values()) == 100


@CRMS
def test_stopped_halfway_resumes_without_rewriting(crm: Crm, crm_of: type, engine: sa.Engine
                                                   ) -> None:
    plan = plan_of(crm, 1000)
    ids = [o.record_id for o in plan]
    standin, writer = crm_of.start(crm, ids, retries=Retries(attempts=2, backoff=0.0),
                                   down_after=2, refuse={ids[5]})
    with pytest.raises(PushStopped, match="503"):
        push(engine, crm, plan, writer)
    done = sum(standin.writes.values())
    assert 0 < done < len(ids) - 1
    standin.down_after = None
    result = push(engine, crm, plan, writer)
    assert result.resumed_at == done + 1  # the refused record is behind the cursor too
    assert result.refused == {ids[5]: result.refused[ids[5]]}  # reported from before the stop
    assert all(standin.writes[i] == (i != ids[5]) for i in ids)


def test_killed_process_resumes_rewriting_at_most_the_batch_in_flight(
        crm_of: type, engine: sa.Engine) -> None:
    """On HubSpot (the cursor is the same code for both CRMs; Salesforce's stop and resume
    is `test_stopped_halfway_resumes_without_rewriting`)."""
    crm: Crm = "hubspot"
    plan = plan_of(crm, 3000)
    ids = [o.record_id for o in plan]
    standin, _ = crm_of.start(crm, ids, latency=0.03)
    url = f"http://127.0.0.1:{standin.server.server_address[1]}" if crm == "hubspot" else \
        f"https://127.0.0.1:{standin.server.server_address[1]}"
    script = textwrap.dedent(f"""
        from propensity.database import engine_for
        from propensity.push.run import push
        from propensity.push.writers import HubSpotWriter, SalesforceWriter
        from tests.crm_write_standins import plan_of
        writer = (HubSpotWriter({TOKEN!r}, "contacts", {url!r}) if {crm!r} == "hubspot" else
                  SalesforceWriter({url!r}, {TOKEN!r}, "Lead"))
        push(engine_for({str(engine.url)!r}), {crm!r}, plan_of({crm!r}, 3000), writer)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 60
    while standin.accepted < 5 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    with engine.connect() as conn:
        recorded = set(conn.execute(sa.select(crm_push_written.c.record_id)).scalars())
    assert 0 < len(recorded) < len(ids)
    push(engine, crm, plan, _writer(crm, url))
    twice = {i for i in ids if standin.writes[i] == 2}
    assert all(standin.writes[i] >= 1 for i in ids) and max(standin.writes.values()) <= 2
    assert not twice & recorded  # nothing the cursor had recorded was written again
    assert len(twice) <= {"hubspot": 100, "salesforce": 200}[crm]


def _writer(crm: Crm, url: str, retries: Retries = FAST) -> Writer:
    return (HubSpotWriter(TOKEN, "contacts", url, retries) if crm == "hubspot" else
            SalesforceWriter(url, TOKEN, "Lead", retries))


@CRMS
def test_a_batch_refused_whole_stops_and_names_why(crm: Crm, crm_of: type, engine: sa.Engine
                                                   ) -> None:
    plan = [Outgoing(o.record_id, {"Bogus_Field": "1", **o.values})
            for o in plan_of(crm, 10)]
    _, writer = crm_of.start(crm, [o.record_id for o in plan])
    with pytest.raises(PushStopped, match=r"HTTP 400.*Bogus_Field"):
        push(engine, crm, plan, writer)


def test_fields_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "fields.toml"
    path.write_text('[salesforce]\nobject = "Contact"\nscore = "Score__c"\n')
    f = load_fields("salesforce", path)
    assert (f.object, f.score, f.grade) == ("Contact", "Score__c", "Propensity_Grade__c")
    assert load_fields("hubspot", path) == DEFAULT_FIELDS["hubspot"]
    path.write_text('[hubspot]\nscor = "x"\n')
    with pytest.raises(Exception, match=r"fields.toml: \[hubspot\] scor: Extra inputs"):
        load_fields("hubspot", path)
    # an outlook value named to the probability's field would overwrite it: refused
    path.write_text('[hubspot]\np_by_90 = "propensity_probability"\n')
    with pytest.raises(Exception, match="p_by_90 and probability both name the CRM field "
                                        "'propensity_probability'"):
        load_fields("hubspot", path)


# --- the command, end to end: a registered champion scores an export, the CLI pushes it -------

@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """An export, a model store whose lead-conversion champion was trained on it, and an
    as-of time inside it."""
    from propensity.export_reader import fingerprint
    from propensity.registry import log_and_register, promote
    from propensity.rows import lead_rows
    from propensity.settings import Settings
    from propensity.training import train_export
    from tests.conftest import quick_config, synthetic_export

    work = tmp_path_factory.mktemp("push-model")
    export = synthetic_export(work / "export", 1000, seed=7)
    result = train_export(export, quick_config(snapshots={"every_days": 28, "horizon_days": 90},
                                               learners=["lightgbm"]))
    settings = Settings(models_dir=work / "models")
    log_and_register(result, data={"path": str(work / "export"),
                                   "fingerprint": fingerprint(work / "export")},
                     input_example=lead_rows(export, result.holdout[["lead_id", "as_of"]].head(3)),
                     settings=settings)
    assert promote("lead-conversion", force=True, settings=settings).promoted
    latest = export.latest_time()
    assert latest is not None
    return work / "export", work / "models", f"{latest - pd.Timedelta(days=60):%Y-%m-%d}"


def cli(models: Path, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "propensity"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PROPENSITY_MODELS_DIR": str(models), **env})


def test_push_command_writes_the_champions_scores_once(champion: tuple[Path, Path, str],
                                                       crm_of: type) -> None:
    """The values written are the batch scorer's (`score_export`), rounded as documented."""
    from propensity.export_reader import load_export
    from propensity.registry import load_model
    from propensity.scoring import score_export
    from propensity.settings import Settings

    export, models, as_of = champion
    leads = pd.read_parquet(export / "leads.parquet")["lead_id"].astype(str).tolist()
    standin, _ = crm_of.start("hubspot", leads)
    url = f"http://127.0.0.1:{standin.server.server_address[1]}"
    args = ("push", "hubspot", export, "--as-of", as_of, "--base-url", url)
    dry = cli(models, *args, "--dry-run", HUBSPOT_ACCESS_TOKEN=TOKEN)
    assert dry.returncode == 0, dry.stderr
    n = int(re.search(r"(\d[\d,]*) open leads; would write \1, 0 unchanged", dry.stdout)
            .group(1).replace(",", ""))  # type: ignore[union-attr]
    assert n > 0 and not standin.log
    done = cli(models, *args, HUBSPOT_ACCESS_TOKEN=TOKEN)
    assert done.returncode == 0 and f"wrote {n:,}, 0 unchanged, 0 refused" in done.stdout
    bundle, _ = load_model("lead-conversion", settings=Settings(models_dir=models))
    expected = score_export(bundle, load_export(export), pd.Timestamp(as_of, tz="UTC"))
    written = {i: v for i, v in standin.values.items() if v}
    assert set(written) == set(expected["lead_id"]) and len(written) == n
    for row in expected.astype({"lead_id": str}).itertuples():
        v = written[row.lead_id]
        assert v["propensity_probability"] == f"{row.probability:.4f}"
        assert v["propensity_score"] == str(int(row.probability * 100 + 0.5))
        assert v["propensity_grade"] in "ABCD" and v["propensity_model_version"] == \
            "lead-conversion v1"
    assert all(written[i]["propensity_reasons"] for i in written)  # each has a reason
    again = cli(models, *args, HUBSPOT_ACCESS_TOKEN=TOKEN)
    assert f"wrote 0, {n:,} unchanged" in again.stdout and set(standin.writes.values()) == {1}


def test_push_writes_the_outlook_fields_named_and_only_them(
        champion: tuple[Path, Path, str], crm_of: type, tmp_path: Path) -> None:
    """The outlook's optional fields, named in a fields file, hold the batch scorer's
    outlook (`score_export`) as text; a portal without them is never sent them by default
    (the other push tests: the stand-ins refuse a batch naming a property they lack)."""
    from propensity.export_reader import load_export
    from propensity.registry import load_model
    from propensity.scoring import score_export
    from propensity.settings import Settings

    export, models, as_of = champion
    leads = pd.read_parquet(export / "leads.parquet")["lead_id"].astype(str).tolist()
    standin, _ = crm_of.start("hubspot", leads)
    named = {"p_by_90": "lead_p90", "expected_days": "lead_days",
             "expected_amount": "lead_amount", "expected_revenue": "lead_revenue"}
    standin.fields |= set(named.values())
    fields = tmp_path / "fields.toml"
    fields.write_text("[hubspot]\n" + "".join(f'{k} = "{v}"\n' for k, v in named.items()))
    url = f"http://127.0.0.1:{standin.server.server_address[1]}"
    done = cli(models, "push", "hubspot", export, "--as-of", as_of, "--base-url", url,
               "--fields", fields, HUBSPOT_ACCESS_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    bundle, _ = load_model("lead-conversion", settings=Settings(models_dir=models))
    assert bundle.outlook is not None
    expected = score_export(bundle, load_export(export), pd.Timestamp(as_of, tz="UTC"))
    written = {i: v for i, v in standin.values.items() if v}
    assert len(written) == len(expected) > 0
    amounts = 0
    for row in expected.astype({"lead_id": str}).itertuples():
        v = written[row.lead_id]
        assert v["lead_p90"] == f"{row.p_by_90:.4f}"
        for column in ("expected_days", "expected_amount", "expected_revenue"):
            x = getattr(row, column)
            assert v[named[column]] == ("" if pd.isna(x) else f"{x:.0f}"), column
        amounts += v["lead_amount"] != ""
        assert v["propensity_probability"] == f"{row.probability:.4f}"
    assert amounts > 0  # the champion learned amounts: not every value blank


def test_push_command_reports_refused_records_and_exits_1(
        champion: tuple[Path, Path, str], crm_of: type, tmp_path: Path,
        tls: tuple[Path, Path]) -> None:
    export, models, as_of = champion
    leads = pd.read_parquet(export / "leads.parquet")["lead_id"].astype(str).tolist()
    standin, _ = crm_of.start("salesforce", leads, refuse=set(leads[::50]))
    url = f"https://127.0.0.1:{standin.server.server_address[1]}"
    out = cli(models, "push", "salesforce", export, "--as-of", as_of, "--refused",
              tmp_path / "refused.csv", SALESFORCE_INSTANCE_URL=url,
              SALESFORCE_SESSION_ID=TOKEN, REQUESTS_CA_BUNDLE=str(tls[0]))
    assert out.returncode == 1 and "records refused by salesforce" in out.stderr
    refused = pd.read_csv(tmp_path / "refused.csv", dtype=str)
    assert len(refused) > 0 and set(refused["record_id"]) <= set(leads[::50])
    assert (refused["reason"] == "ENTITY_IS_DELETED: entity is deleted").all()
    assert not any(standin.writes[i] for i in refused["record_id"])
    assert "Traceback" not in out.stderr


@CRMS
def test_a_crm_that_cannot_be_reached_stops_in_one_line(crm: Crm, crm_of: type,
                                                        engine: sa.Engine) -> None:
    standin, _ = crm_of.start(crm, ["x"])
    scheme = "http" if crm == "hubspot" else "https"
    url = f"{scheme}://127.0.0.1:{standin.server.server_address[1]}"
    standin.stop()
    with pytest.raises(PushStopped, match="did not answer"):
        push(engine, crm, plan_of(crm, 5), _writer(crm, url, Retries(attempts=1, backoff=0)))


def test_cursor_and_last_written_on_postgresql(postgres_url: str, crm_of: type) -> None:
    """The migration and the upsert of what was written, on PostgreSQL as on SQLite."""
    migrate(postgres_url)
    engine = engine_for(postgres_url)
    plan = plan_of("hubspot", 450)
    ids = [o.record_id for o in plan]
    standin, writer = crm_of.start("hubspot", ids, retries=Retries(attempts=1, backoff=0),
                                   down_after=2)
    with pytest.raises(PushStopped):
        push(engine, "hubspot", plan, writer)
    standin.down_after = None
    result = push(engine, "hubspot", plan, writer)
    assert (result.resumed_at, result.written) == (200, 450)
    assert push(engine, "hubspot", plan, writer).written == 0
    assert all(standin.writes[i] == 1 for i in ids)
    engine.dispose()
