"""Exception classes shared across the pipeline.

Every error that concerns one input record carries the record id and a human reason, so a
batch can collect them into an error report instead of stopping at the first bad crystal.
"""

from __future__ import annotations


class MatscreenError(Exception):
    """Base class of every error the library raises on purpose."""


class RecordError(MatscreenError):
    """One input record (a CIF, a row, a structure) could not be processed.

    ``source`` names the file the record came from, ``record_id`` the record inside it.
    """

    def __init__(self, record_id: str, reason: str, source: str | None = None) -> None:
        self.record_id = str(record_id)
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}record {self.record_id!r}: {reason}")

    def __reduce__(self):
        # Errors cross process boundaries (worker pools, Ray); the default pickling would call
        # __init__ with the formatted message only and kill the receiving side.
        return (self.__class__, (self.record_id, self.reason, self.source))

    def __str__(self) -> str:  # the source may be filled in after construction
        where = f"{self.source}: " if self.source else ""
        return f"{where}record {self.record_id!r}: {self.reason}"


class StructureReadError(RecordError):
    """The record's text could not be parsed into a structure."""


class InvalidStructureError(StructureReadError):
    """The record parsed, but its structure is physically impossible or too costly to embed
    (non-finite or flat cell, atoms on top of each other, unknown elements, occupancies outside
    (0, 1], too many sites or neighbours). The reason starts with the name of the failed check
    (see :mod:`screening.io.validate`)."""


class GraphBuildError(RecordError):
    """A parsed structure cannot become a crystal graph (disorder, unknown element, no atoms)."""


class ModelLoadError(MatscreenError):
    """A checkpoint or weights file is missing, malformed or inconsistent with its config."""
