"""Scoring in batch: an export as of T, a table, the pyfunc's rows (leads one by one, as the
scorer scores them: `propensity.lead_scoring`). Every path ends in `ModelBundle.predict` /
`explain` on a model matrix built by the model's own feature plan or table coder.

Open at T means created before T and neither converted nor ended before T (nor, with
`stale_days`, idle in its stage longer than that); features use only rows dated before T, so
scoring an export as of T gives the same numbers as scoring the same export cut off at T.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from propensity.account_input import rows_to_export
from propensity.coding import not_numbers, numbers
from propensity.funnel.journeys import Journeys, build_journeys
from propensity.lead_scoring import Scored, read_records, score_matrix, score_read
from propensity.models.bundle import ModelBundle
from propensity.models.outlook import HORIZONS
from propensity.problems import PropensityError
from propensity.tables import CrmExport, SourceFile, index_export
from propensity.targets import ACCOUNT, target_named
from propensity.thresholds import ThresholdSet
from propensity.timestamps import utc


def open_entities(bundle: ModelBundle, export: CrmExport, as_of: pd.Timestamp,
                  journeys: Journeys | None = None) -> pd.DataFrame:
    """The leads (or accounts) a model scores at T: those its training would have counted open
    (`journeys`: the export's, when the caller built them already)."""
    ts = utc(as_of)
    horizon = bundle.horizon_days or 90
    target = target_named(bundle.target)
    entities = target.entities(export, [ts], horizon,
                               journeys=journeys if journeys is not None else build_journeys(
                                   export), labelled=False, stale_days=bundle.stale_days)
    return entities[[target.entity.key, "as_of"]]


def check_export_tables(bundle: ModelBundle, present: Sequence[str], where: str) -> None:
    """Refuse an export that lacks a table the model was trained with. Without stage history
    no lead ever ends, without events none has engaged: every lead would still get a score,
    from inputs the model never saw, and nothing would say so."""
    known = None if bundle.spec is None else bundle.spec.tables
    missing = [t for t in known or () if t not in present]
    if missing:
        raise PropensityError(
            f"{where}: no {', '.join(missing)} table, which the model was trained with; its "
            "scores would be made up: add the table, or train a model on exports without it")


def unreadable_number(values: pd.Series, source: SourceFile, column: str, rows: np.ndarray
                    ) -> PropensityError | None:
    """The first value of a column the model reads as numbers that it cannot read: text
    (`not_a_number`: blank and NaN read as missing, as the scorer's encoders read them) or an
    infinite number ("inf", "1e999": no model has an answer for it), as an error naming its
    row; `rows` are the values' positions in their file."""
    infinite = np.isinf(numbers(values))
    text = infinite if pd.api.types.is_numeric_dtype(values) else not_numbers(values) | infinite
    if not text.any():
        return None
    at = np.flatnonzero(text)
    more = f" (and {len(at) - 1} more rows)" if len(at) > 1 else ""
    what = "an infinite number" if infinite[at[0]] else "not a number"
    return PropensityError(f"{source.name} row {int(source.row_of(rows[at[:1]])[0])} column "
                           f"{column} value {values.iloc[at[0]]!r}: {what}, and the "
                           f"model reads {column} as a finite number{more}")


def check_export(bundle: ModelBundle, export: CrmExport) -> None:
    """The export holds what the model was trained on: its tables, and numbers in the
    attribute columns it reads as numbers (text there used to become missing, silently)."""
    check_export_tables(bundle, export.table_names(), "the export")
    spec = bundle.spec
    if spec is None:
        return
    for name, columns in (("leads", spec.lead_numeric), ("accounts", spec.account_numeric)):
        frame = getattr(export, name)
        source = export.files.get(name)
        if frame is None or source is None:
            continue
        for col in columns:
            if col in frame and (error := unreadable_number(
                    frame[col], source, col, frame.index.to_numpy())) is not None:
                raise error


OUTLOOK_COLUMNS: tuple[str, ...] = (*(f"p_by_{h}" for h in HORIZONS), "expected_days",
                                    "expected_amount", "amount_low", "amount_high",
                                    "expected_revenue")
"""The outlook's columns in batch scores, in order (floats; `with_outlook`): named once for
every engine that writes them (the Spark job declares its output schema from these)."""


def with_outlook(out: pd.DataFrame, bundle: ModelBundle, X: np.ndarray) -> pd.DataFrame:
    """`out` (one row per row of X) with the lead's outlook when the model ships one:
    p_by_30 .. p_by_180 (`horizons` in a score), expected_days, expected_amount, amount_low,
    amount_high, expected_revenue; blank where a score's field is null. A model without an
    outlook adds no column."""
    if bundle.outlook is None:
        return out
    seen = bundle.outlook.predict(X)
    values = (*seen.horizons.T, seen.expected_days, seen.expected_amount, seen.amount_low,
              seen.amount_high, seen.expected_revenue)
    for name, value in zip(OUTLOOK_COLUMNS, values, strict=True):
        out[name] = value
    return out


def score_export(bundle: ModelBundle, export: CrmExport, as_of: pd.Timestamp,
                 threads: int = 0) -> pd.DataFrame:
    """Every entity open at T with its probability, and its outlook when the model ships one
    (batch executor; all threads by default, one in a Spark task, where the cores are Spark's
    to share out). Every batch path writes what this returns, the pandas and Spark engines
    alike: there is no option to leave the outlook out."""
    check_export(bundle, export)
    ix = index_export(export)  # once, for the open entities and their features
    entities = open_entities(bundle, export, as_of, build_journeys(ix)).reset_index(drop=True)
    out = entities.copy()
    X = bundle.features_for_export(ix, entities)
    out["probability"] = bundle.predict(X, threads=threads)
    return with_outlook(out, bundle, X)


def check_table_columns(bundle: ModelBundle, frame: pd.DataFrame, source: SourceFile) -> None:
    """Refuse a table the model cannot read as it was trained: a column it uses is absent, or
    a column it read as numbers holds text. Either way every row would still get a score,
    from values made missing without a word."""
    absent = [c.name for c in bundle.columns if c.name not in frame]
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5
                                         else "")
        raise PropensityError(f"{source.name}: {len(absent)} of the model's "
                              f"{len(bundle.columns)} columns are absent ({shown}); score a "
                              "table with the columns the model was trained on")
    for col in bundle.columns:
        if col.categories is None and (error := unreadable_number(
                frame[col.name], source, col.name, np.arange(len(frame)))) is not None:
            raise error


def score_table(bundle: ModelBundle, frame: pd.DataFrame) -> pd.DataFrame:
    """Every row of a single table, raw values as read (a target column is ignored); the id
    column, or the row's spreadsheet number when the model has none."""
    p = bundle.predict(bundle.features_for_table(frame), threads=0)
    if bundle.id_column and bundle.id_column in frame:
        ids = frame[bundle.id_column].astype("str").to_numpy()
        return pd.DataFrame({bundle.id_column: ids, "probability": p})
    return pd.DataFrame({"row": np.arange(2, len(frame) + 2), "probability": p})


def score_records(bundle: ModelBundle, records: Sequence[Mapping[str, Any]], *,
                  explain: bool = True) -> Scored:
    """Rows of a single-table model as mappings of column -> value."""
    return score_matrix(bundle, bundle.features_for_records(records), explain)


def score_account_rows(bundle: ModelBundle, frame: pd.DataFrame) -> tuple[pd.DataFrame, Scored]:
    """Contact rows -> one score per (account, latest as_of), by the batch code (an account's
    features are its leads' features summed up, so they need the small export)."""
    export, entities = rows_to_export(frame)
    accounts = entities.assign(account_id=export.leads["account_id"].to_numpy()).dropna(
        subset=["account_id"]).groupby("account_id", as_index=False)["as_of"].max()
    X = bundle.features_for_export(export, accounts)
    return accounts, score_matrix(bundle, X, explain=True)


def score_rows(bundle: ModelBundle, frame: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc: rows in, one probability per lead (or account) out."""
    frame = frame.reset_index(drop=True)
    if bundle.kind == "table":
        scored = score_records(bundle, frame.to_dict("records"), explain=False)
        out = pd.DataFrame({"probability": scored.probability})
        if bundle.id_column and bundle.id_column in frame:
            out.insert(0, bundle.id_column, frame[bundle.id_column].astype("str").to_numpy())
        return out
    if target_named(bundle.target).entity is ACCOUNT:
        accounts, scored = score_account_rows(bundle, frame)
        return pd.DataFrame({"account_id": accounts["account_id"].to_numpy(),
                             "probability": scored.probability})
    read = read_records(bundle, frame.to_dict("records"), datetime.now(UTC), explain=False,
                        outlook=False)
    answered = score_read([read], ThresholdSet())[0]
    return with_outlook(pd.DataFrame({"lead_id": read.lead_ids,
                                      "probability": answered.probability}),
                        bundle, answered.X)
