"""Structures to CGCNN embeddings: the model registry, the embedding cache and the featurizer.

The public names are re-exported here so ``from screening.featurize import featurize_records``
keeps working whatever module inside the package holds them.
"""

from screening.featurize.cache import EmbeddingCache, default_cache_dir
from screening.featurize.featurizer import (
    Featurizer,
    FeaturizeResult,
    embed_graphs,
    errors_to_frame,
    featurize_records,
    featurize_source,
    prediction_columns,
)
from screening.featurize.matminer import CGCNNFeaturizer
from screening.featurize.registry import (
    DEFAULT_MODEL,
    load_featurizer_model,
    model_fingerprint,
    pretrained_dir,
    resolve_model_path,
)

__all__ = [
    "DEFAULT_MODEL",
    "CGCNNFeaturizer",
    "EmbeddingCache",
    "FeaturizeResult",
    "Featurizer",
    "default_cache_dir",
    "embed_graphs",
    "prediction_columns",
    "errors_to_frame",
    "featurize_records",
    "featurize_source",
    "load_featurizer_model",
    "model_fingerprint",
    "pretrained_dir",
    "resolve_model_path",
]
