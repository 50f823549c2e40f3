"""Every command's --help: each option explained, in plain words, and rendered as written."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import typer.main
from typer.testing import CliRunner

from screening.cli import app

runner = CliRunner()
# Words a new user should not have to decode: project history, optimiser shorthand, code names.
JARGON = ["seed's", "Run-1", "(q)", "local penalisation", "forward pass", "in-process", "CGCNN's"]


def _commands(cmd=None, path: tuple[str, ...] = ()):
    cmd = cmd or typer.main.get_command(app)
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, cmd


COMMANDS = [path for path, _ in _commands()]


def test_the_walk_finds_every_command() -> None:
    assert {("featurize",), ("reduce",), ("search",), ("screen",), ("fetch-mp",), ("campaign", "new")} <= set(COMMANDS)
    assert len(COMMANDS) >= 14


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_option_and_argument_has_help(path: tuple[str, ...]) -> None:
    cmd = dict(_commands())[path]
    missing = [p.name for p in cmd.params if p.name != "help" and not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"matscreen {' '.join(path)}: no help for {missing}"
    assert (cmd.help or "").strip(), f"matscreen {' '.join(path)} has no description"


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_help_is_plain_words(path: tuple[str, ...]) -> None:
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = re.sub(r"\s+", " ", res.output)
    found = [word for word in JARGON if word in text]
    assert not found, f"matscreen {' '.join(path)} --help uses {found}"


def test_square_brackets_survive_rendering() -> None:
    res = runner.invoke(app, ["synth", "run", "--help"], env={"COLUMNS": "200"})
    assert "matscreen[shap]" in res.output


def test_save_pca_default_is_what_reduce_does(tmp_path: Path) -> None:
    res = runner.invoke(app, ["reduce", "--help"], env={"COLUMNS": "200"})
    assert "pcs.parquet -> pcs.pca.json" in re.sub(r"\s+", " ", res.output)
    frame = pd.DataFrame({"id": [f"x{k}" for k in range(6)]})
    for k in range(4):
        frame[f"emb_{k}"] = [float((j * (k + 2)) % 7) for j in range(6)]
    frame.to_parquet(tmp_path / "emb.parquet")
    done = runner.invoke(app, ["reduce", str(tmp_path / "emb.parquet"), "-o", str(tmp_path / "pcs.parquet"), "-k", "2"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "pcs.pca.json").is_file() and not (tmp_path / "pcs.parquet.pca.json").exists()


def test_reduce_on_a_file_without_embeddings_says_so(tmp_path: Path) -> None:
    pd.DataFrame({"id": ["a"], "pc_1": [0.1]}).to_parquet(tmp_path / "x.parquet")
    res = runner.invoke(app, ["reduce", str(tmp_path / "x.parquet"), "-o", str(tmp_path / "y.parquet")])
    assert res.exit_code == 1 and "no emb_0" in res.output
