"""Step 2 of the two-step method: a spectrum network proposes the next conditions.

Mekki-Berrada et al. (2021) ran Bayesian optimisation first (step 1) and, once it had sampled the
space, trained a neural network on every measured spectrum to predict the spectrum of any
condition; the conditions whose *predicted* loss was lowest were run next, alongside BO, and
compared with it round by round. This module is that step, for any box domain and target:

* :func:`training_set` — conditions and per-condition median spectra from told observations;
* :func:`propose` — the ``n`` lowest-predicted-loss conditions among many feasible random ones,
  kept apart by a minimum distance so a batch is not 15 copies of one point;
* :func:`check_stop` — the stop rules: the best measured loss is below a threshold; the
  regression is *stable* (this round's model predicts what last round's did on a fixed probe
  set); the regression is *accurate* on the newest round (last round's model predicted the
  losses that were then measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from screening.bo.domain import Box
from screening.models.spectrum_mlp import SpectrumEnsemble, train_spectrum_ensemble
from screening.objectives.synthesis.spectral_loss import spectrum_losses


def training_set(
    points: Sequence[Sequence[float]] | np.ndarray, spectra: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Conditions (n, d) and the median droplet spectrum of each (n, n_wavelengths).

    ``spectra[i]`` is condition i's replicate block (n_droplets, n_wavelengths); NaN rows (failed
    droplets) are ignored and conditions with no usable droplet are left out.
    """
    X, Y = [], []
    for x, block in zip(points, spectra):
        block = np.atleast_2d(np.asarray(block, dtype=float))
        ok = np.isfinite(block).all(axis=1)
        if ok.any():
            X.append(np.asarray(x, dtype=float))
            Y.append(np.median(block[ok], axis=0))
    if not X:
        raise ValueError("no condition with a usable spectrum to train on")
    return np.vstack(X), np.vstack(Y)


def fit_spectrum_model(
    X: np.ndarray, Y: np.ndarray, box: Box, seed: int = 0, n_members: int = 3, epochs: int = 800
) -> SpectrumEnsemble:
    """Train the spectrum ensemble on everything measured so far (inputs scaled by the hard box)."""
    lo = np.array(box.hard_lower if box.hard_lower is not None else box.lower)
    hi = np.array(box.hard_upper if box.hard_upper is not None else box.upper)
    return train_spectrum_ensemble(X, Y, lo, hi, n_members=n_members, seed=seed, epochs=epochs)


def predicted_loss(model: SpectrumEnsemble, X: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The AgBONN loss of the predicted spectra (n,); negative absorbances are clipped to 0."""
    spectra = np.clip(model.predict(X), 0.0, None)
    loss = spectrum_losses(spectra, target)
    return np.where(np.isfinite(loss), loss, 1.0)


def propose(
    model: SpectrumEnsemble,
    box: Box,
    target: np.ndarray,
    n: int,
    seed: int = 0,
    n_candidates: int = 20000,
    min_distance: float = 0.05,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """The ``n`` feasible conditions with the lowest predicted loss, mutually ≥ ``min_distance``
    apart (and from ``exclude``) in the box's unit coordinates. Returns (n, d) in box units."""
    rng = np.random.default_rng(seed)
    cands = box.uniform(n_candidates, rng)
    loss = predicted_loss(model, cands, target)
    order = np.argsort(loss, kind="stable")
    U = box.to_unit(cands)
    taken = [] if exclude is None or not len(exclude) else list(box.to_unit(np.atleast_2d(exclude)))
    picks: list[int] = []
    for i in order:
        if taken and np.min(np.linalg.norm(np.asarray(taken) - U[i], axis=1)) < min_distance:
            continue
        picks.append(int(i))
        taken.append(U[i])
        if len(picks) == n:
            break
    if len(picks) < n:  # a tiny box: fill with the next best regardless of distance
        rest = [int(i) for i in order if int(i) not in picks]
        picks += rest[: n - len(picks)]
    return cands[picks]


@dataclass(frozen=True)
class StopCheck:
    """The three stop rules after a round, with the numbers behind them."""

    best_loss: float
    loss_reached: bool
    stability: float | None  # mean |Δ predicted loss| between this and last round's model (probe set)
    stable: bool
    newest_error: float | None  # mean |predicted − measured| loss on the newest round, last round's model
    accurate: bool

    @property
    def stop(self) -> bool:
        """Stop when the target is reached, or when the regression has converged (stable and
        accurate): more rounds of it would only repeat its proposals."""
        return self.loss_reached or (self.stable and self.accurate)


def check_stop(
    best_loss: float,
    threshold: float,
    probe_now: np.ndarray | None,
    probe_before: np.ndarray | None,
    newest_predicted: np.ndarray | None,
    newest_measured: np.ndarray | None,
    stable_tol: float = 0.02,
    accurate_tol: float = 0.05,
) -> StopCheck:
    """Evaluate the stop rules (losses in loss units; tolerances are mean absolute differences)."""
    stability = None
    if probe_now is not None and probe_before is not None:
        stability = float(np.mean(np.abs(np.asarray(probe_now) - np.asarray(probe_before))))
    error = None
    if newest_predicted is not None and newest_measured is not None and len(newest_measured):
        ok = np.isfinite(newest_measured)
        if ok.any():
            error = float(np.mean(np.abs(np.asarray(newest_predicted)[ok] - np.asarray(newest_measured)[ok])))
    return StopCheck(
        best_loss=float(best_loss),
        loss_reached=bool(best_loss <= threshold),
        stability=stability,
        stable=stability is not None and stability <= stable_tol,
        newest_error=error,
        accurate=error is not None and error <= accurate_tol,
    )
