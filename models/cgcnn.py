"""Crystal Graph Convolutional Neural Network (Xie & Grossman, PRL 120, 145301, 2018).

A re-implementation on torch-geometric that reproduces the original txie-93/cgcnn forward pass
number for number, so original checkpoints load and give the same predictions, and that trains
new models (the project's 128-d embedding model) with the same equations.

Forward pass (eval mode), N atoms, M neighbour slots per atom (padding included, unmasked):

    x_i^0     = W_emb a_i + b_emb                        no activation
    z_ij      = W_full [x_i ; x_j ; g_ij] + b_full       self, neighbour, bond (41 Gaussians)
    x_i^{t+1} = softplus(x_i^t + BN2(Σ_j σ(BN1(z_ij)_gate) ⊙ softplus(BN1(z_ij)_core)))
    v         = mean_i x_i^T                              crystal vector (pooled atom features)
    h         = softplus(W_cf softplus(v) + b_cf)         THE EMBEDDING (input of fc_out)
    y         = (w_out · h + b_out) · std + mean

``W_full`` is applied as three blocks (self, neighbour, bond) rather than to the concatenation:
the self and neighbour products are computed once per atom instead of once per edge, which is
the same arithmetic with ~3× fewer FLOPs on the hot path.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing, global_mean_pool

from screening.errors import GraphBuildError, ModelLoadError


@dataclass
class CGCNNConfig:
    """Architecture and graph settings; everything needed to rebuild a model from weights."""

    orig_atom_fea_len: int = 92
    atom_fea_len: int = 64
    h_fea_len: int = 128
    n_conv: int = 4
    n_h: int = 1
    task: str = "regression"  # or "classification"
    n_out: int = 1
    radius: float = 8.0
    max_num_nbr: int = 12
    dmin: float = 0.0
    step: float = 0.2
    target_mean: float = 0.0
    target_std: float = 1.0
    target_name: str = "band_gap"
    target_unit: str = "eV"
    extra: dict = field(default_factory=dict)
    # Multi-task models (empty for single-output and original checkpoints): one dict per output
    # column, {"name", "unit", "mean", "std", "transform": "affine" | "softplus"}. "softplus"
    # keeps a property physically non-negative (a band gap) with a smooth floor at zero.
    outputs: list = field(default_factory=list)
    # Optional per-crystal uncertainty of outputs[0]: {"calibration": c}. The raw column after
    # the outputs is log b (Laplace scale, normalised units); std = c * sqrt(2) * b * std_0.
    uncertainty: dict = field(default_factory=dict)

    @property
    def nbr_fea_len(self) -> int:
        return len(gaussian_centres(self.dmin, self.radius, self.step))


def gaussian_centres(dmin: float, dmax: float, step: float) -> np.ndarray:
    """Centres of the original's Gaussian basis: ``np.arange(dmin, dmax + step, step)`` (41 for 0..8)."""
    return np.arange(dmin, dmax + step, step)


FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32, 1.18e-38


class GaussianDistance(nn.Module):
    """Expand distances (Å) on Gaussians ``exp(-(d - mu)^2 / step^2)``, in float64 then float32.

    Float64 then cast is what the original does in numpy; it keeps parity at the 1e-7 level.
    Values below the smallest normal float32 are set to zero: a neighbour 1.9 Å or more from a
    centre gives exp(-90) or less, which float32 can only hold as a subnormal, and CPUs multiply
    subnormals in microcode. About 4 % of an MP batch's Gaussians are subnormal, and they made the
    bond product of every convolution ~9× slower. Their share of any output is below 1e-36, so the
    outputs keep the same bits (tests/test_cgcnn.py checks them).
    """

    centres: Tensor  # a buffer; declared so the type checker sees a tensor

    def __init__(self, dmin: float, dmax: float, step: float) -> None:
        super().__init__()
        self.register_buffer("centres", torch.from_numpy(gaussian_centres(dmin, dmax, step)), persistent=False)
        self.var = step

    def forward(self, distances: Tensor) -> Tensor:
        d = distances.to(torch.float64).unsqueeze(-1)
        gauss = torch.exp(-((d - self.centres) ** 2) / self.var**2)
        return gauss.masked_fill_(gauss < FLOAT32_TINY, 0.0).to(torch.float32)


