"""`matscreen campaign`: ask/tell campaigns for a lab or DFT oracle (state in DIR/campaign.sqlite)."""

from __future__ import annotations

from pathlib import Path

import typer

from screening.cli.app import app
from screening.cli.common import ACQ_HELP, default_surrogate, strategy_from_options

campaign_app = typer.Typer(
    no_args_is_help=True, help="Ask/tell campaigns for a lab or DFT oracle (state in DIR/campaign.sqlite)."
)
app.add_typer(campaign_app, name="campaign")


@campaign_app.command("new")
def campaign_new(
    directory: Path = typer.Argument(..., help="Campaign directory to create."),
    pool: Path = typer.Option(
        None, "--pool", help="Featurised pool (Parquet); band_gap may be absent (a lab measures it)."
    ),
    target: float = typer.Option(None, "--target", help="Target band gap (eV), with --pool."),
    tol: float = typer.Option(0.01, "--tol", help="Hit tolerance (eV)."),
    objective: str = typer.Option(
        None, "--objective", help="Instead of a pool: your objective class, package.module:ClassName."
    ),
    known: Path = typer.Option(
        None,
        "--known",
        help="Labelled crystals that are not candidates (featurised, with band_gap): prior knowledge, with --pool.",
    ),
    surrogate: str = typer.Option(
        None, "--surrogate", help="neighbour (default with --pool) or gp (default with --objective)."
    ),
    neighbours: int = typer.Option(
        16, "--neighbours", help="Labelled neighbours per candidate for --surrogate neighbour."
    ),
    model: str = typer.Option("value", "--model"),
    acq: str = typer.Option("window", "--acq", help=ACQ_HELP),
    batch: int = typer.Option(1, "--batch", help="Points per ask (q)."),
    batch_method: str = typer.Option("lp", "--batch-method"),
    beta: float = typer.Option(4.0, "--beta"),
    prior_mean: bool = typer.Option(False, "--prior-mean/--no-prior-mean"),
    n_init: int = typer.Option(5, "--n-init"),
    budget: int = typer.Option(None, "--budget", help="Budget for `campaign run`."),
    seed: int = typer.Option(0, "--seed"),
    pca_components: int = typer.Option(3, "--pca-components"),
) -> None:
    """Create a campaign over a pool (--pool, --target) or a user objective (--objective)."""
    from screening.bo.campaign import StopRules
    from screening.objectives.bandgap.campaign_dir import create_objective_campaign, create_pool_campaign

    surrogate = surrogate or ("gp" if objective else default_surrogate(model, acq))
    strategy = strategy_from_options(
        model, acq, batch_method, beta, prior_mean, n_init, surrogate=surrogate, neighbours=neighbours
    )
    if objective:
        if surrogate != "gp":
            raise typer.BadParameter("--objective campaigns use --surrogate gp")
        create_objective_campaign(directory, objective, strategy, seed, batch, StopRules(budget=budget))
    elif pool is not None and target is not None:
        create_pool_campaign(
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
        )
    else:
        raise typer.BadParameter("give --pool and --target, or --objective")
    typer.echo(f"created {directory}")


@campaign_app.command("ask")
def campaign_ask(
    directory: Path = typer.Argument(...),
    n: int = typer.Option(None, "-n", help="Points to suggest (default: the campaign's batch size)."),
    out: Path = typer.Option(None, "-o", "--out", help="CSV to write (default DIR/ask-<k>.csv)."),
) -> None:
    """Suggest the next batch and write it as CSV; the points stay pending until told."""
    import pandas as pd

    from screening.bo.domain import DiscretePool
    from screening.io.lab_files import write_box_batch
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir

    cd = open_campaign_dir(directory)
    points = cd.campaign.ask(n)
    out = out or directory / f"ask-{len(cd.campaign.store.observations()):04d}.csv"
    if isinstance(cd.campaign.domain, DiscretePool):
        frame = cd.pool.frame.set_index("id").loc[[str(p) for p in points]].reset_index()
        keep = [c for c in ("id", "formula", "pred_band_gap") if c in frame.columns]
        frame[keep].to_csv(out, index=False)
    else:
        write_box_batch(out, cd.campaign.domain, points)
    typer.echo(pd.read_csv(out).to_string(index=False))
    typer.echo(f"wrote {out}")


@campaign_app.command("tell")
def campaign_tell(
    directory: Path = typer.Argument(...),
    results: Path = typer.Argument(
        ..., help="CSV: id + band_gap (pool) or input columns + y (box); optional error column."
    ),
) -> None:
    """Record results; a malformed file, unknown or duplicate point or NaN changes nothing."""
    from screening.bo.domain import DiscretePool
    from screening.io.lab_files import read_box_results, read_pool_results
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, summary

    cd = open_campaign_dir(directory)
    dom = cd.campaign.domain
    res = read_pool_results(results) if isinstance(dom, DiscretePool) else read_box_results(results, dom)
    cd.campaign.tell(res.points, res.ys, res.errors, origin=str(results))
    info = summary(cd)
    typer.echo(f"told {len(res.points)} results; best loss {info['best_loss']}; hit: {info['hit']}")


@campaign_app.command("status")
def campaign_status(directory: Path = typer.Argument(...)) -> None:
    """Counts, best point, pending points and whether a stop rule has fired."""
    import json

    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, summary

    info = summary(open_campaign_dir(directory))
    typer.echo(json.dumps(info, indent=2, default=str))


@campaign_app.command("report")
def campaign_report(directory: Path = typer.Argument(...)) -> None:
    """Write history.csv, summary.json and the plots into the campaign directory."""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, write_report

    paths = write_report(open_campaign_dir(directory))
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@campaign_app.command("run")
def campaign_run(
    directory: Path = typer.Argument(...),
    budget: int = typer.Option(None, "--budget", help="Total search evaluations (default: the campaign's)."),
) -> None:
    """Run the campaign with its own objective as the oracle (pool look-up, simulator) until a stop rule."""
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, write_report

    cd = open_campaign_dir(directory)

    def show(ev, loss, hit):
        typer.echo(
            f"{ev.point!s:<30} loss {loss if loss is not None else 'failed: ' + str(ev.error)}{'  HIT' if hit else ''}"
        )

    cd.campaign.run(budget=budget, on_evaluation=show)
    write_report(cd)
    typer.echo(f"stopped: {cd.campaign.stopped_because}")
