"""`matscreen fetch-mp` and `matscreen screen`: download the Materials Project, screen whole databases.

fetch-mp catches every exception itself: the API key must never reach a traceback."""

from __future__ import annotations

from pathlib import Path

import typer

from screening.cli.app import app

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a job stopped by Ctrl-C


@app.command("fetch-mp")
def fetch_mp(
    output: Path = typer.Option(
        ..., "-o", "--output", help="Database folder to write; re-run the same command to resume."
    ),
    band_gap: tuple[float, float] = typer.Option(None, "--band-gap", help="Band-gap window LO HI (eV)."),
    elements: list[str] = typer.Option(
        None, "--elements", help="Elements every material must contain (Si,O or repeat the option)."
    ),
    max_sites: int = typer.Option(None, "--max-sites", help="Largest cell to download (sites)."),
    ids: list[str] = typer.Option(
        None,
        "--ids",
        help="Download these Materials Project ids instead of searching: mp-149,mp-2534 (or repeat the option).",
    ),
    ids_file: Path = typer.Option(
        None,
        "--ids-file",
        help="Text file of Materials Project ids to download (one per line, or comma/space separated; # comments).",
    ),
    fields: list[str] = typer.Option(
        None,
        "--field",
        help="Summary fields to store (repeatable); material_id, formula, structure and band_gap always are.",
    ),
    api_key: str = typer.Option(
        None,
        "--api-key",
        help="Materials Project API key (default: $MP_API_KEY). Never stored or printed.",
        show_default=False,
    ),
    batch_size: int = typer.Option(1000, "--batch-size", help="Materials per request and per Parquet part."),
    max_retries: int = typer.Option(
        5, "--max-retries", help="Retries (exponential backoff) on rate limits and network errors."
    ),
) -> None:
    """Download structures and properties from the Materials Project into a local database folder:
    everything matching the filters, or a list of ids (--ids, --ids-file)."""
    import os

    from screening.io.materials_project import (
        MPClientFactory,
        RetryPolicy,
        fetch_materials_project,
        read_ids_file,
        redact,
        resolve_api_key,
    )

    secrets: list[str] = [api_key or "", os.environ.get("MP_API_KEY", "")]
    try:
        listed = [i for item in (ids or []) for i in item.replace(",", " ").split()]
        if ids_file is not None:
            listed += read_ids_file(ids_file)
        material_ids = listed if (ids or ids_file is not None) else None
        factory = MPClientFactory(resolve_api_key(api_key))
        els = [e for item in (elements or []) for e in item.replace(",", " ").split()]
        summary = fetch_materials_project(
            factory,
            output,
            band_gap=band_gap,
            elements=els or None,
            max_sites=max_sites,
            fields=fields or None,
            batch_size=batch_size,
            retry=RetryPolicy(max_retries=max_retries),
            material_ids=material_ids,
        )
    except Exception as exc:  # noqa: BLE001 - see the section comment: no traceback may show the key
        message = redact(str(exc), secrets)
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"{output}: {summary.rows} materials of {summary.matched} matched ({summary.batches_fetched} batches downloaded, "
        f"{summary.batches_skipped} already there)"
        + (f"; {len(summary.skipped_docs)} without a structure or not returned" if summary.skipped_docs else "")
        + (
            f" ({', '.join(summary.skipped_docs[:5])}{', ...' if len(summary.skipped_docs) > 5 else ''})"
            if summary.skipped_docs
            else ""
        )
    )


@app.command()
def screen(
    db: Path = typer.Argument(
        ...,
        help="A folder from `matscreen fetch-mp`, or any source `matscreen featurize` reads (structure folder or "
        "file, CSV/CSV.GZ/Parquet with a 'cif' column, JSON).",
    ),
    target: float = typer.Option(..., "--target", help="Target value of the model's property (eV for band gaps)."),
    tol: float = typer.Option(0.05, "--tol", help="Tolerance (eV): rows within it are flagged within_tol."),
    model: str = typer.Option(
        None,
        "--model",
        help="The network: the name of a shipped model (default cgcnn_bandgap_128) or a .safetensors file.",
    ),
    engine: str = typer.Option(
        "local", "--engine", help="local: processes on this machine; ray: a Ray cluster (needs the ray extra)."
    ),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: start Ray on this machine)."),
    workers: int = typer.Option(
        1,
        "--workers",
        help="Worker processes (local engine) or CPUs for a Ray started here (0: all in this process). More "
        "workers than chunks leave some idle (see --chunk-size).",
    ),
    chunk_size: int = typer.Option(
        None,
        "--chunk-size",
        help="Records per chunk, the unit a worker takes and a stopped run keeps (default: about 30 s of work "
        "each, at most 2048).",
        show_default=False,
    ),
    batch_size: int = typer.Option(256, "--batch-size", help="Crystals per network call."),
    output: Path = typer.Option(
        Path("ranked.parquet"), "-o", "--output", help="Ranked Parquet (a pool for `matscreen search`)."
    ),
    top: int = typer.Option(10, "--top", help="Best rows to print."),
    max_formation_energy: float = typer.Option(
        None,
        "--max-formation-energy",
        help="Rank only crystals whose predicted formation energy (pred_formation_energy_per_atom) is at most "
        "this many eV/atom, e.g. 0.0 for predicted-stable compounds.",
    ),
) -> None:
    """Screen a whole database in resumable chunks and rank it by distance to TARGET.

    Ctrl-C (or SIGTERM) stops within seconds, says how many chunks are saved and exits with code
    130 (143 for SIGTERM); the same command then resumes."""
    import pandas as pd
    import pyarrow.parquet as pq

    from screening.progress import plural
    from screening.screen.run import ScreenInterrupted, screen_database

    try:
        s = screen_database(
            db,
            target,
            tol,
            model,
            output,
            chunk_size=chunk_size,
            engine=engine,
            workers=workers,
            address=address,
            batch_size=batch_size,
            max_formation_energy=max_formation_energy,
        )
    except ScreenInterrupted as stop:
        typer.echo(str(stop), err=True)
        raise typer.Exit(code=stop.exit_code) from None
    except KeyboardInterrupt:  # before the run had its work folder: nothing to report
        typer.echo("interrupted before any chunk was saved", err=True)
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    typer.echo(
        f"{plural(s.rows, 'ranked row')} in {s.output}, {plural(s.errors, 'error')} in {s.errors_path}; "
        f"{s.within_tol} within ±{tol} of {target}; {plural(len(s.chunks_computed), 'chunk')} computed, "
        f"{s.chunks_reused} reused; {s.wall_s:.1f} s ({s.records_per_s:.1f} records/s)"
        + (f"; {s.filtered_out} left out by --max-formation-energy" if max_formation_energy is not None else "")
    )
    if s.note:
        typer.echo(s.note)
    if top > 0 and s.rows:
        head = next(pq.ParquetFile(s.output).iter_batches(batch_size=top)).to_pandas()
        keep = [
            c for c in ("rank", "id", "formula", "pred_band_gap", "band_gap", "distance_to_target") if c in head.columns
        ]
        with pd.option_context("display.width", 120):
            typer.echo(head[keep].to_string(index=False))