class CGCNNConv(MessagePassing):
    """One CGCNN gated convolution (paper eq. 5), summing over the neighbour slots.

        z_ij = W_s x_i + W_n x_j + W_b g_ij + b
        m_ij = σ(BN1(z)_[:F]) ⊙ softplus(BN1(z)_[F:])
        x_i' = softplus(x_i + BN2(Σ_j m_ij))

    ``fc_full`` keeps the original's parameter layout (columns self | neighbour | bond, rows
    gate | core) so original state dicts load unchanged.
    """

    def __init__(self, atom_fea_len: int, nbr_fea_len: int) -> None:
        super().__init__(aggr="sum", flow="source_to_target")
        self.atom_fea_len = atom_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, nbr_idx: Tensor | None = None) -> Tensor:
        """``nbr_idx`` (N, M), when given, says the edges are centre-major with M per atom.

        That is the layout every CGCNN graph has (padding included), and it lets the sum over
        neighbours be a reshape instead of a scatter: the same numbers, several times faster.
        """
        if nbr_idx is not None and not self.training and not torch.is_grad_enabled():
            return self._inference(x, edge_attr, nbr_idx)
        F_ = self.atom_fea_len
        w, b = self._affine()
        self_part = x @ w[:, :F_].T  # (N, 2F), once per atom
        nbr_part = x @ w[:, F_ : 2 * F_].T  # (N, 2F), once per atom
        w_bond = w[:, 2 * F_ :]
        if nbr_idx is None:
            summed = self.propagate(
                edge_index, self_part=self_part, nbr_part=nbr_part, edge_attr=edge_attr, w_bond=w_bond, b=b
            )
        else:
            n, m = nbr_idx.shape
            z = torch.addmm(b, edge_attr, w_bond.T).view(n, m, -1)
            z = z + nbr_part.index_select(0, nbr_idx.reshape(-1)).view(n, m, -1)
            z += self_part.unsqueeze(1)
            summed = self._gated(z.view(n * m, -1)).view(n, m, -1).sum(dim=1)
        return F.softplus(x + self.bn2(summed))

    def _inference(self, x: Tensor, edge_attr: Tensor, nbr_idx: Tensor) -> Tensor:
        """The dense forward without autograd, in place on one (edges × 2F) buffer.

        Each (edges × 2F) temporary costs a fresh allocation and its page faults; writing the bond
        product, the self term, the gate and the product into the gathered neighbour term's buffer
        leaves two such tensors per convolution instead of six, and ran the network ~1.5× faster
        on MP batches. The sums are taken in another order, so outputs differ from the
        autograd-safe path in the last bits (< 1e-5 relative; tests/test_cgcnn.py).
        """
        F_ = self.atom_fea_len
        n, m = nbr_idx.shape
        w, b = self._affine()
        self_part = torch.addmm(b, x, w[:, :F_].T)  # (N, 2F), once per atom, with the bias
        z = (x @ w[:, F_ : 2 * F_].T).index_select(0, nbr_idx.reshape(-1))  # (N·M, 2F)
        z.addmm_(edge_attr, w[:, 2 * F_ :].T)
        z.view(n, m, -1).add_(self_part.unsqueeze(1))
        message = z[:, :F_].sigmoid_().mul_(F.softplus(z[:, F_:]))
        return F.softplus(x + self.bn2(message.view(n, m, F_).sum(dim=1)))

    def _affine(self) -> tuple[Tensor, Tensor]:
        """``fc_full``'s weight and bias; in eval mode with BN1 folded in (BN1 is then affine).

        Folding saves a full pass over the (edges × 2F) tensor at inference; in training BN1 needs
        batch statistics and stays a separate step.
        """
        w, b = self.fc_full.weight, self.fc_full.bias
        if self.training:
            return w, b
        mean, var = self.bn1.running_mean, self.bn1.running_var
        # BN1 is built with track_running_stats=True (the default), so its statistics always exist.
        assert mean is not None and var is not None, "BN1 keeps running statistics"
        scale = self.bn1.weight / torch.sqrt(var + self.bn1.eps)
        return w * scale[:, None], (b - mean) * scale + self.bn1.bias

    def _gated(self, z: Tensor) -> Tensor:
        if self.training:
            z = self.bn1(z)
        gate, core = z.chunk(2, dim=1)
        return torch.sigmoid(gate) * F.softplus(core)

    def message(self, self_part_i: Tensor, nbr_part_j: Tensor, edge_attr: Tensor, w_bond: Tensor, b: Tensor) -> Tensor:
        return self._gated(self_part_i + nbr_part_j + torch.addmm(b, edge_attr, w_bond.T))

    def propagate(self, edge_index: Tensor, size: tuple[int, int] | None = None, **kwargs: Tensor) -> Tensor:
        """PyG's generic ``propagate``, defined here so that PyG does not generate its jinja-templated
        copy: that copy is written as ``screening.models.cgcnn_CGCNNConv_propagate_*.py`` into the temp
        folder by every process that builds (or unpickles) a model, and never deleted. CGCNN graphs
        take the ``nbr_idx`` path in :meth:`forward`, so the generic version costs nothing there."""
        return MessagePassing.propagate(self, edge_index, size=size, **kwargs)


