"""Fit the virtual silver-nanoparticle lab (and the parametric target) to the real AgBONN campaign.

Reads the reference data at run time from ``../shared/reference/agbonn`` (never copied):
* ``derived/conditions_164_with_runs.csv`` – the 164 conditions and their median droplet loss
  (from the MIT-licensed PV-Lab / Olympus droplet data);
* ``agbonn_repo/run1_spectra.csv`` + ``derived/run1_droplet_loss_fixture.csv`` – the only measured
  spectra (Run 1, 15 conditions), used for amplitude/shape calibration and held-out checks;
* ``derived/target_spectrum_1nm.csv`` – the target, to which a Gaussian sum is fitted.

Writes ``screening/data/virtual_lab_agbonn.json`` (our fitted parameters, with the calibration
figures inside) and ``screening/data/agbonn_target.json`` (our Gaussian fit of the target).

    OMP_NUM_THREADS=1 python scripts/fit_virtual_lab.py [--shared ../shared] [--restarts 3] [--no-cv]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import least_squares
from scipy.stats import spearmanr

from screening.objectives.synthesis.spectral_loss import (
    WAVELENGTHS_NM,
    gaussian_sum,
    load_target,
    minmax,
    spectrum_losses,
)
from screening.objectives.synthesis.virtual_lab import (
    SpectrumPhysicsModel,
    VirtualLab,
    VirtualLabParams,
    fit_physics_model,
)

REPO = Path(__file__).resolve().parents[1]
INPUT_COLUMNS = ["QAgNO3(%)", "Qpva(%)", "Qtsc(%)", "Qseed(%)", "Qtot(uL/min)"]
TARGET_CENTRES_INIT = [395, 415, 500, 545, 585, 640, 680, 720]


# --- data -------------------------------------------------------------------------------------


def load_reference(shared: Path) -> dict:
    ref = shared / "reference" / "agbonn"
    cond = pd.read_csv(ref / "derived" / "conditions_164_with_runs.csv")
    spectra = pd.read_csv(ref / "agbonn_repo" / "run1_spectra.csv", index_col=0)
    fixture = pd.read_csv(ref / "derived" / "run1_droplet_loss_fixture.csv")
    target = pd.read_csv(ref / "derived" / "target_spectrum_1nm.csv")
    if not np.allclose(spectra.index.to_numpy(dtype=float), WAVELENGTHS_NM):
        raise ValueError(f"{ref}/agbonn_repo/run1_spectra.csv: wavelength grid is not 380–800 nm")
    droplets = spectra.to_numpy().T
    run1 = []
    for _cid, rows in fixture.groupby("Condition ID"):
        x = rows[INPUT_COLUMNS].iloc[0].to_numpy(dtype=float)
        idx = int(np.argmin(np.abs(cond[INPUT_COLUMNS].to_numpy() - x).sum(axis=1)))
        block = droplets[rows.index.to_numpy()]
        run1.append({"condition_index": idx, "median_spectrum": np.median(block, axis=0), "droplets": block})
    return {"conditions": cond, "run1": run1, "target_reference": target["absorbance_target_slinear"].to_numpy()}


def fit_target(reference: np.ndarray) -> tuple[dict, float]:
    """Gaussian-sum fit of the target on the 1 nm grid; returns params and cos to the reference."""
    p0 = []
    for c in TARGET_CENTRES_INIT:
        p0 += [c, 15.0, 0.3]
    p0.append(0.05)

    def model(p):
        k = (len(p) - 1) // 3
        p3 = np.reshape(p[:-1], (k, 3))
        return gaussian_sum(WAVELENGTHS_NM, p3[:, 0], p3[:, 1], p3[:, 2], p[-1])

    res = least_squares(lambda p: model(p) - reference, p0)
    p3 = np.reshape(res.x[:-1], (-1, 3))
    spec = {
        "centres_nm": p3[:, 0].tolist(),
        "widths_nm": np.abs(p3[:, 1]).tolist(),
        "heights": p3[:, 2].tolist(),
        "offset": float(res.x[-1]),
        "what": "Gaussian-sum fit (scripts/fit_virtual_lab.py) of the AgBONN target: DDA extinction of a "
        "50 nm-edge, 10 nm-thick Ag nanoprism, peak 1.2 at 642 nm",
    }
    a, b = minmax(model(res.x)), minmax(reference)
    return spec, float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# --- fitting ----------------------------------------------------------------------------------


def fit_model(
    data: dict, target: np.ndarray, train: np.ndarray, run1_train: list[int], seed: int, **kw
) -> tuple[SpectrumPhysicsModel, float]:
    """Fit on the ``train`` condition indices and the Run-1 spectra ``run1_train``."""
    cond = data["conditions"]
    X = cond[INPUT_COLUMNS].to_numpy()
    y = cond["loss_median"].to_numpy()
    r1 = [data["run1"][i] for i in run1_train]
    sX = X[[r["condition_index"] for r in r1]] if r1 else None
    sY = np.stack([r["median_spectrum"] for r in r1]) if r1 else None
    return fit_physics_model(X[train], y[train], target, sX, sY, seed=seed, feature_X=X, **kw)


def best_of(data, target, train, run1_train, restarts, **kw) -> SpectrumPhysicsModel:
    fits = [fit_model(data, target, train, run1_train, seed=s, **kw) for s in range(restarts)]
    return min(fits, key=lambda f: f[1])[0]


# --- evaluation -------------------------------------------------------------------------------


def predicted_losses(model: SpectrumPhysicsModel, X: np.ndarray, target: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return spectrum_losses(model(torch.tensor(X, dtype=torch.float64)).numpy(), target)


def loss_metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    resid = pred - true
    return {
        "mae": float(np.abs(resid).mean()),
        "r2": float(1 - (resid**2).sum() / ((true - true.mean()) ** 2).sum()),
        "spearman": float(spearmanr(pred, true).statistic),
        "n": int(len(true)),
    }


def spectrum_metrics(model: SpectrumPhysicsModel, data: dict, run1_ids: list[int]) -> dict:
    X = data["conditions"][INPUT_COLUMNS].to_numpy()
    cos_raw, cos_mm, peak_err = [], [], []
    for i in run1_ids:
        r = data["run1"][i]
        with torch.no_grad():
            s = model(torch.tensor(X[[r["condition_index"]]], dtype=torch.float64)).numpy()[0]
        m = r["median_spectrum"]
        cos_raw.append(float(s @ m / np.linalg.norm(s) / np.linalg.norm(m)))
        a, b = minmax(s), minmax(m)
        cos_mm.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
        peak_err.append(float(s.max() - m.max()))
    return {
        "cos_raw_mean": float(np.mean(cos_raw)),
        "cos_raw_min": float(np.min(cos_raw)),
        "cos_minmax_mean": float(np.mean(cos_mm)),
        "peak_absorbance_mae": float(np.mean(np.abs(peak_err))),
        "n": len(run1_ids),
    }


def calibrate_noise(model: SpectrumPhysicsModel, data: dict, target: np.ndarray, params_base: dict) -> dict:
    """Intensity CV from Run-1 droplet peaks; aspect jitter chosen to match the droplet-loss SD."""
    cvs = [np.std(r["droplets"].max(axis=1)) / np.mean(r["droplets"].max(axis=1)) for r in data["run1"]]
    white = float(np.median([np.std(np.diff(r["droplets"], axis=1)) / np.sqrt(2) for r in data["run1"]]))
    measured_sd = float(np.median(data["conditions"]["loss_std"].dropna()))
    X = data["conditions"][INPUT_COLUMNS].to_numpy()
    best = None
    for jitter in (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12):
        noise = {"intensity_cv": float(np.median(cvs)), "aspect_jitter": jitter, "white_noise": white, "p_fail": 0.0}
        params = model.to_params(noise, {}, {})
        lab = VirtualLab(params, n_replicates=21, seed=1)
        sds = [np.std(spectrum_losses(block, target)) for block in lab.measure(X)]
        gap = abs(np.median(sds) - measured_sd)
        if best is None or gap < best[0]:
            best = (gap, noise, float(np.median(sds)))
    noise = dict(best[1])
    noise["p_fail"] = 0.02
    return {"noise": noise, "measured_droplet_loss_sd": measured_sd, "lab_droplet_loss_sd": best[2]}


def landscape(model: SpectrumPhysicsModel, data: dict, target: np.ndarray, n: int = 60000, seed: int = 0) -> dict:
    """Lab optimum over the expanded box (random feasible points), and input importance vs data."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    lo = np.array([4.0, 10.0, 0.5, 0.5, 200.0])
    hi = np.array([45.0, 40.0, 30.0, 20.0, 1000.0])
    rng = np.random.default_rng(seed)
    pts = lo + (hi - lo) * rng.random((n * 3, 5))
    pts = pts[pts[:, :4].sum(1) <= 90.0][:n]
    losses = predicted_losses(model, pts, target)
    best = int(np.nanargmin(losses))
    # refine the best random points with Nelder-Mead inside the box and the 90 % constraint
    from scipy.optimize import minimize

    def f(u: np.ndarray) -> float:
        x = lo + (hi - lo) * u
        if (u < 0).any() or (u > 1).any() or x[:4].sum() > 90.0:
            return 1.0
        return float(predicted_losses(model, x[None], target)[0])

    refined = [
        minimize(
            f, (pts[i] - lo) / (hi - lo), method="Nelder-Mead", options={"maxiter": 400, "xatol": 1e-4, "fatol": 1e-6}
        )
        for i in np.argsort(losses)[:5]
    ]
    r_best = min(refined, key=lambda r: r.fun)
    X = data["conditions"][INPUT_COLUMNS].to_numpy()
    y_real = data["conditions"]["loss_median"].to_numpy()
    y_lab = predicted_losses(model, X, target)
    names = ["Q_AgNO3", "Q_PVA", "Q_TSC", "Q_seed", "Q_tot"]
    from screening.objectives.synthesis.explain import shap_values

    importance, shap_imp = {}, {}
    bg = X[np.random.default_rng(1).choice(len(X), 30, replace=False)]
    for label, y in (("real_data", y_real), ("virtual_lab", y_lab)):
        rf = RandomForestRegressor(300, min_samples_leaf=2, random_state=0).fit(X, y)
        imp = permutation_importance(rf, X, y, n_repeats=20, random_state=0).importances_mean
        importance[label] = dict(zip(names, np.round(imp, 4).tolist()))
        # mean |SHAP| of the RF fitted to the real losses, and of the lab's own loss function
        fn = rf.predict if label == "real_data" else (lambda Z: predicted_losses(model, Z, target))
        shap_imp[label] = dict(zip(names, np.round(np.abs(shap_values(fn, bg, X)).mean(0), 4).tolist()))
    ranks = [spearmanr(list(importance["real_data"].values()), list(importance["virtual_lab"].values())).statistic]
    return {
        "optimum_loss": float(r_best.fun),
        "optimum_x": (lo + (hi - lo) * r_best.x).round(2).tolist(),
        "best_random_point_loss": float(losses[best]),
        "best_random_point_x": pts[best].round(2).tolist(),
        "fraction_below_0.2": float(np.mean(losses < 0.2)),
        "fraction_below_0.167": float(np.mean(losses < 0.167)),
        "fraction_below_0.135": float(np.mean(losses < 0.135)),
        "importance_permutation_rf": importance,
        "importance_rank_spearman": float(ranks[0]),
        "importance_mean_abs_shap": shap_imp,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--restarts", type=int, default=2, help="random restarts of the final fit")
    ap.add_argument("--cv-restarts", type=int, default=1, help="random restarts per held-out fit")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--decay", type=float, default=1e-2, help="L2 weight of the chemistry map (smoothness)")
    ap.add_argument("--no-cv", action="store_true", help="skip the held-out evaluations")
    ap.add_argument("--out", type=Path, default=REPO / "screening" / "data")
    ap.add_argument(
        "--refresh-landscape",
        action="store_true",
        help="keep the fitted lab in --out, recompute only its landscape / importance figures",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    data = load_reference(args.shared)
    if args.refresh_landscape:
        params = VirtualLabParams.load(args.out / "virtual_lab_agbonn.json")
        target = load_target(str(args.out / "agbonn_target.json"))
        params.calibration["landscape"] = landscape(SpectrumPhysicsModel.from_params(params), data, target)
        params.save(args.out / "virtual_lab_agbonn.json")
        print(json.dumps(params.calibration["landscape"], indent=1))
        return
    target_spec, target_cos = fit_target(data["target_reference"])
    target = gaussian_sum(
        WAVELENGTHS_NM,
        target_spec["centres_nm"],
        target_spec["widths_nm"],
        target_spec["heights"],
        target_spec["offset"],
    )
    print(f"target: Gaussian sum, cos(minmax) to the reference = {target_cos:.5f}")
    cond = data["conditions"]
    X = cond[INPUT_COLUMNS].to_numpy()
    y = cond["loss_median"].to_numpy()
    n = len(cond)
    calibration: dict = {"target_cos_to_reference": target_cos}
    kw = {"steps": args.steps, "decay": args.decay}
    # the shipped model first (written at once), then the held-out figures added to its file
    model = best_of(data, target, np.arange(n), list(range(len(data["run1"]))), args.restarts, **kw)
    calibration["in_sample_loss"] = loss_metrics(predicted_losses(model, X, target), y)
    calibration["in_sample_run1_spectra"] = spectrum_metrics(model, data, list(range(len(data["run1"]))))
    noise = calibrate_noise(model, data, target, {})
    calibration["noise"] = {k: v for k, v in noise.items() if k != "noise"}
    calibration["landscape"] = landscape(model, data, target)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "agbonn_target.json").write_text(json.dumps(target_spec, indent=1))
    model.to_params(noise["noise"], calibration, {}).save(args.out / "virtual_lab_agbonn.json")
    print(json.dumps(calibration, indent=1), flush=True)
    if not args.no_cv:
        # 5-fold CV over conditions; the 15 Run-1 spectra are split across the folds too.
        rng = np.random.default_rng(0)
        fold = rng.permutation(np.arange(n) % 5)
        run1_fold = np.array([fold[r["condition_index"]] for r in data["run1"]])
        pred = np.empty(n)
        spec_rows = []
        for k in range(5):
            train = np.flatnonzero(fold != k)
            r1_train = [i for i in range(len(data["run1"])) if run1_fold[i] != k]
            r1_test = [i for i in range(len(data["run1"])) if run1_fold[i] == k]
            held = best_of(data, target, train, r1_train, args.cv_restarts, **kw)
            test = np.flatnonzero(fold == k)
            pred[test] = predicted_losses(held, X[test], target)
            if r1_test:
                spec_rows.append((spectrum_metrics(held, data, r1_test), len(r1_test)))
            print(
                f"  fold {k}: held-out loss MAE {np.abs(pred[test] - y[test]).mean():.3f}  ({time.time() - t0:.0f} s)"
            )
        calibration["cv5_loss"] = loss_metrics(pred, y)
        w = np.array([c for _, c in spec_rows], dtype=float)
        calibration["cv5_run1_spectra"] = {
            key: float(np.average([m[key] for m, _ in spec_rows], weights=w))
            if key != "cos_raw_min"
            else float(min(m[key] for m, _ in spec_rows))
            for key in spec_rows[0][0]
            if key != "n"
        }
        calibration["cv5_run1_spectra"]["n"] = int(w.sum())
        # Extrapolation: train on BO runs 1-8, predict the DNN runs 6-8.
        bo = cond["run"].str.startswith("BO").to_numpy()
        held = best_of(data, target, np.flatnonzero(bo), list(range(len(data["run1"]))), args.cv_restarts, **kw)
        calibration["bo_to_dnn_loss"] = loss_metrics(predicted_losses(held, X[~bo], target), y[~bo])
        print(
            f"  CV: {calibration['cv5_loss']}\n  spectra: {calibration['cv5_run1_spectra']}\n  BO->DNN: {calibration['bo_to_dnn_loss']}"
        )
    calibration["fit_seconds"] = round(time.time() - t0, 1)
    model.to_params(noise["noise"], calibration, {}).save(args.out / "virtual_lab_agbonn.json")
    print(json.dumps({k: v for k, v in calibration.items() if k.startswith(("cv5", "bo_to"))}, indent=1))
    print(f"wrote {args.out / 'virtual_lab_agbonn.json'} and {args.out / 'agbonn_target.json'}")


if __name__ == "__main__":
    main()
