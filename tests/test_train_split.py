"""A fine-tune keeps the split its initial weights were trained on (scripts/train_cgcnn.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def _train_script():
    spec = importlib.util.spec_from_file_location("train_cgcnn", REPO / "scripts" / "train_cgcnn.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # a dataclass in the script looks its module up there
    spec.loader.exec_module(module)
    return module


def test_the_split_depends_on_the_split_seed_only_and_a_fine_tune_on_another_is_refused(tmp_path):
    train = _train_script()
    ids = np.array([f"mp-{i}" for i in range(500)])
    shipped = train.split_by_material_id(ids, 0)
    pd.DataFrame({"material_id": ids, "split": shipped}).to_csv(tmp_path / "split.csv", index=False)
    train.check_same_split(ids, train.split_by_material_id(ids, 0), tmp_path / "split.csv")  # same: accepted
    train.check_same_split(ids[:50], shipped[:50], tmp_path / "split.csv")  # a --limit subset: accepted
    with pytest.raises(SystemExit, match=r"split\.csv: \d+ of 500 crystals are in another split"):
        train.check_same_split(ids, train.split_by_material_id(ids, 5), tmp_path / "split.csv")
    train.check_same_split(ids, train.split_by_material_id(ids, 5), tmp_path / "absent.csv")  # nothing to check


def test_the_shipped_split_is_split_seed_0(tmp_path):
    """pretrained/split.csv is what --split-seed 0 makes, so the default reproduces it."""
    train = _train_script()
    ref = pd.read_csv(REPO / "pretrained" / "split.csv")
    ids = ref["material_id"].to_numpy()
    train.check_same_split(ids, train.split_by_material_id(ids, 0), REPO / "pretrained" / "split.csv")
    with pytest.raises(SystemExit):
        train.check_same_split(ids, train.split_by_material_id(ids, 5), REPO / "pretrained" / "split.csv")
