"""A small neural network that predicts a whole UV-Vis spectrum from synthesis conditions.

Step 2 of the AgBONN two-step method (Mekki-Berrada et al. 2021): once Bayesian optimisation has
sampled enough conditions, a network trained on *all* spectra so far (not only on the scalar
loss) predicts the spectrum of any condition, and the conditions whose predicted spectrum is
closest to the target are run next. The authors' network was 5 → 50 → 100 → 200 → 500 → 421 with
ReLU; with a few dozen to a few hundred conditions we use a narrower, smooth one and an ensemble
of a few seeds, whose spread says where the prediction is unsure.

Inputs are scaled to [0, 1] by the given bounds (units of the conditions: %, µL/min); outputs
are absorbances, standardised per wavelength during training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class SpectrumMLP(nn.Module):
    """Conditions (n, d) in physical units → spectra (n, n_out) in absorbance."""

    # Buffers, declared so the type checker sees tensors rather than nn.Module.__getattr__'s union.
    lower: torch.Tensor
    upper: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor

    def __init__(self, lower: np.ndarray, upper: np.ndarray, n_out: int, hidden: tuple[int, ...] = (64, 128)) -> None:
        super().__init__()
        self.register_buffer("lower", torch.as_tensor(lower, dtype=torch.float32))
        self.register_buffer("upper", torch.as_tensor(upper, dtype=torch.float32))
        self.register_buffer("y_mean", torch.zeros(n_out))
        self.register_buffer("y_std", torch.ones(n_out))
        layers: list[nn.Module] = []
        width = len(lower)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = (x - self.lower) / (self.upper - self.lower)
        return self.net(u) * self.y_std + self.y_mean


@dataclass
class SpectrumEnsemble:
    """A few independently seeded :class:`SpectrumMLP`; the prediction is their mean."""

    members: list[SpectrumMLP]

    def predict(self, X: np.ndarray, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predicted spectra (n, n_out); with ``return_std`` also the members' spread."""
        x = torch.as_tensor(np.atleast_2d(X), dtype=torch.float32)
        with torch.no_grad():
            preds = torch.stack([m(x) for m in self.members]).numpy().astype(np.float64)
        mean = preds.mean(axis=0)
        return (mean, preds.std(axis=0)) if return_std else mean


def train_spectrum_mlp(
    X: np.ndarray,
    Y: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    seed: int = 0,
    epochs: int = 800,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    hidden: tuple[int, ...] = (64, 128),
) -> SpectrumMLP:
    """Fit one network on conditions ``X`` (n, d) and spectra ``Y`` (n, n_out), full batch, Adam."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float32))
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float32))
    if X.shape[0] != Y.shape[0] or X.shape[0] < 2:
        raise ValueError(f"need at least 2 matching rows of conditions and spectra, got {X.shape[0]} and {Y.shape[0]}")
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    model = SpectrumMLP(lower, upper, Y.shape[1], hidden)
    with torch.no_grad():
        model.y_mean.copy_(torch.as_tensor(Y.mean(axis=0)))
        model.y_std.copy_(torch.as_tensor(Y.std(axis=0) + 1e-3))
        for p in model.net.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p, generator=gen)
    xt, yt = torch.as_tensor(X), torch.as_tensor(Y)
    yt_std = (yt - model.y_mean) / model.y_std
    opt = torch.optim.AdamW(model.net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    u = (xt - model.lower) / (model.upper - model.lower)
    for _ in range(epochs):
        opt.zero_grad()
        loss = ((model.net(u) - yt_std) ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def train_spectrum_ensemble(
    X: np.ndarray, Y: np.ndarray, lower: np.ndarray, upper: np.ndarray, n_members: int = 3, seed: int = 0, **kw
) -> SpectrumEnsemble:
    """``n_members`` networks with seeds ``seed``, ``seed + 1``, …"""
    return SpectrumEnsemble([train_spectrum_mlp(X, Y, lower, upper, seed=seed + i, **kw) for i in range(n_members)])
