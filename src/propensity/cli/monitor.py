"""`propensity outcomes import | monitor | retrain`: the feedback loop from the terminal."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from propensity.cli._common import console, fail, stages
from propensity.targets import LEAD_CONVERSION

if TYPE_CHECKING:
    from propensity.monitoring.performance import Performance
    from propensity.monitoring.report import Limits, MonitoringReport
    from propensity.settings import Settings

UNJUDGED = 3
"""`monitor --fail-on`'s exit code when the window could not be judged."""
outcomes_app = typer.Typer(help="Outcomes reported back by the CRM.", no_args_is_help=True)


@outcomes_app.command("import")
def import_outcomes(
    export: Annotated[Path, typer.Argument(help="CRM export folder (stage history, "
                                                "opportunities)")],
    since: Annotated[str | None, typer.Option(help="only outcomes at or after this time")] = None,
) -> None:
    """Back-fill the outcome store from an export (idempotent: a second run adds nothing)."""

    from propensity.database import engine_for, migrate
    from propensity.export_reader import load_export
    from propensity.monitoring.outcomes import from_export, record
    from propensity.settings import get_settings

    if not export.is_dir():
        raise fail(f"{export}: not an export folder", code=1)
    from propensity.timestamps import utc

    try:
        start = None if since is None else utc(since)
    except ValueError:
        raise fail(f"--since {since!r} is not a time (ISO 8601, e.g. 2025-06-01)") from None
    settings = get_settings()
    with stages() as note:
        note(f"reading {export}")
        data = load_export(export, drop_bad_rows=True)
        found, skipped = from_export(data, start)
        note(f"storing {len(found):,} outcomes")
        migrate(settings.db_url)
        stored = record(engine_for(settings.db_url), found)
    console.print(f"{len(found):,} outcomes read, {stored:,} new, {len(found) - stored:,} "
                  f"already stored" + (f"; {skipped:,} closed opportunities without a lead "
                                       "left out" if skipped else ""), highlight=False)


def _when(text: str | None, option: str) -> datetime | None:
    from propensity.timestamps import parse_utc

    if text is None:
        return None
    try:
        return parse_utc(text)
    except ValueError:
        raise fail(f"{option} {text!r} is not a time (ISO 8601, e.g. 2025-06-01)") from None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _performance_table(perf: Performance) -> Table:
    """Realised performance week by week, the window's overall row last."""
    table = Table(title=f"realised performance (MQL at {perf.mql_threshold:g}, "
                        f"{perf.horizon_days}-day horizon)")
    for c in ("week", "leads", "matured", "MQLs", "expected prec.", "precision", "recall",
              "AUC", "expected conv.", "converted"):
        table.add_column(c, justify="right")
    for f in [*perf.weeks, perf.overall]:
        table.add_row(f.period, f"{f.leads:,}", f"{f.matured:,}", f"{f.mqls:,}",
                      _pct(f.expected_precision), _pct(f.precision), _pct(f.recall),
                      "-" if f.auc is None else f"{f.auc:.3f}",
                      f"{f.expected_conversions:.1f}",
                      "-" if f.converted is None else f"{f.converted:,}")
    return table


def _bands_table(perf: Performance) -> Table:
    """Predicted against realised conversion per score band: where calibration is judged."""
    bands = Table(title="calibration by score band (matured leads)")
    for c in ("band", "leads", "predicted", "realised", "gap (points)"):
        bands.add_column(c, justify="right")
    for b in perf.bands:
        bands.add_row(b.band, f"{b.leads:,}", _pct(b.predicted), _pct(b.realised),
                      "-" if b.gap_points is None else f"{b.gap_points:.1f}")
    return bands


def _outlook_table(report: MonitoringReport) -> Table:
    """The outlook's amount and timing against what happened, per score band."""
    table = Table(title="outlook by score band: expected vs realised")
    for c in ("band", "leads", "won", "exp. amount", "won amount", "converted", "exp. days",
              "days taken", "matured", "P(90 d)", "conv. in 90 d"):
        table.add_column(c, justify="right")

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f}"

    for b in report.outlook:
        table.add_row(b.band, f"{b.leads:,}", f"{b.won:,}", num(b.expected_amount),
                      num(b.realised_amount), f"{b.converted:,}", num(b.expected_days),
                      num(b.realised_days), f"{b.matured:,}", _pct(b.p_by_90),
                      _pct(b.converted_90))
    return table


