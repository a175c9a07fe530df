"""The /ui forecast panel in a real headless Chromium: it shows the figures GET /v1/forecast and
GET /v1/forecast/backtest answer, and its screenshot is the one docs/forecast.md shows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.browser import keep_screenshot, ui_page
from tests.serving.conftest import Server


def _numbers(text: str | None) -> list[float]:
    """The numbers in a cell ("1,234", "40-51", "45.1 (40-51)", "5.6%"), in order."""
    assert text is not None
    return [float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)]


def _cells(page: Any, tbody: str) -> list[list[str]]:
    return [list(r) for r in page.eval_on_selector_all(
        f"#{tbody} tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")]


def _close(shown: str, *expected: float, digits: int) -> None:
    """The page shows `expected` rounded to `digits` decimals (0: whole units)."""
    got = _numbers(shown)
    assert len(got) == len(expected), (shown, expected)
    for g, e in zip(got, expected, strict=True):
        assert abs(g - e) <= 0.5 * 10 ** -digits + 1e-6, (shown, expected)


def test_forecast_panel_shows_the_api_forecast_and_backtest(server: Server,
                                                            tmp_path: Path) -> None:
    with ui_page(server.url, server.score_key, 1400) as (page, errors):
        assert page.text_content("#fc-customers") == "-"
        page.click("#connect")
        page.wait_for_function("document.getElementById('status').textContent === 'connected'",
                               timeout=30_000)
        page.fill("#forecast-weeks", "8")
        page.click("#forecast-load")
        # the page fits the forecast's models, then the backtest's (one fit per past quarter)
        page.wait_for_function("document.getElementById('backtest-status').textContent === "
                               "'ready' || document.getElementById('backtest-status')"
                               ".className === 'error'", timeout=600_000)
        assert page.text_content("#forecast-status") == ""
        assert page.text_content("#backtest-status") == "ready"
        assert page.query_selector("#forecast-customers-chart .plot-container") is not None
        assert page.query_selector("#forecast-revenue-chart .plot-container") is not None
        assert page.query_selector("#backtest-chart .plot-container") is not None
        weeks = _cells(page, "forecast-rows")
        quarters = _cells(page, "backtest-rows")
        figures = {k: page.text_content(f"#{k}") or "" for k in (
            "fc-open", "fc-customers", "fc-customers-range", "fc-revenue", "fc-inflow",
            "fc-new-customers", "fc-new-revenue", "bt-mape-model", "bt-mape-stage",
            "bt-mape-pipeline", "bt-coverage")}
        box = page.evaluate("""() => {
            const a = document.getElementById('forecast').getBoundingClientRect();
            const b = document.getElementById('backtest').getBoundingClientRect();
            return {x: 0, y: a.top + window.scrollY - 8, width: window.innerWidth,
                    height: b.bottom - a.top + 16}; }""")
        shot = tmp_path / "forecast.png"
        keep_screenshot(page, shot, "forecast.png", clip=box)
    assert shot.stat().st_size > 50_000
    assert errors == []

    with server.client(server.score_key) as http:  # the answers the page read, now cached
        f = http.get("/v1/forecast", params={"weeks": 8}).json()
        b = http.get("/v1/forecast/backtest", params={"weeks": 8}).json()
    t, n = f["total"], f["new_leads"]
    assert f["weeks"] == 8 and len(weeks) == 9 and f["open_leads"] > 0
    assert _numbers(figures["fc-open"]) == [f["open_leads"]]
    _close(figures["fc-customers"], t["customers"]["expected"], digits=1)
    _close(figures["fc-customers-range"], t["customers"]["low80"], t["customers"]["high80"],
           t["customers"]["low95"], t["customers"]["high95"], digits=1)
    _close(figures["fc-revenue"], t["revenue"]["expected"], digits=0)
    _close(figures["fc-inflow"], n["leads_per_day"], digits=1)
    _close(figures["fc-new-customers"], n["total_customers"]["expected"],
           n["total_customers"]["low80"], n["total_customers"]["high80"], digits=1)
    _close(figures["fc-new-revenue"], n["total_revenue"], digits=0)
    for cells, w, apart in zip(weeks, [*f["rows"], t], [*n["customers"],
                               n["total_customers"]["expected"]], strict=True):
        assert cells[0] == str(w["week"] or "total") and cells[1] == w["start"][:10]
        c, r = w["customers"], w["revenue"]
        _close(cells[2], c["expected"], digits=1)
        _close(cells[3], c["low80"], c["high80"], digits=1)
        _close(cells[4], c["low95"], c["high95"], digits=1)
        _close(cells[5], r["expected"], digits=0)
        _close(cells[6], r["low80"], r["high80"], digits=0)
        _close(cells[7], r["low95"], r["high95"], digits=0)
        _close(cells[8], apart, digits=2)

    s = b["summary"]
    assert len(quarters) == len(b["periods"]) == s["periods"] >= 1
    _close(figures["bt-mape-model"], 100 * s["mape_model"], digits=1)
    _close(figures["bt-mape-stage"], 100 * s["mape_stage_rates"], digits=1)
    _close(figures["bt-mape-pipeline"], 100 * s["mape_pipeline"], digits=1)
    _close(figures["bt-coverage"], 100 * s["coverage80"], 100 * s["coverage95"], digits=1)
    for cells, p in zip(quarters, b["periods"], strict=True):
        assert cells[0] == p["start"]
        assert _numbers(cells[1]) == [p["open_leads"]] and _numbers(cells[2]) == [p["actual"]]
        _close(cells[3], p["forecast"], digits=1)
        _close(cells[4], p["low80"], p["high80"], digits=1)
        _close(cells[5], p["low95"], p["high95"], digits=1)
        _close(cells[6], p["stage_rates"], digits=1)
        _close(cells[7], p["pipeline"], digits=1)
        _close(cells[8], p["actual_revenue"], digits=0)
        _close(cells[9], p["forecast_revenue"], digits=0)
        assert p["low95"] <= p["low80"] <= p["forecast"] <= p["high80"] <= p["high95"]
