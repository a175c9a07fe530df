"""`propensity forecast`: expected new customers and revenue per week, with intervals, or the
same forecast re-run on past quarters against what happened (`--backtest`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from propensity.cli._common import console, err_console, fail, output, stages

if TYPE_CHECKING:
    import pandas as pd

    from propensity.forecast.backtest import Backtest
    from propensity.forecast.report import ForecastResult

FORMATS = ("table", "json", "csv")


def _money(x: float) -> str:
    return f"{x:,.0f}"


def _check_options(fmt: str, by: str | None, weeks: int, backtest: bool,
                   forecast_only: bool) -> None:
    """Refuse bad options before the export is read: a typo must not cost a minute's load."""
    from propensity.forecast.report import GROUPS

    if fmt not in FORMATS:
        raise fail(f"--format is one of {', '.join(FORMATS)}")
    if by is not None and by not in GROUPS:
        raise fail(f"--by is one of {', '.join(GROUPS)}, not {by!r}")
    if not 1 <= weeks <= 52:
        raise fail(f"--weeks {weeks}: between 1 and 52")
    if backtest and forecast_only:
        raise fail("--backtest picks its own quarter starts: it takes no --as-of, --by or --out")


def _run_backtest(path: Path, weeks: int, seed: int) -> Backtest:
    """Load the export and re-run the forecast at each past quarter start."""
    from propensity.export_reader import load_export
    from propensity.forecast.backtest import backtest as run_backtest

    with stages() as note:
        note(f"loading {path}")
        export = load_export(path)
        return run_backtest(export, weeks=weeks, seed=seed, progress=note)


def _run_forecast(path: Path, as_of: datetime | None, weeks: int, by: str | None,
                  seed: int) -> tuple[ForecastResult, pd.DataFrame]:
    """Load the export and forecast from the leads open at `as_of`."""
    from propensity.export_reader import load_export
    from propensity.forecast.report import AfterTheExport, forecast_time
    from propensity.forecast.report import forecast as run_forecast

    with stages() as note:
        note(f"loading {path}")
        export = load_export(path)
        try:
            t = forecast_time(as_of, export.latest_time())
        except AfterTheExport as exc:
            raise fail(f"--as-of {exc}", code=1) from None
        return run_forecast(export, t, weeks, by, seed=seed, progress=note)


def forecast(
    path: Annotated[Path, typer.Argument(help="Export folder")],
    as_of: Annotated[datetime | None, typer.Option(
        "--as-of", help="Forecast from the leads open at this time, UTC (default: the "
                        "export's latest timestamp)")] = None,
    weeks: Annotated[int, typer.Option(help="Weeks ahead (1-52)")] = 13,
    by: Annotated[str | None, typer.Option(
        help="Group the forecast by source, campaign, owner_id or segment "
             "(source/industry/size band)")] = None,
    backtest: Annotated[bool, typer.Option(
        "--backtest", help="Re-run the forecast at each past quarter start (models fitted on "
                           "what was known then) and print it against the actuals")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the models and the simulation")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    out: Annotated[Path | None, typer.Option(
        help="Also write each open lead's outlook (CSV) to this file")] = None,
) -> None:
    """Expected new customers and revenue per week from the open leads, with 80%/95% intervals."""
    _check_options(fmt, by, weeks, backtest,
                   forecast_only=as_of is not None or by is not None or out is not None)
    if backtest:
        _print_backtest(_run_backtest(path, weeks, seed), fmt)
        return
    fc, outlook = _run_forecast(path, as_of, weeks, by, seed)
    if out is not None:
        outlook.to_csv(output(out), index=False)
    _print_forecast(fc, fmt)
    if out is not None:  # on stderr: stdout is the forecast (JSON, CSV) a script reads
        err_console.print(f"wrote {out}", highlight=False)


