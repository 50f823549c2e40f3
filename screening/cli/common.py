"""Option handling shared by the search and campaign commands."""

from __future__ import annotations

from pathlib import Path

import typer


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


ACQ_HELP = (
    "How the next crystal is chosen. With --model value: window (the chance that its gap lands in the target "
    "window), folded-ei (expected improvement of |gap - target|) or thompson (a random draw from the model). "
    "With --model loss: logei or ei (expected improvement), ucb (optimistic guess, see --beta), pi (chance of "
    "improving) or thompson."
)
# Options that `search` and `campaign new` share: one wording, so the two commands read the same.
MODEL_HELP = (
    "With --surrogate gp, what the GP predicts: value (the band gap itself) or loss (the distance "
    "|gap - target|, as the original pipeline did)."
)
BATCH_METHOD_HELP = (
    "How a round of several crystals is chosen: lp (one at a time, keeping away from the crystals already "
    "picked) or qlogei (all together)."
)
BETA_HELP = "With --acq ucb: how strongly to favour crystals the model is unsure about (higher explores more)."
N_INIT_HELP = "Crystals picked at random before the model is used, while fewer than this have been measured."
SEED_HELP = "Random seed: the same seed and inputs give the same suggestions."
PCA_HELP = "Number of principal components of the embeddings the GP works in."
STRICT_HELP = (
    "Refuse a --pool or --known table at its first invalid row (default: leave such rows out, list them in "
    "pool.errors.csv / known.errors.csv in the run directory, and say how many on stderr)."
)


def warn_left_out(cd) -> None:
    """One warning line on stderr per input table whose invalid rows a new campaign left out."""
    for report in getattr(cd, "left_out", []):
        typer.secho(f"warning: {report.warning()}", fg=typer.colors.YELLOW, err=True)


# Shared by `search` and `campaign new`; the defaults are Strategy's (tests/test_cli_defaults.py).
NEIGHBOURS_OPTION = typer.Option(
    8, "--neighbours", min=1, help="Labelled neighbours per candidate for --surrogate neighbour."
)
NEIGHBOUR_COMPONENTS_OPTION = typer.Option(
    64,
    "--neighbour-components",
    help="Principal components of the standardised embedding in which --surrogate neighbour measures "
    "distances between crystals.",
)
MIN_LABELLED_OPTION = typer.Option(
    3000,
    "--min-labelled",
    help="Labelled crystals (known + measured) --surrogate neighbour needs before it may correct the network "
    "by its neighbours; below this it keeps the network's ranking (with fewer, the corrections it found on "
    "Materials Project data were noise). Lower it for a small, dense set of close relatives.",
)

LABEL_MATCH_OPTION = typer.Option(
    True,
    "--label-match/--no-label-match",
    help="With --surrogate neighbour and --known: let a candidate's gap equal a close known crystal's (near "
    "duplicates, polymorphs and siblings often share a gap to 0.01 eV), fitted on the known data. "
    "--no-label-match: the smooth neighbour correction alone.",
)

NETWORK_STD_OPTION = typer.Option(
    True,
    "--network-std/--fitted-std",
    help="With --surrogate neighbour and no local structure (fewer labelled crystals than --min-labelled, e.g. "
    "no --known): rank by the window probability with each crystal's own network uncertainty "
    "(pred_band_gap_std). --fitted-std: one std for all, which ranks by the prediction alone "
    "(docs/benchmarks.md: 1.60x against 0.98x the ranking on the test pool; on the development pool 0.99x "
    "against 1.02x at the same 21 targets, 1.64x against 1.00x at 40).",
)

TIE_BREAK_OPTION = typer.Option(
    None,
    "--tie-break",
    min=0.0,
    help="With --surrogate neighbour and --acq window: perturb each candidate's predicted gap by this fraction "
    "of its predictive std (drawn from --seed at every suggestion) before scoring, so near-equal candidates are "
    "taken in a seeded order and searches with different seeds or priors spread out. Default 0.01 there (chosen "
    "by measurement, docs/benchmarks.md); 0: the deterministic order.",
)


def strategy_from_options(
    model: str,
    acq: str,
    batch_method: str,
    beta: float,
    prior_mean: bool,
    n_init: int,
    fixed_prior_slope: bool = False,
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
            fixed_prior_slope=fixed_prior_slope,
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
