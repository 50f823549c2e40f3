"""Option handling shared by the search and campaign commands."""

from __future__ import annotations

from pathlib import Path

import typer

from screening.cli.help_screen import ADVANCED


def show_notices(campaign) -> None:
    """Print the campaign's notices (e.g. a saved model rebuilt, and why) as ``note:`` lines on stderr."""
    for line in campaign.notices():
        typer.echo(f"note: {line}", err=True)


def pool_has_column(pool: Path, column: str) -> bool:
    import pyarrow.parquet as pq

    try:
        return column in pq.read_schema(pool).names
    except Exception:  # unreadable pool: the search reports it properly
        return False


# One line each: the reason and the detail of every option are in docs/options.md.
ACQ_HELP = "Pick rule: window, ucb, ..."
# Options that `search` and `campaign new` share: one wording, so the two commands read the same.
MODEL_HELP = "GP models: value or loss"
BATCH_METHOD_HELP = "Batch picking: lp or qlogei"
BETA_HELP = "Exploration weight of --acq ucb"
N_INIT_HELP = "Random picks before the model"
SEED_HELP = "Seed for the random picks"
PCA_HELP = "PCA size the GP works in"
STRICT_HELP = "Refuse a table at its first invalid row"

# The strategy options `search` and `campaign new` share, declared once.
MODEL_OPTION = typer.Option("value", "--model", metavar="NAME", rich_help_panel=ADVANCED, help=MODEL_HELP)
ACQ_OPTION = typer.Option("window", "--acq", metavar="NAME", rich_help_panel=ADVANCED, help=ACQ_HELP)
BATCH_METHOD_OPTION = typer.Option(
    "lp", "--batch-method", metavar="NAME", rich_help_panel=ADVANCED, help=BATCH_METHOD_HELP
)
BETA_OPTION = typer.Option(4.0, "--beta", metavar="NUM", rich_help_panel=ADVANCED, help=BETA_HELP)
N_INIT_OPTION = typer.Option(5, "--n-init", min=1, metavar="N", rich_help_panel=ADVANCED, help=N_INIT_HELP)
PRIOR_MEAN_OPTION = typer.Option(
    None,
    "--prior-mean/--no-prior-mean",
    rich_help_panel=ADVANCED,
    show_default=False,
    help="Network's gap as GP prior (on for gp)",
)


def warn_left_out(cd) -> None:
    """One warning line on stderr per input table whose invalid rows a new campaign left out."""
    for report in getattr(cd, "left_out", []):
        typer.secho(f"warning: {report.warning()}", fg=typer.colors.YELLOW, err=True)


# Shared by `search` and `campaign new`; the defaults are Strategy's (tests/test_cli_defaults.py).
NEIGHBOURS_OPTION = typer.Option(
    8, "--neighbours", min=1, metavar="N", rich_help_panel=ADVANCED, help="Measured neighbours per crystal"
)
NEIGHBOUR_COMPONENTS_OPTION = typer.Option(
    64,
    "--neighbour-components",
    metavar="N",
    rich_help_panel=ADVANCED,
    help="PCA size for distances",
)
MIN_LABELLED_OPTION = typer.Option(
    3000,
    "--min-labelled",
    metavar="N",
    rich_help_panel=ADVANCED,
    help="Labels needed for local fits",
)

LABEL_MATCH_OPTION = typer.Option(
    True,
    "--label-match/--no-label-match",
    rich_help_panel=ADVANCED,
    help="Reuse a near-twin known gap",
)

NETWORK_STD_OPTION = typer.Option(
    True,
    "--network-std/--fitted-std",
    rich_help_panel=ADVANCED,
    show_default=False,
    help="Network std per crystal (default) or fitted",
)

TIE_BREAK_OPTION = typer.Option(
    None,
    "--tie-break",
    min=0.0,
    metavar="NUM",
    rich_help_panel=ADVANCED,
    show_default="0.01",
    help="Jitter on ties (std fraction)",
)


def strategy_from_options(
    model: str,
    acq: str,
    batch_method: str,
    beta: float,
    prior_mean: bool,
    n_init: int,
    surrogate: str = "gp",
    neighbours: int = 8,
    neighbour_components: int = 64,
    min_labelled: int = 3000,
    label_match: bool = True,
    tie_break: float | None = None,
    network_std: bool = False,
):
    from screening.bo.strategy import Strategy

    try:
        return Strategy(
            model=model,
            acquisition=acq,
            batch=batch_method,
            beta=beta,
            use_prior=prior_mean,
            n_init=n_init,
            surrogate=surrogate,
            n_neighbours=neighbours,
            neighbour_components=neighbour_components,
            neighbour_min_labelled=min_labelled,
            label_match=label_match,
            tie_break=tie_break,
            trust_network_std=network_std,
        )
    except Exception as exc:  # StrategyError: show it as a usage error
        raise typer.BadParameter(str(exc)) from exc


def default_surrogate(model: str, acq: str) -> str:
    """The measured default (neighbour GP) wherever it applies: it models the value itself."""
    return "neighbour" if model == "value" and acq in ("window", "thompson") else "gp"
