"""Realised performance: the scores a model served, joined with the outcomes the CRM reported.

The unit is a served score: one per (lead, as_of), the last one served when a CRM asked twice.
Its label is whether the lead converted within the model's horizon after its as_of (the same
label training used). A label is known once the horizon has passed (`now`); until then the
score counts only toward what is expected from the calibrated probabilities: the expected
conversions (their sum) and expected precision (their mean among MQLs). Realised figures are
computed on matured scores only, so a young week is not read as a bad one.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel
from sklearn.metrics import roc_auc_score

from propensity.database import score_log

BAND_WIDTH = 10
"""Calibration bands: scores 0-9, 10-19, ..., 90-100."""


def served_scores(engine: sa.Engine, model: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Scores served with as_of in [start, end) (scored_at for rows logged before as_of was)."""
    s = score_log
    when = sa.func.coalesce(s.c.as_of, s.c.scored_at)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(s.c.lead_id, when.label("as_of"), s.c.scored_at,
                                      s.c.probability, s.c.score, s.c.model_version).where(
            s.c.model_name == model, when >= start, when < end)).all()
    frame = pd.DataFrame(rows, columns=["lead_id", "as_of", "scored_at", "probability", "score",
                                        "model_version"])
    for col in ("as_of", "scored_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return (frame.sort_values("scored_at").drop_duplicates(["lead_id", "as_of"], keep="last")
            .sort_values(["as_of", "lead_id"]).reset_index(drop=True))


def label_scores(scores: pd.DataFrame, converted_at: pd.Series, horizon_days: int,
                 now: pd.Timestamp) -> pd.DataFrame:
    """`matured` (the horizon has passed) and `label` (converted within it) per score."""
    conv = pd.to_datetime(converted_at, utc=True).reindex(
        scores["lead_id"].to_numpy()).set_axis(scores.index)
    horizon = pd.Timedelta(days=horizon_days)
    label = (conv > scores["as_of"]) & (conv <= scores["as_of"] + horizon)
    return scores.assign(label=label.fillna(False).astype("int8"),
                         matured=(scores["as_of"] + horizon <= now).to_numpy())


class Band(BaseModel):
    band: str
    leads: int
    predicted: float
    realised: float | None
    gap_points: float | None
    """|predicted - realised| in percentage points."""


class Figures(BaseModel):
    period: str
    leads: int
    matured: int
    mqls: int
    expected_conversions: float
    expected_precision: float | None
    converted: int | None
    precision: float | None
    recall: float | None
    auc: float | None


class Performance(BaseModel):
    model: str
    horizon_days: int
    mql_threshold: float
    overall: Figures
    weeks: list[Figures]
    bands: list[Band]
    """Calibration of the matured scores of the whole window."""


def _figures(period: str, part: pd.DataFrame, mql: float) -> Figures:
    flagged = part["score"] >= mql
    ripe = part[part["matured"]]
    ripe_flagged = ripe["score"] >= mql
    y = ripe["label"].to_numpy()
    return Figures(
        period=period, leads=len(part), matured=len(ripe), mqls=int(flagged.sum()),
        expected_conversions=float(part["probability"].sum()),
        expected_precision=float(part.loc[flagged, "probability"].mean()) if flagged.any()
        else None,
        converted=int(y.sum()) if len(ripe) else None,
        precision=float(ripe.loc[ripe_flagged, "label"].mean()) if ripe_flagged.any() else None,
        recall=float((ripe_flagged & (ripe["label"] == 1)).sum() / y.sum()) if y.sum() else None,
        auc=float(roc_auc_score(y, ripe["probability"])) if len(np.unique(y)) == 2 else None)


