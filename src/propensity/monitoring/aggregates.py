"""Served scores aggregated where it is cheap: per model, as_of day, score and probability to
0.1 point, in the database, so a monitoring report costs the days of its window, not the rows
of the score log.

The unit is the one `performance.served_scores` keeps: one score per (model, lead, as_of), the
last one served (by scored_at, then id). One SQL statement says how the deduplicated cells
change when the log grows from id `lo` to id `hi` (a score that replaces an earlier one for
the same lead and as_of adds itself and takes the earlier one away); the same statement,
over a time range from nothing, gives the cells of that range live. The database does the
work: the server's thread waits on a socket without the GIL.

`fold` keeps `served_score_days` up to date, a chunk of ids per transaction, claimed with a
compare-and-set on `monitoring_folds` so several workers never add the same ids twice. On
PostgreSQL ids are folded once they have settled (`SETTLE_SECONDS` after they were seen): a
transaction that took an id but has not committed yet must not be skipped. A report adds the
cells of the ids past the fold live, and reads live the few spans whole days cannot answer: a
window's partial first and last days, and the day the horizon's maturity boundary cuts.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from propensity.database import monitoring_folds, outcomes, score_log, served_score_days
from propensity.timestamps import as_utc

BUCKETS = 1000
"""Probability buckets per unit (0.1 point): the resolution the AUC ranks scores at."""
FOLD = "served_scores"
FOLD_CHUNK = 50_000
SETTLE_SECONDS = 5.0
CELLS = ["model_name", "day", "score", "bucket", "matured", "leads", "probability_sum"]

_AT = sa.func.coalesce(score_log.c.as_of, score_log.c.scored_at)
"""The time a logged score describes (the expression `ix_score_log_model_as_of` indexes)."""


def _day(dialect: str, at: Any) -> Any:
    if dialect == "postgresql":
        return sa.func.date(sa.func.timezone("UTC", at))
    return sa.func.substr(at, 1, 10)  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)


def _bucket(dialect: str, p: Any) -> Any:
    if dialect == "postgresql":
        return sa.cast(sa.func.floor(p * BUCKETS), sa.Integer)
    return sa.cast(p * BUCKETS, sa.Integer)  # SQLite's cast truncates: floor for p >= 0


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def changes(dialect: str, *, lo: int = 0, hi: int | None = None, model: str | None = None,
            since: datetime | None = None, until: datetime | None = None,
            matured_by: datetime | None = None) -> sa.Select[Any]:
    """The deduplicated cells' change from the log up to id `lo` to the log up to id `hi`
    (all of it when None), for the keys the rows in that range touch, or, with `since` /
    `until`, for the keys whose as_of is in [since, until); of `model` only when given (an id
    range is better read for every model: SQLite, without statistics, would look the rows up
    by model rather than by id). `matured_by` splits the cells by as_of <= it (else they all
    count as not matured)."""
    s = score_log
    keys = []
    if since is None and until is None:
        keys.append(s.c.id > lo)
    if hi is not None:
        keys.append(s.c.id <= hi)
    if model is not None:
        keys.append(s.c.model_name == model)
    if since is not None:
        keys.append(since <= _AT)
    if until is not None:
        keys.append(until > _AT)
    touched = sa.select(s.c.model_name, s.c.lead_id, _AT.label("at")).where(
        *keys).distinct().subquery("touched")
    old = s.c.id <= lo
    part = (s.c.model_name, s.c.lead_id, _AT)
    order = (s.c.scored_at.desc(), s.c.id.desc())
    cand = sa.select(
        s.c.model_name, _AT.label("at"), s.c.probability, s.c.score,
        sa.func.row_number().over(partition_by=part, order_by=order).label("rn_new"),
        sa.func.row_number().over(partition_by=(*part, old), order_by=order).label("rn_old"),
        sa.case((old, 1), else_=0).label("old"),
    ).join(touched, sa.and_(s.c.model_name == touched.c.model_name,
                            s.c.lead_id == touched.c.lead_id, touched.c.at == _AT))
    if hi is not None:
        cand = cand.where(s.c.id <= hi)
    c = cand.subquery("cand")
    sign = (sa.case((c.c.rn_new == 1, 1), else_=0)
            - sa.case((sa.and_(c.c.old == 1, c.c.rn_old == 1), 1), else_=0))
    day, bucket = _day(dialect, c.c.at), _bucket(dialect, c.c.probability)
    groups = [c.c.model_name, day, c.c.score, bucket]
    if matured_by is not None:
        matured: Any = sa.case((c.c.at <= matured_by, 1), else_=0)
        groups.append(matured)
    else:
        matured = sa.literal_column("0")  # not a GROUP BY term: SQLite reads 0 as a position
    return (sa.select(c.c.model_name, day.label("day"), c.c.score, bucket.label("bucket"),
                      matured.label("matured"), sa.func.sum(sign).label("leads"),
                      sa.func.sum(sign * c.c.probability).label("probability_sum"))
            .where(sign != 0).group_by(*groups))


def _add(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Add cells to `served_score_days` (insert, or add to the stored counts)."""
    t = served_score_days
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        stmt = pg_insert(t)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert
        stmt = sqlite_insert(t)  # type: ignore[assignment]
    stmt = stmt.on_conflict_do_update(
        index_elements=["model_name", "day", "score", "bucket"],
        set_={c: t.c[c] + stmt.excluded[c] for c in ("leads", "probability_sum")})
    for at in range(0, len(rows), 500):
        conn.execute(stmt, rows[at:at + 500])


