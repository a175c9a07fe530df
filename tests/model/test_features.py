"""One feature definition, two executors: the batch executor over an export and the online
executor over one lead as a CRM sends it compute the same numbers for every planned column."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from propensity.features.batch import lead_feature_matrix
from propensity.features.definitions import Committee, FeaturePlan
from propensity.features.spec import FeatureSpec, fit_feature_spec
from propensity.lead_input import online_lead
from propensity.rows import lead_rows
from propensity.tables import CrmExport
from tests.worlds import T, to_export, worlds


@pytest.fixture(scope="module")
def plan(small_export: CrmExport) -> FeaturePlan:
    return FeaturePlan(fit_feature_spec(small_export))


def _online(plan: FeaturePlan, export: CrmExport, entities: pd.DataFrame) -> np.ndarray:
    rows = lead_rows(export, entities)
    now = datetime.now(UTC)
    return plan_online(plan).matrix([online_lead(r, now)[0] for r in rows.to_dict("records")])


def plan_online(plan: FeaturePlan):  # type: ignore[no-untyped-def]
    from propensity.features.online import OnlineFeatures

    return OnlineFeatures(plan)


def _assert_same(plan: FeaturePlan, batch: np.ndarray, online: np.ndarray) -> None:
    for i, name in enumerate(plan.names):
        np.testing.assert_allclose(online[:, i], batch[:, i], rtol=1e-12, atol=1e-12,
                                   equal_nan=True, err_msg=name)


def test_every_planned_feature_is_computed_by_both_executors(
    small_export: CrmExport, plan: FeaturePlan,
) -> None:
    """Leads at big accounts, with opportunities and stage histories: every column of the plan
    is produced by both executors, equally, and none is left empty by either."""
    t = pd.Timestamp("2025-04-01 12:00", tz="UTC")
    leads = small_export.leads[small_export.leads["created_at"] < t]
    opps = small_export.opportunities
    assert opps is not None
    open_at_t = (opps["created_at"] < t) & ~(opps["closed_at"] < t)
    lost = opps["status"].astype("str") == "lost"
    ids = leads["lead_id"].astype("str")
    busy = leads["account_id"].map(leads["account_id"].value_counts()).fillna(0) >= 4
    picked = pd.concat([leads[busy].head(25),
                        leads[ids.isin(set(opps["lead_id"][open_at_t].astype("str")))].head(15),
                        leads[ids.isin(set(opps["lead_id"][lost].astype("str")))].head(10),
                        leads[leads["account_id"].isna()].head(10)])
    entities = pd.DataFrame({"lead_id": picked["lead_id"].astype("str").to_numpy(), "as_of": t})
    assert small_export.events is not None
    rare = pd.DataFrame({"lead_id": entities["lead_id"].head(5), "occurred_at": t - pd.Timedelta(
        days=3), "event_type": "a_type_never_seen", "channel": "fax", "value": 2.0})
    export = CrmExport(
        leads=small_export.leads, stage_history=small_export.stage_history, opportunities=opps,
        accounts=small_export.accounts, events=pd.concat([small_export.events.astype(
            {"lead_id": "str", "event_type": "str", "channel": "str"}), rare], ignore_index=True))
    batch = lead_feature_matrix(export, plan, entities)
    online = _online(plan, export, entities)
    assert batch.shape == online.shape == (60, len(plan.columns))
    _assert_same(plan, batch, online)
    assert any(isinstance(f, Committee) for f in plan.families)
    for i, name in enumerate(plan.names):
        assert not np.isnan(batch[:, i]).all(), f"{name} is never computed"
    # the committee sees the other contacts: several engaged contacts, open opportunities
    assert np.nanmax(batch[:, plan.index["account_engaged_contacts"]]) >= 2
    assert np.nanmax(batch[:, plan.index["account_contacts"]]) >= 4
    assert batch[:, plan.index["open_opportunities"]].max() >= 1
    assert batch[:, plan.index["lost_opportunities"]].max() >= 1


def test_the_plan_names_each_column_once_with_its_coding(plan: FeaturePlan) -> None:
    assert len(plan.names) == len(set(plan.names)) == sum(len(f.columns) for f in plan.families)
    assert plan.categories["current_stage"] == list(plan.spec.stages)
    assert all(c.categories[-1] == "__other__" for c in plan.columns
               if c.categories is not None and c.name != "current_stage")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(world=worlds())
def test_executors_agree_on_generated_worlds(spec_of_small: FeatureSpec,
                                             world: dict[str, list[dict[str, object]]]) -> None:
    export = to_export(world)
    plan = FeaturePlan(spec_of_small)
    entities = pd.DataFrame({"lead_id": export.leads["lead_id"].to_numpy(), "as_of": T})
    batch = lead_feature_matrix(export, plan, entities)
    online = _online(plan, export, entities)
    _assert_same(plan, batch, online)


@pytest.fixture(scope="module")
def spec_of_small(small_export: CrmExport) -> FeatureSpec:
    return fit_feature_spec(small_export)


def test_rare_levels_share_one_level_and_ids_are_left_out(small_export: CrmExport) -> None:
    leads = small_export.leads.copy()
    leads["email"] = leads["lead_id"].astype("str") + "@example.com"  # an id: every value once
    leads["noise"] = np.random.default_rng(0).integers(0, 400, len(leads)).astype(str)
    export = CrmExport(leads=leads, events=small_export.events, accounts=small_export.accounts)
    spec = fit_feature_spec(export)
    assert "email" not in spec.lead_categorical and "email" in spec.dropped
    # 4,000 leads over 400 levels: ~10 a level, under the 25 a level needs to be learned
    assert "noise" not in spec.lead_categorical
    owners = spec.lead_categorical["owner_id"]
    assert owners[-1] == "__other__" and len(owners) > 10


def test_a_model_with_accounts_scores_an_export_where_no_lead_has_one(
    small_export: CrmExport, plan: FeaturePlan,
) -> None:
    """Both executors: the committee is unknown (NaN), the lead's own features are there, at one
    time (batch scoring) and at several (training snapshots)."""
    assert plan.spec.has_accounts
    leads = small_export.leads.assign(account_id=pd.NA)
    export = CrmExport(leads=leads, events=small_export.events,
                       stage_history=small_export.stage_history)
    t = pd.Timestamp("2025-04-01 12:00", tz="UTC")
    ids = leads["lead_id"][leads["created_at"] < t].astype("str").head(8).to_numpy()
    for as_of in ([t] * len(ids), [t + pd.Timedelta(days=i) for i in range(len(ids))]):
        entities = pd.DataFrame({"lead_id": ids, "as_of": as_of})
        batch = lead_feature_matrix(export, plan, entities)
        _assert_same(plan, batch, _online(plan, export, entities))
        assert np.isnan(batch[:, plan.index["account_contacts"]]).all()
        assert batch[:, plan.index["n_events_all"]].sum() > 0


def test_event_types_counted_on_codes_match_counting_the_text(small_export: CrmExport) -> None:
    from propensity.features.spec import _value_counts

    events = small_export.events
    assert events is not None
    for name in ("event_type", "channel"):
        column = events[name].dropna()
        if not isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype("category")
        text = column.astype("str").value_counts()
        coded = _value_counts(column)
        assert coded.to_dict() == text.to_dict() and len(coded) > 1, name


def test_rows_given_by_lead_position_read_the_same_features_as_rows_given_by_id(
        small_export: CrmExport, plan: FeaturePlan) -> None:
    """The outlook's rows hand the batch executor their leads' positions and times (as the
    journeys found them) instead of their ids: both ways must read the same matrix."""
    from propensity.features.batch import lead_matrix_at
    from propensity.funnel.journeys import build_journeys
    from propensity.snapshots import open_lead_rows
    from propensity.tables import index_export

    ix = index_export(small_export)
    times = list(pd.date_range("2024-03-01", periods=3, freq="30D", tz="UTC"))
    frame, pos, at = open_lead_rows(build_journeys(ix), times, 30, labelled=False)
    assert len(frame) > 0 and len(set(frame["as_of"])) > 1
    by_id = lead_feature_matrix(ix, plan, frame)
    by_position = lead_matrix_at(ix, plan, pos, at)
    assert np.array_equal(by_id, by_position, equal_nan=True)
    # a position is a lead, not a row number: other leads give another matrix
    assert not np.array_equal(by_id, lead_matrix_at(ix, plan, pos[::-1], at), equal_nan=True)
