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


def test_reduce_reads_csv_and_names_what_it_cannot_use(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": [f"x{k}" for k in range(6)]})
    for k in range(4):
        frame[f"emb_{k}"] = [float((j * (k + 2)) % 7) for j in range(6)]
    frame.to_csv(tmp_path / "emb.csv", index=False)
    done = runner.invoke(app, ["reduce", str(tmp_path / "emb.csv"), "-o", str(tmp_path / "pcs.parquet"), "-k", "2"])
    assert done.exit_code == 0, done.output
    assert list(pd.read_parquet(tmp_path / "pcs.parquet").columns[-2:]) == ["pc_1", "pc_2"]
    nan = frame.copy()
    nan.loc[3, "emb_2"] = float("nan")
    nan.to_parquet(tmp_path / "nan.parquet")
    for args, says in (
        (["nan.parquet"], "record 'x3': embedding value missing or not a number"),
        (["emb.csv", "-k", "0"], "--n-components must be at least 1"),
        (["emb.csv", "-k", "5"], "allow at most 4 components"),
    ):
        res = runner.invoke(app, ["reduce", str(tmp_path / args[0]), *args[1:], "-o", str(tmp_path / "out.parquet")])
        assert res.exit_code == 1, res.output
        assert says in re.sub(r"\s+", " ", res.output), res.output
    assert not (tmp_path / "out.parquet").exists()
