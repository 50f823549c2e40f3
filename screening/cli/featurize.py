"""`matscreen featurize` and `matscreen reduce`: structures to embeddings to principal components."""

from __future__ import annotations

from pathlib import Path

import typer

from screening.cli.app import app
from screening.cli.help_screen import ADVANCED, OneScreenCommand


@app.command(cls=OneScreenCommand, short_help="Structures to CGCNN embeddings and predicted properties")
def featurize(
    source: Path = typer.Argument(..., metavar="SOURCE", help="Structure folder or file, or a table with a cif column"),
    output: Path = typer.Option(..., "-o", "--output", metavar="PATH", help="Table to write: .parquet or .csv"),
    model: str = typer.Option(
        None, "--model", metavar="NAME", show_default="cgcnn_bandgap_128", help="Model name or weights file"
    ),
    workers: int = typer.Option(
        None, "--workers", metavar="N", show_default="one per CPU", help="Worker processes (0: this one)"
    ),
    atom_init: Path = typer.Option(
        None, "--atom-init", metavar="PATH", rich_help_panel=ADVANCED, help="atom_init.json of a .pth.tar model"
    ),
    radius: float = typer.Option(
        None,
        "--radius",
        metavar="NUM",
        rich_help_panel=ADVANCED,
        show_default="the model's",
        help="Neighbour radius, Å",
    ),
    max_nbr: int = typer.Option(
        None, "--max-nbr", metavar="N", rich_help_panel=ADVANCED, show_default="the model's", help="Neighbours per atom"
    ),
    batch_size: int = typer.Option(
        32, "--batch-size", metavar="N", rich_help_panel=ADVANCED, help="Crystals per network call"
    ),
    cache_dir: Path = typer.Option(
        None,
        "--cache-dir",
        metavar="DIR",
        rich_help_panel=ADVANCED,
        show_default="~/.cache/matscreen",
        help="Where embeddings are kept",
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", rich_help_panel=ADVANCED, help="Compute every embedding, store none"
    ),
    single_model: bool = typer.Option(
        False, "--single-model", rich_help_panel=ADVANCED, help="All columns from --model's own heads"
    ),
    compile_model: bool = typer.Option(
        False, "--compile", rich_help_panel=ADVANCED, help="torch.compile: faster on large sources"
    ),
) -> None:
    """Embed every structure of SOURCE with a crystal graph network: one row each, with its predicted
    properties; failures go to an error report beside the output.

    Options in full: docs/options.md#featurize"""
    from screening.featurize.cache import default_cache_dir
    from screening.featurize.featurizer import featurize_source
    from screening.featurize.registry import load_featurizer_model
    from screening.io.sources import folder_atom_init
    from screening.processes import usable_cpus

    # As in the original CGCNN, a data folder's own atom_init.json goes with an original checkpoint.
    net = load_featurizer_model(model, atom_init or folder_atom_init(source), branches=not single_model)
    _apply_graph_settings(net, radius, max_nbr)
    summary = featurize_source(
        source,
        output,
        net,
        batch_size=batch_size,
        workers=usable_cpus() if workers is None else workers,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
        compile=compile_model,
    )
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


@app.command(cls=OneScreenCommand, short_help="Embeddings to principal components")
def reduce(
    embeddings: Path = typer.Argument(..., metavar="EMBEDDINGS", help="Table written by `matscreen featurize`"),
    output: Path = typer.Option(..., "-o", "--output", metavar="PATH", help="Input columns plus pc_1 ... pc_k"),
    n_components: int = typer.Option(3, "--n-components", "-k", metavar="K", help="Principal components to keep"),
    save_pca: Path = typer.Option(
        None,
        "--save-pca",
        metavar="PATH",
        show_default="pcs.parquet -> pcs.pca.json",
        help="Fitted PCA",
    ),
) -> None:
    """Project embeddings to principal components and save the fitted PCA with the run.

    Options in full: docs/options.md#reduce"""
    import re

    import numpy as np
    import pandas as pd

    from screening.errors import MatscreenError, RecordError
    from screening.io.atomic import check_output_apart
    from screening.io.tables import beside, read_table, write_table_atomic
    from screening.reduce import PCAReducer, embedding_columns

    if n_components < 1:
        raise MatscreenError(f"--n-components must be at least 1, got {n_components}")
    pca_path = save_pca or beside(output, ".pca.json")
    check_output_apart(output, embeddings)
    check_output_apart(pca_path, embeddings)
    frame = read_table(embeddings, "embeddings")
    cols = embedding_columns(frame.columns)
    if not cols:
        raise MatscreenError(
            f"{embeddings}: no emb_0, emb_1, ... columns; give a file written by `matscreen featurize`"
        )
    values = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        name = str(frame["id"].iloc[row]) if "id" in frame.columns else f"row {row + 1}"
        raise RecordError(
            name, f"embedding value missing or not a number ({int(bad.sum())} rows like it)", str(embeddings)
        )
    if n_components > min(len(cols), len(frame)):
        raise MatscreenError(
            f"{embeddings}: {len(frame)} rows of {len(cols)} embedding columns allow at most "
            f"{min(len(cols), len(frame))} components, not {n_components}"
        )
    reducer = PCAReducer(n_components=n_components).fit(values)
    pcs = reducer.transform(values)
    # embeddings stay: search / campaign fit their own PCA on them; an earlier run's pc_* go, as
    # a pc_3 left beside a new fit's pc_1, pc_2 would read as part of it
    out = frame.drop(columns=[c for c in frame.columns if re.fullmatch(r"pc_\d+", str(c))])
    for k in range(n_components):
        out[f"pc_{k + 1}"] = pcs[:, k]
    write_table_atomic(out, output)
    reducer.save(pca_path)
    ratios = ", ".join(f"{r:.1%}" for r in reducer.explained_variance_ratio_)
    typer.echo(
        f"PCA {len(cols)} -> {n_components}: explained variance {ratios} (total {reducer.explained_variance_ratio_.sum():.1%}); saved {pca_path}"
    )
