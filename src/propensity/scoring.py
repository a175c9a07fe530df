"""Batch scoring: every lead (or account) open at a time, from a registered model.

Open at T means created before T and neither converted nor ended before T; features use only
rows dated before T, so scoring an export as of T gives the same numbers as scoring the same
export cut off at T.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from propensity.export import load_export, read_raw, type_attribute
from propensity.models.bundle import ModelBundle
from propensity.snapshots import account_entities, lead_entities
from propensity.tables import CrmExport


def open_entities(bundle: ModelBundle, export: CrmExport, as_of: pd.Timestamp) -> pd.DataFrame:
    ts = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    horizon = bundle.horizon_days or 90
    if bundle.target == "account-propensity":
        return account_entities(export, [ts], horizon, labelled=False)
    return lead_entities(export, [ts], horizon, labelled=False)[["lead_id", "as_of"]]


def score_export_frame(bundle: ModelBundle, export: CrmExport,
                       as_of: pd.Timestamp) -> pd.DataFrame:
    entities = open_entities(bundle, export, as_of)
    X = bundle.features_for_export(export, entities)
    out = entities.reset_index(drop=True).copy()
    out["probability"] = bundle.predict_features(X.reset_index(drop=True))
    return out


def score_export(bundle: ModelBundle, path: Path, as_of: pd.Timestamp, *,
                 drop_bad_rows: bool = False) -> pd.DataFrame:
    return score_export_frame(bundle, load_export(path, drop_bad_rows=drop_bad_rows), as_of)


def score_table(bundle: ModelBundle, path: Path) -> pd.DataFrame:
    """Every row of a single table; a target column, if present, is ignored."""
    frame, _ = read_raw(Path(path))
    typed = pd.DataFrame({c: type_attribute(frame[c]) for c in frame.columns})
    p = bundle.predict_features(bundle.features_for_table(typed))
    out = pd.DataFrame({"probability": p})
    if bundle.id_column and bundle.id_column in frame:
        out.insert(0, "lead_id", frame[bundle.id_column].astype("str").to_numpy())
    return out
