"""The ``edgekit`` command line: one Typer app, one module per topic.

Each topic module exposes ``register(app)``; this module wires them up and owns the one place where an
``EdgekitError`` becomes a single red line on stderr and exit code 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import sys

import typer

from edgekit.cli.output import joined, plain_console
from edgekit.errors import EdgekitError

app = typer.Typer(
    name="edgekit",
    help="Export small language models, push them to phones and boards, profile them there, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}
err_console = plain_console(stderr=True)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


def _register_topics() -> None:
    from edgekit.cli import devices as devices_cli
    from edgekit.cli import emulator as emulator_cli
    from edgekit.cli import export as export_cli
    from edgekit.cli import farm as farm_cli
    from edgekit.cli import profile as profile_cli
    from edgekit.cli import push as push_cli
    from edgekit.cli import results as results_cli
    from edgekit.cli import study as study_cli

    for module in (export_cli, devices_cli, push_cli, emulator_cli, profile_cli, results_cli, study_cli,
                   farm_cli):
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if "--debug" not in args:
        from edgekit._quiet import quiet_libraries

        quiet_libraries()
    _register_topics()
    try:
        app(args=args, standalone_mode=False)
    except EdgekitError as exc:
        if _state["debug"]:
            raise
        # The message is text, not markup: "[/x]" or "[host]" in it must print as they are.
        err_console.print(joined(("error:", "red"), " ", str(exc)), soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print(joined(("interrupted", "yellow")))
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        # Usage errors from typer's bundled click carry their own message and exit code (2).
        exit_code = getattr(exc, "exit_code", None)
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise
