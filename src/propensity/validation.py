"""The rules of the data contract, within a table (pandera) and across tables (vectorised joins).

Every rule names what it checks in a short id (`orphan_reference`, `stages_out_of_order`, ...)
that the docs list; reports and tests speak in those ids.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa

from propensity import lead_rules as rules
from propensity.contract import STAGE_HISTORY, TABLES, pandera_schema, stage_rank
from propensity.positions import positions
from propensity.problems import ProblemReport
from propensity.tables import CrmExport, SourceFile
from propensity.timestamps import NEVER, to_micros

_PANDERA_RULES = {
    "not_nullable": ("missing_value", "a value is required"),
    "field_uniqueness": ("duplicate_id", "the id appears more than once"),
}


def validate_export(export: CrmExport) -> ProblemReport:
    """Run every rule; problems go to `export.report` (also returned)."""
    report = export.report
    for name in TABLES:
        frame = export.table(name)
        if frame is None:
            continue
        _check_columns(frame, name, export.files[name], export.stages, report)
        declared = export.manifest.post_outcome_columns(name)
        for col in declared:
            if col not in frame.columns:
                report.note(table=name, file=export.files[name].name, column=col,
                            rule="post_outcome_column_absent", severity="warning",
                            message="declared post-outcome in manifest.json but not in the table")
    lead_pos = {t: export.lead_positions(f["lead_id"])
                for t in ("events", "stage_history", "opportunities")
                if (f := export.table(t)) is not None}
    _check_finite(export, report)
    _check_references(export, report, lead_pos)
    _check_time_order(export, report, lead_pos)
    return report


def _check_finite(export: CrmExport, report: ProblemReport) -> None:
    """An infinite number (inf, -inf, 1e999 in a CSV) in any numeric column, the contract's
    or an attribute: no model has an answer for it (a logistic term of +inf scored 306 of 776
    leads exactly 1.0 in a test export), and the scorer refuses it over HTTP too."""
    for name in TABLES:
        frame = export.table(name)
        if frame is None:
            continue
        for column in frame.columns:
            if pd.api.types.is_float_dtype(frame[column]):
                infinite = np.isinf(frame[column].to_numpy(dtype="float64", na_value=np.nan))
                _add_rows(report, export, name, infinite, str(column), "infinite_number",
                          "an infinite number: a model has no answer for it")


def _check_columns(
    frame: pd.DataFrame, name: str, source: SourceFile, stages: tuple[str, ...],
    report: ProblemReport,
) -> None:
    schema = pandera_schema(TABLES[name], stages)
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        already = report.bad_rows(name)
        for (column, check), group in cases.groupby(["column", "check"], sort=False):
            rule, message = _rule_of(str(column), str(check))
            idx = pd.Index(group["index"].dropna().astype("int64"))
            if rule == "missing_value":
                # a value that failed to parse is already reported as such
                idx = idx.difference(already)
            if len(idx) == 0:
                continue
            report.add(
                table=name, file=source.name, rows=idx, file_rows=source.row_of(idx),
                column=str(column), values=frame.loc[idx, column], rule=rule, message=message,
            )


def _rule_of(column: str, check: str) -> tuple[str, str]:
    if check in _PANDERA_RULES:
        return _PANDERA_RULES[check]
    if check.startswith("isin("):
        if column == "stage":
            return "unknown_stage", "not a configured stage (see manifest.json stages)"
        return "value_not_allowed", f"not an allowed {column}"
    if check.startswith("greater_than_or_equal_to("):  # amount is the one bounded column
        return "negative_amount", "amounts are zero or more"
    return check, check


def _add_rows(report: ProblemReport, export: CrmExport, table: str, mask: np.ndarray,
              column: str, rule: str, message: str) -> None:
    frame = export.table(table)
    assert frame is not None
    if not mask.any():
        return
    idx = frame.index[mask]
    report.add(table=table, file=export.files[table].name, rows=idx,
               file_rows=export.files[table].row_of(idx), column=column,
               values=frame.loc[idx, column], rule=rule, message=message)


def _check_references(export: CrmExport, report: ProblemReport,
                      lead_pos: dict[str, np.ndarray]) -> None:
    for table in ("events", "stage_history", "opportunities"):
        frame = export.table(table)
        if frame is None:
            continue
        ids = frame["lead_id"]
        orphan = ids.notna().to_numpy() & (lead_pos[table] < 0)
        _add_rows(report, export, table, orphan, "lead_id", "orphan_reference",
                  "no lead with this id in leads")
    if export.accounts is not None:
        for table in ("leads", "opportunities"):
            frame = export.table(table)
            if frame is None:
                continue
            ids = frame["account_id"]
            pos = positions(ids, export.accounts["account_id"])
            orphan = ids.notna().to_numpy() & (pos < 0)
            _add_rows(report, export, table, orphan, "account_id", "orphan_reference",
                      "no account with this id in accounts")
    opps = export.opportunities
    if opps is not None:
        unlinked = (opps["lead_id"].isna() & opps["account_id"].isna()).to_numpy()
        _add_rows(report, export, "opportunities", unlinked, "lead_id", "opportunity_unlinked",
                  "an opportunity needs a lead_id or an account_id")


def _earlier_than_lead(export: CrmExport, times: pd.Series, pos: np.ndarray) -> np.ndarray:
    """Rows dated more than the clock skew before their lead's creation (int64 microseconds:
    22 million events compare in a blink, where pandas timestamps take seconds)."""
    created = to_micros(export.leads["created_at"])
    if not len(created):  # no leads: every row is an orphan, named as such elsewhere
        return np.zeros(len(pos), dtype=bool)
    lead = np.where(pos >= 0, created[np.maximum(pos, 0)], NEVER)
    t = to_micros(times)
    return (t != NEVER) & (lead != NEVER) & rules.too_early(t, lead)


def _check_time_order(export: CrmExport, report: ProblemReport,
                      lead_pos: dict[str, np.ndarray]) -> None:
    events = export.events
    if events is not None:
        early = _earlier_than_lead(export, events["occurred_at"], lead_pos["events"])
        _broken(report, export, "events", early, "occurred_at", rules.EVENT_BEFORE_LEAD_CREATED)
    stages = export.stage_history
    if stages is not None:
        early = _earlier_than_lead(export, stages["entered_at"], lead_pos["stage_history"])
        last = export.stages[-1]
        is_customer = (stages["stage"] == last).fillna(False).to_numpy(bool)
        for rows, stage in ((early & is_customer, last), (early & ~is_customer, None)):
            _broken(report, export, "stage_history", rows, "entered_at",
                    rules.stage_entry_rule(stage, last))
        _check_stage_order(export, stages, lead_pos["stage_history"], report)
    opps = export.opportunities
    if opps is not None:
        _check_opportunities(export, opps, lead_pos["opportunities"], report)


def _check_opportunities(export: CrmExport, opps: pd.DataFrame, pos: np.ndarray,
                         report: ProblemReport) -> None:
    status = opps["status"].fillna("").to_numpy(str)
    has_close = opps["closed_at"].notna().to_numpy(bool)
    for rule, rows in (
        (rules.CLOSED_BEFORE_CREATED, rules.closed_before_created(
            opps["created_at"], opps["closed_at"]).fillna(False).to_numpy(bool)),
        (rules.CLOSED_WITHOUT_DATE, rules.closed_without_date(
            np.isin(status, ["won", "lost"]), has_close)),
        (rules.OPEN_WITH_CLOSE_DATE, rules.open_with_close_date(status == "open", has_close)),
        (rules.CONVERSION_BEFORE_LEAD_CREATED, (status == "won") & _earlier_than_lead(
            export, opps["closed_at"], pos)),
    ):
        _broken(report, export, "opportunities", rows, "closed_at", rule)


def _broken(report: ProblemReport, export: CrmExport, table: str, mask: np.ndarray,
            column: str, rule: rules.Rule) -> None:
    _add_rows(report, export, table, mask, column, rule.id, rule.message)


def _check_stage_order(export: CrmExport, stages: pd.DataFrame, pos: np.ndarray,
                       report: ProblemReport) -> None:
    """Per lead, a higher funnel stage must not be entered before a lower one: each row's time
    against the latest time of the lead's rows of lower rank (rows sorted by lead, rank, time
    as integers; no string sort)."""
    rank = stages["stage"].astype("str").map(stage_rank(export.stages)).to_numpy(
        dtype="float64", na_value=np.nan)
    t = to_micros(stages["entered_at"])
    rows = np.flatnonzero(~np.isnan(rank) & (t != NEVER) & (pos >= 0))
    order = rows[np.lexsort((t[rows], rank[rows], pos[rows]))]
    lead, r, when = pos[order], rank[order], t[order]
    latest = pd.Series(when).groupby(lead).cummax().to_numpy()
    same_lead = np.r_[False, lead[1:] == lead[:-1]]
    same_rank = same_lead & np.r_[False, r[1:] == r[:-1]]
    before = np.r_[NEVER, latest[:-1]]  # the latest time of the rows before, same lead
    bad = same_lead & ~same_rank & (when < before)
    if bad.any():
        mask = np.zeros(len(stages), dtype=bool)
        mask[order[bad]] = True
        _broken(report, export, STAGE_HISTORY.name, mask, "stage", rules.STAGES_OUT_OF_ORDER)


def drop_rejected_rows(export: CrmExport) -> None:
    """Remove every row named by an error, then rows that point at a removed lead."""
    report = export.report
    for name in TABLES:
        frame = export.table(name)
        if frame is None:
            continue
        bad = report.bad_rows(name)
        if len(bad):
            setattr(export, name, frame.drop(index=bad.intersection(frame.index)))
    kept = export.leads["lead_id"]
    for name in ("events", "stage_history", "opportunities"):
        frame = export.table(name)
        if frame is None:
            continue
        gone = (frame["lead_id"].notna() & ~frame["lead_id"].isin(kept)).to_numpy(bool)
        if gone.any():
            _add_rows(report, export, name, gone, "lead_id", "lead_rejected",
                      "its lead was rejected")
            setattr(export, name, frame.loc[~gone])
