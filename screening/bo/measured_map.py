"""The measured scale: a GP over what the lab reports, learned from its own results.

Why. The network (and the local GP over known data) predicts a DFT-PBE gap ``g(x)``; a lab,
an optical measurement or another functional reports a different quantity. Against PBE,
experimental and GW gaps lie near a line with slope 1.3-1.4 and offset ~0.9 eV, with a
per-material scatter of a few tenths of an eV. A search that ranks by ``g`` alone never learns
that and points at the wrong crystals for ever. So the campaign models the *measured* value

    y(x) = g(x) + a + b (g(x) - g0) + h(g(x)) + r(z(x)) + e(x)

- ``a + b (g - g0)``: the linear map, Gaussian with the identity as its prior mean
  (``a ~ N(0, offset_sd²)``, ``b ~ N(0, slope_sd²)``: slope 1 ± 0.5, offset 0 ± 1 eV);
- ``h``: a smooth non-linear map of ``g`` (a GP over ``g`` with a long lengthscale), for the
  curvature a line cannot hold;
- ``r``: the residual field over a few principal components ``z`` of the embedding (or of the
  user's descriptors): crystals near each other share the lab's correction to the network.
  Where there is a network prediction, it is kept only when the results' marginal likelihood
  gains the BIC price of its two parameters over the map alone: on DFT-scale results (setting b)
  a field fitted to 100 random crystals was as often spurious as real and made the held-out MAE
  worse (0.415 against 0.401 eV), as the neighbour model found for few labels;
- ``e``: noise, ``noise_sd² + base_weight² s(x)²``, where ``s`` is the base model's own
  per-crystal std (the network's uncertainty, or the local GP's over known data): a crystal the
  network is unsure of scatters more.

All of it is one exact GP (a sum of kernels) over the told results, so the map's uncertainty
flows into every candidate's predictive variance, and a few results move it: with 5-10 the
line is well determined. Hyper-parameters of ``h``, ``r`` and ``e`` are MAP estimates under
weak log-normal priors (analytic gradients, L-BFGS-B, a fixed start: deterministic). The
map's prior (``offset_sd``, ``slope_sd``) is not fitted: it is what we believe before a result.

Pure numerics: arrays in, arrays out; nothing here knows pools, files or targets. ``n`` (told
results) is small — hundreds, at most a few thousand — so every solve is exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular

from screening.errors import MatscreenError

LOG_2PI = math.log(2.0 * math.pi)
CHUNK = 16384  # candidates per block of the (N, n) cross-covariance


class MeasuredMapError(MatscreenError):
    """The measured-scale model cannot be fitted or queried with the data given."""


@dataclass(frozen=True)
class MapPrior:
    """What we believe about the measured scale before any result (units of y, eV for gaps).

    ``offset_sd`` / ``slope_sd``: the linear map's prior around the identity; ``smooth_sd`` and
    ``smooth_length`` the prior medians of the non-linear part; ``residual_sd`` and
    ``noise_sd`` the prior medians of the residual field and the noise. The log-normal priors
    on the fitted ones have ``log_sd`` spread."""

    offset_sd: float = 1.0
    slope_sd: float = 0.5
    smooth_sd: float = 0.15
    smooth_length: float = 2.0
    residual_sd: float = 0.3
    noise_sd: float = 0.1
    base_weight: float = 1.0
    log_sd: float = 1.0
    base_weight_log_sd: float = 1.0


@dataclass(frozen=True)
class MeasuredParams:
    """Fitted hyper-parameters: non-linear map (``smooth_sd``, ``smooth_length`` in units of g),
    residual field (``residual_sd``, ``residual_length`` in units of z), noise (``noise_sd``)
    and the weight of the base model's own std in the noise (``base_weight``; 0 without one)."""

    smooth_sd: float
    smooth_length: float
    residual_sd: float
    residual_length: float
    noise_sd: float
    base_weight: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MapSummary:
    """The learned map in words and numbers: ``measured ≈ intercept + slope × predicted`` over
    ``g_range`` (the predictions the results span), ``band``: the map's mean posterior std there;
    ``n``: results it is learned from; ``grid`` / ``mean`` / ``std``: the map itself (for a plot)."""

    intercept: float
    slope: float
    band: float
    n: int
    g_range: tuple[float, float]
    residual_sd: float
    noise_sd: float
    grid: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    # the results it was learned from: base prediction and measured value (for a plot)
    points_g: np.ndarray = field(default_factory=lambda: np.zeros(0))
    points_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    identity: bool = False  # the null model (IdentityMap): the results do not pay for a map
    # the posterior probability of the learned map against measured ≈ predicted, where the search
    # averages the two (1.0: the map alone; the line and band are then the average's)
    weight: float = 1.0

    def words(self, unit: str = "eV") -> str:
        if self.identity:
            return (
                f"measured ≈ predicted (from {self.n} result{'s' if self.n != 1 else ''}: no evidence yet for "
                "another map)"
            )
        sign = "+" if self.slope >= 0 else "-"
        odds = "" if self.weight >= 1.0 else f"; {self.weight:.0%} on this map, the rest on measured ≈ predicted"
        return (
            f"measured ≈ {self.intercept:.2f} {sign} {abs(self.slope):.2f} × predicted (±{self.band:.2f} {unit}, "
            f"from {self.n} result{'s' if self.n != 1 else ''}; "
            f"predicted {_tenths(self.g_range[0])} to {_tenths(self.g_range[1])} {unit}{odds})"
        )

    def to_dict(self) -> dict:
        return {
            "intercept": self.intercept,
            "slope": self.slope,
            "band": self.band,
            "n": self.n,
            "predicted_range": list(self.g_range),
            "residual_sd": self.residual_sd,
            "noise_sd": self.noise_sd,
            "identity": self.identity,
            "weight": self.weight,
            "text": self.words(),
        }


