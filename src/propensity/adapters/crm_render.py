"""A company in our contract, rendered as the CRM would export it: a Salesforce Data Export
folder and HubSpot CSV exports.

For round-trip checks: the imports must bring these back to the very tables they came from,
so the model trained on either scores alike. The renderings carry the traps a real export has
(current statuses, counts and last-activity dates as of the export, contacts a lead was
converted into, activities logged on the contact after conversion), which the imports must
leave out or route correctly.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

SF_TIME = "%Y-%m-%dT%H:%M:%S.000Z"
HS_TIME = "%Y-%m-%d %H:%M:%S"
SF_STATUS = {"lead": "Open - Not Contacted", "mql": "Marketing Qualified",
             "sql": "Sales Qualified", "opportunity": "Closed - Converted",
             "customer": "Customer", "disqualified": "Closed - Not Converted"}
HS_BECAME = {"mql": "Became a Marketing Qualified Lead Date",
             "sql": "Became a Sales Qualified Lead Date",
             "opportunity": "Became an Opportunity Date", "customer": "Became a Customer Date",
             "disqualified": 'Date entered "Disqualified (Lifecycle Stage Pipeline)"'}
HS_LIFECYCLE = {"lead": "Lead", "mql": "Marketing Qualified Lead", "sql": "Sales Qualified Lead",
                "opportunity": "Opportunity", "customer": "Customer",
                "disqualified": "Disqualified", "lost": "Opportunity"}
CONTRACT_LEAD = ("lead_id", "created_at", "source", "campaign", "account_id", "persona",
                 "owner_id", "product")


def _frames(tables: dict[str, pa.Table | pd.DataFrame]) -> dict[str, pd.DataFrame]:
    out = {}
    for name, t in tables.items():
        frame = t.to_pandas() if isinstance(t, pa.Table) else t.copy()
        for col in frame.columns:
            if isinstance(frame[col].dtype, pd.CategoricalDtype):
                frame[col] = frame[col].astype("object").where(frame[col].notna(), None)
        out[name] = frame
    return out


def _fmt(values: pd.Series, fmt: str) -> pd.Series:
    return values.dt.strftime(fmt).where(values.notna(), None)


def _num(values: pd.Series) -> pd.Series:
    """Numbers as text that reads back to the same float (integral values without '.0')."""
    return values.map(lambda v: None if pd.isna(v) else (
        str(int(v)) if float(v).is_integer() else repr(float(v))))


def _custom(name: str) -> str:
    return "_".join(p.capitalize() for p in name.split("_")) + "__c"


def _last_event(frames: dict[str, pd.DataFrame], key: str, ids: pd.Series,
                fmt: str) -> pd.Series:
    """Snapshot as of the export: the latest activity of each lead."""
    last = frames["events"].groupby("lead_id")["occurred_at"].max()
    return _fmt(ids.map(last), fmt)


def _page_views(frames: dict[str, pd.DataFrame], ids: pd.Series) -> pd.Series:
    """Snapshot as of the export: page views to date, the future included for past snapshots."""
    ev = frames["events"]
    views = ev[ev["event_type"].isin(["page_view", "pricing_page_view"])].groupby(
        "lead_id").size()
    return ids.map(views).fillna(0).astype("int64").astype(str)


def _sf_accounts(acc: pd.DataFrame, leads: pd.DataFrame, bought: set[str], out: Path) -> None:
    """Account.csv; `Type` is a snapshot: Customer once any of its leads bought."""
    pd.DataFrame({
        "Id": acc["account_id"], "IsDeleted": "false", "Name": "Account " + acc["account_id"],
        "Type": acc["account_id"].map(lambda a: "Customer - Direct" if a in set(
            leads.loc[leads["lead_id"].isin(bought), "account_id"]) else "Prospect"),
        "Industry": acc["industry"], "NumberOfEmployees": _num(acc["employees"]),
        "AnnualRevenue": _num(acc["annual_revenue"]), "BillingCountry": acc["country"],
        "CreatedDate": "2020-01-01T00:00:00.000Z",
    }).to_csv(out / "Account.csv", index=False)


def _sf_leads(f: dict[str, pd.DataFrame], out: Path, converted: pd.Series,
              contact_of: pd.Series) -> None:
    """Lead.csv with the export's traps: the current Status and Rating, LastActivityDate,
    and the conversion fields; attributes beyond the contract as custom fields."""
    leads, sh, opps = f["leads"], f["stage_history"], f["opportunities"]
    opp_of = opps.set_index("lead_id")["opportunity_id"]
    final = sh.groupby("lead_id")["stage"].last()
    bought = set(sh.loc[sh["stage"] == "customer", "lead_id"])
    extra = [c for c in leads.columns if c not in CONTRACT_LEAD]
    conv_opp = leads["lead_id"].map(opp_of)
    lead = pd.DataFrame({
        "Id": leads["lead_id"], "IsDeleted": "false", "FirstName": "Pat",
        "LastName": "Lead " + leads["lead_id"], "Company": leads["account_id"].fillna("Self"),
        "Email": leads["lead_id"].str.lower() + "@example.com",
        "Status": leads["lead_id"].map(final).map(SF_STATUS).fillna(
            SF_STATUS["opportunity"]).where(leads["lead_id"].isin(final.index),
                                            SF_STATUS["lead"]),
        "Rating": leads["lead_id"].map(lambda i: "Hot" if i in bought else "Cold"),
        "LeadSource": leads["source"], "OwnerId": leads["owner_id"],
        "CreatedDate": _fmt(leads["created_at"], SF_TIME), "Account__c": leads["account_id"],
        "IsConverted": converted.map({True: "true", False: "false"}),
        "ConvertedDate": _fmt(leads["lead_id"].map(opps.set_index("lead_id")["created_at"]),
                              "%Y-%m-%d"),
        "ConvertedContactId": contact_of.where(converted), "ConvertedOpportunityId": conv_opp,
        "LastActivityDate": _last_event(f, "lead_id", leads["lead_id"], "%Y-%m-%d"),
        "Persona__c": leads["persona"], "Product__c": leads["product"],
    })
    for col in extra:
        lead["Country" if col == "country" else _custom(col)] = leads[col]
    lead.to_csv(out / "Lead.csv", index=False)


def _sf_contacts(leads: pd.DataFrame, opps: pd.DataFrame, converted: pd.Series,
                 contact_of: pd.Series, out: Path) -> None:
    """Contact.csv: the contact each converted lead became, created at its conversion."""
    conv = leads[converted]
    pd.DataFrame({
        "Id": contact_of[converted], "IsDeleted": "false", "AccountId": conv["account_id"],
        "LastName": "Lead " + conv["lead_id"], "LeadSource": conv["source"],
        "OwnerId": conv["owner_id"],
        "CreatedDate": _fmt(conv["lead_id"].map(opps.set_index("lead_id")["created_at"]),
                            SF_TIME),
    }).to_csv(out / "Contact.csv", index=False)


def _sf_campaigns(leads: pd.DataFrame, out: Path) -> None:
    """Campaign.csv and CampaignMember.csv: each lead a member of its campaign, no response."""
    campaigns = sorted(leads["campaign"].dropna().unique())
    camp_id = {c: f"701{i:012d}" for i, c in enumerate(campaigns)}
    pd.DataFrame({"Id": list(camp_id.values()), "IsDeleted": "false",
                  "Name": list(camp_id)}).to_csv(out / "Campaign.csv", index=False)
    has = leads["campaign"].notna()
    pd.DataFrame({
        "Id": "00v" + leads.loc[has, "lead_id"], "IsDeleted": "false",
        "CampaignId": leads.loc[has, "campaign"].map(camp_id),
        "LeadId": leads.loc[has, "lead_id"], "ContactId": None, "Status": "Sent",
        "HasResponded": "false", "FirstRespondedDate": None,
        "CreatedDate": _fmt(leads.loc[has, "created_at"], SF_TIME),
    }).to_csv(out / "CampaignMember.csv", index=False)


def render_salesforce(tables: dict[str, pa.Table | pd.DataFrame], out_dir: Path) -> Path:
    """Write the company as a Salesforce Data Export folder (one CSV per object)."""
    f = _frames(tables)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    leads, sh, opps, ev = f["leads"], f["stage_history"], f["opportunities"], f["events"]
    opp_of = opps.set_index("lead_id")["opportunity_id"]
    converted = leads["lead_id"].isin(opp_of.index)
    contact_of = "C" + leads["lead_id"].str[1:]
    bought = set(sh.loc[sh["stage"] == "customer", "lead_id"])
    _sf_accounts(f["accounts"], leads, bought, out)
    _sf_leads(f, out, converted, contact_of)
    _sf_contacts(leads, opps, converted, contact_of, out)
    _sf_history(sh, leads, opps, out)
    _sf_opportunities(opps, out)
    _sf_activities(ev, leads, opps, contact_of, out)
    _sf_campaigns(leads, out)
    return out


def _sf_history(sh: pd.DataFrame, leads: pd.DataFrame, opps: pd.DataFrame, out: Path) -> None:
    """LeadHistory: a `created` row per lead and each status change (a customer or a loss
    that closes an opportunity is dated by OpportunityHistory instead)."""
    with_opp = set(opps["lead_id"].dropna())
    rows = sh[~sh["stage"].isin(["lost"]) & ~((sh["stage"] == "customer")
                                             & sh["lead_id"].isin(with_opp))].copy()
    rows["NewValue"] = rows["stage"].map(SF_STATUS)
    rows["OldValue"] = rows.groupby("lead_id")["NewValue"].shift(1).fillna(SF_STATUS["lead"])
    status = pd.DataFrame({"LeadId": rows["lead_id"], "CreatedDate": rows["entered_at"],
                           "Field": "Status", "OldValue": rows["OldValue"],
                           "NewValue": rows["NewValue"]})
    created = pd.DataFrame({"LeadId": leads["lead_id"], "CreatedDate": leads["created_at"],
                            "Field": "created", "OldValue": None, "NewValue": None})
    hist = pd.concat([created, status], ignore_index=True).sort_values(
        ["CreatedDate", "LeadId"], kind="stable")
    hist["CreatedDate"] = _fmt(hist["CreatedDate"], SF_TIME)
    hist.insert(0, "Id", [f"017{i:012d}" for i in range(len(hist))])
    hist.insert(1, "IsDeleted", "false")
    hist.to_csv(out / "LeadHistory.csv", index=False)


def _sf_opportunities(opps: pd.DataFrame, out: Path) -> None:
    stage = opps["status"].map({"open": "Prospecting", "won": "Closed Won",
                                "lost": "Closed Lost"})
    forecast = (opps["created_at"] + pd.Timedelta(days=30)).dt.strftime("%Y-%m-%d")
    pd.DataFrame({
        "Id": opps["opportunity_id"], "IsDeleted": "false", "AccountId": opps["account_id"],
        "Name": "Deal " + opps["opportunity_id"], "StageName": stage,
        "Amount": _num(opps["amount"]),
        "CloseDate": opps["closed_at"].dt.strftime("%Y-%m-%d").fillna(forecast),
        "CreatedDate": _fmt(opps["created_at"], SF_TIME), "OwnerId": opps["owner_id"],
        "IsClosed": (opps["status"] != "open").map({True: "true", False: "false"}),
        "IsWon": (opps["status"] == "won").map({True: "true", False: "false"}),
        "Product__c": opps["product"],
    }).to_csv(out / "Opportunity.csv", index=False)
    opened = pd.DataFrame({"OpportunityId": opps["opportunity_id"],
                           "CreatedDate": opps["created_at"], "StageName": "Prospecting",
                           "Amount": _num(opps["amount"])})
    done = opps[opps["status"] != "open"]
    closed = pd.DataFrame({"OpportunityId": done["opportunity_id"],
                           "CreatedDate": done["closed_at"],
                           "StageName": stage[done.index], "Amount": _num(done["amount"])})
    hist = pd.concat([opened, closed], ignore_index=True).sort_values("CreatedDate",
                                                                       kind="stable")
    hist["CreatedDate"] = _fmt(hist["CreatedDate"], SF_TIME)
    hist.insert(0, "Id", [f"008{i:012d}" for i in range(len(hist))])
    hist.to_csv(out / "OpportunityHistory.csv", index=False)


def _sf_activities(ev: pd.DataFrame, leads: pd.DataFrame, opps: pd.DataFrame,
                   contact_of: pd.Series, out: Path) -> None:
    """Tasks and Events; after conversion they are logged on the contact, as Salesforce
    does."""
    converted_at = ev["lead_id"].map(opps.set_index("lead_id")["created_at"])
    contact = ev["lead_id"].map(dict(zip(leads["lead_id"], contact_of, strict=True)))
    who = contact.where(converted_at.notna() & (ev["occurred_at"] >= converted_at),
                        ev["lead_id"])
    meeting = ev["event_type"] == "meeting"
    subtype = ev["channel"].map({"email": "Email", "sales": "Call"}).fillna("Task")
    t = ev[~meeting]
    pd.DataFrame({
        "Id": [f"00T{i:012d}" for i in range(len(t))], "IsDeleted": "false",
        "WhoId": who[~meeting], "Subject": t["event_type"], "Status": "Completed",
        "ActivityDate": t["occurred_at"].dt.strftime("%Y-%m-%d"), "Type": t["event_type"],
        "TaskSubtype": subtype[~meeting], "CreatedDate": _fmt(t["occurred_at"], SF_TIME),
        "CompletedDateTime": _fmt(t["occurred_at"], SF_TIME), "Channel__c": t["channel"],
        "Value__c": _num(t["value"]),
    }).to_csv(out / "Task.csv", index=False)
    m = ev[meeting]
    pd.DataFrame({
        "Id": [f"00U{i:012d}" for i in range(len(m))], "IsDeleted": "false",
        "WhoId": who[meeting], "Subject": "Meeting", "Type": m["event_type"],
        "EventSubtype": "Event", "StartDateTime": _fmt(m["occurred_at"], SF_TIME),
        "ActivityDate": m["occurred_at"].dt.strftime("%Y-%m-%d"),
        "CreatedDate": _fmt(m["occurred_at"] - pd.Timedelta(days=2), SF_TIME),
        "DurationInMinutes": "30", "Channel__c": m["channel"], "Value__c": _num(m["value"]),
    }).to_csv(out / "Event.csv", index=False)


def render_hubspot(tables: dict[str, pa.Table | pd.DataFrame], out_dir: Path) -> dict[str, Path]:
    """Write the company as HubSpot CSV exports: contacts, companies, deals and activities.
    Times are naive, in the portal's time zone (UTC here)."""
    f = _frames(tables)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    leads, sh, opps, ev, acc = (f["leads"], f["stage_history"], f["opportunities"],
                                f["events"], f["accounts"])
    final = leads["lead_id"].map(sh.groupby("lead_id")["stage"].last()).fillna("lead")
    contacts = pd.DataFrame({
        "Record ID": leads["lead_id"], "First Name": "Pat", "Last Name": "Lead " +
        leads["lead_id"], "Email": leads["lead_id"].str.lower() + "@example.com",
        "Create Date": _fmt(leads["created_at"], HS_TIME),
        "Lifecycle Stage": final.map(HS_LIFECYCLE),
        "Lead Status": final.map(lambda s: "Unqualified" if s == "disqualified" else "Open"),
        "Original Source": leads["source"], "Campaign": leads["campaign"],
        "Associated Company ID": leads["account_id"], "Contact owner": leads["owner_id"],
        "Persona": leads["persona"], "Product": leads["product"],
    })
    for col in (c for c in leads.columns if c not in CONTRACT_LEAD):
        label = "Country/Region" if col == "country" else col.replace("_", " ").capitalize()
        contacts[label] = leads[col]
    for stage, label in HS_BECAME.items():
        first = sh[sh["stage"] == stage].drop_duplicates("lead_id").set_index(
            "lead_id")["entered_at"]
        contacts[label] = _fmt(leads["lead_id"].map(first), HS_TIME)
    contacts["Number of Pageviews"] = _page_views(f, leads["lead_id"])
    contacts["Last Activity Date"] = _last_event(f, "lead_id", leads["lead_id"], HS_TIME)
    pd.DataFrame({
        "Record ID": acc["account_id"], "Company name": "Account " + acc["account_id"],
        "Industry": acc["industry"], "Number of Employees": _num(acc["employees"]),
        "Annual Revenue": _num(acc["annual_revenue"]), "Country/Region": acc["country"],
        "Create Date": "2020-01-01 00:00:00",
    }).to_csv(out / "companies.csv", index=False)
    forecast = _fmt(opps["created_at"] + pd.Timedelta(days=30), HS_TIME)
    pd.DataFrame({
        "Record ID": opps["opportunity_id"], "Deal Name": "Deal " + opps["opportunity_id"],
        "Pipeline": "Sales Pipeline",
        "Deal Stage": opps["status"].map({"open": "Appointment Scheduled",
                                          "won": "Closed Won", "lost": "Closed Lost"}),
        "Amount": _num(opps["amount"]), "Create Date": _fmt(opps["created_at"], HS_TIME),
        "Close Date": _fmt(opps["closed_at"], HS_TIME).fillna(forecast),
        "Deal owner": opps["owner_id"], "Associated Contact IDs": opps["lead_id"],
        "Associated Company IDs": opps["account_id"], "Product": opps["product"],
    }).to_csv(out / "deals.csv", index=False)
    pd.DataFrame({
        "Activity ID": [f"E{i:09d}" for i in range(len(ev))],
        "Activity date": _fmt(ev["occurred_at"], HS_TIME), "Activity type": ev["event_type"],
        "Associated Contact IDs": ev["lead_id"], "Channel": ev["channel"],
        "Value": _num(ev["value"]),
    }).to_csv(out / "activities.csv", index=False)
    contacts.to_csv(out / "contacts.csv", index=False)
    return {n: out / f"{n}.csv" for n in ("contacts", "companies", "deals", "activities")}
