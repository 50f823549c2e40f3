"""``python -m screening.cli`` runs the ``matscreen`` command."""

from screening.cli import main

main()
