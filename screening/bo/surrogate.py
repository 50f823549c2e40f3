"""Gaussian-process surrogate: Matérn-5/2 ARD on BoTorch / GPyTorch, standardised outputs.

The surrogate knows nothing of candidates or files: it takes feature arrays ``X`` (n, d) and
observed values ``y`` (n,), fits its hyper-parameters by maximising the marginal likelihood
(BoTorch's ``fit_gpytorch_mll``), and returns posterior means and standard deviations of the
latent function in the units of ``y``.

Optional prior mean: a per-point covariate ``prior`` (e.g. the CGCNN-predicted band gap in eV)
enters the GP mean as ``c + b * prior`` with ``c`` and ``b`` fitted, so the GP learns how far to
trust the network and models only what it gets wrong.

Why a hand-written predictor next to BoTorch's: scoring 10^5–10^6 pool candidates needs the
posterior in chunks from one cached Cholesky factor, without autograd or lazy-tensor overhead;
:meth:`GPSurrogate.predict` does exactly that with the fitted hyper-parameters (tests check it
against ``model.posterior``). BoTorch's model stays available as ``.model`` for the Monte-Carlo
batch acquisitions (qLogEI).
"""

from __future__ import annotations

import math
import warnings

import gpytorch
import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.kernels import ScaleKernel
from gpytorch.means import Mean
from gpytorch.mlls import ExactMarginalLogLikelihood

from screening.errors import MatscreenError

DTYPE = torch.float64
SQRT5 = math.sqrt(5.0)


class SurrogateError(MatscreenError):
    """The surrogate cannot be fitted or queried with the data given."""


class CovariateMean(Mean):
    """GP mean ``c + b * x[..., -1]``: an affine function of a prior covariate stored as the last input column.

    With ``fixed_slope`` the slope stays at 1 (the covariate is trusted as is, only its offset is
    fitted); otherwise both are fitted by marginal likelihood.
    """

    def __init__(self, fixed_slope: bool = False) -> None:
        super().__init__()
        self.register_parameter("constant", torch.nn.Parameter(torch.zeros((), dtype=DTYPE)))
        self.register_parameter("slope", torch.nn.Parameter(torch.ones((), dtype=DTYPE), requires_grad=not fixed_slope))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.constant + self.slope * x[..., -1]


