"""Train the project's CGCNN (h_fea_len = 128) on Materials Project band gaps and formation energies.

The released CGCNN checkpoints have a 32-d hidden layer, so the mission's 128-d embedding needs a
model of our own. This script trains one on the 36,738 MP crystals of the MT-CGCNN set
(``../shared/datasets/mp_mtcgcnn_2018``) with the original equations and the project's own atom
features. One shared 128-d embedding feeds a multi-task head (as in MT-CGCNN):

* band gap, through a softplus so it is never negative (metals sit at ~0.00 eV);
* formation energy per atom;
* log of a Laplace scale for the band gap: a per-crystal uncertainty, trained on the detached
  gap error (so it does not bend the mean) and calibrated on the validation split afterwards.

The split is seeded by material_id and saved (``split.csv``); test crystals take no part in
training or model selection. Every epoch writes a resumable checkpoint (model, optimiser,
schedule, history) atomically; ``--resume`` continues from it and gives the same weights as an
uninterrupted run (per-epoch shuffles are seeded by (seed, epoch)). Early stopping watches the
validation band-gap MAE. Only a finished run writes into ``--out``:

    <out>/<name>.safetensors    weights + atom table + config + metrics
    <out>/split.csv             material_id, split
    <out>/<name>_metrics.json   test MAE / R² per property, calibration, history
    <out>/<name>_parity.png     parity plots on the test split

Runs on CPU (2 cores: ~70-120 s per epoch) or CUDA when available.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import time
import warnings
from dataclasses import asdict, astuple, dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "mp_mtcgcnn_2018" / "mp_mtcgcnn_2018.csv.gz"


def split_by_material_id(ids: np.ndarray, seed: int, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Seeded random split into train/val/test labels, one label per material_id."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    n_train = int(round(fractions[0] * len(ids)))
    n_val = int(round(fractions[1] * len(ids)))
    labels = np.empty(len(ids), dtype=object)
    labels[order[:n_train]] = "train"
    labels[order[n_train : n_train + n_val]] = "val"
    labels[order[n_train + n_val :]] = "test"
    return labels


def check_same_split(ids: np.ndarray, split: np.ndarray, reference: Path) -> None:
    """Refuse to fine-tune on a split other than the one the initial weights were trained on
    (``split.csv`` beside them): its validation and test crystals would include that model's
    training crystals, and every figure of the run would be optimistic."""
    if not reference.is_file():
        return
    ref = pd.read_csv(reference).set_index("material_id")["split"]
    common = pd.Index(ids).intersection(ref.index)
    ours = pd.Series(split, index=ids).loc[common]
    moved = int((ours != ref.loc[common]).sum())
    if moved:
        raise SystemExit(
            f"{reference}: {moved} of {len(common)} crystals are in another split than the initial weights were "
            "trained on; use the --split-seed those weights were trained with (0 for the shipped models)"
        )


def _graph_from_cif(args):
    record_id, text, radius, max_num_nbr = args
    from pymatgen.core import Structure

    from screening.graphs import structure_to_graph

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            structure = Structure.from_str(text, fmt="cif")
            return record_id, structure_to_graph(structure, radius, max_num_nbr, record_id), None
        except Exception as exc:  # noqa: BLE001 - reported per record
            return record_id, None, str(exc)


def build_store(frame: pd.DataFrame, cache: Path, workers: int, radius: float, max_num_nbr: int):
    from screening.graph_store import GraphStore

    if cache.exists():
        print(f"graphs: loading cache {cache}", flush=True)
        return GraphStore.load(cache)
    t0 = time.time()
    jobs = [(r.material_id, r.cif, radius, max_num_nbr) for r in frame.itertuples()]
    ids, graphs = [], []
    with Pool(workers) as pool:
        for k, (rid, graph, err) in enumerate(pool.imap(_graph_from_cif, jobs, chunksize=64)):
            if graph is None:
                print(f"  skipped {rid}: {err}", flush=True)
                continue
            ids.append(rid)
            graphs.append(graph)
            if (k + 1) % 2000 == 0:
                print(f"  graphs {k + 1}/{len(jobs)}  {(k + 1) / (time.time() - t0):.0f}/s", flush=True)
    store = GraphStore.from_graphs(ids, graphs)
    cache.parent.mkdir(parents=True, exist_ok=True)
    store.save(cache)
    print(f"graphs: built {len(store)} in {time.time() - t0:.0f} s -> {cache}", flush=True)
    return store


def evaluate(model, store, indices, batch_size=512, device="cpu"):
    """Physical outputs (n, k) and band-gap std (n,) for ``indices`` of the store."""
    model.eval()
    outs, stds = [], []
    with torch.no_grad():
        for s in range(0, len(indices), batch_size):
            res = model(store.batch(indices[s : s + batch_size]).to(device))
            outs.append(res["outputs"].cpu().numpy())
            if "prediction_std" in res:
                stds.append(res["prediction_std"].cpu().numpy())
    pred = np.concatenate(outs)
    std = np.concatenate(stds) if stds else np.full(len(pred), np.nan)
    return pred, std


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    err = pred - target
    ss = float(np.sum((target - target.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": float(1 - np.sum(err**2) / ss) if ss > 0 else None,
        "n": int(len(target)),
    }


def calibration_factor(abs_err: np.ndarray, std: np.ndarray, level: float = 0.6827) -> float:
    """The factor c for which ``level`` of the errors fall within c * std (set on validation)."""
    return float(np.quantile(abs_err / np.maximum(std, 1e-9), level))


def coverage(abs_err: np.ndarray, std: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    return {
        "coverage_1sigma": float(np.mean(abs_err <= std)),
        "coverage_2sigma": float(np.mean(abs_err <= 2 * std)),
        "spearman_std_vs_abs_error": float(spearmanr(std, abs_err).statistic),
        "pearson_std_vs_abs_error": float(np.corrcoef(std, abs_err)[0, 1]),
    }


def held_out_figures(pred: np.ndarray, std: np.ndarray, y: np.ndarray) -> dict:
    """A split's figures for the model card: both properties' MAE/RMSE/R², the band gap on metals and
    non-metals, the band-gap std's coverage and negative gap predictions."""
    metal = y[:, 0] == 0
    return {
        "band_gap": regression_metrics(pred[:, 0], y[:, 0]),
        "band_gap_metals": regression_metrics(pred[metal, 0], y[metal, 0]),
        "band_gap_nonmetals": regression_metrics(pred[~metal, 0], y[~metal, 0]),
        "formation_energy_per_atom": regression_metrics(pred[:, 1], y[:, 1]),
        "band_gap_uncertainty": coverage(np.abs(pred[:, 0] - y[:, 0]), std),
        "negative_band_gaps": int(np.sum(pred[:, 0] < 0)),
    }