class CrystalGraphConvNet(nn.Module):
    """CGCNN with the original's parameter names; ``forward`` returns every crystal-level vector."""

    atom_table: Tensor  # a buffer (elements × atom features); declared so the type checker sees a tensor

    def __init__(self, config: CGCNNConfig, atom_table: np.ndarray) -> None:
        super().__init__()
        if atom_table.shape[1] != config.orig_atom_fea_len:
            raise ModelLoadError(
                f"atom-feature table has width {atom_table.shape[1]}, model expects {config.orig_atom_fea_len}"
            )
        self.config = config
        self.register_buffer("atom_table", torch.as_tensor(np.asarray(atom_table, dtype=np.float32)))
        self.gaussian = GaussianDistance(config.dmin, config.radius, config.step)
        self.embedding = nn.Linear(config.orig_atom_fea_len, config.atom_fea_len)
        self.convs = nn.ModuleList(CGCNNConv(config.atom_fea_len, config.nbr_fea_len) for _ in range(config.n_conv))
        self.conv_to_fc = nn.Linear(config.atom_fea_len, config.h_fea_len)
        self.fcs = nn.ModuleList(nn.Linear(config.h_fea_len, config.h_fea_len) for _ in range(config.n_h - 1))
        self.fc_out = nn.Linear(config.h_fea_len, config.n_out)
        self.dropout = nn.Dropout() if config.task == "classification" else nn.Identity()

    def forward(self, batch: Data | Batch) -> dict[str, Tensor]:
        """Run the network on a (batched) graph.

        Returns ``prediction`` (denormalised target, or class-1 probability for classification),
        ``embedding`` (h, the input of ``fc_out``), ``pooled`` (v, mean atom features before the
        softplus), ``raw`` (the network output before denormalisation), and per atom
        ``atom_features`` (the last convolution's output), ``atom_layers`` (the embedding and every
        convolution's output) with ``edge_attr`` (the Gaussian-expanded distances).
        """
        x = self.embedding(self.atom_table[batch.z])
        edge_attr = self.gaussian(batch.edge_dist)
        nbr_idx = getattr(batch, "nbr_idx", None)
        atom_layers = [x]
        for conv in self.convs:
            x = conv(x, batch.edge_index, edge_attr, nbr_idx)
            atom_layers.append(x)
        index = getattr(batch, "batch", None)
        if index is None:
            index = torch.zeros_like(batch.z)
        pooled = global_mean_pool(x, index, size=getattr(batch, "num_graphs", None))
        h = F.softplus(self.conv_to_fc(F.softplus(pooled)))
        h = self.dropout(h)
        for fc in self.fcs:
            h = F.softplus(fc(h))
        raw = self.fc_out(h)
        out = {"embedding": h, "pooled": pooled, "raw": raw, "atom_features": x}
        out["atom_layers"], out["edge_attr"] = atom_layers, edge_attr  # what a PropertyBranch reads
        if self.config.task == "classification":
            out["prediction"] = torch.softmax(raw, dim=1)[:, 1]
        elif self.config.outputs:
            out.update(decode_outputs(self.config, raw))
        else:
            out["prediction"] = raw[:, 0] * self.config.target_std + self.config.target_mean
        return out


SOFTPLUS_BETA = 4.0  # 1/eV: softplus(0) = ln 2 / 4 = 0.17 eV, and < 0.005 eV below -0.9 eV


