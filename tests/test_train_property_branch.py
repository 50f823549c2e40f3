"""The property-branch training script: a run killed after an epoch resumes to the same branch,
and what it ships loads on the trunk it read (the default network's, or ``--trunk``'s) and nowhere else."""

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


def test_a_branch_on_another_trunk_loads_on_that_network_only(tmp_path) -> None:
    assert DATA.is_file(), f"{DATA} is needed (../shared beside the checkout)"
    run = _train(tmp_path, "other", "--trunk", "cgcnn_formation_energy_128", "--epochs", "1")
    assert run.returncode == 0, run.stderr
    assert "(cgcnn_formation_energy_128)" in run.stdout  # the trunk it read
    metrics = json.loads(
        (tmp_path / "other" / "cgcnn_formation_energy_128_formation_energy_branch_metrics.json").read_text()
    )
    assert "--trunk cgcnn_formation_energy_128 " in metrics["command"]  # the command reproduces it

    from screening.errors import ModelLoadError
    from screening.featurize.registry import load_featurizer_model
    from screening.models.cgcnn import load_model
    from screening.models.property_branch import load_branch

    # named after the trunk it read: never the default network's branch file
    assert not (tmp_path / "other" / f"{NAME}.safetensors").exists()
    path = tmp_path / "other" / "cgcnn_formation_energy_128_formation_energy_branch.safetensors"
    load_branch(path, load_model(REPO / "pretrained" / "cgcnn_formation_energy_128.safetensors"))
    with pytest.raises(ModelLoadError, match="another network's trunk"):
        load_branch(path, load_featurizer_model(branches=False))
