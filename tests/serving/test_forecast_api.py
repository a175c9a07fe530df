"""GET /v1/forecast over real HTTP: the library's forecast, cached, and bad input as 4xx."""

from __future__ import annotations

import time

from tests.serving.conftest import Server, answer


def test_forecast_endpoint_serves_the_library_forecast(server: Server) -> None:
    with server.client(server.score_key) as http:
        # the first call fits the forecast models: 202 until they are
        r = answer(http, "/v1/forecast", {"as_of": "2025-07-01", "weeks": 6, "by": "source"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["weeks"] == 6 and len(body["rows"]) == 6 and body["by"] == "source"
        total = body["total"]["customers"]
        assert total["low95"] <= total["low80"] <= total["expected"] <= total["high80"]
        assert sum(g["open_leads"] for g in body["groups"]) == body["open_leads"] > 0
        t0 = time.perf_counter()
        again = http.get("/v1/forecast", params={"as_of": "2025-07-01", "weeks": 6,
                                                 "by": "source"})
        assert again.json() == body and time.perf_counter() - t0 < 2.0  # cached
        for params, field in (({"by": "colour"}, "by"), ({"weeks": 0}, "weeks"),
                              ({"as_of": "2031-01-01"}, "as_of"),
                              # year 0 in UTC: a 500 from the long schemathesis run
                              ({"as_of": "0001-01-01T00:00:00+05:00"}, "as_of")):
            bad = http.get("/v1/forecast", params=params)
            assert bad.status_code == 422 and field in bad.text, (params, bad.text)
    with server.client() as anonymous:
        assert anonymous.get("/v1/forecast").status_code == 401


def test_backtest_endpoint_refuses_bad_input_before_fitting(server: Server) -> None:
    """The backtest fits models once per past quarter: a bad `weeks` or `seed` is a 422 naming
    the field at once, and it needs a key like the forecast."""
    with server.client(server.score_key) as http:
        for params, field in (({"weeks": 0}, "weeks"), ({"weeks": 53}, "weeks"),
                              ({"seed": -1}, "seed")):
            t0 = time.perf_counter()
            bad = http.get("/v1/forecast/backtest", params=params)
            assert bad.status_code == 422 and field in bad.text, (params, bad.text)
            assert time.perf_counter() - t0 < 5.0
    with server.client() as anonymous:
        assert anonymous.get("/v1/forecast/backtest").status_code == 401
