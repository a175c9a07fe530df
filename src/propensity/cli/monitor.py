"""`propensity outcomes import | monitor | retrain`: the feedback loop from the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from propensity.cli._common import console, fail, stages

outcomes_app = typer.Typer(help="Outcomes reported back by the CRM.", no_args_is_help=True)
MODEL = "lead-conversion"


@outcomes_app.command("import")
def import_outcomes(
    export: Annotated[Path, typer.Argument(help="CRM export folder (stage history, "
                                                "opportunities)")],
    since: Annotated[str | None, typer.Option(help="only outcomes at or after this time")] = None,
) -> None:
    """Back-fill the outcome store from an export (idempotent: a second run adds nothing)."""
    import pandas as pd

    from propensity.database import engine_for, migrate
    from propensity.export import load_export
    from propensity.monitoring.outcomes import from_export, record
    from propensity.settings import get_settings

    if not export.is_dir():
        raise fail(f"{export}: not an export folder")
    try:
        start = None if since is None else pd.Timestamp(since)
    except ValueError:
        raise fail(f"--since {since!r} is not a time (ISO 8601, e.g. 2025-06-01)") from None
    if start is not None and start.tzinfo is None:
        start = start.tz_localize("UTC")
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


def register(root: typer.Typer) -> None:
    root.add_typer(outcomes_app, name="outcomes")
