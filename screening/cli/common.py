"""Option handling shared by the search and campaign commands."""

from __future__ import annotations

from pathlib import Path

import typer


def pool_has_column(pool: Path, column: str) -> bool:
    import pyarrow.parquet as pq

    try:
        return column in pq.read_schema(pool).names
    except Exception:  # unreadable pool: the search reports it properly
        return False


ACQ_HELP = "Acquisition: with --model value: window | folded-ei | thompson; with --model loss: logei | ei | ucb | pi | thompson."


def strategy_from_options(
    model: str,
    acq: str,
    batch_method: str,
    beta: float,
    prior_mean: bool,
    n_init: int,
    fixed_prior_slope: bool = False,
    surrogate: str = "gp",
    neighbours: int = 16,
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
        )
    except Exception as exc:  # StrategyError: show it as a usage error
        raise typer.BadParameter(str(exc)) from exc


def default_surrogate(model: str, acq: str) -> str:
    """The measured default (neighbour GP) wherever it applies: it models the value itself."""
    return "neighbour" if model == "value" and acq in ("window", "thompson") else "gp"
