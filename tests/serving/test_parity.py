"""One score on every path, property-tested: the library's lead-scoring pipeline (what the
scorer runs for `POST /v1/score`, called here in-process on the parsed request), the MLflow
pyfunc, `propensity score` and the batch executor give a generated lead the same probability
to 1e-9, whatever its account looks like.

Hypothesis draws worlds of accounts with several contacts of every persona, events, stage
histories and opportunities (open, won, lost, dated around as_of, ties at as_of included).
Each lead is sent with every row of its world, those at and after as_of included, as a CRM
sends a lead it scores as of an earlier time: only the online executor's own as_of cut can
make it agree with the batch executor, which scores the world as an export. One HTTP test
checks that the wire answers what the library answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from propensity.context import ContextSource
from propensity.features.online import LeadInputError
from propensity.lead_scoring import LeadScore, read_records, score_read
from propensity.models.bundle import ModelBundle
from propensity.registry import configure, load_model
from propensity.rows import lead_rows
from propensity.scoring import score_export, score_rows
from propensity.settings import Settings
from propensity.thresholds import ThresholdSet
from serving.schemas import ScoreRequest
from tests.serving.conftest import Server
from tests.worlds import T, request_lead, to_export, worlds, write_world

TOLERANCE = 1e-9
OUTLOOK = ("p_by_30", "p_by_60", "p_by_90", "p_by_180", "expected_days", "expected_amount",
           "amount_low", "amount_high", "expected_revenue")
"""The outlook's columns in batch scores (`horizons` and the rest in a score)."""
THRESHOLDS = ThresholdSet()
World = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def champion(registry: Path) -> tuple[ModelBundle, ModelBundle, Any]:
    """The champions (lead conversion, stage advancement) and the conversion pyfunc."""
    settings = Settings(models_dir=registry)
    bundle, _ = load_model("lead-conversion", settings=settings)
    following, _ = load_model("stage-advancement", settings=settings)
    configure(settings)
    return bundle, following, mlflow.pyfunc.load_model("models:/lead-conversion@champion")


def _retag(world: World, tag: str) -> World:
    """The same world with ids no other world uses (so worlds can share one export)."""
    def fix(row: dict[str, Any]) -> dict[str, Any]:
        return {k: (f"{tag}{v}" if k in ("lead_id", "account_id", "opportunity_id")
                    and v is not None else v) for k, v in row.items()}

    return {name: [fix(r) for r in rows] for name, rows in world.items()}


def _library(bundle: ModelBundle, following: ModelBundle | None, body: dict[str, Any],
             source: ContextSource | None = None) -> list[LeadScore]:
    """What the scorer answers a request body, in-process: parsed as the route parses it,
    read and scored by the library's pipeline."""
    request = ScoreRequest.model_validate_json(json.dumps(body))
    read = read_records(bundle, request.leads, datetime.now(UTC), explain=request.explain,
                        source=source)
    return score_read([read], THRESHOLDS, following)[0].scores


def _outlook(scores: list[LeadScore]) -> pd.DataFrame:
    """The library's outlook of each lead, in the batch's columns (null as NaN)."""
    rows = []
    for s in scores:
        assert s.outlook is not None, s.lead_id
        o = s.outlook
        rows.append({**{f"p_by_{d}": p for d, p in o.horizons.items()},
                     "expected_days": o.expected_days, "expected_amount": o.expected_amount,
                     "amount_low": o.amount_low, "amount_high": o.amount_high,
                     "expected_revenue": o.expected_revenue})
    return pd.DataFrame(rows, columns=list(OUTLOOK), dtype="float64")


