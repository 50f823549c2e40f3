"""Screening whole databases: record sources, local and Ray executors, the external ranking."""

from screening.screen.run import screen_database

__all__ = ["screen_database"]
