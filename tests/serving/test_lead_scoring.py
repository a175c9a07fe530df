"""The scorer's pipeline in-process (`propensity.lead_scoring`), on the registry's champions:
what a lead is answered and what is refused, with no server in the way. The HTTP tests
(`test_score_api.py`) keep what is about HTTP: auth, the wire's 4xx, the fast path, the log."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from propensity.features.online import LeadInputError
from propensity.lead_scoring import LeadScore, read_records, score_read
from propensity.models.bundle import ModelBundle
from propensity.registry import load_model
from propensity.rows import lead_rows
from propensity.settings import Settings
from propensity.thresholds import ThresholdSet, to_score
from serving.schemas import ScoreRequest
from tests.serving.test_score_api import LEAD
from tests.worlds import request_lead

THRESHOLDS = ThresholdSet(mql=60, grade_a=80, grade_b=55, grade_c=30)
NOW = datetime(2025, 6, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def models(registry: Path) -> tuple[ModelBundle, ModelBundle]:
    settings = Settings(models_dir=registry)
    return (load_model("lead-conversion", settings=settings)[0],
            load_model("stage-advancement", settings=settings)[0])


def _parsed(body: dict[str, Any]) -> ScoreRequest:
    """A body as the route parses it (from JSON: times are text there)."""
    return ScoreRequest.model_validate_json(json.dumps(body))


def _score(models: tuple[ModelBundle, ModelBundle], leads: list[dict[str, Any]],
           explain: bool = True) -> list[LeadScore]:
    """Leads as the route has them (a parsed request body), scored."""
    request = _parsed({"leads": leads, "explain": explain})
    read = read_records(models[0], request.leads, NOW, explain=request.explain)
    return score_read([read], THRESHOLDS, models[1])[0].scores


def test_a_lead_gets_its_probability_score_grade_reasons_and_hash(
        models: tuple[ModelBundle, ModelBundle]) -> None:
    other = {"lead_id": "api-2", "created_at": "2025-05-01T10:00:00Z", "source": "never-seen",
             "colour": "green", "as_of": "2025-06-01T00:00:00Z"}
    first, second = _score(models, [LEAD, other])
    assert 0 < first.probability < 1 and first.score == to_score(first.probability)
    assert first.grade == THRESHOLDS.grade(first.score)
    assert first.mql == (first.score >= THRESHOLDS.mql)
    assert first.next_stage is not None and 0 <= first.next_stage <= 1
    assert first.reasons is not None
    pos, neg = first.reasons
    assert [r.impact for r in pos] == sorted((r.impact for r in pos), reverse=True)
    assert all(r.impact > 0 for r in pos) and all(r.impact < 0 for r in neg)
    assert first.as_of == datetime(2025, 6, 1, tzinfo=UTC)
    assert second.lead_id == "api-2" and 0 <= second.probability <= 1  # an unknown source
    # the event at 07-29 is after as_of: the score and the hash of what the model saw are the
    # same without it, while another lead, or the lead as of another day, hashes differently
    [again] = _score(models, [{**LEAD, "events": LEAD["events"][:3]}])
    assert (again.probability, again.input_hash) == (first.probability, first.input_hash)
    assert len(first.input_hash) == 64 and second.input_hash != first.input_hash
    [later] = _score(models, [{**LEAD, "as_of": "2025-06-02"}])
    assert later.input_hash != first.input_hash
    # without as_of a lead is scored as of now; without reasons asked, none
    [now] = _score(models, [{**LEAD, "as_of": None}], explain=False)
    assert now.as_of == NOW and now.reasons is None


def test_leads_scored_together_are_scored_as_each_alone(
        models: tuple[ModelBundle, ModelBundle], small_export: Any) -> None:
    """Two calls read apart and scored in one pass (the batcher's way), one asking for
    reasons and one not: each gets what it gets alone."""
    t = pd.Timestamp("2025-05-01T00:00:00Z")
    ids = small_export.leads[small_export.leads["created_at"] < t]["lead_id"].head(7)
    rows = [request_lead(x) for x in lead_rows(
        small_export, pd.DataFrame({"lead_id": ids, "as_of": t})).to_dict("records")]
    a = _parsed({"leads": rows[:3], "explain": True})
    b = _parsed({"leads": rows[3:], "explain": False})
    together = score_read([read_records(models[0], a.leads, NOW, explain=True),
                           read_records(models[0], b.leads, NOW, explain=False)],
                          THRESHOLDS, models[1])
    alone = [_score(models, rows[:3]), _score(models, rows[3:], explain=False)]
    for joint, single in zip(together, alone, strict=True):
        assert [s.probability for s in joint.scores] == [s.probability for s in single]
        assert [s.input_hash for s in joint.scores] == [s.input_hash for s in single]
        assert [s.reasons for s in joint.scores] == [s.reasons for s in single]
    assert np.array_equal(together[1].probability, [s.probability for s in alone[1]])


REFUSED: list[tuple[dict[str, Any], tuple[str | int, ...], str]] = [
    ({"created_at": None}, (0, "created_at"), "Field required"),
    ({"stage": "hot"}, (0, "stage"), "unknown stage 'hot'"),
    ({"stage_history": [{"stage": "warm", "entered_at": "2025-05-02T00:00:00Z"}]},
     (0, "stage_history", 0, "stage"), "unknown stage 'warm'"),
    ({"as_of": "2025-04-01T00:00:00Z"}, (0, "as_of"), "before the lead was created"),
    ({"created_at": "2030-01-01T00:00:00Z", "as_of": None}, (0, "as_of"), "in the future"),
    ({"events": [*LEAD["events"], {"occurred_at": "2020-01-01T00:00:00Z",
                                   "event_type": "email_open"}]},
     (0, "events", 4, "occurred_at"), "event_before_lead_created"),
    ({"opportunities": [{"created_at": "2025-05-10T00:00:00Z",
                         "closed_at": "2025-05-20T00:00:00Z", "status": "open"}]},
     (0, "opportunities", 0, "closed_at"), "open_with_close_date"),
    ({"opportunities": [{"created_at": "2025-01-10T00:00:00Z",
                         "closed_at": "2025-02-01T00:00:00Z", "status": "won"}]},
     (0, "opportunities", 0, "closed_at"), "conversion_before_lead_created"),
    ({"stage_history": [{"stage": "mql", "entered_at": "2025-05-02T00:00:00Z"},
                        {"stage": "sql", "entered_at": "2024-12-01T00:00:00Z"}]},
     (0, "stage_history", 1, "entered_at"), "stage_before_lead_created"),
    ({"stage_entered_at": "2025-03-01T00:00:00Z"}, (0, "stage_entered_at"),
     "stage_before_lead_created"),
    ({"stage_history": [{"stage": "mql", "entered_at": "2025-05-25T00:00:00Z"},
                        {"stage": "sql", "entered_at": "2025-05-22T00:00:00Z"}]},
     (0, "stage_history", 1, "entered_at"), "stages_out_of_order"),
]


@pytest.mark.parametrize(("change", "loc", "says"), REFUSED,
                         ids=[".".join(map(str, loc[1:])) + f"-{k}"
                              for k, (_, loc, _) in enumerate(REFUSED)])
def test_what_the_contract_refuses_is_named_at_its_field(
        models: tuple[ModelBundle, ModelBundle], change: dict[str, Any],
        loc: tuple[str | int, ...], says: str) -> None:
    """As a parsed request, and as plain records (times as text) as the pyfunc reads them."""
    lead = {**LEAD, **change}
    for leads in (_parsed({"leads": [lead]}).leads, [lead]):
        with pytest.raises(LeadInputError, match=re.escape(says)) as exc:
            read_records(models[0], leads, NOW)
        assert exc.value.loc == loc
        assert str(exc.value).startswith("lead 'api-1': ")


def test_one_score_per_lead_and_time_in_one_call(
        models: tuple[ModelBundle, ModelBundle]) -> None:
    with pytest.raises(LeadInputError, match=r"also leads\[0\]") as exc:
        read_records(models[0], [LEAD, {**LEAD, "source": "web"}], NOW)
    assert exc.value.loc == (1, "lead_id")
    # the same lead as of two times is a backfill, not a duplicate
    assert len(_score(models, [LEAD, {**LEAD, "as_of": "2025-06-02"}])) == 2
    # a lead created a little after as_of (a CRM's clock ahead of ours) is scored
    assert _score(models, [{**LEAD, "events": [], "stage": None,
                            "created_at": "2025-06-01T02:00:00Z"}])


def test_reasons_read_as_words_and_a_family_speaks_once(
        models: tuple[ModelBundle, ModelBundle], small_export: Any) -> None:
    """Leads of the data source with their reasons: no number printed to five places, each
    reason's impact has its list's sign, and no two reasons of one lead speak for one family
    of features (one event type's windows and days since its last)."""
    t = pd.Timestamp("2025-05-01T00:00:00Z")
    ids = small_export.leads[small_export.leads["created_at"] < t]["lead_id"].head(60)
    rows = lead_rows(small_export, pd.DataFrame({"lead_id": ids, "as_of": t}))
    family = re.compile(r"^(?:n_(.+)_(?:\d+d|all)|days_since_(.+))$")
    for s in _score(models, [request_lead(x) for x in rows.to_dict("records")]):
        assert s.reasons is not None
        pos, neg = s.reasons
        assert all(x.impact > 0 for x in pos) and all(x.impact < 0 for x in neg)
        assert not [x.text for x in pos + neg if re.search(r"\d\.\d{3,}", x.text)]
        kinds = [m.group(1) or m.group(2) for x in pos + neg if (m := family.match(x.feature))]
        kinds = ["events" if k == "last_event" else k for k in kinds]
        assert len(kinds) == len(set(kinds)), (pos, neg)


def test_a_lead_gets_its_outlook_from_the_champions_version(
        models: tuple[ModelBundle, ModelBundle], small_export: Any, tmp_path: Path) -> None:
    """How much and when, from the outlook shipped in the lead-conversion bundle: monotone
    horizons, an amount inside its interval, revenue = P(within 90 days) x amount, reasons
    for the amount in the probability's shape; the same read back from the bundle's files;
    left out when not asked for (and the amount's reasons without reasons)."""
    bundle = models[0]
    assert bundle.outlook is not None and bundle.outlook.info["won_leads"] > 0
    t = pd.Timestamp("2025-05-01T00:00:00Z")
    ids = small_export.leads[small_export.leads["created_at"] < t]["lead_id"].head(6)
    rows = [request_lead(x) for x in lead_rows(
        small_export, pd.DataFrame({"lead_id": ids, "as_of": t})).to_dict("records")]
    scores = _score(models, rows)
    for s in scores:
        o = s.outlook
        assert o is not None and list(o.horizons) == [30, 60, 90, 180]
        p = list(o.horizons.values())
        assert all(0 <= a <= b <= 1 for a, b in itertools.pairwise(p)), p
        assert o.expected_days is not None
        assert 0 < o.expected_days <= bundle.outlook.hazard.max_days_
        assert o.amount_low is not None and o.amount_high is not None
        assert o.expected_amount is not None and o.expected_revenue is not None
        assert 0 < o.amount_low < o.amount_high
        assert o.expected_revenue == pytest.approx(o.horizons[90] * o.expected_amount,
                                                   rel=1e-12)
        assert o.amount_reasons is not None
        pos, neg = o.amount_reasons
        assert pos or neg
        assert all(r.impact > 0 for r in pos) and all(r.impact < 0 for r in neg)
    # a lead's outlook differs from lead to lead (it reads the lead's features)
    assert len({s.outlook.expected_amount for s in scores if s.outlook}) > 1
    bundle.save(tmp_path / "bundle")
    again = ModelBundle.load(tmp_path / "bundle")
    read = read_records(again, _parsed({"leads": rows}).leads, NOW)
    assert [s.outlook for s in score_read([read], THRESHOLDS)[0].scores] == [
        s.outlook for s in scores]
    # not asked for: none; asked without reasons: no amount reasons, the same figures
    plain = read_records(bundle, _parsed({"leads": rows}).leads, NOW, outlook=False)
    assert all(s.outlook is None for s in score_read([plain], THRESHOLDS)[0].scores)
    bare = _score(models, rows, explain=False)
    assert all(b.outlook is not None and b.outlook.amount_reasons is None for b in bare)
    assert [b.outlook.horizons for b in bare if b.outlook] == [
        s.outlook.horizons for s in scores if s.outlook]
