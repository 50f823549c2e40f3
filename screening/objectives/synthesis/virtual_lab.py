"""The virtual silver-nanoparticle flow reactor: synthesis conditions → noisy replicate spectra.

A stand-in for the AgBONN droplet reactor (Mekki-Berrada et al. 2021) so the synthesis objective
can be run, tested and benchmarked with no lab. It is a *physics* spectrum model whose particle
population is set by a small learned map of the flow conditions, fitted by
``scripts/fit_virtual_lab.py`` to the real campaign (see ``docs/virtual_lab.md`` for the
held-out calibration figures and why this design was chosen).

Optics (quasi-static, per particle, in water n = 1.333):

* silver permittivity ε(ω): Drude–Lorentz fit of Rakić et al., Appl. Opt. 37, 5271 (1998),
  with the free-electron damping raised by the surface-scattering term A·ħv_F / L_eff
  (ħv_F = 0.915 eV·nm, L_eff the particle's smallest dimension, nm);
* particles are oblate spheroids (diameter D, thickness T, aspect ratio D/T): depolarisation
  factors L_i, polarisabilities α_i = (abc/3)(ε − ε_m)/(ε_m + L_i(ε − ε_m)), corrected for
  dynamic depolarisation and radiative damping (modified long-wavelength approximation,
  α' = α / (1 − k²α/a_i − (2/3)ik³α)), extinction σ = (4πk/3) Σ_i Im α'_i (random orientation);
* the ensemble is a near-spherical "seed-like" population plus a plate (prism) population with
  a log-normal aspect-ratio distribution (Gauss–Hermite quadrature), plus a weak λ^-p
  scattering background.

Chemistry map: five latents per condition — log absorbance scale, plate fraction, median and
spread of the plate aspect ratio, background — come from a small tanh network of the scaled
flow fractions *and their log ratios* (AgNO3/seed sets how much silver each seed grows, citrate/
seed the plate habit), so sizes and shapes are driven by the ratios as in seed-mediated growth.

Replicate droplets differ by a log-normal intensity factor, a jitter of the aspect ratio and
white detector noise, calibrated to the measured droplet scatter; a droplet can fail (no
spectrum: NaN), with a set probability, as real droplets do.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from screening.errors import ModelLoadError
from screening.objectives.synthesis.spectral_loss import WAVELENGTHS_NM, minmax

HC_EV_NM = 1239.84198
"""Photon energy × wavelength, eV·nm."""
HBAR_VF_EV_NM = 0.9149
"""ħ × Fermi velocity of silver (1.39e6 m/s), eV·nm: sets the surface-scattering damping."""
N_WATER = 1.333

# Rakić et al. 1998, silver, Lorentz–Drude: plasma energy, oscillator strengths, dampings and
# resonance energies (eV). Index 0 is the free-electron (Drude) term.
AG_PLASMA_EV = 9.01
AG_STRENGTH = (0.845, 0.065, 0.124, 0.011, 0.840, 5.646)
AG_DAMPING_EV = (0.048, 3.886, 0.452, 0.065, 0.916, 2.419)
AG_RESONANCE_EV = (0.0, 0.816, 4.481, 8.185, 9.083, 20.29)

INPUT_ORDER = ("Q_AgNO3", "Q_PVA", "Q_TSC", "Q_seed", "Q_tot")
N_LATENT = 5
N_AR_NODES = 9

DEFAULT_PARAMS_RESOURCE = "virtual_lab_agbonn.json"
"""Shipped fit (``screening/data/``), written by ``scripts/fit_virtual_lab.py``."""


def silver_permittivity(energy_ev: Tensor, extra_damping_ev: Tensor | float = 0.0) -> Tensor:
    """Complex relative permittivity of Ag (Im > 0) at photon energies ``energy_ev``.

    ``extra_damping_ev`` adds to the Drude damping (size-limited mean free path); it broadcasts
    against ``energy_ev``.
    """
    w = energy_ev.to(torch.complex128)
    wp2 = AG_PLASMA_EV**2
    g0 = AG_DAMPING_EV[0] + torch.as_tensor(extra_damping_ev, dtype=torch.float64)
    eps = 1.0 - AG_STRENGTH[0] * wp2 / (w * w + 1j * w * g0)
    for f, g, w0 in zip(AG_STRENGTH[1:], AG_DAMPING_EV[1:], AG_RESONANCE_EV[1:]):
        eps = eps + f * wp2 / (w0 * w0 - w * w - 1j * w * g)
    return eps


def oblate_depolarisation(aspect_ratio: Tensor) -> tuple[Tensor, Tensor]:
    """Depolarisation factors (in-plane L_a, out-of-plane L_c) of an oblate spheroid, D/T ≥ 1."""
    ar = torch.clamp(aspect_ratio, min=1.0 + 1e-4)
    e2 = 1.0 - 1.0 / ar**2
    e = torch.sqrt(e2)
    l_c = (1.0 / e2) * (1.0 - torch.sqrt(1.0 - e2) / e * torch.asin(e))
    return (1.0 - l_c) / 2.0, l_c


def spheroid_extinction(
    wavelength_nm: Tensor, diameter_nm: Tensor, thickness_nm: Tensor, damping_scale: Tensor | float
) -> Tensor:
    """Orientation-averaged extinction cross-section (nm²) of Ag oblate spheroids in water (MLWA).

    ``diameter_nm`` and ``thickness_nm`` broadcast against each other (shape ``S``); the result
    has shape ``S + (len(wavelength_nm),)``.
    """
    d = diameter_nm.unsqueeze(-1)
    t = thickness_nm.unsqueeze(-1)
    lam = wavelength_nm.to(torch.float64)
    eps_m = N_WATER**2
    k = 2.0 * math.pi * N_WATER / lam
    energy = HC_EV_NM / lam
    l_eff = torch.minimum(d, t)
    eps = silver_permittivity(energy, damping_scale * HBAR_VF_EV_NM / l_eff)
    l_a, l_c = oblate_depolarisation(d / t)
    a, c = d / 2.0, t / 2.0
    abc3 = a * a * c / 3.0
    sigma = torch.zeros(torch.broadcast_shapes(d.shape, lam.shape), dtype=torch.float64)
    for weight, depol, semi_axis in ((2.0, l_a, a), (1.0, l_c, c)):
        alpha = abc3 * (eps - eps_m) / (eps_m + depol * (eps - eps_m))
        alpha = alpha / (1.0 - k * k * alpha / semi_axis - (2.0j / 3.0) * k**3 * alpha)
        sigma = sigma + weight * torch.imag(alpha)
    return (4.0 * math.pi * k / 3.0) * sigma


@dataclass
class VirtualLabParams:
    """Everything the virtual lab needs, as plain numbers (JSON in ``screening/data/``).

    Network weights map features → latents; ``physics`` holds the global particle constants
    (nm, dimensionless); ``noise`` the replicate model; ``feature_*`` the input scaling.
    """

    feature_mean: list[float]
    feature_std: list[float]
    weights: dict[str, list]
    physics: dict[str, float]
    noise: dict[str, float] = field(
        default_factory=lambda: {"intensity_cv": 0.05, "aspect_jitter": 0.02, "white_noise": 0.003, "p_fail": 0.02}
    )
    hidden: int = 12
    calibration: dict = field(default_factory=dict)
    target: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename), so a reader never sees half a file."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path | None = None) -> VirtualLabParams:
        """Load a fit; ``None`` loads the one shipped with the package."""
        try:
            if path is None:
                text = resources.files("screening").joinpath("data", DEFAULT_PARAMS_RESOURCE).read_text()
            else:
                text = Path(path).read_text()
            return cls(**json.loads(text))
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"virtual-lab parameters {path or DEFAULT_PARAMS_RESOURCE}: {exc}") from exc


def condition_features(x: Tensor) -> Tensor:
    """Raw conditions (n, 5: %, %, %, %, µL/min) → features: the five inputs and three log ratios.

    The ratios AgNO3/seed, citrate/seed and AgNO3/citrate carry the seed-mediated growth
    chemistry (silver per seed, shape-directing citrate per seed).
    """
    q_ag, q_pva, q_tsc, q_seed, q_tot = x.unbind(-1)
    return torch.stack(
        [
            q_ag,
            q_pva,
            q_tsc,
            q_seed,
            q_tot / 100.0,
            torch.log(q_ag / q_seed),
            torch.log(q_tsc / q_seed),
            torch.log(q_ag / q_tsc),
        ],
        dim=-1,
    )


class SpectrumPhysicsModel(nn.Module):
    """Differentiable conditions → noise-free mean absorbance spectrum (n, 421)."""

    PHYSICS_BOUNDS = {
        "seed_diameter_nm": (20.0, 80.0),
        "seed_aspect": (1.05, 3.0),
        "plate_thickness_nm": (4.0, 16.0),
        "damping_scale": (0.3, 2.0),
        "background_power": (0.0, 4.0),
    }

    # Buffers, declared so the type checker sees tensors rather than nn.Module.__getattr__'s union.
    feature_mean: Tensor
    feature_std: Tensor
    gh_nodes: Tensor
    gh_weights: Tensor
    wavelengths: Tensor
    aspect_grid: Tensor

    def __init__(self, feature_mean: Tensor, feature_std: Tensor, hidden: int = 12) -> None:
        super().__init__()
        self.register_buffer("feature_mean", feature_mean.to(torch.float64))
        self.register_buffer("feature_std", feature_std.to(torch.float64))
        self.net = nn.Sequential(nn.Linear(len(feature_mean), hidden), nn.Tanh(), nn.Linear(hidden, N_LATENT)).double()
        self.physics_raw = nn.Parameter(torch.zeros(len(self.PHYSICS_BOUNDS), dtype=torch.float64))
        nodes, weights = np.polynomial.hermite_e.hermegauss(N_AR_NODES)
        self.register_buffer("gh_nodes", torch.tensor(nodes, dtype=torch.float64))
        self.register_buffer("gh_weights", torch.tensor(weights / weights.sum(), dtype=torch.float64))
        self.register_buffer("wavelengths", torch.tensor(WAVELENGTHS_NM, dtype=torch.float64))
        self.register_buffer(
            "aspect_grid", torch.exp(torch.linspace(math.log(1.1), math.log(40.0), 120, dtype=torch.float64))
        )

    def physics(self) -> dict[str, Tensor]:
        """Global constants, each squashed into its physical range."""
        out = {}
        for (name, (lo, hi)), raw in zip(self.PHYSICS_BOUNDS.items(), self.physics_raw):
            out[name] = lo + (hi - lo) * torch.sigmoid(raw)
        return out

    def latents(self, x: Tensor) -> dict[str, Tensor]:
        """Per-condition population: absorbance scale, plate fraction, aspect-ratio median/spread."""
        z = self.net((condition_features(x) - self.feature_mean) / self.feature_std)
        return {
            "scale": torch.exp(z[:, 0] - 1.0),
            "plate_fraction": torch.sigmoid(z[:, 1]),
            "aspect_median": 1.5 + torch.exp(z[:, 2] + 1.0),
            "aspect_spread": 0.05 + 0.6 * torch.sigmoid(z[:, 3]),
            "background": 0.05 * torch.exp(z[:, 4] - 1.0),
        }

    def plate_table(self) -> Tensor:
        """Extinction per unit silver volume of single plates on the log-spaced aspect grid (G, L).

        The ensemble average interpolates this table linearly in log(aspect ratio), so the costly
        complex optics run on G = 96 shapes per call instead of once per condition and node.
        """
        p = self.physics()
        ar = self.aspect_grid
        thick = p["plate_thickness_nm"].expand_as(ar)
        table = spheroid_extinction(self.wavelengths, ar * thick, thick, p["damping_scale"])
        return table / ((ar * thick) ** 2 * thick)[:, None]

    def spectra_from_latents(self, lat: dict[str, Tensor], aspect_shift: Tensor | None = None) -> Tensor:
        """Mean spectrum of the ensemble; ``aspect_shift`` (n,) multiplies the plate aspect ratio."""
        p = self.physics()
        lam = self.wavelengths
        median = lat["aspect_median"] if aspect_shift is None else lat["aspect_median"] * aspect_shift
        log_ar = torch.log(median)[:, None] + lat["aspect_spread"][:, None] * self.gh_nodes[None, :]  # (n, q)
        grid = torch.log(self.aspect_grid)
        pos = ((log_ar - grid[0]) / (grid[1] - grid[0])).clamp(0.0, len(grid) - 1.000001)
        i0 = pos.floor().long()
        frac = (pos - i0)[..., None]
        table = self.plate_table()
        plate = (1.0 - frac) * table[i0] + frac * table[i0 + 1]  # (n, q, L)
        plate = (self.gh_weights[None, :, None] * plate).sum(1)
        seed_d = p["seed_diameter_nm"]
        seed_t = seed_d / p["seed_aspect"]
        seed = spheroid_extinction(lam, seed_d.reshape(1), seed_t.reshape(1), p["damping_scale"])[0]
        seed = seed / (seed_d**2 * seed_t)
        f = lat["plate_fraction"][:, None]
        particles = f * plate + (1.0 - f) * seed[None, :]
        particles = particles / particles.detach().amax(dim=1, keepdim=True).clamp_min(1e-12)
        background = lat["background"][:, None] * (380.0 / lam[None, :]) ** p["background_power"]
        return lat["scale"][:, None] * particles + background

    def forward(self, x: Tensor) -> Tensor:
        return self.spectra_from_latents(self.latents(x))

    def to_params(self, noise: dict, calibration: dict, target: dict) -> VirtualLabParams:
        sd = {
            k: v.detach().cpu().numpy().tolist()
            for k, v in self.state_dict().items()
            if k.startswith(("net", "physics"))
        }
        first = self.net[0]
        assert isinstance(first, nn.Linear), "net starts with the hidden Linear layer (see __init__)"
        return VirtualLabParams(
            feature_mean=self.feature_mean.tolist(),
            feature_std=self.feature_std.tolist(),
            weights=sd,
            physics={k: float(v.detach()) for k, v in self.physics().items()},
            noise=dict(noise),
            hidden=first.out_features,
            calibration=calibration,
            target=target,
        )

    @classmethod
    def from_params(cls, params: VirtualLabParams) -> SpectrumPhysicsModel:
        model = cls(torch.tensor(params.feature_mean), torch.tensor(params.feature_std), hidden=params.hidden)
        state = model.state_dict()
        for k, v in params.weights.items():
            if k not in state:
                raise ModelLoadError(f"virtual-lab parameters: unknown weight {k!r}")
            state[k] = torch.tensor(v, dtype=torch.float64)
        model.load_state_dict(state)
        return model.eval()


class VirtualLab:
    """A simulated droplet reactor: ``measure(X)`` returns replicate spectra per condition.

    ``X`` is (n, 5) in the order Q_AgNO3 (%), Q_PVA (%), Q_TSC (%), Q_seed (%), Q_tot (µL/min).
    Each condition gives ``n_replicates`` droplets: an array (n_replicates, 421) of absorbances
    on 380–800 nm; a failed droplet is a row of NaN. ``seed`` makes the noise reproducible.
    """

    def __init__(
        self,
        params: VirtualLabParams | None = None,
        n_replicates: int = 21,
        seed: int | None = 0,
        p_fail: float | None = None,
        noise_scale: float = 1.0,
    ) -> None:
        self.params = params if params is not None else VirtualLabParams.load()
        self.model = SpectrumPhysicsModel.from_params(self.params)
        self.n_replicates = int(n_replicates)
        self.rng = np.random.default_rng(seed)
        self.p_fail = float(self.params.noise.get("p_fail", 0.0) if p_fail is None else p_fail)
        self.noise_scale = float(noise_scale)

    def mean_spectra(self, X: np.ndarray) -> np.ndarray:
        """Noise-free spectra (n, 421), absorbance: the lab's "truth" for a condition."""
        with torch.no_grad():
            return self.model(torch.as_tensor(np.atleast_2d(X), dtype=torch.float64)).numpy()

    def measure(self, X: np.ndarray) -> list[np.ndarray]:
        """One replicate block (n_replicates, 421) per condition, with noise and failed droplets."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        if X.shape[1] != len(INPUT_ORDER):
            raise ValueError(f"conditions need {len(INPUT_ORDER)} columns {INPUT_ORDER}, got {X.shape[1]}")
        noise = self.params.noise
        n, r = len(X), self.n_replicates
        with torch.no_grad():
            xt = torch.as_tensor(np.repeat(X, r, axis=0), dtype=torch.float64)
            lat = self.model.latents(xt)
            shift = torch.as_tensor(np.exp(self.noise_scale * noise["aspect_jitter"] * self.rng.standard_normal(n * r)))
            spectra = self.model.spectra_from_latents(lat, aspect_shift=shift).numpy()
        cv = self.noise_scale * noise["intensity_cv"]
        spectra = spectra * np.exp(cv * self.rng.standard_normal((n * r, 1)) - 0.5 * cv * cv)
        spectra = spectra + self.noise_scale * noise["white_noise"] * self.rng.standard_normal(spectra.shape)
        failed = self.rng.random(n * r) < self.p_fail
        spectra[failed] = np.nan
        return list(spectra.reshape(n, r, -1))


# --- fitting (used by scripts/fit_virtual_lab.py and the calibration test) ----------------------


def torch_spectrum_loss(spectra: Tensor, target_minmax: Tensor) -> Tensor:
    """The AgBONN loss in torch, differentiable (same formula as ``spectral_loss.spectrum_losses``)."""
    lo = spectra.amin(dim=1, keepdim=True)
    hi = spectra.amax(dim=1, keepdim=True)
    s_mm = (spectra - lo) / (hi - lo).clamp_min(1e-9)
    cos = (s_mm @ target_minmax) / (s_mm.norm(dim=1) * target_minmax.norm())
    peak = hi[:, 0]
    delta = torch.where(peak > 1.2, torch.zeros_like(peak), torch.where(peak >= 0.7, torch.ones_like(peak), peak / 0.7))
    return 1.0 - cos * delta


def fit_physics_model(
    X: np.ndarray,
    loss: np.ndarray,
    target: np.ndarray,
    spectra_X: np.ndarray | None = None,
    spectra: np.ndarray | None = None,
    seed: int = 0,
    steps: int = 1000,
    hidden: int = 16,
    spectrum_weight: float = 3.0,
    decay: float = 1e-2,
    low_loss_offset: float = 0.05,
    feature_X: np.ndarray | None = None,
) -> tuple[SpectrumPhysicsModel, float]:
    """Fit the chemistry map and the global physics constants (Adam, full batch).

    ``X`` (n, 5) conditions with measured median droplet ``loss`` (n,); optionally measured
    median spectra (m, 421) at ``spectra_X`` (m, 5), which pin the absolute absorbance and shape
    that the loss alone cannot separate. ``feature_X`` sets the input standardisation (default
    ``X``). Conditions with low loss weigh more (∝ 1/(loss + ``low_loss_offset``)): the optimum
    region is what a campaign must find, and an unweighted fit shrinks the extremes toward the
    mean. Returns the model and the final objective value.
    """
    torch.manual_seed(seed)
    Xt = torch.as_tensor(np.asarray(X, dtype=float), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(loss, dtype=float), dtype=torch.float64)
    feats = condition_features(
        torch.as_tensor(np.asarray(X if feature_X is None else feature_X, dtype=float), dtype=torch.float64)
    )
    model = SpectrumPhysicsModel(feats.mean(0), feats.std(0), hidden=hidden)
    t_mm = torch.as_tensor(minmax(np.asarray(target, dtype=float)), dtype=torch.float64)
    has_spectra = spectra is not None and len(spectra) > 0
    if has_spectra:
        sX = torch.as_tensor(np.asarray(spectra_X, dtype=float), dtype=torch.float64)
        sY = torch.as_tensor(np.asarray(spectra, dtype=float), dtype=torch.float64)
    weight = 1.0 / (y + low_loss_offset)
    weight = weight / weight.mean()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    obj = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        obj = (weight * (torch_spectrum_loss(model(Xt), t_mm) - y) ** 2).mean()
        if has_spectra:
            obj = obj + spectrum_weight * ((model(sX) - sY) ** 2).mean()
        obj = obj + decay * sum((p**2).sum() for n, p in model.net.named_parameters() if "weight" in n)
        obj.backward()
        opt.step()
        sched.step()
    return model.eval(), float(obj.detach())