def _print_verdict(report: MonitoringReport) -> None:
    """The headline (the actions, or "nothing to do") and every reason under it."""
    v = report.verdict
    head = ", ".join(v.actions) if v.actions else "nothing to do"
    console.print(f"[bold]{report.model} v{report.version or '-'}[/], as_of "
                  f"{report.start:%Y-%m-%d}..{report.end:%Y-%m-%d}: [bold]{head}[/]",
                  highlight=False)
    for reason in v.reasons:
        console.print(f"  - {reason}", highlight=False)


def print_report(report: MonitoringReport) -> None:
    """What a person reading a cron mail needs: the verdict first, then the figures."""
    _print_verdict(report)
    w = report.window
    if w is not None:
        console.print(f"drift over {w.served:,} leads served: score PSI {w.score_psi:.3f}; "
                      "most moved: " + ", ".join(f"{f.feature} {f.psi:.3f}"
                                                 for f in w.features[:5]), highlight=False)
    perf = report.performance
    if perf is not None:
        console.print(_performance_table(perf))
        console.print(_bands_table(perf))
    if report.outlook:
        console.print(_outlook_table(report))
    for champ in report.champions[:5]:
        console.print(f"champion v{champ['version']} since {champ['since']}: {champ['reason']}"
                      + (" (serving)" if champ["champion"] else ""), highlight=False)


def _champion_report(settings: Settings, start: datetime | None, end: datetime | None,
                     limits: Limits) -> MonitoringReport:
    """The report on the serving champion over the asked window (defaults as GET
    /v1/monitoring); a champion without a stored reference is reported with drift unmeasured."""
    from propensity import contract
    from propensity.database import engine_for, migrate
    from propensity.monitoring.report import (
        DEFAULT_DAYS,
        build_report,
        report_window,
        window_problem,
    )
    from propensity.registry import (
        CHAMPION,
        champion_history,
        configure,
        load_model,
        load_reference,
        version_of,
    )
    from propensity.threshold_store import ThresholdStore

    version = version_of(configure(settings), LEAD_CONVERSION, CHAMPION)
    if version is None:
        raise fail(f"no {LEAD_CONVERSION} champion to monitor: `propensity train` first", code=1)
    bundle, _ = load_model(LEAD_CONVERSION, CHAMPION, settings=settings)
    try:
        reference = load_reference(LEAD_CONVERSION, version, settings=settings)
    except Exception:
        reference = None
    migrate(settings.db_url)
    engine = engine_for(settings.db_url)
    first, stop = report_window(engine, LEAD_CONVERSION, DEFAULT_DAYS, start, end)
    problem = window_problem(first, stop)
    if problem is not None:
        raise fail(f"--{problem[0]}: {problem[1]}")
    return build_report(
        engine, model=LEAD_CONVERSION, version=version, reference=reference,
        horizon_days=bundle.horizon_days or 90, mql=ThresholdStore(engine, ttl=0).active(
            LEAD_CONVERSION).mql, start=first, end=stop, limits=limits,
        champions=champion_history(LEAD_CONVERSION, settings=settings),
        stages=bundle.spec.stages if bundle.spec is not None else contract.DEFAULT_STAGES)


def _exit_for(report: MonitoringReport, fail_on: list[str]) -> None:
    """Exit 1 when a `--fail-on` limit is crossed, 3 when it could not be judged: a cron job
    must not read "fine" for a window nobody could judge."""
    crossed = [f for f in fail_on if getattr(report.verdict, f)]
    if crossed:
        raise typer.Exit(1)
    unjudged = [f for f in fail_on if not getattr(report.verdict, f"{f}_judged")]
    if unjudged:
        why = [r for r in report.verdict.reasons
               if any(r.startswith((f"{f} not judged", f"{f} not measured")) for f in unjudged)]
        raise fail("; ".join(why) + f" (as_of {report.start:%Y-%m-%d}..{report.end:%Y-%m-%d})",
                   code=UNJUDGED)


