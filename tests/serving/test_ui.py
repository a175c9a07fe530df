"""The marketing-ops page in a real headless Chromium, driven by Playwright."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from propensity.rows import lead_rows
from tests.browser import CHROMIUM_ARGS, chromium, keep_screenshot, ui_page
from tests.serving.conftest import Server
from tests.worlds import request_lead


def _number(text: str | None) -> float:
    assert text is not None
    return float(re.sub(r"[^0-9.\-]", "", text))


def test_threshold_page_end_to_end(server: Server, tmp_path: Path) -> None:
    with server.client(server.score_key) as http:
        me = http.get("/v1/key").json()
        assert me["scopes"] == ["score"] and me["name"], me
        curve = http.get("/v1/thresholds/curve").json()
        expected_rec = http.post("/v1/thresholds/recommend", json={
            "reps": 3, "leads_per_rep_per_week": 10}).json()
    with ui_page(server.url, server.score_key, 1700) as (page, errors):
        page.click("#connect")
        page.wait_for_function("document.getElementById('status').textContent === 'connected'",
                               timeout=30_000)
        for t in (35, 62):
            page.eval_on_selector("#threshold", f"el => {{ el.value = {t}; "
                                  "el.dispatchEvent(new Event('input')); }")
            point = curve["points"][t]
            assert page.text_content("#threshold-value") == str(t)
            assert abs(_number(page.text_content("#mql-per-week"))
                       - point["flagged_per_week"]) <= 0.05 + 1e-9
            assert abs(_number(page.text_content("#precision"))
                       - 100 * point["precision"]) <= 0.05 + 1e-9
            assert abs(_number(page.text_content("#recall"))
                       - 100 * point["recall"]) <= 0.05 + 1e-9
            assert abs(_number(page.text_content("#expected"))
                       - point["expected_customers_per_week"]) <= 0.005 + 1e-9
        page.fill("#reps", "3")
        page.fill("#per-rep", "10")
        page.click("#recommend")
        page.wait_for_function("document.getElementById('recommendation').textContent"
                               ".startsWith('recommended')")
        text = page.text_content("#recommendation") or ""
        assert text.startswith(f"recommended: {expected_rec['threshold']} ")
        page.click("#use-recommendation")
        assert page.text_content("#threshold-value") == str(expected_rec["threshold"])
        page.fill("#admin-key", server.admin_key)
        page.fill("#reason", "capacity of 3 reps x 10 leads")
        page.click("#save")
        page.wait_for_function("document.getElementById('save-status').textContent"
                               ".startsWith('saved as version')")
        version = int((page.text_content("#save-status") or "").split()[-1])
        page.wait_for_function(f"document.querySelector('#history tr td')?.textContent "
                               f"=== '{version}'")
        assert page.query_selector("#funnel-chart .plot-container") is not None
        assert page.query_selector("#distribution-chart .plot-container") is not None
        # a score key cannot read monitoring: the panel says so, the page asks nothing refused
        assert "needs the monitor scope" in (page.text_content("#verdict") or "")
        assert _empty_text(page, "#drift-score-chart").startswith("the key ")
        shot = tmp_path / "ui.png"
        keep_screenshot(page, shot, "ui.png")
    assert shot.stat().st_size > 50_000
    with server.client(server.score_key) as http:
        active = http.get("/v1/thresholds").json()
    assert active["version"] == version and active["mql"] == expected_rec["threshold"]
    assert active["reason"] == "capacity of 3 reps x 10 leads"
    assert errors == []


def _offline_page(p: Any, url: str, outside: list[str]) -> Any:
    """A page of a Chromium that reaches nothing but the scorer: any other request is
    aborted and recorded (a CDN-loaded Swagger UI then stays blank)."""
    browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    here = urlsplit(url).netloc

    def route(r: Any) -> None:
        if urlsplit(r.request.url).netloc == here or r.request.url.startswith("data:"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return browser, page


def test_docs_and_redoc_render_with_no_network(server: Server) -> None:
    """/docs (Swagger UI) and /redoc draw the API's operations from files the scorer serves
    itself: no request leaves the machine."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as p:
        browser, page = _offline_page(p, server.url, outside)
        try:
            page.goto(f"{server.url}/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            paths = [t.strip() for t in page.locator(".opblock-summary-path").all_inner_texts()]
            assert "/v1/score" in paths and "/v1/accounts/score" in paths, paths
            page.goto(f"{server.url}/redoc")
            page.wait_for_function("document.body.textContent.includes('/v1/accounts/score')",
                                   timeout=30_000)
            assert "Score 1 to 1,000 leads" in (page.text_content("body") or "")
        finally:
            browser.close()
    # ReDoc's "powered by" image is the one thing it asks its CDN for; failing, it is hidden
    assert [u for u in outside if not u.endswith("/redoc/logo-mini.svg")] == [], outside


def _empty_text(page: Any, selector: str) -> str:
    """What an empty chart shows (its ::before), '' once something is drawn in it."""
    return str(page.eval_on_selector(
        selector, "el => el.childElementCount ? '' : "
        "getComputedStyle(el, '::before').content.replace(/^\"|\"$/g, '')"))


def test_the_page_says_what_to_do_and_monitoring_shows_the_latest_scored_period(
        server: Server, small_export: Any, tmp_path: Path) -> None:
    """Before Connect the page says to paste a key, and each chart says it waits for one;
    charts with nothing to draw say "no data yet"; and the monitoring panel (and
    /v1/monitoring) default to the 28 days up to the newest as_of scored, not the wall clock:
    leads scored as of 2025 show up in a scorer running later."""
    with ui_page(server.url, server.admin_key, 2400) as (page, errors):
        assert page.is_visible("#hint")
        assert "Paste an API key" in (page.text_content("#hint") or "")
        for chart in ("#funnel-chart", "#distribution-chart", "#drift-score-chart"):
            assert _empty_text(page, chart).startswith("connect with a key"), chart
        page.click("#connect")
        page.wait_for_function("document.getElementById('status').textContent === 'connected'",
                               timeout=30_000)
        assert not page.is_visible("#hint")
        page.wait_for_function("document.getElementById('monitor-window').textContent !== ''")
        assert _empty_text(page, "#drift-score-chart").startswith("no data yet")
        assert _empty_text(page, "#calibration-chart").startswith("no data yet")
        # leads scored as of a day long past: the default window follows them
        t = pd.Timestamp("2025-05-01T12:00:00Z")
        ids = score_export_ids(small_export, t)
        rows = lead_rows(small_export, pd.DataFrame({"lead_id": ids, "as_of": t}))
        with server.client(server.score_key) as http:
            scored = http.post("/v1/score", json={
                "leads": [request_lead(r) for r in rows.to_dict("records")], "explain": False})
            assert scored.status_code == 200, scored.text
        with server.client(server.admin_key) as http:
            report = http.get("/v1/monitoring").json()
        assert report["start"].startswith("2025-04-04") and report["end"].startswith("2025-05-02")
        assert report["window"]["served"] == len(ids)
        page.click("#monitor-load")
        page.wait_for_selector("#drift-score-chart .plot-container", timeout=30_000)
        assert "2025-04-04 to 2025-05-02" in (page.text_content("#monitor-window") or "")
        assert page.text_content("#served") == str(len(ids))
        keep_screenshot(page, tmp_path / "ui-monitoring.png", "ui-monitoring.png")
    assert errors == []


def score_export_ids(export: Any, t: pd.Timestamp, n: int = 30) -> list[str]:
    """The first `n` leads of the export created before `t` and not yet converted."""
    leads = export.leads
    open_ = leads[(leads["created_at"] < t - pd.Timedelta(days=2))]
    return [str(x) for x in open_["lead_id"].head(n)]
