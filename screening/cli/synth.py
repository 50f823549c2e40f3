"""`matscreen synth`: silver-nanoparticle flow-synthesis campaigns (AgBONN target spectrum) on the
embedded virtual lab or a real reactor through CSV files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from screening.cli.app import app
from screening.cli.help_screen import ADVANCED, OneScreenCommand, OneScreenGroup
from screening.errors import MatscreenError

if TYPE_CHECKING:  # the synthesis stack loads only when a synth command runs
    from screening.objectives.synthesis.rounds import RoundLog, SynthesisCampaign

synth_app = typer.Typer(
    cls=OneScreenGroup,
    no_args_is_help=True,
    short_help="Flow-synthesis campaigns for a target UV-Vis spectrum",
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


@synth_app.command("run", cls=OneScreenCommand, short_help="Run a synthesis campaign (simulated lab or reactor files)")
def synth_run(
    rounds: int = typer.Option(8, "--rounds", metavar="N", help="Rounds of experiments"),
    batch: int = typer.Option(15, "--batch", metavar="N", help="Conditions per round"),
    lab: str = typer.Option("virtual", "--lab", metavar="NAME", help="virtual (simulated) or csv (reactor files)"),
    method: str = typer.Option("bo+dnn", "--method", metavar="NAME", help="bo+dnn (optimiser + network), bo or random"),
    target: Path = typer.Option(
        None, "--target", metavar="PATH", show_default="published", help="Target spectrum: CSV (nm, absorbance)"
    ),
    out: Path = typer.Option(
        Path("synth-out"), "-o", "--out", metavar="DIR", help="Campaign folder (continued if it exists)"
    ),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed: same seed and data, same conditions"),
    dnn_from: int = typer.Option(
        3, "--dnn-from", metavar="N", rich_help_panel=ADVANCED, help="First round the network proposes in"
    ),
    dnn_batch: int = typer.Option(
        None,
        "--dnn-batch",
        metavar="N",
        rich_help_panel=ADVANCED,
        show_default="--batch",
        help="Conditions from the network a round",
    ),
    box: str = typer.Option(
        "paper", "--box", metavar="NAME", rich_help_panel=ADVANCED, help="Start ranges: paper (narrow) or full"
    ),
    expand: bool = typer.Option(
        True, "--expand/--no-expand", rich_help_panel=ADVANCED, help="Widen a range if the best is at its edge"
    ),
    replicates: int = typer.Option(
        21, "--replicates", metavar="N", rich_help_panel=ADVANCED, help="Droplets per condition (simulated)"
    ),
    objective: str = typer.Option(
        None, "--objective", metavar="CLASS", rich_help_panel=ADVANCED, help="Your objective class instead of --lab"
    ),
    compare_random: bool = typer.Option(
        True,
        "--compare-random/--no-compare-random",
        rich_help_panel=ADVANCED,
        help="Random baseline in the plot",
    ),
    shap: bool = typer.Option(
        True, "--shap/--no-shap", rich_help_panel=ADVANCED, help="Rank the inputs (needs matscreen[shap])"
    ),
    poll: float = typer.Option(
        5.0,
        "--poll",
        min=0.01,
        metavar="S",
        rich_help_panel=ADVANCED,
        help="Seconds between checks for results (csv)",
    ),
) -> None:
    """Run a synthesis campaign over flow rates (Q_AgNO3, Q_PVA, Q_TSC, Q_seed in %, Q_tot in uL/min); write
    the conditions tried, per-round results, plots and input importance.

    Options in full: docs/options.md#synth-run"""
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


@synth_app.command("ask", cls=OneScreenCommand, short_help="Write the next conditions for a real reactor")
def synth_ask(
    directory: Path = typer.Argument(..., metavar="DIR", help="Campaign folder (made by the first ask)"),
    batch: int = typer.Option(15, "--batch", metavar="N", help="Conditions per round (fixed at creation)"),
    dnn: int = typer.Option(0, "--dnn", metavar="N", help="Extra conditions from the neural network"),
    box: str = typer.Option("paper", "--box", metavar="NAME", help="Start ranges: paper (narrow) or full"),
    target: Path = typer.Option(
        None, "--target", metavar="PATH", show_default="published", help="Target spectrum: CSV (nm, absorbance)"
    ),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed: same seed and data, same conditions"),
    out: Path = typer.Option(
        None, "-o", "--out", metavar="PATH", show_default="DIR/ask-RR.csv", help="CSV file to write"
    ),
) -> None:
    """Write the next conditions for a real reactor (condition_id and one column per input); they stay pending
    until told. --batch, --box and --target are fixed by the first ask.

    Options in full: docs/options.md#synth-ask"""
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


@synth_app.command("tell", cls=OneScreenCommand, short_help="Record the reactor's droplet spectra")
def synth_tell(
    directory: Path = typer.Argument(..., metavar="DIR", help="Campaign folder (the one given to synth ask)"),
    results: Path = typer.Argument(..., metavar="RESULTS", help="CSV: condition_id, absorbance at 380 ... 800 nm"),
    target: Path = typer.Option(
        None, "--target", metavar="PATH", help="Not needed; if given, must be the stored target"
    ),
) -> None:
    """Record the reactor's droplet spectra for the pending conditions; droplets without a spectrum are counted
    and left out. Telling the same file again is harmless: conditions already recorded with the same spectra
    are skipped.

    Options in full: docs/options.md#synth-tell"""
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
