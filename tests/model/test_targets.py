"""A new model is one `Target` definition: this one ("reaches SQL within 30 days", asked only of
leads below SQL) is defined here, in the test, and trained, registered, promoted and
batch-scored by the library's own flow, with no other module knowing its name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from propensity.funnel.journeys import Journeys, build_journeys
from propensity.lifecycle import train_and_register
from propensity.registry import list_versions, load_model
from propensity.scoring import score_export
from propensity.settings import Settings
from propensity.snapshots import SnapshotConfig, lead_entities
from propensity.tables import CrmExport
from propensity.targets import LEAD, Target, define, forget, target_names
from propensity.timestamps import DAY_US, NEVER, to_micros
from tests.conftest import quick_config

NAME = "reaches-sql-30d"
SQL = "sql"


def reaches_sql(j: Journeys, rows: np.ndarray, stage: np.ndarray, t: int, h: int) -> np.ndarray:
    at = j.reached[rows, j.stages.index(SQL)]
    return (at != NEVER) & (at > t) & (at <= t + h)


def below_sql(target: Target, export: CrmExport, times: list[pd.Timestamp],
              horizon_days: int, *, journeys: Journeys | None, labelled: bool,
              snapshots: SnapshotConfig | None, stale_days: int | None) -> pd.DataFrame:
    """Open leads that have not reached SQL yet: the only ones the question is about."""
    frame = lead_entities(export, times, horizon_days, journeys=journeys, labelled=labelled,
                          config=snapshots, stale_days=stale_days,
                          labels={target.label: reaches_sql})
    return frame[frame["stage_index"] < export.stages.index(SQL)].reset_index(drop=True)


@pytest.fixture
def toy_target() -> Iterator[Target]:
    target = define(Target(NAME, LEAD, "reached_sql", ("SQLs", "leads that never reached SQL"),
                           below_sql))
    yield target
    forget(NAME)


def test_a_new_target_is_one_definition(toy_target: Target, small_export: CrmExport,
                                        small_dir: Path, tmp_path: Path) -> None:
    assert NAME in target_names()
    settings = Settings(models_dir=tmp_path / "models")
    config = quick_config(model=NAME, snapshots={"every_days": 14, "horizon_days": 30})
    trained = train_and_register(small_export, config, small_dir, gate="force",
                                 settings=settings)
    assert trained.registered.name == NAME and trained.promotion is not None
    assert trained.promotion.promoted
    # the labels are the definition's: recomputed here from the journeys, row by row
    holdout = trained.result.holdout
    j = build_journeys(small_export)
    sql_at = pd.Series(j.reached[:, j.stages.index(SQL)], index=j.leads["lead_id"].astype(str))
    t = to_micros(holdout["as_of"])
    at = sql_at.loc[holdout["lead_id"].astype(str)].to_numpy()
    expected = ((at != NEVER) & (at > t) & (at <= t + 30 * DAY_US)).astype(int)
    assert (holdout["label"].to_numpy() == expected).all() and 0 < expected.sum() < len(expected)
    # registered under its own name, served by alias, batch-scored as of a time
    assert NAME in set(list_versions(settings)["model"])
    bundle, version = load_model(NAME, settings=settings)
    assert bundle.target == NAME and version == trained.registered.version
    as_of = holdout["as_of"].max()
    scored = score_export(bundle, small_export, as_of)
    open_below = below_sql(toy_target, small_export, [as_of], 30, journeys=None,
                           labelled=False, snapshots=None, stale_days=None)
    assert set(scored["lead_id"]) == set(open_below["lead_id"]) and len(scored) > 0
    assert scored["probability"].between(0, 1).all()
    assert scored["probability"].nunique() > 1  # a model, not a constant
