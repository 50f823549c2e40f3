"""The ``matscreen`` command line: a thin shell over the library.

Every command is one library call plus printing; logic lives in ``screening``.
"""
from __future__ import annotations

from pathlib import Path

import typer

# No local variables in tracebacks: they could print an API key (fetch-mp) or a user's data.
app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False, help="Graph-network materials screening."
)


def _pool_has_column(pool: Path, column: str) -> bool:
    import pyarrow.parquet as pq

    try:
        return column in pq.read_schema(pool).names
    except Exception:  # unreadable pool: the search reports it properly
        return False


def _fail(exc: Exception) -> None:
    """Print a library error (which names the file / record and reason) and exit 1."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


# --- featurize / reduce (issue 2) ------------------------------------------------------------


@app.command()
def featurize(
    source: Path = typer.Argument(..., help="Folder of CIFs (optional id_prop.csv), CSV/CSV.GZ with a 'cif' column, or JSON of structures."),
    output: Path = typer.Option(..., "-o", "--output", help="Parquet file to write."),
    model: str = typer.Option(None, "--model", help="Model name in pretrained/ or path (.safetensors, or original .pth.tar). Default: cgcnn_bandgap_128."),
    atom_init: Path = typer.Option(None, "--atom-init", help="atom_init.json for an original CGCNN checkpoint."),
    radius: float = typer.Option(None, "--radius", help="Neighbour radius in Å (must match the model; default: the model's)."),
    max_nbr: int = typer.Option(None, "--max-nbr", help="Neighbours per atom (default: the model's)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Crystals per forward batch."),
    workers: int = typer.Option(1, "--workers", help="Parsing/graph worker processes (0 = in-process)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Embedding cache, keyed by structure content and model (default: $XDG_CACHE_HOME/matscreen or ~/.cache/matscreen)."),
    no_cache: bool = typer.Option(False, "--no-cache"),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the forward: ~3x faster after ~30 s of compilation; for large sources."),
) -> None:
    """Embed every structure of SOURCE with a CGCNN; failed records go to an error report."""
    from screening.errors import MatscreenError
    from screening.featurize.featurizer import default_cache_dir, featurize_source, load_featurizer_model

    try:
        net = load_featurizer_model(model, atom_init)
        _apply_graph_settings(net, radius, max_nbr)
        summary = featurize_source(source, output, net, batch_size=batch_size, workers=workers,
                                   cache_dir=None if no_cache else (cache_dir or default_cache_dir()), compile=compile_model)
    except MatscreenError as exc:
        _fail(exc)
    typer.echo(
        f"wrote {summary['rows']} rows to {summary['output']} "
        f"({summary['cache_hits']} from cache); {summary['errors']} errors in {summary['errors_path']}"
    )


def _apply_graph_settings(net, radius: float | None, max_nbr: int | None) -> None:
    """Graph settings must match what the model was trained on (the Gaussian count fixes radius)."""
    from screening.errors import ModelLoadError

    cfg = net.config
    if radius is not None and abs(radius - cfg.radius) > 1e-9:
        raise typer.BadParameter(
            f"this model was trained with radius {cfg.radius} Å ({cfg.nbr_fea_len} Gaussians); radius {radius} would not match its weights"
        ) from ModelLoadError("radius mismatch")
    if max_nbr is not None:
        cfg.max_num_nbr = max_nbr


@app.command()
def reduce(
    embeddings: Path = typer.Argument(..., help="Parquet written by `matscreen featurize`."),
    output: Path = typer.Option(..., "-o", "--output", help="Parquet with id, formula, pc_1 … pc_k and the other columns."),
    n_components: int = typer.Option(3, "--n-components", "-k"),
    save_pca: Path = typer.Option(None, "--save-pca", help="Where to save the fitted PCA (JSON); default <output>.pca.json."),
) -> None:
    """Project embeddings to principal components and save the fitted PCA with the run."""
    import pandas as pd

    from screening.reduce import PCAReducer, embedding_columns

    frame = pd.read_parquet(embeddings)
    cols = embedding_columns(frame.columns)
    reducer = PCAReducer(n_components=n_components).fit(frame[cols].to_numpy())
    pcs = reducer.transform(frame[cols].to_numpy())
    out = frame.drop(columns=cols)
    for k in range(n_components):
        out[f"pc_{k + 1}"] = pcs[:, k]
    out.to_parquet(output, index=False)
    pca_path = save_pca or output.with_suffix(".pca.json")
    reducer.save(pca_path)
    ratios = ", ".join(f"{r:.1%}" for r in reducer.explained_variance_ratio_)
    typer.echo(f"PCA {len(cols)} -> {n_components}: explained variance {ratios} (total {reducer.explained_variance_ratio_.sum():.1%}); saved {pca_path}")


# --- search / campaign (issue 3) -------------------------------------------------------------
# Band-gap target search over a featurised pool, and ask/tell campaigns for a lab or DFT oracle.
# Logic lives in screening.objectives.bandgap.campaign_dir / screening.bo; these commands parse options and print.

_ACQ_HELP = "Acquisition: with --model value: window | folded-ei | thompson; with --model loss: logei | ei | ucb | pi | thompson."


def _strategy(model: str, acq: str, batch_method: str, beta: float, prior_mean: bool, n_init: int, fixed_prior_slope: bool = False,
              surrogate: str = "gp", neighbours: int = 16):
    from screening.bo.strategy import Strategy

    try:
        return Strategy(model=model, acquisition=acq, batch=batch_method, beta=beta, use_prior=prior_mean, n_init=n_init,
                        fixed_prior_slope=fixed_prior_slope, surrogate=surrogate, n_neighbours=neighbours)
    except Exception as exc:  # StrategyError: show it as a usage error
        raise typer.BadParameter(str(exc)) from exc


def _default_surrogate(model: str, acq: str) -> str:
    """The measured default (neighbour GP) wherever it applies: it models the value itself."""
    return "neighbour" if model == "value" and acq in ("window", "thompson") else "gp"


@app.command()
def search(
    pool: Path = typer.Option(..., "--pool", help="Featurised pool (Parquet: id, formula, emb_*, pred_band_gap, band_gap)."),
    target: float = typer.Option(..., "--target", help="Target band gap (eV)."),
    tol: float = typer.Option(0.01, "--tol", help="Hit tolerance (eV)."),
    known: Path = typer.Option(None, "--known", help="Labelled crystals that are not candidates (output of `matscreen featurize` with a band_gap column, Parquet or CSV): prior knowledge for the search."),
    surrogate: str = typer.Option(None, "--surrogate", help="neighbour (default with --model value and --acq window or thompson): the network's prediction corrected by a local GP over the nearest labelled crystals (known data and results so far); gp: one GP over PCA coordinates (the original pipeline; default for the other --model/--acq choices)."),
    neighbours: int = typer.Option(16, "--neighbours", help="Labelled neighbours per candidate for --surrogate neighbour."),
    until: str = typer.Option("hit", "--until", help="hit: stop at the first crystal in the window; budget: use the whole budget and report every hit."),
    prior: Path = typer.Option(None, "--prior", help="CSV of prior data: id [, band_gap]."),
    n_prior: int = typer.Option(0, "--n-prior", help="Random non-hit crystals told as prior data (ignored with --prior)."),
    budget: int = typer.Option(50, "--budget", help="Evaluations after the prior data."),
    model: str = typer.Option("value", "--model", help="With --surrogate gp: what the GP models, value (the gap) or loss (|gap - target|, as the original pipeline did)."),
    acq: str = typer.Option("window", "--acq", help=_ACQ_HELP),
    batch: int = typer.Option(1, "--batch", help="Points per round (q)."),
    batch_method: str = typer.Option("lp", "--batch-method", help="lp (local penalisation) or qlogei."),
    beta: float = typer.Option(4.0, "--beta", help="UCB exploration weight."),
    prior_mean: bool = typer.Option(None, "--prior-mean/--no-prior-mean", help="Use the CGCNN's pred_band_gap as the GP prior mean (c + b*pred, fitted). Default: on when the pool has pred_band_gap."),
    fixed_prior_slope: bool = typer.Option(False, "--fixed-prior-slope", help="With --prior-mean: keep b = 1 (fit only the offset c)."),
    pred_feature: bool = typer.Option(False, "--pred-feature", help="Give the GP the CGCNN's pred_band_gap as one more input."),
    n_init: int = typer.Option(5, "--n-init", help="Random picks before the GP takes over (when prior data are fewer)."),
    seed: int = typer.Option(0, "--seed"),
    pca_components: int = typer.Option(3, "--pca-components", help="PCA dimensions of the embeddings the GP sees."),
    out: Path = typer.Option(Path("search-out"), "-o", "--out", help="Run directory (campaign.sqlite, pca.json, history.csv, plots). An existing one is resumed."),
) -> None:
    """Find a crystal with band gap TARGET ± TOL in the pool; the pool's known gaps are the oracle."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from screening.bo.campaign import StopRules
    from screening.errors import MatscreenError
    from screening.objectives.bandgap.campaign_dir import STORE_NAME, add_prior_data, create_pool_campaign, open_campaign_dir, summary, write_report

    console = Console()
    if until not in ("hit", "budget"):
        raise typer.BadParameter("--until must be 'hit' or 'budget'")
    surrogate = surrogate or _default_surrogate(model, acq)
    if prior_mean is None:
        prior_mean = surrogate == "gp" and _pool_has_column(pool, "pred_band_gap")
    strategy = _strategy(model, acq, batch_method, beta, prior_mean, n_init, fixed_prior_slope, surrogate, neighbours)
    try:
        if (out / STORE_NAME).exists():
            cd = open_campaign_dir(out)
            console.print(f"resuming the campaign in {out} ({len(cd.campaign.store.observations())} observations so far)")
        else:
            cd = create_pool_campaign(out, pool, target, tol, strategy, seed, batch,
                                      StopRules(budget=budget, stop_on_hit=until == "hit"), pca_components,
                                      pred_as_feature=pred_feature, known_path=known)
            if known is not None:
                console.print(f"known data {known}: {len(cd.campaign.domain.known)} labelled crystals")
            ratio = ", ".join(f"{v:.2f}" for v in cd.pool.reducer.explained_variance_ratio_)
            console.print(f"pool {pool}: {len(cd.pool.frame)} crystals, PCA-{pca_components} keeps [{ratio}] of the variance")
            told = add_prior_data(cd, prior, n_prior, seed)
            if told:
                console.print(f"told {told} prior observations")
        info = summary(cd)
        if "random_search_expected_evaluations" in info:
            console.print(f"{info['pool_hits_after_prior']} hits left in the pool; random search needs "
                          f"{info['random_search_expected_evaluations']:.1f} evaluations on average")
        names = dict(zip(cd.pool.frame["id"].astype(str), cd.pool.frame.get("formula", cd.pool.frame["id"]))) if cd.pool is not None else {}
        done = cd.campaign.history().n_search
        width = min(max((len(i) for i in names), default=14), 24)
        with Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                      console=console, transient=True) as progress:
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
                progress.console.print(f"{n:4d}  {ev.point:<{width}} {str(names.get(ev.point, '')):<14} gap {ev.y:7.3f} eV"
                                       f"  |Δ| {loss:.3f}  best {best[0]:.3f}{mark}")
                progress.update(task, description=f"best |Δ| {best[0]:.3f} eV")

            cd.campaign.run(budget=budget, on_evaluation=show)
        paths = write_report(cd)
    except MatscreenError as exc:
        _fail(exc)
    info = summary(cd)
    first = info["evaluations_to_first_hit"]
    hits = info["hits"]
    console.print(f"stopped: {cd.campaign.stopped_because}; "
                  + (f"first hit after {first} evaluations; {len(hits)} hit(s): {', '.join(hits)}" if first
                     else f"best |Δ| {info['best_loss']:.4f} eV, no hit"))
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))


