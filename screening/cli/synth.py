"""`matscreen synth`: silver-nanoparticle flow-synthesis campaigns (AgBONN target spectrum) on the
embedded virtual lab or a real reactor through CSV files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from screening.cli.app import app
from screening.errors import MatscreenError

if TYPE_CHECKING:  # the synthesis stack loads only when a synth command runs
    from screening.objectives.synthesis.rounds import RoundLog, SynthesisCampaign

synth_app = typer.Typer(
    no_args_is_help=True,
    help=(
        "Find flow-synthesis conditions whose silver-nanoparticle UV-Vis spectrum matches a target spectrum, "
        "on the built-in simulated lab or on a real reactor that exchanges CSV files."
    ),
)
app.add_typer(synth_app, name="synth")


def _input_names(sc: SynthesisCampaign) -> list[str]:
    """The objective's own input names (x0, x1, ... only for a box without names)."""
    from screening.io.lab_files import box_columns

    return box_columns(sc.objective.domain)


def _at_least_one(**counts: int | None) -> None:
    """Refuse a count option below 1 before anything is written.

    Why: a new campaign stores its settings at once, so a batch of 0 would stay with it, and
    0 rounds or 0 droplets would end in empty reports or a crash after files were made.
    """
    for name, value in counts.items():
        if value is not None and value < 1:
            raise MatscreenError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _droplet_note(log: RoundLog) -> str:
    """How many of the round's droplets failed and why, and the conditions left with none usable."""
    failed = sum(log.droplets_failed.values())
    if not failed:
        return ""
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(log.droplets_failed.items()))
    note = f"  {failed} of {failed + log.droplets_ok} droplets failed ({reasons})"
    empty = sum(v is None for v in log.losses)
    if empty:
        note += f"; {empty} condition{'s' if empty > 1 else ''} with no usable droplet, recorded as failed"
    return note


def _synth_round_line(log: RoundLog, names: list[str]) -> str:
    exp = "; ".join(
        f"{e['side']} bound of {e.get('input') or names[e['dim']]} {e['old']:.3g} -> {e['new']:.3g}"
        for e in log.expansions
    )
    stop = "" if not log.stop else f"  dnn stop-check: stable={log.stop['stable']} accurate={log.stop['accurate']}"
    return (
        f"round {log.round:>2} [{log.method}] {len(log.keys)} conditions, best so far {log.best_loss_so_far:.4f}"
        f" ({log.n_conditions_so_far} conditions, {log.seconds:.1f} s){_droplet_note(log)}"
        f"{'  box: ' + exp if exp else ''}{stop}"
    )


def _units(sc: SynthesisCampaign) -> list[str]:
    """The unit after each value (% or uL/min) for the built-in synthesis inputs; none for a user's objective."""
    from screening.objectives.synthesis.objective import INPUT_NAMES, INPUT_UNITS

    names = _input_names(sc)
    return [f" {u}" for u in INPUT_UNITS] if tuple(names) == INPUT_NAMES else [""] * len(names)


