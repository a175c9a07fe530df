"""The naive-Bayes baseline (Odoo's predictive lead scoring) of a Spark training report, the
same figure the pandas engine reports.

Odoo's table needs each closed lead's stage history, which the driver never holds: each
partition (whole leads with their stages, events and opportunities) gives its leads closed
before the cutoff (team, fields, the stage each closed in, won) and its holdout rows' fields
and stage as of their own time, by the pandas engine's functions (`odoo_history.closed_leads`,
`open_lead_fields`). The driver counts the one table from every closed lead (`fit_table`: sums of
whole counts, so the partitioning cannot change a cell) and scores the holdout with it,
exactly as `baselines.odoo_naive_bayes` does on one machine. Lead models only; an account's
baseline sums over its leads across partitions and is not computed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from propensity.funnel.journeys import build_journeys
from propensity.models.odoo_pls import fit_table, probability
from propensity.models.train_config import TrainConfig
from propensity.odoo_history import STAGE, TAG, closed_leads, lead_values, open_lead_fields
from propensity.snapshots import holdout_split
from propensity.spark.export import SparkExport
from propensity.spark.partition import each_partition, keyed_union, layout, part_export
from propensity.spark.session import to_pandas

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

TAG_JOIN = "\x1f"
"""Between a lead's tags in the Spark rows (a character no tag holds)."""


def _schema(fields: list[str]) -> StructType:
    from pyspark.sql.types import BooleanType, StringType, StructField, StructType, TimestampType

    return StructType([
        StructField("closed", BooleanType()), StructField("lead_id", StringType()),
        StructField("as_of", TimestampType()), StructField("won", BooleanType()),
        StructField("team", StringType()), StructField(STAGE, StringType()),
        *[StructField(f, StringType()) for f in fields]])


def _text(values: pd.Series, field: str) -> np.ndarray:
    """A field's values as Spark text: missing as null, tags joined."""
    if field == TAG:
        return np.array([TAG_JOIN.join(v) for v in values], dtype=object)
    return np.array([None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)
                     for v in values], dtype=object)


def _rows(values: pd.DataFrame, fields: list[str], closed: bool, lead_id: np.ndarray,
          as_of: pd.Series | None) -> pd.DataFrame:
    n = len(values)
    out = pd.DataFrame({"closed": np.full(n, closed),
                        "lead_id": np.array([str(v) for v in lead_id], dtype=object)})
    out["as_of"] = (np.full(n, np.datetime64("NaT"), dtype="datetime64[us]") if as_of is None
                    else as_of.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy())
    out["won"] = np.array([bool(v) for v in values["won"]] if closed else [None] * n,
                          dtype=object)
    for f in ["team", STAGE, *fields]:
        out[f] = _text(values[f], f) if f in values else np.full(n, None, dtype=object)
    return out


def _odoo_frame(rows: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """Spark rows back as `odoo_pls` frames (team, stage_id, fields, tag_id as tuples)."""
    out = rows[["team", STAGE, *fields]].astype(object)
    out = out.where(out.notna(), None)
    if TAG in out:
        out[TAG] = [tuple(t for t in (v or "").split(TAG_JOIN) if t) for v in out[TAG]]
    return out.reset_index(drop=True)


def spark_odoo_baseline(export: SparkExport, config: TrainConfig, times: list[pd.Timestamp],
                        holdout: pd.DataFrame, local_leads: pd.DataFrame,
                        buckets: int | None = None) -> np.ndarray:
    """Odoo's probability (0..1) of each holdout row (lead_id, as_of), its table counted from
    the leads closed before the holdout cutoff."""
    target, cfg = config.target, config.odoo
    horizon, stale = config.snapshots.horizon_days, config.snapshots.stale_days
    _, test_times = holdout_split(times, config.snapshots.horizon_days, config.holdout_share)
    cutoff = test_times[0]
    exclude = export.manifest.post_outcome_columns("leads")
    fields = [c for c in lead_values(local_leads.iloc[:0], cfg, exclude).columns if c != "team"]
    lay = layout(export)

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        part = part_export(pdf, lay)
        if not len(part.leads):
            return pd.DataFrame(columns=["closed", "lead_id", "as_of", "won", "team", STAGE,
                                         *fields])
        j = build_journeys(part)
        ids = part.leads["lead_id"].astype("str").to_numpy()
        closed = closed_leads(part, cutoff, cfg, stale_days=stale, journeys=j)
        held = target.entities(part, test_times, horizon, journeys=j,
                               snapshots=config.snapshots)[["lead_id", "as_of"]]
        held = held.assign(lead_id=held["lead_id"].astype("str")).reset_index(drop=True)
        opened = open_lead_fields(part, held, cfg, journeys=j)
        out = pd.concat([
            _rows(closed, fields, True, ids[closed.index.to_numpy()], None),
            _rows(opened, fields, False, held["lead_id"].to_numpy(), held["as_of"])],
            ignore_index=True)
        # numpy objects: pandas' own text columns, concatenated, reach Arrow as chunked
        # arrays, which Spark cannot take
        return out.astype({c: object for c in out.columns if c not in ("closed", "as_of")})

    got = to_pandas(each_partition(keyed_union(export, lay, buckets), run, _schema(fields)))
    is_closed = got["closed"].to_numpy(dtype=bool)
    history = _odoo_frame(got[is_closed], fields).assign(
        won=got.loc[is_closed, "won"].to_numpy(dtype=bool))
    table = fit_table(history, tuple(export.manifest.stages))
    scored = got[~is_closed].reset_index(drop=True)
    p = probability(table, _odoo_frame(scored, fields)) / 100
    at = pd.to_datetime(scored["as_of"]).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    by_key = pd.Series(p, index=pd.MultiIndex.from_arrays([scored["lead_id"].to_numpy(), at]))
    keys = pd.MultiIndex.from_arrays([holdout["lead_id"].astype("str").to_numpy(),
                                      holdout["as_of"]])
    return by_key.reindex(keys).to_numpy(dtype="float64")
