"""The command line's neighbour-surrogate defaults are the library's: one measured default, not two."""

from __future__ import annotations

import typer.main

from screening.bo.strategy import Strategy
from screening.cli.app import app


def _option_defaults(command_name: str, sub: str | None = None) -> dict[str, object]:
    group = typer.main.get_command(app)
    cmd = group.commands[command_name]  # type: ignore[attr-defined]
    if sub is not None:
        cmd = cmd.commands[sub]
    return {p.name: p.default for p in cmd.params}


def test_search_and_campaign_new_use_the_strategy_defaults_for_the_neighbour_surrogate():
    library = Strategy()
    for defaults in (_option_defaults("search"), _option_defaults("campaign", "new")):
        assert defaults["neighbours"] == library.n_neighbours
        assert defaults["neighbour_components"] == library.neighbour_components
        assert defaults["min_labelled"] == library.neighbour_min_labelled
        assert defaults["label_match"] == library.label_match
        assert defaults["network_std"] == library.trust_network_std
        # None on both sides: the library resolves it (DEFAULT_TIE_BREAK for the neighbour window)
        assert defaults["tie_break"] is None and Strategy.__dataclass_fields__["tie_break"].default is None