campaign_app = typer.Typer(no_args_is_help=True, help="Ask/tell campaigns for a lab or DFT oracle (state in DIR/campaign.sqlite).")
app.add_typer(campaign_app, name="campaign")


@campaign_app.command("new")
def campaign_new(
    directory: Path = typer.Argument(..., help="Campaign directory to create."),
    pool: Path = typer.Option(None, "--pool", help="Featurised pool (Parquet); band_gap may be absent (a lab measures it)."),
    target: float = typer.Option(None, "--target", help="Target band gap (eV), with --pool."),
    tol: float = typer.Option(0.01, "--tol", help="Hit tolerance (eV)."),
    objective: str = typer.Option(None, "--objective", help="Instead of a pool: your objective class, package.module:ClassName."),
    known: Path = typer.Option(None, "--known", help="Labelled crystals that are not candidates (featurised, with band_gap): prior knowledge, with --pool."),
    surrogate: str = typer.Option(None, "--surrogate", help="neighbour (default with --pool) or gp (default with --objective)."),
    neighbours: int = typer.Option(16, "--neighbours", help="Labelled neighbours per candidate for --surrogate neighbour."),
    model: str = typer.Option("value", "--model"),
    acq: str = typer.Option("window", "--acq", help=_ACQ_HELP),
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
    from screening.errors import MatscreenError
    from screening.objectives.bandgap.campaign_dir import create_objective_campaign, create_pool_campaign

    surrogate = surrogate or ("gp" if objective else _default_surrogate(model, acq))
    strategy = _strategy(model, acq, batch_method, beta, prior_mean, n_init, surrogate=surrogate, neighbours=neighbours)
    try:
        if objective:
            if surrogate != "gp":
                raise typer.BadParameter("--objective campaigns use --surrogate gp")
            create_objective_campaign(directory, objective, strategy, seed, batch, StopRules(budget=budget))
        elif pool is not None and target is not None:
            create_pool_campaign(directory, pool, target, tol, strategy, seed, batch, StopRules(budget=budget),
                                 pca_components, require_band_gap=False, known_path=known)
        else:
            raise typer.BadParameter("give --pool and --target, or --objective")
    except MatscreenError as exc:
        _fail(exc)
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
    from screening.errors import MatscreenError
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir

    try:
        cd = open_campaign_dir(directory)
        points = cd.campaign.ask(n)
        out = out or directory / f"ask-{len(cd.campaign.store.observations()):04d}.csv"
        if isinstance(cd.campaign.domain, DiscretePool):
            frame = cd.pool.frame.set_index("id").loc[[str(p) for p in points]].reset_index()
            keep = [c for c in ("id", "formula", "pred_band_gap") if c in frame.columns]
            frame[keep].to_csv(out, index=False)
        else:
            write_box_batch(out, cd.campaign.domain, points)
    except MatscreenError as exc:
        _fail(exc)
    typer.echo(pd.read_csv(out).to_string(index=False))
    typer.echo(f"wrote {out}")


@campaign_app.command("tell")
def campaign_tell(
    directory: Path = typer.Argument(...),
    results: Path = typer.Argument(..., help="CSV: id + band_gap (pool) or input columns + y (box); optional error column."),
) -> None:
    """Record results; a malformed file, unknown or duplicate point or NaN changes nothing."""
    from screening.bo.domain import DiscretePool
    from screening.io.lab_files import read_box_results, read_pool_results
    from screening.errors import MatscreenError
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, summary

    try:
        cd = open_campaign_dir(directory)
        dom = cd.campaign.domain
        res = read_pool_results(results) if isinstance(dom, DiscretePool) else read_box_results(results, dom)
        cd.campaign.tell(res.points, res.ys, res.errors, origin=str(results))
        info = summary(cd)
    except MatscreenError as exc:
        _fail(exc)
    typer.echo(f"told {len(res.points)} results; best loss {info['best_loss']}; hit: {info['hit']}")


@campaign_app.command("status")
def campaign_status(directory: Path = typer.Argument(...)) -> None:
    """Counts, best point, pending points and whether a stop rule has fired."""
    import json

    from screening.errors import MatscreenError
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, summary

    try:
        info = summary(open_campaign_dir(directory))
    except MatscreenError as exc:
        _fail(exc)
    typer.echo(json.dumps(info, indent=2, default=str))


@campaign_app.command("report")
def campaign_report(directory: Path = typer.Argument(...)) -> None:
    """Write history.csv, summary.json and the plots into the campaign directory."""
    from screening.errors import MatscreenError
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, write_report

    try:
        paths = write_report(open_campaign_dir(directory))
    except MatscreenError as exc:
        _fail(exc)
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@campaign_app.command("run")
def campaign_run(
    directory: Path = typer.Argument(...),
    budget: int = typer.Option(None, "--budget", help="Total search evaluations (default: the campaign's)."),
) -> None:
    """Run the campaign with its own objective as the oracle (pool look-up, simulator) until a stop rule."""
    from screening.errors import MatscreenError
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir, write_report

    try:
        cd = open_campaign_dir(directory)

        def show(ev, loss, hit):
            typer.echo(f"{ev.point!s:<30} loss {loss if loss is not None else 'failed: ' + str(ev.error)}{'  HIT' if hit else ''}")

        cd.campaign.run(budget=budget, on_evaluation=show)
        write_report(cd)
    except MatscreenError as exc:
        _fail(exc)
    typer.echo(f"stopped: {cd.campaign.stopped_because}")

# --- end search / campaign (issue 3) ---------------------------------------------------------



# --- synth (issue 4) -------------------------------------------------------------------------
# Silver-nanoparticle flow synthesis (AgBONN): BO, BO + spectrum network, random LHS, on the
# embedded virtual lab or a real reactor through CSV files. Logic: screening.objectives.synthesis.rounds.

synth_app = typer.Typer(no_args_is_help=True, help="Nanoparticle-synthesis campaigns (AgBONN target spectrum).")
app.add_typer(synth_app, name="synth")


def _synth_round_line(log) -> str:
    exp = "; ".join(f"{e['side']} bound of input {e['dim']} -> {e['new']:.3g}" for e in log.expansions)
    stop = "" if not log.stop else f"  dnn stop-check: stable={log.stop['stable']} accurate={log.stop['accurate']}"
    return (f"round {log.round:>2} [{log.method}] {len(log.keys)} conditions, best so far {log.best_loss_so_far:.4f}"
            f" ({log.n_conditions_so_far} conditions, {log.seconds:.1f} s){'  box: ' + exp if exp else ''}{stop}")


@synth_app.command("run")
def synth_run(
    rounds: int = typer.Option(8, "--rounds", help="Rounds (the first is a constrained Latin hypercube)."),
    batch: int = typer.Option(15, "--batch", help="Conditions per round chosen by BO (or random LHS)."),
    lab: str = typer.Option("virtual", "--lab", help="virtual (embedded simulator) or csv (a reactor: DIR/ask-RR.csv -> DIR/results-RR.csv)."),
    method: str = typer.Option("bo+dnn", "--method", help="bo, bo+dnn (spectrum network in parallel from --dnn-from) or random."),
    dnn_from: int = typer.Option(3, "--dnn-from", help="First round in which the spectrum network proposes conditions."),
    dnn_batch: int = typer.Option(None, "--dnn-batch", help="Network proposals per round (default: --batch)."),
    box: str = typer.Option("paper", "--box", help="Starting box: paper (Run-1 box, widened at the boundary) or full."),
    expand: bool = typer.Option(True, "--expand/--no-expand", help="Boundary expansion when the best conditions hug a face."),
    replicates: int = typer.Option(21, "--replicates", help="Droplets per condition (virtual lab)."),
    target: Path = typer.Option(None, "--target", help="Target spectrum CSV (wavelength nm, absorbance) or JSON; default: the paper's."),
    objective: str = typer.Option(None, "--objective", help="Your objective class, package.module:ClassName (instead of --lab)."),
    compare_random: bool = typer.Option(True, "--compare-random/--no-compare-random", help="Also run random LHS on the virtual lab, for the plot."),
    shap: bool = typer.Option(True, "--shap/--no-shap", help="SHAP importance of the inputs in the report."),
    seed: int = typer.Option(0, "--seed"),
    poll: float = typer.Option(5.0, "--poll", help="Seconds between checks for a results file (--lab csv)."),
    out: Path = typer.Option(Path("synth-out"), "-o", "--out", help="Run directory; an existing one is resumed."),
) -> None:
    """Run a synthesis campaign and write observations, rounds, plots and SHAP importance."""
    from screening.errors import MatscreenError
    from screening.objectives.synthesis.rounds import (
        SynthesisCampaign, build_objective, run_csv_lab, write_report,
    )

    try:
        obj = build_objective(lab, objective, str(target) if target else None, box, replicates, seed)
        sc = SynthesisCampaign(out, obj, method=method, batch=batch, seed=seed, dnn_from=dnn_from,
                               dnn_batch=dnn_batch, expand=expand)
        show = lambda log: typer.echo(_synth_round_line(log))  # noqa: E731
        if lab == "csv" and not objective:
            run_csv_lab(sc, rounds, poll_seconds=poll, dnn=(dnn_batch or batch) if method == "bo+dnn" else 0, on_round=show,
                        on_wait=lambda a, r: typer.echo(f"wrote {a}; waiting for {r} ..."))
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
    except MatscreenError as exc:
        _fail(exc)
    if best is not None:
        names = ("Q_AgNO3 %", "Q_PVA %", "Q_TSC %", "Q_seed %", "Q_tot uL/min")
        typer.echo("best condition: " + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, best[0])) + f"  loss {best[2]:.4f}")
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
    from screening.errors import MatscreenError
    from screening.objectives.synthesis.rounds import SynthesisCampaign, build_objective

    try:
        sc = SynthesisCampaign(directory, build_objective("csv", None, str(target) if target else None, box, seed=seed),
                               method="bo", batch=batch, seed=seed)
        path = sc.ask_csv(out or directory / f"ask-{len(sc.rounds()) + 1:02d}.csv", dnn=dnn)
    except MatscreenError as exc:
        _fail(exc)
    typer.echo(f"wrote {path}: run each condition and write one row per droplet: condition_id, 380, 381, ..., 800 "
               "(absorbance; leave a failed droplet's values empty)")


@synth_app.command("tell")
def synth_tell(
    directory: Path = typer.Argument(...),
    results: Path = typer.Argument(..., help="CSV: condition_id, 380 ... 800 (one row per droplet)."),
    target: Path = typer.Option(None, "--target", help="The target given at creation, if not the paper's."),
) -> None:
    """Tell the reactor's droplet spectra; failed droplets are counted and excluded."""
    from screening.errors import MatscreenError
    from screening.objectives.synthesis.rounds import SynthesisCampaign, build_objective

    try:
        sc = SynthesisCampaign(directory, build_objective("csv", None, str(target) if target else None))
        log = sc.tell_csv(results)
    except MatscreenError as exc:
        _fail(exc)
    typer.echo(_synth_round_line(log))

# --- end synth (issue 4) ---------------------------------------------------------------------


# --- fetch-mp / screen (issue 5) -------------------------------------------------------------
# Materials Project download into a local database folder, and chunked, resumable screening of a
# whole database on local processes or Ray. Logic lives in screening.io.materials_project and
# screening.screen. fetch-mp catches every exception itself: the API key must never reach a
# traceback (typer's pretty tracebacks print local variables).


@app.command("fetch-mp")
def fetch_mp(
    output: Path = typer.Option(..., "-o", "--output", help="Database folder to write; re-run the same command to resume."),
    band_gap: tuple[float, float] = typer.Option(None, "--band-gap", help="Band-gap window LO HI (eV)."),
    elements: list[str] = typer.Option(None, "--elements", help="Elements every material must contain (Si,O or repeat the option)."),
    max_sites: int = typer.Option(None, "--max-sites", help="Largest cell to download (sites)."),
    fields: list[str] = typer.Option(None, "--field", help="Summary fields to store (repeatable); material_id, formula, structure and band_gap always are."),
    api_key: str = typer.Option(None, "--api-key", help="Materials Project API key (default: $MP_API_KEY). Never stored or printed.", show_default=False),
    batch_size: int = typer.Option(1000, "--batch-size", help="Materials per request and per Parquet part."),
    max_retries: int = typer.Option(5, "--max-retries", help="Retries (exponential backoff) on rate limits and network errors."),
) -> None:
    """Download structures and properties from the Materials Project into a local database folder."""
    from screening.io.materials_project import MPClientFactory, RetryPolicy, fetch_materials_project, redact, resolve_api_key

    import os

    secrets: list[str] = [api_key or "", os.environ.get("MP_API_KEY", "")]
    try:
        factory = MPClientFactory(resolve_api_key(api_key))
        els = [e for item in (elements or []) for e in item.replace(",", " ").split()]
        summary = fetch_materials_project(
            factory, output, band_gap=band_gap, elements=els or None, max_sites=max_sites, fields=fields or None,
            batch_size=batch_size, retry=RetryPolicy(max_retries=max_retries),
        )
    except Exception as exc:  # noqa: BLE001 - see the section comment: no traceback may show the key
        message = redact(str(exc), secrets)
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"{output}: {summary.rows} materials of {summary.matched} matched ({summary.batches_fetched} batches downloaded, "
        f"{summary.batches_skipped} already there)"
        + (f"; {len(summary.skipped_docs)} without a structure or not returned" if summary.skipped_docs else "")
    )