class GPSurrogate:
    """A fitted GP over a feature space with known bounds.

    ``bounds`` (2, d) maps features to the unit cube before fitting, so lengthscale priors mean
    the same thing for every pool; pass the domain's bounds (pool min/max, or Box bounds).
    ``use_prior`` turns on the prior-mean covariate (then ``fit`` and ``predict`` need ``prior``).
    ``min_noise`` is the smallest observation-noise variance in standardised units; small for
    deterministic look-ups such as a pool's known band gaps. ``fixed_prior_slope`` keeps the
    prior covariate's weight at 1 (a classical fixed prior mean, up to a fitted offset).
    """

    def __init__(
        self, bounds: np.ndarray, use_prior: bool = False, min_noise: float = 1e-6, fixed_prior_slope: bool = False
    ) -> None:
        bounds = np.asarray(bounds, dtype=np.float64)
        if bounds.ndim != 2 or bounds.shape[0] != 2:
            raise SurrogateError(f"bounds must have shape (2, d), got {bounds.shape}")
        span = bounds[1] - bounds[0]
        self.bounds = bounds
        self._span = np.where(span > 0, span, 1.0)
        self.use_prior = use_prior
        self.fixed_prior_slope = fixed_prior_slope
        self.min_noise = min_noise
        self.model: SingleTaskGP | None = None

    # ----------------------------------------------------------------- fitting

    def model_inputs(self, X: np.ndarray, prior: np.ndarray | None = None) -> torch.Tensor:
        """Features scaled to the unit cube (plus the standardised prior column) as a float64 tensor."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        U = (X - self.bounds[0]) / self._span
        if self.use_prior:
            if prior is None:
                raise SurrogateError("this surrogate uses a prior mean: pass `prior` values")
            p = (np.asarray(prior, dtype=np.float64).reshape(-1, 1) - self.y_mean_) / self.y_std_
            U = np.hstack([U, p])
        return torch.as_tensor(U, dtype=DTYPE)

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        prior: np.ndarray | None = None,
        seed: int = 0,
        hyperparameters: dict | None = None,
    ) -> GPSurrogate:
        """Fit hyper-parameters on (X, y); ``prior`` holds the prior covariate at X if used.

        With ``hyperparameters`` (from :meth:`hyperparameters`, possibly of a fit on fewer
        points) the marginal-likelihood optimisation is skipped and those values are used on
        the new data: conditioning then costs one Cholesky instead of a full fit.
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if X.shape[0] != y.shape[0]:
            raise SurrogateError(f"{X.shape[0]} points but {y.shape[0]} values")
        if X.shape[0] < 2:
            raise SurrogateError("a GP needs at least two observations")
        if not np.all(np.isfinite(y)):
            raise SurrogateError("observed values must be finite")
        self.y_mean_ = float(y.mean())
        std = float(y.std())
        self.y_std_ = std if std > 1e-12 else 1.0
        d = X.shape[1]
        train_X = self.model_inputs(X, prior)
        train_Y = torch.as_tensor(((y - self.y_mean_) / self.y_std_).reshape(-1, 1), dtype=DTYPE)
        base = get_covar_module_with_dim_scaled_prior(ard_num_dims=d, use_rbf_kernel=False, active_dims=list(range(d)))
        covar = ScaleKernel(base)
        mean = CovariateMean(self.fixed_prior_slope) if self.use_prior else None
        likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(self.min_noise, transform=None, initial_value=1e-3)
        ).to(DTYPE)
        model = SingleTaskGP(
            train_X,
            train_Y,
            likelihood=likelihood,
            covar_module=covar,
            mean_module=mean,
            outcome_transform=None,
            input_transform=None,
        )
        model = model.to(DTYPE)
        torch.manual_seed(seed)
        if hyperparameters is not None:
            self._set_hyperparameters(model, hyperparameters)
        else:
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    fit_gpytorch_mll(mll)
                except Exception as exc:  # noqa: BLE001 - fall back to the prior-initialised model
                    warnings.warn(f"GP hyper-parameter fit failed ({exc}); using initial values", stacklevel=2)
        model.eval()
        self.model = model
        self._cache(train_X, train_Y.reshape(-1))
        return self

    def hyperparameters(self) -> dict:
        """Fitted hyper-parameters in the units of y (independent of this fit's standardisation).

        ``lengthscale`` is in unit-cube coordinates of ``bounds``; ``outputscale`` and ``noise``
        are variances in units of y²; the mean is ``constant + slope * prior`` in units of y.
        """
        if self.model is None:
            raise SurrogateError("fit the surrogate first")
        mm = self.model.mean_module
        c = float(mm.constant.detach())
        slope = float(mm.slope.detach()) if self.use_prior else 0.0
        return {
            "lengthscale": self.lengthscale_.tolist(),
            "outputscale": self.outputscale_ * self.y_std_**2,
            "noise": self.noise_ * self.y_std_**2,
            "constant": self.y_mean_ * (1.0 - slope) + self.y_std_ * c,
            "slope": slope,
        }

    def _set_hyperparameters(self, model: SingleTaskGP, hp: dict) -> None:
        s, m = self.y_std_, self.y_mean_
        slope = float(hp.get("slope", 0.0)) if self.use_prior else 0.0
        with torch.no_grad():
            model.covar_module.base_kernel.lengthscale = torch.as_tensor(hp["lengthscale"], dtype=DTYPE).reshape(1, -1)
            model.covar_module.outputscale = torch.as_tensor(max(hp["outputscale"] / s**2, 1e-8), dtype=DTYPE)
            model.likelihood.noise = torch.as_tensor([max(hp["noise"] / s**2, self.min_noise * 1.0001)], dtype=DTYPE)
            constant = torch.as_tensor((hp["constant"] - m * (1.0 - slope)) / s, dtype=DTYPE)
            if self.use_prior:
                model.mean_module.constant.copy_(constant)
                model.mean_module.slope.copy_(torch.as_tensor(slope, dtype=DTYPE))
            else:
                model.mean_module.constant = constant

    def _cache(self, train_X: torch.Tensor, train_y: torch.Tensor) -> None:
        m = self.model
        assert m is not None
        d = self.bounds.shape[1]
        with torch.no_grad():
            self.lengthscale_ = m.covar_module.base_kernel.lengthscale.detach().reshape(-1).to(DTYPE).clone()
            self.outputscale_ = float(m.covar_module.outputscale.detach())
            self.noise_ = float(m.likelihood.noise.detach().reshape(-1)[0])
            self._train_U = train_X[:, :d] / self.lengthscale_
            prior_mean = self._mean(train_X)
            K = self.outputscale_ * matern52(self._train_U, self._train_U)
            K = K + self.noise_ * torch.eye(K.shape[0], dtype=DTYPE)
            jitter = 0.0
            for _ in range(6):
                L, info = torch.linalg.cholesky_ex(K + jitter * torch.eye(K.shape[0], dtype=DTYPE))
                if int(info) == 0:
                    break
                jitter = max(jitter * 10, 1e-8)
            else:
                raise SurrogateError("covariance matrix is not positive definite even with jitter")
            self._L = L
            self._alpha = torch.cholesky_solve((train_y - prior_mean).reshape(-1, 1), L).reshape(-1)

    def _mean(self, Xm: torch.Tensor) -> torch.Tensor:
        assert self.model is not None, "the prior mean is read after fit"
        if not self.use_prior:
            c = self.model.mean_module.constant.detach()
            return c.expand(Xm.shape[0]).to(DTYPE)
        mm = self.model.mean_module
        return (mm.constant + mm.slope * Xm[:, -1]).detach()

    @property
    def n_train(self) -> int:
        return int(self._L.shape[0])

    # ----------------------------------------------------------------- prediction

    def predict(
        self,
        X: np.ndarray,
        prior: np.ndarray | None = None,
        chunk_elements: int = 2_000_000,
        include_noise: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at X, in units of y.

        By default the standard deviation is that of the latent function; ``include_noise`` adds
        the fitted noise variance, giving the spread of a *new observation* — what matters when
        asking whether a measured value will land in a target window (for a pool look-up the
        "noise" is per-crystal variation the features do not explain).
        Works in chunks of rows so that at most ``chunk_elements`` cross-covariances are held at
        once; the Cholesky factor of the training covariance is computed once per fit.
        """
        if self.model is None:
            raise SurrogateError("fit the surrogate before predicting")
        Xm = self.model_inputs(X, prior)
        n = self.n_train
        rows = max(1, chunk_elements // max(n, 1))
        mean = torch.empty(Xm.shape[0], dtype=DTYPE)
        var = torch.empty(Xm.shape[0], dtype=DTYPE)
        d = self.bounds.shape[1]
        with torch.no_grad():
            for start in range(0, Xm.shape[0], rows):
                block = Xm[start : start + rows]
                Ks = self.outputscale_ * matern52(block[:, :d] / self.lengthscale_, self._train_U)
                mean[start : start + rows] = self._mean(block) + Ks @ self._alpha
                V = torch.linalg.solve_triangular(self._L, Ks.T, upper=False)
                var[start : start + rows] = self.outputscale_ - (V * V).sum(dim=0)
        var = var.clamp_min(1e-12 * self.outputscale_)
        if include_noise:
            var = var + self.noise_
        return (mean * self.y_std_ + self.y_mean_).numpy(), (var.sqrt() * self.y_std_).numpy()

    def mean_gradients(self, X: np.ndarray, prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean at the rows of X and its gradient with respect to the *features*
        (units of y per feature unit), shape (n, d).

        The prior-mean covariate is held fixed (it has no gradient in feature space we know of).
        """
        if self.model is None:
            raise SurrogateError("fit the surrogate before predicting")
        d = self.bounds.shape[1]
        Xm = self.model_inputs(X, prior)
        feats = Xm[:, :d].clone().requires_grad_(True)
        Ks = self.outputscale_ * matern52(feats / self.lengthscale_, self._train_U)
        mu = Ks @ self._alpha
        (grad,) = torch.autograd.grad(mu.sum(), feats)
        grad = grad / torch.as_tensor(self._span, dtype=DTYPE)  # d/dfeature = d/dunit / span
        mean = (mu.detach() + self._mean(Xm)) * self.y_std_ + self.y_mean_
        return mean.numpy(), (grad * self.y_std_).detach().numpy()

    def mean_gradient_norms(self, X: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
        """|∇μ(x)| in units of y per feature unit: for the Lipschitz constant of local penalisation."""
        return np.linalg.norm(self.mean_gradients(X, prior)[1], axis=1)

    @property
    def prior_slope(self) -> float:
        """Weight of the prior covariate in the GP mean (0 without one), in y per unit of prior."""
        return float(self.model.mean_module.slope.detach()) if self.use_prior and self.model is not None else 0.0

    def sample_joint(
        self, X: np.ndarray, n_samples: int, rng: np.random.Generator, prior: np.ndarray | None = None
    ) -> np.ndarray:
        """Joint posterior samples of the latent function at the rows of X: shape (n_samples, len(X)).

        Cost is cubic in len(X): pass a shortlist, not a whole large pool.
        """
        if self.model is None:
            raise SurrogateError("fit the surrogate before sampling")
        d = self.bounds.shape[1]
        Xm = self.model_inputs(X, prior)
        with torch.no_grad():
            U = Xm[:, :d] / self.lengthscale_
            Ks = self.outputscale_ * matern52(U, self._train_U)
            mean = self._mean(Xm) + Ks @ self._alpha
            V = torch.linalg.solve_triangular(self._L, Ks.T, upper=False)
            cov = self.outputscale_ * matern52(U, U) - V.T @ V
            cov = 0.5 * (cov + cov.T)
            jitter = 1e-9 * self.outputscale_
            for _ in range(8):
                C, info = torch.linalg.cholesky_ex(cov + jitter * torch.eye(cov.shape[0], dtype=DTYPE))
                if int(info) == 0:
                    break
                jitter *= 10
            else:
                raise SurrogateError("posterior covariance is not positive definite")
            z = torch.as_tensor(rng.standard_normal((C.shape[0], n_samples)), dtype=DTYPE)
            samples = (mean.reshape(-1, 1) + C @ z).T
        return (samples * self.y_std_ + self.y_mean_).numpy()


def matern52(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Matérn-5/2 correlation between rows of A and B, both already divided by the lengthscales."""
    if A.requires_grad or B.requires_grad:
        sq = (A * A).sum(1, keepdim=True) - 2.0 * A @ B.T + (B * B).sum(1)
        r = sq.clamp_min(1e-30).sqrt() * SQRT5
        return (1.0 + r + r * r / 3.0) * torch.exp(-r)
    # In place: this runs on millions of pairs when a large pool is scored.
    r = A @ B.T
    r.mul_(-2.0).add_((A * A).sum(1, keepdim=True)).add_((B * B).sum(1))
    r.clamp_(min=1e-30).sqrt_().mul_(SQRT5)
    e = torch.neg(r).exp_()
    return r.mul_(r.add(3.0)).div_(3.0).add_(1.0).mul_(e)
