"""Test and validation errors of weights files, alone and with their predictions averaged.

The figures of a fine-tune or an ensemble of shipped and candidate weights on the split the
shipped models were trained on (``pretrained/split.csv``), from the training graph cache that
``scripts/train_cgcnn.py`` builds (so the graphs are the training run's own).

    python scripts/eval_weights.py pretrained/cgcnn_formation_energy_128.safetensors other.safetensors
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import train_cgcnn  # noqa: E402

PROPERTIES = ("band_gap", "formation_energy_per_atom")


def mae_by_split(pred: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Per split, the MAE of each property (columns of ``pred`` in PROPERTIES order)."""
    return {s: [float(np.mean(np.abs(pred[s][:, k] - y[s][:, k]))) for k in range(len(PROPERTIES))] for s in pred}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", type=Path, nargs="+")
    ap.add_argument("--cache", type=Path, default=REPO / "cache" / "train_graphs_r8_n12.npz")
    ap.add_argument("--data", type=Path, default=train_cgcnn.DEFAULT_DATA)
    ap.add_argument("--split", type=Path, default=REPO / "pretrained" / "split.csv")
    ap.add_argument(
        "--shipped",
        nargs="?",
        const="",
        default=None,
        metavar="MODEL",
        help="also a shipped model (the default unless named) exactly as featurize runs it (with its property "
        "branches): the model card's figures, as JSON",
    )
    ap.add_argument("--parity", type=Path, default=None, help="with --shipped: write its test parity plot here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from screening.graph_store import GraphStore
    from screening.models.cgcnn import load_model

    store = GraphStore.load(args.cache)
    data = pd.read_csv(args.data, usecols=["material_id", *PROPERTIES]).set_index("material_id")
    split = pd.read_csv(args.split).set_index("material_id")["split"]
    ids = list(store.ids)
    label = split.loc[ids].to_numpy()
    rows = {s: np.flatnonzero(label == s) for s in ("val", "test")}
    y = {s: data.loc[ids, list(PROPERTIES)].to_numpy()[r] for s, r in rows.items()}
    preds = {}
    for path in args.weights:
        model = load_model(path)
        preds[path] = {s: train_cgcnn.evaluate(model, store, r)[0][:, : len(PROPERTIES)] for s, r in rows.items()}
    print("| weights | val gap MAE (eV) | val Ef MAE (eV/atom) | test gap MAE (eV) | test Ef MAE (eV/atom) |")
    print("|---|---|---|---|---|")
    for n in range(1, len(preds) + 1):
        for combo in itertools.combinations(preds, n):
            avg = {s: np.mean([preds[p][s] for p in combo], axis=0) for s in rows}
            m = mae_by_split(avg, y)
            name = " + ".join(label_of(p) for p in combo)
            print(f"| {name} | {m['val'][0]:.4f} | {m['val'][1]:.4f} | {m['test'][0]:.4f} | {m['test'][1]:.4f} |")
    if args.shipped is not None:
        from screening.featurize.registry import load_featurizer_model

        model = load_featurizer_model(args.shipped or None)
        out = {s: train_cgcnn.evaluate(model, store, r) for s, r in rows.items()}
        figures = {s: train_cgcnn.held_out_figures(o[0], o[1], y[s]) for s, o in out.items()}
        print(json.dumps(figures, indent=1))
        if args.parity:
            train_cgcnn.parity_plot(y["test"], out["test"][0][:, : len(PROPERTIES)], figures["test"], args.parity)


def label_of(path: Path) -> str:
    """A weights file's name, or its folder's for the training run's generic ``best.safetensors``."""
    return f"{path.parent.name}/{path.name}" if path.name == "best.safetensors" else path.name


if __name__ == "__main__":
    main()
