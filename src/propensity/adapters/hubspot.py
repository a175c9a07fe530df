"""HubSpot CSV exports (contacts, companies, deals; activities optional), headed by property
labels -> a CRM export.

What goes where: a contact is a lead, its "Associated Company ID" its account. Its stage
history is its "Became a ... Date" columns (and `Date entered "X (Lifecycle Stage
Pipeline)"` for custom stages), each label mapped by `DEFAULT_LIFECYCLE_STAGE` or the TOML
file; a deal of a contact adds `opportunity` at its creation and `customer` / `lost` at its
close. Activities (one row per engagement: date, type, contact) are events.

The traps: the current "Lifecycle Stage" and "Lead Status", counts ("Number of Pageviews",
"Number of Sessions"), "Last ..." and "Recent ..." dates are values as of the export: a
contact who bought has more page views and a recent activity date, so they fake accuracy.
They are left out unless named with `--allow-snapshot LABEL`. HubSpot labels do not tell a
custom property from a standard one, so any property not known here comes through as an
attribute, except that labels shaped like a snapshot ("Number of ...", "Last ...", a date)
are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from propensity.adapters._result import ImportResult
from propensity.adapters.crm_mapping import (
    DEFAULT_DEAL_STAGE,
    DEFAULT_LIFECYCLE_STAGE,
    NOT_A_STAGE,
    OPPORTUNITY_COLUMNS,
    SNAPSHOT,
    CrmMapping,
    FieldRule,
    Ledger,
    Source,
    activity_events,
    build_stage_history,
    field_rules,
    keep_linked_accounts,
    load_mapping,
    mapped_fields,
    numbers,
    opportunity_stages,
    parse_times,
    read_object,
    refuse_unlinked,
    stage_candidates,
    take_fields,
    write_import,
)
from propensity.contract import DEFAULT_STAGES
from propensity.problems import PropensityError

BECAME = re.compile(r'^(?:Became an? (.+) Date|Date entered "(.+) \(Lifecycle Stage Pipeline\)")$')
SNAPSHOT_SHAPE = re.compile(
    r"^(Number of|Last |Recent |Latest |Time |Days |Total |Average |Marketing emails|"
    r"First Deal|Date exited|Cumulative time|Currently in)|Date$|Score$")
AS_OF_EXPORT = "its value is the one at export time"
IDENTITY = ["First Name", "Last Name", "Email", "Phone Number", "Mobile Phone Number",
            "Street Address", "City", "Postal Code", "Website URL", "Company Name",
            "Company name", "Company Domain Name", "Associated Company", "Fax Number",
            "IP Address", "Deal Name", "Name", "Description"]
DESCRIPTIVE = {"Country/Region": "country", "State/Region": "state", "Job Title": "title",
               "Industry": "industry", "Number of Employees": "employees",
               "Annual Revenue": "annual_revenue"}
SNAPSHOTS = {
    "Lifecycle Stage": "the current stage; its dated entries are the Became ... Date columns",
    "Lead Status": "set by sales as they work the contact",
    "Type": "Prospect vs Customer: changes when the company buys",
    "HubSpot Owner Assigned Date": AS_OF_EXPORT, "Likelihood to close": "HubSpot's own "
    "score as of the export", "HubSpot Score": "a score as of the export",
    "Unsubscribed from all email": AS_OF_EXPORT, "Associated Deals": AS_OF_EXPORT,
}


def _rules(columns: dict[str, str], elsewhere: dict[str, str]) -> dict[str, FieldRule]:
    return field_rules(columns, DESCRIPTIVE, SNAPSHOTS, IDENTITY, elsewhere=elsewhere)


CONTACT_RULES = _rules({"Record ID": "lead_id", "Original Source": "source",
                        "Contact owner": "owner_id", "Associated Company ID": "account_id"},
                       {"Create Date": "leads.created_at: naive times are in --timezone"})
COMPANY_RULES = _rules({"Record ID": "account_id"},
                       {"Create Date": "left out: when the record was made, not a trait"})
DEAL_RULES = _rules({"Record ID": "opportunity_id", "Amount": "amount",
                     "Deal owner": "owner_id", "Associated Company IDs": "account_id"},
                    {"Create Date": "opportunities.created_at",
                     "Deal Stage": "opportunities.status: mapped to open/won/lost",
                     "Close Date": "opportunities.closed_at: for a closed deal only (an open "
                                   "deal's is a forecast)",
                     "Associated Contact IDs": "opportunities.lead_id: the first contact"})


def _object_rules(base: dict[str, FieldRule], columns: list[str], mapping: CrmMapping,
                  obj: str) -> dict[str, FieldRule]:
    rules = dict(base)
    for name in columns:
        if name in rules:
            continue
        if BECAME.match(name):
            rules[name] = FieldRule("elsewhere", "stage_history", "a dated stage entry")
        elif SNAPSHOT_SHAPE.search(name):
            rules[name] = FieldRule(SNAPSHOT, reason="shaped like a value as of the export "
                                    "(a count, a last/recent value or a date)")
        else:
            rules[name] = FieldRule("attribute")
    return mapped_fields(rules, mapping, obj)


def _first_id(values: pd.Series) -> pd.Series:
    """HubSpot joins several associated ids with ';': the first is the primary one."""
    return values.astype("string").str.split(";").str[0].str.strip().astype("object").where(
        values.notna(), None)


def _read_sources(paths: dict[str, Path | None], ledger: Ledger) -> dict[str, Source | None]:
    """Each export given, read; a path given that does not exist is an error naming the export."""
    srcs: dict[str, Source | None] = {}
    for name, path in paths.items():
        if path is not None and not Path(path).exists():
            raise PropensityError(f"{path}: no such file (the HubSpot {name} export)")
        srcs[name] = None if path is None else read_object(Path(path), ledger, None)
    return srcs


class _Fields:
    """Takes the contract's fields out of one HubSpot export, with the run's mapping, the
    snapshots the user allowed and the ledger shared by every export."""

    def __init__(self, srcs: dict[str, Source | None], mapping: CrmMapping,
                 allowed: set[str], ledger: Ledger) -> None:
        self.srcs, self.mapping, self.allowed, self.ledger = srcs, mapping, allowed, ledger

    def __call__(self, name: str, table: str, base: dict[str, FieldRule],
                 attributes: bool = True) -> tuple[Source, pd.DataFrame] | None:
        """The export `name` and its fields for `table`; None when that export was not given."""
        src = self.srcs[name]
        if src is None:
            return None
        rules = _object_rules(base, list(src.frame.columns), self.mapping, name)
        return src, take_fields(src.frame, src.name, table, rules, FieldRule("left out"),
                                self.allowed, self.ledger, attributes)


def _accounts(taken: tuple[Source, pd.DataFrame] | None, ledger: Ledger) -> pd.DataFrame:
    """Companies with a Record ID (none without the companies export)."""
    if taken is None:
        return pd.DataFrame(columns=["account_id"])
    src, frame = taken
    keep = refuse_unlinked(src, frame, "account_id", "Record ID", ledger)
    ledger.count(src.name, len(src.frame), int(keep.sum()))
    return frame[keep].reset_index(drop=True)


def _leads(src: Source, frame: pd.DataFrame, accounts: pd.DataFrame, ledger: Ledger,
           timezone: str) -> tuple[pd.DataFrame, pd.Series]:
    """Contacts with an id and a creation time, in creation order, and which rows were kept.

    A contact's account is its primary associated company.
    """
    raw = src.frame
    frame = frame.copy()
    frame["created_at"] = parse_times(raw["Create Date"], src.source, "Create Date", ledger,
                                      raw["Record ID"], tz=timezone)
    if "account_id" in frame.columns:
        frame["account_id"] = _first_id(frame["account_id"])
    keep = refuse_unlinked(src, frame, "lead_id", "Record ID", ledger) & \
        frame["created_at"].notna()
    keep_linked_accounts(frame, src, "Associated Company ID", "lead_id", accounts, ledger)
    ledger.count(src.name, len(raw), int(keep.sum()))
    cols = ["lead_id", "created_at"] + [c for c in frame.columns
                                        if c not in ("lead_id", "created_at")]
    leads = frame.loc[keep, cols].sort_values(["created_at", "lead_id"], kind="stable")
    return leads.reset_index(drop=True), keep


def _contact_field(act: Source | None) -> str:
    """The activities' contact column, reduced to its primary contact id in place.

    HubSpot names it "Associated Contact IDs" or "Associated Contact ID"; neither is an error.
    """
    if act is None:
        return "Associated Contact IDs"
    for col in ("Associated Contact IDs", "Associated Contact ID"):
        if col in act.frame.columns:
            act.frame[col] = _first_id(act.frame[col])
            return col
    raise PropensityError(f"{act.source.path}: no Associated Contact IDs column")


def import_hubspot(contacts: Path, out_dir: Path, companies: Path | None = None,
                   deals: Path | None = None, activities: Path | None = None,
                   mapping_file: Path | None = None,
                   allow_snapshot: tuple[str, ...] | list[str] = (),
                   timezone: str = "UTC") -> ImportResult:
    """Map HubSpot's CSV exports into the contract at `out_dir`."""
    mapping = load_mapping(mapping_file, "hubspot", {"lifecycle_stage": DEFAULT_LIFECYCLE_STAGE,
                                                     "deal_stage": DEFAULT_DEAL_STAGE}, {})
    ledger = Ledger()
    paths = {"contacts": contacts, "companies": companies, "deals": deals,
             "activities": activities}
    srcs = _read_sources(paths, ledger)
    seen = set().union(*(set(s.frame.columns) for s in srcs.values() if s is not None))
    fields = _Fields(srcs, mapping, set(allow_snapshot), ledger)
    accounts = _accounts(fields("companies", "accounts", COMPANY_RULES), ledger)
    taken = fields("contacts", "leads", CONTACT_RULES)
    assert taken is not None
    src, frame = taken
    leads, keep = _leads(src, frame, accounts, ledger, timezone)
    who = {i: i for i in leads["lead_id"]}
    candidates = [_became(src, keep, mapping, ledger, timezone)]
    opps = pd.DataFrame(columns=OPPORTUNITY_COLUMNS)
    if (taken := fields("deals", "opportunities", DEAL_RULES, attributes=False)) is not None:
        opps, deal_stages = _deals(*taken, who, accounts, mapping, ledger, timezone)
        candidates.append(deal_stages)
    sources = {s.name: s.source for s in srcs.values() if s is not None}
    created = leads.set_index("lead_id")["created_at"]
    stage_history = build_stage_history(pd.concat(candidates, ignore_index=True),
                                        DEFAULT_STAGES, ledger, sources, created)
    act = srcs["activities"]
    who_field = _contact_field(act)
    events = activity_events(act, who, ledger, lambda r: (r["Activity date"], "Activity date"),
                             "Channel", "Value", "activity", who_field=who_field,
                             type_field="Activity type", tz=timezone, created=created)
    events = events.sort_values(["lead_id", "occurred_at"], kind="stable").reset_index(drop=True)
    tables = {"leads": leads, "accounts": accounts if companies is not None else None,
              "events": events if activities is not None else None,
              "stage_history": stage_history.sort_values(["lead_id", "entered_at"],
                                                         kind="stable"),
              "opportunities": opps if deals is not None else None}
    notes = [f"--allow-snapshot {a}: no such property in the exports"
             for a in allow_snapshot if a not in seen]
    names = ", ".join(Path(p).name for p in paths.values() if p is not None)
    return write_import(out_dir, tables, ledger, f"HubSpot exports ({names}) via propensity "
                        "import hubspot", notes)