def decode_outputs(config: CGCNNConfig, raw: Tensor) -> dict[str, Tensor]:
    """Physical predictions from the raw head of a multi-task model.

    ``prediction`` is the first output (what single-output code reads); ``outputs`` (N, k) holds
    all of them in the order of ``config.outputs``; ``prediction_std`` is the calibrated
    per-crystal standard deviation of the first, when the model has an uncertainty head.
    """
    cols = []
    for k, spec in enumerate(config.outputs):
        value = raw[:, k] * float(spec["std"]) + float(spec["mean"])
        if spec.get("transform", "affine") == "softplus":
            value = F.softplus(value, beta=SOFTPLUS_BETA)
        cols.append(value)
    outputs = torch.stack(cols, dim=1)
    result = {"prediction": outputs[:, 0], "outputs": outputs}
    if config.uncertainty:
        k = len(config.outputs)
        scale = torch.exp(raw[:, k].clamp(-12.0, 6.0)) * float(config.outputs[0]["std"])
        result["prediction_std"] = scale * math.sqrt(2.0) * float(config.uncertainty.get("calibration", 1.0))
    return result


def output_names(config: CGCNNConfig) -> list[str]:
    """Names of the physical outputs, in order (``[target_name]`` for single-output models)."""
    return [str(o["name"]) for o in config.outputs] if config.outputs else [config.target_name]


class HasAtomTable(Protocol):
    """Anything that embeds atoms from a table: a network, or an ensemble sharing one table."""

    @property
    def atom_table(self) -> Tensor: ...


def check_elements(model: HasAtomTable, atomic_numbers: np.ndarray, record_id: str = "?") -> None:
    """Raise :class:`GraphBuildError` if the model has no atom features for some element."""
    table = model.atom_table
    bad = [
        int(z) for z in np.unique(atomic_numbers) if z < 1 or z >= table.shape[0] or torch.isnan(table[int(z)]).any()
    ]
    if bad:
        from pymatgen.core.periodic_table import Element

        names = ", ".join(Element.from_Z(z).symbol if 0 < z <= 118 else str(z) for z in bad)
        raise GraphBuildError(record_id, f"element(s) {names} have no atom features in this model's table")


# ---------------------------------------------------------------------------------------------
# Checkpoint I/O
# ---------------------------------------------------------------------------------------------


