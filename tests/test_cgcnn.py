"""The CGCNN network: exact parity with the original txie-93/cgcnn, invariances, weights I/O."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure

from screening.atom_features import element_property_table, load_atom_init
from screening.errors import ModelLoadError
from screening.graph_store import collate
from screening.graphs import structure_to_graph
from screening.models.cgcnn import CGCNNConfig, init_model, load_model, load_original_checkpoint, save_model

CHECKPOINTS = {"band_gap": "band-gap", "formation_energy": "formation-energy-per-atom"}
ATOL = 1e-4


def read_cif(path) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(path)


@pytest.fixture(scope="module")
def atom_table(cgcnn_ref):
    return load_atom_init(cgcnn_ref / "data" / "sample-regression" / "atom_init.json")


@pytest.fixture(scope="module")
def original_models(cgcnn_ref, atom_table):
    return {
        k: load_original_checkpoint(cgcnn_ref / "pre-trained" / f"{v}.pth.tar", atom_table)
        for k, v in CHECKPOINTS.items()
    }


@pytest.fixture(scope="module")
def sample_structures(cgcnn_ref):
    folder = cgcnn_ref / "data" / "sample-regression"
    return {p.stem: read_cif(p) for p in sorted(folder.glob("*.cif"))}


def run(model, structures):
    with torch.no_grad():
        return model(collate([structure_to_graph(s, allow_sparse=True) for s in structures]))


@pytest.mark.shared
@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_original_predictions_embeddings_and_pooled_match_reference(
    cgcnn_ref, original_models, sample_structures, name
):
    outputs = cgcnn_ref / "outputs"
    pred = pd.read_csv(outputs / f"{name}_predictions.csv", dtype={"cif_id": str})
    emb = pd.read_csv(outputs / f"{name}_embeddings.csv", dtype={"cif_id": str}).set_index("cif_id")
    pooled = pd.read_csv(outputs / f"{name}_pooled_atom_features.csv", dtype={"cif_id": str}).set_index("cif_id")
    out = run(original_models[name], [sample_structures[c] for c in pred.cif_id])
    assert out["embedding"].shape == (10, 32)  # released checkpoints: h_fea_len = 32
    np.testing.assert_allclose(out["prediction"].numpy(), pred.prediction.to_numpy(), atol=ATOL)
    np.testing.assert_allclose(out["embedding"].numpy(), emb.loc[pred.cif_id].to_numpy(), atol=ATOL)
    np.testing.assert_allclose(out["pooled"].numpy(), pooled.loc[pred.cif_id].to_numpy(), atol=ATOL)


@pytest.mark.shared
def test_nacl_per_layer_intermediates_match_reference(cgcnn_ref, original_models, sample_structures):
    ref = json.loads((cgcnn_ref / "outputs" / "band_gap_intermediates_1000041_NaCl.json").read_text())
    model = original_models["band_gap"]
    graph = structure_to_graph(sample_structures["1000041"])
    batch = collate([graph])
    with torch.no_grad():
        x = model.embedding(model.atom_table[batch.z])
        np.testing.assert_allclose(x.numpy(), np.array(ref["after_embedding"]), atol=ATOL)
        edge_attr = model.gaussian(batch.edge_dist)
        for t, conv in enumerate(model.convs):
            x = conv(x, batch.edge_index, edge_attr)
            np.testing.assert_allclose(x.numpy(), np.array(ref[f"after_conv{t}"]), atol=ATOL, err_msg=f"conv {t}")
        out = model(batch)
    np.testing.assert_allclose(out["pooled"].numpy(), np.array(ref["pooled_mean"]), atol=ATOL)
    np.testing.assert_allclose(out["embedding"].numpy(), np.array(ref["h_input_to_fc_out"]), atol=ATOL)
    np.testing.assert_allclose(out["raw"].numpy(), np.array(ref["fc_out_normalized_output"]), atol=ATOL)
    np.testing.assert_allclose(out["prediction"].numpy(), np.array(ref["prediction_eV"]).reshape(-1), atol=ATOL)
    one_hot_cols = [sorted(np.flatnonzero(row).tolist()) for row in model.atom_table[batch.z].numpy()]
    assert one_hot_cols == ref["atom_fea_input_onehot_nonzero_cols"]


@pytest.mark.shared
@pytest.mark.parametrize("name", ["pad_Fe_box10", "pad_H2_box12", "pad_NaCl_a14"])
def test_unmasked_padding_reproduces_reference(cgcnn_ref, original_models, name):
    ref = json.loads((cgcnn_ref / "outputs" / "padding_cases_reference.json").read_text())["structures"][name]
    structure = read_cif(cgcnn_ref / "data" / "padding-cases" / f"{name}.cif")
    for key, model in original_models.items():
        out = run(model, [structure])
        np.testing.assert_allclose(out["prediction"].numpy()[0], float(ref[f"{key}_prediction"]), atol=ATOL)
        np.testing.assert_allclose(out["embedding"].numpy()[0], np.array(ref[f"{key}_embedding"]), atol=ATOL)


@pytest.mark.shared
def test_every_released_checkpoint_loads_without_unpickling_code(cgcnn_ref, atom_table, sample_structures):
    ckpts = sorted((cgcnn_ref / "pre-trained").glob("*.pth.tar"))
    assert len(ckpts) == 8
    for path in ckpts:
        model = load_original_checkpoint(path, atom_table)  # weights_only=True inside
        out = run(model, list(sample_structures.values())[:3])
        assert torch.isfinite(out["prediction"]).all(), path.name
        if "classification" in path.name:
            assert model.config.task == "classification"
            assert ((out["prediction"] >= 0) & (out["prediction"] <= 1)).all()


@pytest.mark.shared
def test_wrong_radius_for_checkpoint_fails_clearly(cgcnn_ref, atom_table):
    with pytest.raises(ModelLoadError, match="Gaussians"):
        load_original_checkpoint(cgcnn_ref / "pre-trained" / "band-gap.pth.tar", atom_table, radius=10.0)


def test_missing_checkpoint_names_the_file(tmp_path, atom_table):
    with pytest.raises(ModelLoadError, match="no such checkpoint"):
        load_original_checkpoint(tmp_path / "nope.pth.tar", atom_table)


@pytest.mark.shared
@pytest.mark.parametrize("cif_id", ["1000041", "1101051", "1507756", "7206075", "9011998"])
def test_supercell_and_primitive_cell_give_the_same_embedding(original_models, sample_structures, cif_id):
    structure = sample_structures[cif_id]
    variants = [structure, structure * (2, 1, 1), structure.get_primitive_structure()]
    for model in original_models.values():
        out = run(model, variants)
        for k in range(1, len(variants)):
            np.testing.assert_allclose(out["embedding"][k].numpy(), out["embedding"][0].numpy(), atol=1e-5)
            np.testing.assert_allclose(out["prediction"][k].numpy(), out["prediction"][0].numpy(), atol=1e-5)


@pytest.mark.shared
def test_batch_composition_does_not_change_a_structure_output(original_models, sample_structures):
    model = original_models["band_gap"]
    structures = list(sample_structures.values())
    together = run(model, structures)["embedding"].numpy()
    for k, s in enumerate(structures):
        alone = run(model, [s])["embedding"].numpy()[0]
        np.testing.assert_allclose(alone, together[k], atol=1e-5)  # float summation order only
    reversed_out = run(model, structures[::-1])["embedding"].numpy()[::-1]
    np.testing.assert_allclose(reversed_out, together, atol=1e-5)


@pytest.fixture(scope="module")
def small_model():
    config = CGCNNConfig(h_fea_len=16, atom_fea_len=16, n_conv=2)
    return init_model(config, element_property_table(), seed=3).eval()


@settings(max_examples=15, deadline=None)
@given(
    a=st.floats(3.0, 6.0),
    frac=st.lists(st.floats(0.0, 0.999), min_size=6, max_size=6),
    reps=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 3)),
)
def test_supercell_invariance_property(small_model, a, frac, reps):
    """A random binary cell and any supercell of it have the same embedding (mean pooling)."""
    structure = Structure(Lattice.orthorhombic(a, a * 1.1, a * 1.3), ["Na", "Cl"], [frac[:3], frac[3:]])
    if min(structure.distance_matrix[np.triu_indices(2, 1)]) < 0.7:
        structure = Structure(Lattice.orthorhombic(a, a * 1.1, a * 1.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    out = run(small_model, [structure, structure * reps])
    np.testing.assert_allclose(out["embedding"][1].numpy(), out["embedding"][0].numpy(), atol=1e-5)


def test_saved_weights_reload_to_identical_outputs(tmp_path, small_model):
    structure = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    path = tmp_path / "m.safetensors"
    save_model(small_model, path, {"note": "test"})
    reloaded = load_model(path)
    a, b = run(small_model, [structure]), run(reloaded, [structure])
    assert torch.equal(a["embedding"], b["embedding"])
    assert reloaded.config == small_model.config


def test_loading_a_non_model_file_fails_clearly(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="bad.safetensors"):
        load_model(bad)


def test_dense_fixed_degree_path_equals_message_passing_path(small_model):
    """The reshape-sum fast path and PyG's scatter path compute the same convolution."""
    structures = [
        Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice.hexagonal(3.2, 5.2), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.38]]),
    ]
    batch = collate([structure_to_graph(s) for s in structures])
    with torch.no_grad():
        dense = small_model(batch)
        del batch.nbr_idx
        scatter = small_model(batch)
    np.testing.assert_allclose(dense["embedding"].numpy(), scatter["embedding"].numpy(), atol=1e-5)
    np.testing.assert_allclose(dense["prediction"].numpy(), scatter["prediction"].numpy(), atol=1e-5)


