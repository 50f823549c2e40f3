"""`matscreen campaign`: ask/tell campaigns for a lab or DFT oracle (state in DIR/campaign.sqlite)."""

from __future__ import annotations

from pathlib import Path

import typer

from screening.cli.app import app
from screening.cli.common import (
    ACQ_OPTION,
    BATCH_METHOD_OPTION,
    BETA_OPTION,
    LABEL_MATCH_OPTION,
    MIN_LABELLED_OPTION,
    MODEL_OPTION,
    N_INIT_OPTION,
    NEIGHBOUR_COMPONENTS_OPTION,
    NEIGHBOURS_OPTION,
    NETWORK_STD_OPTION,
    PCA_HELP,
    PRIOR_MEAN_OPTION,
    SEED_HELP,
    STRICT_HELP,
    TIE_BREAK_OPTION,
    default_surrogate,
    pool_has_column,
    show_notices,
    strategy_from_options,
    warn_left_out,
)
from screening.cli.help_screen import ADVANCED, OneScreenCommand, OneScreenGroup

CAMPAIGN_DIR_HELP = "Folder made by `campaign new`"
campaign_app = typer.Typer(
    cls=OneScreenGroup,
    no_args_is_help=True,
    short_help="Ask/tell campaigns for a lab or a DFT code",
    help="Campaigns where a lab or a DFT code measures the suggested crystals: `new`, then `ask` for suggestions "
    "and `tell` the results, `status` and `report` at any time (state in DIR/campaign.sqlite).",
)
app.add_typer(campaign_app, name="campaign")


@campaign_app.command("new", cls=OneScreenCommand, short_help="Create a campaign over a pool or your own objective")
def campaign_new(
    directory: Path = typer.Argument(..., metavar="DIR", help="Campaign folder to create"),
    pool: Path = typer.Option(None, "--pool", metavar="PATH", help="Candidate crystals: featurize/screen table"),
    target: float = typer.Option(None, "--target", metavar="EV", help="Band gap to find, eV (with --pool)"),
    tol: float = typer.Option(0.01, "--tol", metavar="EV", help="A hit is within ± this of the target, eV"),
    batch: int = typer.Option(1, "--batch", min=1, metavar="N", help="Crystals suggested per ask"),
    budget: int = typer.Option(
        None, "--budget", min=1, metavar="N", help="Measurements `campaign run` may make (no limit)"
    ),
    label: str = typer.Option("band_gap", "--label", metavar="COLUMN", help="Pool column of known gaps, eV"),
    known: Path = typer.Option(
        None, "--known", metavar="PATH", help="Measured crystals to learn from (not candidates)"
    ),
    objective: str = typer.Option(None, "--objective", metavar="CLASS", help="Your objective class instead of a pool"),
    max_formation_energy: float = typer.Option(
        None,
        "--max-formation-energy",
        metavar="EV",
        rich_help_panel=ADVANCED,
        help="Skip crystals predicted above, eV/atom",
    ),
    known_label: str = typer.Option(
        None, "--known-label", metavar="COLUMN", rich_help_panel=ADVANCED, help="Column of --known, if not --label"
    ),
    strict: bool = typer.Option(False, "--strict", rich_help_panel=ADVANCED, help=STRICT_HELP),
    seed: int = typer.Option(0, "--seed", metavar="N", rich_help_panel=ADVANCED, help=SEED_HELP),
    surrogate: str = typer.Option(
        None,
        "--surrogate",
        metavar="NAME",
        rich_help_panel=ADVANCED,
        show_default=False,
        help="Predictor: neighbour (pool) or gp",
    ),
    model: str = MODEL_OPTION,
    acq: str = ACQ_OPTION,
    batch_method: str = BATCH_METHOD_OPTION,
    beta: float = BETA_OPTION,
    n_init: int = N_INIT_OPTION,
    pca_components: int = typer.Option(
        3, "--pca-components", min=1, metavar="N", rich_help_panel=ADVANCED, help=PCA_HELP
    ),
    prior_mean: bool = PRIOR_MEAN_OPTION,
    neighbours: int = NEIGHBOURS_OPTION,
    neighbour_components: int = NEIGHBOUR_COMPONENTS_OPTION,
    min_labelled: int = MIN_LABELLED_OPTION,
    label_match: bool = LABEL_MATCH_OPTION,
    network_std: bool = NETWORK_STD_OPTION,
    tie_break: float | None = TIE_BREAK_OPTION,
) -> None:
    """Create a campaign over a pool (--pool, --target) or your own objective (--objective).

    Options in full: docs/options.md#campaign-new"""
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


ALLOW_HELP = "Allow the campaign to import this class (repeat)"
# The campaign folder: one spelling for every command on an existing campaign.
DIR_ARGUMENT = typer.Argument(..., metavar="DIR", help=CAMPAIGN_DIR_HELP)


def _allowed(allow_objective: list[str] | None) -> set[str]:
    from screening.bo.objective import allowed_objectives

    return allowed_objectives(allow_objective or ())


