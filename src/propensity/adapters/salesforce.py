"""Salesforce weekly Data Export (Setup -> Data Export: one CSV per object, headed by API field
names) -> a CRM export.

What goes where: a Lead is a lead; a Contact is a lead too (an account member), unless a lead
was converted into it, in which case its activities are that lead's. Stage history comes from
`LeadHistory` rows of the `Status` field (mapped by `DEFAULT_LEAD_STATUS` or the TOML file)
and from the opportunity a lead was converted into: `opportunity` when it was created,
`customer` / `lost` when `OpportunityHistory` dates its close. Tasks and Events of a lead or
contact are events; a campaign response (`CampaignMember.HasResponded`) is a
`campaign_response` event at the end of `FirstRespondedDate` (a date), and the campaign a lead
was a member of when it was created is its `campaign`.

The traps: `Status`, `Rating`, `IsConverted` and the `Converted*` fields are values as of the
export (a converted lead's status says it bought); a lead's `ConvertedAccountId` exists only
for converted leads, so it is not the lead's account (the account comes from the lookup named
in the mapping, `Account__c` by default); `CloseDate` of an open opportunity is a forecast.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from propensity.adapters._result import ImportResult
from propensity.adapters.crm_mapping import (
    DEFAULT_DEAL_STAGE,
    DEFAULT_LEAD_STATUS,
    NOT_A_STAGE,
    OPPORTUNITY_COLUMNS,
    CrmMapping,
    FieldRule,
    Ledger,
    Source,
    activity_events,
    build_stage_history,
    field_rules,
    keep_linked_accounts,
    link_column,
    load_mapping,
    mapped_fields,
    numbers,
    opportunity_stages,
    parse_times,
    read_object,
    refuse_unlinked,
    source_column,
    stage_candidates,
    take_fields,
    write_import,
)
from propensity.contract import DEFAULT_STAGES
from propensity.problems import PropensityError

FIELD_DEFAULTS = {"Lead": {"Account__c": "account_id"}}


SYSTEM = ("IsDeleted CreatedById LastModifiedById LastModifiedDate SystemModstamp MasterRecordId "
          "Jigsaw JigsawContactId CleanStatus PhotoUrl GeocodeAccuracy Latitude Longitude "
          "CompanyDunsNumber DandbCompanyId IndividualId RecordTypeId CurrencyIsoCode")
PERSON = ("FirstName LastName Name Salutation MiddleName Suffix Email Phone MobilePhone Fax "
          "Website Street City PostalCode Company Description Address HomePhone OtherPhone "
          "AssistantName AssistantPhone Birthdate MailingStreet MailingCity MailingPostalCode "
          "OtherStreet OtherCity OtherPostalCode OtherCountry OtherState ReportsToId")
AS_OF_EXPORT = "its value is the one at export time"
ACTIVITY_SNAPSHOTS = {
    "LastActivityDate": "the latest activity as of the export (activities are events)",
    "LastViewedDate": AS_OF_EXPORT, "LastReferencedDate": AS_OF_EXPORT,
    "LastTransferDate": AS_OF_EXPORT, "IsUnreadByOwner": AS_OF_EXPORT,
    "EmailBouncedDate": AS_OF_EXPORT, "EmailBouncedReason": AS_OF_EXPORT,
    "LastCURequestDate": AS_OF_EXPORT, "LastCUUpdateDate": AS_OF_EXPORT,
}
LEAD_RULES = field_rules(
    {"Id": "lead_id", "CreatedDate": "created_at", "LeadSource": "source", "OwnerId": "owner_id"},
    {"Country": "country", "State": "state", "Industry": "industry",
     "NumberOfEmployees": "employees", "AnnualRevenue": "annual_revenue", "Title": "title"},
    {"Status": "the current status; its dated changes come from LeadHistory",
     "Rating": "filled in by sales as they learn the lead's chances",
     "IsConverted": "set when the lead converts: it says the outcome",
     "ConvertedDate": "set when the lead converts (the conversion is dated by LeadHistory and "
                      "the opportunity)",
     "ConvertedAccountId": "exists only for converted leads: it says the outcome",
     "ConvertedContactId": "set at conversion (used only to give the contact's activities to "
                           "the lead)",
     "ConvertedOpportunityId": "set at conversion (used only to link the opportunity)",
     **ACTIVITY_SNAPSHOTS},
    PERSON.split(), SYSTEM.split())
CONTACT_RULES = field_rules(
    {"Id": "lead_id", "CreatedDate": "created_at", "LeadSource": "source", "OwnerId": "owner_id",
     "AccountId": "account_id"},
    {"MailingCountry": "country", "MailingState": "state", "Title": "title",
     "Department": "department"},
    {"HasOptedOutOfEmail": AS_OF_EXPORT, **ACTIVITY_SNAPSHOTS}, PERSON.split(), SYSTEM.split())
ACCOUNT_IDENTITY = (
    "Name", "Phone", "Fax", "Website", "BillingStreet", "BillingCity", "BillingPostalCode",
    "ShippingStreet", "ShippingCity", "ShippingPostalCode", "ShippingState", "ShippingCountry",
    "Description", "AccountNumber", "Site", "TickerSymbol", "ParentId", "Sic", "SicDesc",
    "NaicsCode", "NaicsDesc")
ACCOUNT_RULES = field_rules(
    {"Id": "account_id"},
    {"Industry": "industry", "NumberOfEmployees": "employees", "AnnualRevenue": "annual_revenue",
     "BillingCountry": "country", "BillingState": "state", "Ownership": "ownership",
     "AccountSource": "account_source"},
    {"Type": "Customer vs Prospect: changes when the account buys",
     "Rating": "filled in by sales as they learn the account's chances", **ACTIVITY_SNAPSHOTS},
    ACCOUNT_IDENTITY,
    [*SYSTEM.split(), "CreatedDate"])
OPPORTUNITY_RULES = field_rules(
    {"Id": "opportunity_id", "AccountId": "account_id", "CreatedDate": "created_at",
     "Amount": "amount", "OwnerId": "owner_id"},
    {},
    {"IsClosed": "read from the dated stage (OpportunityHistory) instead",
     "IsWon": "read from the dated stage (OpportunityHistory) instead",
     "Probability": "follows the current stage", "ForecastCategory": "follows the current stage",
     "ForecastCategoryName": "follows the current stage",
     "ExpectedRevenue": "follows the current stage", "NextStep": AS_OF_EXPORT,
     **ACTIVITY_SNAPSHOTS},
    ["Name", "Description"], SYSTEM.split(),
    {"StageName": "opportunities.status: mapped to open/won/lost; dated by OpportunityHistory",
     "CloseDate": "opportunities.closed_at: only for a closed opportunity with no "
                  "OpportunityHistory row (a date: the end of that day; listed in repairs.csv)"})
HAND_READ = {
    "LeadHistory": {"LeadId": "stage_history.lead_id", "CreatedDate": "stage_history.entered_at",
                    "Field": "only Status changes are stages",
                    "OldValue": "the status a lead was created with (first change)",
                    "NewValue": "stage_history.stage (by the mapping)"},
    "OpportunityHistory": {"OpportunityId": "opportunities", "CreatedDate":
                           "opportunities.closed_at (when the stage closed)",
                           "StageName": "opportunities.status (by the mapping)"},
    "Campaign": {"Id": "leads.campaign", "Name": "leads.campaign (the name)"},
}
"""Files read row by row rather than field by field: what each column is used for."""
UNKNOWN_STANDARD = FieldRule("left out", reason="a standard field not known to be fixed at "
                             "creation; --allow-snapshot FIELD takes it as an attribute")


def _unknown(name: str) -> FieldRule:
    return FieldRule("attribute") if name.endswith("__c") else UNKNOWN_STANDARD


def _object_rules(obj: str, base: dict[str, FieldRule], columns: list[str],
                  mapping: CrmMapping, allowed: set[str]) -> dict[str, FieldRule]:
    """The object's rules, with custom fields as attributes, the mapping file's fields laid
    over them, and unknown standard fields allowed by name taken as attributes."""
    rules = dict(base)
    for name in columns:
        if name not in rules:
            rule = _unknown(name)
            if rule is UNKNOWN_STANDARD and name in allowed:
                rule = FieldRule("attribute", reason="allowed by --allow-snapshot")
            rules[name] = rule
    return mapped_fields(rules, mapping, obj)


SOURCE_OBJECTS = ("Lead", "Contact", "Account", "Opportunity", "OpportunityHistory",
                  "LeadHistory", "Task", "Event", "CampaignMember", "Campaign")
"""The objects of a Data Export this import reads (each CSV optional but Lead or Contact)."""


class _Fields:
    """Takes the contract's fields out of one object's CSV, remembering which
    `--allow-snapshot` names matched a field so the others can be reported as unused."""

    def __init__(self, srcs: dict[str, Source | None], mapping: CrmMapping,
                 allow_snapshot: tuple[str, ...] | list[str], ledger: Ledger) -> None:
        self.srcs, self.mapping, self.allow_snapshot, self.ledger = (
            srcs, mapping, allow_snapshot, ledger)
        self.used_allow: set[str] = set()

    def __call__(self, obj: str, table: str, base: dict[str, FieldRule],
                 attributes: bool = True) -> tuple[Source, pd.DataFrame] | None:
        """The object's CSV and its fields for `table`; None when the export has no such CSV."""
        src = self.srcs[obj]
        if src is None:
            return None
        # `Rating` allows the field on every object, `Lead.Rating` on Lead only
        mine = {a.split(".", 1)[-1]: a for a in self.allow_snapshot
                if "." not in a or a.startswith(f"{obj}.")}
        self.used_allow.update(a for f, a in mine.items() if f in src.frame.columns)
        rules = _object_rules(obj, base, list(src.frame.columns), self.mapping, set(mine))
        return src, take_fields(src.frame, src.name, table, rules, FieldRule("left out"),
                                set(mine), self.ledger, attributes)


