"""The ``matscreen`` command line: a thin shell over the library.

One module per command group registers its commands on :data:`app`; the group's error boundary
(``screening.cli.app``) turns library errors into ``error:`` lines and exit codes.
"""

from screening.cli import campaign, featurize, screen, search, synth  # noqa: F401  (registers the commands)
from screening.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
