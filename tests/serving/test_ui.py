"""The marketing-ops page in a real headless Chromium, driven by Playwright."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.serving.conftest import Server

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("PROPENSITY_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (Debian package chromium) and missing")
        pytest.skip("no Chromium on this machine: apt-get install chromium")
    return found


def _number(text: str | None) -> float:
    assert text is not None
    return float(re.sub(r"[^0-9.\-]", "", text))


def test_threshold_page_end_to_end(server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with server.client(server.score_key) as http:
        curve = http.get("/v1/thresholds/curve").json()
        expected_rec = http.post("/v1/thresholds/recommend", json={
            "reps": 3, "leads_per_rep_per_week": 10}).json()
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/ui")
        page.fill("#key", server.score_key)
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
        page.screenshot(path=str(shot), full_page=True)
        target = os.environ.get("PROPENSITY_SCREENSHOTS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(target) / "ui.png")
        browser.close()
    assert shot.stat().st_size > 50_000
    with server.client(server.score_key) as http:
        active = http.get("/v1/thresholds").json()
    assert active["version"] == version and active["mql"] == expected_rec["threshold"]
    assert active["reason"] == "capacity of 3 reps x 10 leads"
    assert errors == []
