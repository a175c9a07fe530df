"""A single-table champion over HTTP scores a row as `propensity score --table` scores it: one
coding rule for categories and numbers, whatever shape a value arrives in (text from a file,
a JSON number, an unseen category, nothing), and text where the model reads a number ("n/a")
refused by both."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propensity.coding import not_a_number
from propensity.export_reader import fingerprint, read_raw
from propensity.problems import PropensityError
from propensity.registry import log_and_register, promote
from propensity.scoring import check_table_columns, score_table
from propensity.settings import Settings
from propensity.single_table import load_single_table
from propensity.training import train_table
from tests.conftest import quick_config
from tests.serving.conftest import Server, start_server

ORIGINS = ["form", "import", "api", "partner"]
_ids = itertools.count()


@pytest.fixture(scope="module")
def table_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    work = tmp_path_factory.mktemp("table-server")
    rng = np.random.default_rng(3)
    n = 3000
    visits = rng.poisson(3, n)
    origin = rng.choice(ORIGINS, n)
    logit = -2.0 + np.where(origin == "form", np.where(visits >= 4, 2.5, -1.5),
                            np.where(visits >= 4, -1.0, 0.5))
    frame = pd.DataFrame({"id": [f"t{i}" for i in range(n)], "visits": visits, "origin": origin,
                          "code": rng.choice([1, 2, 3], n).astype(str),  # a category of digits
                          "minutes": np.round(rng.gamma(2, 30, n), 1),
                          "won": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)})
    frame.to_csv(work / "table.csv", index=False)
    table = load_single_table(work / "table.csv", "won", id_column="id")
    result = train_table(table, quick_config())
    settings = Settings(models_dir=work / "models")
    log_and_register(result, data={"path": str(work / "table.csv"),
                                   "fingerprint": fingerprint(work / "table.csv")},
                     input_example=table.frame.head(3).drop(columns="won"), settings=settings)
    assert promote("lead-conversion", force=True, settings=settings).promoted
    server = start_server(work / "models", f"sqlite:///{work / 'scores.db'}", work)
    yield server, result.bundle
    server.stop()


numbers = st.one_of(st.none(), st.integers(0, 20), st.floats(0, 500, allow_nan=False),
                    st.sampled_from(["12", " 7 ", "n/a", "", "3.5"]))
categories = st.one_of(st.none(), st.sampled_from([*ORIGINS, "never_seen", ""]))
codes = st.one_of(st.none(), st.sampled_from(["1", "2", "3", "9"]), st.integers(1, 3))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.fixed_dictionaries({"visits": numbers, "origin": categories,
                                            "code": codes, "minutes": numbers}),
                     min_size=1, max_size=8))
def test_a_table_row_scores_the_same_over_http_and_from_a_file(
    table_server: tuple[Server, Any], tmp_path_factory: pytest.TempPathFactory,
    rows: list[dict[str, Any]],
) -> None:
    server, bundle = table_server
    leads = [{"lead_id": f"r{next(_ids)}", **{k: v for k, v in r.items() if v is not None}}
             for r in rows]
    with server.client(server.score_key) as http:
        r = http.post("/v1/score", json={"leads": leads})
    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    pd.DataFrame([{"id": lead["lead_id"], **{k: lead.get(k) for k in rows[0]}}
                  for lead in leads]).to_csv(path, index=False)
    frame, source = read_raw(Path(path))
    text = [(i, k) for i, row in enumerate(rows) for k in ("visits", "minutes")
            if not_a_number(row[k])]
    if text:  # "n/a" where the model reads a number: refused alike, at the first such cell
        i, k = text[0]
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "leads", i, k], r.text
        with pytest.raises(PropensityError, match=r"column (visits|minutes) value .*not a"):
            check_table_columns(bundle, frame, source)
        return
    assert r.status_code == 200, r.text
    via_http = np.array([s["probability"] for s in r.json()["scores"]])
    check_table_columns(bundle, frame, source)
    from_file = score_table(bundle, frame)
    assert list(from_file["id"]) == [lead["lead_id"] for lead in leads]
    assert np.abs(via_http - from_file["probability"].to_numpy()).max() < 1e-9
