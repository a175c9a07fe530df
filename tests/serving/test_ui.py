"""The marketing-ops page in a real headless Chromium, driven by Playwright."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.browser import CHROMIUM_ARGS, chromium, keep_screenshot, ui_page
from tests.serving.conftest import Server


def _number(text: str | None) -> float:
    assert text is not None
    return float(re.sub(r"[^0-9.\-]", "", text))


def test_threshold_page_end_to_end(server: Server, tmp_path: Path) -> None:
    with server.client(server.score_key) as http:
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
