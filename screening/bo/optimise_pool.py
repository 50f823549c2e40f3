"""Picking ``q`` rows from a finite set of scored candidates: the pool optimisers.

Given a fitted surrogate and the candidates' :class:`~screening.bo.fitting.AcquisitionScores`,
each function returns row indices into the candidate array: Thompson sampling, sequential-greedy
qLogEI, or local penalisation; :func:`screen_candidates` first cuts a very large pool down to a
shortlist, and :func:`suggest_neighbour` is the whole pool path of the nearest-neighbour
surrogate. A box's dense random design is a finite candidate set too, so
:mod:`screening.bo.strategy` reuses :func:`thompson_rows` and :func:`qlogei_rows` for boxes.

The dispatch in :mod:`screening.bo.strategy` checks the inputs (targets, pool columns) and
raises :class:`~screening.bo.strategy.StrategyError`; the functions here assume them consistent.
All randomness comes from the ``rng`` / ``seed`` passed in, so picks repeat for a given seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from screening.bo import acquisition as acq
from screening.bo.domain import DiscretePool
from screening.bo.fitting import AcquisitionScores, acquisition_scores
from screening.bo.objective import TargetSpec
from screening.bo.strategy import Strategy
from screening.errors import MatscreenError

if TYPE_CHECKING:
    import torch  # imported in qlogei_rows: the neighbour path (a command-line ask) never needs it

    from screening.bo.neighbour_search import NeighbourState
    from screening.bo.surrogate import GPSurrogate  # gpytorch: imported where a GP is built


def thompson_rows(
    strategy: Strategy,
    surrogate: GPSurrogate,
    feats: np.ndarray,
    prior: np.ndarray | None,
    scores: AcquisitionScores,
    *,
    q: int,
    rng: np.random.Generator,
    target: TargetSpec | None,
) -> list[int]:
    """Thompson sampling: q joint posterior draws over a shortlist of plausible winners.

    The shortlist keeps the candidates whose optimistic bound (3 standard deviations) could
    still beat the others; a draw's winner outside it has negligible probability.
    """
    if strategy.model == "loss":
        optimistic = scores.mean - 3.0 * scores.std
    else:
        assert target is not None
        optimistic = np.maximum(np.abs(scores.mean - target.target) - 3.0 * scores.std, 0.0) - 1e-9 * scores.std
    k = min(strategy.shortlist, feats.shape[0])
    short = np.argsort(optimistic, kind="stable")[:k]
    samples = surrogate.sample_joint(feats[short], q, rng, None if prior is None else prior[short])
    if strategy.model == "value":
        assert target is not None
        samples = np.abs(samples - target.target)
    picks: list[int] = []
    for s in samples:
        s = s.copy()
        if picks:
            s[[int(np.flatnonzero(short == p)[0]) for p in picks]] = np.inf
        picks.append(int(short[int(np.argmin(s))]))
    return picks


def qlogei_rows(
    strategy: Strategy,
    surrogate: GPSurrogate,
    feats: np.ndarray,
    prior: np.ndarray | None,
    scores: AcquisitionScores,
    *,
    best: float,
    q: int,
    seed: int,
    target: TargetSpec | None,
    pending_feats: np.ndarray | None = None,
    pending_prior: np.ndarray | None = None,
) -> list[int]:
    """Sequential-greedy qLogEI (BoTorch) over the top of the analytic ranking.

    Each step adds the candidate that maximises the Monte-Carlo log-EI of the batch given the
    already chosen (and externally pending) points. The objective is -loss (loss model) or
    -|y - t| (value model), both in the GP's standardised units.
    """
    import torch
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.acquisition.objective import GenericMCObjective
    from botorch.sampling import SobolQMCNormalSampler

    k = min(strategy.shortlist, feats.shape[0])
    short = np.argsort(-scores.log_score, kind="stable")[:k]
    choices = surrogate.model_inputs(feats[short], None if prior is None else prior[short])
    ym, ys = surrogate.y_mean_, surrogate.y_std_
    if strategy.model == "loss":

        def negative_loss(samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
            return -(samples[..., 0] * ys + ym)

    else:
        assert target is not None
        t = target.target

        def negative_loss(samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
            return -(samples[..., 0] * ys + ym - t).abs()

    objective = GenericMCObjective(negative_loss)
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([strategy.mc_samples]), seed=seed)
    assert surrogate.model is not None, "the surrogate was fitted before scoring"
    acqf = qLogExpectedImprovement(surrogate.model, best_f=-best, sampler=sampler, objective=objective)
    chosen: list[int] = []
    base_pending = None
    if pending_feats is not None and len(pending_feats):
        base_pending = surrogate.model_inputs(pending_feats, pending_prior)
    with torch.no_grad():
        for _ in range(min(q, k)):
            parts = [t for t in (base_pending, choices[chosen] if chosen else None) if t is not None]
            acqf.set_X_pending(torch.cat(parts) if parts else None)
            vals = torch.cat([acqf(choices[i : i + 256].unsqueeze(1)) for i in range(0, k, 256)])
            if chosen:
                vals[chosen] = -torch.inf
            chosen.append(int(torch.argmax(vals)))
    return [int(short[c]) for c in chosen]


def _lipschitz(
    surrogate: GPSurrogate, feats: np.ndarray, prior: np.ndarray | None, rng: np.random.Generator, n: int = 1000
) -> float:
    rows = rng.choice(feats.shape[0], size=min(n, feats.shape[0]), replace=False)
    return acq.lipschitz_from_gradients(
        surrogate.mean_gradient_norms(feats[rows], None if prior is None else prior[rows])
    )


def locally_penalised_rows(
    strategy: Strategy,
    surrogate: GPSurrogate,
    feats: np.ndarray,
    prior: np.ndarray | None,
    scores: AcquisitionScores,
    *,
    best: float,
    q: int,
    rng: np.random.Generator,
    target: TargetSpec | None,
    pending_feats: np.ndarray | None = None,
    pending_prior: np.ndarray | None = None,
) -> list[int]:
    """Local penalisation (González et al. 2016): each pick, and each pending point, damps the
    acquisition within reach of a Lipschitz bound estimated from the posterior mean's gradients.
    """
    lipschitz = _lipschitz(surrogate, feats, prior, rng)
    pf = pm = ps = None
    if pending_feats is not None and len(pending_feats):
        pm_, ps_ = surrogate.predict(pending_feats, pending_prior, include_noise=True)
        pscore = acquisition_scores(strategy, pm_, ps_, best, target)
        pf, pm, ps = pending_feats, pscore.f_mean, pscore.f_std
    return acq.select_locally_penalised(
        scores.log_score, feats, scores.f_mean, scores.f_std, q, lipschitz, best, pf, pm, ps
    )


def screen_candidates(
    strategy: Strategy,
    pool: DiscretePool,
    free: np.ndarray,
    surrogate: GPSurrogate,
    *,
    prior_cov: np.ndarray | None,
    best: float,
    target: TargetSpec | None,
) -> np.ndarray:
    """The ``screen_keep`` free candidates with the best *approximate* acquisition.

    The exact posterior is computed only at the centroids of the pool's leaves
    (:meth:`DiscretePool.partition`); each candidate's mean is extrapolated to first order from
    its leaf centroid (mean + gradient · offset, plus the prior covariate's exact difference)
    and its standard deviation is taken from the centroid. The shortlist is then scored exactly
    by the caller. This trades a small risk of missing an optimum the linearisation misjudges
    for a cost that no longer grows with pool size x observations (the benchmark reports how
    often the pick differs from exhaustive scoring). ``prior_cov`` covers the whole pool.
    """
    labels, centroids = pool.partition(strategy.leaf_size)
    n_leaves = centroids.shape[0]
    leaf_prior = None
    if prior_cov is not None:
        leaf_prior = np.bincount(labels, weights=prior_cov, minlength=n_leaves) / np.maximum(
            np.bincount(labels, minlength=n_leaves), 1
        )
    c_mean, c_grad = surrogate.mean_gradients(centroids, leaf_prior)
    _, c_std = surrogate.predict(centroids, leaf_prior, include_noise=True)
    lab = labels[free]
    approx_mean = c_mean[lab] + np.einsum("ij,ij->i", pool.features[free] - centroids[lab], c_grad[lab])
    if leaf_prior is not None and prior_cov is not None:  # leaf_prior exists only with prior_cov
        approx_mean += surrogate.prior_slope * (prior_cov[free] - leaf_prior[lab])
    approx = acquisition_scores(strategy, approx_mean, c_std[lab], best, target).log_score
    keep = min(strategy.screen_keep, free.size)
    top = np.argpartition(-approx, keep - 1)[:keep]
    return np.sort(free[top])


def suggest_neighbour(
    strategy: Strategy,
    pool: DiscretePool,
    *,
    told_ids: Sequence[str],
    told_y: np.ndarray,
    free: np.ndarray,
    q: int,
    rng: np.random.Generator,
    target: TargetSpec,
    pending_ids: Sequence[str],
    hyper_cache: dict | None,
) -> list[str]:
    """Pool suggestions from the nearest-neighbour GP over known data and observations."""
    from screening.bo import neighbour_search as ns

    state = neighbour_state(
        strategy,
        pool,
        told_ids=told_ids,
        told_y=told_y,
        hyper_cache=hyper_cache,
        tolerance=target.tolerance,
        target=target.target,
    )
    pend = [int(r) for r in pool.indices_of(pending_ids)] if len(pending_ids) else []
    measured = measured_model(strategy, pool, state, told_ids=told_ids, told_y=told_y, hyper_cache=hyper_cache)
    # what either model's selection takes after the model itself
    picking = (free, q, strategy.acquisition, target.target, target.tolerance, rng, pend, strategy.tie_break or 0.0)
    if measured is not None:
        from screening.bo import measured_search as ms

        gp, inp = measured
        return [pool.ids[r] for r in ms.select(gp, inp, *picking)]
    rows = ns.select(state, *picking, pending_effect=_saved_pending_effect(hyper_cache, len(pool)) if pend else None)
    return [pool.ids[r] for r in rows]


def _sealed_state_digest(cache: dict) -> str | None:
    """The digest of the saved model file when the model in ``cache`` is that file's, else None."""
    sealer = cache.get("neighbour_seal")
    if sealer is None or cache.get("neighbour") is None or cache.get("neighbour_unsaved"):
        return None  # no sealed file, or an in-process loop ahead of it
    seal = sealer.read()
    return None if seal is None else seal.state


def _saved_pending_effect(cache: dict | None, n_pool: int):
    """The pending picks' effect that ``campaign tell`` saved (:mod:`screening.bo.pending_effect`)
    when it was computed from the model now in ``cache``; ``select`` checks the rest."""
    from screening.bo import pending_effect as pe

    if cache is None or cache.get("pending_effect_path") is None:
        return None
    digest = _sealed_state_digest(cache)
    if digest is None:
        return None
    effect = pe.load(cache["pending_effect_path"], cache["pending_effect_seal"].read(), n_pool)
    return effect if effect is not None and effect.state_digest == digest else None


def save_pending_effect(pool: DiscretePool, believed_ids: Sequence[str], basis: str, hyper_cache: dict) -> bool:
    """Compute and save the effect of believing ``believed_ids`` (the pending points a later
    ``ask --new`` will have) on the saved model; False, with nothing saved, where the model in
    ``hyper_cache`` is not the sealed file's."""
    from screening.bo import pending_effect as pe

    digest = _sealed_state_digest(hyper_cache)
    if digest is None or hyper_cache.get("pending_effect_path") is None or not believed_ids:
        return False
    from screening.bo import neighbour_search as ns

    state = hyper_cache["neighbour"]
    rows = np.asarray(pool.indices_of(list(believed_ids)), dtype=np.int64)
    believed = ns.predictive(state, rows)[0]  # what select believes them at, bit for bit
    effect = pe.PendingEffect(digest, basis, rows, believed, *ns.believed_effect(state, list(rows), believed))
    hyper_cache["pending_effect_seal"].write(pe.save(hyper_cache["pending_effect_path"], effect))
    return True


def pending_effect_basis(hyper_cache: dict, pending: Sequence[str], n: int, seed: int) -> tuple[str | None, bool]:
    """``(basis, saved)``: the inputs of the next ask's picks (:func:`screening.bo.pending_effect.basis`),
    None where no sealed model holds them, and whether the saved effect was made from them."""
    from screening.bo import pending_effect as pe

    digest = _sealed_state_digest(hyper_cache)
    if digest is None or hyper_cache.get("pending_effect_path") is None:
        return None, False
    basis = pe.basis(digest, list(pending), n, seed)
    path = hyper_cache["pending_effect_path"]
    try:
        from screening.io.array_file import read_meta

        saved = read_meta(path).get("basis") == basis and hyper_cache["pending_effect_seal"].read() is not None
    except (OSError, ValueError):
        saved = False
    return basis, saved


def measured_model(
    strategy: Strategy,
    pool: DiscretePool,
    state: NeighbourState,
    *,
    told_ids: Sequence[str],
    told_y: np.ndarray,
    hyper_cache: dict | None,
):
    """The measured-scale model over ``state`` (:mod:`screening.bo.measured_search`) and its
    inputs, or None where it does not apply (``strategy.learn_map`` off, or the base model holds
    the results itself: same-quantity known data with local structure)."""
    from screening.bo import measured_search as ms

    if not strategy.learns_map or not ms.applies(state, pool.known):
        return None
    cache = hyper_cache if hyper_cache is not None else {}
    key = (id(state), state.fit_count, len(state.told_rows))
    inp = cache.get("measured_inputs")
    if inp is None or cache.get("measured_inputs_key") != key:
        coords_key = (id(pool), strategy.map_components)
        if cache.get("measured_coords_key") != coords_key:
            cache["measured_coords"] = ms.residual_coords(pool, strategy.map_components)
            cache["measured_coords_key"] = coords_key
        inp = ms.inputs(state, pool, cache["measured_coords"], pool.prior_mean is not None)
        cache["measured_inputs"], cache["measured_inputs_key"] = inp, key
    rows = [int(r) for r in pool.indices_of(told_ids)]
    return ms.model(inp, rows, np.asarray(told_y, dtype=np.float64), cache), inp


def neighbour_state(
    strategy: Strategy,
    pool: DiscretePool,
    *,
    told_ids: Sequence[str],
    told_y: np.ndarray,
    hyper_cache: dict | None,
    tolerance: float | None = None,
    target: float | None = None,
) -> NeighbourState:
    """The nearest-neighbour model for these observations (what suggestions and the ask file's
    predictions are read from). ``tolerance``: the search's, which the label-match mixture is
    fitted for (``strategy.label_match``); the suggestions and the predictions must pass the same.
    ``target``: the search's target, for which the mixture's scores are prepared before the state
    is saved, so the next process reads them instead of recomputing them.

    The fitted state lives in ``hyper_cache`` (and, when the campaign names
    ``neighbour_state_path`` there, in that file), so each step only extends it.
    """
    from screening.bo import neighbour_search as ns

    known = pool.known
    settings = _settings(strategy, tolerance)
    cache = hyper_cache if hyper_cache is not None else {}
    prior_std = pool.prior_std if strategy.use_prior_std else None
    # A campaign names a file for the fitted model (`neighbour_state_path`): a new process (each
    # command-line ask) then reloads it instead of rebuilding, when it was made from the same inputs.
    state_path = cache.get("neighbour_state_path")
    key = None
    if state_path is not None:
        key = cache.get("neighbour_key") or _state_key(cache, settings, pool, prior_std)
        cache["neighbour_key"] = key
        if cache.get("neighbour") is None:
            cache["neighbour"] = _load_saved(cache, state_path, key, settings, len(pool))
        if cache.get("neighbour") is None and known is not None:
            cache["neighbour"] = _load_shared_start(cache, key, settings, len(pool))
    told_ids, told_y = _base_results(strategy, pool, told_ids, told_y)
    before = cache.get("neighbour")
    if (
        before is not None
        and state_path is not None
        and not ns.holds_prefix(
            before, [int(r) for r in pool.indices_of(told_ids)], np.asarray(told_y, dtype=np.float64)
        )
    ):
        cache.setdefault("notices", []).append(
            "rebuilt the search model: the saved one was built from other results than this campaign's"
        )
    before_mark = None if before is None else (id(before), len(before.told_rows), before.fit_count)
    if cache.pop("neighbour_from_shared", False):
        before_mark = None  # read from the user cache: the campaign keeps its own copy too
    state = ns.update_state(
        cache.get("neighbour"),
        settings,
        lambda: _embedding(pool),  # read only if the model is built here
        pool.prior_mean,
        known,
        [int(r) for r in pool.indices_of(told_ids)],
        np.asarray(told_y, dtype=np.float64),
        seed=0,
        prior_std=prior_std,
        known_cache=_known_cache(cache),
    )  # the model is a function of the data only (resume-safe); `rng` drives the draws
    # set for every use (not saved with the state); predictive reads it only without local structure
    use_network_std = strategy.trust_network_std and pool.prior_mean is not None
    state.network_std = pool.prior_std if use_network_std else None
    cache["neighbour"] = state
    if target is not None:
        ns.prepared_match(state, target)
    if before is None and state_path is not None and key is not None and known is not None and not state.told_rows:
        _save_shared_start(cache, state, key)
    if state_path is not None and key is not None and before_mark != (id(state), len(state.told_rows), state.fit_count):
        if cache.get("neighbour_defer_save"):  # an in-process loop: saved once, when it ends
            cache["neighbour_unsaved"] = True
        else:
            seal = ns.save_state(state, state_path, key)
            if cache.get("neighbour_seal") is not None:
                cache["neighbour_seal"].write(seal)
    return state


def extend_saved_state(
    strategy: Strategy,
    pool: DiscretePool,
    *,
    told_ids: Sequence[str],
    told_y: np.ndarray,
    hyper_cache: dict,
    tolerance: float | None = None,
    target: float | None = None,
) -> bool:
    """Extend the campaign's saved neighbour model with the results told since it was saved, and
    save it again (:func:`neighbour_state`); False, with nothing done and nothing said, where no
    saved model can be extended (none yet, one that fails its checks, other settings or other
    results): the next ``ask`` builds it and says why.

    Why: a result re-predicts every candidate it comes nearer than their neighbours (1.6-3 s at
    10^6 candidates); ``campaign tell``, which reads the results anyway, does it once, so the next
    ``ask`` reads the updated predictions from the sealed state file and only picks. The state
    saved is the one that ask would have computed (the same steps on the same data)."""
    from screening.bo import neighbour_search as ns

    state_path = hyper_cache.get("neighbour_state_path")
    if state_path is None:
        return False
    settings = _settings(strategy, tolerance)
    prior_std = pool.prior_std if strategy.use_prior_std else None
    key = hyper_cache.get("neighbour_key") or _state_key(hyper_cache, settings, pool, prior_std)
    hyper_cache["neighbour_key"] = key
    if hyper_cache.get("neighbour") is None:
        hyper_cache["neighbour"] = _load_saved(hyper_cache, state_path, key, settings, len(pool), say=False)
    state = hyper_cache.get("neighbour")
    rows_ids, values = _base_results(strategy, pool, told_ids, told_y)
    rows = [int(r) for r in pool.indices_of(rows_ids)]
    if state is None or not ns.extends(state, settings, pool.prior_mean, prior_std, pool.known, rows, values):
        return False
    neighbour_state(
        strategy, pool, told_ids=told_ids, told_y=told_y, hyper_cache=hyper_cache, tolerance=tolerance, target=target
    )
    return True


def _settings(strategy: Strategy, tolerance: float | None):
    """The neighbour model's settings for ``strategy`` (the label match fitted for ``tolerance``)."""
    from screening.bo import neighbour_search as ns

    return ns.NeighbourSettings(
        strategy.n_neighbours,
        strategy.neighbour_components,
        min_labelled=strategy.neighbour_min_labelled,
        label_match_tolerance=float(tolerance) if strategy.label_match and tolerance else 0.0,
    )


def _base_results(
    strategy: Strategy, pool: DiscretePool, told_ids: Sequence[str], told_y: np.ndarray
) -> tuple[Sequence[str], np.ndarray]:
    """The results the base model holds: all of them, or none where the known data are of another
    quantity (the base then speaks their scale, and the results teach the map)."""
    known = pool.known
    if strategy.learns_map and known is not None and not known.same_quantity:
        return [], np.zeros(0)
    return told_ids, np.asarray(told_y, dtype=np.float64)


def _embedding(pool: DiscretePool) -> np.ndarray:
    """What the neighbour model projects: the pool's embeddings (read now if they were not), or its features."""
    embedding = pool.embedding
    return embedding if embedding is not None else pool.features


def _state_key(cache: dict, settings, pool: DiscretePool, prior_std: np.ndarray | None) -> str:
    """The saved model's key (:func:`~screening.bo.neighbour_search.state_key`) for this pool.

    Why remembered: the key hashes every input array (the 10^6 x 128 embedding is 1 GiB) and
    the pool's embedding need not even be read in a later command. Where a checker vouches for
    the pool's arrays (``pool.content_token``) and the campaign keeps a memo
    (``cache["neighbour_key_memo"]``), the key computed once is read back under the token, the
    settings and which inputs are used; anything else computes it from the arrays."""
    from screening import __version__
    from screening.bo import neighbour_search as ns

    memo = cache.get("neighbour_key_memo")
    inputs = None
    if memo is not None and pool.content_token is not None:
        words = [ns.STATE_FORMAT, __version__, settings, pool.content_token, len(pool)]
        words += [pool.prior_mean is None, prior_std is None, pool.known is None]
        inputs = hashlib.sha256("|".join(map(str, words)).encode()).hexdigest()
        key = memo.read(inputs)
        if key is not None:
            return key
    key = ns.state_key(settings, _embedding(pool), pool.prior_mean, prior_std, pool.known)
    if memo is not None and inputs is not None:
        memo.write(inputs, key)
    return key


# A model with known data and no results yet depends on the pool, the known table and the settings
# only (the state key): a second campaign or search over the same pool and table starts from it
# (user cache, beside the known-data fits) instead of indexing every candidate again. Kept for
# pools up to this size: above it the file (hundreds of MB at 10^6) costs more than it saves.
SHARED_START_MAX = 200_000


def _shared_start_path(cache: dict, key: str):
    from pathlib import Path

    directory = cache.get("known_fit_dir")
    return None if directory is None else Path(directory) / f"start-{key[:20]}.arrays"


def _load_shared_start(cache: dict, key: str, settings, n_pool: int) -> NeighbourState | None:
    """The zero-result model for this state key from the user cache, if one passes its checks
    (the seal written beside it: a cache, safe to delete, refitted when anything is off)."""
    import json

    from screening.bo import neighbour_search as ns

    path = _shared_start_path(cache, key)
    if path is None or n_pool > SHARED_START_MAX or not path.exists():
        return None
    try:
        seal = ns.Seal.from_dict(json.loads(path.with_suffix(".seal.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        seal = None
    if seal is not None:  # a seal kept beside the file vouches for its digest, not for a skipped scan
        seal = dataclasses.replace(seal, finite=False)
    state, why = ns.load_checked(path, key, settings, seal, sealed=True, n_pool=n_pool)
    if state is not None and state.told_rows:
        state, why = None, "it holds results"
    if state is None:
        cache.setdefault("notices", []).append(f"rebuilt the search model: the cached start {path.name} {why}")
        return None
    state.base_token = None  # its base file is the cache's: the campaign writes its own
    state.base_digest = state.base_stamp = None
    cache["neighbour_from_shared"] = True
    return state


def _save_shared_start(cache: dict, state: NeighbourState, key: str) -> None:
    """Keep a freshly built zero-result model in the user cache (see :data:`SHARED_START_MAX`)."""
    import json

    from screening.bo import neighbour_search as ns

    path = _shared_start_path(cache, key)
    if path is None or len(state.pool_prior) > SHARED_START_MAX or path.exists():
        return
    token, digest, stamp = state.base_token, state.base_digest, state.base_stamp
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        state.base_token = state.base_digest = state.base_stamp = None
        seal = ns.save_state(state, path, key)
        path.with_suffix(".seal.json").write_text(json.dumps(seal.to_dict()), encoding="utf-8")
    except OSError as exc:
        cache.setdefault("notices", []).append(f"could not keep the search model's start in {path.parent} ({exc})")
    finally:
        state.base_token, state.base_digest, state.base_stamp = token, digest, stamp


def _known_cache(cache: dict):
    """The user cache of known-data fits the campaign named (``cache["known_fit_dir"]``), whose
    notices join the campaign's; None: fit the known data in memory."""
    from screening.bo.known_fit import KnownFitCache

    directory = cache.get("known_fit_dir")
    if directory is None:
        return None
    return KnownFitCache(directory, cache.setdefault("notices", []))


def _load_saved(cache: dict, path, key: str, settings, n_pool: int, say: bool = True) -> NeighbourState | None:
    """The campaign's saved model when it passes every check, else None with one line saying why
    in ``cache["notices"]`` (the caller shows them; ``say=False``: nothing said, for a caller that
    will not rebuild it). ``cache["neighbour_seal"]``, when the campaign sets it, reads and writes
    the seal kept in the campaign's own store."""
    from screening.bo import neighbour_search as ns

    sealer = cache.get("neighbour_seal")
    seal = sealer.read() if sealer is not None else None
    state, why = ns.load_checked(path, key, settings, seal, sealed=sealer is not None, n_pool=n_pool)
    if why and say:
        cache.setdefault("notices", []).append(f"rebuilt the search model: {why}")
    if state is not None and sealer is not None and seal is not None:
        stamps = (state.state_stamp, state.base_stamp)
        if stamps != (seal.state_stamp, seal.base_stamp):  # checked by digest this time (copied, touched)
            try:  # its new stamps spare the next command the digests
                sealer.write(dataclasses.replace(seal, state_stamp=stamps[0], base_stamp=stamps[1]))
            except MatscreenError:  # a read-only campaign checks by digest again next time
                pass
    return state
