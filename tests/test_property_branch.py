"""A property branch: the base network's embedding and band gap, the branch's formation energy —
in one forward, through featurize and its cache, tied to the trunk it was trained on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from screening.errors import ModelLoadError
from screening.featurize import featurize_source, prediction_columns, registry
from screening.featurize.registry import model_fingerprint
from screening.models.cgcnn import save_model
from screening.models.property_branch import (
    BranchConfig,
    BranchedNet,
    PropertyBranch,
    load_branch,
    save_branch,
    trunk_digest,
)
from tests.test_featurize_outputs import multitask_model, write_cifs

EF = "formation_energy_per_atom"


def branch_for(base, from_layer: int = 1, n_conv: int = 1, seed: int = 5, crystal_hidden: int = 0) -> PropertyBranch:
    """A branch with random (not default) weights, so its prediction differs from the base's head."""
    torch.manual_seed(seed)
    config = BranchConfig(EF, "eV/atom", from_layer, n_conv, 16, 2, -1.0, 0.5, trunk_digest(base), crystal_hidden)
    branch = PropertyBranch(config, base.config)
    with torch.no_grad():
        branch.feature_mean.normal_()
        branch.feature_std.uniform_(0.5, 2.0)
        for conv in branch.convs:  # non-trivial running statistics, as after training
            for bn in (conv.bn1, conv.bn2):
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)
    return branch.eval()


def graphs(tmp_path):
    from screening.featurize.featurizer import prepare_record
    from screening.graph_store import collate
    from screening.io.sources import iter_records

    write_cifs(tmp_path / "cifs")
    records = sorted(iter_records(tmp_path / "cifs"), key=lambda r: r.record_id)
    return collate([prepare_record(r, 8.0, 12).graph for r in records])


@pytest.mark.parametrize("from_layer,n_conv,crystal_hidden", [(0, 0, 0), (1, 1, 0), (0, 2, 0), (1, 0, 8)])
def test_the_branch_predicts_its_property_and_the_rest_is_the_base(
    tmp_path, from_layer, n_conv, crystal_hidden
) -> None:
    base = multitask_model().eval()
    branch = branch_for(base, from_layer, n_conv, crystal_hidden=crystal_hidden)
    net = BranchedNet(base, {EF: branch}).eval()
    batch = graphs(tmp_path)
    with torch.inference_mode():
        out, own = net(batch), base(batch)
        expected = branch(own["atom_layers"], own["edge_attr"], batch)
    torch.testing.assert_close(out["outputs"][:, 1], expected)
    torch.testing.assert_close(out["outputs"][:, 0], own["outputs"][:, 0])  # band gap: the base's
    torch.testing.assert_close(out["embedding"], own["embedding"])
    torch.testing.assert_close(out["prediction_std"], own["prediction_std"])
    assert not torch.allclose(out["outputs"][:, 1], own["outputs"][:, 1])
    assert prediction_columns(net) == prediction_columns(base)


@pytest.mark.parametrize("crystal_hidden", [0, 8])
def test_a_crystals_prediction_does_not_depend_on_its_batch(tmp_path, crystal_hidden) -> None:
    """The branch averages over each crystal's own atoms: alone or batched, the same value."""
    from screening.featurize.featurizer import prepare_record
    from screening.graph_store import collate
    from screening.io.sources import iter_records

    base = multitask_model().eval()
    net = BranchedNet(base, {EF: branch_for(base, crystal_hidden=crystal_hidden)}).eval()
    write_cifs(tmp_path / "cifs")
    graphs_ = [
        prepare_record(r, 8.0, 12).graph for r in sorted(iter_records(tmp_path / "cifs"), key=lambda r: r.record_id)
    ]
    with torch.inference_mode():
        together = net(collate(graphs_))["outputs"][:, 1]
        alone = torch.cat([net(collate([g]))["outputs"][:, 1] for g in graphs_])
    torch.testing.assert_close(together, alone)


def test_a_saved_branch_loads_only_on_its_own_trunk(tmp_path) -> None:
    base = multitask_model().eval()
    branch = branch_for(base, crystal_hidden=8)
    path = tmp_path / "ef_branch.safetensors"
    save_branch(branch, path)
    again = load_branch(path, base)
    batch = graphs(tmp_path)
    with torch.inference_mode():
        own = base(batch)
        torch.testing.assert_close(
            again(own["atom_layers"], own["edge_attr"], batch), branch(own["atom_layers"], own["edge_attr"], batch)
        )
    other = multitask_model()
    with torch.no_grad():
        other.convs[0].fc_full.weight.add_(0.01)  # another trunk: the branch's inputs mean something else
    with pytest.raises(ModelLoadError, match="trained on another network's trunk"):
        load_branch(path, other)
    with pytest.raises(ModelLoadError, match="trained on another network's trunk"):
        BranchedNet(other, {EF: branch})
    save_model(base, tmp_path / "a_network.safetensors")
    with pytest.raises(ModelLoadError, match="not a property branch"):
        load_branch(tmp_path / "a_network.safetensors", base)
    with pytest.raises(ModelLoadError, match="does not predict 'band_gap_std'"):
        BranchedNet(base, {"band_gap_std": branch})


