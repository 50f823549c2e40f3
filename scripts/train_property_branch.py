"""Train a property branch on a network's frozen trunk (the default network's unless ``--trunk``;
formation energy).

Why: ``featurize`` should give the best formation energy the project has at the cost of about one
network (issue 28). The default network's own formation-energy head reaches 0.075 eV/atom on the
test split; three separate formation-energy networks average to 0.049 but cost three more forward
passes. A branch (``models/property_branch.py``) reads the trunk's per-atom layers, adds a
convolution or two of its own and averages an MLP over the atoms, at a fraction of a network.

The trunk is frozen, so its per-atom layers are computed once (about 1.2 GB for the 36,738 MP
crystals) and each epoch only runs the branch. Same data and split as ``train_cgcnn.py`` (the
shipped ``split.csv``); test crystals take no part in training or in choosing the epoch kept.
``--distil W`` mixes in an L1 term towards the three formation-energy networks' mean on the
training crystals. Every epoch writes a resumable checkpoint; ``--resume`` continues from it.
Only a finished run writes into ``--out``:

    <out>/<name>.safetensors    the branch (weights + config, tied to the trunk by its digest)
    <out>/<name>_metrics.json   test / validation MAE, history, command

``<name>`` defaults to ``<trunk>_formation_energy_branch``, the file ``featurize`` looks for beside
a shipped network (``SHIPPED_BRANCHES``).

    python scripts/train_property_branch.py --from-layer 3 --n-conv 1 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, astuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_cgcnn import (  # noqa: E402
    REPO,
    RunProgress,
    add_io_options,
    add_run_options,
    build_store,
    evaluate,
    regression_metrics,
    resume_run,
    save_run,
    split_by_material_id,
    warmup_cosine,
)

PROPERTY = "formation_energy_per_atom"
TEACHERS = ("cgcnn_formation_energy_128", "cgcnn_formation_energy_128_s1", "cgcnn_formation_energy_128_s2")


def trunk_layers(net, store, batch_size: int = 512) -> torch.Tensor:
    """Every crystal's per-atom trunk layers (atoms in store order, layers side by side)."""
    parts = []
    with torch.inference_mode():
        for s in range(0, len(store), batch_size):
            out = net(store.batch(np.arange(s, min(s + batch_size, len(store)))))
            parts.append(torch.cat(out["atom_layers"], dim=1))
            if s % (batch_size * 20) == 0:
                print(f"  trunk {s}/{len(store)}", flush=True)
    return torch.cat(parts)


def teacher_mean(store, batch_size: int = 512) -> np.ndarray:
    """The formation-energy networks' mean for every crystal: the distillation target."""
    from screening.featurize.registry import resolve_model_path
    from screening.models.cgcnn import load_model, output_names

    preds = []
    for name in TEACHERS:
        net = load_model(resolve_model_path(name))
        outputs, _ = evaluate(net, store, np.arange(len(store)), batch_size)
        preds.append(outputs[:, output_names(net.config).index(PROPERTY)])
        print(f"  teacher {name} done", flush=True)
    return np.mean(preds, axis=0)


class BranchData:
    """Cached trunk layers plus the store's edges: the branch's inputs for any set of crystals."""

    def __init__(self, store, layers: torch.Tensor, trunk) -> None:
        self.store, self.layers = store, layers
        self.width, self.gaussian = trunk.config.atom_fea_len, trunk.gaussian

    def inputs(self, idx: np.ndarray, edges: bool = True):
        """``edges`` False: only the atoms and which crystal each is in (a branch without
        convolutions reads nothing else), several times faster than building the batch."""
        layers = list(self.layers.index_select(0, torch.from_numpy(self.store.atom_rows(idx))).split(self.width, dim=1))
        if not edges:
            sizes = self.store.atom_offsets[idx + 1] - self.store.atom_offsets[idx]
            index = torch.from_numpy(np.repeat(np.arange(len(idx)), sizes))
            return layers, None, SimpleNamespace(batch=index, num_graphs=len(idx))
        batch = self.store.batch(idx)
        with torch.no_grad():
            edge_attr = self.gaussian(batch.edge_dist)
        return layers, edge_attr, batch


