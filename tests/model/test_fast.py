"""The one-lead fast path gives the batch pipeline's numbers, to the last digit we can ask for."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from propensity.models.bundle import ModelBundle, from_training
from propensity.models.fast import FastScorer, LeadInput
from propensity.models.online import example_rows, rows_to_export, score_rows
from propensity.scoring import score_export_frame
from propensity.tables import CrmExport
from propensity.training import train_export
from tests.conftest import quick_config


@pytest.fixture(scope="module")
def bundle(small_export: CrmExport) -> ModelBundle:
    return from_training(train_export(small_export, quick_config()), "export")


def _inputs(rows: pd.DataFrame) -> list[LeadInput]:
    out = []
    for r in rows.to_dict("records"):
        events = [(pd.Timestamp(e["occurred_at"]).to_pydatetime(), e["event_type"],
                   e.get("channel"), e.get("value")) for e in json.loads(r["events"])]
        attrs = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()
                 if k not in ("events", "as_of", "created_at", "lead_id", "stage",
                              "stage_entered_at", "account", "stage_history")}
        history = [(h["stage"], pd.Timestamp(h["entered_at"]).to_pydatetime())
                   for h in json.loads(r.get("stage_history") or "[]")]
        out.append(LeadInput(
            lead_id=r["lead_id"], created_at=pd.Timestamp(r["created_at"]).to_pydatetime(),
            as_of=pd.Timestamp(r["as_of"]).to_pydatetime(), attributes=attrs, events=events,
            stage=r.get("stage"), account=r.get("account"), stage_history=history,
            stage_entered_at=None if pd.isna(r.get("stage_entered_at")) else pd.Timestamp(
                r["stage_entered_at"]).to_pydatetime()))
    return out


def test_fast_features_equal_batch_features(small_export: CrmExport, bundle: ModelBundle) -> None:
    t = pd.Timestamp("2025-04-01", tz="UTC")
    leads = small_export.leads[small_export.leads["created_at"] < t].sample(200, random_state=1)
    # one lead per account: a request scores each lead on its own
    leads = leads[leads["account_id"].isna() | ~leads["account_id"].duplicated()].head(60)
    entities = pd.DataFrame({"lead_id": leads["lead_id"].astype("str").to_numpy(), "as_of": t})
    rows = example_rows(small_export, entities, limit=60)
    rng = np.random.default_rng(0)
    rows["stage"] = rng.choice(["lead", "mql", "sql", None, "disqualified"], len(rows))
    rows["stage_entered_at"] = [None if i % 3 else "2025-03-01T10:00:00" for i in range(len(rows))]
    assert small_export.accounts is not None
    acc = small_export.accounts.set_index("account_id")
    rows["account"] = [None if pd.isna(a) or a == "nan" else
                       {k: (v if not hasattr(v, "item") else v.item())
                        for k, v in acc.loc[a].to_dict().items()} for a in rows["account_id"]]
    rows.loc[rows["account_id"] == "nan", "account_id"] = None
    export, ents = rows_to_export(rows)
    X_batch = bundle.features_for_export(export, ents)
    fast = FastScorer(bundle)
    X_fast = np.vstack([fast.features(lead) for lead in _inputs(rows)])
    for i, name in enumerate(bundle.feature_names):
        col = X_batch[name]
        expected = (col.cat.codes.to_numpy().astype(float) if isinstance(
            col.dtype, pd.CategoricalDtype) else col.to_numpy(dtype="float64"))
        if isinstance(col.dtype, pd.CategoricalDtype):
            expected[expected < 0] = np.nan
        np.testing.assert_array_equal(X_fast[:, i], expected, err_msg=name)
    p_fast = fast.predict(X_fast)
    p_batch = score_rows(bundle, rows)["probability"].to_numpy()
    assert np.abs(p_fast - p_batch).max() < 1e-12
    assert p_fast.std() > 0.01  # the leads differ, and so do their scores


def test_fast_equals_batch_scoring_of_the_export_for_a_lone_lead(
    small_export: CrmExport, bundle: ModelBundle,
) -> None:
    """Leads alone on their account, with no opportunity: the export and a request agree."""
    t = pd.Timestamp("2025-04-01", tz="UTC")
    scored = score_export_frame(bundle, small_export, t)
    leads = small_export.leads.set_index("lead_id")
    per_account = small_export.leads["account_id"].value_counts()
    assert small_export.opportunities is not None
    with_opps = set(small_export.opportunities["lead_id"].astype("str"))
    lone = [lid for lid in scored["lead_id"] if lid not in with_opps and (
        pd.isna(leads.loc[lid, "account_id"]) or per_account[leads.loc[lid, "account_id"]] == 1)]
    assert len(lone) >= 10
    entities = pd.DataFrame({"lead_id": lone[:40], "as_of": t})
    rows = example_rows(small_export, entities, limit=40)
    # example_rows carries each lead's stage history before t, as a CRM would send it
    acc = small_export.accounts.set_index("account_id") if small_export.accounts is not None \
        else None
    rows["account"] = [None if acc is None or a in (None, "nan") or pd.isna(a) else {
        k: (v.item() if hasattr(v, "item") else v) for k, v in acc.loc[a].to_dict().items()}
        for a in rows["account_id"]]
    rows.loc[rows["account_id"] == "nan", "account_id"] = None
    fast = FastScorer(bundle)
    p_fast = fast.predict(np.vstack([fast.features(x) for x in _inputs(rows)]))
    expected = scored.set_index("lead_id").loc[rows["lead_id"], "probability"].to_numpy()
    assert np.abs(p_fast - expected).max() < 1e-9