def multitask_loss(model, batch, y_norm: torch.Tensor, weights: tuple[float, float]) -> torch.Tensor:
    """L1 on each normalised property (through the gap's softplus) + Laplace NLL of the scale head."""
    from screening.models.cgcnn import SOFTPLUS_BETA

    cfg = model.config
    out = model(batch)
    raw = out["raw"]
    # The scale head reads a detached embedding: its NLL gradient (~ error / scale) would
    # otherwise reach the shared trunk, and a collapsing scale makes it explode.
    w, b = model.fc_out.weight[2:3], model.fc_out.bias[2:3]
    log_b = F.linear(out["embedding"].detach(), w, b)[:, 0].clamp(-6.0, 3.0)
    gap_spec, ef_spec = cfg.outputs
    gap = F.softplus(raw[:, 0] * gap_spec["std"] + gap_spec["mean"], beta=SOFTPLUS_BETA)
    gap_norm = (gap - gap_spec["mean"]) / gap_spec["std"]
    gap_err = (gap_norm - y_norm[:, 0]).abs()
    ef_err = (raw[:, 1] - y_norm[:, 1]).abs()
    nll = gap_err.detach() * torch.exp(-log_b) + log_b
    return weights[0] * gap_err.mean() + weights[1] * ef_err.mean() + 0.1 * nll.mean()


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class RunProgress:
    """Where a training run stands: what an epoch's checkpoint carries besides the weights."""

    epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = 0
    history: list = field(default_factory=list)
    train_seconds: float = 0.0


