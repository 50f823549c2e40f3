"""Crystal graphs to predictions and embeddings: the batched forward pass of a featurizer network.

Apart from :mod:`screening.featurize.featurizer` (records, workers, cache, files) so that the
matminer adapter (:mod:`screening.featurize.matminer`) and the featurizer both build on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from screening.errors import ModelLoadError
from screening.graph_store import collate
from screening.graphs import CrystalGraph
from screening.models.cgcnn import output_names
from screening.models.property_branch import FeaturizerNet

# Crystals per forward batch. Small batches keep the (edges x 128) tensors in cache: on 2 cores
# batch 32 ran ~1.7x faster than 256 (scripts/bench_featurize.py).
DEFAULT_BATCH_SIZE = 32


def prediction_columns(model: FeaturizerNet) -> list[str]:
    """The prediction columns ``featurize`` writes for ``model``, in the order of
    :func:`embed_graphs`'s prediction matrix: ``pred_<output>`` for every physical output (a
    multi-task model has band gap and formation energy), then ``pred_<first>_std`` when the
    model has an uncertainty head."""
    names = [f"pred_{name}" for name in output_names(model.config)]
    if model.config.uncertainty:
        names.append(f"{names[0]}_std")
    return names


def _prediction_matrix(out: dict[str, torch.Tensor]) -> torch.Tensor:
    cols = out["outputs"] if "outputs" in out else out["prediction"][:, None]
    if "prediction_std" in out:
        cols = torch.cat([cols, out["prediction_std"][:, None]], dim=1)
    return cols


def check_finite_outputs(model: FeaturizerNet, preds: np.ndarray, embs: np.ndarray, record_ids: Sequence[str]) -> None:
    """Refuse NaN/inf predictions or embeddings: they come from a broken model (NaN weights, an
    atom table with holes), and written out they would rank or cluster silently wrong.

    Raises :class:`ModelLoadError` naming the model and the first records affected, so the run
    stops before anything is cached or written.
    """
    n = len(record_ids)
    if n == 0:
        return
    ok = np.isfinite(np.asarray(preds, dtype=np.float64).reshape(n, -1)).all(axis=1)
    ok &= np.isfinite(np.asarray(embs, dtype=np.float64).reshape(n, -1)).all(axis=1)
    if ok.all():
        return
    bad = [record_ids[int(k)] for k in np.flatnonzero(~ok)]
    name = getattr(model, "source_path", None) or model.config.extra.get("source") or model.config.target_name
    shown = ", ".join(repr(r) for r in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    raise ModelLoadError(
        f"model {name}: non-finite (NaN/inf) predictions or embeddings for {len(bad)} of {n} records ({shown}); "
        "its weights or atom table are broken, so nothing was written"
    )


@contextmanager
def subnormals_flushed() -> Iterator[None]:
    """Treat float32 subnormals (< 1.2e-38) as zero on this thread while inside.

    Far-from-zero gates and cores of the convolutions underflow to subnormals (sigmoid and
    softplus of values below about -87), and CPUs compute on those in microcode: flushing them
    made the forward pass ~1.2× faster on MP batches. An output changes only where it is itself a
    subnormal, by less than 1e-37 (tests/test_cgcnn.py). Restores the default (no flushing) on
    exit; training never runs in it.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def embed_graphs(
    model: FeaturizerNet, graphs: Sequence[CrystalGraph], batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (n, len(prediction_columns(model))) and embeddings (n, h), batched, no grad."""
    preds, embs = [], []
    model.eval()
    with torch.inference_mode(), subnormals_flushed():
        for start in range(0, len(graphs), batch_size):
            out = model(collate(graphs[start : start + batch_size]))
            preds.append(_prediction_matrix(out).double().numpy())
            embs.append(out["embedding"].numpy())
    if not preds:
        return np.zeros((0, len(prediction_columns(model))), np.float64), np.zeros(
            (0, model.config.h_fea_len), np.float32
        )
    return np.concatenate(preds), np.concatenate(embs)


__all__ = ["DEFAULT_BATCH_SIZE", "check_finite_outputs", "embed_graphs", "prediction_columns", "subnormals_flushed"]