def calibration_bands(labelled: pd.DataFrame) -> list[Band]:
    ripe = labelled[labelled["matured"]]
    band = np.minimum(ripe["score"].to_numpy() // BAND_WIDTH, 100 // BAND_WIDTH - 1)
    out = []
    for b, part in ripe.groupby(band):
        out.append(_band(int(b), len(part), float(part["probability"].mean()),
                         float(part["label"].mean())))
    return out


def band_label(b: int) -> str:
    """Score band b's name: "0-9", ..., "90-100" (the last holds 100)."""
    lo = b * BAND_WIDTH
    hi = 100 if lo + BAND_WIDTH >= 100 else lo + BAND_WIDTH - 1
    return f"{lo}-{hi}"


def _band(b: int, leads: int, predicted: float, realised: float) -> Band:
    return Band(band=band_label(b), leads=leads, predicted=predicted, realised=realised,
                gap_points=abs(predicted - realised) * 100)


def performance(scores: pd.DataFrame, converted_at: pd.Series, *, model: str,
                horizon_days: int, mql: float, now: pd.Timestamp) -> Performance:
    labelled = label_scores(scores, converted_at, horizon_days, now)
    week = labelled["as_of"].dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time
    weeks = [_figures(f"{w:%Y-%m-%d}", part, mql)
             for w, part in labelled.groupby(week.to_numpy(), sort=True)]
    return Performance(model=model, horizon_days=horizon_days, mql_threshold=mql,
                       overall=_figures("all", labelled, mql), weeks=weeks,
                       bands=calibration_bands(labelled))


def _cell_figures(period: str, c: dict[str, np.ndarray], mql: float) -> Figures:
    """`_figures` from cells (counts per day, score and probability bucket): the same
    numbers, the AUC ranking probabilities to the bucket (0.1 point)."""
    from propensity.monitoring.aggregates import auc_of

    flagged = c["score"] >= mql
    leads, psum, ripe = c["leads"], c["probability_sum"], c["matured"]
    r_leads, r_conv = leads[ripe], c["converted"][ripe]
    r_flagged = flagged[ripe]
    mqls, matured, y = int(leads[flagged].sum()), int(r_leads.sum()), int(r_conv.sum())
    return Figures(
        period=period, leads=int(leads.sum()), matured=matured, mqls=mqls,
        expected_conversions=float(psum.sum()),
        expected_precision=float(psum[flagged].sum() / mqls) if mqls else None,
        converted=y if matured else None,
        precision=float(r_conv[r_flagged].sum() / r_leads[r_flagged].sum())
        if r_leads[r_flagged].sum() else None,
        recall=float(r_conv[r_flagged].sum() / y) if y else None,
        auc=auc_of(c["bucket"][ripe], r_leads, r_conv) if matured else None)


def performance_of_cells(cells: pd.DataFrame, converted: pd.DataFrame, *, model: str,
                         horizon_days: int, mql: float) -> Performance:
    """`performance` from `aggregates.served_cells` and `aggregates.converted_cells`: what
    the report computes, at the cost of the window's days rather than its scores (numpy
    arrays throughout: a pandas merge and a groupby per week cost more than the rest)."""
    ordinals: dict[object, int] = {}

    def key(frame: pd.DataFrame, matured: np.ndarray) -> np.ndarray:
        day = np.array([ordinals.setdefault(d, d.toordinal()) for d in frame["day"]], "int64")
        return (((day * 128 + frame["score"].to_numpy(dtype="int64")) * 2048
                 + frame["bucket"].to_numpy(dtype="int64")) * 2 + matured)

    c = {name: cells[name].to_numpy() for name in ("score", "bucket", "leads",
                                                    "probability_sum")}
    c["matured"] = cells["matured"].to_numpy(dtype=bool)
    c["converted"] = np.zeros(len(cells), "int64")
    if len(converted) and len(cells):  # the matured cells' conversions (a left join)
        mine = key(cells, c["matured"].astype("int64"))
        theirs = key(converted, np.ones(len(converted), "int64"))
        order = np.argsort(mine, kind="stable")
        at = np.searchsorted(mine, theirs, sorter=order).clip(max=len(mine) - 1)
        found = mine[order[at]] == theirs
        np.add.at(c["converted"], order[at[found]], converted["converted"].to_numpy(
            dtype="int64")[found])
    weeks = []
    if len(cells):
        days = cells["day"].to_numpy()
        names = sorted(set(days))
        for w in names:
            mask = days == w
            weeks.append(_cell_figures(f"{w:%Y-%m-%d}", {k: v[mask] for k, v in c.items()},
                                       mql))
    ripe = c["matured"]
    band = np.minimum(c["score"][ripe] // BAND_WIDTH, 100 // BAND_WIDTH - 1)
    bands = []
    for b in np.unique(band):
        mask = band == b
        n = int(c["leads"][ripe][mask].sum())
        bands.append(_band(int(b), n, float(c["probability_sum"][ripe][mask].sum() / n),
                           float(c["converted"][ripe][mask].sum() / n)))
    return Performance(model=model, horizon_days=horizon_days, mql_threshold=mql,
                       overall=_cell_figures("all", c, mql), weeks=weeks, bands=bands)