@pytest.mark.shared
def test_in_place_inference_path_matches_the_autograd_path_and_gradients_still_flow(original_models, sample_structures):
    """Without autograd the convolutions work in place on one buffer (faster); with autograd on
    (an eval-mode model asked for gradients, e.g. a saliency map) they must not, and both must
    agree to float rounding on the original checkpoint's sample crystals."""
    model = original_models["band_gap"]
    batch = collate([structure_to_graph(s, allow_sparse=True) for s in sample_structures.values()])
    with torch.no_grad():
        fast = model(batch)
    x = model.embedding(model.atom_table[batch.z]).detach().requires_grad_(True)
    edge_attr = model.gaussian(batch.edge_dist)
    h = x
    for conv in model.convs:  # autograd on: the out-of-place path
        h = conv(h, batch.edge_index, edge_attr, batch.nbr_idx)
    h.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        np.testing.assert_allclose(fast["atom_features"].numpy(), h.numpy(), rtol=1e-5, atol=1e-5)
    slow = model(batch)  # autograd on, whole network
    np.testing.assert_allclose(fast["embedding"].numpy(), slow["embedding"].detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast["prediction"].numpy(), slow["prediction"].detach().numpy(), atol=1e-5)


@pytest.mark.shared
def test_subnormal_gaussians_are_zeroed_and_outputs_keep_their_bits(original_models, sample_structures):
    """The zeroing exists for speed (subnormal products run in microcode); it must remove every
    float32 subnormal the plain expansion makes, and change no output bit on real crystals."""
    from screening.featurize.embed import subnormals_flushed
    from screening.models.cgcnn import FLOAT32_TINY, GaussianDistance

    model = original_models["band_gap"]
    batch = collate([structure_to_graph(s, allow_sparse=True) for s in sample_structures.values()])
    zeroed = model.gaussian(batch.edge_dist)
    d = batch.edge_dist.to(torch.float64).unsqueeze(-1)
    plain = torch.exp(-((d - model.gaussian.centres) ** 2) / model.gaussian.var**2).to(torch.float32)
    subnormal = (plain != 0) & (plain.abs() < FLOAT32_TINY)
    assert subnormal.any()  # the sample crystals do make them: the test exercises the zeroing
    assert not ((zeroed != 0) & (zeroed.abs() < FLOAT32_TINY)).any()
    assert torch.equal(zeroed[~subnormal], plain[~subnormal]) and (zeroed[subnormal] == 0).all()

    class PlainGaussians(GaussianDistance):
        def forward(self, distances):
            d = distances.to(torch.float64).unsqueeze(-1)
            return torch.exp(-((d - self.centres) ** 2) / self.var**2).to(torch.float32)

    with torch.no_grad():
        fast = model(batch)
        with subnormals_flushed():
            flushed = model(batch)
        saved = model.gaussian
        try:
            model.gaussian = PlainGaussians(model.config.dmin, model.config.radius, model.config.step)
            slow = model(batch)
        finally:
            model.gaussian = saved
    for key in ("embedding", "prediction"):
        assert torch.equal(fast[key], slow[key])
        # flushing zeroes subnormal activations (softplus of < -87): below 1e-37 absolute
        assert (flushed[key] - slow[key]).abs().max() < 1e-37
    assert torch.equal(flushed["prediction"], slow["prediction"])
    # flushing is scoped: outside the context, subnormals are kept again
    tiny = torch.tensor([FLOAT32_TINY], dtype=torch.float32)
    assert (tiny / 4).item() != 0.0