def monitor(
    start: Annotated[str | None, typer.Option(help="first as_of (default: end - 28 days)")
                     ] = None,
    end: Annotated[str | None, typer.Option(
        help="as_of before this (default: the end of the newest day scored, as_of, in the "
             "score log, as GET /v1/monitoring; the end of today, UTC, when it is empty)")
                   ] = None,
    fail_on: Annotated[list[str] | None, typer.Option(
        help="drift and/or calibration: exit 1 when that limit is crossed, 3 when the window "
             "could not be judged (nothing served, no reference, no matured outcomes)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
    psi: Annotated[float, typer.Option(min=0.0, help="PSI limit (score, top features)")] = 0.2,
    top_features: Annotated[int, typer.Option(
        min=0, help="how many of the most important features the PSI limit guards")] = 10,
    calibration_points: Annotated[float, typer.Option(
        min=0.0, help="calibration limit: points between predicted and realised")] = 5.0,
    band_leads: Annotated[int, typer.Option(
        min=1, help="matured leads a band needs before its calibration counts")] = 200,
    min_served: Annotated[int, typer.Option(
        min=1, help="leads served in the window before drift is judged")] = 200,
) -> None:
    """Drift and realised performance of the champion, and what to do: for a cron job."""
    from propensity.monitoring.report import Limits
    from propensity.settings import get_settings

    bad = [f for f in fail_on or [] if f not in ("drift", "calibration")]
    if bad:
        raise fail(f"--fail-on is drift or calibration, not {', '.join(bad)}")
    settings = get_settings()
    asked = _when(start, "--start"), _when(end, "--end")
    report = _champion_report(settings, *asked, Limits(
        psi=psi, top_features=top_features, calibration_points=calibration_points,
        band_leads=band_leads, min_served=min_served))
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        print_report(report)
    _exit_for(report, fail_on or [])


def retrain(
    export: Annotated[Path, typer.Argument(help="Export folder with the latest data")],
    horizon_days: Annotated[int | None, typer.Option(
        min=1, help="Label horizon (default: the champion's)")] = None,
    stale_days: Annotated[int | None, typer.Option(
        min=1, help="Idle days that end a lead (default: the champion's)")] = None,
    config: Annotated[Path | None, typer.Option(help="A TOML config (see training/)")] = None,
) -> None:
    """Train a challenger on the latest data; it becomes champion only through the gate."""
    from propensity.cli.models import print_metrics, train_config
    from propensity.export_reader import load_export
    from propensity.lifecycle import register_and_gate, train
    from propensity.registry import CHAMPION, configure, load_model, version_of

    if not export.is_dir():
        raise fail(f"{export}: not an export folder", code=1)
    with stages() as note:
        note(f"loading the {LEAD_CONVERSION} champion (its horizon and stale days)")
        champion = None
        if version_of(configure(), LEAD_CONVERSION, CHAMPION) is not None:
            champion, _ = load_model(LEAD_CONVERSION, CHAMPION)
        cfg = train_config(config, LEAD_CONVERSION,
                           horizon_days or (champion.horizon_days if champion else None),
                           stale_days or (champion.stale_days if champion else None))
        note(f"reading and validating {export}")
        data = load_export(export)
        result = train(data, cfg, progress=note)
        print_metrics(result.report)
        note("registering the challenger")
        trained = register_and_gate(result, data, export, gate="always", note=note)
    reg, outcome = trained.registered, trained.promotion
    assert outcome is not None
    if not trained.refused:
        console.print(f"{LEAD_CONVERSION} v{reg.version} is the champion: {outcome.reason}"
                      + (f" (was v{outcome.previous})" if outcome.previous else ""),
                      highlight=False)
    else:  # the README's exit 1: a challenger that does not pass the gate
        console.print(f"{LEAD_CONVERSION} v{reg.version} stays challenger: {outcome.reason}",
                      highlight=False)
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.add_typer(outcomes_app, name="outcomes")
    root.command()(monitor)
    root.command()(retrain)