def _torch_load_restricted(path: Path) -> dict:
    """``torch.load`` with ``weights_only=True``, allowing the numpy scalar the classifier pickles."""
    safe: list = []
    try:  # numpy >= 2 keeps the scalar reconstructor in numpy._core
        from numpy._core.multiarray import scalar as np_scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar as np_scalar  # type: ignore[no-redef]  # same name, numpy 1.x home
    # The pickle names the reconstructor by its numpy 1.x path; allow exactly that name.
    safe += [(np_scalar, "numpy.core.multiarray.scalar"), np_scalar, np.dtype, type(np.dtype(np.float64))]
    with torch.serialization.safe_globals(safe):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_original_checkpoint(
    path: str | Path, atom_table: np.ndarray, radius: float = 8.0, max_num_nbr: int = 12
) -> CrystalGraphConvNet:
    """Load an original txie-93/cgcnn ``*.pth.tar`` without unpickling arbitrary code.

    The architecture comes from the checkpoint's ``args`` (never from main.py defaults: the
    released models have h_fea_len = 32). Graph settings are not stored in the checkpoint; the
    number of Gaussians in ``fc_full`` must agree with ``radius`` or loading fails clearly.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such checkpoint")
    try:
        ckpt = _torch_load_restricted(path)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, i.e. running the file's code: never say that
        raise ModelLoadError(
            f"{path}: refused: the checkpoint pickles objects other than tensors and numbers (possibly code), "
            "and matscreen only loads weights; convert a checkpoint you trust to .safetensors"
        ) from None
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ModelLoadError(f"{path}: not a loadable CGCNN checkpoint ({_short_reason(exc)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ModelLoadError(f"{path}: no 'state_dict' in checkpoint")
    try:
        return _model_from_checkpoint(path, ckpt, atom_table, radius, max_num_nbr)
    except ModelLoadError:
        raise
    except KeyError as exc:
        raise ModelLoadError(f"{path}: malformed checkpoint (no {exc} in its state_dict)") from None
    except Exception as exc:  # noqa: BLE001 - shapes and types of a malformed state_dict
        raise ModelLoadError(f"{path}: malformed checkpoint ({_short_reason(exc)})") from None


def _short_reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception, without advice to load pickles unsafely."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if "weights_only" in first:
        first = "not a weights-only file"
    return f"{type(exc).__name__}: {first}"[:300]


def _model_from_checkpoint(
    path: Path, ckpt: dict, atom_table: np.ndarray, radius: float, max_num_nbr: int
) -> CrystalGraphConvNet:
    """The body of :func:`load_original_checkpoint`, apart so that any malformed field of the
    checkpoint becomes one ModelLoadError there."""
    args = ckpt.get("args", {}) or {}
    state = ckpt["state_dict"]
    normalizer = ckpt.get("normalizer", {"mean": 0.0, "std": 1.0})
    n_conv = len({k.split(".")[1] for k in state if k.startswith("convs.")})
    full_w = state["convs.0.fc_full.weight"]
    atom_fea_len = state["embedding.weight"].shape[0]
    n_gauss = full_w.shape[1] - 2 * atom_fea_len
    config = CGCNNConfig(
        orig_atom_fea_len=state["embedding.weight"].shape[1],
        atom_fea_len=atom_fea_len,
        h_fea_len=state["conv_to_fc.weight"].shape[0],
        n_conv=n_conv,
        n_h=int(args.get("n_h", 1)),
        task=str(args.get("task", "regression")),
        n_out=state["fc_out.weight"].shape[0],
        radius=radius,
        max_num_nbr=max_num_nbr,
        target_mean=float(normalizer["mean"]),
        target_std=float(normalizer["std"]),
        target_name=path.name.replace(".pth.tar", ""),
        target_unit="",
        extra={"source": str(path), "epoch": int(ckpt.get("epoch", -1))},
    )
    if config.nbr_fea_len != n_gauss:
        raise ModelLoadError(
            f"{path}: checkpoint expects {n_gauss} Gaussians but radius={radius} gives {config.nbr_fea_len}; "
            "use the radius the model was trained with (8 Å for the released models)"
        )
    model = CrystalGraphConvNet(config, atom_table)
    missing, unexpected = model.load_state_dict(_with_table(state, model), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ModelLoadError(f"{path}: state_dict mismatch (missing {missing}, unexpected {unexpected})")
    return model.eval()


def _with_table(state: dict, model: CrystalGraphConvNet) -> dict:
    state = dict(state)
    state["atom_table"] = model.atom_table
    return state


def save_model(model: CrystalGraphConvNet, path: str | Path, metadata: dict | None = None) -> None:
    """Save weights, atom table and config as safetensors (no pickled code, loads anywhere)."""
    from safetensors.torch import save_file

    meta = {"config": json.dumps(asdict(model.config)), "format": "matscreen-cgcnn-1"}
    if metadata:
        meta["info"] = json.dumps(metadata)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)


def load_model(path: str | Path) -> CrystalGraphConvNet:
    """Load a model saved by :func:`save_model` (safetensors: no code is unpickled)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: not a safetensors weights file ({exc})") from exc
    if meta.get("format") != "matscreen-cgcnn-1":
        raise ModelLoadError(f"{path}: not a matscreen CGCNN weights file (format={meta.get('format')!r})")
    try:
        raw = json.loads(meta["config"])
        if not isinstance(raw, dict):
            raise TypeError(f"config is a JSON {type(raw).__name__}, not an object")
        config = CGCNNConfig(**raw)
        model = CrystalGraphConvNet(config, tensors["atom_table"].numpy())
        model.load_state_dict(tensors, strict=True)
    except ModelLoadError:
        raise
    except KeyError as exc:
        raise ModelLoadError(f"{path}: malformed weights file (no {exc} in it)") from None
    except Exception as exc:  # noqa: BLE001 - bad JSON, unknown config keys, wrong shapes
        raise ModelLoadError(f"{path}: malformed weights file ({_short_reason(exc)})") from None
    return model.eval()


def model_info(path: str | Path) -> dict:
    """The training metadata stored with a saved model (metrics, split, command)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta.get("info", "{}"))


def init_model(config: CGCNNConfig, atom_table: np.ndarray, seed: int = 0) -> CrystalGraphConvNet:
    """A freshly initialised model (for training)."""
    torch.manual_seed(seed)
    return CrystalGraphConvNet(config, atom_table)


__all__ = [
    "CGCNNConfig",
    "CrystalGraphConvNet",
    "CGCNNConv",
    "GaussianDistance",
    "check_elements",
    "load_original_checkpoint",
    "save_model",
    "load_model",
    "model_info",
    "init_model",
    "gaussian_centres",
    "decode_outputs",
    "output_names",
]