def _state(engine: sa.Engine, now: datetime) -> tuple[int, int]:
    """(last folded id, the id folding may reach now), noting what the log holds now."""
    f = monitoring_folds
    with engine.begin() as conn:
        newest = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(score_log.c.id), 0))
                                  ).scalar_one())
        row = conn.execute(sa.select(f.c.last_id, f.c.seen_id, f.c.seen_at).where(
            f.c.name == FOLD)).first()
        if row is None:
            conn.execute(f.insert().values(name=FOLD, last_id=0, seen_id=newest, seen_at=now))
            return 0, newest if engine.dialect.name == "sqlite" else 0
        last, seen, seen_at = int(row.last_id), int(row.seen_id), row.seen_at
        if engine.dialect.name == "sqlite":  # one writer at a time: ids commit in order
            return last, newest
        aware = as_utc(seen_at)
        if now - aware >= timedelta(seconds=SETTLE_SECONDS):
            conn.execute(f.update().where(f.c.name == FOLD, f.c.seen_at == seen_at)
                         .values(seen_id=newest, seen_at=now))
            return last, seen
        return last, last


def fold(engine: sa.Engine, now: datetime | None = None, chunk: int = FOLD_CHUNK) -> int:
    """Add the settled log rows not folded yet to `served_score_days`; returns the last id
    folded. Safe beside other workers: a chunk another one claimed first is left to it."""
    last, target = _state(engine, now or datetime.now(UTC))
    f = monitoring_folds
    while last < target:
        hi = min(last + chunk, target)
        with engine.begin() as conn:
            rows = conn.execute(changes(engine.dialect.name, lo=last, hi=hi)).all()
            claimed = conn.execute(f.update().where(f.c.name == FOLD, f.c.last_id == last)
                                   .values(last_id=hi)).rowcount
            if claimed != 1:
                conn.rollback()
                break
            _add(conn, [{"model_name": r.model_name, "day": _as_date(r.day), "score": r.score,
                         "bucket": r.bucket, "leads": r.leads,
                         "probability_sum": r.probability_sum} for r in rows])
        last = hi
    return last


def _spans(start: datetime, end: datetime, cutoff: datetime) -> tuple[date, date, list[
        tuple[datetime, datetime]]]:
    """Whole days [first, last) the aggregates answer, and the spans read live: the window's
    partial first and last days and the day the maturity cutoff falls in."""
    def midnight(t: datetime) -> datetime:  # datetime, not pandas: years past 2262 too
        return datetime.combine(t.date(), time(0), tzinfo=t.tzinfo)

    first = start if midnight(start) == start else midnight(start) + timedelta(days=1)
    last = midnight(end)
    if first >= last:
        return first.date(), first.date(), [(start, end)]
    live = [(start, first)] if start < first else []
    if last < end:
        live.append((last, end))
    cut = midnight(cutoff)
    if first <= cut < last:
        live.append((cut, cut + timedelta(days=1)))
    return first.date(), last.date(), sorted(live)


