"""`matscreen search`: a band-gap target search over a featurised pool, the pool as the oracle."""

from __future__ import annotations

import dataclasses
import json
import shutil
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
from screening.cli.help_screen import ADVANCED, OneScreenCommand

DEFAULT_TOL = 0.01  # eV

# The options that define a search's question, by the key its campaign stores them under: a
# re-run into the same -o that changes one of them is refused (resume_differences).
RESUME_OPTION_NAMES = {
    "pool_path": "--pool",
    "target": "--target",
    "tolerance": "--tol",
    "known_path": "--known",
    "label": "--label",
    "known_label": "--known-label",
    "max_formation_energy": "--max-formation-energy",
    "n_components": "--pca-components",
}


@app.command(cls=OneScreenCommand, short_help="Find a crystal near a target band gap in a known pool")
def search(
    pool: Path = typer.Option(..., "--pool", metavar="PATH", help="Candidate crystals: featurize/screen table"),
    target: float = typer.Option(..., "--target", metavar="EV", help="Band gap to find, eV"),
    tol: float | None = typer.Option(
        None, "--tol", metavar="EV", show_default=str(DEFAULT_TOL), help="A hit is within ± this of the target, eV"
    ),
    budget: int = typer.Option(50, "--budget", min=1, metavar="N", help="Measurements after the prior data"),
    out: Path = typer.Option(
        Path("search-out"), "-o", "--out", metavar="DIR", help="Run folder (resumed if it exists)"
    ),
    label: str | None = typer.Option(
        None, "--label", metavar="COLUMN", show_default="band_gap", help="Pool column of known gaps, eV"
    ),
    known: Path = typer.Option(
        None, "--known", metavar="PATH", help="Measured crystals to learn from (not candidates)"
    ),
    prior: Path = typer.Option(None, "--prior", metavar="PATH", help="CSV of gaps already measured: id[, band_gap]"),
    n_prior: int = typer.Option(0, "--n-prior", min=0, metavar="N", help="Start with N random misses as prior data"),
    until: str | None = typer.Option(
        None, "--until", metavar="hit|budget", show_default="hit", help="Stop at the first hit, or use the budget"
    ),
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
    batch: int = typer.Option(
        1, "--batch", min=1, metavar="N", rich_help_panel=ADVANCED, help="Crystals suggested per round"
    ),
    surrogate: str = typer.Option(
        None,
        "--surrogate",
        metavar="NAME",
        rich_help_panel=ADVANCED,
        show_default="neighbour",
        help="Predictor: neighbour, gp",
    ),
    model: str = MODEL_OPTION,
    acq: str = ACQ_OPTION,
    batch_method: str = BATCH_METHOD_OPTION,
    beta: float = BETA_OPTION,
    n_init: int = N_INIT_OPTION,
    pca_components: int | None = typer.Option(
        None, "--pca-components", min=1, metavar="N", rich_help_panel=ADVANCED, show_default="3", help=PCA_HELP
    ),
    prior_mean: bool = PRIOR_MEAN_OPTION,
    neighbours: int = NEIGHBOURS_OPTION,
    neighbour_components: int = NEIGHBOUR_COMPONENTS_OPTION,
    min_labelled: int = MIN_LABELLED_OPTION,
    label_match: bool = LABEL_MATCH_OPTION,
    network_std: bool = NETWORK_STD_OPTION,
    tie_break: float | None = TIE_BREAK_OPTION,
) -> None:
    """Find a crystal with a band gap within --tol of --target in a pool whose gaps are known, each look-up
    counting as one measurement.

    Options in full: docs/options.md#search"""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from screening.bo.campaign import StopRules
    from screening.bo.store import CampaignStore
    from screening.errors import MatscreenError
    from screening.objectives.bandgap.campaign_dir import (
        STORE_NAME,
        create_pool_campaign,
        open_campaign_dir,
        prior_not_told,
        resume_differences,
        summary,
        write_report,
    )

    console = Console()
    if until not in (None, "hit", "budget"):
        raise typer.BadParameter("--until must be 'hit' or 'budget'")
    surrogate = surrogate or default_surrogate(model, acq)
    if prior_mean is None:
        prior_mean = surrogate == "gp" and pool_has_column(pool, "pred_band_gap")
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
    if (out / STORE_NAME).exists():
        with CampaignStore.open(out / STORE_NAME) as store:
            stored = store.config
        # What the command gave explicitly must match the campaign; what it left out is the campaign's.
        given = {"pool_path": pool, "target": target}
        optional = {
            "tolerance": tol,
            "known_path": known,
            "label": label,
            "known_label": known_label,
            "max_formation_energy": max_formation_energy,
            "n_components": pca_components,
        }
        given.update({k: v for k, v in optional.items() if v is not None})
        question = resume_differences(stored, given, RESUME_OPTION_NAMES)
        if question:
            raise MatscreenError(
                f"{out} holds another search: "
                + "; ".join(f"{name} {had!r} there, {asked!r} here" for name, had, asked in question)
                + ". Run the same command to resume it, or name another -o for a new search."
            )
        how = resume_differences(
            stored,
            {"strategy": strategy.to_dict(), "seed": seed, "batch_size": batch},
            {"strategy": "the strategy options", "seed": "--seed", "batch_size": "--batch"},
        )
        cd = open_campaign_dir(out)
        dropped = prior_not_told(cd, prior, n_prior)
        if dropped:
            raise MatscreenError(f"{out}: {dropped}")
        if until is not None and (until == "hit") != cd.campaign.stop.stop_on_hit:
            # a stopping rule, not part of the question: the command's applies to this run
            cd.campaign.stop = dataclasses.replace(cd.campaign.stop, stop_on_hit=until == "hit")
            console.print(
                f"--until {until}: this run " + ("stops at a hit" if until == "hit" else "uses the whole budget")
            )
        console.print(f"resuming the campaign in {out} ({len(cd.campaign.store.observations())} observations so far)")
        if how:
            console.print(
                "[yellow]note:[/] it goes on with its own strategy, seed and batch size, not this command's ("
                + ", ".join(name for name, _, _ in how)
                + " differ)"
            )
    else:
        if out.is_file() or (out.is_dir() and any(out.iterdir())):
            raise MatscreenError(
                f"{out} is {'a file' if out.is_file() else 'a folder with other files'}, not a search run; "
                "-o names a new or empty folder for a new search (an existing run is resumed)"
            )
        tol = DEFAULT_TOL if tol is None else tol
        label = label or "band_gap"
        pca_components = 3 if pca_components is None else pca_components
        fresh = not out.exists()
        try:
            cd = create_pool_campaign(
                out,
                pool,
                target,
                tol,
                strategy,
                seed,
                batch,
                StopRules(budget=budget, stop_on_hit=until != "budget"),
                pca_components,
                known_path=known,
                known_label=known_label,
                max_formation_energy=max_formation_energy,
                label=label,
                strict=strict,
            )
            warn_left_out(cd)
            _start_search(cd, pool, known, pca_components, prior, n_prior, seed, console)
        except BaseException:
            # Nothing half-started stays behind: a run directory without its prior data would be
            # resumed by the same command, fixed, without ever reading them.
            if fresh:
                shutil.rmtree(out, ignore_errors=True)
            else:
                _empty_folder(out)
            raise
    info = summary(cd)
    if info.get("pool_hits_after_prior") == 0:
        console.print(
            f"no crystal in the pool has a {label or cd.campaign.store.config['extra'].get('label', 'band_gap')} "
            "within the window: the search can only report the closest"
        )
    elif "random_search_expected_evaluations" in info:
        console.print(
            f"{info['pool_hits_after_prior']} hits left in the pool; random search needs "
            f"{info['random_search_expected_evaluations']:.1f} evaluations on average"
        )
    names = (
        dict(zip(cd.pool.frame["id"].astype(str), cd.pool.frame.get("formula", cd.pool.frame["id"])))
        if cd.pool is not None
        else {}
    )
    done = cd.campaign.history().n_search
    width = min(max((len(i) for i in names), default=14), 24)
    with Progress(
        TextColumn("[bold]search"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=budget, completed=done)
        best = [info["best_loss"] if info["best_loss"] is not None else float("inf")]

        def show(ev, loss, hit):
            progress.advance(task)
            n = int(progress.tasks[0].completed)
            if loss is None:
                progress.console.print(f"{n:4d}  {ev.point:<{width}} failed: {ev.error}")
                return
            best[0] = min(best[0], loss)
            mark = "  [bold green]HIT[/]" if hit else ""
            progress.console.print(
                f"{n:4d}  {ev.point:<{width}} {str(names.get(ev.point, '')):<10} {ev.y:6.3f} eV"
                f"  |Δ| {loss:.3f}  best {best[0]:.3f}{mark}",
                no_wrap=True,
            )
            progress.update(task, description=f"best |Δ| {best[0]:.3f} eV")

        cd.campaign.run(budget=budget, on_evaluation=show)
        show_notices(cd.campaign)
    paths = write_report(cd)
    info = json.loads(paths["summary"].read_text())  # what the report just wrote, learned map included
    first = info["evaluations_to_first_hit"]
    hits = info["hits"]
    if first:
        outcome = f"first hit after {first} evaluations; {len(hits)} hit(s): {', '.join(hits)}"
    elif info["prior_hits"]:  # the stop rule counts them: say so rather than "no hit"
        outcome = f"already in the window before the search: {', '.join(map(str, info['prior_hits']))}"
    else:
        tol_now = cd.campaign.store.config["extra"].get("tolerance")
        best_id = info["best_point"]
        formula = names.get(best_id, "") if best_id is not None else ""
        closest = (
            f"closest {best_id}{f' ({formula})' if formula and formula != best_id else ''} at "
            f"{info['best_y']:.3f} eV (|Δ| {info['best_loss']:.3f} eV)"
            if best_id is not None
            else "nothing measured"
        )
        outcome = f"no crystal within ±{tol_now:g} eV in {info['search_evaluations']} measurements; {closest}"
    console.print(f"stopped: {cd.campaign.stopped_because}; {outcome}")
    if info.get("learned_map"):
        console.print(f"learned map: {info['learned_map']['text']}")
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))


def _start_search(
    cd, pool: Path, known: Path | None, pca_components: int, prior: Path | None, n_prior: int, seed: int, console
) -> None:
    """Say what a new search run holds (pool, known data) and tell it the prior data."""
    from screening.bo.domain import DiscretePool
    from screening.objectives.bandgap.campaign_dir import add_prior_data

    dom, loaded = cd.campaign.domain, cd.pool
    assert isinstance(dom, DiscretePool) and loaded is not None, "create_pool_campaign builds a pool campaign"
    if known is not None:
        console.print(f"known data {known}: {len(dom.known)} labelled crystals")
    ratio = ", ".join(f"{v:.2f}" for v in loaded.reducer.explained_variance_ratio_)
    console.print(f"pool {pool}: {len(loaded.frame)} crystals, PCA-{pca_components} keeps [{ratio}] of the variance")
    told = add_prior_data(cd, prior, n_prior, seed)
    if told:
        console.print(f"told {told} prior observations")


def _empty_folder(folder: Path) -> None:
    """Remove what a failed start wrote into ``folder``, which was empty before it."""
    for entry in folder.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
