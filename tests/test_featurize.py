"""Featurizing many structures: parity end to end, error report, cache, workers, matminer API."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from screening.atom_features import element_property_table, load_atom_init
from screening.featurize.featurizer import (
    CGCNNFeaturizer,
    featurize_records,
    featurize_source,
    load_featurizer_model,
    structure_fingerprint,
)
from screening.io.sources import iter_records
from screening.models.cgcnn import CGCNNConfig, init_model, save_model


@pytest.fixture(scope="module")
def small_model_path(tmp_path_factory):
    """A small random model whose table lacks plutonium, to exercise the unknown-element error."""
    table = element_property_table()
    table[94] = np.nan
    model = init_model(CGCNNConfig(h_fea_len=8, atom_fea_len=8, n_conv=1), table, seed=1)
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    save_model(model, path)
    return path


def nacl(a: float = 5.64) -> Structure:
    return Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture()
def mixed_folder(tmp_path):
    """Good CIFs plus one of every failure the issue names."""
    folder = tmp_path / "cifs"
    folder.mkdir()
    nacl().to(filename=str(folder / "nacl.cif"))
    Structure(Lattice.cubic(4.1), ["Cs", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(folder / "csbr.cif"))
    (folder / "garbage.cif").write_text("this is not a CIF at all\n")
    Structure(Lattice.cubic(3.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]]).to(filename=str(folder / "alloy.cif"))
    Structure(Lattice.cubic(3.2), ["Pu"], [[0, 0, 0]]).to(filename=str(folder / "pu.cif"))
    (folder / "id_prop.csv").write_text("nacl,5.0\ncsbr,4.1\ngarbage,1\nalloy,0\npu,0\n")
    return folder


def test_bad_records_go_to_the_error_report_and_the_rest_completes(mixed_folder, small_model_path, tmp_path):
    out = tmp_path / "emb.parquet"
    summary = featurize_source(mixed_folder, out, model=str(small_model_path), progress=False)
    frame = pd.read_parquet(out)
    errors = pd.read_csv(summary["errors_path"])
    assert sorted(frame.id) == ["csbr", "nacl"]
    assert summary == summary | {"rows": 2, "errors": 3}
    reasons = dict(zip(errors.id, errors.reason))
    assert set(reasons) == {"garbage", "alloy", "pu"}
    assert "partial occupancy" in reasons["alloy"]
    assert "Pu" in reasons["pu"]
    assert errors.source.notna().all()
    assert frame.set_index("id").loc["nacl", "target"] == 5.0  # labels from id_prop.csv carried
    assert [c for c in frame.columns if c.startswith("emb_")] == [f"emb_{k}" for k in range(8)]
    assert "pred_band_gap" in frame.columns and (frame.formula == frame.formula).all()


def test_rerun_reuses_the_cache_keyed_by_content_and_model(mixed_folder, small_model_path, tmp_path):
    cache = tmp_path / "cache"
    first = featurize_source(
        mixed_folder, tmp_path / "a.parquet", model=str(small_model_path), cache_dir=cache, progress=False
    )
    second = featurize_source(
        mixed_folder, tmp_path / "b.parquet", model=str(small_model_path), cache_dir=cache, progress=False
    )
    assert first["cache_hits"] == 0 and second["cache_hits"] == 2
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a, b)
    other = init_model(CGCNNConfig(h_fea_len=8, atom_fea_len=8, n_conv=1), element_property_table(), seed=2)
    third = featurize_source(mixed_folder, tmp_path / "c.parquet", model=other, cache_dir=cache, progress=False)
    assert third["cache_hits"] == 0  # another model's weights never hit this model's cache


def test_fingerprint_ignores_cell_translation_of_coordinates_by_whole_lattice_vectors():
    s = nacl()
    shifted = Structure(s.lattice, s.species, s.frac_coords + np.array([1.0, 0.0, -1.0]))
    assert structure_fingerprint(s) == structure_fingerprint(shifted)
    assert structure_fingerprint(s) != structure_fingerprint(nacl(5.70))


def test_worker_processes_give_the_same_rows_as_in_process(mixed_folder, small_model_path):
    records = [r for r in iter_records(mixed_folder) if not isinstance(r, Exception)]
    inline = featurize_records(records, str(small_model_path), workers=0)
    pooled = featurize_records(records, str(small_model_path), workers=2)
    pd.testing.assert_frame_equal(inline.frame, pooled.frame)
    assert [e.record_id for e in inline.errors] == [e.record_id for e in pooled.errors]


def test_workers_embed_blocks_in_the_given_order_and_read_the_cache_themselves(small_model_path, tmp_path):
    """Many small blocks in flight on two workers: rows come back in input order, equal to the
    in-process rows, with a bad record reported where it was; a re-run finds every row in the
    cache from inside the workers and writes the same rows."""
    from screening.featurize.featurizer import Featurizer
    from screening.io.records import as_record

    structures = {f"nacl_{k}": nacl(5.4 + 0.01 * k) for k in range(30)}
    structures["pu"] = Structure(Lattice.cubic(3.0), ["Pu"], [[0, 0, 0]])
    records = [as_record(s, key) for key, s in structures.items()]
    model = load_featurizer_model(str(small_model_path))
    inline = Featurizer(model, workers=0).featurize(records)
    cache = tmp_path / "cache"
    pooled = Featurizer(model, workers=2, cache_dir=cache, block_size=3, chunk_size=7)
    first = pooled.featurize(records)
    again = Featurizer(model, workers=2, cache_dir=cache, block_size=3, chunk_size=7)
    second = again.featurize(records)
    assert list(first.frame.id) == [k for k in structures if k != "pu"]
    pd.testing.assert_frame_equal(first.frame, inline.frame)
    pd.testing.assert_frame_equal(second.frame, inline.frame)
    assert [e.record_id for e in first.errors] == ["pu"] == [e.record_id for e in second.errors]
    assert (pooled.cache_hits, again.cache_hits) == (0, 30)


def test_spawned_workers_give_the_same_rows(small_model_path, monkeypatch):
    """Where there is no safe fork (macOS, Windows) workers are spawned and the model travels
    pickled: the rows must be those of the in-process run."""
    from multiprocessing import get_context

    import screening.featurize.featurizer as fz
    from screening.io.records import as_record

    records = [as_record(nacl(5.5 + 0.02 * k), f"nacl_{k}") for k in range(6)]
    model = load_featurizer_model(str(small_model_path))
    inline = fz.Featurizer(model, workers=0).featurize(records)
    monkeypatch.setattr(fz, "_pool_context", lambda: get_context("spawn"))
    spawned = fz.Featurizer(model, workers=2, block_size=2).featurize(records)
    pd.testing.assert_frame_equal(spawned.frame, inline.frame)


class _KillsItsReader:
    """Stands in for a structure; the process that reads its length dies at once (as the kernel
    kills a worker that runs out of memory)."""

    def __len__(self) -> int:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
        return 0


def test_a_worker_that_dies_stops_the_run_with_a_clear_error_not_a_hang(small_model_path, tmp_path):
    from screening.errors import MatscreenError
    from screening.featurize.featurizer import Featurizer
    from screening.io.records import StructureRecord, as_record

    records = [as_record(nacl(5.5 + 0.02 * k), f"nacl_{k}") for k in range(4)]
    records.insert(2, StructureRecord("doomed", "test", structure=_KillsItsReader()))  # type: ignore[arg-type]
    model = load_featurizer_model(str(small_model_path))
    # the doomed record's block and any not finished before it: which finished first varies
    with pytest.raises(MatscreenError, match=r"process died .* records '(nacl_0|doomed)' … 'nacl_3' \((5|3)\) were"):
        Featurizer(model, workers=2, block_size=2).featurize(records)


@pytest.mark.shared
def test_featurizing_the_sample_folder_reproduces_original_predictions(cgcnn_ref, tmp_path):
    folder = tmp_path / "samples"
    shutil.copytree(cgcnn_ref / "data" / "sample-regression", folder)
    model = load_featurizer_model(cgcnn_ref / "pre-trained" / "band-gap.pth.tar", folder / "atom_init.json")
    result = featurize_records(list(iter_records(folder)), model)
    ref = pd.read_csv(cgcnn_ref / "outputs" / "band_gap_predictions.csv", dtype={"cif_id": str}).set_index("cif_id")
    got = result.frame.set_index("id")
    np.testing.assert_allclose(got.loc[ref.index, "pred_band-gap"], ref.prediction, atol=1e-4)
    emb = pd.read_csv(cgcnn_ref / "outputs" / "band_gap_embeddings.csv", dtype={"cif_id": str}).set_index("cif_id")
    np.testing.assert_allclose(
        got.loc[emb.index, [f"emb_{k}" for k in range(32)]].to_numpy(), emb.to_numpy(), atol=1e-4
    )


@pytest.mark.shared
def test_original_checkpoint_without_atom_init_is_a_clear_error(cgcnn_ref):
    from screening.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="atom_init"):
        load_featurizer_model(cgcnn_ref / "pre-trained" / "band-gap.pth.tar")


def test_matminer_featurize_dataframe(small_model_path):
    df = pd.DataFrame(
        {"structure": [nacl(), nacl(5.9), Structure(Lattice.cubic(4.1), ["Cs", "Br"], [[0, 0, 0], [0.5] * 3])]}
    )
    featurizer = CGCNNFeaturizer(str(small_model_path))
    out = featurizer.featurize_dataframe(df, "structure")
    cols = featurizer.feature_labels()
    assert len(cols) == 8 and all(c in out.columns for c in cols)
    assert np.isfinite(out[cols].to_numpy()).all()
    assert not np.allclose(out[cols].iloc[0], out[cols].iloc[1])  # different lattice constant, different embedding


def test_default_model_is_the_projects_128d_model():
    model = load_featurizer_model()
    assert model.config.h_fea_len == 128
    assert model.config.target_name == "band_gap"


def test_the_default_takes_formation_energy_from_its_shipped_branch():
    """Band gap, std and embedding from the default network; formation energy from the shipped
    branch on its trunk (pretrained/MODEL_CARD.md); --single-model the network alone."""
    from screening.featurize.registry import SHIPPED_BRANCHES
    from screening.models.property_branch import BranchedNet

    model = load_featurizer_model()
    assert isinstance(model, BranchedNet)
    assert list(model.branches) == list(SHIPPED_BRANCHES["cgcnn_bandgap_128"]) == ["formation_energy_per_atom"]
    alone = load_featurizer_model(branches=False)
    assert not isinstance(alone, BranchedNet)
    for (k, a), b in zip(model.base.state_dict().items(), alone.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy(), equal_nan=True), k


def test_the_formation_energy_first_model_loads_by_name_with_the_default_graphs():
    """The shipped alternative is chosen by name (``--model cgcnn_formation_energy_128``) and
    reads the same crystal graphs as the default, so one graph build serves either."""
    from screening.featurize.featurizer import prediction_columns

    default = load_featurizer_model(branches=False)
    alt = load_featurizer_model("cgcnn_formation_energy_128", branches=False)
    assert alt.config.h_fea_len == 128
    for field in ("radius", "max_num_nbr", "dmin", "step"):
        assert getattr(alt.config, field) == getattr(default.config, field)
    assert prediction_columns(alt) == prediction_columns(default)
    assert "pred_formation_energy_per_atom" in prediction_columns(alt)
    weights = dict(alt.state_dict())
    assert any(not np.array_equal(t.numpy(), weights[k].numpy()) for k, t in default.state_dict().items())


def test_the_formation_energy_first_model_takes_formation_energy_from_its_own_branch():
    """``--model cgcnn_formation_energy_128`` comes with the branch trained on its trunk (the
    formation energy of the three-network mean in one pass); its band gap, std and embedding stay
    the network's own, and the default's branch is refused on it."""
    from screening.errors import ModelLoadError
    from screening.featurize.registry import SHIPPED_BRANCHES, pretrained_dir
    from screening.models.property_branch import BranchedNet, load_branch

    alt = load_featurizer_model("cgcnn_formation_energy_128")
    assert isinstance(alt, BranchedNet) and list(alt.branches) == ["formation_energy_per_atom"]
    assert SHIPPED_BRANCHES["cgcnn_formation_energy_128"] != SHIPPED_BRANCHES["cgcnn_bandgap_128"]
    with pytest.raises(ModelLoadError, match="another network's trunk"):
        load_branch(pretrained_dir() / "cgcnn_bandgap_128_formation_energy_branch.safetensors", alt.base)
    alone = load_featurizer_model("cgcnn_formation_energy_128", branches=False)
    rows = featurize_records({"NaCl": nacl()}, alt).frame
    own = featurize_records({"NaCl": nacl()}, alone).frame
    emb = [c for c in rows.columns if c.startswith("emb_")]
    assert np.array_equal(rows[emb].to_numpy(), own[emb].to_numpy())
    assert rows["pred_band_gap"].iloc[0] == own["pred_band_gap"].iloc[0]
    ef, ef_own = rows["pred_formation_energy_per_atom"].iloc[0], own["pred_formation_energy_per_atom"].iloc[0]
    assert ef != ef_own and abs(ef - ef_own) < 0.5 and np.isfinite(ef)


def test_unknown_model_name_lists_what_exists():
    from screening.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="unknown model"):
        load_featurizer_model("no_such_model")


def test_atom_init_table_loads_with_nan_for_absent_elements(tmp_path):
    path = tmp_path / "atom_init.json"
    path.write_text('{"1": [0, 1], "8": [1, 0]}')
    table = load_atom_init(path)
    assert table.shape == (101, 2) and table[8].tolist() == [1.0, 0.0] and np.isnan(table[2]).all()


def test_record_errors_survive_pickling_across_processes():
    import pickle

    from screening.errors import GraphBuildError

    err = GraphBuildError("mp-1", "structure has no atoms", "db.csv")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is GraphBuildError and (back.record_id, back.reason, back.source) == (
        "mp-1",
        "structure has no atoms",
        "db.csv",
    )
    assert str(back) == "db.csv: record 'mp-1': structure has no atoms"


@pytest.mark.slow
def test_compiled_forward_gives_the_same_rows(mixed_folder, small_model_path):
    """--compile (torch.compile, dynamic shapes) is a speed option only: identical numbers."""
    records = [r for r in iter_records(mixed_folder) if not isinstance(r, Exception)]
    eager = featurize_records(records, str(small_model_path))
    fast = featurize_records(records, str(small_model_path), compile=True)
    emb = [c for c in eager.frame.columns if c.startswith("emb_")]
    np.testing.assert_allclose(fast.frame[emb].to_numpy(), eager.frame[emb].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(fast.frame.pred_band_gap, eager.frame.pred_band_gap, atol=1e-5)
