"""A property predicted by a small branch on a frozen network's atom features.

Why: the band-gap search lives on one network's embedding and band gap, but that network's own
formation-energy head is not the best it could be (its trunk was chosen for the band gap). Separate
formation-energy networks predict it better, at the cost of a whole forward pass each. A branch
reads what the trunk has already computed for every atom — the atom embedding and each
convolution's output — adds a few convolutions of its own and averages an MLP over the atoms, so
the property costs a fraction of a network and the trunk (embedding, band gap, std) is untouched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import global_mean_pool

from screening.errors import ModelLoadError

from .cgcnn import CGCNNConfig, CGCNNConv, CrystalGraphConvNet, output_names


@dataclass(frozen=True)
class BranchConfig:
    """What a branch predicts, where it joins the trunk and how large it is.

    ``from_layer`` is the trunk layer its convolutions continue from (0: the atom embedding,
    k: the output of convolution k); the readout sees every trunk layer and every branch layer.
    ``crystal_hidden`` 0: the property is the mean of a per-atom MLP's outputs (a sum of atomic
    contributions); above 0: the per-atom MLP's last hidden layer is averaged and an MLP of that
    width maps the crystal's mean to the property. ``trunk_digest`` names the trunk it was trained
    on: on any other its inputs mean nothing.
    """

    property: str
    unit: str
    from_layer: int
    n_conv: int
    hidden: int
    depth: int
    target_mean: float
    target_std: float
    trunk_digest: str
    crystal_hidden: int = 0


def trunk_digest(net: CrystalGraphConvNet) -> str:
    """Hash of what a branch reads: the atom table, the embedding and the convolutions."""
    h = hashlib.blake2b(digest_size=16)
    for key, tensor in sorted(net.state_dict().items()):
        if key == "atom_table" or key.startswith(("embedding.", "convs.")):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_trunk(config: BranchConfig, trunk: CrystalGraphConvNet, where: str) -> None:
    """Refuse a branch on a trunk other than the one it was trained on (``where`` names it)."""
    digest = trunk_digest(trunk)
    if config.trunk_digest != digest:
        raise ModelLoadError(
            f"{where}: this branch was trained on another network's trunk (digest {config.trunk_digest[:12]}, "
            f"this network's {digest[:12]}); its {config.property} would be meaningless"
        )


def _mlp(width: int, hidden: int, depth: int, out: int | None) -> nn.Sequential:
    """``depth`` SiLU layers of ``hidden``, then a linear layer to ``out`` (None: no last layer)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.SiLU()]
        width = hidden
    return nn.Sequential(*layers, *([nn.Linear(width, out)] if out else []))


class PropertyBranch(nn.Module):
    """Convolutions from a trunk layer, then an MLP per atom averaged over the crystal."""

    feature_mean: Tensor
    feature_std: Tensor

    def __init__(self, config: BranchConfig, trunk: CGCNNConfig) -> None:
        super().__init__()
        if not 0 <= config.from_layer <= trunk.n_conv:
            raise ModelLoadError(f"a branch from layer {config.from_layer} needs a trunk with that many convolutions")
        self.config = config
        width = trunk.atom_fea_len
        n_trunk = (trunk.n_conv + 1) * width
        self.register_buffer("feature_mean", torch.zeros(n_trunk))
        self.register_buffer("feature_std", torch.ones(n_trunk))
        self.convs = nn.ModuleList(CGCNNConv(width, trunk.nbr_fea_len) for _ in range(config.n_conv))
        per_atom_out = None if config.crystal_hidden else 1
        self.readout = _mlp(n_trunk + config.n_conv * width, config.hidden, config.depth, per_atom_out)
        self.crystal = _mlp(config.hidden, config.crystal_hidden, 1, 1) if config.crystal_hidden else None

    def forward(self, atom_layers: list[Tensor], edge_attr: Tensor | None, batch: Data | Batch) -> Tensor:
        """The property in its physical unit, one value per crystal of ``batch``.

        ``edge_attr`` (the trunk's Gaussian-expanded distances) is read only by the branch's own
        convolutions; a branch without any reads nothing of ``batch`` but ``batch`` and ``num_graphs``."""
        trunk = torch.cat(atom_layers, dim=1)
        features = [(trunk - self.feature_mean) / self.feature_std]
        x = atom_layers[self.config.from_layer]
        nbr_idx = getattr(batch, "nbr_idx", None) if self.convs else None
        for conv in self.convs:
            assert edge_attr is not None, "a branch with convolutions needs the trunk's edge features"
            x = conv(x, batch.edge_index, edge_attr, nbr_idx)
            features.append(x)
        per_atom = self.readout(torch.cat(features, dim=1))
        index = getattr(batch, "batch", None)
        if index is None:
            index = torch.zeros(per_atom.shape[0], dtype=torch.long)
        pooled = global_mean_pool(per_atom, index, size=getattr(batch, "num_graphs", None))
        value = (self.crystal(pooled) if self.crystal is not None else pooled).squeeze(1)
        return value * self.config.target_std + self.config.target_mean


def save_branch(branch: PropertyBranch, path: str | Path) -> None:
    """Weights and config in one safetensors file (nothing unpickled on load)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in branch.state_dict().items()}
    save_file(tensors, str(path), metadata={"branch_config": json.dumps(asdict(branch.config))})


def load_branch(path: str | Path, trunk: CrystalGraphConvNet) -> PropertyBranch:
    """The branch saved at ``path``, refused unless it was trained on ``trunk``."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        config = BranchConfig(**json.loads(meta["branch_config"]))
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a property branch ({type(exc).__name__}: {exc})") from exc
    check_trunk(config, trunk, str(path))
    branch = PropertyBranch(config, trunk.config)
    try:
        branch.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: weights do not fit the branch's config ({exc})") from exc
    return branch.eval()


class BranchedNet(nn.Module):
    """``base``'s embedding and outputs, except each branch's property, which the branch predicts."""

    def __init__(self, base: CrystalGraphConvNet, branches: Mapping[str, PropertyBranch]) -> None:
        super().__init__()
        names = output_names(base.config)
        self.columns: dict[str, int] = {}
        for prop, branch in branches.items():
            if prop not in names:
                raise ModelLoadError(f"the base network does not predict {prop!r} (it predicts {names})")
            check_trunk(branch.config, base, f"the {prop} branch")
            self.columns[prop] = names.index(prop)
        self.base = base
        self.branches = nn.ModuleDict(dict(branches))

    @property
    def config(self) -> CGCNNConfig:
        return self.base.config

    @property
    def atom_table(self) -> Tensor:
        return self.base.atom_table

    def forward(self, batch: Data | Batch) -> dict[str, Tensor]:
        """``base``'s output dict with each branch's property replaced in ``outputs``."""
        out = self.base(batch)
        outputs = out["outputs"].clone()
        for prop, branch in self.branches.items():
            outputs[:, self.columns[prop]] = branch(out["atom_layers"], out["edge_attr"], batch)
        out["outputs"] = outputs
        out["prediction"] = outputs[:, 0]
        return out


FeaturizerNet = CrystalGraphConvNet | BranchedNet

__all__ = [
    "BranchConfig",
    "BranchedNet",
    "FeaturizerNet",
    "PropertyBranch",
    "check_trunk",
    "load_branch",
    "save_branch",
    "trunk_digest",
]
