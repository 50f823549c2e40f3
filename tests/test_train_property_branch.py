"""The property-branch training script: a run killed after an epoch resumes to the same branch,
and what it ships loads on the default network's trunk and nowhere else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "mp_mtcgcnn_2018" / "mp_mtcgcnn_2018.csv.gz"
NAME = "cgcnn_bandgap_128_formation_energy_branch"

pytestmark = [pytest.mark.slow, pytest.mark.shared]


def _train(tmp: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "scripts" / "train_property_branch.py"), "--data", str(DATA)]
    cmd += ["--limit", "150", "--epochs", "2", "--hidden", "16", "--distil", "0.5", "--batch-size", "32"]
    cmd += ["--workers", "1", "--threads", "1", "--out", str(tmp / name), "--checkpoint-dir", str(tmp / name / "ck")]
    cmd += ["--cache", str(tmp / "graphs.npz"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_a_killed_branch_training_resumes_to_the_same_branch(tmp_path) -> None:
    assert DATA.is_file(), f"{DATA} is needed (../shared beside the checkout)"
    full = _train(tmp_path, "full")
    assert full.returncode == 0, full.stderr
    killed = _train(tmp_path, "resumed", "--kill-after-epoch", "1")
    assert killed.returncode == -9
    assert not (tmp_path / "resumed" / f"{NAME}.safetensors").exists()  # nothing shipped half-trained
    resumed = _train(tmp_path, "resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at epoch 1" in resumed.stdout

    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / run / f"{NAME}.safetensors") for run in ("full", "resumed"))
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)
    metrics = json.loads((tmp_path / "full" / f"{NAME}_metrics.json").read_text())
    assert metrics["test"]["formation_energy_per_atom"]["n"] > 0
    assert len(metrics["history"]) == 2

    from screening.errors import ModelLoadError
    from screening.featurize.registry import load_featurizer_model
    from screening.models.cgcnn import load_model
    from screening.models.property_branch import load_branch

    trunk = load_featurizer_model(branches=False)
    load_branch(tmp_path / "full" / f"{NAME}.safetensors", trunk)  # the trunk it was trained on
    other = load_model(REPO / "pretrained" / "cgcnn_formation_energy_128.safetensors")
    with pytest.raises(ModelLoadError, match="another network's trunk"):
        load_branch(tmp_path / "full" / f"{NAME}.safetensors", other)


def test_augmented_training_adds_perturbed_copies_labelled_by_the_teachers_alone(tmp_path) -> None:
    """``--augment 1``: one perturbed copy of each training crystal, kept in its own cache with
    ids ``<material_id>#0``, moved (not copies of the same graph), and a run that finishes."""
    run = _train(tmp_path, "aug", "--augment", "1", "--augment-sigma", "0.05")
    assert run.returncode == 0, run.stderr
    from screening.graph_store import GraphStore

    real = GraphStore.load(tmp_path / "graphs_limit150.npz")
    aug = GraphStore.load(tmp_path / "graphs_limit150_aug1_s0.05_seed0.npz")
    assert 0 < len(aug) < len(real) and all(str(i).endswith("#0") for i in aug.ids)
    first = str(aug.ids[0]).removesuffix("#0")
    k = list(real.ids).index(first)
    moved, still = aug.graph(0), real.graph(k)
    assert (moved.atomic_numbers == still.atomic_numbers).all()
    assert 0 < abs(moved.nbr_dist - still.nbr_dist).max() < 0.5  # the same crystal, its atoms moved
    metrics = json.loads((tmp_path / "aug" / f"{NAME}_metrics.json").read_text())
    assert "--augment 1" in metrics["command"] and "--augment-sigma 0.05" in metrics["command"]
    refused = _train(tmp_path, "nodistil", "--augment", "1", "--distil", "0")
    assert refused.returncode == 2 and "--augment needs --distil" in refused.stderr


def test_branch_loss_gives_a_crystal_without_dft_value_only_the_teachers_term() -> None:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location(
        "train_property_branch", REPO / "scripts" / "train_property_branch.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    pred = torch.tensor([1.0, 2.0])
    dft = torch.tensor([0.0, float("nan")])
    teacher = torch.tensor([0.5, 1.0])
    # row 0: 0.5·1 + 0.5·0.5 = 0.75; row 1 (no DFT): 0.5·1 = 0.5; mean 0.625, over scale 0.5
    assert module.branch_loss(pred, dft, teacher, 0.5, 0.5).item() == pytest.approx(1.25)
    assert module.branch_loss(pred[:1], dft[:1], None, 1.0, 0.5).item() == pytest.approx(1.0)
