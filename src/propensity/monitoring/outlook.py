"""The outlook's promises against what happened: by score band, the amount expected against
the amount won (among leads that won), the days to convert expected against the days taken
(among leads that converted), and P(converted within 90 days) against the share that did.

The unit is a served score that carried an outlook (`score_log`'s outlook columns, migration
0010): one per (lead, as_of), the last served when a CRM asked twice, as realised performance
counts them. A lead's won amount is the sum of its `won` outcomes after the score's as_of; its
days to convert run from the as_of to its first conversion (the last funnel stage or a won
opportunity: the rule training labels with; a lead whose first conversion came before the
score's as_of counts as not converting after it, as a lead scored after it converted should
not have been open). Amounts and days are compared on the
leads where the outcome is known, whatever their age; the 90-day rate only on scores whose 90
days have passed (`now`), so that a young window does not read as a slow one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel

from propensity.contract import DEFAULT_STAGES
from propensity.database import outcomes, score_log
from propensity.monitoring.outcomes import WON, conversions
from propensity.monitoring.performance import BAND_WIDTH, band_label

OUTLOOK_DAYS = 90
"""The horizon of the logged P(converted within it) (`p_by_90`)."""


class OutlookBand(BaseModel):
    band: str
    leads: int
    """Scores served with an outlook in the band."""
    won: int
    """Of them, leads that won a deal with an amount after the score's as_of."""
    expected_amount: float | None
    """Mean expected amount of the leads that won..."""
    realised_amount: float | None
    """...and the mean amount they won."""
    converted: int
    expected_days: float | None
    """Median expected days to convert of the leads that converted..."""
    realised_days: float | None
    """...and the median days they took."""
    matured: int
    """Scores whose 90 days have passed."""
    p_by_90: float | None
    """Mean P(converted within 90 days) of the matured scores..."""
    converted_90: float | None
    """...and the share of them that converted within 90 days."""


def outlook_scores(engine: sa.Engine, model: str, start: datetime, end: datetime
                   ) -> pd.DataFrame:
    """Scores served with an outlook, as_of in [start, end), the last per (lead, as_of)."""
    s = score_log
    when = sa.func.coalesce(s.c.as_of, s.c.scored_at)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(
            s.c.lead_id, when.label("as_of"), s.c.scored_at, s.c.score, s.c.p_by_90,
            s.c.expected_days, s.c.expected_amount).where(
            s.c.model_name == model, when >= start, when < end,
            s.c.p_by_90.is_not(None))).all()
    frame = pd.DataFrame(rows, columns=["lead_id", "as_of", "scored_at", "score", "p_by_90",
                                        "expected_days", "expected_amount"])
    for col in ("as_of", "scored_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    for col in ("p_by_90", "expected_days", "expected_amount"):
        frame[col] = frame[col].astype("float64")
    return (frame.sort_values("scored_at").drop_duplicates(["lead_id", "as_of"], keep="last")
            .reset_index(drop=True))


def won_after(engine: sa.Engine, scores: pd.DataFrame) -> np.ndarray:
    """Each score's won amount after its as_of (NaN when none was won)."""
    o = outcomes.c
    leads = sorted(set(scores["lead_id"]))
    found: list[tuple[str, datetime, float]] = []
    with engine.connect() as conn:
        for at in range(0, len(leads), 5000):  # IN lists of bounded length
            found += [tuple(r) for r in conn.execute(sa.select(o.lead_id, o.at, o.amount).where(
                o.stage == WON, o.amount.is_not(None), o.lead_id.in_(leads[at:at + 5000])))]
    won = pd.DataFrame(found, columns=["lead_id", "at", "amount"])
    won["at"] = pd.to_datetime(won["at"], utc=True)
    pairs = scores[["lead_id", "as_of"]].reset_index().merge(won, on="lead_id")
    pairs = pairs[pairs["at"] > pairs["as_of"]]
    total = pairs.groupby("index")["amount"].sum()
    return total.reindex(range(len(scores))).to_numpy(dtype="float64")


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


def outlook_bands(engine: sa.Engine, model: str, start: datetime, end: datetime,
                  now: pd.Timestamp, stages: Sequence[str] = DEFAULT_STAGES
                  ) -> list[OutlookBand]:
    """Expected against realised amount and timing, per score band (empty without scores
    served with an outlook in the window)."""
    scores = outlook_scores(engine, model, start, end)
    if not len(scores):
        return []
    amount = won_after(engine, scores)
    conv = conversions(engine, stages).reindex(scores["lead_id"].to_numpy())
    days = (conv.to_numpy() - scores["as_of"].to_numpy()) / pd.Timedelta(days=1)
    days = np.where(days > 0, days, np.nan)  # converted before the score: not after it
    matured = (scores["as_of"] + pd.Timedelta(days=OUTLOOK_DAYS) <= now).to_numpy()
    band = np.minimum(scores["score"].to_numpy() // BAND_WIDTH, 100 // BAND_WIDTH - 1)
    out = []
    for b in np.unique(band):
        mine = band == b
        part = scores[mine]
        won = mine & ~np.isnan(amount) & scores["expected_amount"].notna().to_numpy()
        took = mine & ~np.isnan(days) & scores["expected_days"].notna().to_numpy()
        ripe = mine & matured
        out.append(OutlookBand(
            band=band_label(int(b)), leads=len(part), won=int(won.sum()),
            expected_amount=_mean(scores["expected_amount"].to_numpy()[won]),
            realised_amount=_mean(amount[won]), converted=int(took.sum()),
            expected_days=_median(scores["expected_days"].to_numpy()[took]),
            realised_days=_median(days[took]), matured=int(ripe.sum()),
            p_by_90=_mean(scores["p_by_90"].to_numpy()[ripe]),
            converted_90=_mean((days[ripe] <= OUTLOOK_DAYS).astype("float64"))))
    return out
