"""Which network embeds: the project's shipped weights, a weights file, or an original CGCNN checkpoint.

One concept shared by ``featurize``, ``screen`` (which keys its resumable runs by
:func:`model_fingerprint`) and the CLI, so it lives apart from the featurizer that uses it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from screening.errors import ModelLoadError
from screening.models.cgcnn import load_model, load_original_checkpoint
from screening.models.property_branch import BranchedNet, FeaturizerNet, load_branch

DEFAULT_MODEL = "cgcnn_bandgap_128"


def formation_energy_branch_name(model: str) -> str:
    """The file stem of the formation-energy branch on ``model``'s trunk (what
    ``scripts/train_property_branch.py`` writes and featurize looks for in pretrained/)."""
    return f"{model}_formation_energy_branch"


# Outputs of a shipped model that a shipped branch on its trunk predicts instead of its own head
# (``models/property_branch.py`` says why): property -> branch file name in pretrained/. The
# default's embedding and band gap drive the search; its formation energy comes from a branch
# trained for it at a fraction of a network's cost (pretrained/MODEL_CARD.md). The
# formation-energy-first alternative has one too: on its trunk the branch reaches the three
# formation-energy networks' mean (test MAE 0.049 eV/atom) in one forward pass.
SHIPPED_BRANCHES: dict[str, dict[str, str]] = {
    model: {"formation_energy_per_atom": formation_energy_branch_name(model)}
    for model in (DEFAULT_MODEL, "cgcnn_formation_energy_128")
}
REPO_ROOT = Path(__file__).resolve().parents[2]


def pretrained_dir() -> Path:
    """Where the project's own weights live (``MATSCREEN_PRETRAINED`` overrides).

    An installed package carries them as ``screening/pretrained/`` (pyproject maps the top-level
    ``pretrained/`` there); a source checkout or an editable install finds the top-level folder.
    """
    override = os.environ.get("MATSCREEN_PRETRAINED")
    if override:
        return Path(override)
    from importlib import resources

    shipped = resources.files("screening").joinpath("pretrained")
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    return REPO_ROOT / "pretrained"


def resolve_model_path(model: str | Path | None) -> Path:
    """A model name (``cgcnn_bandgap_128``) or a path to ``.safetensors`` / original ``.pth.tar``."""
    if model is None:
        model = DEFAULT_MODEL
    path = Path(model)
    if path.suffix in {".safetensors", ".tar", ".pth"} or path.exists():
        return path
    candidate = pretrained_dir() / f"{model}.safetensors"
    if candidate.exists():
        return candidate
    branches = {name for by_property in SHIPPED_BRANCHES.values() for name in by_property.values()}
    known = sorted(p.stem for p in pretrained_dir().glob("*.safetensors") if p.stem not in branches)
    raise ModelLoadError(f"unknown model {model!r}: not a file, and pretrained/ has {known or 'no models'}")


def load_featurizer_model(
    model: str | Path | None = None, atom_init: str | Path | None = None, branches: bool = True
) -> FeaturizerNet:
    """Load the project's model (default) or an original CGCNN checkpoint.

    Original ``*.pth.tar`` checkpoints need the ``atom_init.json`` they were trained with:
    ``atom_init`` or, as in the original CGCNN, an ``atom_init.json`` beside the checkpoint.
    A shipped model listed in ``SHIPPED_BRANCHES`` comes with its property branches unless
    ``branches`` is False (then every column is the network's own).
    """
    path = resolve_model_path(model)
    if path.name.endswith((".pth.tar", ".pth", ".tar")):
        from screening.atom_features import load_atom_init

        table_path = Path(atom_init) if atom_init else path.parent / "atom_init.json"
        if not table_path.is_file():
            raise ModelLoadError(
                f"{path}: an original CGCNN checkpoint needs its atom_init.json (pass --atom-init PATH); "
                f"none at {table_path}"
            )
        net = load_original_checkpoint(path, load_atom_init(table_path))
    else:
        net = load_model(path)
    net.source_path = str(path)  # names the model in errors (see check_finite_outputs)
    shipped = SHIPPED_BRANCHES.get(path.stem) if path.parent.resolve() == pretrained_dir().resolve() else None
    if not branches or shipped is None:
        return net
    loaded = {prop: load_branch(pretrained_dir() / f"{name}.safetensors", net) for prop, name in shipped.items()}
    branched = BranchedNet(net, loaded)
    branched.source_path = str(path)
    return branched


def featurizer_model(model: FeaturizerNet | str | Path | None, branches: bool = True) -> FeaturizerNet:
    """``model`` itself when it is a loaded network, else :func:`load_featurizer_model` of it: what
    every entry point that takes "a network, a name or a path" starts with."""
    if model is None or isinstance(model, (str, Path)):
        return load_featurizer_model(model, branches=branches)
    return model


def model_fingerprint(model: FeaturizerNet) -> str:
    """Hash of the weights and graph settings: the model half of the cache key."""
    h = hashlib.blake2b(digest_size=16)
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    cfg = model.config
    h.update(f"{cfg.radius}|{cfg.max_num_nbr}|{cfg.dmin}|{cfg.step}".encode())
    return h.hexdigest()


__all__ = [
    "DEFAULT_MODEL",
    "REPO_ROOT",
    "SHIPPED_BRANCHES",
    "featurizer_model",
    "formation_energy_branch_name",
    "load_featurizer_model",
    "model_fingerprint",
    "pretrained_dir",
    "resolve_model_path",
]
