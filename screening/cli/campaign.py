"""`matscreen campaign`: ask/tell campaigns for a lab or DFT oracle (state in DIR/campaign.sqlite)."""

from __future__ import annotations

from pathlib import Path

import typer

from screening.cli.app import app
from screening.cli.common import (
    ACQ_HELP,
    BATCH_METHOD_HELP,
    BETA_HELP,
    LABEL_MATCH_OPTION,
    MIN_LABELLED_OPTION,
    MODEL_HELP,
    N_INIT_HELP,
    NEIGHBOUR_COMPONENTS_OPTION,
    NEIGHBOURS_OPTION,
    NETWORK_STD_OPTION,
    PCA_HELP,
    SEED_HELP,
    STRICT_HELP,
    TIE_BREAK_OPTION,
    default_surrogate,
    pool_has_column,
    show_notices,
    strategy_from_options,
    warn_left_out,
)

CAMPAIGN_DIR_HELP = "Campaign directory made by `matscreen campaign new` (its state is DIR/campaign.sqlite)."
campaign_app = typer.Typer(
    no_args_is_help=True,
    help="Campaigns where a lab or a DFT code measures the suggested crystals: `new`, then `ask` for suggestions "
    "and `tell` the results, `status` and `report` at any time (state in DIR/campaign.sqlite).",
)
app.add_typer(campaign_app, name="campaign")


@campaign_app.command("new")
def campaign_new(
    directory: Path = typer.Argument(..., help="Campaign directory to create."),
    pool: Path = typer.Option(
        None,
        "--pool",
        help="Candidate crystals: a table from `matscreen featurize`, `reduce` or `screen` (Parquet, or CSV named "
        ".csv / .csv.gz); the --label "
        "column may be missing (your lab measures the gaps).",
    ),
    target: float = typer.Option(None, "--target", help="Target band gap (eV), with --pool."),
    tol: float = typer.Option(0.01, "--tol", help="Hit tolerance (eV)."),
    label: str = typer.Option(
        "band_gap",
        "--label",
        help="Column of the pool (and of --known) holding band gaps already measured, in eV; 'target' for labels "
        "from a CGCNN id_prop.csv.",
    ),
    objective: str = typer.Option(
        None,
        "--objective",
        help="Instead of a pool: your objective class, package.module:ClassName. Imported for this run only: "
        "later commands on the campaign need --allow-objective with the same name.",
    ),
    known: Path = typer.Option(
        None,
        "--known",
        help="Crystals with measured gaps that are not candidates (a `matscreen featurize` output with the --label "
        "column); the campaign learns from them. With --pool.",
    ),
    known_label: str = typer.Option(
        None,
        "--known-label",
        help="Column of --known when it holds another quantity than --label (e.g. DFT band_gap while your lab "
        "measures optical gaps): the search learns the map from one to the other.",
    ),
    surrogate: str = typer.Option(
        None,
        "--surrogate",
        help="How untested points are predicted: neighbour (the network's prediction corrected by a small GP over "
        "the nearest measured crystals; default with --pool) or gp (one GP; default with --objective).",
    ),
    neighbours: int = NEIGHBOURS_OPTION,
    neighbour_components: int = NEIGHBOUR_COMPONENTS_OPTION,
    min_labelled: int = MIN_LABELLED_OPTION,
    label_match: bool = LABEL_MATCH_OPTION,
    network_std: bool = NETWORK_STD_OPTION,
    tie_break: float | None = TIE_BREAK_OPTION,
    model: str = typer.Option("value", "--model", help=MODEL_HELP),
    acq: str = typer.Option("window", "--acq", help=ACQ_HELP),
    batch: int = typer.Option(1, "--batch", min=1, help="Points suggested per ask (measured together)."),
    batch_method: str = typer.Option("lp", "--batch-method", help=BATCH_METHOD_HELP),
    beta: float = typer.Option(4.0, "--beta", help=BETA_HELP),
    prior_mean: bool = typer.Option(
        None,
        "--prior-mean/--no-prior-mean",
        help="Use the network's pred_band_gap as the GP's prior mean (c + b*pred, fitted). Default, as in "
        "`matscreen search`: on with --surrogate gp when the pool has pred_band_gap.",
    ),
    n_init: int = typer.Option(5, "--n-init", min=1, help=N_INIT_HELP),
    budget: int = typer.Option(
        None, "--budget", min=1, help="Measurements `campaign run` may make (no limit by default)."
    ),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    pca_components: int = typer.Option(3, "--pca-components", min=1, help=PCA_HELP),
    max_formation_energy: float = typer.Option(
        None,
        "--max-formation-energy",
        help="Candidates only among crystals whose predicted formation energy (pred_formation_energy_per_atom) "
        "is at most this many eV/atom, e.g. 0.0 for predicted-stable compounds.",
    ),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP, rich_help_panel="Advanced"),
) -> None:
    """Create a campaign over a pool (--pool, --target) or a user objective (--objective)."""
    from screening.bo.campaign import StopRules
    from screening.objectives.bandgap.campaign_dir import create_objective_campaign, create_pool_campaign

    surrogate = surrogate or ("gp" if objective else default_surrogate(model, acq))
    if prior_mean is None:
        prior_mean = not objective and surrogate == "gp" and pool is not None and pool_has_column(pool, "pred_band_gap")
    strategy = strategy_from_options(
        model,
        acq,
        batch_method,
        beta,
        prior_mean,
        n_init,
        surrogate=surrogate,
        neighbours=neighbours,
        neighbour_components=neighbour_components,
        min_labelled=min_labelled,
        label_match=label_match,
        tie_break=tie_break,
        network_std=network_std,
    )
    if objective:
        if surrogate != "gp":
            raise typer.BadParameter("--objective campaigns use --surrogate gp")
        create_objective_campaign(directory, objective, strategy, seed, batch, StopRules(budget=budget))
    elif pool is not None and target is not None:
        cd = create_pool_campaign(
            directory,
            pool,
            target,
            tol,
            strategy,
            seed,
            batch,
            StopRules(budget=budget),
            pca_components,
            require_band_gap=False,
            known_path=known,
            known_label=known_label,
            max_formation_energy=max_formation_energy,
            label=label,
            strict=strict,
        )
        warn_left_out(cd)
    else:
        raise typer.BadParameter("give --pool and --target, or --objective")
    typer.echo(f"created {directory}")
    if pool is not None and not objective:
        kept = [str(p.resolve()) for p in (pool, known) if p is not None]
        typer.echo(
            f"it reads {' and '.join(kept)} at every command: keep {'them' if len(kept) > 1 else 'it'} in place and "
            "unchanged (a changed file is refused, not followed)"
        )


