"""What a push writes: each open lead's probability, score, grade, top reasons and model
version, as the text values of the CRM fields named for them; and, when the fields file names
CRM fields for them, the lead's outlook (P(converted within 90 days), expected days to
convert, expected amount, expected revenue), which existing portals have no property for.

Values are text rounded as a person reads them (a probability to 4 places), so a score that
moves by 1e-9 between two runs is not a change, and nothing is written for it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from propensity.lead_scoring import score_matrix
from propensity.models.bundle import ModelBundle
from propensity.models.reasons import explain
from propensity.problems import PropensityError
from propensity.push.records import Crm, Outgoing
from propensity.scoring import check_export, open_entities, with_outlook
from propensity.tables import CrmExport
from propensity.targets import LEAD, target_named
from propensity.thresholds import ThresholdSet, to_score

REASONS_LENGTH = 255
"""Longest reasons text written: a Salesforce Text field holds 255 characters."""


class PushFields(BaseModel):
    """The CRM field (HubSpot property internal name, Salesforce field API name) each value
    goes to; `object` is the record type written (HubSpot: contacts; Salesforce: Lead)."""

    model_config = ConfigDict(extra="forbid")
    object: str
    probability: str
    score: str
    grade: str
    reasons: str
    model_version: str
    p_by_90: str | None = None
    """Optional, the outlook's (written only when named: a CRM refuses a whole batch that
    names a field it does not have): P(converted within 90 days) to 4 places..."""
    expected_days: str | None = None
    """...the median days to convert among leads like it that will, a whole number..."""
    expected_amount: str | None = None
    """...the expected won amount and..."""
    expected_revenue: str | None = None
    """...P(converted within 90 days) x expected amount, both to the whole currency unit."""

    @model_validator(mode="after")
    def _one_value_a_field(self) -> PushFields:
        """Two values named to one CRM field: the later would overwrite the earlier, silently."""
        named = [(k, v) for k, v in self.model_dump().items() if k != "object" and v is not None]
        seen: dict[str, str] = {}
        for key, field in named:
            if field in seen:
                raise ValueError(f"{key} and {seen[field]} both name the CRM field {field!r}")
            seen[field] = key
        return self

    def outlook(self) -> dict[str, str]:
        """The outlook's column (`scoring.with_outlook`) -> CRM field, for those named."""
        named = {"p_by_90": self.p_by_90, "expected_days": self.expected_days,
                 "expected_amount": self.expected_amount,
                 "expected_revenue": self.expected_revenue}
        return {k: v for k, v in named.items() if v is not None}


DEFAULT_FIELDS: dict[Crm, PushFields] = {
    "hubspot": PushFields(object="contacts", probability="propensity_probability",
                          score="propensity_score", grade="propensity_grade",
                          reasons="propensity_reasons", model_version="propensity_model_version"),
    "salesforce": PushFields(object="Lead", probability="Propensity_Probability__c",
                             score="Propensity_Score__c", grade="Propensity_Grade__c",
                             reasons="Propensity_Reasons__c",
                             model_version="Propensity_Model_Version__c"),
}


def load_fields(crm: Crm, path: Path | None) -> PushFields:
    """The defaults, with the keys of the file's `[hubspot]` or `[salesforce]` table over them."""
    if path is None:
        return DEFAULT_FIELDS[crm]
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get(crm, {})
    except tomllib.TOMLDecodeError as exc:
        raise PropensityError(f"{path}: not valid TOML ({exc})") from None
    try:
        return PushFields.model_validate(DEFAULT_FIELDS[crm].model_dump() | table)
    except ValidationError as exc:
        where = "; ".join(f"[{crm}] {'.'.join(map(str, e['loc']))}: {e['msg']}"
                          for e in exc.errors(include_url=False))
        raise PropensityError(f"{path}: {where}") from None


def outgoing_scores(bundle: ModelBundle, model: str, version: str, export: CrmExport,
                    as_of: pd.Timestamp, thresholds: ThresholdSet, fields: PushFields
                    ) -> list[Outgoing]:
    """Every lead open at T (the batch scorer's entities and matrix), in record-id order: the
    order a push walks, so a resumed run meets the records in the same places."""
    if target_named(bundle.target).entity is not LEAD:
        raise PropensityError(f"{model} scores accounts: push writes lead scores")
    check_export(bundle, export)
    entities = open_entities(bundle, export, as_of).reset_index(drop=True)
    scored = score_matrix(bundle, bundle.features_for_export(export, entities), explain=True)
    assert scored.contributions is not None
    outlook = outlook_values(bundle, model, scored.X, fields)
    names, categories = bundle.feature_names, bundle.categories
    out = []
    for i, lead_id in enumerate(entities["lead_id"].astype(str)):
        positive, _ = explain(names, scored.X[i], scored.contributions[i, :-1], categories)
        s = to_score(float(scored.probability[i]))
        out.append(Outgoing(lead_id, {
            fields.probability: f"{scored.probability[i]:.4f}", fields.score: str(s),
            fields.grade: thresholds.grade(s),
            fields.reasons: "; ".join(r.text for r in positive)[:REASONS_LENGTH],
            fields.model_version: f"{model} v{version}",
            **{field: values[i] for field, values in outlook.items()}}))
    return sorted(out, key=lambda o: o.record_id)


OUTLOOK_FORMATS = {"p_by_90": "{:.4f}", "expected_days": "{:.0f}", "expected_amount": "{:.0f}",
                   "expected_revenue": "{:.0f}"}
"""Text as a person reads it (and as `outgoing_scores` compares it between runs)."""


def outlook_values(bundle: ModelBundle, model: str, X: np.ndarray, fields: PushFields
                   ) -> dict[str, list[str]]:
    """CRM field -> each row's text, for the outlook fields named; blank where a score's
    field is null (no won amount in the model's history; no lead like it converts), which
    clears the CRM's value rather than leave a stale one."""
    wanted = fields.outlook()
    if not wanted:
        return {}
    if bundle.outlook is None:
        raise PropensityError(f"{model} ships no outlook (time to convert, amount): leave "
                              f"{', '.join(sorted(wanted))} out of the fields file")
    table = with_outlook(pd.DataFrame(index=range(len(X))), bundle, X)
    return {field: ["" if np.isnan(x) else OUTLOOK_FORMATS[column].format(x)
                    for x in table[column].to_numpy(dtype="float64")]
            for column, field in wanted.items()}