def test_featurize_writes_the_branch_and_caches_it_apart_from_the_base(tmp_path) -> None:
    base = multitask_model()
    net = BranchedNet(base, {EF: branch_for(base)})
    assert model_fingerprint(net) != model_fingerprint(base)
    write_cifs(tmp_path / "in")
    cache = tmp_path / "cache"
    featurize_source(tmp_path / "in", tmp_path / "base.parquet", model=base, cache_dir=cache, progress=False)
    second = featurize_source(tmp_path / "in", tmp_path / "br.parquet", model=net, cache_dir=cache, progress=False)
    assert second["cache_hits"] == 0  # the base's cached rows are not the branched network's
    a, b = pd.read_parquet(tmp_path / "base.parquet"), pd.read_parquet(tmp_path / "br.parquet")
    pd.testing.assert_series_equal(a["pred_band_gap"], b["pred_band_gap"])
    emb = [c for c in a.columns if c.startswith("emb_")]
    np.testing.assert_array_equal(a[emb].to_numpy(), b[emb].to_numpy())
    assert not np.allclose(a[f"pred_{EF}"], b[f"pred_{EF}"])


def test_a_shipped_model_comes_with_its_branches_unless_asked_not_to(tmp_path, monkeypatch) -> None:
    shipped = tmp_path / "pretrained"
    shipped.mkdir()
    base = multitask_model()
    save_model(base, shipped / "gap_model.safetensors")
    save_branch(branch_for(base), shipped / "gap_model_ef.safetensors")
    monkeypatch.setenv("MATSCREEN_PRETRAINED", str(shipped))
    monkeypatch.setitem(registry.SHIPPED_BRANCHES, "gap_model", {EF: "gap_model_ef"})
    net = registry.load_featurizer_model("gap_model")
    assert isinstance(net, BranchedNet) and list(net.branches) == [EF]
    assert not isinstance(registry.load_featurizer_model("gap_model", branches=False), BranchedNet)
    # the same weights elsewhere are a user's file, not the shipped model
    save_model(base, tmp_path / "gap_model.safetensors")
    assert not isinstance(registry.load_featurizer_model(tmp_path / "gap_model.safetensors"), BranchedNet)
    # a branch file is not offered as a model
    with pytest.raises(ModelLoadError) as err:
        registry.resolve_model_path("no_such_model")
    assert "gap_model_ef" not in str(err.value) and "gap_model" in str(err.value)
    # the CLI: branches by default, --single-model without them
    from typer.testing import CliRunner

    from screening.cli import app

    write_cifs(tmp_path / "cifs")
    frames = {}
    for name, extra in (("branched", []), ("own", ["--single-model"])):
        out = tmp_path / f"{name}.parquet"
        args = ["featurize", str(tmp_path / "cifs"), "-o", str(out), "--model", "gap_model", "--no-cache"]
        result = CliRunner().invoke(app, args + ["--workers", "0"] + extra)
        assert result.exit_code == 0, result.output
        frames[name] = pd.read_parquet(out)
    pd.testing.assert_series_equal(frames["branched"]["pred_band_gap"], frames["own"]["pred_band_gap"])
    assert not np.allclose(frames["branched"][f"pred_{EF}"], frames["own"][f"pred_{EF}"])


FE_NETWORKS = ("cgcnn_formation_energy_128", "cgcnn_formation_energy_128_s1", "cgcnn_formation_energy_128_s2")


@pytest.mark.slow
def test_the_shipped_branch_matches_the_formation_energy_networks_on_held_out_crystals(mp_csv) -> None:
    """The default's one-pass formation energy against what three separate networks give (the
    ensemble it replaced) and against DFT, on 300 test-split crystals it never saw."""
    from screening.featurize.featurizer import embed_graphs, prediction_columns, structure_to_graph
    from screening.io.cif import structure_from_cif

    split = pd.read_csv(registry.pretrained_dir() / "split.csv")
    test_ids = set(split.material_id[split.split == "test"])
    frame = pd.read_csv(mp_csv, usecols=["material_id", "cif", EF])
    frame = frame[frame.material_id.isin(test_ids)].sample(300, random_state=0)
    graphs_ = [structure_to_graph(structure_from_cif(t)) for t in frame.cif]
    default = registry.load_featurizer_model()
    col = prediction_columns(default).index(f"pred_{EF}")
    ours = embed_graphs(default, graphs_)[0][:, col]
    ensemble = np.mean([embed_graphs(registry.load_featurizer_model(n), graphs_)[0][:, col] for n in FE_NETWORKS], 0)
    dft = frame[EF].to_numpy()
    assert np.abs(ours - ensemble).mean() < 0.05
    assert np.abs(ours - dft).mean() < np.abs(ensemble - dft).mean() + 0.01
    own = embed_graphs(registry.load_featurizer_model(branches=False), graphs_)[0][:, col]
    assert np.abs(ours - dft).mean() < np.abs(own - dft).mean()  # better than the trunk's own head