@campaign_app.command("ask", cls=OneScreenCommand, short_help="Suggest the next crystals to measure, as CSV")
def campaign_ask(
    directory: Path = DIR_ARGUMENT,
    n: int = typer.Option(None, "-n", min=1, metavar="N", show_default="--batch", help="Points to suggest"),
    out: Path = typer.Option(None, "-o", "--out", metavar="PATH", show_default="DIR/ask-K.csv", help="CSV to write"),
    fresh: bool = typer.Option(False, "--new", help="New points even while others are pending"),
    allow_objective: list[str] = typer.Option(None, "--allow-objective", metavar="CLASS", help=ALLOW_HELP),
) -> None:
    """Suggest the next batch and write it as CSV; the points stay pending until told.

    Points still pending from an earlier ask come back first, so an interrupted ask gives the same points
    again.

    Options in full: docs/options.md#campaign-ask"""
    from screening.objectives.bandgap.campaign_dir import (
        ASK_ERROR_COLUMN,
        ASK_RESULT_COLUMN,
        ask_into_file,
        map_line,
        open_campaign_dir,
    )

    cd = open_campaign_dir(directory, _allowed(allow_objective))
    frame, out = ask_into_file(cd, out, n, fresh)
    show_notices(cd.campaign)
    shown = frame.drop(columns=[ASK_RESULT_COLUMN, ASK_ERROR_COLUMN], errors="ignore")  # empty: the lab's to fill
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    words, _ = map_line(cd)
    if words:
        typer.echo(f"learned map: {words}")
    typer.echo(f"wrote {out}")


@campaign_app.command("tell", cls=OneScreenCommand, short_help="Record measured results")
def campaign_tell(
    directory: Path = DIR_ARGUMENT,
    results: Path = typer.Argument(..., metavar="RESULTS", help="The ask file, band_gap_eV filled in; or inputs and y"),
    allow_objective: list[str] = typer.Option(None, "--allow-objective", metavar="CLASS", help=ALLOW_HELP),
) -> None:
    """Record results; a malformed file, unknown point, impossible value or NaN changes nothing.

    Telling the same results again is harmless; results for points never asked are recorded as prior
    data.

    Options in full: docs/options.md#campaign-tell"""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, summary, tell_results_file

    cd = open_campaign_dir(directory, _allowed(allow_objective))
    show_notices(cd.campaign)
    outcome = tell_results_file(cd, results)
    # the next ask reads the model with these results in it (also after a retried tell: the one
    # killed after recording them may not have saved it)
    if cd.campaign.extend_saved_model():
        cd.campaign.prepare_new_ask()  # and the effect of the next ask's picks, for an `ask --new`
    show_notices(cd.campaign)
    info = summary(cd)
    parts = [f"told {len(outcome.search)} asked result(s)"]
    if outcome.prior:
        parts.append(f"{len(outcome.prior)} not asked, recorded as prior: {', '.join(outcome.prior[:5])}")
    if outcome.already_recorded:
        parts.append(f"{len(outcome.already_recorded)} already recorded with these values (skipped)")
    parts.append(best_line(info, cd.pool is not None))
    parts.append(f"hit: {'yes' if info['hit'] else 'no'}")
    typer.echo("; ".join(parts))


def best_line(info: dict, band_gap: bool) -> str:
    """The best result so far in a scientist's words: ``best |gap − target| 0.040 eV (mp-123, 2.574 eV)``
    for a band-gap campaign (to 1 meV), ``best loss 0.0123 (…)`` for another objective."""
    best, point = info["best_loss"], info["best_point"]
    if best is None:
        return "no result yet"
    if band_gap:
        return f"best |gap − target| {best:.3f} eV ({point}, {info['best_y']:.3f} eV)"
    return f"best loss {best:.4g} ({point})"


@campaign_app.command("status", cls=OneScreenCommand, short_help="Print where the campaign stands")
def campaign_status(
    directory: Path = DIR_ARGUMENT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of the table"),
    allow_objective: list[str] = typer.Option(None, "--allow-objective", metavar="CLASS", help=ALLOW_HELP),
) -> None:
    """Print target, tolerance, counts, best point, pending points, hits and whether a stop rule has fired.

    Options in full: docs/options.md#campaign-status"""
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


@campaign_app.command("report", cls=OneScreenCommand, short_help="Write history.csv, summary.json and plots")
def campaign_report(
    directory: Path = DIR_ARGUMENT,
    allow_objective: list[str] = typer.Option(None, "--allow-objective", metavar="CLASS", help=ALLOW_HELP),
) -> None:
    """Write history.csv, summary.json and the plots into the campaign directory.

    Options in full: docs/options.md#campaign-report"""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, write_report

    cd = open_campaign_dir(directory, _allowed(allow_objective))
    show_notices(cd.campaign)
    paths = write_report(cd)
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@campaign_app.command("run", cls=OneScreenCommand, short_help="Run it with the campaign's own objective as the oracle")
def campaign_run(
    directory: Path = DIR_ARGUMENT,
    budget: int = typer.Option(None, "--budget", metavar="N", show_default="the campaign's", help="Total measurements"),
    allow_objective: list[str] = typer.Option(None, "--allow-objective", metavar="CLASS", help=ALLOW_HELP),
) -> None:
    """Run the campaign with its own objective as the oracle (pool look-up, simulator) until a stop rule.

    Options in full: docs/options.md#campaign-run"""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, write_report

    cd = open_campaign_dir(directory, _allowed(allow_objective))
    band_gap = cd.pool is not None

    def show(ev, loss, hit):
        if loss is None:
            said = f"failed: {ev.error}"
        elif band_gap:
            said = f"gap {ev.y:.3f} eV  |gap − target| {loss:.3f} eV"
        else:
            said = f"loss {loss:.6g}"
        typer.echo(f"{ev.point!s:<30} {said}{'  HIT' if hit else ''}")

    cd.campaign.run(budget=budget, on_evaluation=show)
    show_notices(cd.campaign)
    write_report(cd)
    typer.echo(f"stopped: {cd.campaign.stopped_because}")
