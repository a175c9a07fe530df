"""Olist marketing-qualified leads and closed deals -> a CRM export.

Mapping: every MQL is a lead (created at first contact) with an `mql` stage row at that time;
`origin` is the source and `landing_page_id` the campaign. A closed deal adds a `customer`
stage row and a won opportunity at `won_date` (Olist records no opportunity creation date, so
the opportunity is dated at the win: dating it at first contact would tell every feature built
after first contact that this lead is going to buy). `sdr_id`
owns the lead, `sr_id` the opportunity. Everything else in the deals file is known only for
won leads, so it is declared post-outcome, owner included.

This copy went through a spreadsheet: dates are day-first and are parsed with an explicit
day-first format (a value that does not fit is passed through for validation to report);
`average_stock` ranges turned into dates (`01-May` for 1-5, `May-20` for 5-20) are repaired
and every repair is listed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.adapters._result import REPAIR_COLUMNS, REPAIRS_FILE, ImportResult
from propensity.contract import Manifest
from propensity.export_reader import read_raw
from propensity.problems import PropensityError
from propensity.tables import SourceFile

LEFT_OUT_FILE = "left-out.csv"
MONTHS = {m: i for i, m in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)}
DAY_MONTH = re.compile(r"^0?(\d{1,2})-([A-Z][a-z]{2})$")  # "01-May" was "1-5"
MONTH_YEAR = re.compile(r"^([A-Z][a-z]{2})-(\d{2})$")  # "May-20" was "5-20"
DEAL_ATTRIBUTES = [
    "seller_id", "business_segment", "lead_type", "lead_behaviour_profile", "has_company",
    "has_gtin", "average_stock", "business_type", "declared_product_catalog_size",
    "declared_monthly_revenue",
]


def day_first(values: pd.Series, fmt: str) -> pd.Series:
    """ISO text for values in `fmt`; anything else passes through unchanged, to be reported."""
    parsed = pd.to_datetime(values, format=fmt, errors="coerce")
    iso = parsed.dt.strftime("%Y-%m-%dT%H:%M:%S")
    return iso.where(parsed.notna(), values)


def repair_stock_range(value: str) -> str | None:
    """The range a spreadsheet turned into a date, or None when the value is not such damage."""
    if (m := DAY_MONTH.match(value)) and m.group(2) in MONTHS:
        return f"{int(m.group(1))}-{MONTHS[m.group(2)]}"
    if (m := MONTH_YEAR.match(value)) and m.group(1) in MONTHS:
        return f"{MONTHS[m.group(1)]}-{int(m.group(2))}"
    return None


def _repairs(deals: pd.DataFrame, source: SourceFile) -> tuple[pd.Series, pd.DataFrame]:
    stock = deals["average_stock"]
    fixed = stock.dropna().map(repair_stock_range).dropna()
    rows = pd.DataFrame({
        "file": source.name,
        "row": source.row_of(fixed.index),
        "column": "average_stock",
        "original": stock[fixed.index].to_numpy(),
        "repaired": fixed.to_numpy(),
        "reason": "a spreadsheet read the range as a date",
    }, columns=REPAIR_COLUMNS)
    out = stock.copy()
    out[fixed.index] = fixed
    return out, rows


def _require_columns(mqls: pd.DataFrame, mql_file: Path, deals: pd.DataFrame,
                     deals_file: Path) -> None:
    """Both files carry the Olist columns the mapping reads, or the import stops naming them."""
    for frame, file, need in ((mqls, mql_file, {"mql_id", "first_contact_date", "origin"}),
                              (deals, deals_file, {"mql_id", "won_date", "sdr_id", "sr_id"})):
        if not need <= set(frame.columns):
            raise PropensityError(f"{file}: missing Olist column(s) "
                                  f"{', '.join(sorted(need - set(frame.columns)))}")


def _won_before_contact(leads: pd.DataFrame, deals: pd.DataFrame,
                        deals_source: SourceFile) -> tuple[np.ndarray, pd.DataFrame]:
    """Deals won before their lead's first contact, and the left-out rows naming them.

    Such a lead cannot be placed in the funnel: it is left out here, named in left-out.csv,
    rather than rejected by every later command.
    """
    first = pd.to_datetime(leads.set_index("lead_id")["created_at"], errors="coerce")
    won_at = pd.to_datetime(deals["won_at"], errors="coerce")
    impossible = (won_at < deals["mql_id"].map(first)).to_numpy()
    left_out = pd.DataFrame({
        "file": deals_source.name, "row": deals_source.row_of(deals.index[impossible]),
        "column": "won_date", "value": deals.loc[impossible, "won_date"].to_numpy(),
        "lead_id": deals.loc[impossible, "mql_id"].to_numpy(),
        "reason": "won before the lead's first contact: the lead and its deal are left out"})
    return impossible, left_out


def _with_deal_fields(leads: pd.DataFrame, deals: pd.DataFrame) -> pd.DataFrame:
    """Leads with their deal's SDR as owner and the deal's attributes (post-outcome)."""
    won = deals.set_index("mql_id")
    leads["owner_id"] = leads["lead_id"].map(won["sdr_id"])
    for col in DEAL_ATTRIBUTES:
        if col in won.columns:
            leads[col] = leads["lead_id"].map(won[col])
    return leads


def _stage_history(leads: pd.DataFrame, deals: pd.DataFrame) -> pd.DataFrame:
    """An `mql` entry at first contact for every lead, `customer` at the win for every deal."""
    mql_rows = pd.DataFrame(
        {"lead_id": leads["lead_id"], "stage": "mql", "entered_at": leads["created_at"]})
    customer_rows = pd.DataFrame(
        {"lead_id": deals["mql_id"], "stage": "customer", "entered_at": deals["won_at"]})
    return pd.concat([mql_rows, customer_rows], ignore_index=True)


def _opportunities(deals: pd.DataFrame) -> pd.DataFrame:
    """A won opportunity per deal, dated at the win (Olist records no creation date)."""
    return pd.DataFrame({
        "opportunity_id": "opp_" + deals["mql_id"],
        "lead_id": deals["mql_id"],
        "created_at": deals["won_at"],
        "closed_at": deals["won_at"],
        "amount": None,
        "status": "won",
        "owner_id": deals["sr_id"],
        "product": deals.get("business_segment"),
    })


def _write(out_dir: Path, tables: dict[str, pd.DataFrame], repairs: pd.DataFrame,
           left_out: pd.DataFrame) -> None:
    """The tables as CSV (a Parquet copy of an earlier import removed), and the repairs and
    left-out files when they have rows (removed otherwise, so none is stale)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        (out_dir / f"{name}.parquet").unlink(missing_ok=True)
        table.to_csv(out_dir / f"{name}.csv", index=False)
    for file, frame in ((REPAIRS_FILE, repairs), (LEFT_OUT_FILE, left_out)):
        (out_dir / file).unlink(missing_ok=True)
        if len(frame):
            frame.to_csv(out_dir / file, index=False)


