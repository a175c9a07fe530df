"""The funnel report as a flat table (CSV), a terminal table, or a self-contained HTML page."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from rich.table import Table

from propensity.funnel.report_types import FunnelReport, GroupFunnel, Rate


def _rate_cols(prefix: str, rate: Rate) -> dict[str, object]:
    return {f"{prefix}_pct": rate.percent, f"{prefix}_low": rate.low,
            f"{prefix}_high": rate.high, f"{prefix}_n": rate.denominator}


def _row(g: GroupFunnel) -> dict[str, object]:
    row: dict[str, object] = {"group": g.group, "leads": g.leads}
    row.update(_rate_cols("lead_to_customer", g.lead_to_customer))
    for s in g.steps:
        row.update({f"{s.name}_reached": s.reached, f"{s.name}_advanced": s.advanced,
                    f"{s.name}_lost": s.lost, f"{s.name}_stale": s.stale,
                    f"{s.name}_in_flight": s.in_flight})
        row.update(_rate_cols(s.name, s.conversion))
        row[f"{s.name}_median_days"] = s.time.median_days
        row[f"{s.name}_p75_days"] = s.time.p75_days
    row["time_to_convert_median_days"] = g.time_to_convert.median_days
    row["time_to_convert_p75_days"] = g.time_to_convert.p75_days
    d = g.deals
    row.update({"won": d.won, "lost": d.lost, "open": d.open})
    row.update(_rate_cols("win_rate", d.win_rate))
    row.update({
        "average_deal_size": d.average_deal_size,
        "sales_cycle_median_days": d.sales_cycle.median_days,
        "sales_cycle_p75_days": d.sales_cycle.p75_days,
        "pipeline_value": d.pipeline_value,
        "weighted_pipeline_value": d.weighted_pipeline_value,
        "sales_velocity_per_day": d.sales_velocity_per_day,
        "biggest_drop_off": g.biggest_drop_off,
    })
    return row


def to_frame(report: FunnelReport) -> pd.DataFrame:
    """One row for the whole funnel, then one per group."""
    return pd.DataFrame([_row(report.overall)] + [_row(g) for g in report.groups])


def _pct(rate: Rate) -> str:
    if rate.percent is None:
        return "-"
    interval = f" [{rate.low:.1f}-{rate.high:.1f}]" if rate.low is not None else ""
    return f"{rate.percent:.1f}%{interval} n={rate.denominator:,}"


def to_rich(report: FunnelReport, max_groups: int = 25) -> list[Table]:
    window = f"{report.start or 'start'} .. {report.end or 'end'}"
    steps = Table(title=f"funnel ({report.mode}, {window})")
    for c in ("step", "reached", "advanced", "lost", "in flight", "conversion [95% CI]",
              "median days", "p75 days"):
        steps.add_column(c, justify="left" if c == "step" else "right")
    for s in report.overall.steps:
        steps.add_row(s.name, f"{s.reached:,}", f"{s.advanced:,}", f"{s.lost:,}",
                      f"{s.in_flight:,}", _pct(s.conversion),
                      "-" if s.time.median_days is None else f"{s.time.median_days:.1f}",
                      "-" if s.time.p75_days is None else f"{s.time.p75_days:.1f}")
    d = report.overall.deals
    summary = Table(title="outcomes and deals")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for name, value in (
        ("lead-to-customer", _pct(report.overall.lead_to_customer)),
        ("time to convert median / p75 days",
         f"{_num(report.overall.time_to_convert.median_days)} / "
         f"{_num(report.overall.time_to_convert.p75_days)}"),
        ("win rate (won / closed)", _pct(d.win_rate)),
        ("average deal size (won)", _money(d.average_deal_size)),
        ("sales cycle median / p75 days", f"{_num(d.sales_cycle.median_days)} / "
                                          f"{_num(d.sales_cycle.p75_days)}"),
        ("open opportunities", f"{d.open:,}"),
        ("pipeline value", _money(d.pipeline_value)),
        ("weighted pipeline value", _money(d.weighted_pipeline_value)),
        ("sales velocity per day", _money(d.sales_velocity_per_day)),
        ("biggest drop-off", report.overall.biggest_drop_off or "-"),
    ):
        summary.add_row(name, value)
    tables = [steps, summary]
    if report.groups:
        by = Table(title=f"by {report.by}")
        by.add_column(str(report.by))
        by.add_column("leads", justify="right")
        by.add_column("lead-to-customer [95% CI]", justify="right")
        by.add_column("win rate", justify="right")
        by.add_column("biggest drop-off")
        for g in report.groups[:max_groups]:
            by.add_row(g.group, f"{g.leads:,}", _pct(g.lead_to_customer),
                       _pct(g.deals.win_rate), g.biggest_drop_off or "-")
        if len(report.groups) > max_groups:
            by.caption = f"{len(report.groups) - max_groups} more groups: use --format csv"
        tables.append(by)
    return tables


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _money(v: float | None) -> str:
    return "-" if v is None else f"{v:,.2f}"


def _funnel_chart(report: FunnelReport) -> go.Figure:
    """Leads at each stage: the first stage's entries, then each step's advances."""
    stages = [report.overall.steps[0].from_stage] + [s.to_stage for s in report.overall.steps]
    counts = [report.overall.steps[0].reached] + [s.advanced for s in report.overall.steps]
    funnel = go.Figure(go.Funnel(y=stages, x=counts, textinfo="value+percent initial"))
    funnel.update_layout(title=f"Funnel ({report.mode})", margin={"l": 120})
    return funnel


def _group_chart(report: FunnelReport) -> go.Figure:
    """Lead-to-customer per group (the first 40 with a rate) with its interval as error bars,
    and each group's leads on a second axis so a small group's wide interval reads as such."""
    groups = [g for g in report.groups if g.lead_to_customer.percent is not None][:40]
    rates = [g.lead_to_customer for g in groups]
    bar = make_subplots(specs=[[{"secondary_y": True}]])
    bar.add_trace(go.Bar(
        x=[g.group for g in groups], y=[r.percent for r in rates], name="lead-to-customer %",
        error_y={"type": "data", "symmetric": False,
                 "array": [(r.high or 0) - (r.percent or 0) for r in rates],
                 "arrayminus": [(r.percent or 0) - (r.low or 0) for r in rates]},
    ))
    bar.add_trace(go.Scatter(x=[g.group for g in groups], y=[g.leads for g in groups],
                             name="leads", mode="markers"), secondary_y=True)
    bar.update_layout(title=f"Lead-to-customer by {report.by} (95% Wilson interval)")
    bar.update_yaxes(title_text="%", secondary_y=False)
    bar.update_yaxes(title_text="leads", secondary_y=True)
    return bar


def figures(report: FunnelReport) -> list[go.Figure]:
    """The funnel chart and, when grouped, lead-to-customer by group with its interval."""
    out = [_funnel_chart(report)]
    if report.groups:
        out.append(_group_chart(report))
    return out


def to_html(report: FunnelReport) -> str:
    """A page that opens with no network: plotly.js is inlined once."""
    parts = []
    for i, fig in enumerate(figures(report)):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    table = to_frame(report).to_html(index=False, na_rep="-", float_format=lambda v: f"{v:,.2f}")
    title = f"propensity funnel by {report.by}" if report.by else "propensity funnel"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>mode: {report.mode}; window: "
        f"{html.escape(str(report.start or 'start'))} .. {html.escape(str(report.end or 'end'))}"
        f"; pipeline as of {html.escape(str(report.as_of))}</p>"
        + "".join(parts) + "<h2>All metrics</h2>" + table + "</body></html>"
    )
