"""The ``matscreen`` command line: a thin shell over the library.

Every command is one library call plus printing; logic lives in ``screening``.
"""
from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Graph-network materials screening.")


# --- featurize / reduce (issue 2) ------------------------------------------------------------


# --- search / campaign (issue 3) -------------------------------------------------------------


# --- synth (issue 4) -------------------------------------------------------------------------


# --- fetch-mp / screen (issue 5) -------------------------------------------------------------


def main() -> None:
    app()


if __name__ == "__main__":
    main()
