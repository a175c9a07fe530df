"""A named, versioned feature set: its configuration and the vocabulary fitted on training data.

The spec is fitted once (event types and channels seen often enough, attribute columns and
their categories) and then travels with the model, so that features built later, on a
partition of the data or on one lead posted to the scorer, have the same columns and codes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from propensity.coding import fit_vocabulary
from propensity.tables import CrmExport

CORE_CATEGORICALS = ("source", "campaign", "persona", "owner_id", "product")


class FeatureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error

    name: str = "lead-engagement"
    version: str = "1"
    windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90])
    half_life_days: float = 14.0
    trend_recent_days: int = 7
    trend_before_days: int = 21
    committee_window_days: int = 90
    min_event_type_count: int = 20
    """Event types rarer than this in the training export count as `other`."""
    max_categories: int = 200
    """Most frequent values kept per categorical attribute."""
    min_category_count: int = 25
    """Levels of a categorical attribute held by fewer leads (accounts) than this share one
    level, `__other__`: reps, campaigns or ids seen a few times would only be memorised. A
    column with no level this frequent (an id, noise) is left out, and the spec says so."""


class FeatureSpec(BaseModel):
    config: FeatureConfig
    stages: list[str]
    event_types: list[str]
    channels: list[str]
    lead_numeric: list[str]
    lead_categorical: dict[str, list[str]]
    account_numeric: list[str]
    account_categorical: dict[str, list[str]]
    has_accounts: bool
    excluded: list[str] = Field(description="post-outcome columns kept out of every feature")
    dropped: dict[str, str] = Field(default_factory=dict,
                                    description="attribute columns left out, and why")
    tables: list[str] | None = Field(
        None, description="the export's tables the spec was fitted on (None: not recorded, "
                          "as in specs fitted before 2026-11-25)")

    @property
    def key(self) -> str:
        """name@version+hash of the fitted vocabulary: what a model records it was trained on.
        (Unset fields are left out, so a spec saved before `tables` existed keeps its key.)"""
        digest = hashlib.sha256(self.model_dump_json(exclude_none=True).encode()
                                ).hexdigest()[:10]
        return f"{self.config.name}@{self.config.version}+{digest}"


@dataclass
class _Vocabularies:
    """Fits a categorical column's levels, noting (in the order met: it is part of the spec's
    key) each column dropped because no level is common enough to learn from."""
    config: FeatureConfig
    dropped: dict[str, str] = field(default_factory=dict)

    def levels(self, values: pd.Series, name: str) -> list[str]:
        levels = fit_vocabulary(values, min_count=self.config.min_category_count,
                                max_levels=self.config.max_categories)
        if not levels and values.notna().any():
            self.dropped[name] = (f"no value is held by {self.config.min_category_count} or "
                                  "more rows (an id, or too many rare levels to learn from)")
        return levels


def _lead_attributes(export: CrmExport, excluded: list[str], vocabularies: _Vocabularies
                     ) -> tuple[list[str], dict[str, list[str]]]:
    """The leads' numeric attributes, and the levels of the core categoricals the export
    fills (less the post-outcome ones) then of the other non-numeric attributes."""
    lead_cols = [c for c in CORE_CATEGORICALS if c not in excluded
                 and c in export.leads and export.leads[c].notna().any()]
    lead_numeric, lead_cat = [], {}
    for col in export.attribute_columns("leads"):
        if pd.api.types.is_numeric_dtype(export.leads[col]):
            lead_numeric.append(col)
        else:
            lead_cols.append(col)
    for col in lead_cols:
        if levels := vocabularies.levels(export.leads[col], col):
            lead_cat[col] = levels
    return lead_numeric, lead_cat


def _account_attributes(export: CrmExport, vocabularies: _Vocabularies
                        ) -> tuple[list[str], dict[str, list[str]]]:
    """The accounts' numeric attributes and the levels of the others (none without accounts)."""
    acc_numeric, acc_cat = [], {}
    if export.accounts is not None:
        for col in export.attribute_columns("accounts"):
            if pd.api.types.is_numeric_dtype(export.accounts[col]):
                acc_numeric.append(col)
            elif levels := vocabularies.levels(export.accounts[col], f"account_{col}"):
                acc_cat[col] = levels
    return acc_numeric, acc_cat


def _value_counts(values: pd.Series) -> pd.Series:
    """Rows per value as text, missing values left out (as `astype(str).value_counts()`).
    A categorical column is counted on its codes: spelling out 23M event types as strings
    first took 42 of a 1M-lead forecast's 354 s (loaded machine)."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return values.astype("str").value_counts()
    codes = values.cat.codes.to_numpy()
    n = np.bincount(codes[codes >= 0], minlength=len(values.cat.categories))
    counts = pd.Series(n, index=values.cat.categories.astype("str"), name="count")
    counts = counts.groupby(level=0).sum()  # categories equal as text count once
    return counts[counts > 0].sort_values(ascending=False, kind="stable")


def _event_vocabulary(export: CrmExport, config: FeatureConfig,
                      event_counts: tuple[pd.Series, pd.Series] | None
                      ) -> tuple[list[str], list[str]]:
    """The event types and (at most 20) channels seen often enough, from the counts given or
    from the events table."""
    if event_counts is None and export.events is not None and len(export.events):
        event_counts = (_value_counts(export.events["event_type"]),
                        _value_counts(export.events["channel"].dropna()))
    if event_counts is None:
        return [], []
    counts, ch = event_counts
    types = sorted(counts.index[counts >= config.min_event_type_count].tolist())
    channels = sorted(ch.index[ch >= config.min_event_type_count].tolist())[:20]
    return types, channels


def fit_feature_spec(export: CrmExport, config: FeatureConfig | None = None,
                     event_counts: tuple[pd.Series, pd.Series] | None = None) -> FeatureSpec:
    """The vocabulary of `export`. `event_counts` (rows per event type, per channel) stand in
    for the events table when it is too big to hold (the Spark engine counts them)."""
    config = config or FeatureConfig()
    excluded = export.manifest.post_outcome_columns("leads")
    vocabularies = _Vocabularies(config)
    lead_numeric, lead_cat = _lead_attributes(export, excluded, vocabularies)
    acc_numeric, acc_cat = _account_attributes(export, vocabularies)
    types, channels = _event_vocabulary(export, config, event_counts)
    return FeatureSpec(
        config=config, stages=list(export.stages), event_types=types, channels=channels,
        lead_numeric=lead_numeric, lead_categorical=lead_cat, account_numeric=acc_numeric,
        account_categorical=acc_cat,
        has_accounts=export.accounts is not None or (
            "account_id" in export.leads and export.leads["account_id"].notna().any()),
        excluded=[*excluded, *export.manifest.post_outcome_columns("accounts")],
        dropped=vocabularies.dropped, tables=export.table_names(),
    )

