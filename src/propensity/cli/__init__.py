"""The `propensity` command: one entry point, one subcommand per job.

Exit codes (the README's table): 0 done; 1 the data, a file or the state of the registry or
database is the problem (a contract break, an unreadable or undecodable file, a missing
column, a stale threshold version, a model that does not pass the gate); 2 the command line
itself is wrong (an unknown option, options that do not go together); 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from propensity.cli import (
    data,
    demo,
    forecast,
    funnel,
    models,
    monitor,
    push,
    serve,
    thresholds,
)
from propensity.cli._common import fail
from propensity.problems import PropensityError

app = typer.Typer(
    name="propensity",
    help="Lead scoring and funnel analytics from your CRM history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def options(encoding: Annotated[str, typer.Option(
        help="Text encoding of the CSV files read (utf-8, latin-1, cp1252, ...)")] = "utf-8",
            ) -> None:
    """Lead scoring and funnel analytics from your CRM history."""
    import codecs

    from propensity.export_reader import CSV_ENCODING

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise fail(f"--encoding {encoding!r}: unknown encoding (try utf-8, latin-1, cp1252)"
                   ) from None
    CSV_ENCODING.set(encoding)
    # a deployment's own targets (PROPENSITY_TARGET_MODULES) are models like the library's
    from propensity.settings import get_settings
    from propensity.targets import import_targets

    import_targets(get_settings().target_modules)
data.register(app)
funnel.register(app)
models.register(app)
serve.register(app)
thresholds.register(app)
monitor.register(app)
demo.register(app)
push.register(app)
forecast.register(app)


INTERRUPTED = 130


def global_options_first(args: list[str]) -> list[str]:
    """`--encoding X` moved in front of the subcommand: click reads the root's options only
    there, and users write it where it occurs to them (`propensity validate --encoding
    latin-1 PATH`). Nothing after a `--` is touched."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg.startswith("--encoding="):
            front.append(arg)
        elif arg == "--encoding" and i + 1 < len(args):
            front += args[i:i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def main() -> None:
    """Entry point: user errors end in one line and a non-zero exit, never a traceback."""
    try:  # not standalone: a usage error would be printed as a box of five lines
        code = app(args=global_options_first(sys.argv[1:]), standalone_mode=False)
    except typer.TyperException as exc:  # typer's click errors: a wrong command line
        if type(exc).__name__ == "NoArgsIsHelpError":  # `propensity` alone: typer has
            sys.exit(exc.exit_code)  # printed the help
        raise SystemExit(fail(exc.format_message(), code=exc.exit_code).exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except PropensityError as exc:  # an unknown model name is a usage error (exit_code 2)
        raise SystemExit(fail(str(exc), code=getattr(exc, "exit_code", 1)).exit_code) from None
    except UnicodeDecodeError as exc:  # a reader that does not name its file: say what we can
        raise SystemExit(fail(f"a file is not valid {exc.encoding} text (byte "
                              f"0x{exc.object[exc.start]:02x}); name its encoding: "
                              "propensity --encoding latin-1 ...", code=1).exit_code) from None
    except (OSError, ValueError) as exc:
        raise SystemExit(fail(f"{type(exc).__name__}: {exc}", code=1).exit_code) from None
    if code == INTERRUPTED:  # typer answers Ctrl-C with Exit(130), silently
        raise SystemExit(fail("interrupted (Ctrl-C)", code=INTERRUPTED).exit_code)
    if isinstance(code, int) and code:  # typer.Exit(code) returns it when not standalone
        sys.exit(code)
