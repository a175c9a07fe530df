"""Subcommands that bring data in: validate, import (real data sets) and generate (synthetic)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from propensity.cli._common import (
    ConfOpt,
    EngineOpt,
    ExcludeOpt,
    IdColOpt,
    MasterOpt,
    PostOutcomeOpt,
    console,
    fail,
    output,
    progress,
    refuse,
    spark_for,
    split_columns,
)
from propensity.problems import ProblemReport

import_app = typer.Typer(help="Map a known data set into the CRM data contract.",
                         no_args_is_help=True)


def print_report(report: ProblemReport, limit: int, out: Path | None) -> None:
    """Every problem, one line each (up to `limit`), then counts per rule."""
    frame = report.frame().sort_values(["severity", "table", "row"], kind="stable")
    if out is not None:
        frame.to_csv(output(out), index=False)
    shown = frame.head(limit) if limit > 0 else frame
    for p in shown.to_dict("records"):
        where = f"{p['file']} row {p['row']}" if p["row"] else p["file"]
        col = f" column {p['column']}" if p["column"] else ""
        val = f" value {p['value']!r}" if p["value"] else ""
        sev = str(p["severity"])
        style = "red" if sev == "error" else "yellow"
        console.print(
            f"[{style}]{sev.upper()}[/] {where}{col}{val}: [bold]{p['rule']}[/] ({p['message']})",
            highlight=False,
        )
    if len(frame) > len(shown):
        rest = len(frame) - len(shown)
        hint = f"all are in {out}" if out else "use --out FILE to write them all, or --limit 0"
        console.print(f"... {rest} more problem(s) not printed; {hint}")
    summary = report.summary()
    if len(summary):
        table = Table(title="problems by rule")
        for c in ("severity", "table", "rule", "count"):
            table.add_column(c)
        for r in summary.to_dict("records"):
            table.add_row(str(r["severity"]), str(r["table"]), str(r["rule"]),
                          f"{r['count']:,}")
        console.print(table)


def validate(
    path: Annotated[Path | None, typer.Argument(help="Export folder (leads, events, ...)")] = None,
    table: Annotated[Path | None, typer.Option(help="A single table file instead")] = None,
    target: Annotated[str | None, typer.Option(help="Target column of --table")] = None,
    id_col: IdColOpt = None,
    exclude: ExcludeOpt = "",
    post_outcome: PostOutcomeOpt = "",
    limit: Annotated[int, typer.Option(help="Print at most this many problems (0: all)")] = 1000,
    out: Annotated[Path | None, typer.Option(help="Write every problem to this CSV")] = None,
    engine: EngineOpt = "pandas",
    master: MasterOpt = None,
    conf: ConfOpt = None,
) -> None:
    """Check an export against the data contract; exit 1 when anything breaks it."""
    if path is not None and table is not None:
        raise fail(f"give an export folder ({path}) or --table FILE ({table}), not both")
    if table is None:
        refuse("only with --table FILE", target=target, id_col=id_col, exclude=exclude,
               post_outcome=post_outcome)
    spark = spark_for(engine, master, conf)
    if spark is not None:
        if table is not None or path is None:
            raise fail("--engine spark validates an export folder")
        _validate_spark(spark, str(path), limit, out)
        return
    with progress() as bar:
        bar.add_task("reading and validating", total=None)
        if table is not None:
            report, what = _single_table_report(table, target, id_col, exclude, post_outcome)
        elif path is None:
            raise fail("give an export folder, or --table FILE --target COLUMN")
        else:
            report, what = _folder_report(path)
    _print_verdict(report, what, limit, out)


def _single_table_report(table: Path, target: str | None, id_col: str | None, exclude: str,
                         post_outcome: str) -> tuple[ProblemReport, str]:
    """`validate --table`: the single table's problems, and how to name it."""
    from propensity.single_table import read_single_table

    if not target:
        raise fail("--table needs --target COLUMN (the 0/1 outcome)")
    report = read_single_table(table, target, id_column=id_col,
                               exclude=split_columns(exclude),
                               post_outcome=split_columns(post_outcome)).report
    return report, f"{table}"


