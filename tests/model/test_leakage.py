"""Point-in-time correctness: changing the future moves nothing about the past."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propensity.features import build_lead_features, fit_feature_spec
from propensity.features.account import build_account_features
from propensity.features.definitions import FeaturePlan
from propensity.features.spec import FeatureSpec
from propensity.scoring import score_export
from propensity.tables import CrmExport, truncate_export
from propensity.training import train_export
from tests.conftest import SmallTrained, quick_config

TIMES = [pd.Timestamp("2024-09-01", tz="UTC"), pd.Timestamp("2025-03-15 12:34:56", tz="UTC"),
         pd.Timestamp("2025-08-01", tz="UTC")]
EVENT_TYPES = ["page_view", "pricing_page_view", "demo_request", "brand_new_type", "meeting"]
STAGES = ["mql", "sql", "opportunity", "customer", "disqualified", "lost"]


@pytest.fixture(scope="module")
def spec(small_export: CrmExport) -> FeatureSpec:
    return fit_feature_spec(small_export)


def _entities(export: CrmExport, t: pd.Timestamp) -> pd.DataFrame:
    """Every lead created before t (open or not), as of t."""
    leads = export.leads[export.leads["created_at"] < t]
    return pd.DataFrame({"lead_id": leads["lead_id"].astype("str").to_numpy(), "as_of": t})


def _future_times(draw: st.DrawFn, t: pd.Timestamp, n: int) -> list[pd.Timestamp]:
    offsets = draw(st.lists(st.integers(0, 200 * 86_400), min_size=n, max_size=n))
    return [t + pd.Timedelta(seconds=s) for s in offsets]  # offset 0: exactly at t


@st.composite
def futures(draw: st.DrawFn, export: CrmExport, t: pd.Timestamp) -> CrmExport:
    """The same past, with a different future: rows at or after t added, removed or changed."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lead_ids = export.leads["lead_id"].astype("str").to_numpy()
    events = export.events.copy() if export.events is not None else None
    stages = export.stage_history.copy() if export.stage_history is not None else None
    opps = export.opportunities.copy() if export.opportunities is not None else None
    assert events is not None and stages is not None and opps is not None
    events = events.astype({"lead_id": "str", "event_type": "str", "channel": "str"})
    stages = stages.astype({"lead_id": "str", "stage": "str"})
    opps = opps.astype({"status": "str"})
    kinds = draw(st.sets(st.sampled_from(
        ["add_events", "drop_events", "edit_events", "add_stages", "drop_stages",
         "add_opps", "close_opps"]), min_size=1))
    n = draw(st.integers(1, 40))
    if "add_events" in kinds:
        events = pd.concat([events, pd.DataFrame({
            "lead_id": rng.choice(lead_ids, n),
            "occurred_at": pd.Series(_future_times(draw, t, n)).astype(events["occurred_at"].dtype),
            "event_type": rng.choice(EVENT_TYPES, n), "channel": "web",
            "value": rng.uniform(0, 100, n)})], ignore_index=True)
    future_ev = events["occurred_at"] >= t
    if "drop_events" in kinds:
        drop = future_ev & (rng.random(len(events)) < 0.5)
        events = events[~drop.to_numpy()]
        future_ev = events["occurred_at"] >= t
    if "edit_events" in kinds:
        events.loc[future_ev, "event_type"] = "demo_request"
        events.loc[future_ev, "value"] = 1e6
    if "add_stages" in kinds:
        stages = pd.concat([stages, pd.DataFrame({
            "lead_id": rng.choice(lead_ids, n), "stage": rng.choice(STAGES, n),
            "entered_at": pd.Series(_future_times(draw, t, n)).astype(
                stages["entered_at"].dtype)})], ignore_index=True)
    if "drop_stages" in kinds:
        stages = stages[~(stages["entered_at"] >= t).to_numpy()]
    if "add_opps" in kinds:
        created = pd.Series(_future_times(draw, t, n)).astype(opps["created_at"].dtype)
        opps = pd.concat([opps, pd.DataFrame({
            "opportunity_id": [f"future-{i}" for i in range(n)], "lead_id": rng.choice(
                lead_ids, n), "created_at": created, "closed_at": created,
            "amount": 1e6, "status": "lost"})], ignore_index=True)
    if "close_opps" in kinds:
        later = (opps["closed_at"] >= t) | opps["closed_at"].isna()
        later = later & (opps["created_at"] < t)
        opps.loc[later, "status"] = np.where(rng.random(int(later.sum())) < 0.5, "won", "lost")
        opps.loc[later, "closed_at"] = t + pd.Timedelta(days=1)
    return CrmExport(leads=export.leads, events=events.reset_index(drop=True),
                     stage_history=stages.reset_index(drop=True),
                     opportunities=opps.reset_index(drop=True), accounts=export.accounts,
                     manifest=export.manifest)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_changing_the_future_changes_no_feature(small_export: CrmExport, spec: FeatureSpec,
                                                data: st.DataObject) -> None:
    t = data.draw(st.sampled_from(TIMES))
    entities = _entities(small_export, t)
    past = build_lead_features(small_export, spec, entities)
    other = data.draw(futures(small_export, t))
    again = build_lead_features(other, spec, entities)
    pd.testing.assert_frame_equal(past, again, check_exact=True)


