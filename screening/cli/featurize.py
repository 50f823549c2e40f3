"""`matscreen featurize` and `matscreen reduce`: structures to embeddings to principal components."""

from __future__ import annotations

from pathlib import Path

import typer

from screening.cli.app import app


@app.command()
def featurize(
    source: Path = typer.Argument(
        ..., help="Folder of CIFs (optional id_prop.csv), CSV/CSV.GZ with a 'cif' column, or JSON of structures."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Parquet file to write."),
    model: str = typer.Option(
        None,
        "--model",
        help="Model name in pretrained/ or path (.safetensors, or original .pth.tar). Default: cgcnn_bandgap_128.",
    ),
    atom_init: Path = typer.Option(None, "--atom-init", help="atom_init.json for an original CGCNN checkpoint."),
    radius: float = typer.Option(
        None, "--radius", help="Neighbour radius in Å (must match the model; default: the model's)."
    ),
    max_nbr: int = typer.Option(None, "--max-nbr", help="Neighbours per atom (default: the model's)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Crystals per forward batch."),
    workers: int = typer.Option(1, "--workers", help="Parsing/graph worker processes (0 = in-process)."),
    cache_dir: Path = typer.Option(
        None,
        "--cache-dir",
        help="Embedding cache, keyed by structure content and model (default: $XDG_CACHE_HOME/matscreen or ~/.cache/matscreen).",
    ),
    no_cache: bool = typer.Option(False, "--no-cache"),
    compile_model: bool = typer.Option(
        False, "--compile", help="torch.compile the forward: ~3x faster after ~30 s of compilation; for large sources."
    ),
) -> None:
    """Embed every structure of SOURCE with a CGCNN; failed records go to an error report."""
    from screening.featurize.featurizer import default_cache_dir, featurize_source, load_featurizer_model

    net = load_featurizer_model(model, atom_init)
    _apply_graph_settings(net, radius, max_nbr)
    summary = featurize_source(
        source,
        output,
        net,
        batch_size=batch_size,
        workers=workers,
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


@app.command()
def reduce(
    embeddings: Path = typer.Argument(..., help="Parquet written by `matscreen featurize`."),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Parquet with id, formula, pc_1 … pc_k and the other columns."
    ),
    n_components: int = typer.Option(3, "--n-components", "-k"),
    save_pca: Path = typer.Option(
        None, "--save-pca", help="Where to save the fitted PCA (JSON); default <output>.pca.json."
    ),
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
    typer.echo(
        f"PCA {len(cols)} -> {n_components}: explained variance {ratios} (total {reducer.explained_variance_ratio_.sum():.1%}); saved {pca_path}"
    )