ALLOW_HELP = (
    "Consent to import this objective class (package.module:ClassName) named in the campaign file; "
    "repeatable. Needed for any objective outside screening.objectives (or set MATSCREEN_ALLOW_OBJECTIVES)."
)


def _allowed(allow_objective: list[str] | None) -> set[str]:
    from screening.bo.objective import allowed_objectives

    return allowed_objectives(allow_objective or ())


@campaign_app.command("ask")
def campaign_ask(
    directory: Path = typer.Argument(..., help=CAMPAIGN_DIR_HELP),
    n: int = typer.Option(None, "-n", min=1, help="Points to suggest (default: the campaign's batch size)."),
    out: Path = typer.Option(None, "-o", "--out", help="CSV to write (default DIR/ask-<k>.csv)."),
    fresh: bool = typer.Option(
        False, "--new", help="Suggest new points even when earlier ones are still pending (a second batch)."
    ),
    allow_objective: list[str] = typer.Option(None, "--allow-objective", help=ALLOW_HELP),
) -> None:
    """Suggest the next batch and write it as CSV; the points stay pending until told.

    Points still pending from an earlier ask come back first, so rerunning an ask that was
    interrupted gives the same points.
    """
    from screening.objectives.bandgap.campaign_dir import ask_into_file, map_line, open_campaign_dir

    cd = open_campaign_dir(directory, _allowed(allow_objective))
    frame, out = ask_into_file(cd, out, n, fresh)
    show_notices(cd.campaign)
    typer.echo(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    words, _ = map_line(cd)
    if words:
        typer.echo(f"learned map: {words}")
    typer.echo(f"wrote {out}")


@campaign_app.command("tell")
def campaign_tell(
    directory: Path = typer.Argument(..., help=CAMPAIGN_DIR_HELP),
    results: Path = typer.Argument(
        ...,
        help="CSV of results: id and band_gap in eV (pool campaigns) or the objective's input columns and y "
        "(--objective campaigns); an optional error column marks failed measurements.",
    ),
    allow_objective: list[str] = typer.Option(None, "--allow-objective", help=ALLOW_HELP),
) -> None:
    """Record results; a malformed file, unknown point, impossible value or NaN changes nothing.

    Telling the same results again is harmless (they are already recorded); results for points
    that were never asked are recorded as prior data.
    """
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, summary, tell_results_file

    cd = open_campaign_dir(directory, _allowed(allow_objective))
    show_notices(cd.campaign)
    outcome = tell_results_file(cd, results)
    info = summary(cd)
    parts = [f"told {len(outcome.search)} asked result(s)"]
    if outcome.prior:
        parts.append(f"{len(outcome.prior)} not asked, recorded as prior: {', '.join(outcome.prior[:5])}")
    if outcome.already_recorded:
        parts.append(f"{len(outcome.already_recorded)} already recorded with these values (skipped)")
    best = info["best_loss"]
    typer.echo("; ".join(parts) + f"; best loss {'none yet' if best is None else f'{best:.4g}'}; hit: {info['hit']}")


@campaign_app.command("status")
def campaign_status(
    directory: Path = typer.Argument(..., help=CAMPAIGN_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of the table."),
    allow_objective: list[str] = typer.Option(None, "--allow-objective", help=ALLOW_HELP),
) -> None:
    """Target, tolerance, counts, best point, pending points, hits and whether a stop rule has fired."""
    import json

    from screening.bo.status import campaign_status as status_of
    from screening.bo.status import format_status
    from screening.bo.strategy import Strategy

    info = status_of(directory / "campaign.sqlite", _allowed(allow_objective))
    for line in info["notices"]:
        typer.echo(f"note: {line}", err=True)
    words = None
    if info.get("kind") == "bandgap-pool":
        info["learned_map"] = None
    if info.get("kind") == "bandgap-pool" and Strategy.from_dict(info["strategy"]).learns_map:
        # the one part of a status that builds the model: only where a map can be learned
        from screening.objectives.bandgap.campaign_dir import map_line, open_campaign_dir

        words, info["learned_map"] = map_line(open_campaign_dir(directory, _allowed(allow_objective)))
    text = format_status(info) + (f"\nlearned map  {words}" if words else "")
    typer.echo(json.dumps(info, indent=2, default=str) if as_json else text)


@campaign_app.command("report")
def campaign_report(
    directory: Path = typer.Argument(..., help=CAMPAIGN_DIR_HELP),
    allow_objective: list[str] = typer.Option(None, "--allow-objective", help=ALLOW_HELP),
) -> None:
    """Write history.csv, summary.json and the plots into the campaign directory."""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, write_report

    cd = open_campaign_dir(directory, _allowed(allow_objective))
    show_notices(cd.campaign)
    paths = write_report(cd)
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@campaign_app.command("run")
def campaign_run(
    directory: Path = typer.Argument(..., help=CAMPAIGN_DIR_HELP),
    budget: int = typer.Option(None, "--budget", help="Total search evaluations (default: the campaign's)."),
    allow_objective: list[str] = typer.Option(None, "--allow-objective", help=ALLOW_HELP),
) -> None:
    """Run the campaign with its own objective as the oracle (pool look-up, simulator) until a stop rule."""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, write_report

    cd = open_campaign_dir(directory, _allowed(allow_objective))

    def show(ev, loss, hit):
        typer.echo(
            f"{ev.point!s:<30} loss {loss if loss is not None else 'failed: ' + str(ev.error)}{'  HIT' if hit else ''}"
        )

    cd.campaign.run(budget=budget, on_evaluation=show)
    show_notices(cd.campaign)
    write_report(cd)
    typer.echo(f"stopped: {cd.campaign.stopped_because}")