@app.command()
def screen(
    db: Path = typer.Argument(..., help="A folder from `matscreen fetch-mp`, a CIF folder, CSV/CSV.GZ/Parquet with a 'cif' column, or JSON."),
    target: float = typer.Option(..., "--target", help="Target value of the model's property (eV for band gaps)."),
    tol: float = typer.Option(0.05, "--tol", help="Tolerance (eV): rows within it are flagged within_tol."),
    model: str = typer.Option(None, "--model", help="Model name in pretrained/ or a weights path. Default: cgcnn_bandgap_128."),
    engine: str = typer.Option("local", "--engine", help="local (worker processes) or ray."),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: start Ray on this machine)."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (local) or CPUs for a local Ray (0 = in-process)."),
    chunk_size: int = typer.Option(2048, "--chunk-size", help="Records per chunk: the unit of work, of output and of resumption."),
    batch_size: int = typer.Option(256, "--batch-size", help="Crystals per forward pass."),
    output: Path = typer.Option(Path("ranked.parquet"), "-o", "--output", help="Ranked Parquet (a pool for `matscreen search`)."),
    top: int = typer.Option(10, "--top", help="Best rows to print."),
) -> None:
    """Screen a whole database in resumable chunks and rank it by distance to TARGET."""
    import pandas as pd
    import pyarrow.parquet as pq

    from screening.errors import MatscreenError
    from screening.screen.run import screen_database

    try:
        s = screen_database(db, target, tol, model, output, chunk_size=chunk_size, engine=engine, workers=workers,
                            address=address, batch_size=batch_size)
    except MatscreenError as exc:
        _fail(exc)
    typer.echo(
        f"{s.rows} ranked rows in {s.output}, {s.errors} errors in {s.errors_path}; {s.within_tol} within ±{tol} of {target}; "
        f"{len(s.chunks_computed)} chunks computed, {s.chunks_reused} reused; {s.wall_s:.1f} s ({s.records_per_s:.1f} records/s)"
    )
    if top > 0 and s.rows:
        head = next(pq.ParquetFile(s.output).iter_batches(batch_size=top)).to_pandas()
        keep = [c for c in ("rank", "id", "formula", "pred_band_gap", "band_gap", "distance_to_target") if c in head.columns]
        with pd.option_context("display.width", 120):
            typer.echo(head[keep].to_string(index=False))

# --- end fetch-mp / screen (issue 5) ---------------------------------------------------------


def main() -> None:
    app()


if __name__ == "__main__":
    main()
