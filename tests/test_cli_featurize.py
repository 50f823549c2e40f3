"""`matscreen featurize` and `matscreen reduce` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from screening.cli import app

runner = CliRunner()


def write_json_source(path):
    structures = {
        f"s{k}": Structure(Lattice.cubic(a), [el, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict()
        for k, (a, el) in enumerate([(5.64, "Na"), (6.29, "K"), (5.14, "Li"), (6.6, "Rb"), (4.1, "Cs")])
    }
    path.write_text(json.dumps(structures))


def test_featurize_json_with_default_model_then_reduce(tmp_path):
    source = tmp_path / "structs.json"
    write_json_source(source)
    out = tmp_path / "emb.parquet"
    result = runner.invoke(
        app, ["featurize", str(source), "-o", str(out), "--workers", "0", "--cache-dir", str(tmp_path / "c")]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 5 rows" in result.output and "0 errors" in result.output
    frame = pd.read_parquet(out)
    assert len([c for c in frame.columns if c.startswith("emb_")]) == 128
    # NaCl-like chlorides: the shipped model predicts wide gaps
    assert (frame.pred_band_gap > 2.0).all()

    pcs = tmp_path / "pcs.parquet"
    result = runner.invoke(app, ["reduce", str(out), "-o", str(pcs), "-k", "2"])
    assert result.exit_code == 0, result.output
    assert "explained variance" in result.output
    reduced = pd.read_parquet(pcs)
    assert {"pc_1", "pc_2"} <= set(reduced.columns)
    # the embeddings stay, so the reduced file is still a pool for `search` / `campaign new`
    assert [c for c in reduced.columns if c.startswith("emb_")] == [c for c in frame.columns if c.startswith("emb_")]
    assert (tmp_path / "pcs.pca.json").exists()
    assert np.isfinite(reduced[["pc_1", "pc_2"]].to_numpy()).all()


def test_featurize_rejects_a_radius_the_model_was_not_trained_with(tmp_path):
    source = tmp_path / "structs.json"
    write_json_source(source)
    result = runner.invoke(app, ["featurize", str(source), "-o", str(tmp_path / "e.parquet"), "--radius", "10"])
    assert result.exit_code != 0
    assert "radius" in result.output


def test_featurize_missing_source_names_the_path(tmp_path):
    result = runner.invoke(app, ["featurize", str(tmp_path / "nowhere"), "-o", str(tmp_path / "e.parquet")])
    assert result.exit_code != 0
    assert result.exit_code == 1 and "nowhere" in result.output


def test_featurize_never_writes_over_its_input(tmp_path) -> None:
    """-o naming the input table, a structure file of the input folder, or a folder is refused
    before any work, and the input is byte for byte what it was."""
    from typer.testing import CliRunner

    from screening.cli import app

    runner = CliRunner()
    folder = tmp_path / "cifs"
    folder.mkdir()
    cif = (
        "data_x\\n_cell_length_a 5.64\\n_cell_length_b 5.64\\n_cell_length_c 5.64\\n_cell_angle_alpha 90\\n"
        "_cell_angle_beta 90\\n_cell_angle_gamma 90\\n_symmetry_space_group_name_H-M 'P 1'\\nloop_\\n"
        "_symmetry_equiv_pos_as_xyz\\n 'x, y, z'\\nloop_\\n_atom_site_label\\n_atom_site_type_symbol\\n"
        "_atom_site_fract_x\\n_atom_site_fract_y\\n_atom_site_fract_z\\n Na1 Na 0 0 0\\n Cl1 Cl 0.5 0.5 0.5\\n"
    )
    (folder / "good.cif").write_text(cif)
    table = tmp_path / "structures.csv"
    table.write_text('id,cif\\nnacl,"' + cif + '"\\n')
    before = {p: p.read_bytes() for p in (folder / "good.cif", table)}
    for source, out, says in (
        (table, table, "would replace that input"),
        (folder, folder / "good.cif", "would replace a file of the input folder"),
        (folder, tmp_path, "is a folder"),
    ):
        res = runner.invoke(app, ["featurize", str(source), "-o", str(out)])
        assert res.exit_code == 1, res.output
        assert says in res.output
    assert {p: p.read_bytes() for p in before} == before


def test_featurize_and_screen_default_to_one_worker_per_cpu(tmp_path, monkeypatch):
    """Without --workers both commands use every CPU the process may run on (the forward pass runs
    in the workers, so one worker would leave the other cores idle); --workers still decides."""
    import screening.featurize.featurizer as featurizer
    import screening.processes as processes
    import screening.screen.run as run

    seen: dict[str, int] = {}

    class Stop(Exception):
        pass

    def fake(name):
        def record(*args, **kwargs):
            seen[name] = kwargs["workers"]
            raise Stop

        return record

    monkeypatch.setattr(processes, "usable_cpus", lambda cap=8: 3)
    monkeypatch.setattr(featurizer, "featurize_source", fake("featurize"))
    monkeypatch.setattr(run, "screen_database", fake("screen"))
    source = tmp_path / "s.json"
    write_json_source(source)
    for extra, expected in (([], 3), (["--workers", "0"], 0)):
        runner.invoke(app, ["featurize", str(source), "-o", str(tmp_path / "e.parquet"), *extra])
        runner.invoke(app, ["screen", str(source), "--target", "2.0", "-o", str(tmp_path / "r.parquet"), *extra])
        assert seen == {"featurize": expected, "screen": expected}
        seen.clear()
    monkeypatch.undo()
    assert 1 <= processes.usable_cpus() <= 8 and processes.usable_cpus(cap=1) == 1
