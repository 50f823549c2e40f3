"""Crystal graphs: the original CGCNN neighbour selection, vectorised."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from screening.errors import GraphBuildError
from screening.graphs import select_nearest, structure_to_graph

SAMPLE_IDS = [
    "1000041",
    "1000050",
    "1101051",
    "1507756",
    "7206075",
    "9000046",
    "9009743",
    "9011050",
    "9011998",
    "9012304",
]


def read_cif(path) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(path)


def original_neighbours(structure: Structure, radius: float = 8.0, max_num_nbr: int = 12):
    """The original data.py algorithm: get_all_neighbors + per-site stable sort + padding."""
    all_nbrs = [sorted(n, key=lambda x: x[1]) for n in structure.get_all_neighbors(radius, include_index=True)]
    idx, dist = [], []
    for nbr in all_nbrs:
        kept = nbr[:max_num_nbr]
        pad = max_num_nbr - len(kept)
        idx.append([x[2] for x in kept] + [0] * pad)
        dist.append([x[1] for x in kept] + [radius + 1.0] * pad)
    return np.array(idx), np.array(dist)


@pytest.mark.shared
@pytest.mark.parametrize("cif_id", SAMPLE_IDS)
def test_neighbours_match_original_algorithm(cgcnn_ref, cif_id):
    structure = read_cif(cgcnn_ref / "data" / "sample-regression" / f"{cif_id}.cif")
    graph = structure_to_graph(structure)
    ref_idx, ref_dist = original_neighbours(structure)
    np.testing.assert_array_equal(graph.nbr_idx, ref_idx)  # same pymatgen order, same stable sort
    np.testing.assert_allclose(graph.nbr_dist, ref_dist, rtol=0, atol=1e-12)


@pytest.mark.shared
def test_nacl_graph_matches_reference_json(cgcnn_ref):
    ref = json.loads((cgcnn_ref / "outputs" / "graph_1000041_NaCl.json").read_text())
    graph = structure_to_graph(read_cif(cgcnn_ref / "data" / "sample-regression" / "1000041.cif"))
    np.testing.assert_array_equal(graph.atomic_numbers, ref["species_Z"])
    np.testing.assert_allclose(graph.nbr_dist, np.array(ref["nbr_dist"]), atol=1e-10)
    z = np.array(ref["species_Z"])
    for i in range(len(z)):  # ties may be broken differently: compare (distance, Z) multisets
        ours = sorted(zip(np.round(graph.nbr_dist[i], 8), z[graph.nbr_idx[i]]))
        theirs = sorted(zip(np.round(ref["nbr_dist"][i], 8), z[np.array(ref["nbr_fea_idx"][i])]))
        assert ours == theirs


@pytest.mark.shared
@pytest.mark.parametrize("name", ["pad_Fe_box10", "pad_H2_box12", "pad_NaCl_a14"])
def test_padding_uses_index_zero_and_radius_plus_one(cgcnn_ref, name):
    ref = json.loads((cgcnn_ref / "outputs" / "padding_cases_reference.json").read_text())
    structure = read_cif(cgcnn_ref / "data" / "padding-cases" / f"{name}.cif")
    graph = structure_to_graph(structure, allow_sparse=True)
    np.testing.assert_array_equal(graph.nbr_idx, np.array(ref["structures"][name]["nbr_fea_idx"]))
    assert (graph.nbr_dist == ref["pad_distance"]).any()
    # without asking for it, such a cell is refused: its padded slots move the prediction by eV
    with pytest.raises(GraphBuildError, match=r"sparse_site: site \d+ \(\w+\) has \d+ neighbours within 8 Å") as err:
        structure_to_graph(structure, record_id=name)
    assert err.value.record_id == name


def test_select_nearest_keeps_input_order_among_ties():
    centre = np.array([0, 0, 0, 0, 1])
    nbr = np.array([5, 3, 4, 2, 0])
    dist = np.array([2.0, 1.0, 1.0, 0.5, 3.0])
    idx, d = select_nearest(centre, nbr, dist, num_sites=2, radius=8.0, max_num_nbr=3)
    np.testing.assert_array_equal(idx[0], [2, 3, 4])  # 3 before 4: equal distance, input order
    np.testing.assert_array_equal(idx[1], [0, 0, 0])
    np.testing.assert_array_equal(d[1], [3.0, 9.0, 9.0])


def test_empty_structure_is_rejected_with_reason():
    with pytest.raises(GraphBuildError, match="no atoms"):
        structure_to_graph(Structure(Lattice.cubic(4.0), [], []), record_id="empty-1")


def test_partial_occupancy_is_rejected_with_reason():
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    with pytest.raises(GraphBuildError, match="partial occupancy") as err:
        structure_to_graph(disordered, record_id="alloy-7")
    assert err.value.record_id == "alloy-7"


@pytest.mark.shared
def test_neighbours_match_original_on_real_mp_cells(mp_csv):
    import pandas as pd

    frame = pd.read_csv(mp_csv, usecols=["material_id", "cif", "nsites"], nrows=400)
    frame = frame[frame.nsites <= 40].sample(25, random_state=1)
    for row in frame.itertuples():
        structure = Structure.from_str(row.cif, fmt="cif")
        graph = structure_to_graph(structure)
        ref_idx, ref_dist = original_neighbours(structure)
        np.testing.assert_allclose(graph.nbr_dist, ref_dist, atol=1e-12, err_msg=row.material_id)
        np.testing.assert_array_equal(graph.nbr_idx, ref_idx, err_msg=row.material_id)


@pytest.mark.parametrize("low", [0.6, 0.01])  # 0.01 Å exercises the two-key fallback
def test_select_nearest_equals_a_python_stable_sort(low):
    rng = np.random.default_rng(0)
    n_sites, n_pairs = 7, 400
    centre = np.sort(rng.integers(0, n_sites, n_pairs))
    dist = np.round(rng.uniform(low, 8.0, n_pairs), 2)  # rounding makes many exact ties
    nbr = rng.integers(0, n_sites, n_pairs)
    idx, d = select_nearest(centre, nbr, dist, n_sites, 8.0, 12)
    for i in range(n_sites):
        ref = sorted([(dist[k], nbr[k]) for k in range(n_pairs) if centre[k] == i], key=lambda x: x[0])[:12]
        ref += [(9.0, 0)] * (12 - len(ref))
        assert [(float(a), int(b)) for a, b in zip(d[i], idx[i])] == [(float(a), int(b)) for a, b in ref]
