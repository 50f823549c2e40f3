"""Issue 27 item 9: `featurize` leaves nothing in the temp folder, and progress counts are exact.

PyG wrote a jinja-generated ``screening.models.cgcnn_CGCNNConv_propagate_*.py`` into the temp
folder in every process that built a model, and never removed it. A progress bar showed
``133/130``: the total counted a multi-block CIF once while every block advanced it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from pymatgen.core import Lattice, Structure

from screening.io.sources import count_records, iter_records
from screening.progress import progress_bar

REPO = Path(__file__).resolve().parents[2]


def _cif(a: float = 5.64, name: str = "NaCl") -> str:
    text = Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
    return text.replace("data_NaCl", f"data_{name}", 1)


def test_featurize_leaves_the_temp_folder_as_it_found_it(tmp_path: Path, small_model: str) -> None:
    """Run the command in a fresh process (PyG writes its file once per process) with its own
    temp folder; afterwards the folder holds at most the per-user cache torch keeps there
    (``torchinductor_<user>``, created by importing PyG and reused by every later run)."""
    (tmp_path / "nacl.cif").write_text(_cif())
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "emb.parquet"
    cmd = [sys.executable, "-m", "screening.cli", "featurize", str(tmp_path / "nacl.cif"), "-o", str(out)]
    cmd += ["--model", small_model, "--no-cache", "--workers", "0"]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    left = sorted(p.name for p in temp.iterdir())
    assert [name for name in left if not name.startswith("torchinductor_")] == [], left
    assert not list(temp.rglob("*.py"))


def test_building_and_unpickling_a_model_writes_no_generated_module(tmp_path: Path) -> None:
    """The same in-process, including the copy a spawned `screen` worker unpickles."""
    code = (
        "import pickle, tempfile\n"
        f"tempfile.tempdir = {str(tmp_path)!r}\n"
        "from screening.models.cgcnn import CGCNNConfig, init_model\n"
        "from screening.atom_features import element_property_table\n"
        "m = init_model(CGCNNConfig(h_fea_len=8, atom_fea_len=8, n_conv=2), element_property_table(), seed=1)\n"
        "pickle.loads(pickle.dumps(m))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.rglob("*.py")), sorted(p.name for p in tmp_path.iterdir())


def _mixed_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "multi.cif").write_text("# three blocks\n" + _cif(5.6, "a") + _cif(5.7, "b") + _cif(5.8, "c"))
    (folder / "one.cif").write_text(_cif())
    (folder / "two.cif").write_text(_cif(5.9, "x") + _cif(6.0, "y"))
    (folder / "garbage.cif").write_text("not a cif\n")
    return folder


def test_the_count_is_the_number_of_items_read(tmp_path: Path) -> None:
    folder = _mixed_folder(tmp_path / "cifs")
    items = list(iter_records(folder))
    assert len(items) == 3 + 1 + 2 + 1
    assert count_records(folder) == len(items)
    assert count_records(folder / "multi.cif") == len(list(iter_records(folder / "multi.cif"))) == 3


def test_the_featurize_bar_ends_exactly_at_its_total(tmp_path: Path, small_model: str, monkeypatch) -> None:
    import screening.featurize.featurizer as featurizer_module

    folder = _mixed_folder(tmp_path / "cifs")
    bars: list[progress_bar] = []

    @contextmanager
    def recording_bar(total, description, enabled=True, completed=0):
        bar = progress_bar(total, description, enabled=False, completed=completed)
        bars.append(bar)
        with bar as advance:
            yield advance

    monkeypatch.setattr(featurizer_module, "progress_bar", recording_bar)
    featurizer_module.featurize_source(folder, tmp_path / "e.parquet", model=small_model, progress=True)
    (bar,) = bars
    assert bar.completed == 7 and bar.total == 7


def test_a_bar_never_shows_more_done_than_its_total() -> None:
    """A total that is only an estimate (an ASE file of many frames counts once) grows with the
    work instead of being overtaken, and a finished job ends at ``total == completed``."""

    class Terminal(io.StringIO):  # the bar is drawn on a terminal; a log gets plain lines
        def isatty(self) -> bool:
            return True

    shown: list[tuple[float, float | None]] = []
    bar = progress_bar(2, "probe", stream=Terminal())
    with bar as advance:
        for _ in range(3):
            advance(1)
            task = bar._bar.tasks[0]
            shown.append((task.completed, task.total))
    assert all(total is not None and done <= total for done, total in shown), shown
    assert shown[-1] == (3, 3) and (bar.completed, bar.total) == (3, 3)

    short = progress_bar(5, "probe", enabled=False)
    with short as advance:
        advance(4)
    assert (short.completed, short.total) == (4, 4)
