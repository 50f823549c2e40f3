"""Broken models: NaN outputs stop the run with nothing written; malformed files give a
ModelLoadError naming the file and the reason, never a raw traceback."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from screening.atom_features import element_property_table
from screening.errors import ModelLoadError
from screening.featurize.featurizer import check_finite_outputs, featurize_source, load_featurizer_model
from screening.models.cgcnn import CGCNNConfig, init_model, save_model


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "cifs"
    folder.mkdir()
    Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(folder / "nacl.cif"))
    return folder


@pytest.fixture()
def nan_model(tmp_path: Path) -> Path:
    model = init_model(CGCNNConfig(h_fea_len=8, atom_fea_len=8, n_conv=1), element_property_table(), seed=2)
    with torch.no_grad():
        next(p for name, p in model.named_parameters() if "fc_out" in name).fill_(float("nan"))
    path = tmp_path / "nan.safetensors"
    save_model(model, path)
    return path


@pytest.mark.parametrize("workers", [0, 2])
def test_a_model_with_nan_weights_stops_the_run_and_writes_nothing(
    tmp_path: Path, nan_model: Path, workers: int
) -> None:
    """Also from a worker process, where the forward pass runs: the error crosses back whole."""
    out = tmp_path / "out" / "emb.parquet"
    with pytest.raises(ModelLoadError, match=r"nan\.safetensors: non-finite \(NaN/inf\) predictions") as info:
        featurize_source(_folder(tmp_path), out, model=str(nan_model), progress=False, workers=workers)
    assert "'nacl'" in str(info.value)
    assert not out.exists() and not out.with_suffix(".errors.csv").exists()
    assert list(out.parent.iterdir()) == []  # no temporary file either


def test_a_nan_model_keeps_a_previous_output(tmp_path: Path, nan_model: Path, small_model: str) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "emb.parquet"
    featurize_source(folder, out, model=small_model, progress=False)
    before = out.read_bytes()
    with pytest.raises(ModelLoadError):
        featurize_source(folder, out, model=str(nan_model), progress=False)
    assert out.read_bytes() == before


def test_check_finite_outputs_names_the_records() -> None:
    model = init_model(CGCNNConfig(h_fea_len=4, atom_fea_len=4, n_conv=1), element_property_table(), seed=0)
    check_finite_outputs(model, np.zeros((2, 1)), np.zeros((2, 4)), ["a", "b"])
    with pytest.raises(ModelLoadError, match=r"1 of 2 records \('b'\)"):
        check_finite_outputs(model, np.array([[0.0], [np.inf]]), np.zeros((2, 4)), ["a", "b"])


def test_the_cli_exits_non_zero_without_a_traceback_for_a_nan_model(tmp_path: Path, nan_model: Path) -> None:
    from typer.testing import CliRunner

    from screening.cli import app

    out = tmp_path / "emb.parquet"
    result = CliRunner().invoke(app, ["featurize", str(_folder(tmp_path)), "-o", str(out), "--model", str(nan_model)])
    assert result.exit_code != 0
    assert "Traceback" not in result.output and "non-finite" in result.output
    assert not out.exists()


# --- malformed model files ------------------------------------------------------------------


def _malformed_safetensors(tmp_path: Path) -> dict[str, Path]:
    from safetensors.torch import save_file

    good = init_model(CGCNNConfig(h_fea_len=8, atom_fea_len=8, n_conv=1), element_property_table(), seed=1)
    tensors = {k: v.contiguous() for k, v in good.state_dict().items()}
    cfg = json.dumps({"h_fea_len": 8, "atom_fea_len": 8, "n_conv": 1})
    files = {
        "empty": b"",
        "garbage": b"\x00\x01not safetensors at all",
    }
    paths = {name: tmp_path / f"{name}.safetensors" for name in files}
    for name, data in files.items():
        paths[name].write_bytes(data)
    cases = {
        "no_config": {"format": "matscreen-cgcnn-1"},
        "bad_json": {"format": "matscreen-cgcnn-1", "config": "{not json"},
        "unknown_key": {"format": "matscreen-cgcnn-1", "config": json.dumps({"wings": 2})},
        "not_an_object": {"format": "matscreen-cgcnn-1", "config": "[1, 2]"},
    }
    for name, meta in cases.items():
        paths[name] = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(paths[name]), metadata=meta)
    paths["no_table"] = tmp_path / "no_table.safetensors"
    save_file(
        {k: v for k, v in tensors.items() if k != "atom_table"},
        str(paths["no_table"]),
        metadata=cases["no_config"] | {"config": cfg},
    )
    paths["wrong_shapes"] = tmp_path / "wrong_shapes.safetensors"
    bad = dict(tensors)
    key = next(k for k in bad if k.endswith("weight") and bad[k].ndim == 2 and k != "atom_table")
    bad[key] = torch.zeros(3, 3)
    save_file(bad, str(paths["wrong_shapes"]), metadata={"format": "matscreen-cgcnn-1", "config": cfg})
    return paths


def test_malformed_weights_files_give_a_model_load_error_naming_the_file(tmp_path: Path) -> None:
    for name, path in _malformed_safetensors(tmp_path).items():
        with pytest.raises(ModelLoadError) as info:
            load_featurizer_model(path)
        assert str(path) in str(info.value), name


def test_a_refused_pickle_does_not_suggest_weights_only_false(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {}, "x": Payload()}, handle)
    (tmp_path / "atom_init.json").write_text(json.dumps({str(z): [0.0, 1.0] for z in range(1, 101)}))
    with pytest.raises(ModelLoadError) as info:
        load_featurizer_model(path)
    message = str(info.value)
    assert str(path) in message and "weights_only=False" not in message and "weights_only" not in message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("{}", "no elements"),
        ('{"1": [0, 1], "2": [0]}', "rows of different lengths"),
        ('{"H": [0, 1]}', "not an atomic number"),
        ("[1, 2]", "an object"),
        ('{"1": ["a", "b"]}', "not numbers"),
    ],
)
def test_a_malformed_atom_init_gives_a_model_load_error(tmp_path: Path, content: str, reason: str) -> None:
    from screening.atom_features import load_atom_init

    path = tmp_path / "atom_init.json"
    path.write_text(content)
    with pytest.raises(ModelLoadError, match=reason) as info:
        load_atom_init(path)
    assert str(path) in str(info.value)
