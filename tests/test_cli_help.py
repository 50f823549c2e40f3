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
# Optimiser words that may name an Advanced option but have no place among the everyday ones.
EVERYDAY_JARGON = ["acquisition", "qlogei", "logei", "lp", "loss", "tie-break", "surrogate", "GP", "ucb", "thompson"]
# What a help screen must not quote: benchmark ratios ("1.60x against 0.98x"), errors, percentages.
BENCHMARK_FIGURE = re.compile(r"\d+(\.\d+)?\s*[x×](?![\w])|\bMAE\b|\d\s*%")
SCREEN_LINES = 50
SCREEN_WIDTH = 80
OPTIONS_DOC = Path(__file__).resolve().parents[1] / "docs" / "options.md"


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


def _help_at_80(path: tuple[str, ...]) -> str:
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(SCREEN_WIDTH)})
    assert res.exit_code == 0, res.output
    return re.sub(r"\x1b\[[0-9;]*m", "", res.output)  # colours, where FORCE_COLOR asks for them


def _panel(text: str, title: str) -> list[str]:
    """The rows of one help panel, without its borders."""
    lines = text.splitlines()
    start = next((k for k, line in enumerate(lines) if line.startswith(f"╭─ {title} ")), None)
    if start is None:
        return []
    end = next(k for k in range(start, len(lines)) if lines[k].startswith("╰"))
    return [line[2:-2].rstrip() for line in lines[start + 1 : end]]  # "│ " row " │"


def _options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option" and not p.hidden]


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_help_fits_one_80_column_screen(path: tuple[str, ...]) -> None:
    text = _help_at_80(path)
    lines = text.splitlines()
    assert len(lines) <= SCREEN_LINES, f"matscreen {' '.join(path)} --help: {len(lines)} lines at 80 columns"
    wide = [line for line in lines if len(line) > SCREEN_WIDTH]
    assert not wide, wide
    assert "<bool>" not in text and "BOOLEAN" not in text
    figures = [line for line in lines if BENCHMARK_FIGURE.search(line)]
    assert not figures, f"matscreen {' '.join(path)} --help quotes figures: {figures}"


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_option_is_one_line(path: tuple[str, ...]) -> None:
    """A row that wraps continues under the help column, so it starts with spaces: none may.

    The one exception is the second name of a long --flag/--no-flag pair, on a line of its own.
    """
    text = _help_at_80(path)
    for title in ("Arguments", "Options", "Advanced"):
        for row in _panel(text, title):
            assert row and not row.startswith(" "), f"matscreen {' '.join(path)}: a wrapped row in {title}: {row!r}"
    cmd = dict(_commands())[path]
    for option in _options(cmd):
        for name in option.opts:
            assert re.search(rf"(^|[│,/ ]){re.escape(name)}\b", text, re.M), f"{name} missing from {path} --help"
        for name in option.secondary_opts:
            assert name in text, f"the off switch {name} missing from {path} --help"


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_everyday_options_first_the_rest_under_advanced(path: tuple[str, ...]) -> None:
    cmd = dict(_commands())[path]
    text = _help_at_80(path)
    everyday = " ".join(_panel(text, "Options"))
    found = [word for word in EVERYDAY_JARGON if re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", everyday)]
    assert not found, f"matscreen {' '.join(path)}: the everyday options use {found}"
    if len(_options(cmd)) > 9:  # --help included
        assert _panel(text, "Advanced"), f"matscreen {' '.join(path)}: {len(_options(cmd))} options, no Advanced panel"
        assert len(_panel(text, "Options")) <= 11


def test_flags_print_as_flags() -> None:
    text = _help_at_80(("search",))
    assert "--label-match/" in text and "--no-label-match" in text
    assert "--pool PATH" in text and "--target EV" in text
    assert re.search(r"--no-cache +Compute", _help_at_80(("featurize",)))  # a lone flag: no placeholder


def _doc_sections() -> dict[str, str]:
    parts = re.split(r"^## (.+)$", OPTIONS_DOC.read_text(encoding="utf-8"), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_option_is_explained_in_the_docs(path: tuple[str, ...]) -> None:
    """The help is one line per option; docs/options.md has the rest, and each help points there."""
    name = " ".join(path)
    section = _doc_sections().get(name)
    assert section is not None, f"docs/options.md has no section '## {name}'"
    assert f"docs/options.md#{'-'.join(path)}" in _help_at_80(path)
    cmd = dict(_commands())[path]
    for param in cmd.params:
        if param.name == "help":
            continue
        names = [*param.opts, *param.secondary_opts] if param.param_type_name == "option" else [param.metavar]
        for opt in names:
            assert re.search(rf"{re.escape(opt)}(?![\w-])", section), f"docs/options.md '## {name}' lacks {opt}"
