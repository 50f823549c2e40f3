"""Hostile CIF sources: multi-block files, file names that are not UTF-8, non-regular entries."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from screening.errors import RecordError, StructureReadError
from screening.io.cif import split_data_blocks, structure_from_cif
from screening.io.records import StructureRecord, parse_record
from screening.io.sources import count_records, iter_records, printable_name


def _cif(a: float = 5.64, name: str = "x") -> str:
    text = Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
    return text.replace("data_NaCl", f"data_{name}", 1)


def test_each_data_block_is_its_own_record(tmp_path: Path) -> None:
    path = tmp_path / "many.cif"
    path.write_text("# header comment\n" + _cif(5.6, "first") + _cif(5.8, "second") + _cif(6.0, ""))
    records = list(iter_records(path))
    assert [r.record_id for r in records] == ["many#first", "many#second", "many#2"]
    lengths = [parse_record(r).lattice.a for r in records]
    assert lengths == pytest.approx([5.6, 5.8, 6.0])


def test_duplicate_block_names_become_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.cif"
    path.write_text(_cif(5.6, "same") + _cif(5.8, "same"))
    items = list(iter_records(path))
    assert isinstance(items[0], StructureRecord) and items[0].record_id == "dup#same"
    assert isinstance(items[1], RecordError) and "duplicate record id" in items[1].reason


def test_ten_thousand_blocks_split_in_one_pass(tmp_path: Path) -> None:
    """The 1.9 MB probe took 18 minutes for one record; splitting is one regex pass now."""
    block = _cif(5.64, "b")
    text = "".join(block.replace("data_b", f"data_b{k}", 1) for k in range(10_000))
    assert len(text) > 1_000_000
    blocks = split_data_blocks(text)
    assert len(blocks) == 10_000 and blocks[9_999][0] == "b9999"
    assert "".join(t for _, t in blocks) == text[text.index("data_") :]  # only the leading comment is dropped
    path = tmp_path / "big.cif"
    path.write_text(text)
    ids = [r.record_id for r in iter_records(path)]
    assert len(ids) == 10_000 and ids[0] == "big#b0" and len(set(ids)) == 10_000
    # and each block parses on its own (a sample; parsing is per record, so linear)
    assert parse_record(next(iter_records(path))).composition.reduced_formula == "NaCl"


def test_multi_block_text_in_one_record_is_a_named_error() -> None:
    with pytest.raises(StructureReadError, match="2 data blocks in one record"):
        structure_from_cif(_cif(5.6, "a") + _cif(5.8, "b"), record_id="cell", source="t.csv")


@pytest.fixture()
def hostile_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "good.cif").write_text(_cif())
    bad_name = os.path.join(os.fsencode(folder), b"bad\xff\xfename.cif")
    with open(bad_name, "w") as handle:
        handle.write(_cif(5.7))
    (folder / "adir.cif").mkdir()
    os.mkfifo(folder / "fifo.cif")
    os.symlink("loop.cif", folder / "loop.cif")
    os.symlink("missing-target.cif", folder / "dangling.cif")
    return folder


def test_a_hostile_folder_completes_and_reports_every_entry(hostile_folder: Path, tmp_path: Path, small_model) -> None:
    from screening.featurize.featurizer import featurize_source

    out = tmp_path / "emb.parquet"
    summary = featurize_source(hostile_folder, out, model=small_model, progress=False)
    assert list(pd.read_parquet(out).id) == ["good"]
    errors = pd.read_csv(summary["errors_path"]).set_index("id")
    assert sorted(errors.index) == sorted(["bad\\xff\\xfename", "adir", "fifo", "loop", "dangling"])
    assert "not valid UTF-8" in errors.loc["bad\\xff\\xfename", "reason"]
    assert errors.loc["bad\\xff\\xfename", "source"].endswith("bad\\xff\\xfename.cif")
    assert "a directory" in errors.loc["adir", "reason"]
    assert "a FIFO" in errors.loc["fifo", "reason"]
    assert "symlink" in errors.loc["loop", "reason"]
    assert "symlink" in errors.loc["dangling", "reason"]


def test_printable_name_escapes_only_what_is_not_utf8() -> None:
    assert printable_name("ok-é.cif") == "ok-é.cif"
    assert printable_name(os.fsdecode(b"x\xff.cif")) == "x\\xff.cif"


def test_the_progress_bar_counts_failed_records(hostile_folder: Path, tmp_path: Path, small_model, monkeypatch) -> None:
    import screening.featurize.featurizer as featurizer_module

    advanced: list[int] = []
    totals: list[int] = []

    @contextmanager
    def recording_bar(total, description, enabled=True, completed=0):
        totals.append(total)
        yield advanced.append

    monkeypatch.setattr(featurizer_module, "progress_bar", recording_bar)
    (hostile_folder / "garbage.cif").write_text("not a cif\n")
    featurizer_module.featurize_source(hostile_folder, tmp_path / "e.parquet", model=small_model, progress=True)
    assert totals == [count_records(hostile_folder)] == [7]
    assert sum(advanced) == 7


@pytest.mark.slow  # a worker process pool: ~20 s on 2 cores
def test_screen_completes_on_a_hostile_folder(hostile_folder: Path, tmp_path: Path, small_model) -> None:
    """``screen`` used to crash at start-up on a file name that is not UTF-8."""
    from screening.screen.run import screen_database

    out = tmp_path / "ranked.parquet"
    screen_database(hostile_folder, target=1.0, model=small_model, output=out, workers=1, progress=False)
    assert list(pd.read_parquet(out).id) == ["good"]
    errors = pd.read_csv(out.with_suffix(".errors.csv"))
    assert sorted(errors.id) == sorted(["bad\\xff\\xfename", "adir", "fifo", "loop", "dangling"])