def _became(src: Source, keep: pd.Series, mapping: CrmMapping, ledger: Ledger,
            tz: str) -> pd.DataFrame:
    """Stage candidates from the dated lifecycle columns of the contacts kept."""
    raw = src.frame
    parts = []
    for col in raw.columns:
        m = BECAME.match(col)
        if not m:
            continue
        label = m.group(1) or m.group(2)
        stage = mapping.stage_of("lifecycle_stage", label)
        if stage is None or stage == NOT_A_STAGE:
            why = ("not in the lifecycle mapping (add it to the mapping file)" if stage is None
                   else "mapped to no stage")
            ledger.field(src.name, col, "left out", f"lifecycle stage {label!r}: {why}")
            continue
        t = parse_times(raw[col], src.source, col, ledger, raw["Record ID"], tz=tz,
                        whole_row=False)
        has = keep & t.notna()
        parts.append(stage_candidates(pd.DataFrame({
            "lead_id": raw.loc[has, "Record ID"], "stage": stage, "entered_at": t[has],
            "value": raw.loc[has, col]}), src.name, col))
    return pd.concat(parts, ignore_index=True) if parts else stage_candidates(
        pd.DataFrame(), src.name, "")


def _deals(src: Source, frame: pd.DataFrame, who: dict[str, str], accounts: pd.DataFrame,
           mapping: CrmMapping, ledger: Ledger, tz: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = src.frame
    frame = frame.copy()
    ids = raw["Record ID"]
    contact = _first_id(raw.get("Associated Contact IDs", pd.Series(index=raw.index,
                                                                     dtype="object")))
    frame.insert(1, "lead_id", contact.map(who))
    unknown = contact.notna() & frame["lead_id"].isna()
    ledger.leave_out(src.source, raw.index[unknown], "Associated Contact IDs",
                     contact[unknown], ids[unknown], "no such contact in the contacts export: "
                     "the deal comes in without it", whole_row=False)
    if "account_id" in frame.columns:
        frame["account_id"] = _first_id(frame["account_id"])
    keep_linked_accounts(frame, src, "Associated Company IDs", "opportunity_id", accounts,
                         ledger)
    frame["created_at"] = parse_times(raw["Create Date"], src.source, "Create Date", ledger,
                                      ids, tz=tz)
    if "amount" in frame.columns:
        frame["amount"] = numbers(frame["amount"], src.source, "Amount", ledger, ids)
    frame["status"] = mapping.statuses(raw["Deal Stage"])
    closed = frame["status"] != "open"
    close = parse_times(raw["Close Date"].where(closed), src.source, "Close Date", ledger, ids,
                        tz=tz)
    frame["closed_at"] = close.where(closed)
    keep = refuse_unlinked(src, frame, "opportunity_id", "Record ID", ledger) & \
        frame["created_at"].notna() & (~closed | close.notna())
    no_close = closed & raw["Close Date"].isna()
    ledger.leave_out(src.source, raw.index[no_close], "Close Date", None, ids[no_close],
                     "a closed deal with no Close Date: its close cannot be placed in time")
    account = frame.get("account_id", pd.Series(index=frame.index, dtype="object"))
    alone = keep & frame["lead_id"].isna() & account.isna()
    ledger.leave_out(src.source, raw.index[alone], "Associated Contact IDs", None, ids[alone],
                     "linked to no contact and no company")
    keep &= ~alone
    ledger.count(src.name, len(raw), int(keep.sum()))
    opps = frame.loc[keep, [c for c in OPPORTUNITY_COLUMNS if c in frame.columns]]
    stages = opportunity_stages(opps, src.name, "Create Date", "Close Date")
    return opps.reset_index(drop=True), stages
