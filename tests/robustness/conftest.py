"""Fixtures of the robustness suite: a tiny random model (fast to build, deterministic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from screening.atom_features import element_property_table
from screening.models.cgcnn import CGCNNConfig, init_model, save_model


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> str:
    model = init_model(CGCNNConfig(h_fea_len=8, atom_fea_len=8, n_conv=1), element_property_table(), seed=1)
    path = Path(tmp_path_factory.mktemp("robust_model")) / "small.safetensors"
    save_model(model, path)
    return str(path)
