"""The marketing-ops page in a real headless Chromium, driven by Playwright."""

from __future__ import annotations

import re
from pathlib import Path

from tests.browser import keep_screenshot, ui_page
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
