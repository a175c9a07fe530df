"""The `propensity` command: one entry point, one subcommand per job."""

from __future__ import annotations

import sys

import typer

from propensity.cli import data, demo, funnel, models, monitor, serve, thresholds
from propensity.cli._common import fail
from propensity.problems import PropensityError

app = typer.Typer(
    name="propensity",
    help="Lead scoring and funnel analytics from your CRM history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data.register(app)
funnel.register(app)
models.register(app)
serve.register(app)
thresholds.register(app)
monitor.register(app)
demo.register(app)


def main() -> None:
    """Entry point: user errors end in one line and a non-zero exit, never a traceback."""
    try:
        app()
    except PropensityError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None
    except (OSError, ValueError) as exc:
        raise SystemExit(fail(f"{type(exc).__name__}: {exc}").exit_code) from None
    except KeyboardInterrupt:
        sys.exit(130)
