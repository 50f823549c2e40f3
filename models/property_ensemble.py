"""A network whose chosen outputs are the mean of companion networks' predictions.

Why: the band-gap search lives on one network's embedding and band gap, but that network is not
the best predictor of every property it outputs — networks trained for formation energy predict
it better, and the mean of several independently trained ones better still. Wrapping them as one
module keeps a single forward pass over the same graphs (one graph build, one cache key, one
column layout), so ``featurize`` and everything downstream need not know there is more than one
network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from screening.errors import ModelLoadError

from .cgcnn import CGCNNConfig, CrystalGraphConvNet, output_names


def _graph_settings(config: CGCNNConfig) -> tuple:
    return (config.radius, config.max_num_nbr, config.dmin, config.step, config.orig_atom_fea_len)


def _same_table(a: CrystalGraphConvNet, b: CrystalGraphConvNet) -> bool:
    """Equal atom-feature tables, holes (NaN: elements without features) included."""
    ta, tb = a.atom_table, b.atom_table
    return (
        ta.shape == tb.shape
        and bool(torch.equal(torch.isnan(ta), torch.isnan(tb)))
        and bool(torch.equal(ta.nan_to_num(), tb.nan_to_num()))
    )


class PropertyEnsemble(nn.Module):
    """``base``'s embedding and outputs, except ``properties``: those are averaged over ``companions``.

    Every companion must build its graphs as ``base`` does and share its atom-feature table (one
    graph serves all), and must output every property named.
    """

    def __init__(
        self, base: CrystalGraphConvNet, companions: Sequence[CrystalGraphConvNet], properties: Sequence[str]
    ) -> None:
        super().__init__()
        if not companions or not properties:
            raise ModelLoadError("a property ensemble needs at least one companion network and one property")
        names = output_names(base.config)
        self.columns = [self._column(names, p, "the base network") for p in properties]
        for k, net in enumerate(companions):
            if _graph_settings(net.config) != _graph_settings(base.config) or not _same_table(net, base):
                raise ModelLoadError(
                    f"companion {k} builds its graphs differently from the base network (radius, neighbours, "
                    "Gaussians or atom features), so one graph cannot serve both"
                )
        self.companion_columns = [
            [self._column(output_names(n.config), p, f"companion {k}") for p in properties]
            for k, n in enumerate(companions)
        ]
        self.base = base
        self.companions = nn.ModuleList(companions)

    @staticmethod
    def _column(names: list[str], prop: str, who: str) -> int:
        if prop not in names:
            raise ModelLoadError(f"{who} does not predict {prop!r} (it predicts {names})")
        return names.index(prop)

    @property
    def config(self) -> CGCNNConfig:
        return self.base.config

    @property
    def atom_table(self) -> Tensor:
        return self.base.atom_table

    def forward(self, batch: Data | Batch) -> dict[str, Tensor]:
        """``base``'s output dict with the ensemble's properties replaced in ``outputs``."""
        out = self.base(batch)
        outputs = out["outputs"].clone()
        member_outputs = [net(batch)["outputs"] for net in self.companions]
        for j, col in enumerate(self.columns):
            outputs[:, col] = torch.stack(
                [o[:, cols[j]] for o, cols in zip(member_outputs, self.companion_columns)]
            ).mean(dim=0)
        out["outputs"] = outputs
        out["prediction"] = outputs[:, 0]
        return out


FeaturizerNet = CrystalGraphConvNet | PropertyEnsemble

__all__ = ["FeaturizerNet", "PropertyEnsemble"]
