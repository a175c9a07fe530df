"""The feedback loop over real HTTP: outcomes in, realised performance and drift out, checked
against independent pandas computations on the same rows."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from propensity.api_keys import create_key
from propensity.database import engine_for
from tests.browser import keep_screenshot, ui_page
from tests.code.test_cli import BIN
from tests.monitoring.conftest import CUT, MQL, WINDOW, Loop

HORIZON = pd.Timedelta(days=90)


def _conversions(loop: Loop) -> pd.Series:
    """Each lead's conversion time, straight from the export's tables (the contract's rule)."""
    sh = loop.export.stage_history
    assert sh is not None and loop.export.opportunities is not None
    customer = sh[sh["stage"].astype("str") == "customer"]
    a = customer.groupby(customer["lead_id"].astype("str"))["entered_at"].min()
    opps = loop.export.opportunities
    won = opps[(opps["status"].astype("str") == "won") & opps["lead_id"].notna()]
    b = won.groupby(won["lead_id"].astype("str"))["closed_at"].min()
    return pd.concat([a, b]).groupby(level=0).min()


def _labelled(loop: Loop) -> pd.DataFrame:
    served = loop.served.copy()
    conv = pd.to_datetime(served["lead_id"].map(_conversions(loop)), utc=True)
    served["label"] = ((conv > served["as_of"]) & (conv <= served["as_of"] + HORIZON)).astype(int)
    return served


def test_realised_precision_and_calibration_equal_pandas(loop: Loop) -> None:
    served = _labelled(loop)
    perf = loop.report["performance"]
    assert perf["mql_threshold"] == MQL and perf["horizon_days"] == 90
    overall = perf["overall"]
    flagged = served[served["score"] >= MQL]
    assert overall["leads"] == overall["matured"] == len(served) > 500
    assert overall["mqls"] == len(flagged) > 20
    assert overall["converted"] == served["label"].sum() > 20
    assert overall["precision"] == pytest.approx(flagged["label"].mean(), abs=1e-12)
    assert overall["recall"] == pytest.approx(
        flagged["label"].sum() / served["label"].sum(), abs=1e-12)
    assert overall["expected_precision"] == pytest.approx(flagged["probability"].mean(),
                                                          abs=1e-12)
    served["band"] = np.minimum(served["score"] // 10, 9)
    bands = served.groupby("band").agg(leads=("label", "size"), predicted=("probability", "mean"),
                                       realised=("label", "mean"))
    assert [b["leads"] for b in perf["bands"]] == bands["leads"].tolist()
    assert [b["band"] for b in perf["bands"]] == [
        f"{10 * i}-{100 if i == 9 else 10 * i + 9}" for i in bands.index]
    for got, (_, want) in zip(perf["bands"], bands.iterrows(), strict=True):
        assert got["predicted"] == pytest.approx(want["predicted"], abs=1e-12)
        assert got["realised"] == pytest.approx(want["realised"], abs=1e-12)
    weeks = served.groupby(served["as_of"].dt.strftime("%Y-%m-%d"))
    assert [w["leads"] for w in perf["weeks"]] == weeks.size().tolist()
    assert [w["precision"] for w in perf["weeks"]] == pytest.approx(
        weeks.apply(lambda g: g.loc[g["score"] >= MQL, "label"].mean()).tolist(), abs=1e-12)


def test_drift_is_found_where_it_was_injected(loop: Loop) -> None:
    verdict = loop.report["verdict"]
    assert verdict["drift"] and "retrain" in verdict["actions"]
    drifted = verdict["drifted"]
    assert drifted[0] == "__score__"
    assert "source" in drifted
    assert any("pricing_page_view" in f for f in drifted)
    window = loop.report["window"]
    assert window["served"] == len(loop.served)
    assert [d["period"] for d in loop.report["days"]] == [str(t.date()) for t in sorted(
        loop.served["as_of"].unique())]
    assert sum(d["served"] for d in loop.report["days"]) == len(loop.served)


def test_gauges_report_the_same_window(loop: Loop) -> None:
    with loop.server.client() as http:
        text = http.get("/metrics").text
    gauges = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("propensity_") and not line.startswith("#")}
    window = loop.report["window"]
    assert gauges["propensity_score_psi"] == pytest.approx(window["score_psi"], rel=1e-12)
    assert gauges['propensity_psi{feature="source"}'] == pytest.approx(
        next(f["psi"] for f in window["features"] if f["feature"] == "source"), rel=1e-12)
    assert gauges["propensity_realised_precision"] == pytest.approx(
        loop.report["performance"]["overall"]["precision"], rel=1e-12)
    assert "propensity_calibration_gap" in gauges


def test_outcomes_are_idempotent(loop: Loop) -> None:
    engine = engine_for(loop.server.db_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM outcomes")).scalar_one()
    assert stored == len(loop.outcomes)
    again = loop.outcomes[:300]
    with loop.server.client(loop.server.score_key) as http:
        r = http.post("/v1/outcomes", json={"outcomes": again})
        assert r.json() == {"received": 300, "stored": 0, "duplicates": 300}
        new = {**again[0], "at": "2025-12-31T23:59:59Z"}
        r = http.post("/v1/outcomes", json={"outcomes": [new, new]})
        assert r.json() == {"received": 2, "stored": 1, "duplicates": 1}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM outcomes")).scalar_one() == stored + 1
    engine.dispose()


def test_bad_outcomes_get_field_paths(loop: Loop) -> None:
    good = {"lead_id": "L1", "stage": "customer", "at": "2025-09-01T00:00:00Z"}
    cases = [
        ({"outcomes": [good, {**good, "stage": "signed"}]}, ["body", "outcomes", 1, "stage"]),
        ({"outcomes": [{"lead_id": "L1", "stage": "won"}]}, ["body", "outcomes", 0, "at"]),
        ({"outcomes": [{**good, "amount": -5}]}, ["body", "outcomes", 0, "amount"]),
        ({"outcomes": [{**good, "at": "yesterday"}]}, ["body", "outcomes", 0, "at"]),
        ({"outcomes": [{**good, "colour": "red"}]}, ["body", "outcomes", 0, "colour"]),
        ({"outcomes": []}, ["body", "outcomes"]),
    ]
    with loop.server.client(loop.server.score_key) as http:
        for body, loc in cases:
            r = http.post("/v1/outcomes", json=body)
            assert r.status_code == 422, (body, r.text)
            assert loc in [d["loc"] for d in r.json()["detail"]], r.text
        assert http.get("/v1/monitoring").status_code == 403  # a CRM's key reads no report
    engine = engine_for(loop.server.db_url)
    monitor_key = create_key(engine, "dashboard", ["monitor"])
    engine.dispose()
    with loop.server.client(monitor_key) as http:
        r = http.get("/v1/monitoring", params={"start": "2025-09-01", "end": "2025-08-01"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "start"]
        r = http.get("/v1/monitoring", params={"start": "2024-01-01", "end": "2025-08-01"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["query", "start"]
        assert "at most 366 days" in r.json()["detail"][0]["msg"]
        assert http.get("/v1/monitoring", params=WINDOW).json()["window"] == (
            loop.report["window"])
        assert http.post("/v1/score", json={"leads": [{"lead_id": "x"}]}).status_code == 403
    with loop.server.client() as http:
        assert http.post("/v1/outcomes", json={"outcomes": [good]}).status_code == 401
        assert http.get("/v1/monitoring").status_code == 401


def test_an_outcomes_key_reports_outcomes_and_reads_no_scores(loop: Loop) -> None:
    engine = engine_for(loop.server.db_url)
    key = create_key(engine, "webhook", ["outcomes"])
    engine.dispose()
    with loop.server.client(key) as http:
        r = http.post("/v1/outcomes", json={"outcomes": [
            {"lead_id": "webhook-1", "stage": "won", "at": "2025-09-01", "opportunity_id": "O-9",
             "amount": 1200}]})
        assert r.status_code == 200 and r.json()["stored"] == 1
        lead = {"lead_id": "x", "created_at": "2025-09-01"}
        assert http.post("/v1/score", json={"leads": [lead]}).status_code == 403
        assert http.get("/v1/monitoring").status_code == 403


def _cli(loop: Loop, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROPENSITY_MODELS_DIR": str(loop.server.models_dir),
           "PROPENSITY_DATABASE_URL": loop.server.db_url}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(BIN), *args], env=env, text=True, capture_output=True,
                          cwd=loop.work, timeout=300)


def test_monitor_exits_1_on_drift_and_says_retrain(loop: Loop) -> None:
    args = ["monitor", "--start", WINDOW["start"], "--end", WINDOW["end"]]
    done = _cli(loop, *args, "--fail-on", "drift")
    assert done.returncode == 1, done.stderr
    assert "retrain" in done.stdout and "pricing_page" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr
    strict = _cli(loop, *args, "--fail-on", "calibration", "--band-leads", "50", "--json")
    report = json.loads(strict.stdout)
    # every moved feature, not only the ones the text has room for: the shift's source too
    assert any(f.startswith("source") for f in report["verdict"]["drifted"]), report["verdict"]
    bands = report["performance"]["bands"]
    off = [b for b in bands if b["leads"] >= 50 and b["gap_points"] > 5]
    assert off and strict.returncode == 1, strict.stdout[-2000:]
    assert _cli(loop, *args, "--fail-on", "calibration", "--calibration-points", "99",
                "--band-leads", "50").returncode == 0
    unjudged = _cli(loop, *args, "--fail-on", "calibration", "--calibration-points", "99")
    assert unjudged.returncode == 3, unjudged.stdout[-2000:]  # no band has 200 matured leads
    assert unjudged.stderr.strip().count("\n") == 0
    assert "calibration not judged" in unjudged.stderr
    bad = _cli(loop, *args, "--fail-on", "mood")
    assert bad.returncode == 2 and "--fail-on is drift or calibration" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_monitor_and_the_route_end_the_default_window_on_the_same_day(loop: Loop) -> None:
    """One definition: up to the end of the newest day scored (the replay's, long before
    today), not the end of today for one of them."""
    done = _cli(loop, "monitor", "--start", WINDOW["start"], "--json")
    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    with loop.server.client(create_key(engine_for(loop.server.db_url), "d2", ["monitor"])) as h:
        route = h.get("/v1/monitoring", params={"start": WINDOW["start"]}).json()
    engine = engine_for(loop.server.db_url)
    log = pd.read_sql("SELECT as_of, scored_at FROM score_log WHERE model_name = "
                      "'lead-conversion'", engine)
    engine.dispose()
    at = pd.to_datetime(log["as_of"].fillna(log["scored_at"]), utc=True, format="mixed")
    newest = at.max().normalize() + pd.Timedelta(days=1)
    assert newest < pd.Timestamp.now(tz="UTC").normalize()  # the replay's days, not today
    assert pd.Timestamp(cli["end"]) == pd.Timestamp(route["end"]) == newest
    assert cli["performance"]["overall"] == route["performance"]["overall"]


def test_outcomes_import_is_idempotent(loop: Loop) -> None:
    done = _cli(loop, "outcomes", "import", str(loop.export_dir), "--since", str(CUT.date()))
    assert done.returncode == 0, done.stderr
    assert f"{len(loop.outcomes):,} outcomes read, 0 new" in done.stdout
    missing = _cli(loop, "outcomes", "import", str(loop.work / "nowhere"))
    assert missing.returncode == 1 and "not an export folder" in missing.stderr  # README: 1


def test_monitoring_panel_in_the_browser(loop: Loop, tmp_path: Path) -> None:
    report = loop.report
    with ui_page(loop.server.url, loop.server.admin_key, 2600) as (page, errors):
        page.fill("#monitor-start", WINDOW["start"])
        page.fill("#monitor-end", WINDOW["end"])
        page.click("#connect")
        page.wait_for_function("document.getElementById('verdict').textContent"
                               ".startsWith('to do')", timeout=30_000)
        page.wait_for_function("document.getElementById('status').textContent === 'connected'",
                               timeout=30_000)
        assert page.text_content("#verdict") == "to do: " + ", ".join(
            report["verdict"]["actions"])
        assert page.text_content("#served") == str(report["window"]["served"])
        assert page.text_content("#score-psi") == f"{report['window']['score_psi']:.3f}"
        overall = report["performance"]["overall"]
        assert page.text_content("#realised-precision") == f"{100 * overall['precision']:.1f}%"
        assert page.text_content("#expected-precision") == (
            f"{100 * overall['expected_precision']:.1f}%")
        for chart in ("drift-score-chart", "drift-features-chart", "calibration-chart",
                      "precision-chart"):
            assert page.query_selector(f"#{chart} .plot-container") is not None, chart
        bars = page.eval_on_selector("#drift-features-chart",
                                     "el => el.data[0].y.slice().reverse()")
        assert bars == [f["feature"] for f in report["window"]["features"][:10]]
        assert page.text_content("#champions tr td") == "1"
        panel = tmp_path / "monitoring.png"
        page.locator("#monitoring").screenshot(path=str(tmp_path / "verdict.png"))
        keep_screenshot(page, panel, "monitoring.png")
    assert panel.stat().st_size > 50_000
    assert errors == []


def test_retrain_goes_through_the_gate_and_enters_the_history(loop: Loop) -> None:
    """The champion never saw the shift; a challenger trained on the shifted export ranks its
    holdout (after the shift) better and is promoted. Retrained again on the same data it is
    the same model, which does not beat itself: it stays challenger, exit 1."""
    from propensity.registry import champion_history
    from propensity.settings import Settings

    done = _cli(loop, "retrain", str(loop.export_dir))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("lead-conversion v2 is the champion: beats the champion on the "
                           "same holdout"), done.stdout
    again = _cli(loop, "retrain", str(loop.export_dir))
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr
    line = again.stdout.strip().splitlines()[-1]
    assert line.startswith("lead-conversion v3 stays challenger: v3 does not beat the champion "
                           "v2 on the same holdout"), again.stdout
    history = champion_history("lead-conversion", Settings(models_dir=loop.server.models_dir))
    assert [h["version"] for h in history] == ["2", "1"]
    assert history[0]["champion"] and history[-1]["reason"].startswith("first champion")