KEY = 2048
"""A cell's key within its day: score * KEY + bucket (buckets run 0..BUCKETS)."""
MAX_CACHED_DAYS = 2 * 366


@dataclass
class _StoredDays:
    """One model's `served_score_days` as they stood when the fold had reached `last_id`, by
    day (ordinal -> cell keys, leads, probability sums). Only the fold writes that table, and
    it writes the day of each score it adds, so after the fold moves on, the days of the log
    rows it took are the only ones to read again: a report reads the few days that changed,
    not the tens of thousands of cells of its window."""

    last_id: int = -1
    days: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


_STORED: weakref.WeakKeyDictionary[sa.Engine, dict[str, _StoredDays]] = (
    weakref.WeakKeyDictionary())
_STORED_LOCK = threading.Lock()


def _folded(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(monitoring_folds.c.last_id).where(
        monitoring_folds.c.name == FOLD)).scalar_one_or_none() or 0)


def _touched_days(conn: sa.Connection, model: str, lo: int, hi: int) -> set[int]:
    """The as_of days of the model's log rows with ids in (lo, hi]: the days whose stored
    cells the fold changed between those ids (a score replacing another has its day)."""
    day = _day(conn.dialect.name, _AT)
    rows = conn.execute(sa.select(day).where(score_log.c.id > lo, score_log.c.id <= hi,
                                             score_log.c.model_name == model).distinct())
    return {_as_date(r[0]).toordinal() for r in rows}


def _read_days(conn: sa.Connection, model: str, first: int, last: int) -> tuple[
        int, dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The stored cells of days [first, last) (ordinals), every one of them (an empty day
    too), with the fold's id they stand at: one statement, so one snapshot of both."""
    f, d = monitoring_folds, served_score_days
    joined = f.outerjoin(d, sa.and_(d.c.model_name == model,
                                    d.c.day >= date.fromordinal(first),
                                    d.c.day < date.fromordinal(last), d.c.leads != 0))
    rows = conn.execute(sa.select(f.c.last_id, d.c.day, d.c.score, d.c.bucket, d.c.leads,
                                  d.c.probability_sum).select_from(joined).where(
        f.c.name == FOLD)).cursor.fetchall()
    last_id = int(rows[0][0]) if rows else 0
    found = [r for r in rows if r[1] is not None]
    out: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    empty = (np.zeros(0, "int64"), np.zeros(0, "int64"), np.zeros(0, "float64"))
    if found:
        ordinals: dict[Any, int] = {}
        day = np.fromiter((ordinals.setdefault(r[1], _as_date(r[1]).toordinal())
                           for r in found), "int64", len(found))
        key = np.fromiter((r[2] * KEY + r[3] for r in found), "int64", len(found))
        leads = np.fromiter((r[4] for r in found), "int64", len(found))
        psum = np.fromiter((r[5] for r in found), "float64", len(found))
        order = np.argsort(day, kind="stable")
        day, key, leads, psum = day[order], key[order], leads[order], psum[order]
        bounds = np.flatnonzero(np.diff(day)) + 1
        for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(day)], strict=True):
            out[int(day[lo])] = (key[lo:hi], leads[lo:hi], psum[lo:hi])
    for k in range(first, last):
        out.setdefault(k, empty)
    return last_id, out


def _stored_days(engine: sa.Engine, conn: sa.Connection, model: str, first: date,
                 last: date) -> tuple[int, dict[int, tuple[np.ndarray, np.ndarray,
                                                          np.ndarray]]]:
    """The stored cells of days [first, last) and the fold's id they stand at, from this
    process's copy of the table, refreshed where the fold changed it since (exact: the days
    of the rows folded since are read again, in the snapshot of the id they are read at)."""
    want = range(first.toordinal(), last.toordinal())
    with _STORED_LOCK:
        cache = _STORED.setdefault(engine, {}).setdefault(model, _StoredDays())
        now = _folded(conn)
        for _ in range(8):  # each pass catches up with a fold that ran meanwhile
            if now < cache.last_id:  # the table went back (a fresh database): start again
                cache.days.clear()
            elif now > cache.last_id and cache.days:
                for k in _touched_days(conn, model, cache.last_id, now):
                    cache.days.pop(k, None)
            cache.last_id = now
            missing = [k for k in want if k not in cache.days]
            if not missing:
                return now, {k: cache.days[k] for k in want}
            if len(cache.days) + len(missing) > MAX_CACHED_DAYS:
                cache.days.clear()  # bounded: the whole window is read again
                missing = list(want)
            read_id, days = _read_days(conn, model, missing[0], missing[-1] + 1)
            cache.days.update(days)
            if read_id == now:
                return now, {k: cache.days[k] for k in want}
            now = read_id  # days read at read_id; the rest stand at last_id: catch up
        cache.days.clear()
        cache.last_id = -1
        read_id, days = _read_days(conn, model, want.start, want.stop)
        return read_id, days