def _same_outlook(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Every outlook column agrees to TOLERANCE (null where the other is null)."""
    a = got[list(OUTLOOK)].to_numpy(dtype="float64")
    b = expected[list(OUTLOOK)].to_numpy(dtype="float64")
    assert (np.isnan(a) == np.isnan(b)).all()
    assert np.abs(np.where(np.isnan(a), 0, a - b)).max() < TOLERANCE


def _after_as_of(rows: pd.DataFrame) -> int:
    """Leads whose rows hold something at or after their as_of (an event, a stage entry, an
    opportunity opened or closed, a contact's event): what the executor must cut."""
    n = 0
    for r in rows.to_dict("records"):
        t = pd.Timestamp(r["as_of"])
        times = [e["occurred_at"] for e in json.loads(r["events"])]
        times += [h["entered_at"] for h in json.loads(r["stage_history"])]
        for o in json.loads(r["opportunities"]):
            times += [o["created_at"], *([o["closed_at"]] if o.get("closed_at") else [])]
        account = json.loads(r["account"]) if isinstance(r.get("account"), str) else {}
        times += [e["occurred_at"] for c in account.get("contacts") or [] for e in c["events"]]
        n += any(pd.Timestamp(x) >= t for x in times)
    return n


def _agree(champion: tuple[ModelBundle, ModelBundle, Any], export: Any, batch: pd.DataFrame,
           explain: bool) -> pd.DataFrame:
    """The library and the pyfunc score the batch's leads, sent with all their rows, to the
    batch's probabilities; the uncut rows, for more checks."""
    bundle, following, pyfunc = champion
    rows = lead_rows(export, batch[["lead_id", "as_of"]], cut=False)
    body = {"leads": [request_lead(r) for r in rows.to_dict("records")], "explain": explain}
    scores = _library(bundle, following, body)
    expected = batch["probability"].to_numpy()
    assert [s.lead_id for s in scores] == list(batch["lead_id"])
    assert np.abs(np.array([s.probability for s in scores]) - expected).max() < TOLERANCE
    via_pyfunc = pyfunc.predict(rows)
    assert np.abs(via_pyfunc["probability"].to_numpy() - expected).max() < TOLERANCE
    # how much and when: the same outlook on every path (its models read the same matrix)
    _same_outlook(_outlook(scores), batch)
    _same_outlook(via_pyfunc, batch)
    assert all((s.outlook is not None and s.outlook.amount_reasons is not None) == explain
               for s in scores)
    assert all((s.reasons is not None) == explain for s in scores)
    assert all(s.next_stage is not None and 0 <= s.next_stage <= 1 for s in scores)
    full = [s.context for s, lead in zip(scores, body["leads"], strict=True)
            if "account" in lead and lead["account"].get("contacts") is not None]
    assert all(c is not None and c.contacts == c.opportunities == "request" for c in full)
    assert all(c is not None and set(c.account.values()) <= {"request", "none"} for c in full)
    return rows


@settings(max_examples=130, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=worlds(), explain=st.booleans())
def test_every_path_agrees_whatever_a_lead_carries_after_as_of(
        champion: tuple[ModelBundle, ModelBundle, Any], world: World, explain: bool) -> None:
    export = to_export(world)
    batch = score_export(champion[0], export, T)
    if batch.empty:  # every lead converted or ended before T: nothing is open to score
        return
    rows = _agree(champion, export, batch, explain)
    target(float(_after_as_of(rows)), label="leads with rows at or after as_of")


@pytest.fixture(scope="module")
def generated(champion: tuple[ModelBundle, ModelBundle, Any]) -> list[tuple[World, Any]]:
    """130 worlds drawn the same way on every run (no test depends on another's draws), each
    with ids of its own, and its open leads scored by the batch executor."""
    out: list[tuple[World, Any]] = []

    @settings(max_examples=130, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(world=worlds())
    def collect(world: World) -> None:
        world = _retag(world, f"P{len(out)}-")
        batch = score_export(champion[0], to_export(world), T)
        if not batch.empty:
            out.append((world, batch))

    collect()
    return out


def test_the_cli_scores_every_generated_world_the_same(
        tmp_path: Path, registry: Path, champion: tuple[ModelBundle, ModelBundle, Any],
        generated: list[tuple[World, Any]]) -> None:
    """All the generated worlds in one export: the library (each lead sent with all its
    rows), the pyfunc and `propensity score` give the batch's numbers (and a lead's score does
    not depend on which other accounts share the export)."""
    expected = pd.concat([batch for _, batch in generated], ignore_index=True)
    assert len(expected) >= 200, f"only {len(expected)} generated leads were compared"
    merged = {name: [r for w, _ in generated for r in w[name]] for name in generated[0][0]}
    export = to_export(merged)
    rows = _agree(champion, export, expected, explain=True)
    assert _after_as_of(rows) >= len(expected) // 4, "too few leads test the executor's cut"
    write_world(merged, tmp_path / "worlds")
    out = tmp_path / "scores.csv"
    env = {**os.environ, "PROPENSITY_MODELS_DIR": str(registry)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([str(Path(sys.executable).parent / "propensity"), "score",
                           str(tmp_path / "worlds"), "--as-of", T.isoformat(), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    cli = pd.read_csv(out).set_index("lead_id")
    assert set(cli.index) == set(expected["lead_id"])
    diff = np.abs(cli.loc[expected["lead_id"], "probability"].to_numpy()
                  - expected["probability"].to_numpy())
    assert diff.max() < TOLERANCE
    _same_outlook(cli.loc[expected["lead_id"]], expected)


def test_the_wire_answers_what_the_library_answers(
        server: Server, champion: tuple[ModelBundle, ModelBundle, Any],
        generated: list[tuple[World, Any]]) -> None:
    """Generated leads with all their rows over HTTP (a real uvicorn): every field of every
    score is the library's, reasons and context included."""
    bundle, following, _ = champion
    worlds_, batches = zip(*generated[:8], strict=True)
    merged = {name: [r for w in worlds_ for r in w[name]] for name in worlds_[0]}
    batch = pd.concat(batches, ignore_index=True)
    rows = lead_rows(to_export(merged), batch[["lead_id", "as_of"]], cut=False)
    body = {"leads": [request_lead(r) for r in rows.to_dict("records")], "explain": True}
    with server.client(server.score_key) as http:
        plain = http.post("/v1/score", json=body)
        r = http.post("/v1/score", json={**body, "outlook": True})
    assert r.status_code == plain.status_code == 200, r.text
    # the outlook is given when asked for, and changes nothing else of a score
    fields = ("horizons", "expected_days", "expected_amount", "amount_low", "amount_high",
              "expected_revenue", "amount_reasons")
    assert all(s[f] is None for s in plain.json()["scores"] for f in fields)
    for asked, not_asked in zip(r.json()["scores"], plain.json()["scores"], strict=True):
        for k, v in not_asked.items():
            assert k in fields or asked[k] == v, (k, asked[k], v)
    wire = r.json()["scores"]
    mine = _library(bundle, following, body)
    assert len(wire) == len(mine) == len(batch) >= 8
    for got, s in zip(wire, mine, strict=True):
        assert (got["lead_id"], got["probability"], got["score"], got["grade"], got["mql"],
                got["next_stage"]) == (s.lead_id, s.probability, s.score, s.grade, s.mql,
                                       s.next_stage)
        assert s.reasons is not None and [x["text"] for x in got["reasons"]["positive"]] == [
            x.text for x in s.reasons[0]]
        assert s.context is not None and got["context"] == {
            "account": s.context.account, "contacts": s.context.contacts,
            "opportunities": s.context.opportunities}
        o = s.outlook
        assert o is not None and o.amount_reasons is not None
        assert got["horizons"] == {str(d): p for d, p in o.horizons.items()}
        assert (got["expected_days"], got["expected_amount"], got["amount_low"],
                got["amount_high"], got["expected_revenue"]) == (
            o.expected_days, o.expected_amount, o.amount_low, o.amount_high,
            o.expected_revenue)
        assert [x["text"] for x in got["amount_reasons"]["positive"]] == [
            x.text for x in o.amount_reasons[0]]
    _same_outlook(_outlook(mine), batch)
    # the score log keeps the outlook answered (monitoring's expected amount and days)
    answered = sorted((g["lead_id"], g["horizons"]["90"], g["expected_days"],
                       g["expected_amount"]) for g in wire)
    assert _logged_outlooks(server, {g["lead_id"] for g in wire}, len(wire)) == answered


def _logged_outlooks(server: Server, leads: set[str], n: int) -> list[tuple[Any, ...]]:
    """The score log's outlook columns of the leads' rows that have one, once n are in."""
    import time

    import sqlalchemy as sa

    engine = sa.create_engine(server.db_url.replace("postgresql://", "postgresql+psycopg://"))
    deadline, rows = time.monotonic() + 10, []
    try:
        while time.monotonic() < deadline and len(rows) < n:
            with engine.connect() as conn:
                rows = sorted(tuple(r) for r in conn.execute(sa.text(
                    "SELECT lead_id, p_by_90, expected_days, expected_amount FROM score_log "
                    "WHERE p_by_90 IS NOT NULL")) if r[0] in leads)
            time.sleep(0.1)
    finally:
        engine.dispose()
    return rows


def test_context_from_the_data_source_gives_the_batch_score(
    server: Server, champion: tuple[ModelBundle, ModelBundle, Any], small_export: Any,
) -> None:
    """A CRM sending a lead alone (no contacts, no opportunities) to a scorer started beside
    the export (`serve --data`): it fills in the account's other contacts and the lead's
    opportunities from it, and the lead gets its batch score; each score says where its
    context came from."""
    bundle = champion[0]
    t = pd.Timestamp("2025-05-01", tz="UTC")
    batch = score_export(bundle, small_export, t)
    leads = small_export.leads.set_index("lead_id")
    members = small_export.leads["account_id"].value_counts()
    busy = [lid for lid in batch["lead_id"] if pd.notna(leads.loc[lid, "account_id"])
            and members[leads.loc[lid, "account_id"]] >= 3][:40]
    assert len(busy) >= 20
    rows = lead_rows(small_export, pd.DataFrame({"lead_id": busy, "as_of": t}), context=False)
    body: dict[str, list[Any]] = {"leads": []}
    for r in rows.to_dict("records"):
        lead = request_lead({**r, "opportunities": "[]"})
        lead.pop("opportunities")  # left out: the data source knows them
        if "account" in lead:
            lead["account"].pop("contacts", None)
        body["leads"].append(lead)
    with server.client(server.score_key) as http:
        scores = http.post("/v1/score", json=body).json()["scores"]
    expected = batch.set_index("lead_id").loc[busy, "probability"].to_numpy()
    got = np.array([s["probability"] for s in scores])
    assert np.abs(got - expected).max() < TOLERANCE
    assert {s["context"]["contacts"] for s in scores} == {"data source"}
    assert {s["context"]["opportunities"] for s in scores} == {"data source"}
    # without the context, the committee features differ for some: the fill-in matters
    alone = {"leads": [{**lead, "account": {"contacts": []}, "opportunities": []}
                       for lead in body["leads"]]}
    with server.client(server.score_key) as http:
        bare = np.array([s["probability"] for s in http.post("/v1/score", json=alone).json()[
            "scores"]])
    assert np.abs(bare - expected).max() > 1e-6
    # a lead said to be created after the win the data source holds for it: the request's
    # created_at is named, not an opportunity the request never sent
    opps = small_export.opportunities
    won = opps[(opps["status"] == "won") & opps["lead_id"].notna()].iloc[0]
    late = won["closed_at"] + pd.Timedelta(days=3)
    lead = {"lead_id": str(won["lead_id"]), "created_at": late.isoformat(),
            "as_of": (late + pd.Timedelta(days=1)).isoformat()}
    with server.client(server.score_key) as http:
        refused = http.post("/v1/score", json={"leads": [lead]})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"][0]
    assert detail["loc"] == ["body", "leads", 0, "created_at"], detail
    assert "data source" in detail["msg"] and "won" in detail["msg"], detail
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_the_pyfunc_names_the_lead_whose_rows_the_contract_refuses(
        champion: tuple[ModelBundle, ModelBundle, Any], small_export: Any) -> None:
    """An open opportunity with a close date, in the second of two rows: refused with the
    row's position and lead id, as the online executor names a lead."""
    bundle = champion[0]
    ids = small_export.leads["lead_id"].head(2)
    rows = lead_rows(small_export, pd.DataFrame({"lead_id": ids, "as_of": T}))
    rows.loc[1, "opportunities"] = json.dumps([{
        "created_at": "2025-01-01T00:00:00Z", "closed_at": "2025-02-01T00:00:00Z",
        "status": "open"}])
    with pytest.raises(LeadInputError, match=f"lead '{ids.iloc[1]}'.*open_with_close_date") as e:
        score_rows(bundle, rows)
    assert e.value.loc == (1, "opportunities", 0, "closed_at")


@pytest.fixture(scope="module")
def data_source(small_export: Any) -> ContextSource:
    return ContextSource(small_export)


@pytest.fixture(scope="module")
def data_source_batch(champion: tuple[ModelBundle, ModelBundle, Any], small_export: Any
                      ) -> dict[pd.Timestamp, pd.DataFrame]:
    """The data source's open leads scored by the batch executor, as of a few times."""
    out = {}
    for day in ("2025-03-15", "2025-05-01", "2025-06-20T13:30"):
        t = pd.Timestamp(day, tz="UTC")
        out[t] = score_export(champion[0], small_export, t).set_index("lead_id")
    return out


PARTS = ("account", "attributes", "contacts", "opportunities")


@settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_what_a_request_leaves_out_the_data_source_fills_to_the_batch_score(
        champion: tuple[ModelBundle, ModelBundle, Any], small_export: Any,
        data_source: ContextSource, data_source_batch: dict[pd.Timestamp, pd.DataFrame],
        data: st.DataObject) -> None:
    """Leads of the data source sent with their account block, its attributes (some or all),
    its contacts or their opportunities left out, in any mix: each gets its batch score to
    1e-9, and its `context` says, part by part and attribute by attribute, where each came
    from."""
    bundle = champion[0]
    t = data.draw(st.sampled_from(sorted(data_source_batch)))
    batch = data_source_batch[t]
    ids = data.draw(st.lists(st.sampled_from(sorted(batch.index)), min_size=1, max_size=8,
                             unique=True))
    rows = lead_rows(small_export, pd.DataFrame({"lead_id": ids, "as_of": t}))
    fields = [name for name, _ in bundle.online.account_columns]
    accounts = small_export.accounts.astype({"account_id": "str"}).set_index("account_id")
    leads, expect_from = [], []
    for r in rows.to_dict("records"):
        lead = request_lead(r)
        left_out = data.draw(st.sets(st.sampled_from(PARTS)), label=lead["lead_id"])
        account = lead.get("account")
        kept = set(fields)
        if "opportunities" in left_out:
            lead.pop("opportunities")
        if account is not None:
            if "contacts" in left_out:
                account.pop("contacts")
            if "attributes" in left_out:  # some of the attributes the model reads
                kept = set(data.draw(st.lists(st.sampled_from(fields), unique=True)))
                for name in set(fields) - kept:
                    account.pop(name, None)
            if "account" in left_out:
                lead.pop("account")
                kept = set()
        if lead.get("account_id") is None:
            where = {}
        else:
            known = accounts.loc[lead["account_id"]]
            where = {name: "request" if name in kept and name in lead.get("account", {}) else
                     "data source" if pd.notna(known.get(name)) else "none" for name in fields}
        expect_from.append({
            "account": where,
            "contacts": "request" if account is not None and "contacts" in lead.get(
                "account", {}) else "data source" if lead.get("account_id") else "none",
            "opportunities": "request" if "opportunities" in lead else "data source"})
        leads.append(lead)
    scores = _library(bundle, None, {"leads": leads, "explain": False}, source=data_source)
    got = np.array([s.probability for s in scores])
    assert np.abs(got - batch.loc[ids, "probability"].to_numpy()).max() < TOLERANCE
    assert [None if s.context is None else {
        "account": s.context.account, "contacts": s.context.contacts,
        "opportunities": s.context.opportunities} for s in scores] == expect_from
