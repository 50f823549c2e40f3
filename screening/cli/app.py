"""The ``matscreen`` Typer app and its one error boundary.

Commands are registered by the modules beside this one; each is parse → one library call → print.
Library errors (:class:`MatscreenError`) and operating-system errors (unreadable, read-only or
full disks) become one ``error:`` line and exit code 1 here, so no command repeats the handling;
anything else is a bug and is reported as one, with ``--debug`` (or ``MATSCREEN_DEBUG=1``) showing
the traceback. A ``SystemExit`` raised by library code (a client that calls ``sys.exit(message)``)
is an error line with exit code 1 too, never the bare message: typer's own exits are
``click.exceptions.Exit``, not ``SystemExit``. Every line printed here has the registered secrets
(the API key, in any case or encoding) masked (:mod:`screening.redaction`).
"""

from __future__ import annotations

import os
from typing import Any

import typer

from screening import __version__
from screening.cli.help_screen import OneScreenGroup
from screening.errors import MatscreenError
from screening.redaction import redact

EXIT_ERROR = 1
EXIT_BUG = 2


def _cli_control_flow() -> tuple[type[BaseException], ...]:
    """Exceptions that are the command line's own control flow (exit, abort, usage errors).

    Recent typer vendors click, older typer uses click itself: pass both families through.
    """
    kinds: list[type[BaseException]] = [typer.Exit, typer.Abort]
    if hasattr(typer, "TyperException"):
        kinds.append(typer.TyperException)
    try:
        import click

        kinds += [click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort]
    except ImportError:
        pass
    return tuple(kinds)


_CONTROL_FLOW = _cli_control_flow()


def _debug_requested(ctx: Any) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("MATSCREEN_DEBUG", "") not in ("", "0")


class ErrorBoundaryGroup(OneScreenGroup):
    """A command group that turns errors raised by any sub-command into one readable line."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _CONTROL_FLOW:
            raise
        except SystemExit as exc:  # from library code (typer's own exits are click's Exit): never a success
            if _debug_requested(ctx):
                raise
            reason = exc.code if isinstance(exc.code, str) else f"it called sys.exit({exc.code!r})"
            _error_line(f"error: a library stopped the command: {reason}")
            raise typer.Exit(code=EXIT_ERROR) from None
        except (MatscreenError, OSError) as exc:
            if _debug_requested(ctx):
                raise
            _error_line(f"error: {exc}")
            raise typer.Exit(code=EXIT_ERROR) from None
        except Exception as exc:  # noqa: BLE001 - the boundary: a bug, shown as one
            if _debug_requested(ctx):
                raise
            _error_line(
                f"error: internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback "
                "and report it"
            )
            raise typer.Exit(code=EXIT_BUG) from None


def _error_line(text: str) -> None:
    typer.secho(redact(text), fg=typer.colors.RED, err=True)


# No local variables in tracebacks: they could print an API key (fetch-mp) or a user's data.
app = typer.Typer(
    cls=ErrorBoundaryGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Graph-network materials screening: CIFs to CGCNN embeddings, band-gap searches, synthesis campaigns.",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"matscreen {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    """Graph-network materials screening: CIFs to CGCNN embeddings, band-gap searches, synthesis campaigns."""