def test_the_past_does_move_the_features(small_export: CrmExport, spec: FeatureSpec) -> None:
    """The property above is not vacuous: the same change one second before t shows."""
    t = TIMES[1]
    entities = _entities(small_export, t).head(50)
    assert small_export.events is not None
    extra = pd.DataFrame({"lead_id": entities["lead_id"], "occurred_at": t - pd.Timedelta(
        seconds=1), "event_type": "demo_request", "channel": "web", "value": 1.0})
    events = pd.concat([small_export.events.astype({"lead_id": "str", "event_type": "str",
                                                    "channel": "str"}), extra],
                       ignore_index=True)
    changed = CrmExport(leads=small_export.leads, events=events,
                        stage_history=small_export.stage_history,
                        opportunities=small_export.opportunities,
                        accounts=small_export.accounts, manifest=small_export.manifest)
    before = build_lead_features(small_export, spec, entities)
    after = build_lead_features(changed, spec, entities)
    assert (after["n_demo_request_7d"] == before["n_demo_request_7d"] + 1).all()
    assert (after["days_since_last_event"] < 1e-4).all()


def test_scoring_as_of_t_equals_scoring_the_export_cut_at_t(
        small_export: CrmExport, small_trained: SmallTrained) -> None:
    bundle = small_trained().bundle
    for t in TIMES[1:]:
        full = score_export(bundle, small_export, t)
        cut = score_export(bundle, truncate_export(small_export, t), t)
        assert len(full) > 100
        pd.testing.assert_frame_equal(full, cut, check_exact=True)


def test_features_on_partitions_of_accounts_equal_the_whole(small_export: CrmExport,
                                                            spec: FeatureSpec) -> None:
    t = TIMES[1]
    entities = _entities(small_export, t)
    whole = build_lead_features(small_export, spec, entities)
    leads = small_export.leads
    account = leads["account_id"].astype("str").where(leads["account_id"].notna())
    part_of_lead = pd.Series(np.where(account.isna(), 0, pd.util.hash_pandas_object(
        account.fillna(""), index=False).to_numpy() % 3), index=leads["lead_id"].astype("str"))
    pieces = []
    for part in range(3):
        ids = set(part_of_lead.index[part_of_lead.to_numpy() == part])
        sub = CrmExport(
            leads=leads[leads["lead_id"].astype("str").isin(ids)],
            events=_only(small_export.events, ids), stage_history=_only(
                small_export.stage_history, ids),
            opportunities=_only(small_export.opportunities, ids),
            accounts=small_export.accounts, manifest=small_export.manifest)
        mine = entities[entities["lead_id"].isin(ids)]
        pieces.append(build_lead_features(sub, spec, mine))
    merged = pd.concat(pieces).loc[entities.index]
    assert len({len(p) for p in pieces}) > 1 or len(pieces[0]) > 0
    pd.testing.assert_frame_equal(merged, whole, check_exact=True)


def test_a_few_entities_get_the_rows_they_would_get_among_all(small_export: CrmExport,
                                                              spec: FeatureSpec) -> None:
    """Scoring the few leads open at T reads only their own and their accounts' rows; that
    shortcut must not change a number."""
    t = TIMES[1]
    entities = _entities(small_export, t)
    whole = build_lead_features(small_export, spec, entities)
    few = entities.sample(n=min(25, len(entities)), random_state=3).sort_index()
    some = build_lead_features(small_export, spec, few)
    pd.testing.assert_frame_equal(some, whole.loc[few.index], check_exact=True)
    assert (some["account_contacts"] > 1).any()  # accounts with other contacts are among them


def _only(frame: pd.DataFrame | None, ids: set[str]) -> pd.DataFrame | None:
    if frame is None:
        return None
    return frame[frame["lead_id"].astype("str").isin(ids)]


def test_post_outcome_columns_never_reach_a_model(small_export: CrmExport) -> None:
    manifest = small_export.manifest.model_copy(
        update={"post_outcome": {"leads": ["country", "owner_id"]}})
    export = CrmExport(leads=small_export.leads, events=small_export.events,
                       stage_history=small_export.stage_history,
                       opportunities=small_export.opportunities,
                       accounts=small_export.accounts, manifest=manifest)
    result = train_export(export, quick_config())
    assert "country" not in result.feature_names and "owner_id" not in result.feature_names
    assert "job_function" in result.feature_names
    assert result.bundle.spec is not None and "country" in result.bundle.spec.excluded


def _accounts_at(export: CrmExport, t: pd.Timestamp) -> pd.DataFrame:
    ids = export.leads.loc[export.leads["created_at"] < t, "account_id"].dropna().astype("str")
    return pd.DataFrame({"account_id": ids.unique(), "as_of": t})


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_changing_the_future_changes_no_account_feature(small_export: CrmExport,
                                                        spec: FeatureSpec,
                                                        data: st.DataObject) -> None:
    """An account's numbers (its open leads and their stage too) as of t ignore every event,
    stage (a lead ending at or after t included) and opportunity from t on."""
    plan = FeaturePlan(spec)
    t = data.draw(st.sampled_from(TIMES))
    entities = _accounts_at(small_export, t)
    past = build_account_features(small_export, plan, entities)
    again = build_account_features(data.draw(futures(small_export, t)), plan, entities)
    pd.testing.assert_frame_equal(past, again, check_exact=True)


def test_a_lead_ended_before_t_is_no_longer_open_at_t(small_export: CrmExport,
                                                      spec: FeatureSpec) -> None:
    """The property above is not vacuous: every lead of the accounts disqualified one second
    before t leaves them no open lead; at exactly t they are still open."""
    plan = FeaturePlan(spec)
    t = TIMES[1]
    entities = _accounts_at(small_export, t).head(40)
    leads = small_export.leads[small_export.leads["account_id"].astype("str").isin(
        entities["account_id"]) & (small_export.leads["created_at"] < t)]
    assert small_export.stage_history is not None

    def ended_at(when: pd.Timestamp) -> CrmExport:
        stages = pd.concat([small_export.stage_history.astype({"lead_id": "str", "stage": "str"}),
                            pd.DataFrame({"lead_id": leads["lead_id"].astype("str"),
                                          "stage": "disqualified", "entered_at": when})],
                           ignore_index=True)
        return CrmExport(leads=small_export.leads, events=small_export.events,
                         stage_history=stages, opportunities=small_export.opportunities,
                         accounts=small_export.accounts, manifest=small_export.manifest)

    before = build_account_features(small_export, plan, entities)
    at_t = build_account_features(ended_at(t), plan, entities)
    earlier = build_account_features(ended_at(t - pd.Timedelta(seconds=1)), plan, entities)
    assert (before["n_open_leads"] > 0).any()
    pd.testing.assert_series_equal(at_t["n_open_leads"], before["n_open_leads"])
    assert (earlier["n_open_leads"] == 0).all() and earlier["max_open_stage_index"].isna().all()
    assert (earlier["n_leads"] == before["n_leads"]).all()