def _as_rows(z: np.ndarray, n: int) -> np.ndarray:
    """``z`` as an (n, d) array (d = 0 allowed: no residual coordinates)."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 2 and z.shape[0] == n:
        return z
    if z.size == 0:
        return np.zeros((n, 0))
    return z.reshape(n, -1)


def _sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d2, 0.0)


class MeasuredGP:
    """The exact GP of the measured value over told results (see the module notes).

    ``fit(g, s, z, y)`` learns hyper-parameters (unless ``params`` are given) and conditions;
    ``predict(g, s, z)`` gives the mean and std of a new *measurement* at each query;
    ``summary()`` states the learned map.

    ``g``: the base prediction per point (the network's, corrected by known data where there
    are some); ``s``: the base model's std per point (None: no per-point std); ``z``: the
    residual field's coordinates; ``y``: the measured values. ``g0``: the centre of the linear
    map (a fixed number, e.g. the pool's median prediction, so the fit does not move with it).
    """

    def __init__(
        self,
        prior: MapPrior | None = None,
        g0: float = 0.0,
        z_scale: float = 1.0,
        residual_needs_evidence: bool = False,
    ) -> None:
        self.prior = prior or MapPrior()
        self.g0 = float(g0)
        self.z_scale = float(z_scale) if z_scale > 0 else 1.0  # typical distance in z (lengthscale prior)
        # True: keep the residual field only when the results' marginal likelihood gains at least
        # the BIC price of its two parameters (ln n) over the map alone (see _fit_params)
        self.residual_needs_evidence = residual_needs_evidence
        self.params: MeasuredParams | None = None

    # ------------------------------------------------------------------ kernel pieces
    def _k_map(self, g1: np.ndarray, g2: np.ndarray, p: MeasuredParams) -> np.ndarray:
        pr = self.prior
        d1, d2 = g1 - self.g0, g2 - self.g0
        k = pr.offset_sd**2 + pr.slope_sd**2 * np.outer(d1, d2)
        if p.smooth_sd > 0:
            k = k + p.smooth_sd**2 * np.exp(-0.5 * (g1[:, None] - g2[None, :]) ** 2 / p.smooth_length**2)
        return k

    def _k_res(self, z1: np.ndarray, z2: np.ndarray, p: MeasuredParams) -> np.ndarray:
        if z1.shape[1] == 0 or p.residual_sd <= 0:
            return np.zeros((z1.shape[0], z2.shape[0]))
        return p.residual_sd**2 * np.exp(-0.5 * _sqdist(z1, z2) / p.residual_length**2)

    def _noise(self, s: np.ndarray | None, n: int, p: MeasuredParams) -> np.ndarray:
        out = np.full(n, p.noise_sd**2)
        if s is not None and p.base_weight > 0:
            out = out + (p.base_weight * s) ** 2
        return out

    def _prior_var(self, g: np.ndarray, p: MeasuredParams) -> np.ndarray:
        pr = self.prior
        return pr.offset_sd**2 + pr.slope_sd**2 * (g - self.g0) ** 2 + p.smooth_sd**2 + p.residual_sd**2

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        g: np.ndarray,
        s: np.ndarray | None,
        z: np.ndarray,
        y: np.ndarray,
        params: MeasuredParams | None = None,
        fit_rows: np.ndarray | None = None,
    ) -> MeasuredGP:
        """Condition on the results (``fit_rows``: the ones hyper-parameters are fitted on;
        default all)."""
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        z = _as_rows(z, g.shape[0])
        s = None if s is None else np.asarray(s, dtype=np.float64).reshape(-1)
        if not (g.shape == y.shape and (s is None or s.shape == g.shape)):
            raise MeasuredMapError(f"{g.shape[0]} predictions, {y.shape[0]} values: one of each per result")
        if not (np.all(np.isfinite(g)) and np.all(np.isfinite(y)) and np.all(np.isfinite(z))):
            raise MeasuredMapError("predictions, coordinates and measured values must be finite")
        if s is not None and not np.all(np.isfinite(s) & (s >= 0)):
            raise MeasuredMapError("the base model's std must be finite and non-negative")
        if params is None:
            rows = np.arange(g.shape[0]) if fit_rows is None else np.asarray(fit_rows)
            params = self._fit_params(g[rows], None if s is None else s[rows], z[rows], y[rows])
        self.params = params
        self.g_, self.s_, self.z_, self.y_ = g, s, z, y
        self._condition()
        return self

    def _condition(self) -> None:
        p = self.params
        assert p is not None
        n = self.g_.shape[0]
        K = self._k_map(self.g_, self.g_, p) + self._k_res(self.z_, self.z_, p)
        K[np.diag_indices(n)] += self._noise(self.s_, n, p) + 1e-9
        self.L_ = np.linalg.cholesky(K) if n else np.zeros((0, 0))
        r = self.y_ - self.g_
        self.alpha_ = cho_solve((self.L_, True), r) if n else np.zeros(0)

    def negative_log_likelihood(self) -> float:
        """The negative log marginal likelihood of the results the model is conditioned on, from
        the factor :meth:`_condition` already holds (compared with :class:`IdentityMap`'s)."""
        n = self.g_.shape[0]
        return (
            0.5 * float((self.y_ - self.g_) @ self.alpha_) + float(np.log(np.diag(self.L_)).sum()) + 0.5 * n * LOG_2PI
        )

    def _hyper_prior(self, use_s: bool, has_z: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The log-normal priors of the six log hyper-parameters (smooth sd and length, residual
        sd and length, noise sd, base weight): medians ``mu0``, spreads ``sd``, and which are free."""
        pr = self.prior
        mu0 = np.log(
            [
                pr.smooth_sd,
                pr.smooth_length,
                pr.residual_sd,
                self.z_scale if has_z else 1.0,
                pr.noise_sd,
                pr.base_weight if use_s else 1.0,
            ]
        )
        sd = np.full(6, pr.log_sd)
        sd[1] = 0.5  # the non-linear map stays smooth (lengthscale ~ eV, not ~ the scatter)
        sd[5] = pr.base_weight_log_sd
        return mu0, sd, np.array([True, True, has_z, has_z, True, use_s])

    def hyper_penalty(self) -> float:
        """Minus the log prior density of the fitted hyper-parameters (up to a constant): what the
        model paid to fit them, compared with :meth:`IdentityMap.hyper_penalty` (a pure function
        of the parameters, so a model rebuilt from cached parameters pays the same)."""
        p = self.params
        assert p is not None
        has_z = self.z_.shape[1] > 0 and p.residual_sd > 0
        mu0, sd, free = self._hyper_prior(p.base_weight > 0, has_z)
        v = np.log(
            np.maximum(
                [p.smooth_sd, p.smooth_length, p.residual_sd, p.residual_length, p.noise_sd, p.base_weight], 1e-300
            )
        )
        return _log_normal_cost(v[free], mu0[free], sd[free])

    def _fit_params(self, g: np.ndarray, s: np.ndarray | None, z: np.ndarray, y: np.ndarray) -> MeasuredParams:
        """MAP hyper-parameters; with fewer than 3 results, the prior's medians."""
        use_s = s is not None and (s.size == 0 or float(np.max(s)) > 0)
        mu0, sd, free = self._hyper_prior(use_s, z.shape[1] > 0)
        start = mu0.copy()
        if g.shape[0] < 3:
            return self._params_from(start, use_s)
        from scipy.optimize import minimize

        lo = mu0 - 3.0 * sd
        hi = mu0 + 3.0 * sd
        lo[4] = max(lo[4], math.log(1e-3))

        s_fit = s if use_s else None

        def optimise(mask: np.ndarray, base: np.ndarray) -> np.ndarray:
            def objective(v_free: np.ndarray) -> tuple[float, np.ndarray]:
                v = base.copy()
                v[mask] = v_free
                nll, grad = self._nll_grad(v, g, s_fit, z, y)
                gpen = (v - mu0) / sd**2
                return nll + _log_normal_cost(v[mask], mu0[mask], sd[mask]), (grad + gpen)[mask]

            with np.errstate(all="ignore"):
                res = minimize(
                    objective,
                    base[mask],
                    jac=True,
                    method="L-BFGS-B",
                    bounds=list(zip(lo[mask], hi[mask])),
                    options={"maxiter": 100},
                )
            v = base.copy()
            if np.all(np.isfinite(res.x)) and np.isfinite(res.fun):
                v[mask] = res.x
            return v

        v = optimise(free, start)
        if self.residual_needs_evidence and free[2]:
            # the map alone: no residual field (its amplitude at the floor of the search space)
            off = start.copy()
            off[2] = math.log(1e-6)
            mask = free.copy()
            mask[2:4] = False
            v_off = optimise(mask, off)
            gain = self._nll_grad(v_off, g, s_fit, z, y)[0] - self._nll_grad(v, g, s_fit, z, y)[0]
            if not gain >= math.log(max(g.shape[0], 2)):
                p = self._params_from(v_off, use_s)
                return MeasuredParams(p.smooth_sd, p.smooth_length, 0.0, p.residual_length, p.noise_sd, p.base_weight)
        return self._params_from(v, use_s)

    @staticmethod
    def _params_from(v: np.ndarray, use_s: bool) -> MeasuredParams:
        a = np.exp(v)
        return MeasuredParams(
            float(a[0]), float(a[1]), float(a[2]), float(a[3]), float(a[4]), float(a[5]) if use_s else 0.0
        )

    def _nll_grad(
        self, v: np.ndarray, g: np.ndarray, s: np.ndarray | None, z: np.ndarray, y: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """Negative log marginal likelihood and its gradient in the log hyper-parameters."""
        pr = self.prior
        sh2, lh, sr2, lr, sn2, kw2 = (
            math.exp(2 * v[0]),
            math.exp(v[1]),
            math.exp(2 * v[2]),
            math.exp(v[3]),
            (math.exp(2 * v[4])),
            math.exp(2 * v[5]),
        )
        n = g.shape[0]
        dg = g - self.g0
        Dg2 = (g[:, None] - g[None, :]) ** 2
        Eh = np.exp(-0.5 * Dg2 / lh**2)
        Dz2 = _sqdist(z, z) if z.shape[1] else np.zeros((n, n))
        Er = np.exp(-0.5 * Dz2 / lr**2) if z.shape[1] else np.zeros((n, n))
        s2 = np.zeros(n) if s is None else s**2
        K = pr.offset_sd**2 + pr.slope_sd**2 * np.outer(dg, dg) + sh2 * Eh + sr2 * Er
        K[np.diag_indices(n)] += sn2 + kw2 * s2 + 1e-9
        try:
            c = cho_factor(K, lower=True)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros(6)
        r = y - g
        alpha = cho_solve(c, r)
        Kinv = cho_solve(c, np.eye(n))
        nll = 0.5 * float(r @ alpha) + float(np.log(np.diag(c[0])).sum()) + 0.5 * n * LOG_2PI
        W = np.outer(alpha, alpha) - Kinv  # dNLL/dθ = -0.5 tr(W dK/dθ)
        grad = np.array(
            [
                -0.5 * np.sum(W * (2 * sh2 * Eh)),
                -0.5 * np.sum(W * (sh2 * Eh * Dg2 / lh**2)),
                -0.5 * np.sum(W * (2 * sr2 * Er)),
                -0.5 * np.sum(W * (sr2 * Er * Dz2 / lr**2)),
                -0.5 * float(np.trace(W)) * 2 * sn2,
                -0.5 * float(np.diag(W) @ (2 * kw2 * s2)),
            ]
        )
        return nll, grad

    # ------------------------------------------------------------------ prediction
    def predict(self, g: np.ndarray, s: np.ndarray | None, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of a new measurement at each query (chunks of :data:`CHUNK` rows)."""
        p = self.params
        if p is None:
            raise MeasuredMapError("fit the model first")
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        z = _as_rows(z, g.shape[0])
        mean = np.empty_like(g)
        var = np.empty_like(g)
        for a in range(0, g.shape[0], CHUNK):
            sl = slice(a, a + CHUNK)
            Ks = self._k_map(g[sl], self.g_, p) + self._k_res(z[sl], self.z_, p)
            mean[sl] = g[sl] + Ks @ self.alpha_
            V = solve_triangular(self.L_, Ks.T, lower=True, check_finite=False) if Ks.shape[1] else Ks.T
            var[sl] = self._prior_var(g[sl], p) - (V * V).sum(axis=0)
        var = np.maximum(var, 1e-12) + self._noise(
            None if s is None else np.asarray(s, dtype=np.float64), g.shape[0], p
        )
        return mean, np.sqrt(var)

    def with_fantasies(self, g: np.ndarray, s: np.ndarray | None, z: np.ndarray, y: np.ndarray) -> MeasuredGP:
        """A copy conditioned on extra (believed) results, hyper-parameters unchanged: batches and
        pending points condition on each pick at its predicted value."""
        other = MeasuredGP(self.prior, self.g0, self.z_scale, self.residual_needs_evidence)
        s_all = None
        if self.s_ is not None:
            s_all = np.concatenate([self.s_, np.zeros(len(g)) if s is None else np.asarray(s, dtype=np.float64)])
        other.fit(
            np.concatenate([self.g_, g]),
            s_all,
            np.vstack([self.z_, _as_rows(z, len(g)).reshape(len(g), self.z_.shape[1])]),
            np.concatenate([self.y_, y]),
            params=self.params,
        )
        return other

    def map_posterior(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of the map ``g -> g + a + b(g - g0) + h(g)`` at ``grid`` (the
        measured value a crystal predicted at ``grid`` would have, residual field and noise aside)."""
        p = self.params
        assert p is not None
        grid = np.asarray(grid, dtype=np.float64).reshape(-1)
        Ks = self._k_map(grid, self.g_, p)
        mean = grid + Ks @ self.alpha_
        V = solve_triangular(self.L_, Ks.T, lower=True, check_finite=False) if Ks.shape[1] else Ks.T
        pr = self.prior
        var = pr.offset_sd**2 + pr.slope_sd**2 * (grid - self.g0) ** 2 + p.smooth_sd**2 - (V * V).sum(axis=0)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def summary(self, g_range: tuple[float, float] | None = None, points: int = 41) -> MapSummary:
        """The map over the predictions the results span (or ``g_range``), as a line and a band."""
        p = self.params
        assert p is not None
        if g_range is None:
            if self.g_.size:
                g_range = (float(np.percentile(self.g_, 5)), float(np.percentile(self.g_, 95)))
            else:
                g_range = (self.g0 - 1.0, self.g0 + 1.0)
        lo, hi = g_range
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        grid = np.linspace(lo, hi, points)
        mean, std = self.map_posterior(grid)
        slope, intercept = np.polyfit(grid, mean, 1)
        return MapSummary(
            float(intercept),
            float(slope),
            float(np.mean(std)),
            int(self.g_.shape[0]),
            (float(lo), float(hi)),
            p.residual_sd,
            p.noise_sd,
            grid,
            mean,
            std,
        )


class IdentityMap:
    """The null model: the measured value is the base prediction, with noise of the same family
    as :class:`MeasuredGP`'s (``noise_sd² + kappa² s²``, both fitted): no map, no residual.

    Why keep it: when the lab *is* the base's scale (DFT results against a DFT-trained network),
    a learned map is noise. Fitted from 100 random crystals its intercept and slope wander by
    ±0.1 eV, ten times a 0.01 eV window, and on setting b the search with the learned mean and
    the network's own std needed more look-ups than the ranking, while the identity mean with the
    learned std did not (docs/benchmarks.md). So :func:`screening.bo.measured_search.model` keeps
    this model unless the results' marginal likelihood pays for the map.
    """

    def __init__(self, noise_sd: float, kappa: float, n: int, prior: MapPrior | None = None) -> None:
        self.noise_sd = float(noise_sd)
        self.kappa = float(kappa)
        self.n = int(n)
        self.prior = prior or MapPrior()
        self.params = None

    def hyper_penalty(self) -> float:
        """Minus the log prior density of the fitted noise and weight (as
        :meth:`MeasuredGP.hyper_penalty`): the price of explaining results as noise."""
        mu0, sd = IdentityMap._noise_prior(self.prior)
        return _log_normal_cost(np.log([self.noise_sd, self.kappa]), mu0, sd)

    @staticmethod
    def _noise_prior(pr: MapPrior) -> tuple[np.ndarray, np.ndarray]:
        """Medians and spreads of the log noise sd and log weight (the fit's and the penalty's)."""
        return np.log([pr.noise_sd, pr.base_weight]), np.array([pr.log_sd, pr.base_weight_log_sd])

    @staticmethod
    def fit(g: np.ndarray, s: np.ndarray, y: np.ndarray, prior: MapPrior | None = None) -> tuple[IdentityMap, float]:
        """MAP noise and weight (the priors of :class:`MapPrior`), and the negative log-likelihood
        of the results under them (without the priors: what is compared with the map's)."""
        from scipy.optimize import minimize

        pr = prior or MapPrior()
        r = np.asarray(y, dtype=np.float64) - np.asarray(g, dtype=np.float64)
        s2 = np.asarray(s, dtype=np.float64) ** 2
        mu0, sd = IdentityMap._noise_prior(pr)

        def nll(v: np.ndarray) -> float:
            var = math.exp(2 * v[0]) + math.exp(2 * v[1]) * s2 + 1e-12
            return float(np.sum(0.5 * np.log(2.0 * math.pi * var) + r * r / (2.0 * var)))

        v = mu0.copy()
        if r.size:
            with np.errstate(all="ignore"):
                res = minimize(
                    lambda v: nll(v) + _log_normal_cost(v, mu0, sd),
                    mu0,
                    method="L-BFGS-B",
                    bounds=list(zip(mu0 - 3 * sd, mu0 + 3 * sd)),
                )
            if np.all(np.isfinite(res.x)):
                v = res.x
        return IdentityMap(math.exp(v[0]), math.exp(v[1]), r.size, pr), nll(v)

    def predict(self, g: np.ndarray, s: np.ndarray | None, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        assert s is not None, "the identity model needs the base model's std"
        return g.copy(), np.sqrt(self.noise_sd**2 + (self.kappa * np.asarray(s, dtype=np.float64)) ** 2)

    def with_fantasies(self, g: np.ndarray, s: np.ndarray | None, z: np.ndarray, y: np.ndarray) -> IdentityMap:
        return self

    def map_posterior(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grid = np.asarray(grid, dtype=np.float64).reshape(-1)
        return grid.copy(), np.zeros_like(grid)

    def summary(self, g_range: tuple[float, float] | None = None, points: int = 41) -> MapSummary:
        lo, hi = g_range if g_range is not None else (0.0, 1.0)
        grid = np.linspace(lo, hi, points)
        return MapSummary(
            0.0,
            1.0,
            0.0,
            self.n,
            (float(lo), float(hi)),
            0.0,
            self.noise_sd,
            grid,
            grid.copy(),
            np.zeros(points),
            identity=True,
        )


def _log_normal_cost(v: np.ndarray, mu0: np.ndarray, sd: np.ndarray) -> float:
    """Minus the log density, up to a constant, of log hyper-parameters ``v`` under independent
    normal priors (medians ``mu0``, spreads ``sd``): what fitting and comparing the models charge."""
    return float(np.sum(0.5 * ((v - mu0) / sd) ** 2))


def _tenths(x: float) -> str:
    """``x`` to 0.1, never "-0.0" (a range read "-0.0-5.0")."""
    return f"{round(float(x), 1) + 0.0:.1f}"