def _folder_report(path: Path) -> tuple[ProblemReport, str]:
    """An export folder's problems (a single-table folder read as one), and how to name it;
    for an export, the rows read per table are printed first."""
    from propensity.contract import Manifest
    from propensity.export_reader import read_export
    from propensity.single_table import read_single_table_dir

    if path.is_dir() and Manifest.read(path).shape == "single_table":
        single = read_single_table_dir(path)
        return single.report, f"{path} (single table)"
    export = read_export(path)
    counts = {n: len(f) for n in ("leads", "events", "stage_history", "opportunities",
                                  "accounts") if (f := export.table(n)) is not None}
    console.print("read " + ", ".join(f"{v:,} {k}" for k, v in counts.items()),
                  highlight=False)
    return export.report, str(path)


def _print_verdict(report: ProblemReport, what: str, limit: int, out: Path | None) -> None:
    """The problems, then ok (with the warning count) or the error count and exit 1."""
    print_report(report, limit, out)
    if report.ok:
        console.print(f"[green]ok[/]: {what} follows the data contract"
                      + (f" ({report.warning_count} warning(s))" if report.warning_count else ""),
                      highlight=False)
        return
    console.print(f"[red]{report.error_count:,} error(s)[/] in {what}", highlight=False)
    raise typer.Exit(1)


def _validate_spark(spark: Any, path: str, limit: int, out: Path | None) -> None:
    """`validate --engine spark`: the same report, its rows capped per rule (`--limit`), the
    counts exact."""
    from propensity.spark.export import read_spark_export
    from propensity.spark.validation import DEFAULT_CAP, spark_validate

    with progress() as bar:
        bar.add_task("validating on Spark", total=None)
        result = spark_validate(spark, read_spark_export(spark, path),
                                cap=limit if limit > 0 else DEFAULT_CAP)
    print_report(result.report, limit, out)
    if result.capped:
        console.print(f"... {result.capped:,} more problem(s) counted on Spark, not collected "
                      "(rows are capped per rule; counts below are exact)", highlight=False)
        table = Table(title="problems by rule (all rows)")
        for c in ("severity", "table", "rule", "count"):
            table.add_column(c)
        for r in result.counts.to_dict("records"):
            table.add_row(str(r["severity"]), str(r["table"]), str(r["rule"]),
                          f"{int(r['count']):,}")
        console.print(table)
    if result.ok:
        console.print(f"[green]ok[/]: {path} follows the data contract", highlight=False)
        return
    console.print(f"[red]{result.error_count:,} error(s)[/] in {path}", highlight=False)
    raise typer.Exit(1)


def generate(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the export into")],
    leads: Annotated[int, typer.Option(min=1, help="Number of leads")] = 5000,
    seed: Annotated[int, typer.Option(help="Same seed, same export")] = 7,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "parquet",
    profile: Annotated[str, typer.Option(
        help="default; stress: four years, slow decisions, ~2% buying in 90 days, noise "
             "columns with hundreds of levels; long-lived: a year before 2025-10-01, leads "
             "open 6-12 months, ~2% buying in 90 days, six leads per account")] = "default",
    shift_at: Annotated[str | None, typer.Option(
        help="from this day on, referral brings 45% of new leads and every lead views the "
             "pricing page 0.5 more times a day: drift for monitoring to find")] = None,
) -> None:
    """Write a synthetic CRM export with known ground truth (truth.parquet, read by no pipeline)."""
    import dataclasses

    import pandas as pd

    from propensity.synthetic import PROFILES, generate_export, write_export

    if fmt not in ("csv", "parquet"):
        raise fail("--format is csv or parquet")
    if profile not in PROFILES:
        raise fail(f"--profile is one of {', '.join(PROFILES)}")
    with progress() as bar:
        task = bar.add_task(f"generating {leads:,} leads", total=None)
        config = PROFILES[profile](n_leads=leads, seed=seed)
        if shift_at is not None:
            try:
                pd.Timestamp(shift_at)
            except ValueError:
                raise fail(f"--shift-at {shift_at!r} is not a date (e.g. 2025-07-01)") from None
            config = dataclasses.replace(config, shift_at=shift_at)
        tables, truth = generate_export(config)
        bar.update(task, description=f"writing {out_dir}")
        write_export(tables, truth, out_dir, fmt=fmt)
    console.print(
        f"wrote {out_dir}: " + ", ".join(f"{len(t):,} {n}" for n, t in tables.items()),
        highlight=False,
    )


