"""Issue 27 item 5: an output and its error report are published together; a mismatch is reported.

A run killed between the two renames used to leave the new ``emb.parquet`` beside the previous
run's ``emb.errors.csv`` without a word. The output now records the hash of its report, the
report is renamed first, and the project's table reader warns when the two differ.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from screening.featurize.featurizer import featurize_source
from screening.io.report_pair import ReportMismatchWarning, pair_problem, read_error_report
from screening.io.tables import read_table


def _source(path: Path, n_good: int, n_bad: int) -> Path:
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict()
    entries = [{"id": f"good{k}", "structure": nacl} for k in range(n_good)]
    entries += [{"id": f"bad{k}", "structure": "data_x\nnot a cif\n"} for k in range(n_bad)]
    path.write_text(json.dumps(entries))
    return path


def _read_quietly(path: Path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportMismatchWarning)
        return read_table(path, "embeddings")


@pytest.mark.parametrize("name", ["emb.parquet", "emb.csv"])
def test_a_new_output_beside_the_old_report_is_detected(name: str, tmp_path: Path, small_model) -> None:
    out = tmp_path / name
    first = featurize_source(_source(tmp_path / "a.json", 2, 1), out, model=small_model, progress=False)
    assert pair_problem(out) is None and len(_read_quietly(out)) == 2
    old_report = tmp_path / "old.errors.csv"
    shutil.copy(first["errors_path"], old_report)

    second = featurize_source(_source(tmp_path / "b.json", 3, 2), out, model=small_model, progress=False)
    assert pair_problem(out) is None and len(_read_quietly(out)) == 3
    assert len(read_error_report(second["errors_path"], out)) == 2

    # what a kill just after the output's rename used to leave: the new output, the old report
    shutil.copy(old_report, second["errors_path"])
    problem = pair_problem(out)
    assert problem is not None and "different runs" in problem
    with pytest.warns(ReportMismatchWarning, match="different runs"):
        read_table(out, "embeddings")
    with pytest.warns(ReportMismatchWarning):
        read_error_report(second["errors_path"], out)


def test_a_kill_between_the_two_renames_leaves_a_detectable_pair(tmp_path: Path, small_model, monkeypatch) -> None:
    """Stop the re-run right after its first rename: whichever file was renamed, the pair is told apart."""
    out = tmp_path / "emb.parquet"
    featurize_source(_source(tmp_path / "a.json", 2, 1), out, model=small_model, progress=False)
    before = (out.read_bytes(), (tmp_path / "emb.errors.csv").read_bytes())

    real_replace = os.replace
    renamed: list[str] = []

    def killed_after_first_rename(src, dst):
        if Path(dst).name in ("emb.parquet", "emb.errors.csv"):
            if renamed:
                raise KeyboardInterrupt("killed")
            renamed.append(Path(dst).name)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        featurize_source(_source(tmp_path / "b.json", 3, 2), out, model=small_model, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)

    assert renamed == ["emb.errors.csv"]  # the report goes first
    after = (out.read_bytes(), (tmp_path / "emb.errors.csv").read_bytes())
    assert after[0] == before[0] and after[1] != before[1]  # old output, new report: a mismatch
    assert pair_problem(out) is not None
    with pytest.warns(ReportMismatchWarning):
        read_table(out, "embeddings")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # no temporary left


def test_screen_records_its_report_in_the_ranking(tmp_path: Path, small_model) -> None:
    from screening.screen.run import screen_database

    out = tmp_path / "ranked.parquet"
    summary = screen_database(
        _source(tmp_path / "db.json", 2, 1), target=1.0, model=small_model, output=out, workers=0, progress=False
    )
    assert summary.errors == 1 and pair_problem(out) is None
    Path(summary.errors_path).write_text("id,source,error,reason\n")  # another run's (empty) report
    assert pair_problem(out) is not None