def _notes(left_out: pd.DataFrame) -> list[str]:
    """How the data was read, what is post-outcome, and each lead left out."""
    notes = [
        "dates parsed day-first (dd-mm-yyyy); values in another form are left for validation",
        "opportunities are dated at won_date: Olist records no creation date, and an earlier "
        "date would leak the outcome into features; time from first contact to won is the "
        "funnel's time to convert",
        "post-outcome (known only for won leads): owner_id, " + ", ".join(DEAL_ATTRIBUTES),
    ]
    for r in left_out.to_dict("records"):
        notes.append(f"left out lead {r['lead_id']} ({r['file']} row {r['row']}, won_date "
                     f"{r['value']}): {r['reason'].split(':')[0]}; listed in {LEFT_OUT_FILE}")
    return notes


def import_olist(mql_file: Path, deals_file: Path, out_dir: Path) -> ImportResult:
    """Map the Olist MQL and closed-deals files into the contract at `out_dir`."""
    mqls, _ = read_raw(Path(mql_file))
    deals, deals_source = read_raw(Path(deals_file))
    _require_columns(mqls, mql_file, deals, deals_file)
    deals = deals.copy()
    deals["average_stock"], repairs = _repairs(deals, deals_source)
    deals["won_at"] = day_first(deals["won_date"], "%d-%m-%Y %H:%M")

    leads = pd.DataFrame({
        "lead_id": mqls["mql_id"],
        "created_at": day_first(mqls["first_contact_date"], "%d-%m-%Y"),
        "source": mqls["origin"],
        "campaign": mqls.get("landing_page_id"),
    })
    impossible, left_out = _won_before_contact(leads, deals, deals_source)
    gone = set(left_out["lead_id"])
    deals = deals[~impossible]
    leads = leads[~leads["lead_id"].isin(gone)].reset_index(drop=True)
    leads = _with_deal_fields(leads, deals)
    tables = {"leads": leads, "stage_history": _stage_history(leads, deals),
              "opportunities": _opportunities(deals)}
    out_dir = Path(out_dir)
    _write(out_dir, tables, repairs, left_out)
    notes = _notes(left_out)
    Manifest(
        post_outcome={"leads": ["owner_id", *DEAL_ATTRIBUTES]},
        source=f"Olist marketing funnel via propensity import olist ({Path(mql_file).name}, "
               f"{Path(deals_file).name})",
        notes=notes,
    ).write(out_dir)
    return ImportResult(out_dir, {k: len(v) for k, v in tables.items()}, repairs, notes)
