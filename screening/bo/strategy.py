"""How a campaign chooses points: the :class:`Strategy` settings and the :data:`Target` they aim at.

This module holds the choices only; applying them to a domain and the data so far is
:mod:`screening.bo.suggest`'s (``suggest_pool``, ``suggest_box``), and the work behind that is
split as BoTorch splits models, acquisition and optimisation (:mod:`screening.bo.fitting`,
:mod:`screening.bo.optimise_pool`, :mod:`screening.bo.optimise_box`). Those modules import this
one, never the other way, so building a Strategy or reading a campaign (`campaign status`) loads
no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from screening.bo import acquisition as acq
from screening.bo.neighbour_gp import MIN_LABELLED
from screening.bo.objective import TargetSpec
from screening.errors import MatscreenError

# Strategy.tie_break for the neighbour surrogate's window acquisition, in predictive stds.
DEFAULT_TIE_BREAK = 0.01


class StrategyError(MatscreenError):
    """A strategy is inconsistent with the objective or domain it is applied to."""


@dataclass(frozen=True)
class Strategy:
    """How a campaign chooses points.

    ``model``: "loss" fits the GP on the loss (the seed's way); "value" fits it on y and needs a
    scalar target (``TargetSpec``). ``acquisition``: for "loss" one of logei, ei, ucb, pi,
    thompson; for "value" one of window, folded-ei, thompson. ``batch``: "lp" (local
    penalisation) or "qlogei" (sequential-greedy Monte-Carlo qLogEI). ``beta`` is UCB's
    exploration weight. ``use_prior`` puts a per-candidate prior covariate (the pool's
    ``prior_mean``, e.g. the CGCNN prediction) into the GP mean as ``c + b * prior``; with
    ``fixed_prior_slope`` b stays 1 (trust the covariate, fit only its offset). ``n_init`` random (pool) or
    Latin-hypercube (box) points start a campaign that has fewer observations.

    Cost controls: hyper-parameters are re-optimised at every step below ``refit_all_below``
    observations and then each time the data grow by the factor ``refit_growth`` (in between,
    the GP conditions on all data with the last fitted values — see
    :func:`~screening.bo.fitting.refit_size`); when free candidates x observations exceed
    ``screen_above_pairs`` the pool is screened first
    (posterior at the centroids of leaves of ``leaf_size`` points, first-order extrapolation to
    each candidate) and only the ``screen_keep`` best candidates are scored exactly.
    """

    model: str = "value"
    acquisition: str = "window"
    batch: str = "lp"
    beta: float = 4.0
    use_prior: bool = False
    n_init: int = 5
    shortlist: int = 1024
    box_raw_samples: int = 2048
    mc_samples: int = 256
    fixed_prior_slope: bool = False
    refit_all_below: int = 100
    refit_growth: float = 1.1
    screen_above_pairs: int = 20_000_000
    screen_keep: int = 4096
    leaf_size: int = 512
    surrogate: str = "gp"
    # Neighbour surrogate: 8 nearest labelled crystals in 64 principal components of the
    # standardised embedding. Chosen on the development pool (validation crystals, training
    # crystals known; docs/benchmarks.md): with 16 components the residual field's hyper-parameter
    # fit found no local structure (pool MAE 0.404 against the network's 0.407), with 64 it
    # found some (0.385 with 8 neighbours, 0.388 with 16); 8 neighbours fit 3x faster than 16.
    n_neighbours: int = 8
    neighbour_components: int = 64
    # Neighbour surrogate: with fewer labelled crystals (known + observed) than this, no local
    # structure is fitted and the network's ranking stands (neighbour_gp.fit_params says why).
    neighbour_min_labelled: int = MIN_LABELLED
    # Neighbour surrogate: divide residuals by the network's own per-crystal std. Off by default:
    # measured worse (docs/benchmarks.md, setting a: 0.91x vs 1.42x over the ranking) — the std's
    # heavy tails blow up the scaled residuals of the few crystals it is very sure of.
    use_prior_std: bool = False
    # Neighbour surrogate without local structure (fewer labelled crystals than
    # neighbour_min_labelled: no known data, as in settings b and d): each candidate's predictive
    # std is the network's own pred_band_gap_std (neighbour_search.predictive; calibrated when the
    # model was trained, +-1 sigma covers 68 % of the test crystals), not one std fitted to the
    # labelled residuals, which ranks by the prediction alone. Measured (docs/benchmarks.md, "The
    # network's own uncertainty without known data"): b 1.60x the ranking [0.93, 2.81] (one std:
    # 0.98x), d below random at every trial; its development twin vb 0.99x [0.71, 1.37] at the
    # same 21 targets (one std: 1.02x) and 1.64x [1.21, 2.19] at 40 (one std: 1.00x). With known
    # data nothing changes. Pools without the column: one fitted std, as before.
    trust_network_std: bool = True
    # Neighbour surrogate: a candidate's value may equal a close labelled neighbour's (label_match.py):
    # the predictive is a mixture of the local GP and sharp components at the neighbours' values,
    # fitted on the known data. On by default: on the development pool (setting v) the static
    # window ordering went from 1.79x to 2.76x the ranking (docs/benchmarks.md).
    label_match: bool = True
    # Neighbour surrogate, window acquisition: score each candidate at its mean perturbed by
    # tie_break x its predictive std x N(0, 1), drawn afresh for each suggestion from the seed, so
    # candidates whose predictions differ by far less than the model's error are taken in a seeded
    # order rather than by the last digits of the prediction, and campaigns with different seeds
    # (or prior data) make different picks. None: DEFAULT_TIE_BREAK where it applies, 0 elsewhere.
    # Chosen by measurement with one fitted std (docs/benchmarks.md, "Seeded tie-breaks"): with 100
    # priors and no known data the best |gap - t| beat random's on mean and median at every trial
    # (the deterministic order's median did not at trials 1-10), look-ups to a first hit 0.98x the
    # ranking's [0.93, 1.03] by the geometric mean (1.004x summed over targets), and with known
    # data the same look-ups as 0. Kept with the network's std (trust_network_std), which meets d
    # with it.
    tie_break: float | None = None
    # Neighbour surrogate: learn the measured scale from the campaign's own results
    # (measured_search.py): an exact GP whose mean is a learned map of the base prediction
    # (identity prior) plus a residual over map_components principal components of the embedding.
    # It decides whenever the base model has no local structure (few labels, no network
    # prediction) or the known data are another quantity (KnownData.same_quantity false).
    learn_map: bool = True
    map_components: int = 3

    def __post_init__(self) -> None:
        if self.model not in ("loss", "value"):
            raise StrategyError(f"model must be 'loss' or 'value', got {self.model!r}")
        allowed = acq.LOSS_ACQUISITIONS if self.model == "loss" else acq.VALUE_ACQUISITIONS
        if self.acquisition not in allowed:
            raise StrategyError(
                f"acquisition {self.acquisition!r} does not fit model {self.model!r}; choose one of {allowed}"
            )
        if self.batch not in ("lp", "qlogei"):
            raise StrategyError(f"batch must be 'lp' or 'qlogei', got {self.batch!r}")
        if self.beta <= 0:
            raise StrategyError("beta must be positive")
        if self.surrogate not in ("gp", "neighbour"):
            raise StrategyError(f"surrogate must be 'gp' or 'neighbour', got {self.surrogate!r}")
        if self.surrogate == "neighbour" and (self.model != "value" or self.acquisition not in ("window", "thompson")):
            raise StrategyError(
                "the neighbour surrogate models the value itself: use model 'value' with "
                "acquisition 'window' or 'thompson'"
            )

        if self.map_components < 0:
            raise StrategyError(f"map_components must be >= 0, got {self.map_components}")
        if self.tie_break is None:
            applies = self.surrogate == "neighbour" and self.acquisition == "window"
            object.__setattr__(self, "tie_break", DEFAULT_TIE_BREAK if applies else 0.0)
        assert self.tie_break is not None
        if not self.tie_break >= 0:
            raise StrategyError(f"tie_break must be >= 0, got {self.tie_break!r}")
        if self.tie_break > 0 and (self.surrogate != "neighbour" or self.acquisition != "window"):
            raise StrategyError("tie_break applies to the neighbour surrogate with acquisition 'window'")

    @property
    def learns_map(self) -> bool:
        """Whether this strategy may learn the measured scale (measured_search.py): the neighbour
        surrogate (which always models the value) with ``learn_map`` on."""
        return self.surrogate == "neighbour" and self.learn_map

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Strategy:
        # Campaigns stored before a field existed get its default, except the label match, the
        # tie-breaks, the network's std and the learned map: one made without them keeps
        # searching as it did (deterministically, from the GP alone, with one fitted std).
        # A campaign stored before the learned map keeps the base model alone.
        return cls(**({"label_match": False, "tie_break": 0.0, "trust_network_std": False, "learn_map": False} | d))


# The value model's target is the objective's own TargetSpec (one class for "2.534 ± 0.01 eV");
# ``Target`` stays as the name the strategy functions and their callers use.
Target = TargetSpec