def _print_forecast(fc: object, fmt: str) -> None:
    from rich.table import Table

    from propensity.forecast.report import ForecastResult

    assert isinstance(fc, ForecastResult)
    if fmt == "json":
        print(fc.model_dump_json(indent=2))
        return
    if fmt == "csv":
        print("week,start,customers,customers_low80,customers_high80,customers_low95,"
              "customers_high95,revenue,revenue_low80,revenue_high80,revenue_low95,"
              "revenue_high95")
        for w in [*fc.rows, fc.total]:
            c, r = w.customers, w.revenue
            print(f"{w.week or 'total'},{w.start},{c.expected:.4f},{c.low80:g},{c.high80:g},"
                  f"{c.low95:g},{c.high95:g},{r.expected:.2f},{r.low80:.2f},{r.high80:.2f},"
                  f"{r.low95:.2f},{r.high95:.2f}")
        return
    table = Table(title=f"Forecast from the {fc.open_leads:,} leads open at {fc.as_of[:10]}")
    for col in ("week", "from", "customers", "80%", "95%", "revenue", "80%", "95%"):
        table.add_column(col, justify="right")
    for w in [*fc.rows, fc.total]:
        c, r = w.customers, w.revenue
        table.add_row(str(w.week) if w.week else "total", w.start, f"{c.expected:.1f}",
                      f"{c.low80:g}-{c.high80:g}", f"{c.low95:g}-{c.high95:g}",
                      _money(r.expected), f"{_money(r.low80)}-{_money(r.high80)}",
                      f"{_money(r.low95)}-{_money(r.high95)}")
    console.print(table)
    if fc.groups:
        groups = Table(title=f"{fc.weeks} weeks by {fc.by}")
        for col in ("group", "open leads", "customers", "80%", "95%", "revenue", "80%"):
            groups.add_column(col, justify="right")
        for g in fc.groups:
            c, r = g.customers, g.revenue
            groups.add_row(g.group, f"{g.open_leads:,}", f"{c.expected:.1f}",
                           f"{c.low80:g}-{c.high80:g}", f"{c.low95:g}-{c.high95:g}",
                           _money(r.expected), f"{_money(r.low80)}-{_money(r.high80)}")
        console.print(groups)
    n = fc.new_leads
    console.print(
        f"not in the table: leads not created yet, at {n.leads_per_day:.1f} a day (the last 13 "
        f"weeks' rate), should add {n.total_customers.expected:.1f} customers (80%: "
        f"{n.total_customers.low80:g}-{n.total_customers.high80:g}) and "
        f"{_money(n.total_revenue)} revenue", highlight=False)
    console.print(f"intervals: {fc.method} (seed {fc.seed})", highlight=False)


def _print_backtest(bt: object, fmt: str) -> None:
    from rich.table import Table

    from propensity.forecast.backtest import Backtest

    assert isinstance(bt, Backtest)
    if fmt == "json":
        print(bt.model_dump_json(indent=2))
        return
    if fmt == "csv":
        fields = list(bt.periods[0].model_dump())
        print(",".join(fields))
        for p in bt.periods:
            print(",".join(str(v) for v in p.model_dump().values()))
        return
    table = Table(title=f"Backtest: {bt.weeks}-week new customers from the leads open at each "
                        "quarter start")
    for col in ("quarter", "open", "actual", "forecast", "80%", "95%", "APE", "stage rates",
                "APE", "pipeline", "APE", "revenue actual", "forecast", "80%"):
        table.add_column(col, justify="right")
    for p in bt.periods:
        table.add_row(p.start, f"{p.open_leads:,}", str(p.actual), f"{p.forecast:.1f}",
                      f"{p.low80:g}-{p.high80:g}", f"{p.low95:g}-{p.high95:g}",
                      f"{p.ape(p.forecast):.0%}", f"{p.stage_rates:.1f}",
                      f"{p.ape(p.stage_rates):.0%}", f"{p.pipeline:.1f}",
                      f"{p.ape(p.pipeline):.0%}", _money(p.actual_revenue),
                      _money(p.forecast_revenue),
                      f"{_money(p.revenue_low80)}-{_money(p.revenue_high80)}")
    console.print(table)
    s = bt.summary()
    console.print(
        f"{s['periods']} quarters: mean absolute percentage error {s['mape_model']:.1%} "
        f"(stage rates {s['mape_stage_rates']:.1%}, weighted pipeline "
        f"{s['mape_pipeline']:.1%}); actual inside the 80% interval in "
        f"{s['coverage80']:.0%} of quarters, inside the 95% in {s['coverage95']:.0%}",
        highlight=False)
    for line in bt.skipped:
        console.print(f"skipped {line}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(forecast)
