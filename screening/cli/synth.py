"""`matscreen synth`: silver-nanoparticle flow-synthesis campaigns (AgBONN target spectrum) on the
embedded virtual lab or a real reactor through CSV files."""

from __future__ import annotations

from pathlib import Path

import typer

from screening.cli.app import app

synth_app = typer.Typer(no_args_is_help=True, help="Nanoparticle-synthesis campaigns (AgBONN target spectrum).")
app.add_typer(synth_app, name="synth")


def _synth_round_line(log) -> str:
    exp = "; ".join(f"{e['side']} bound of input {e['dim']} -> {e['new']:.3g}" for e in log.expansions)
    stop = "" if not log.stop else f"  dnn stop-check: stable={log.stop['stable']} accurate={log.stop['accurate']}"
    return (
        f"round {log.round:>2} [{log.method}] {len(log.keys)} conditions, best so far {log.best_loss_so_far:.4f}"
        f" ({log.n_conditions_so_far} conditions, {log.seconds:.1f} s){'  box: ' + exp if exp else ''}{stop}"
    )


@synth_app.command("run")
def synth_run(
    rounds: int = typer.Option(8, "--rounds", help="Rounds (the first is a constrained Latin hypercube)."),
    batch: int = typer.Option(15, "--batch", help="Conditions per round chosen by BO (or random LHS)."),
    lab: str = typer.Option(
        "virtual",
        "--lab",
        help="virtual (embedded simulator) or csv (a reactor: DIR/ask-RR.csv -> DIR/results-RR.csv).",
    ),
    method: str = typer.Option(
        "bo+dnn", "--method", help="bo, bo+dnn (spectrum network in parallel from --dnn-from) or random."
    ),
    dnn_from: int = typer.Option(
        3, "--dnn-from", help="First round in which the spectrum network proposes conditions."
    ),
    dnn_batch: int = typer.Option(None, "--dnn-batch", help="Network proposals per round (default: --batch)."),
    box: str = typer.Option("paper", "--box", help="Starting box: paper (Run-1 box, widened at the boundary) or full."),
    expand: bool = typer.Option(
        True, "--expand/--no-expand", help="Boundary expansion when the best conditions hug a face."
    ),
    replicates: int = typer.Option(21, "--replicates", help="Droplets per condition (virtual lab)."),
    target: Path = typer.Option(
        None, "--target", help="Target spectrum CSV (wavelength nm, absorbance) or JSON; default: the paper's."
    ),
    objective: str = typer.Option(
        None, "--objective", help="Your objective class, package.module:ClassName (instead of --lab)."
    ),
    compare_random: bool = typer.Option(
        True, "--compare-random/--no-compare-random", help="Also run random LHS on the virtual lab, for the plot."
    ),
    shap: bool = typer.Option(True, "--shap/--no-shap", help="SHAP importance of the inputs in the report."),
    seed: int = typer.Option(0, "--seed"),
    poll: float = typer.Option(5.0, "--poll", help="Seconds between checks for a results file (--lab csv)."),
    out: Path = typer.Option(Path("synth-out"), "-o", "--out", help="Run directory; an existing one is resumed."),
) -> None:
    """Run a synthesis campaign and write observations, rounds, plots and SHAP importance."""
    from screening.objectives.synthesis.rounds import (
        SynthesisCampaign,
        build_objective,
        run_csv_lab,
        write_report,
    )

    obj = build_objective(lab, objective, str(target) if target else None, box, replicates, seed)
    sc = SynthesisCampaign(
        out, obj, method=method, batch=batch, seed=seed, dnn_from=dnn_from, dnn_batch=dnn_batch, expand=expand
    )
    show = lambda log: typer.echo(_synth_round_line(log))  # noqa: E731
    if lab == "csv" and not objective:
        run_csv_lab(
            sc,
            rounds,
            poll_seconds=poll,
            dnn=(dnn_batch or batch) if method == "bo+dnn" else 0,
            on_round=show,
            on_wait=lambda a, r: typer.echo(f"wrote {a}; waiting for {r} ..."),
        )
    else:
        sc.run(rounds, on_round=show)
    extra = {}
    if compare_random and lab == "virtual" and not objective and method != "random":
        rnd_obj = build_objective(lab, None, str(target) if target else None, box, replicates, seed)
        rnd = SynthesisCampaign(out / "random-lhs", rnd_obj, method="random", batch=batch, seed=seed, expand=False)
        rnd.run(rounds)
        from screening.objectives.synthesis.rounds import method_curves

        extra = {"random": method_curves(rnd)["random"]}
        rnd.close()
    paths = write_report(sc, extra_curves=extra, shap=shap, seed=seed)
    best = sc.best()
    if best is not None:
        names = ("Q_AgNO3 %", "Q_PVA %", "Q_TSC %", "Q_seed %", "Q_tot uL/min")
        typer.echo(
            "best condition: " + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, best[0])) + f"  loss {best[2]:.4f}"
        )
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@synth_app.command("ask")
def synth_ask(
    directory: Path = typer.Argument(..., help="Campaign directory (created on first ask)."),
    batch: int = typer.Option(15, "--batch", help="BO conditions per round (fixed at creation)."),
    dnn: int = typer.Option(0, "--dnn", help="Also add this many spectrum-network proposals."),
    box: str = typer.Option("paper", "--box", help="Starting box at creation: paper or full."),
    target: Path = typer.Option(None, "--target", help="Target spectrum CSV/JSON at creation (default: the paper's)."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(None, "-o", "--out", help="CSV to write (default DIR/ask-RR.csv)."),
) -> None:
    """Write the next conditions for a real reactor (condition_id + 5 inputs); they stay pending."""
    from screening.objectives.synthesis.rounds import SynthesisCampaign, build_objective

    sc = SynthesisCampaign(
        directory,
        build_objective("csv", None, str(target) if target else None, box, seed=seed),
        method="bo",
        batch=batch,
        seed=seed,
    )
    path = sc.ask_csv(out or directory / f"ask-{len(sc.rounds()) + 1:02d}.csv", dnn=dnn)
    typer.echo(
        f"wrote {path}: run each condition and write one row per droplet: condition_id, 380, 381, ..., 800 "
        "(absorbance; leave a failed droplet's values empty)"
    )


@synth_app.command("tell")
def synth_tell(
    directory: Path = typer.Argument(...),
    results: Path = typer.Argument(..., help="CSV: condition_id, 380 ... 800 (one row per droplet)."),
    target: Path = typer.Option(None, "--target", help="The target given at creation, if not the paper's."),
) -> None:
    """Tell the reactor's droplet spectra; failed droplets are counted and excluded."""
    from screening.objectives.synthesis.rounds import SynthesisCampaign, build_objective

    sc = SynthesisCampaign(directory, build_objective("csv", None, str(target) if target else None))
    log = sc.tell_csv(results)
    typer.echo(_synth_round_line(log))
