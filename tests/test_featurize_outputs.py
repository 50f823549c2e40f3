"""A multi-task model's every output, and its uncertainty, reach the featurize table and cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Lattice, Structure

from screening.atom_features import element_property_table
from screening.featurize import featurize_source, prediction_columns
from screening.models.cgcnn import CGCNNConfig, init_model


def multitask_model() -> torch.nn.Module:
    outputs = [
        {"name": "band_gap", "unit": "eV", "mean": 1.3, "std": 1.5, "transform": "softplus"},
        {"name": "formation_energy_per_atom", "unit": "eV/atom", "mean": -1.5, "std": 1.0, "transform": "affine"},
    ]
    config = CGCNNConfig(
        h_fea_len=8,
        atom_fea_len=8,
        n_conv=1,
        n_out=3,
        target_name="band_gap",
        target_unit="eV",
        outputs=outputs,
        uncertainty={"calibration": 1.3},
    )
    return init_model(config, element_property_table(), seed=3)


def write_cifs(folder) -> None:
    folder.mkdir()
    for name, a in (("nacl", 5.64), ("nacl_strained", 5.9), ("kcl", 6.29)):
        Structure(Lattice.cubic(a), ["K" if name == "kcl" else "Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
            filename=str(folder / f"{name}.cif")
        )


def test_every_output_and_the_gap_std_are_columns_and_survive_the_cache(tmp_path) -> None:
    model = multitask_model()
    assert prediction_columns(model) == ["pred_band_gap", "pred_formation_energy_per_atom", "pred_band_gap_std"]
    write_cifs(tmp_path / "cifs")
    cache = tmp_path / "cache"
    first = featurize_source(tmp_path / "cifs", tmp_path / "a.parquet", model=model, cache_dir=cache, progress=False)
    second = featurize_source(tmp_path / "cifs", tmp_path / "b.parquet", model=model, cache_dir=cache, progress=False)
    assert first["rows"] == 3 and second["cache_hits"] == 3
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a, b)  # cached rows carry every prediction, not just the first
    assert (a.pred_band_gap >= 0).all()  # the softplus output layer: never a negative gap
    assert (a.pred_band_gap_std > 0).all()
    assert a.pred_formation_energy_per_atom.nunique() == 3  # three crystals, three distinct predictions
    # The columns are the model's own forward outputs.
    from screening.featurize.featurizer import prepare_record
    from screening.graph_store import collate
    from screening.io.sources import iter_records

    records = sorted(iter_records(tmp_path / "cifs"), key=lambda r: r.record_id)
    graphs = [prepare_record(r, model.config.radius, model.config.max_num_nbr).graph for r in records]
    model.eval()
    with torch.no_grad():
        out = model(collate(graphs))
    frame = a.set_index("id").loc[[r.record_id for r in records]]
    np.testing.assert_allclose(frame.pred_formation_energy_per_atom, out["outputs"][:, 1].numpy(), rtol=1e-5)
    np.testing.assert_allclose(frame.pred_band_gap_std, out["prediction_std"].numpy(), rtol=1e-5)