def _events(srcs: dict[str, Source | None], who: dict[str, str], ledger: Ledger,
            created: pd.Series) -> pd.DataFrame:
    """Tasks, meetings and campaign responses as events, per lead in time order."""
    events = pd.concat([
        activity_events(srcs["Task"], who, ledger, _task_times, "TaskSubtype",
                        "CallDurationInSeconds", "task", created=created),
        activity_events(srcs["Event"], who, ledger, _event_times, "EventSubtype",
                        "DurationInMinutes", "meeting", created=created),
        _responses(srcs["CampaignMember"], who, ledger)], ignore_index=True)
    return events.sort_values(["lead_id", "occurred_at"], kind="stable").reset_index(drop=True)


def _stage_candidates(opp_stages: pd.DataFrame, srcs: dict[str, Source | None],
                      leads: pd.DataFrame, mapping: CrmMapping, ledger: Ledger
                      ) -> list[pd.DataFrame]:
    """Dated stage entries from opportunities, the lead status history (when exported) and
    the statuses with no dated entry."""
    candidates = [opp_stages]
    if srcs["LeadHistory"] is not None:
        candidates.append(_lead_history(srcs["LeadHistory"], leads, mapping, ledger))
    candidates.append(_undated_status(srcs["Lead"], srcs["LeadHistory"], leads, mapping, ledger))
    return candidates


