"""`matscreen fetch-mp` and `matscreen screen`: download the Materials Project, screen whole databases.

fetch-mp catches every exception itself: the API key must never reach a traceback."""

from __future__ import annotations

from pathlib import Path

import typer

from screening.cli.app import app


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
    """Download structures and properties from the Materials Project into a local database folder."""
    import os

    from screening.io.materials_project import (
        MPClientFactory,
        RetryPolicy,
        fetch_materials_project,
        redact,
        resolve_api_key,
    )

    secrets: list[str] = [api_key or "", os.environ.get("MP_API_KEY", "")]
    try:
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
    db: Path = typer.Argument(
        ..., help="A folder from `matscreen fetch-mp`, a CIF folder, CSV/CSV.GZ/Parquet with a 'cif' column, or JSON."
    ),
    target: float = typer.Option(..., "--target", help="Target value of the model's property (eV for band gaps)."),
    tol: float = typer.Option(0.05, "--tol", help="Tolerance (eV): rows within it are flagged within_tol."),
    model: str = typer.Option(
        None, "--model", help="Model name in pretrained/ or a weights path. Default: cgcnn_bandgap_128."
    ),
    engine: str = typer.Option("local", "--engine", help="local (worker processes) or ray."),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: start Ray on this machine)."),
    workers: int = typer.Option(
        1, "--workers", help="Worker processes (local) or CPUs for a local Ray (0 = in-process)."
    ),
    chunk_size: int = typer.Option(
        2048, "--chunk-size", help="Records per chunk: the unit of work, of output and of resumption."
    ),
    batch_size: int = typer.Option(256, "--batch-size", help="Crystals per forward pass."),
    output: Path = typer.Option(
        Path("ranked.parquet"), "-o", "--output", help="Ranked Parquet (a pool for `matscreen search`)."
    ),
    top: int = typer.Option(10, "--top", help="Best rows to print."),
) -> None:
    """Screen a whole database in resumable chunks and rank it by distance to TARGET."""
    import pandas as pd
    import pyarrow.parquet as pq

    from screening.screen.run import screen_database

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
    )
    typer.echo(
        f"{s.rows} ranked rows in {s.output}, {s.errors} errors in {s.errors_path}; {s.within_tol} within ±{tol} of {target}; "
        f"{len(s.chunks_computed)} chunks computed, {s.chunks_reused} reused; {s.wall_s:.1f} s ({s.records_per_s:.1f} records/s)"
    )
    if top > 0 and s.rows:
        head = next(pq.ParquetFile(s.output).iter_batches(batch_size=top)).to_pandas()
        keep = [
            c for c in ("rank", "id", "formula", "pred_band_gap", "band_gap", "distance_to_target") if c in head.columns
        ]
        with pd.option_context("display.width", 120):
            typer.echo(head[keep].to_string(index=False))
