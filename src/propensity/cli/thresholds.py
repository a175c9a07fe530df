"""`propensity thresholds show | curve | recommend | set`: marketing ops from the terminal."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from propensity.cli._common import console, err_console, fail, invalid
from propensity.targets import LEAD_CONVERSION

if TYPE_CHECKING:
    from propensity.threshold_store import ThresholdStore
    from propensity.thresholds import Curve, ThresholdSet

app = typer.Typer(help="MQL threshold and grade bands.", no_args_is_help=True)


def _store() -> ThresholdStore:
    from propensity.database import engine_for, migrate
    from propensity.settings import get_settings
    from propensity.threshold_store import ThresholdStore

    settings = get_settings()
    migrate(settings.db_url)
    return ThresholdStore(engine_for(settings.db_url), ttl=0)


def _curve() -> Curve:
    from propensity.registry import CHAMPION, configure, load_holdout, version_of
    from propensity.thresholds import threshold_curve

    version = version_of(configure(), LEAD_CONVERSION, CHAMPION)
    if version is None:
        raise fail(f"no {LEAD_CONVERSION} champion: `propensity train` first", code=1)
    return threshold_curve(load_holdout(LEAD_CONVERSION, version),
                           source=f"{LEAD_CONVERSION} v{version} holdout")


@app.command()
def show() -> None:
    """The active thresholds and their history."""
    store = _store()
    table = Table(title="MQL threshold and grade bands (newest first)")
    for c in ("version", "mql", "A", "B", "C", "by", "when", "why"):
        table.add_column(c)
    active = store.details(LEAD_CONVERSION)
    rows = store.history(LEAD_CONVERSION) or [active]
    for r in rows:
        table.add_row(str(r["version"]), f"{r['mql']:g}", f"{r['grade_a']:g}",
                      f"{r['grade_b']:g}", f"{r['grade_c']:g}", str(r["changed_by"] or "-"),
                      str(r["changed_at"] or "-")[:19], str(r["reason"]))
    console.print(table)
    _warn(store.active(LEAD_CONVERSION))


@app.command()
def curve(step: Annotated[int, typer.Option(min=1, max=50, help="Rows every N points")] = 5,
          ) -> None:
    """What each threshold means on the champion's holdout."""
    c = _curve()
    base = "" if c.base_rate is None else f" = {_p(c.base_rate)}"
    table = Table(title=f"thresholds on {c.source} ({c.converted:,} of {c.leads:,} leads "
                        f"bought{base})")
    for col in ("threshold", "MQLs/week", "precision", "recall", "exp. customers/week",
                "rate below", "lift"):
        table.add_column(col, justify="right")
    for p in c.points[::step]:
        table.add_row(str(p.threshold), _n(p.flagged_per_week), _p(p.precision), _p(p.recall),
                      _n(p.expected_customers_per_week, 2), _p(p.rate_below), _n(p.lift, 2))
    console.print(table)


def _n(v: float | None, d: int = 1) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def _p(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


@app.command()
def recommend(
    capacity: Annotated[float | None, typer.Option(help="Leads the team can work a week")] = None,
    reps: Annotated[int | None, typer.Option(help="Number of reps")] = None,
    per_rep: Annotated[float | None, typer.Option(help="Leads a rep works a week")] = None,
    min_precision: Annotated[float | None, typer.Option(help="Target precision, 0-1")] = None,
    min_recall: Annotated[float | None, typer.Option(help="Target recall, 0-1")] = None,
) -> None:
    """The threshold that maximises expected customers within capacity or a target."""
    from propensity.thresholds import recommend as pick

    if reps is not None or per_rep is not None:
        if reps is None or per_rep is None or capacity is not None:
            raise fail("--reps and --per-rep go together, instead of --capacity")
        capacity = reps * per_rep
    try:
        rec = pick(_curve(), capacity_per_week=capacity, min_precision=min_precision,
                   min_recall=min_recall)
    except ValueError as exc:
        raise fail(str(exc)) from None
    p = rec.point
    console.print(f"recommended MQL threshold: {rec.threshold} ({rec.reason}): "
                  f"{_n(p.flagged_per_week)} MQLs a week, {_p(p.precision)} of them buy, "
                  f"{_p(p.recall)} of buyers flagged, {_n(p.expected_customers_per_week, 2)} "
                  "expected customers a week", highlight=False)


@app.command("set")
def set_(
    reason: Annotated[str, typer.Option(help="Why (kept in the history)")],
    mql: Annotated[float | None, typer.Option(min=0, max=100)] = None,
    grade_a: Annotated[float | None, typer.Option(min=0, max=100)] = None,
    grade_b: Annotated[float | None, typer.Option(min=0, max=100)] = None,
    grade_c: Annotated[float | None, typer.Option(min=0, max=100)] = None,
    restore: Annotated[int | None, typer.Option(
        min=0, max=2**31 - 1, help="Bring back this version (0: the defaults)")] = None,
    base_version: Annotated[int | None, typer.Option(
        min=0, help="Refuse the change unless this is still the active version (what you "
                    "looked at with `thresholds show`)")] = None,
) -> None:
    """Set the MQL threshold or bands (a new version), or restore an earlier version."""
    from propensity.threshold_store import StaleVersion
    from propensity.thresholds import ThresholdSet

    store = _store()
    current = store.active(LEAD_CONVERSION)
    if base_version is not None and base_version != current.version:
        raise fail(str(StaleVersion(base_version, current.version)), code=1)
    base = current.version if base_version is None else base_version
    if restore is not None:
        values = store.get(restore)
        if values is None or values.model != LEAD_CONVERSION:
            raise fail(f"no threshold version {restore}: `propensity thresholds show` lists "
                       "them", code=1)
        reason = f"restore v{restore}{' (the defaults)' if restore == 0 else ''}: {reason}"
    else:
        changes = {k: v for k, v in (("mql", mql), ("grade_a", grade_a), ("grade_b", grade_b),
                                     ("grade_c", grade_c)) if v is not None}
        if not changes:
            raise fail("give --mql and/or --grade-a/--grade-b/--grade-c, or --restore N")
        try:
            values = ThresholdSet(**{**current.model_dump(), **changes})
        except ValidationError as exc:
            raise fail(invalid(exc), code=1) from None
    try:
        saved = store.set(values, f"cli:{getpass.getuser()}", reason, base)
    except StaleVersion as exc:
        raise fail(str(exc), code=1) from None
    unchanged = " (unchanged: the active version holds these values already)" if (
        saved.version == current.version) else ""
    console.print(f"thresholds v{saved.version}: MQL at {saved.mql:g}, A {saved.grade_a:g} / "
                  f"B {saved.grade_b:g} / C {saved.grade_c:g}{unchanged}", highlight=False)
    _warn(saved)


def _warn(values: ThresholdSet) -> None:
    for w in values.warnings():
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="thresholds")
