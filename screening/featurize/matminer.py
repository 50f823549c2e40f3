"""The featurizer behind matminer's ``BaseFeaturizer`` API, for users of matminer pipelines.

Lives in its own module because matminer is an optional extra: without it the class still
works on its own (``featurize``, ``featurize_many``) but has none of matminer's helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from screening.featurize.embed import DEFAULT_BATCH_SIZE, check_finite_outputs, embed_graphs
from screening.featurize.registry import featurizer_model
from screening.graphs import structure_to_graph
from screening.models.cgcnn import check_elements
from screening.models.property_branch import FeaturizerNet

try:
    from matminer.featurizers.base import BaseFeaturizer as _MatminerBase
except ImportError:  # matminer is an optional extra
    _MatminerBase = object


class CGCNNFeaturizer(_MatminerBase):
    """CGCNN embedding as a matminer featurizer: ``CGCNNFeaturizer().featurize_dataframe(df, "structure")``.

    ``featurize_many`` is overridden to batch every structure through the network at once
    (matminer's default calls ``featurize`` one structure at a time).
    """

    def __init__(self, model: str | Path | FeaturizerNet | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.model = featurizer_model(model)
        self.batch_size = batch_size
        if hasattr(self, "set_n_jobs"):
            self.set_n_jobs(1)

    def featurize(self, structure) -> list[float]:
        return self.featurize_many([structure], ignore_errors=False)[0]

    def featurize_many(self, entries, ignore_errors: bool = False, return_errors: bool = False, pbar: bool = False):
        from dataclasses import replace

        from pymatgen.core import Structure

        from screening.io.validate import DEFAULT_LIMITS, validate_structure

        # matminer hands over each row's values (a tuple or array holding the structure)
        structures = [e if isinstance(e, Structure) else e[0] for e in entries]
        rows: list[list[Any]] = [[] for _ in structures]  # every row is set below: embedding or NaNs + error
        graphs, where, errs = [], [], {}
        cfg = self.model.config
        for k, s in enumerate(structures):
            try:
                validate_structure(s, str(k), limits=replace(DEFAULT_LIMITS, radius=cfg.radius))
                graph = structure_to_graph(s, cfg.radius, cfg.max_num_nbr, record_id=str(k))
                check_elements(self.model, graph.atomic_numbers, str(k))
                graphs.append(graph)
                where.append(k)
            except Exception as exc:  # noqa: BLE001
                if not ignore_errors:
                    raise
                errs[k] = exc
        preds, emb = embed_graphs(self.model, graphs, self.batch_size)
        check_finite_outputs(self.model, preds, emb, [str(k) for k in where])
        for k, vec in zip(where, emb):
            rows[k] = vec.astype(float).tolist()
        width = len(self.feature_labels())
        for k, err in errs.items():
            rows[k] = [float("nan")] * width + ([str(err)] if return_errors else [])
        if return_errors:
            rows = [r if len(r) > width else r + [None] for r in rows]
        return rows

    def feature_labels(self) -> list[str]:
        return [f"cgcnn_emb_{k}" for k in range(self.model.config.h_fea_len)]

    def citations(self) -> list[str]:
        return [
            "@article{xie2018crystal, title={Crystal Graph Convolutional Neural Networks for an Accurate and "
            "Interpretable Prediction of Material Properties}, author={Xie, Tian and Grossman, Jeffrey C.}, "
            "journal={Phys. Rev. Lett.}, volume={120}, pages={145301}, year={2018}}"
        ]

    def implementors(self) -> list[str]:
        return ["matscreen"]


__all__ = ["CGCNNFeaturizer"]
