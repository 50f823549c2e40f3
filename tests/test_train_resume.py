"""Training resumes after a kill -9 and reaches the same weights as an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "mp_mtcgcnn_2018" / "mp_mtcgcnn_2018.csv.gz"

pytestmark = [pytest.mark.slow, pytest.mark.shared]


def _train(tmp: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "train_cgcnn.py"),
        "--data",
        str(DATA),
        "--limit",
        "120",
        "--epochs",
        "2",
        "--h-fea-len",
        "16",
        "--atom-fea-len",
        "8",
        "--n-conv",
        "1",
        "--workers",
        "1",
        "--threads",
        "1",
        "--out",
        str(tmp / name),
        "--checkpoint-dir",
        str(tmp / name / "ck"),
        "--cache",
        str(tmp / "graphs.npz"),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    assert DATA.is_file(), f"{DATA} is needed (../shared beside the checkout)"
    full = _train(tmp_path, "full")
    assert full.returncode == 0, full.stderr
    killed = _train(tmp_path, "resumed", "--kill-after-epoch", "1")
    assert killed.returncode == -9  # SIGKILL right after epoch 1's checkpoint
    assert not (tmp_path / "resumed" / "cgcnn_bandgap_128.safetensors").exists()  # nothing shipped half-trained
    resumed = _train(tmp_path, "resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from last.pt: epoch 1" in resumed.stdout
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "cgcnn_bandgap_128.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "cgcnn_bandgap_128.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, equal_nan=True, msg=k)


def test_multitask_model_predicts_non_negative_gaps_and_uncertainty(tmp_path):
    assert DATA.is_file()
    res = _train(tmp_path, "m")
    assert res.returncode == 0, res.stderr
    from screening.models.cgcnn import load_model, output_names

    model = load_model(tmp_path / "m" / "cgcnn_bandgap_128.safetensors")
    assert output_names(model.config) == ["band_gap", "formation_energy_per_atom"]
    raw = torch.linspace(-50, 50, 101).reshape(-1, 1).repeat(1, 3)
    from screening.models.cgcnn import decode_outputs

    out = decode_outputs(model.config, raw)
    assert (out["prediction"] >= 0).all() and (out["prediction_std"] > 0).all()
    assert out["outputs"].shape == (101, 2)