def _tables(srcs: dict[str, Source | None], leads: pd.DataFrame, accounts: pd.DataFrame,
            events: pd.DataFrame, stage_history: pd.DataFrame, opps: pd.DataFrame
            ) -> dict[str, pd.DataFrame | None]:
    """The contract tables; one no exported object feeds is None (unknown), not empty."""
    has = {name: srcs[name] is not None for name in srcs}
    return {"leads": leads, "accounts": accounts if has["Account"] else None,
            "events": events if has["Task"] or has["Event"] or has["CampaignMember"]
            else None,
            "stage_history": stage_history.sort_values(["lead_id", "entered_at"],
                                                       kind="stable"),
            "opportunities": opps if has["Opportunity"] else None}


def _note_hand_read(srcs: dict[str, Source | None], ledger: Ledger) -> None:
    """Account in the ledger for the fields of objects read by hand (`HAND_READ`)."""
    for name, used in HAND_READ.items():
        if (src := srcs[name]) is not None:
            ledger.fields_of(src, used)


def import_salesforce(directory: Path, out_dir: Path, mapping_file: Path | None = None,
                      allow_snapshot: tuple[str, ...] | list[str] = ()) -> ImportResult:
    """Map a Salesforce Data Export folder into the contract at `out_dir`."""
    directory = Path(directory)
    if not (directory / "Lead.csv").exists() and not (directory / "Contact.csv").exists():
        raise PropensityError(f"{directory}: no Lead.csv or Contact.csv (a Salesforce Data "
                              "Export folder holds one CSV per object)")
    mapping = load_mapping(mapping_file, "salesforce",
                           {"lead_status": DEFAULT_LEAD_STATUS, "deal_stage": DEFAULT_DEAL_STAGE},
                           FIELD_DEFAULTS)
    ledger = Ledger()
    srcs = {name: read_object(directory / f"{name}.csv", ledger) for name in SOURCE_OBJECTS}
    fields = _Fields(srcs, mapping, allow_snapshot, ledger)
    accounts = _accounts(fields("Account", "accounts", ACCOUNT_RULES), ledger)
    leads, who = _leads(fields("Lead", "leads", LEAD_RULES), fields("Contact", "leads",
                        CONTACT_RULES), srcs, accounts, ledger)
    leads = _campaigns(leads, srcs, ledger)
    opps, opp_stages = _opportunities(fields("Opportunity", "opportunities", OPPORTUNITY_RULES,
                                             attributes=False),
                                      srcs, who, accounts, mapping, ledger)
    candidates = _stage_candidates(opp_stages, srcs, leads, mapping, ledger)
    sources = {s.name: s.source for s in srcs.values() if s is not None}
    created = leads.set_index("lead_id")["created_at"]
    stage_history = build_stage_history(pd.concat(candidates, ignore_index=True),
                                        DEFAULT_STAGES, ledger, sources, created)
    events = _events(srcs, who, ledger, created)
    tables = _tables(srcs, leads, accounts, events, stage_history, opps)
    unused = [a for a in allow_snapshot if a not in fields.used_allow]
    notes = [f"--allow-snapshot {a}: no such field in the export" for a in unused]
    notes += ledger.unused_files(srcs, directory)
    _note_hand_read(srcs, ledger)
    return write_import(out_dir, tables, ledger, f"Salesforce Data Export {directory.name} via "
                        "propensity import salesforce", notes)