def predict(branch, data: BranchData, idx: np.ndarray, batch_size: int = 512) -> np.ndarray:
    branch.eval()
    with torch.inference_mode():
        edges = branch.config.n_conv > 0
        out = [branch(*data.inputs(idx[s : s + batch_size], edges)).numpy() for s in range(0, len(idx), batch_size)]
    return np.concatenate(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_io_options(p, None)  # default name: <trunk>_formation_energy_branch
    p.add_argument("--from-layer", type=int, default=3, help="trunk layer the branch's convolutions continue")
    p.add_argument("--n-conv", type=int, default=1, help="the branch's own convolutions (copies of the trunk's)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--crystal-hidden", type=int, default=0, help="0: a sum of atomic contributions")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--distil", type=float, default=0.0, help="weight of the L1 term towards the teachers' mean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trunk", default=None, help="the network whose trunk it reads (default: the default model)")
    add_run_options(p)
    args = p.parse_args(argv)

    from screening.featurize.registry import DEFAULT_MODEL, formation_energy_branch_name, resolve_model_path
    from screening.models.cgcnn import load_model
    from screening.models.property_branch import BranchConfig, PropertyBranch, save_branch, trunk_digest

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    frame = pd.read_csv(args.data, usecols=["material_id", "cif", PROPERTY])
    if args.limit:
        frame = frame.iloc[: args.limit]
    split = split_by_material_id(frame.material_id.to_numpy(), 0)
    cache = args.cache if not args.limit else args.cache.with_name(f"{args.cache.stem}_limit{args.limit}.npz")
    store = build_store(frame, cache, args.workers, 8.0, 12)
    y = frame.set_index("material_id").loc[list(store.ids), PROPERTY].to_numpy(dtype=np.float64)
    split_of = dict(zip(frame.material_id, split))
    labels = np.array([split_of[i] for i in store.ids])
    train, val, test = (np.flatnonzero(labels == s) for s in ("train", "val", "test"))

    trunk_name = args.trunk or DEFAULT_MODEL
    if args.name is None:  # never the default network's branch file for another trunk
        args.name = formation_energy_branch_name(Path(trunk_name).stem)
    trunk = load_model(resolve_model_path(trunk_name)).eval()
    print(f"trunk layers of {len(store)} crystals ({trunk_name})", flush=True)
    layers = trunk_layers(trunk, store)
    data = BranchData(store, layers, trunk)
    teacher = teacher_mean(store) if args.distil else None

    ym, ys = float(y[train].mean()), float(y[train].std())
    config = BranchConfig(
        property=PROPERTY,
        unit="eV/atom",
        from_layer=args.from_layer,
        n_conv=args.n_conv,
        hidden=args.hidden,
        depth=args.depth,
        target_mean=ym,
        target_std=ys,
        trunk_digest=trunk_digest(trunk),
        crystal_hidden=args.crystal_hidden,
    )
    branch = PropertyBranch(config, trunk.config)
    train_feats = layers.index_select(0, torch.from_numpy(store.atom_rows(train)))
    branch.feature_mean.copy_(train_feats.mean(0))
    branch.feature_std.copy_(train_feats.std(0) + 1e-6)
    del train_feats
    for k, conv in enumerate(branch.convs):  # start each branch convolution from the trunk's next one
        src = args.from_layer + k
        if src < len(trunk.convs):
            conv.load_state_dict(trunk.convs[src].state_dict())
    y_t = torch.tensor(y, dtype=torch.float32)
    teach_t = torch.tensor(teacher, dtype=torch.float32) if teacher is not None else None

    opt = torch.optim.AdamW(branch.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = math.ceil(len(train) / args.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, steps, args.epochs))
    ckdir = args.checkpoint_dir or (REPO / "cache" / f"train_{args.name}")
    ckdir.mkdir(parents=True, exist_ok=True)
    last, best_path = ckdir / "last.pt", ckdir / "best.safetensors"
    epoch, best_val, best_epoch, history, seconds_total = 0, math.inf, 0, [], 0.0
    if args.resume and not last.exists():
        print("no checkpoint to resume from; starting afresh", flush=True)
    if args.resume and last.exists():
        epoch, best_val, best_epoch, history, seconds_total = astuple(resume_run(last, "branch", branch, opt, sched))
        print(f"resumed at epoch {epoch} (best val {best_val:.4f} at {best_epoch})", flush=True)

    while epoch < args.epochs:
        branch.train()
        t0, total = time.time(), 0.0
        for idx in np.array_split(np.random.default_rng([args.seed, epoch]).permutation(train), steps):
            pred = branch(*data.inputs(idx, args.n_conv > 0))
            loss = F.l1_loss((pred - ym) / ys, (y_t[idx] - ym) / ys)
            if teach_t is not None:
                loss = (1 - args.distil) * loss + args.distil * F.l1_loss((pred - ym) / ys, (teach_t[idx] - ym) / ys)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        val_mae = float(np.abs(predict(branch, data, val) - y[val]).mean())
        epoch += 1
        seconds = time.time() - t0
        seconds_total += seconds
        history.append({"epoch": epoch, "train_loss": total / len(train), "val_mae": val_mae, "seconds": seconds})
        improved = val_mae < best_val
        if improved:
            best_val, best_epoch = val_mae, epoch
            save_branch(branch, best_path)
        save_run(last, "branch", branch, opt, sched, RunProgress(epoch, best_val, best_epoch, history, seconds_total))
        print(f"epoch {epoch:3d}/{args.epochs}  val MAE {val_mae:.4f} eV/atom  {seconds:.0f} s" + "  *" * improved)
        if args.kill_after_epoch and epoch == args.kill_after_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    from screening.models.property_branch import load_branch

    best = load_branch(best_path, trunk)
    test_pred, val_pred = predict(best, data, test), predict(best, data, val)
    metrics = {
        "test": {PROPERTY: regression_metrics(test_pred, y[test])},
        "val": {PROPERTY: regression_metrics(val_pred, y[val])},
        "config": asdict(config),
        "n_train": len(train),
        "best_epoch": best_epoch,
        "train_seconds": seconds_total,
        "command": "python scripts/train_property_branch.py "
        + (f"--trunk {args.trunk} " if args.trunk else "")
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in _TUNED),
        "history": history,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    save_branch(best, args.out / f"{args.name}.safetensors")
    (args.out / f"{args.name}_metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"TEST {PROPERTY} MAE {metrics['test'][PROPERTY]['mae']:.4f} eV/atom", flush=True)
    return 0


_TUNED = {
    "from_layer",
    "n_conv",
    "hidden",
    "depth",
    "crystal_hidden",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "distil",
    "seed",
}

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
