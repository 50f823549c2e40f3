"""Packaging: what a non-editable install carries and how the shipped weights are found.

The full check (build a wheel, install it into a fresh environment, featurize from outside the
source tree) is ``.ci/wheel_check.sh``; these tests keep its preconditions true on every run.
"""

from __future__ import annotations

import fnmatch
from importlib import resources
from pathlib import Path

import pytest
import tomllib
from typer.testing import CliRunner

import screening
from screening.featurize import featurizer
from screening.featurize.featurizer import DEFAULT_MODEL, pretrained_dir, resolve_model_path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _shipped(package: str, folder: Path) -> set[str]:
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"][package]
    return {p.name for p in folder.iterdir() if any(fnmatch.fnmatch(p.name, pat) for pat in patterns)}


def test_pretrained_folder_is_package_data() -> None:
    setuptools_cfg = PYPROJECT["tool"]["setuptools"]
    assert "screening.pretrained" in setuptools_cfg["packages"]
    assert setuptools_cfg["package-dir"]["screening.pretrained"] == "pretrained"
    shipped = _shipped("screening.pretrained", REPO / "pretrained")
    assert {f"{DEFAULT_MODEL}.safetensors", "MODEL_CARD.md", f"{DEFAULT_MODEL}_metrics.json"} <= shipped
    from screening.featurize.registry import SHIPPED_BRANCHES

    for branches in SHIPPED_BRANCHES.values():  # a wheel must carry every property branch
        assert {f"{name}.safetensors" for name in branches.values()} <= shipped


def test_runtime_data_files_are_package_data() -> None:
    """Every file the library opens through importlib.resources is matched by a package-data pattern."""
    data = REPO / "screening" / "data"
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["screening"]
    files = {f"data/{p.name}" for p in data.iterdir() if p.is_file()}
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)


def test_licence_and_single_sourced_version() -> None:
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "Copyright (c) 2026 the matscreen authors" in licence
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "screening.__version__"}
    from screening.cli import app

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"matscreen {screening.__version__}"


def test_installed_layout_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a wheel install the weights sit in screening/pretrained/; that folder is used."""
    package = tmp_path / "site-packages" / "screening"
    (package / "pretrained").mkdir(parents=True)
    (package / "pretrained" / f"{DEFAULT_MODEL}.safetensors").write_bytes(b"stub")
    monkeypatch.delenv("MATSCREEN_PRETRAINED", raising=False)
    monkeypatch.setattr(resources, "files", lambda name: package if name == "screening" else None)
    assert pretrained_dir() == package / "pretrained"
    assert resolve_model_path(None) == package / "pretrained" / f"{DEFAULT_MODEL}.safetensors"


def test_source_checkout_falls_back_to_the_top_level_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MATSCREEN_PRETRAINED", raising=False)
    assert pretrained_dir() == featurizer.REPO_ROOT / "pretrained"
    assert resolve_model_path(None).is_file()


def test_environment_variable_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATSCREEN_PRETRAINED", str(tmp_path))
    assert pretrained_dir() == tmp_path
    from screening.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="unknown model"):
        resolve_model_path(None)


def test_wheel_check_script_exists_and_checks_what_matters() -> None:
    script = (REPO / ".ci" / "wheel_check.sh").read_text()
    for needed in ('pip" wheel', "--no-deps", "constraints.txt", 'matscreen" --version', "featurize", "site-packages"):
        assert needed in script, needed
