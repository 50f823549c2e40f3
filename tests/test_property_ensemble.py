"""A property ensemble: the base network's embedding and band gap, the companions' mean for the
properties named — in one forward, through featurize and its cache, and for shipped models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from screening.atom_features import element_property_table
from screening.errors import ModelLoadError
from screening.featurize import featurize_source, prediction_columns, registry
from screening.featurize.registry import model_fingerprint
from screening.models.cgcnn import CGCNNConfig, init_model, save_model
from screening.models.property_ensemble import PropertyEnsemble
from tests.test_featurize_outputs import multitask_model, write_cifs

EF = "formation_energy_per_atom"


def companion(seed: int, **graph) -> torch.nn.Module:
    """A formation-energy-first network: the same outputs, another order of columns and no std."""
    outputs = [
        {"name": EF, "unit": "eV/atom", "mean": -1.0, "std": 0.5, "transform": "affine"},
        {"name": "band_gap", "unit": "eV", "mean": 1.0, "std": 1.0, "transform": "softplus"},
    ]
    config = CGCNNConfig(h_fea_len=8, atom_fea_len=8, n_conv=1, n_out=2, target_name=EF, outputs=outputs, **graph)
    return init_model(config, element_property_table(), seed=seed)


def graphs(tmp_path):
    from screening.featurize.featurizer import prepare_record
    from screening.graph_store import collate
    from screening.io.sources import iter_records

    write_cifs(tmp_path / "cifs")
    records = sorted(iter_records(tmp_path / "cifs"), key=lambda r: r.record_id)
    return collate([prepare_record(r, 8.0, 12).graph for r in records])


def test_the_named_property_is_the_companions_mean_and_the_rest_is_the_base(tmp_path) -> None:
    base, members = multitask_model(), [companion(1), companion(2)]
    ensemble = PropertyEnsemble(base, members, [EF]).eval()
    batch = graphs(tmp_path)
    with torch.inference_mode():
        out, own = ensemble(batch), base.eval()(batch)
        ef = [m.eval()(batch)["outputs"][:, 0] for m in members]  # EF is the companions' first column
    torch.testing.assert_close(out["outputs"][:, 1], (ef[0] + ef[1]) / 2)
    torch.testing.assert_close(out["outputs"][:, 0], own["outputs"][:, 0])  # band gap: the base's
    torch.testing.assert_close(out["embedding"], own["embedding"])
    torch.testing.assert_close(out["prediction_std"], own["prediction_std"])
    assert not torch.allclose(out["outputs"][:, 1], own["outputs"][:, 1])
    assert prediction_columns(ensemble) == prediction_columns(base)


def test_companions_must_share_the_graphs_and_predict_the_property() -> None:
    base = multitask_model()
    with pytest.raises(ModelLoadError, match="companion 1 builds its graphs differently"):
        PropertyEnsemble(base, [companion(1), companion(2, radius=6.0)], [EF])
    with pytest.raises(ModelLoadError, match="does not predict 'band_gap_std'"):
        PropertyEnsemble(base, [companion(1)], ["band_gap_std"])
    with pytest.raises(ModelLoadError, match="at least one companion"):
        PropertyEnsemble(base, [], [EF])


def test_featurize_writes_the_ensemble_and_caches_it_apart_from_the_base(tmp_path) -> None:
    base = multitask_model()
    ensemble = PropertyEnsemble(base, [companion(1), companion(2)], [EF])
    assert model_fingerprint(ensemble) != model_fingerprint(base)
    write_cifs(tmp_path / "in")
    cache = tmp_path / "cache"
    featurize_source(tmp_path / "in", tmp_path / "base.parquet", model=base, cache_dir=cache, progress=False)
    second = featurize_source(
        tmp_path / "in", tmp_path / "ens.parquet", model=ensemble, cache_dir=cache, progress=False
    )
    assert second["cache_hits"] == 0  # the base's cached rows are not the ensemble's
    a, b = pd.read_parquet(tmp_path / "base.parquet"), pd.read_parquet(tmp_path / "ens.parquet")
    pd.testing.assert_series_equal(a["pred_band_gap"], b["pred_band_gap"])
    emb = [c for c in a.columns if c.startswith("emb_")]
    np.testing.assert_array_equal(a[emb].to_numpy(), b[emb].to_numpy())
    assert not np.allclose(a[f"pred_{EF}"], b[f"pred_{EF}"])


def test_a_shipped_model_comes_with_its_companions_unless_asked_not_to(tmp_path, monkeypatch) -> None:
    shipped = tmp_path / "pretrained"
    shipped.mkdir()
    save_model(multitask_model(), shipped / "gap_model.safetensors")
    save_model(companion(1), shipped / "ef_a.safetensors")
    save_model(companion(2), shipped / "ef_b.safetensors")
    monkeypatch.setenv("MATSCREEN_PRETRAINED", str(shipped))
    monkeypatch.setitem(registry.SHIPPED_COMPANIONS, "gap_model", ((EF,), ("ef_a", "ef_b")))
    net = registry.load_featurizer_model("gap_model")
    assert isinstance(net, PropertyEnsemble) and len(net.companions) == 2
    assert not isinstance(registry.load_featurizer_model("gap_model", companions=False), PropertyEnsemble)
    # the same weights elsewhere are a user's file, not the shipped model
    save_model(multitask_model(), tmp_path / "gap_model.safetensors")
    assert not isinstance(registry.load_featurizer_model(tmp_path / "gap_model.safetensors"), PropertyEnsemble)
    # the CLI: companions by default, --single-model without them
    from typer.testing import CliRunner

    from screening.cli import app

    write_cifs(tmp_path / "cifs")
    frames = {}
    for name, extra in (("ens", []), ("own", ["--single-model"])):
        out = tmp_path / f"{name}.parquet"
        args = [
            "featurize",
            str(tmp_path / "cifs"),
            "-o",
            str(out),
            "--model",
            "gap_model",
            "--no-cache",
            "--workers",
            "0",
        ]
        result = CliRunner().invoke(app, args + extra)
        assert result.exit_code == 0, result.output
        frames[name] = pd.read_parquet(out)
    pd.testing.assert_series_equal(frames["ens"]["pred_band_gap"], frames["own"]["pred_band_gap"])
    assert not np.allclose(frames["ens"][f"pred_{EF}"], frames["own"][f"pred_{EF}"])