@synth_app.command("run")
def synth_run(
    rounds: int = typer.Option(
        8, "--rounds", help="Total rounds of experiments; round 1 spreads conditions evenly over the search range."
    ),
    batch: int = typer.Option(15, "--batch", help="Conditions per round chosen by the optimiser (or at random)."),
    lab: str = typer.Option(
        "virtual",
        "--lab",
        help="virtual: the built-in simulated lab. csv: a real reactor; each round writes DIR/ask-RR.csv "
        "and waits for DIR/results-RR.csv.",
    ),
    method: str = typer.Option(
        "bo+dnn",
        "--method",
        help="bo: Bayesian optimisation. bo+dnn: the same, plus a neural network trained on the measured spectra "
        "that proposes extra conditions from round --dnn-from. random: random conditions (a baseline).",
    ),
    dnn_from: int = typer.Option(
        3, "--dnn-from", help="First round in which the neural network proposes conditions (with --method bo+dnn)."
    ),
    dnn_batch: int = typer.Option(
        None, "--dnn-batch", help="Conditions the neural network proposes per round (default: --batch)."
    ),
    box: str = typer.Option(
        "paper",
        "--box",
        help="Starting search range. paper: the narrower ranges the published study started from "
        "(Q_AgNO3 4-20 %, Q_PVA 10-40 %, Q_TSC 4-20 %, Q_seed 4-20 %, Q_tot 200-1000 uL/min), widened when the "
        "best conditions reach an edge. full: the widest ranges the study used, from the start.",
    ),
    expand: bool = typer.Option(
        True,
        "--expand/--no-expand",
        help="Widen a range (up to the widest allowed) when the best conditions sit at its edge.",
    ),
    replicates: int = typer.Option(
        21, "--replicates", help="Droplets measured per condition (simulated lab); the loss is their median."
    ),
    target: Path = typer.Option(
        None,
        "--target",
        help="Target spectrum file: CSV of wavelength (nm) and absorbance, or JSON. Default: the published target. "
        "Stored with the campaign; a rerun may leave it out, and a different one is refused.",
    ),
    objective: str = typer.Option(
        None,
        "--objective",
        help="Your own objective class as package.module:ClassName, used instead of --lab.",
    ),
    compare_random: bool = typer.Option(
        True,
        "--compare-random/--no-compare-random",
        help="Also run random conditions on the simulated lab, as a baseline in the plot.",
    ),
    shap: bool = typer.Option(
        True,
        "--shap/--no-shap",
        help='Rank the inputs by their influence on the predicted spectrum (SHAP; needs pip install "matscreen\\[shap]").',
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed and data give the same conditions."),
    poll: float = typer.Option(
        5.0, "--poll", min=0.01, help="Seconds between checks for the reactor's results file (with --lab csv)."
    ),
    out: Path = typer.Option(
        Path("synth-out"), "-o", "--out", help="Campaign directory; an existing one is continued where it stopped."
    ),
) -> None:
    """Run a synthesis campaign; write the conditions tried, per-round results, plots and input importance."""
    from screening.objectives.synthesis.rounds import (
        SynthesisCampaign,
        build_objective,
        run_csv_lab,
        write_report,
    )

    _at_least_one(rounds=rounds, batch=batch, dnn_batch=dnn_batch, replicates=replicates)
    obj = build_objective(lab, objective, str(target) if target else None, box, replicates, seed)
    sc = SynthesisCampaign(
        out,
        obj,
        method=method,
        batch=batch,
        seed=seed,
        dnn_from=dnn_from,
        dnn_batch=dnn_batch,
        expand=expand,
        target_source=str(target) if target else None,
    )
    show = lambda log: typer.echo(_synth_round_line(log, _input_names(sc)))  # noqa: E731
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
        rnd_obj = build_objective(lab, None, None, box, replicates, seed)
        rnd_obj.target = sc.objective.target  # the main campaign's (possibly stored) target
        rnd = SynthesisCampaign(
            out / "random-lhs",
            rnd_obj,
            method="random",
            batch=batch,
            seed=seed,
            expand=False,
            target_source=sc.target_source,
        )
        rnd.run(rounds)
        from screening.objectives.synthesis.rounds import method_curves

        extra = {"random": method_curves(rnd)["random"]}
        rnd.close()
    paths = write_report(
        sc, extra_curves=extra, shap=shap, seed=seed, on_notice=lambda msg: typer.echo(f"note: {msg}", err=True)
    )
    best = sc.best()
    if best is not None:
        typer.echo(
            "best condition: "
            + ", ".join(f"{n}={v:.4g}{u}" for n, v, u in zip(_input_names(sc), best[0], _units(sc)))
            + f"  loss {best[2]:.4f}"
        )
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@synth_app.command("ask")
def synth_ask(
    directory: Path = typer.Argument(..., help="Campaign directory (created by the first ask)."),
    batch: int = typer.Option(
        15, "--batch", help="Conditions per round chosen by the optimiser (set when the campaign is created)."
    ),
    dnn: int = typer.Option(
        0, "--dnn", help="Also add this many conditions proposed by a neural network trained on the measured spectra."
    ),
    box: str = typer.Option(
        "paper",
        "--box",
        help="Starting search range when the campaign is created. paper: the published study's starting ranges, "
        "widened when the best conditions reach an edge. full: the widest ranges it used.",
    ),
    target: Path = typer.Option(
        None,
        "--target",
        help="Target spectrum file (CSV of wavelength in nm and absorbance, or JSON) when the campaign is created; "
        "default: the published target. Later asks may leave it out; a different one is refused.",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed and data give the same conditions."),
    out: Path = typer.Option(None, "-o", "--out", help="CSV file to write (default: DIR/ask-RR.csv, RR the round)."),
) -> None:
    """Write the next conditions for a real reactor (condition_id and one column per input); they stay pending
    until told."""
    from screening.objectives.synthesis.rounds import SynthesisCampaign, build_objective

    _at_least_one(batch=batch)
    sc = SynthesisCampaign(
        directory,
        build_objective("csv", None, str(target) if target else None, box, seed=seed),
        method="bo",
        batch=batch,
        seed=seed,
        target_source=str(target) if target else None,
    )
    path = sc.ask_csv(out or directory / f"ask-{len(sc.rounds()) + 1:02d}.csv", dnn=dnn)
    typer.echo(
        f"wrote {path}: run each condition and write one row per droplet: condition_id, 380, 381, ..., 800 "
        "(absorbance; leave a failed droplet's values empty)"
    )


@synth_app.command("tell")
def synth_tell(
    directory: Path = typer.Argument(..., help="Campaign directory (the one given to synth ask)."),
    results: Path = typer.Argument(
        ..., help="Reactor results CSV: condition_id, then absorbance at 380 ... 800 nm, one row per droplet."
    ),
    target: Path = typer.Option(
        None,
        "--target",
        help="Not needed: the campaign uses the target stored at creation. If given, it must be that same spectrum.",
    ),
) -> None:
    """Record the reactor's droplet spectra for the pending conditions; droplets without a spectrum are counted
    and left out. Telling the same file again is harmless: conditions already recorded with the same spectra
    are skipped."""
    from screening.objectives.synthesis.rounds import SynthesisCampaign, build_objective

    sc = SynthesisCampaign(
        directory,
        build_objective("csv", None, str(target) if target else None),
        target_source=str(target) if target else None,
    )
    told = sc.tell_csv(results)
    if told.already_recorded:
        n = len(told.already_recorded)
        nothing = "" if told.round is not None else "; nothing new to record"
        typer.echo(f"{results}: {n} condition{'s' if n > 1 else ''} already recorded with these same spectra{nothing}")
    if told.round is not None:
        typer.echo(_synth_round_line(told.round, _input_names(sc)))
