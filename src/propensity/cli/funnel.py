"""`propensity funnel`: the rule-based funnel metrics of an export."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from propensity.cli._common import (
    ConfOpt,
    EngineOpt,
    MasterOpt,
    console,
    fail,
    output,
    progress,
    spark_for,
)

if TYPE_CHECKING:
    from propensity.funnel.report_types import FunnelReport, Mode

FORMATS = ("table", "json", "csv", "html")


def funnel(
    path: Annotated[Path, typer.Argument(help="Export folder")],
    by: Annotated[str | None, typer.Option(
        help="Lead column to group by (source, campaign, owner_id, product, persona, any "
             "attribute) or created_week / created_month / created_quarter / created_year")
    ] = None,
    start: Annotated[datetime | None, typer.Option(help="Window start (inclusive), UTC")] = None,
    end: Annotated[datetime | None, typer.Option(help="Window end (exclusive), UTC")] = None,
    cohort: Annotated[bool, typer.Option(
        "--cohort/--period",
        help="Cohort: follow leads created in the window; period: count what happened in it")
    ] = True,
    fmt: Annotated[str, typer.Option("--format", help="table, json, csv or html")] = "table",
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout")] = None,
    stale_days: Annotated[int | None, typer.Option(
        min=1, help="Count leads idle this many days in a stage as lost (stale)")] = None,
    drop_bad_rows: Annotated[bool, typer.Option(
        help="Leave out rows that break the contract (each is named) instead of refusing")
    ] = False,
    engine: EngineOpt = "pandas",
    master: MasterOpt = None,
    conf: ConfOpt = None,
) -> None:
    """Stage-to-stage conversion, win rate, cycle times and deal metrics, with 95% intervals."""
    if fmt not in FORMATS:
        raise fail(f"--format is one of {', '.join(FORMATS)}")
    if fmt == "html" and out is None:
        raise fail("--format html needs --out FILE.html")
    spark = spark_for(engine, master, conf)
    mode: Mode = "cohort" if cohort else "period"
    with progress() as bar:
        task = bar.add_task("loading export", total=None)
        if spark is not None:
            report, errors = _on_spark(spark, path, drop_bad_rows, bar, task, by=by, start=start,
                                       end=end, mode=mode, stale_days=stale_days)
        else:
            report, errors = _in_process(path, drop_bad_rows, bar, task, by=by, start=start,
                                         end=end, mode=mode, stale_days=stale_days)
    if errors:
        console.print(f"[yellow]left out {errors} problem row(s)[/]; "
                      f"`propensity validate {path}` lists them", highlight=False)
    _write(report, fmt, out)


def _on_spark(spark: Any, path: Path, drop_bad_rows: bool, bar: Any, task: Any,
              **options: Any) -> tuple[FunnelReport, int]:
    """The report computed on Spark over the checked export (no rows counted as left out)."""
    from propensity.spark.export import read_spark_export
    from propensity.spark.funnel import spark_funnel
    from propensity.spark.validation import checked_export

    checked = checked_export(spark, read_spark_export(spark, str(path)), drop_bad_rows)
    bar.update(task, description="computing funnel on Spark")
    return spark_funnel(spark, checked, **options), 0


def _in_process(path: Path, drop_bad_rows: bool, bar: Any, task: Any,
                **options: Any) -> tuple[FunnelReport, int]:
    """The report computed in process, and how many problem rows the load left out."""
    from propensity.export_reader import load_export
    from propensity.funnel import funnel_report

    export = load_export(path, drop_bad_rows=drop_bad_rows)
    errors = export.report.error_count
    bar.update(task, description="computing funnel")
    return funnel_report(export, **options), errors


def _write(report: FunnelReport, fmt: str, out: Path | None) -> None:
    """The report as rich tables on the console, or as JSON / CSV / HTML to stdout or `out`."""
    from propensity.funnel.render import to_frame, to_html, to_rich

    if fmt == "table":
        for table in to_rich(report):
            console.print(table)
        return
    text = {"json": lambda: report.model_dump_json(indent=2),
            "csv": lambda: to_frame(report).to_csv(index=False),
            "html": lambda: to_html(report)}[fmt]()
    if out is None:
        print(text)
    else:
        output(out).write_text(text)
        console.print(f"wrote {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(funnel)