@import_app.command("x-education")
def import_x_education(
    file: Annotated[Path, typer.Argument(help="X Education Leads.csv")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the single table into")],
) -> None:
    """X Education leads -> a single table with its post-outcome columns declared."""
    from propensity.adapters.x_education import import_x_education as run

    result = run(file, out_dir)
    console.print(result.summary(), highlight=False)


@import_app.command("olist")
def import_olist(
    mql_file: Annotated[Path, typer.Argument(help="olist_marketing_qualified_leads_dataset.csv")],
    deals_file: Annotated[Path, typer.Argument(help="olist_closed_deals_dataset.csv")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the export into")],
) -> None:
    """Olist MQLs and closed deals -> a CRM export (leads, stage_history, opportunities)."""
    from propensity.adapters.olist import import_olist as run

    result = run(mql_file, deals_file, out_dir)
    console.print(result.summary(), highlight=False)


MappingOpt = Annotated[Path | None, typer.Option(
    "--mapping", help="TOML file mapping your statuses, lifecycle stages, deal stages and "
    "fields to the contract (docs/crm.md)")]
AllowSnapshotOpt = Annotated[list[str] | None, typer.Option(
    "--allow-snapshot", help="Use this snapshot field (its value as of the export) as an "
    "attribute anyway; repeatable")]


@import_app.command("salesforce")
def import_salesforce(
    directory: Annotated[Path, typer.Argument(help="Salesforce Data Export folder (Lead.csv, "
                                              "LeadHistory.csv, Opportunity.csv, ...)")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the export into")],
    mapping: MappingOpt = None,
    allow_snapshot: AllowSnapshotOpt = None,
) -> None:
    """Salesforce weekly Data Export -> a CRM export; every row and field accounted for."""
    from propensity.adapters.salesforce import import_salesforce as run

    result = run(directory, out_dir, mapping, allow_snapshot or [])
    console.print(result.summary(), highlight=False)


@import_app.command("hubspot")
def import_hubspot(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the export into")],
    contacts: Annotated[Path | None, typer.Option(help="HubSpot contacts export (CSV)")] = None,
    companies: Annotated[Path | None, typer.Option(help="HubSpot companies export")] = None,
    deals: Annotated[Path | None, typer.Option(help="HubSpot deals export")] = None,
    activities: Annotated[Path | None, typer.Option(
        help="Activities CSV (Activity date, Activity type, Associated Contact IDs)")] = None,
    api: Annotated[bool, typer.Option(
        "--api", help="Read over HubSpot's CRM API instead (token in HUBSPOT_ACCESS_TOKEN)")]
    = False,
    base_url: Annotated[str, typer.Option(
        help="API base URL with --api (e.g. https://api-eu1.hubapi.com)")]
    = "https://api.hubapi.com",
    timezone: Annotated[str, typer.Option(
        help="Time zone of the export's times (HubSpot writes the portal's)")] = "UTC",
    mapping: MappingOpt = None,
    allow_snapshot: AllowSnapshotOpt = None,
) -> None:
    """HubSpot CSV exports (or --api) -> a CRM export; every row and property accounted for."""
    if api:
        from propensity.adapters.hubspot_api import import_hubspot_api

        refuse("not with --api (it reads all four over the API)", contacts=contacts,
               companies=companies, deals=deals, activities=activities)
        result = import_hubspot_api(out_dir, None, base_url, mapping, allow_snapshot or [],
                                    timezone)
    else:
        from propensity.adapters.hubspot import import_hubspot as run

        if contacts is None:
            raise fail("give --contacts FILE (and --companies, --deals, --activities), "
                       "or --api")
        result = run(contacts, out_dir, companies, deals, activities, mapping,
                     allow_snapshot or [], timezone)
    console.print(result.summary(), highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(generate)
    app.add_typer(import_app, name="import")
