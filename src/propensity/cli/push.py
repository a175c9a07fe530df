"""`propensity push hubspot|salesforce EXPORT --as-of T`: scores back onto the CRM's records."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from propensity.cli._common import console, err_console, fail, output, stages
from propensity.push.records import Crm
from propensity.targets import LEAD_CONVERSION

if TYPE_CHECKING:
    from collections.abc import Callable

    from propensity.push.writers import Writer

app = typer.Typer(help="Write scores back to the CRM (docs/crm.md, \"Scores back\").",
                  no_args_is_help=True)

ExportArg = Annotated[Path, typer.Argument(help="Export folder (as `propensity import` wrote)")]
AsOfOpt = Annotated[datetime, typer.Option(help="Score the leads open at this time (UTC)")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Count what would be written; write nothing, not even the cursor")]
FieldsOpt = Annotated[Path | None, typer.Option(
    help="TOML naming the fields: a [hubspot] or [salesforce] table of object, probability, "
         "score, grade, reasons, model_version, and optionally the outlook's p_by_90, "
         "expected_days, expected_amount, expected_revenue (written only when named)")]
ModelOpt = Annotated[str, typer.Option(help="Registered model to score with")]
AliasOpt = Annotated[str, typer.Option(help="Registry alias to score with")]
RefusedOpt = Annotated[Path | None, typer.Option(
    help="Write every record the CRM refused (record_id, reason) to this CSV")]


@app.command("hubspot")
def push_hubspot(export: ExportArg, as_of: AsOfOpt, dry_run: DryRunOpt = False,
                 fields: FieldsOpt = None, model: ModelOpt = LEAD_CONVERSION,
                 alias: AliasOpt = "champion", refused: RefusedOpt = None,
                 base_url: Annotated[str, typer.Option(
                     help="API base URL (e.g. https://api-eu1.hubapi.com)")]
                 = "https://api.hubapi.com") -> None:
    """Scores onto HubSpot contacts (token in HUBSPOT_ACCESS_TOKEN), 100 a call."""
    from propensity.push.writers import HubSpotWriter

    def writer(object_type: str) -> HubSpotWriter:
        token = os.environ.get("HUBSPOT_ACCESS_TOKEN")
        if not token:
            raise fail("set HUBSPOT_ACCESS_TOKEN to a private app's token (scope "
                       "crm.objects.contacts.write)", code=1)
        return HubSpotWriter(token, object_type, base_url)

    _push("hubspot", export, as_of, dry_run, fields, model, alias, refused, writer)


@app.command("salesforce")
def push_salesforce(export: ExportArg, as_of: AsOfOpt, dry_run: DryRunOpt = False,
                    fields: FieldsOpt = None, model: ModelOpt = LEAD_CONVERSION,
                    alias: AliasOpt = "champion", refused: RefusedOpt = None) -> None:
    """Scores onto Salesforce Leads (SALESFORCE_INSTANCE_URL, SALESFORCE_SESSION_ID), 200 a
    call."""
    from propensity.push.writers import SalesforceWriter

    def writer(object_type: str) -> SalesforceWriter:
        url = os.environ.get("SALESFORCE_INSTANCE_URL")
        session = os.environ.get("SALESFORCE_SESSION_ID")
        if not url or not session:
            raise fail("set SALESFORCE_INSTANCE_URL (https://yourorg.my.salesforce.com) and "
                       "SALESFORCE_SESSION_ID (an OAuth access token)", code=1)
        return SalesforceWriter(url, session, object_type)

    _push("salesforce", export, as_of, dry_run, fields, model, alias, refused, writer)


def _push(crm: Crm, export: Path, as_of: datetime, dry: bool, fields_file: Path | None,
          model: str, alias: str, refused_csv: Path | None,
          writer: Callable[[str], Writer]) -> None:
    import pandas as pd

    from propensity.database import engine_for, migrate
    from propensity.export_reader import load_export
    from propensity.push.plan import load_fields, outgoing_scores
    from propensity.push.run import dry_run, push
    from propensity.registry import load_model
    from propensity.settings import get_settings
    from propensity.threshold_store import ThresholdStore

    fields = load_fields(crm, fields_file)
    target = None if dry else writer(fields.object)  # a missing token fails before the work
    settings = get_settings()
    with stages() as note:
        note(f"loading {model}@{alias}")
        bundle, version = load_model(model, alias)
        if bundle.kind != "export":
            raise fail(f"{model}@{alias} was trained on a single table: push scores leads "
                       "of an export", code=1)
        migrate(settings.db_url)
        engine = engine_for(settings.db_url)
        thresholds = ThresholdStore(engine, ttl=0).active(model)
        note(f"reading and scoring {export} as of {as_of:%Y-%m-%d %H:%M}")
        plan = outgoing_scores(bundle, model, version, load_export(export),
                               pd.Timestamp(as_of), thresholds, fields)
        if target is None:
            result = dry_run(engine, crm, plan)
        else:
            note(f"writing changed scores to {crm} ({fields.object})")
            result = push(engine, crm, plan, target)
    verb = "would write" if dry else "wrote"
    resumed = f", resumed at record {result.resumed_at:,}" if result.resumed_at else ""
    console.print(f"{crm}: {result.total:,} open leads; {verb} {result.written:,}, "
                  f"{result.unchanged:,} unchanged, {len(result.refused):,} refused{resumed}",
                  highlight=False)
    if result.refused:
        for record_id, reason in list(result.refused.items())[:10]:
            err_console.print(f"  refused {record_id}: {reason}", highlight=False)
        if refused_csv is not None:
            pd.DataFrame(list(result.refused.items()), columns=["record_id", "reason"]).to_csv(
                output(refused_csv), index=False)
        raise fail(f"{len(result.refused):,} records refused by {crm} (kept for the next "
                   "push, which tries them again)", code=1)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="push")
