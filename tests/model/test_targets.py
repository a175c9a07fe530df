"""A new model is one `Target` definition: this one ("reaches SQL within 30 days", asked only of
leads below SQL) is defined in `tests/model/toy_target.py`, not in the library, and trained,
registered, promoted, batch-scored and served over HTTP by the library's own flow and the
scorer as they are, with no other module knowing its name."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from propensity.funnel.journeys import build_journeys
from propensity.lifecycle import register_and_gate, train_and_register
from propensity.registry import list_versions, load_model
from propensity.rows import lead_rows
from propensity.scoring import score_export
from propensity.settings import Settings
from propensity.tables import CrmExport
from propensity.targets import ACCOUNT_PROPENSITY, LEAD_CONVERSION, Target, define, forget
from propensity.targets import target_names as defined
from propensity.timestamps import DAY_US, NEVER, to_micros
from tests.conftest import SmallTrained, quick_config
from tests.serving.conftest import start_server
from tests.worlds import request_lead

MODULE = "tests.model.toy_target"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def toy_target() -> Iterator[Target]:
    """The toy target, defined in this process for this test only."""
    target: Target = importlib.import_module(MODULE).TOY
    define(target)
    yield target
    forget(target.name)


def test_a_new_target_is_one_definition(toy_target: Target, small_export: CrmExport,
                                        small_dir: Path, small_trained: SmallTrained,
                                        tmp_path: Path) -> None:
    name = toy_target.name
    assert name in defined()
    settings = Settings(models_dir=tmp_path / "models")
    config = quick_config(model=name, snapshots={"every_days": 14, "horizon_days": 30})
    trained = train_and_register(small_export, config, small_dir, gate="force",
                                 settings=settings)
    assert trained.registered.name == name and trained.promotion is not None
    assert trained.promotion.promoted
    # the labels are the definition's: recomputed here from the journeys, row by row
    holdout = trained.result.holdout
    j = build_journeys(small_export)
    sql_at = pd.Series(j.reached[:, j.stages.index("sql")],
                       index=j.leads["lead_id"].astype(str))
    t = to_micros(holdout["as_of"])
    at = sql_at.loc[holdout["lead_id"].astype(str)].to_numpy()
    expected = ((at != NEVER) & (at > t) & (at <= t + 30 * DAY_US)).astype(int)
    assert (holdout["label"].to_numpy() == expected).all() and 0 < expected.sum() < len(expected)
    # registered under its own name, served by alias, batch-scored as of a time
    assert name in set(list_versions(settings)["model"])
    bundle, version = load_model(name, settings=settings)
    assert bundle.target == name and version == trained.registered.version
    as_of = holdout["as_of"].max()
    scored = score_export(bundle, small_export, as_of)
    open_below = toy_target.entities(small_export, [as_of], 30, labelled=False,
                                     journeys=j)
    assert set(scored["lead_id"]) == set(open_below["lead_id"]) and len(scored) > 0
    assert scored["probability"].between(0, 1).all()
    assert scored["probability"].nunique() > 1  # a model, not a constant
    # served over HTTP beside the lead-conversion champion (a scorer is ready with one)
    register_and_gate(small_trained(LEAD_CONVERSION), small_export, small_dir, gate="always",
                      settings=settings)
    _served_as_batch_scored(toy_target, scored, small_export, tmp_path)


def _served_as_batch_scored(target: Target, scored: pd.DataFrame, export: CrmExport,
                            work: Path) -> None:
    """A scorer that imports the target's module serves it: each lead's HTTP probability is
    its batch probability; a target it cannot serve is refused, named."""
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    server = start_server(work / "models", f"sqlite:///{work / 'scores.db'}", work,
                          env={"PROPENSITY_TARGET_MODULES": json.dumps([MODULE]),
                               "PYTHONPATH": path})
    try:
        batch = scored.sort_values("lead_id").head(40)
        rows = lead_rows(export, batch[["lead_id", "as_of"]])
        body = {"leads": [request_lead(r) for r in rows.to_dict("records")]}
        with server.client(server.score_key) as http:
            answer = http.post(f"/v1/targets/{target.name}/score", json=body)
            unknown = http.post("/v1/targets/reaches-mars/score", json=body)
            accounts = http.post(f"/v1/targets/{ACCOUNT_PROPENSITY}/score", json=body)
            schema = http.get("/openapi.json").json()
        assert answer.status_code == 200, answer.text
        out = answer.json()
        assert out["model"]["name"] == target.name
        got = np.array([s["probability"] for s in out["scores"]])
        assert [s["lead_id"] for s in out["scores"]] == batch["lead_id"].astype(str).tolist()
        assert np.abs(got - batch["probability"].to_numpy()).max() < 1e-9
        assert all(s["reasons"] is not None for s in out["scores"])
        assert unknown.status_code == 404 and "'reaches-mars'" in unknown.json()["detail"]
        assert accounts.status_code == 422, accounts.text
        detail = accounts.json()["detail"][0]
        assert detail["loc"] == ["path", "name"] and ACCOUNT_PROPENSITY in detail["msg"]
        # the schema names the targets served: those with a champion, leads only
        (name,) = schema["paths"]["/v1/targets/{name}/score"]["post"]["parameters"]
        assert name["schema"]["enum"] == [LEAD_CONVERSION, target.name]
    finally:
        assert server.stop()