def _accounts(taken: tuple[Source, pd.DataFrame] | None, ledger: Ledger) -> pd.DataFrame:
    if taken is None:
        return pd.DataFrame(columns=["account_id"])
    src, frame = taken
    keep = refuse_unlinked(src, frame, "account_id", "Id", ledger)
    ledger.count(src.name, len(src.frame), int(keep.sum()))
    return frame[keep].reset_index(drop=True)


def _leads(lead: tuple[Source, pd.DataFrame] | None, contact: tuple[Source, pd.DataFrame] | None,
           srcs: dict[str, Source | None], accounts: pd.DataFrame, ledger: Ledger,
           ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Leads and contacts that are no converted lead; `who` maps every lead, contact and
    converted contact id to the lead it belongs to."""
    parts: list[pd.DataFrame] = []
    who: dict[str, str] = {}
    converted: dict[str, str] = {}
    for taken in (lead, contact):
        if taken is None:
            continue
        src, frame = taken
        frame = frame.copy()
        frame["created_at"] = parse_times(src.frame["CreatedDate"], src.source, "CreatedDate",
                                          ledger, src.frame["Id"])
        keep = refuse_unlinked(src, frame, "lead_id", "Id", ledger) & frame["created_at"].notna()
        if taken is contact:
            merged = frame["lead_id"].isin(list(converted)) & keep
            ledger.explain(src.name, "contacts a lead was converted into (their activities "
                           "are the lead's)", int(merged.sum()))
            who |= {c: converted[c] for c in frame.loc[merged, "lead_id"]}
            keep &= ~merged
        else:
            conv = src.frame.get("ConvertedContactId", pd.Series(index=src.frame.index))
            has = keep & conv.notna()
            converted = dict(zip(conv[has], frame.loc[has, "lead_id"], strict=True))
        keep_linked_accounts(frame, src, source_column(frame, "account_id"), "lead_id",
                             accounts, ledger)
        ledger.count(src.name, len(src.frame), int(keep.sum()))
        parts.append(frame[keep])
        who |= {i: i for i in frame.loc[keep, "lead_id"]}
    if not parts:
        raise PropensityError("no Lead.csv or Contact.csv rows to import")
    leads = pd.concat(parts, ignore_index=True)
    leads = leads.sort_values(["created_at", "lead_id"], kind="stable").reset_index(drop=True)
    return leads, who


def _campaigns(leads: pd.DataFrame, srcs: dict[str, Source | None],
               ledger: Ledger) -> pd.DataFrame:
    """A lead's campaign: the earliest membership created no later than the lead itself."""
    src = srcs["CampaignMember"]
    if src is None or "campaign" in leads.columns:
        return leads
    raw = src.frame
    member = link_column(raw, ("LeadId", "ContactId"))
    created = parse_times(raw["CreatedDate"], src.source, "CreatedDate", ledger, raw["Id"])
    born = member.map(leads.set_index("lead_id")["created_at"])
    first = (created <= born) & member.notna()
    names = srcs["Campaign"]
    name_of = {} if names is None else dict(zip(names.frame["Id"], names.frame["Name"],
                                                strict=True))
    if names is not None:
        ledger.count(names.name, len(names.frame), len(names.frame))
    chosen = pd.DataFrame({"lead_id": member[first], "t": created[first],
                           "campaign": raw.loc[first, "CampaignId"].map(
                               lambda c: name_of.get(c, c))}).sort_values("t", kind="stable")
    chosen = chosen.drop_duplicates("lead_id")
    src.attribution = set(chosen.index)
    out = leads.copy()
    out.insert(3, "campaign", out["lead_id"].map(chosen.set_index("lead_id")["campaign"]))
    return out


def _opportunities(taken: tuple[Source, pd.DataFrame] | None, srcs: dict[str, Source | None],
                   who: dict[str, str], accounts: pd.DataFrame, mapping: CrmMapping,
                   ledger: Ledger) -> tuple[pd.DataFrame, pd.DataFrame]:
    if taken is None:
        return pd.DataFrame(columns=["opportunity_id", "created_at", "status"]), \
            stage_candidates(pd.DataFrame(), "", "")
    src, frame = taken
    raw = src.frame
    frame = frame.copy()
    lead_of: dict[str, str] = {}
    lead_src = srcs["Lead"]
    if lead_src is not None and "ConvertedOpportunityId" in lead_src.frame.columns:
        conv = lead_src.frame[["ConvertedOpportunityId", "Id"]].dropna()
        lead_of = {o: who[i] for o, i in zip(conv["ConvertedOpportunityId"], conv["Id"],
                                             strict=True) if i in who}
    frame.insert(1, "lead_id", frame["opportunity_id"].map(lead_of))
    frame["created_at"] = parse_times(raw["CreatedDate"], src.source, "CreatedDate", ledger,
                                      raw["Id"])
    frame["amount"] = numbers(raw.get("Amount", pd.Series(index=raw.index, dtype="object")),
                              src.source, "Amount", ledger, raw["Id"])
    status = mapping.statuses(raw["StageName"])
    closed_at = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    dated = pd.Series(False, index=raw.index)
    hist = srcs["OpportunityHistory"]
    if hist is not None:
        h_status, h_closed, h_known = _history_close(hist, frame["opportunity_id"], mapping,
                                                     ledger)
        status = status.where(~h_known, h_status)
        closed_at = closed_at.where(~h_known, h_closed)
        dated = h_known
    undated = ~dated & (status != "open")
    close_date = parse_times(raw["CloseDate"], src.source, "CloseDate", ledger, raw["Id"],
                             refuse=False)
    closed_at[undated] = close_date[undated]
    ledger.repair(src.source, raw.index[undated & close_date.notna()], "CloseDate",
                  raw.loc[undated & close_date.notna(), "CloseDate"],
                  closed_at[undated & close_date.notna()].astype(str),
                  "closed with no OpportunityHistory row: closed at the end of CloseDate")
    frame["status"] = status
    frame["closed_at"] = closed_at.where(status != "open")
    keep_linked_accounts(frame, src, "AccountId", "opportunity_id", accounts, ledger)
    keep = refuse_unlinked(src, frame, "opportunity_id", "Id", ledger) & \
        frame["created_at"].notna()
    no_close = keep & (status != "open") & frame["closed_at"].isna()
    ledger.leave_out(src.source, frame.index[no_close], "CloseDate",
                     raw.loc[no_close, "CloseDate"], frame.loc[no_close, "opportunity_id"],
                     "closed, with neither an OpportunityHistory row nor a CloseDate")
    account = frame.get("account_id", pd.Series(index=frame.index, dtype="object"))
    alone = keep & ~no_close & frame["lead_id"].isna() & account.isna()
    ledger.leave_out(src.source, frame.index[alone], "Id", frame.loc[alone, "opportunity_id"],
                     frame.loc[alone, "opportunity_id"],
                     "linked to no lead (ConvertedOpportunityId) and no account")
    keep &= ~no_close & ~alone
    ledger.count(src.name, len(raw), int(keep.sum()))
    opps = frame.loc[keep, [c for c in OPPORTUNITY_COLUMNS if c in frame.columns]]
    stages = opportunity_stages(opps, src.name, "CreatedDate", "StageName")
    return opps.reset_index(drop=True), stages


def _history_close(hist: Source, opp_ids: pd.Series, mapping: CrmMapping, ledger: Ledger,
                   ) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Status and close time of each opportunity from its dated stage rows: the final status,
    closed at the first row of the final closed run (a reopened deal closes again later)."""
    raw = hist.frame
    t = parse_times(raw["CreatedDate"], hist.source, "CreatedDate", ledger, raw["OpportunityId"])
    known = raw["OpportunityId"].isin(set(opp_ids)) & t.notna()
    ledger.leave_out(hist.source, raw.index[~known & t.notna()], "OpportunityId",
                     raw.loc[~known & t.notna(), "OpportunityId"], None,
                     "no such opportunity in Opportunity.csv")
    ledger.count(hist.name, len(raw), int(known.sum()))
    rows = pd.DataFrame({"opp": raw.loc[known, "OpportunityId"], "t": t[known],
                         "status": mapping.statuses(raw.loc[known, "StageName"])})
    rows = rows.sort_values(["opp", "t"], kind="stable")
    final = rows.groupby("opp")["status"].transform("last")
    broken = (rows["status"] != final).astype(int)
    before = broken[::-1].groupby(rows["opp"][::-1]).cummax()[::-1].astype(bool)
    closed = rows[~before & (final != "open")].groupby("opp")["t"].min()
    by_opp = rows.groupby("opp")["status"].last()
    ids = opp_ids.to_numpy()
    has = pd.Series(pd.Index(by_opp.index).get_indexer(ids) >= 0, index=opp_ids.index)
    status = opp_ids.map(by_opp)
    closed_at = opp_ids.map(closed).astype("datetime64[us, UTC]")
    return status, closed_at, has


def _lead_history(src: Source, leads: pd.DataFrame, mapping: CrmMapping,
                  ledger: Ledger) -> pd.DataFrame:
    """Stage candidates from the dated Status changes; the status a lead was created with is
    the first change's OldValue."""
    raw = src.frame
    ledger.count(src.name, len(raw), 0)  # a row is imported when it becomes a stage row
    is_status = raw["Field"] == "Status"
    others = raw.loc[~is_status, "Field"].value_counts()
    for name, n in others.items():
        ledger.explain(src.name, f"history of {name} (not a stage)", int(n))
    t = parse_times(raw["CreatedDate"], src.source, "CreatedDate", ledger, raw["LeadId"])
    rows = raw[is_status & t.notna()]
    known = rows["LeadId"].isin(set(leads["lead_id"]))
    ledger.leave_out(src.source, rows.index[~known], "LeadId", rows.loc[~known, "LeadId"],
                     None, "no such lead in Lead.csv (or the lead was left out)")
    rows = rows[known]
    stage = mapping.stages("lead_status", rows["NewValue"])
    unmapped = stage.isna()
    ledger.leave_out(src.source, rows.index[unmapped], "NewValue",
                     rows.loc[unmapped, "NewValue"], rows.loc[unmapped, "LeadId"],
                     "a status the stage mapping does not know (add it to the mapping file)")
    skip = stage == NOT_A_STAGE
    ledger.explain(src.name, "changes to a status mapped to no stage", int(skip.sum()))
    use = ~unmapped & ~skip
    first = rows.sort_values("CreatedDate", kind="stable").drop_duplicates("LeadId")
    born = first["LeadId"].map(leads.set_index("lead_id")["created_at"])
    initial = mapping.stages("lead_status", first["OldValue"])
    start = initial.notna() & (initial != NOT_A_STAGE) & (initial != DEFAULT_STAGES[0])
    return pd.concat([
        stage_candidates(pd.DataFrame({"lead_id": rows.loc[use, "LeadId"],
                                       "stage": stage[use], "entered_at": t[rows.index][use],
                                       "value": rows.loc[use, "NewValue"]}),
                         src.name, "NewValue", whole_row=True),
        stage_candidates(pd.DataFrame({"lead_id": first.loc[start, "LeadId"],
                                       "stage": initial[start], "entered_at": born[start],
                                       "value": first.loc[start, "OldValue"]}),
                         src.name, "OldValue", whole_row=False),
    ], ignore_index=True)


def _undated_status(lead: Source | None, history: Source | None, leads: pd.DataFrame,
                    mapping: CrmMapping, ledger: Ledger) -> pd.DataFrame:
    """A lead whose current Status is past the first stage with no dated change: the stage
    cannot be placed in time, so it is left out by name (the lead itself comes in)."""
    if lead is None or "Status" not in lead.frame.columns:
        return stage_candidates(pd.DataFrame(), "", "")
    raw = lead.frame
    dated: set[str] = set()
    if history is not None:
        dated = set(history.frame.loc[history.frame["Field"] == "Status", "LeadId"])
    stage = mapping.stages("lead_status", raw["Status"])
    past = (raw["Id"].isin(set(leads["lead_id"])) & stage.notna()
            & ~stage.isin([DEFAULT_STAGES[0], NOT_A_STAGE]) & ~raw["Id"].isin(dated))
    ledger.leave_out(lead.source, raw.index[past], "Status", raw.loc[past, "Status"],
                     raw.loc[past, "Id"], "a status with no dated change in LeadHistory: the "
                     "stage cannot be placed in time (track Lead Status history)",
                     whole_row=False)
    return stage_candidates(pd.DataFrame(), "", "")


def _task_times(raw: pd.DataFrame) -> tuple[pd.Series, str]:
    if "CompletedDateTime" in raw.columns:
        return raw["CompletedDateTime"].fillna(raw["CreatedDate"]), "CompletedDateTime"
    return raw["CreatedDate"], "CreatedDate"


def _event_times(raw: pd.DataFrame) -> tuple[pd.Series, str]:
    for col in ("StartDateTime", "ActivityDateTime"):
        if col in raw.columns:
            return raw[col].fillna(raw.get("ActivityDate")), col
    return raw["ActivityDate"], "ActivityDate"


def _responses(src: Source | None, who: dict[str, str], ledger: Ledger) -> pd.DataFrame:
    """Campaign responses as events; the membership a lead was created with is its campaign;
    a membership with neither is listed."""
    if src is None:
        return pd.DataFrame(columns=["lead_id", "occurred_at", "event_type", "channel"])
    raw = src.frame
    member = link_column(raw, ("LeadId", "ContactId")).map(who)
    responded = raw.get("HasResponded", pd.Series("", index=raw.index)).astype(
        "string").str.lower().isin(["true", "1"])
    t = parse_times(raw.get("FirstRespondedDate", pd.Series(index=raw.index, dtype="object")),
                    src.source, "FirstRespondedDate", ledger, raw["Id"])
    use = responded & member.notna() & t.notna()
    campaign = raw.index.isin(list(src.attribution))
    nobody = member.isna()
    ledger.leave_out(src.source, raw.index[nobody], "LeadId", link_column(
        raw, ("LeadId", "ContactId"))[nobody], raw.loc[nobody, "Id"],
        "a member that is no imported lead or contact")
    idle = ~use & ~campaign & ~nobody & ~(responded & t.isna())
    ledger.leave_out(src.source, raw.index[idle], "HasResponded",
                     raw.loc[idle].get("HasResponded"), raw.loc[idle, "Id"],
                     "added to a campaign without responding: not an engagement")
    ledger.count(src.name, len(raw), int((use | (campaign & ~nobody)).sum()))
    ledger.fields_of(src, {c: "events (campaign_response) and leads.campaign" for c in (
        "LeadId", "ContactId", "HasResponded", "FirstRespondedDate", "CampaignId",
        "CreatedDate")})
    return pd.DataFrame({"lead_id": member[use], "occurred_at": t[use],
                         "event_type": "campaign_response", "channel": "campaign"})
