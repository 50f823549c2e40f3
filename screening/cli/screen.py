"""`matscreen fetch-mp` and `matscreen screen`: download the Materials Project, screen whole databases.

fetch-mp catches every exception itself: the API key must never reach a traceback."""

from __future__ import annotations

from pathlib import Path

import typer

from screening.cli.app import app
from screening.cli.help_screen import ADVANCED, OneScreenCommand

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a job stopped by Ctrl-C


@app.command("fetch-mp", cls=OneScreenCommand, short_help="Download the Materials Project into a local folder")
def fetch_mp(
    output: Path = typer.Option(
        ..., "-o", "--output", metavar="DIR", help="Database folder; rerun the command to resume"
    ),
    band_gap: tuple[float, float] = typer.Option(None, "--band-gap", metavar="LO HI", help="Band-gap window, eV"),
    elements: list[str] = typer.Option(
        None, "--elements", metavar="EL,EL", help="Elements every material contains: Si,O"
    ),
    max_sites: int = typer.Option(None, "--max-sites", metavar="N", help="Largest cell to download, sites"),
    ids: list[str] = typer.Option(None, "--ids", metavar="ID,ID", help="These ids instead of a search: mp-149,mp-2534"),
    ids_file: Path = typer.Option(None, "--ids-file", metavar="PATH", help="Text file of ids instead of a search"),
    api_key_file: Path = typer.Option(
        None, "--api-key-file", metavar="PATH", show_default="$MP_API_KEY", help="File holding the API key"
    ),
    api_key: str = typer.Option(
        None,
        "--api-key",
        metavar="KEY",
        show_default=False,
        rich_help_panel=ADVANCED,
        help="The key itself: other users see it in ps",
    ),
    fields: list[str] = typer.Option(
        None, "--field", metavar="NAME", rich_help_panel=ADVANCED, help="Another summary field to store (repeat)"
    ),
    batch_size: int = typer.Option(
        1000, "--batch-size", metavar="N", rich_help_panel=ADVANCED, help="Materials per request and file part"
    ),
    max_retries: int = typer.Option(
        5, "--max-retries", metavar="N", rich_help_panel=ADVANCED, help="Retries on rate limits, network errors"
    ),
) -> None:
    """Download structures and properties from the Materials Project into a local database folder:
    everything matching the filters, or a list of ids (--ids, --ids-file).

    Options in full: docs/options.md#fetch-mp"""
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
    if api_key:
        typer.secho(
            "warning: --api-key shows the key to every user of this machine (process list, shell history); "
            "set MP_API_KEY or use --api-key-file",
            fg=typer.colors.YELLOW,
            err=True,
        )
    try:
        listed = [i for item in (ids or []) for i in item.replace(",", " ").split()]
        if ids_file is not None:
            listed += read_ids_file(ids_file)
        material_ids = listed if (ids or ids_file is not None) else None
        factory = MPClientFactory(resolve_api_key(api_key, api_key_file=api_key_file))
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


@app.command(cls=OneScreenCommand, short_help="Rank a whole database by predicted distance to a target")
def screen(
    db: Path = typer.Argument(..., metavar="DB", help="A fetch-mp folder, or any source featurize reads"),
    target: float = typer.Option(..., "--target", metavar="EV", help="Value to rank by distance to, eV"),
    tol: float = typer.Option(0.05, "--tol", metavar="EV", help="Rows within ± this get within_tol, eV"),
    output: Path = typer.Option(
        Path("ranked.parquet"), "-o", "--output", metavar="PATH", help="Ranked table (a search pool)"
    ),
    model: str = typer.Option(
        None, "--model", metavar="NAME", show_default="cgcnn_bandgap_128", help="Model name or weights file"
    ),
    workers: int = typer.Option(
        None, "--workers", metavar="N", show_default="one per CPU", help="Worker processes (0: this one)"
    ),
    top: int = typer.Option(10, "--top", metavar="N", help="Best rows to print"),
    max_formation_energy: float = typer.Option(
        None,
        "--max-formation-energy",
        metavar="EV",
        rich_help_panel=ADVANCED,
        help="Skip crystals predicted above, eV/atom",
    ),
    engine: str = typer.Option(
        "local", "--engine", metavar="NAME", rich_help_panel=ADVANCED, help="local, or ray (a Ray cluster)"
    ),
    address: str = typer.Option(
        None, "--address", metavar="ADDR", rich_help_panel=ADVANCED, help="Ray cluster address (default: start one)"
    ),
    chunk_size: int = typer.Option(
        None,
        "--chunk-size",
        metavar="N",
        rich_help_panel=ADVANCED,
        show_default="~30 s of work",
        help="Records per chunk",
    ),
    batch_size: int = typer.Option(
        256, "--batch-size", metavar="N", rich_help_panel=ADVANCED, help="Crystals per network call"
    ),
) -> None:
    """Screen a whole database in resumable chunks and rank it by predicted distance to --target.

    Ctrl-C keeps the finished chunks and exits 130 (SIGTERM: 143); rerun to resume.

    Options in full: docs/options.md#screen"""
    import pandas as pd
    import pyarrow.parquet as pq

    from screening.processes import usable_cpus
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
            workers=usable_cpus() if workers is None else workers,
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