def _week(day: np.ndarray) -> np.ndarray:
    """The Monday (ordinal) of each day (ordinal): ordinal 1, 0001-01-01, is a Monday."""
    return day - (day - 1) % 7


def _summed(day: np.ndarray, key: np.ndarray, matured: np.ndarray,
            values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                               list[np.ndarray]]:
    """Cells summed by (week, key, matured), in that order: (weeks, keys, matured, sums)."""
    combined = (_week(day) * (KEY * 128) + key) * 2 + matured.astype("int64")
    unique, at = np.unique(combined, return_inverse=True)
    sums = [np.bincount(at, weights=v, minlength=len(unique)) for v in values]
    return (unique // 2 // (KEY * 128), unique // 2 % (KEY * 128), (unique % 2).astype(bool),
            sums)


def _week_dates(weeks: np.ndarray) -> list[date]:
    dates = {int(w): date.fromordinal(int(w)) for w in np.unique(weeks)}
    return [dates[w] for w in weeks.tolist()]


def _no_cells() -> pd.DataFrame:
    return pd.DataFrame({"day": pd.Series([], dtype=object),
                         "score": pd.Series([], dtype="int64"),
                         "bucket": pd.Series([], dtype="int64"),
                         "matured": pd.Series([], dtype=bool),
                         "leads": pd.Series([], dtype="int64"),
                         "probability_sum": pd.Series([], dtype="float64")})


_Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(day ordinal, score * KEY + bucket, matured, leads, probability_sum) of some cells."""


def _stored_parts(days: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
                  cut: int) -> list[_Part]:
    """The aggregates' whole days, oldest first; the cutoff's day is left to the live read
    because only part of it is matured."""
    return [(np.full(len(c[0]), k, "int64"), c[0], np.full(len(c[0]), k < cut), c[1], c[2])
            for k, c in sorted(days.items()) if k != cut and len(c[0])]


def _tail_part(tail: Sequence[Any], model: str, first: date, last: date,
               cut: int) -> list[_Part]:
    """Scores logged since the last fold that fall on the stored days: the fold had not seen
    them yet, so they are added here rather than waiting for the next fold."""
    lo, hi = first.toordinal(), last.toordinal()
    rows = [(_as_date(r.day).toordinal(), r.score * KEY + r.bucket, r.leads, r.probability_sum)
            for r in tail if r.model_name == model]
    rows = [r for r in rows if lo <= r[0] < hi and r[0] != cut]
    if not rows:
        return []
    return [(np.array([r[0] for r in rows], "int64"),
             np.array([r[1] for r in rows], "int64"),
             np.array([r[0] < cut for r in rows], bool),
             np.array([r[2] for r in rows], "int64"),
             np.array([r[3] for r in rows], "float64"))]


def _live_parts(spans: list[Sequence[Any]]) -> list[_Part]:
    """The partial days read live from the score log, each row already marked matured."""
    return [(np.array([_as_date(r.day).toordinal() for r in span], "int64"),
             np.array([r.score * KEY + r.bucket for r in span], "int64"),
             np.array([bool(r.matured) for r in span], bool),
             np.array([r.leads for r in span], "int64"),
             np.array([r.probability_sum for r in span], "float64"))
            for span in spans if span]


def _weekly_cells(parts: list[_Part]) -> pd.DataFrame:
    """Every part summed by (week, score, bucket, matured), empty cells dropped."""
    if not parts:
        return _no_cells()
    day, key, matured, leads, psum = (np.concatenate(c) for c in zip(*parts, strict=True))
    weeks, keys, ripe, (n, p) = _summed(day, key, matured, [leads.astype("float64"), psum])
    keep = n != 0
    return pd.DataFrame({"day": _week_dates(weeks[keep]), "score": keys[keep] // KEY,
                         "bucket": keys[keep] % KEY, "matured": ripe[keep],
                         "leads": np.rint(n[keep]).astype("int64"),
                         "probability_sum": p[keep]})


def served_cells(engine: sa.Engine, model: str, start: datetime, end: datetime,
                 matured_by: datetime) -> pd.DataFrame:
    """The deduplicated scores with as_of in [start, end) as cells (week, score, bucket,
    matured, leads, probability_sum; `day` holds the week's Monday): whole days from the
    aggregates (folded first), the rest live. Scores with as_of <= `matured_by` are
    matured."""
    fold(engine)
    dialect = engine.dialect.name
    first, last, live = _spans(start, end, matured_by)
    cut = matured_by.date().toordinal()
    with engine.connect() as conn:
        folded, days = _stored_days(engine, conn, model, first, last) if first < last else (
            _folded(conn), {})
        newest = conn.execute(sa.select(sa.func.max(score_log.c.id))).scalar() or 0
        tail = conn.execute(changes(dialect, lo=int(folded))).all() if newest > folded else []
        spans = [conn.execute(changes(dialect, model=model, since=a, until=b,
                                      matured_by=matured_by)).all() for a, b in live]
    return _weekly_cells(_stored_parts(days, cut) + _tail_part(tail, model, first, last, cut)
                         + _live_parts(spans))


def converted_cells(engine: sa.Engine, model: str, start: datetime, end: datetime,
                    matured_by: datetime, horizon_days: int,
                    conversion_stages: Sequence[str]) -> pd.DataFrame:
    """Matured deduplicated scores whose lead converted within the horizon after their as_of,
    as (week's Monday, score, bucket, converted): the query starts from the converted leads, so it
    costs their scores, not the window's."""
    s, o = score_log, outcomes
    dialect = engine.dialect.name
    conv = sa.select(o.c.lead_id, sa.func.min(o.c.at).label("c")).where(
        o.c.stage.in_(list(conversion_stages))).group_by(o.c.lead_id).subquery("conv")
    rn = sa.func.row_number().over(partition_by=(s.c.lead_id, _AT),
                                   order_by=(s.c.scored_at.desc(), s.c.id.desc()))
    cand = sa.select(_AT.label("at"), s.c.probability, s.c.score, conv.c.c, rn.label("rn")
                     ).join(conv, s.c.lead_id == conv.c.lead_id).where(
        s.c.model_name == model, start <= _AT, end > _AT, matured_by >= _AT).subquery("cand")
    if dialect == "postgresql":
        within = cand.c.c <= cand.c.at + sa.func.make_interval(0, 0, 0, horizon_days)
    else:
        within = sa.func.julianday(cand.c.c) - sa.func.julianday(cand.c.at) <= horizon_days
    day, bucket = _day(dialect, cand.c.at), _bucket(dialect, cand.c.probability)
    query = sa.select(day.label("day"), cand.c.score, bucket.label("bucket"),
                      sa.func.count().label("converted")).where(
        cand.c.rn == 1, cand.c.c > cand.c.at, within).group_by(day, cand.c.score, bucket)
    with engine.connect() as conn:
        rows = conn.execute(query).all() if matured_by >= start else []
    day = np.array([_as_date(r.day).toordinal() for r in rows], "int64")
    key = np.array([r.score * KEY + r.bucket for r in rows], "int64")
    weeks, keys, _, (n,) = _summed(day, key, np.zeros(len(rows), bool),
                                   [np.array([r.converted for r in rows], "float64")])
    return pd.DataFrame({"day": pd.Series(_week_dates(weeks), dtype=object),
                         "score": keys // KEY, "bucket": keys % KEY,
                         "converted": np.rint(n).astype("int64")})


def auc_of(bucket: np.ndarray, leads: np.ndarray, converted: np.ndarray) -> float | None:
    """ROC AUC from counts per probability bucket (scores in one bucket are ties)."""
    order = np.unique(bucket, return_inverse=True)[1]
    pos = np.bincount(order, weights=converted)
    neg = np.bincount(order, weights=leads - converted)
    p, n = pos.sum(), neg.sum()
    if p == 0 or n == 0:
        return None
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (p * n))