def save_run(path: Path, key: str, module, opt, sched, progress: RunProgress) -> None:
    """The epoch's resumable checkpoint (``key``: the trained module's name in it), atomically."""
    state = {key: module.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    state |= {k: v for k, v in asdict(progress).items() if k != "history"} | {"history": json.dumps(progress.history)}
    atomic_torch_save(state, path)


def resume_run(path: Path, key: str, module, opt, sched) -> RunProgress:
    """Load :func:`save_run`'s checkpoint into ``module``, ``opt`` and ``sched``; where it stood."""
    state = load_checkpoint(path)
    module.load_state_dict(state[key])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return RunProgress(
        int(state["epoch"]),
        float(state["best_val"]),
        int(state["best_epoch"]),
        json.loads(state["history"]),
        float(state["train_seconds"]),
    )


def warmup_cosine(step: int, steps_per_epoch: int, epochs: int, floor: float = 0.01) -> float:
    """LR factor: linear warm-up over the first epoch, then cosine decay to ``floor``."""
    if step < steps_per_epoch:
        return 0.1 + 0.9 * step / steps_per_epoch
    progress = min(1.0, (step - steps_per_epoch) / max(1, (epochs - 1) * steps_per_epoch))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def parity_plot(target: np.ndarray, pred: np.ndarray, test_metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), dpi=120)
    names = [("band_gap", "band gap / eV"), ("formation_energy_per_atom", "formation energy / eV per atom")]
    for k, (ax, (key, label)) in enumerate(zip(axes, names)):
        m = test_metrics[key]
        ax.hexbin(target[:, k], pred[:, k], gridsize=70, mincnt=1, bins="log", cmap="viridis")
        lo, hi = min(target[:, k].min(), pred[:, k].min()), max(target[:, k].max(), pred[:, k].max())
        ax.plot([lo, hi], [lo, hi], "r--", lw=1)
        ax.set_xlabel(f"DFT (PBE) {label}")
        ax.set_ylabel(f"CGCNN-128 predicted {label}")
        ax.set_title(f"test: MAE {m['mae']:.3f}, R² {m['r2']:.3f}, n={m['n']}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    plt.close(fig)


def add_io_options(p: argparse.ArgumentParser, name: str | None) -> None:
    """Where a training run reads its data and writes its weights (``name`` is the default file
    stem; None: the script derives it), shared by every training script here."""
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=REPO / "pretrained")
    p.add_argument("--name", default=name)
    p.add_argument("--cache", type=Path, default=REPO / "cache" / "train_graphs_r8_n12.npz")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="default: cache/train_<name>")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """How a training run uses the machine, shared by every training script here."""
    p.add_argument("--workers", type=int, default=2, help="processes building the graph cache")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--limit", type=int, default=0, help="the first N crystals only (smoke test)")
    p.add_argument("--kill-after-epoch", type=int, default=0, help=argparse.SUPPRESS)  # tests: SIGKILL self


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_io_options(p, "cgcnn_bandgap_128")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--patience", type=int, default=12, help="stop after this many epochs without a better val MAE")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--h-fea-len", type=int, default=128)
    p.add_argument("--atom-fea-len", type=int, default=64)
    p.add_argument("--n-conv", type=int, default=4)
    p.add_argument("--ef-weight", type=float, default=0.5, help="weight of the formation-energy loss")
    p.add_argument("--gap-weight", type=float, default=1.0, help="weight of the band-gap loss")
    p.add_argument("--seed", type=int, default=0, help="initial weights and the order of training batches")
    p.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="the train/val/test split (split.csv); kept apart from --seed so a run with another seed keeps "
        "the shipped model's test crystals out of training",
    )
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from these weights (same architecture), e.g. to fine-tune the shipped model",
    )
    p.add_argument(
        "--select-on",
        choices=["band_gap", "formation_energy", "both"],
        default="band_gap",
        help="validation figure that picks the epoch kept and drives early stopping: one property's "
        "MAE, or the sum of both properties' MAEs, each over its training standard deviation",
    )
    add_run_options(p)
    args = p.parse_args(argv)

    from screening.atom_features import element_property_table
    from screening.models.cgcnn import CGCNNConfig, init_model, load_model, save_model

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    frame = pd.read_csv(args.data, usecols=["material_id", "cif", "band_gap", "formation_energy_per_atom"])
    if args.limit:
        frame = frame.iloc[: args.limit]
    split = split_by_material_id(frame.material_id.to_numpy(), args.split_seed)
    if args.init_from is not None:
        check_same_split(frame.material_id.to_numpy(), split, args.init_from.parent / "split.csv")
    ckdir = args.checkpoint_dir or (REPO / "cache" / f"train_{args.name}")
    ckdir.mkdir(parents=True, exist_ok=True)

    cache = args.cache if not args.limit else args.cache.with_name(f"{args.cache.stem}_limit{args.limit}.npz")
    store = build_store(frame, cache, args.workers, 8.0, 12)
    by_id = frame.set_index("material_id")
    y = by_id.loc[list(store.ids), ["band_gap", "formation_energy_per_atom"]].to_numpy(dtype=np.float64)
    split_of = dict(zip(frame.material_id, split))
    labels = np.array([split_of[i] for i in store.ids])
    train, val, test = (np.flatnonzero(labels == s) for s in ("train", "val", "test"))
    print(f"train {len(train)}  val {len(val)}  test {len(test)}  device {device}", flush=True)

    means, stds = y[train].mean(axis=0), y[train].std(axis=0)
    config = CGCNNConfig(
        atom_fea_len=args.atom_fea_len,
        h_fea_len=args.h_fea_len,
        n_conv=args.n_conv,
        n_out=3,
        target_mean=float(means[0]),
        target_std=float(stds[0]),
        target_name="band_gap",
        target_unit="eV",
        outputs=[
            {"name": "band_gap", "unit": "eV", "mean": float(means[0]), "std": float(stds[0]), "transform": "softplus"},
            {
                "name": "formation_energy_per_atom",
                "unit": "eV/atom",
                "mean": float(means[1]),
                "std": float(stds[1]),
                "transform": "affine",
            },
        ],
        uncertainty={"calibration": 1.0},
    )
    model = init_model(config, element_property_table(), seed=args.seed).to(device)
    if args.init_from is not None:  # fine-tuning: same architecture, same split, new schedule
        model.load_state_dict(load_model(args.init_from).state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, steps_per_epoch, args.epochs))
    y_norm = torch.tensor((y - means) / stds, dtype=torch.float32)
    best_val, best_epoch, history, epoch, train_seconds = math.inf, 0, [], 0, 0.0
    last, best_path = ckdir / "last.pt", ckdir / "best.safetensors"
    if args.resume and last.exists():
        epoch, best_val, best_epoch, history, train_seconds = astuple(resume_run(last, "model", model, opt, sched))
        print(f"resumed from {last.name}: epoch {epoch}, best val MAE {best_val:.4f} (epoch {best_epoch})", flush=True)
    elif args.resume:
        print("no checkpoint to resume from; starting afresh", flush=True)

    weights = (args.gap_weight, args.ef_weight)
    while epoch < args.epochs and epoch - best_epoch < args.patience:
        model.train()
        t0, total = time.time(), 0.0
        perm = np.random.default_rng([args.seed, epoch]).permutation(train)
        for s in range(0, len(perm), args.batch_size):
            idx = perm[s : s + args.batch_size]
            loss = multitask_loss(model, store.batch(idx).to(device), y_norm[idx].to(device), weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        pred, _ = evaluate(model, store, val, device=device)
        val_mae = float(np.mean(np.abs(pred[:, 0] - y[val, 0])))
        val_ef = float(np.mean(np.abs(pred[:, 1] - y[val, 1])))
        score = {
            "band_gap": val_mae,
            "formation_energy": val_ef,
            "both": val_mae / stds[0] + val_ef / stds[1],
        }[args.select_on]
        epoch += 1
        seconds = time.time() - t0
        train_seconds += seconds
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / len(train),
                "val_mae_band_gap": val_mae,
                "val_mae_formation_energy": val_ef,
                "seconds": seconds,
            }
        )
        improved = score < best_val
        if improved:
            best_val, best_epoch = score, epoch
            save_model(model.cpu(), best_path, {"epoch": epoch, "val_mae_eV": val_mae, "status": "training"})
            model.to(device)
        save_run(last, "model", model, opt, sched, RunProgress(epoch, best_val, best_epoch, history, train_seconds))
        print(
            f"epoch {epoch:3d}/{args.epochs}  loss {total / len(train):.4f}  val MAE gap {val_mae:.4f} eV  "
            f"Ef {val_ef:.4f} eV/atom  {seconds:.0f} s{'  *' if improved else ''}",
            flush=True,
        )
        if args.kill_after_epoch and epoch == args.kill_after_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    best = load_model(best_path).to(device)
    val_pred, val_std = evaluate(best, store, val, device=device)  # calibration 1.0 here
    factor = calibration_factor(np.abs(val_pred[:, 0] - y[val, 0]), val_std)
    best.config.uncertainty = {"calibration": factor}
    val_std = val_std * factor  # the std is linear in the factor
    test_pred, test_std = evaluate(best, store, test, device=device)
    metrics = {
        "test": held_out_figures(test_pred, test_std, y[test]),
        "val": {
            "band_gap": regression_metrics(val_pred[:, 0], y[val, 0]),
            "formation_energy_per_atom": regression_metrics(val_pred[:, 1], y[val, 1]),
            "band_gap_uncertainty": coverage(np.abs(val_pred[:, 0] - y[val, 0]), val_std),
        },
        "calibration_factor": best.config.uncertainty["calibration"],
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "epochs_run": epoch,
        "best_epoch": best_epoch,
        "train_seconds": train_seconds,
        "device": device,
        "hyperparameters": {k: v for k, v in vars(args).items() if not isinstance(v, Path) and k != "kill_after_epoch"},
        "command": f"python scripts/train_cgcnn.py --epochs {args.epochs} --patience {args.patience} "
        f"--batch-size {args.batch_size} --lr {args.lr} --gap-weight {args.gap_weight} --ef-weight {args.ef_weight} "
        f"--seed {args.seed} "
        + (f"--split-seed {args.split_seed} " if args.split_seed else "")
        + f"--select-on {args.select_on}"
        + (f" --init-from {args.init_from.name}" if args.init_from else ""),
        "history": history,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.limit:
        pd.DataFrame({"material_id": frame.material_id, "split": split}).to_csv(args.out / "split.csv", index=False)
    weights_path = args.out / f"{args.name}.safetensors"
    save_model(best.cpu(), weights_path, {k: v for k, v in metrics.items() if k != "history"} | {"status": "final"})
    (args.out / f"{args.name}_metrics.json").write_text(json.dumps(metrics, indent=1))
    parity_plot(y[test], test_pred, metrics["test"], args.out / f"{args.name}_parity.png")
    t = metrics["test"]
    print(
        f"TEST band gap MAE {t['band_gap']['mae']:.4f} eV R² {t['band_gap']['r2']:.4f} | formation energy MAE "
        f"{t['formation_energy_per_atom']['mae']:.4f} eV/atom | ±1σ {t['band_gap_uncertainty']['coverage_1sigma']:.3f} "
        f"±2σ {t['band_gap_uncertainty']['coverage_2sigma']:.3f} | negative gaps {t['negative_band_gaps']}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
