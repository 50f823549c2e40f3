"""An output table and its error report, published together and checked together.

Why: `featurize` and `screen` write two files, the output (``emb.parquet``) and its error report
(``emb.errors.csv``); a run killed between the two renames left the new output beside the
previous run's report, and nothing said so. Now

1. both are written under temporary names first;
2. the output records the SHA-256 of the report's bytes: in its Parquet metadata (key
   :data:`STAMP_KEY`, JSON ``{"errors_report": name, "sha256": hex}``), or, for a CSV output, in
   a stamp file beside it (``<stem>.errors.sha256``, ``sha256sum`` format: ``sha256sum -c`` checks it);
3. the report is renamed first, then the output (then a CSV output's stamp file).

A kill between two renames therefore leaves an output whose recorded hash differs from the
report beside it; :func:`pair_problem` says so, and :func:`screening.io.tables.read_table` (the
reader of every featurized table) warns with :class:`ReportMismatchWarning`. An output without a
recorded hash (written before this check existed) is not checked.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pandas as pd

from screening.io.file_digest import file_sha256

STAMP_KEY = "matscreen.errors_report"
STAMP_SUFFIX = ".errors.sha256"


class ReportMismatchWarning(UserWarning):
    """An output and the error report beside it come from different runs."""


def _is_csv(path: Path) -> bool:
    return path.name.lower().endswith((".csv", ".csv.gz"))


def stamp_path(output: str | Path) -> Path:
    """Where a CSV output's stamp lives: ``pool.csv.gz`` -> ``pool.errors.sha256``."""
    output = Path(output)
    stem = output.name[: -len(".csv.gz")] if output.name.lower().endswith(".csv.gz") else output.stem
    return output.with_name(stem + STAMP_SUFFIX)


def report_name(output: str | Path, errors_path: str | Path) -> str:
    """How the output names its report: the bare name beside it, else the absolute path."""
    output, errors_path = Path(output), Path(errors_path)
    if errors_path.parent.resolve() == output.parent.resolve():
        return errors_path.name
    return str(errors_path.resolve())


def parquet_stamp(output: str | Path, errors_path: str | Path, errors_tmp: str | Path) -> dict[bytes, bytes]:
    """Parquet key-value metadata recording the report ``errors_tmp`` (to be renamed to ``errors_path``)."""
    value = {"errors_report": report_name(output, errors_path), "sha256": file_sha256(errors_tmp)}
    return {STAMP_KEY.encode(): json.dumps(value).encode()}


def stamp_text(output: str | Path, errors_path: str | Path, errors_tmp: str | Path) -> str:
    """A CSV output's stamp file: one ``sha256sum`` line for the report."""
    return f"{file_sha256(errors_tmp)}  {report_name(output, errors_path)}\n"


def recorded_report(output: str | Path) -> tuple[Path, str] | None:
    """(report path, SHA-256) that ``output`` records, or None when it records none."""
    output = Path(output)
    try:
        if _is_csv(output):
            stamp = stamp_path(output)
            if not stamp.is_file():
                return None
            digest, _, name = stamp.read_text(encoding="utf-8").strip().partition("  ")
        else:
            import pyarrow.parquet as pq

            raw = (pq.read_metadata(output).metadata or {}).get(STAMP_KEY.encode())
            if raw is None:
                return None
            value = json.loads(raw)
            digest, name = value["sha256"], value["errors_report"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return output.parent / name, digest


def pair_problem(output: str | Path) -> str | None:
    """Why ``output`` and the error report it records do not belong together, or None."""
    recorded = recorded_report(output)
    if recorded is None:
        return None
    report, digest = recorded
    if not report.is_file():
        return f"{output}: its error report {report} is missing"
    if file_sha256(report) != digest:
        return (
            f"{output} and {report} come from different runs (a run stopped between publishing them?): "
            "the error report does not describe this output; re-run the command to get a matching pair"
        )
    return None


def warn_if_unpaired(output: str | Path) -> None:
    """Warn (:class:`ReportMismatchWarning`) when ``output``'s error report is from another run."""
    problem = pair_problem(output)
    if problem is not None:
        warnings.warn(problem, ReportMismatchWarning, stacklevel=3)


def publish_pair(errors_tmp: Path, errors_path: Path, output_tmp: Path, output: Path) -> None:
    """Rename the report first, then the output (see the module notes)."""
    os.replace(errors_tmp, errors_path)
    os.replace(output_tmp, output)


def read_error_report(path: str | Path, output: str | Path | None = None) -> pd.DataFrame:
    """An error report (``id, source, error, reason``) with its cells exactly as the records had
    them (:mod:`screening.safe_csv` decoded); with ``output``, warns when the two do not match."""
    from screening.safe_csv import decode_frame

    if output is not None:
        warn_if_unpaired(output)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return decode_frame(frame)


__all__ = [
    "STAMP_KEY",
    "STAMP_SUFFIX",
    "ReportMismatchWarning",
    "file_sha256",
    "pair_problem",
    "parquet_stamp",
    "publish_pair",
    "read_error_report",
    "recorded_report",
    "stamp_path",
    "stamp_text",
    "warn_if_unpaired",
]
