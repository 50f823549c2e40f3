"""Campaigns: the ask / tell / run loop around an objective, with stop rules and a history.

A :class:`Campaign` holds no state that is not in its store: every ``ask`` records the
suggestions as pending and every ``tell`` appends the results, each in one SQLite transaction
(:mod:`screening.bo.store`). Reopening the file after a crash (even SIGKILL) gives back every
told observation; since suggestions depend only on the seed and the data, the next suggestion
is the one an uninterrupted run would have made.

Telling bad data — a point the domain does not know, a point already told with a different
value or repeated in the batch, a NaN or infinite value or loss, a value the objective's
``check_y`` calls impossible — raises :class:`TellError` naming the point and the reason, and
changes nothing (the whole batch is validated before anything is written).

Two rules make a killed command safe to rerun:

- ``ask`` returns the pending (asked, not yet told) points first, oldest first, and proposes new
  ones only for the rest of the batch: an ``ask`` killed after it saved its suggestions resumes
  to the same suggestions. ``ask(n, fresh=True)`` proposes new points regardless (a second
  batch while the first is still out).
- Telling exactly the stored value (or the same failure reason) again is idempotent: nothing is
  written and the point is reported as already recorded, so a ``tell`` killed after its commit
  can be retried. A different value for a told point is an error.

A told point that was never asked (the lab measured it anyway) is recorded with source
``"prior"``: it informs the model but does not count towards the search budget or the
evaluations to the first hit.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from screening.bo.objective import BoxObjective, Evaluation, Objective, Point, target_spec_of
from screening.bo.store import CampaignStore, ObservationRecord
from screening.errors import MatscreenError, RecordError

if TYPE_CHECKING:  # torch, botorch and scipy load only when a campaign suggests (`status` stays light)
    import pandas as pd
    from typing_extensions import TypeIs

    from screening.bo.domain import Box, DiscretePool
    from screening.bo.strategy import Strategy

NEIGHBOUR_STATE_NAME = "neighbour_state.arrays"
PENDING_EFFECT_NAME = "pending_effect.arrays"  # the next ask's picks' effect on it (pending_effect.py)
"""The fitted neighbour model beside the campaign store, with its build-time part in
``neighbour_state_base.arrays`` (a cache: deleting them costs a rebuild)."""


class TellError(RecordError):
    """A told result is unusable (unknown or duplicate point, NaN value, bad loss)."""


@dataclass(frozen=True)
class TellOutcome:
    """What a tell recorded: ``search`` asked points, ``prior`` unsolicited ones, and the points
    ``already_recorded`` with exactly these values (skipped: a retried tell)."""

    search: list[str] = field(default_factory=list)
    prior: list[str] = field(default_factory=list)
    already_recorded: list[str] = field(default_factory=list)


def _is_pool(domain: object) -> TypeIs[DiscretePool]:
    """isinstance without importing the domain module at import time; TypeIs lets the type
    checker narrow ``DiscretePool | Box`` both ways after the call."""
    from screening.bo.domain import DiscretePool

    return isinstance(domain, DiscretePool)


@dataclass(frozen=True)
class StopRules:
    """When ``run`` stops. ``budget``: search evaluations (prior data excluded);
    ``stop_on_hit``: stop at the first evaluation the objective calls a hit; ``plateau``: stop
    after this many search evaluations without the best loss improving by more than
    ``plateau_tol`` (units of the loss)."""

    budget: int | None = None
    stop_on_hit: bool = True
    plateau: int | None = None
    plateau_tol: float = 0.0


@dataclass
class History:
    """Told observations in order, with helpers for reports. Losses of failed points are NaN."""

    records: list[ObservationRecord]
    hits: list[bool]

    @property
    def n_search(self) -> int:
        return sum(r.source == "search" for r in self.records)

    def losses(self) -> np.ndarray:
        return np.array([r.loss if r.loss is not None else np.nan for r in self.records], dtype=np.float64)

    def best_loss_curve(self, source: str | None = "search") -> np.ndarray:
        """Best loss after each evaluation (prior data included as the starting level)."""
        losses = self.losses()
        prior = [r.source == "prior" for r in self.records]
        start = (
            np.nanmin(np.where(prior, losses, np.nan)) if any(prior) and np.any(np.isfinite(losses[prior])) else np.inf
        )
        search = losses[[not p for p in prior]] if source == "search" else losses
        search = np.where(np.isfinite(search), search, np.inf)
        return np.minimum.accumulate(np.concatenate([[start], search]))[1:] if search.size else np.empty(0)

    def first_hit(self) -> int | None:
        """1-based count of search evaluations up to and including the first hit, or None."""
        n = 0
        for r, hit in zip(self.records, self.hits):
            if r.source != "search":
                continue
            n += 1
            if hit:
                return n
        return None

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        best = math.inf
        for r, hit in zip(self.records, self.hits):
            if r.loss is not None and r.loss < best:
                best = r.loss
            rows.append(
                {
                    "seq": r.seq,
                    "point": r.key,
                    "source": r.source,
                    "y": r.y if not isinstance(r.y, list) else str(r.y),
                    "loss": r.loss,
                    "best_loss": best if math.isfinite(best) else None,
                    "hit": hit,
                    "error": r.error,
                    "told_at": r.told_at,
                }
            )
        # With no records yet the columns still stand (a report before the first tell).
        columns = ["seq", "point", "source", "y", "loss", "best_loss", "hit", "error", "told_at"]
        return pd.DataFrame(rows, columns=columns)


def stop_reason(
    rules: StopRules, history: History, budget: int | None = None, pool_size: int | None = None
) -> str | None:
    """Why a campaign should stop now ("hit", "budget", "plateau", "exhausted") or None to go on.

    ``pool_size``: the candidates of a pool campaign; "exhausted" once every one is evaluated (a
    search that spends its pool without a hit ends with its results, not with an error)."""
    if rules.stop_on_hit and any(history.hits):
        return "hit"
    cap = budget if budget is not None else rules.budget
    if cap is not None and history.n_search >= cap:
        return "budget"
    if pool_size is not None and len({r.key for r in history.records}) >= pool_size:
        return "exhausted"
    if rules.plateau is not None:
        curve = history.best_loss_curve()
        if curve.size > rules.plateau:
            if curve[-1 - rules.plateau] - curve[-1] <= rules.plateau_tol:
                return "plateau"
    return None


class _StoreSeal:
    """The seal of the saved neighbour model (:class:`screening.bo.neighbour_search.Seal`), kept
    in the campaign's store rather than beside the arrays it vouches for."""

    META_KEY = "neighbour_seal"

    def __init__(self, store: CampaignStore) -> None:
        self.store = store

    def read(self):
        from screening.bo.neighbour_search import Seal

        return Seal.from_dict(self.store.get_meta(self.META_KEY))

    def write(self, seal) -> None:
        self.store.set_meta(self.META_KEY, seal.to_dict())


class _StoreDigest:
    """The digest of the saved pending effect (:mod:`screening.bo.pending_effect`), kept in the
    campaign's store rather than beside the file it vouches for."""

    META_KEY = "pending_effect_digest"

    def __init__(self, store: CampaignStore) -> None:
        self.store = store

    def read(self) -> str | None:
        digest = self.store.get_meta(self.META_KEY)
        return digest if isinstance(digest, str) else None

    def write(self, digest: str) -> None:
        self.store.set_meta(self.META_KEY, digest)


class _StoreKeyMemo:
    """The neighbour model's key remembered under the inputs it was computed for
    (:func:`screening.bo.optimise_pool._state_key`), kept in the campaign's store."""

    META_KEY = "neighbour_key_memo"

    def __init__(self, store: CampaignStore) -> None:
        self.store = store

    def read(self, inputs: str) -> str | None:
        memo = self.store.get_meta(self.META_KEY)
        if isinstance(memo, dict) and memo.get("inputs") == inputs and isinstance(memo.get("key"), str):
            return memo["key"]
        return None

    def write(self, inputs: str, key: str) -> None:
        try:
            self.store.set_meta(self.META_KEY, {"inputs": inputs, "key": key})
        except MatscreenError:  # a read-only campaign computes it again next time
            pass


class Campaign:
    """Ask / tell / run over an objective, persisted in a :class:`CampaignStore`.

    Create with :meth:`create` (new file) or :meth:`open` (resume); the plain constructor takes
    an open store. ``batch_size`` is q, the points suggested per round.
    """

    def __init__(
        self,
        objective: Objective,
        store: CampaignStore,
        strategy: Strategy,
        seed: int = 0,
        batch_size: int = 1,
        stop: StopRules = StopRules(),
    ) -> None:
        self.objective = objective
        self.store = store
        self.strategy = strategy
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.stop = stop
        self.stopped_because: str | None = None
        self.last_ask: int | None = None  # the recorded ask of the last ``ask(file=...)``
        self._hyper_cache: dict = {}  # hyper-parameters by refit size; rebuilt identically after a restart
        if strategy.surrogate == "neighbour" and getattr(store, "path", None) is not None:
            # the fitted neighbour model is kept beside the store, so each new process's ask reloads it
            self._hyper_cache["neighbour_state_path"] = Path(store.path).with_name(NEIGHBOUR_STATE_NAME)
            self._hyper_cache["neighbour_seal"] = _StoreSeal(store)
            self._hyper_cache["neighbour_key_memo"] = _StoreKeyMemo(store)
            self._hyper_cache["pending_effect_path"] = Path(store.path).with_name(PENDING_EFFECT_NAME)
            self._hyper_cache["pending_effect_seal"] = _StoreDigest(store)
            if os.environ.get("MATSCREEN_NO_CACHE", "") in ("", "0"):  # known-data fits, shared by campaigns
                from screening.cache_dir import default_cache_dir

                self._hyper_cache["known_fit_dir"] = default_cache_dir() / "known_fits"
        from screening.bo.strategy import StrategyError, Target

        spec = target_spec_of(objective)
        self.target = Target(spec.target, spec.tolerance) if spec is not None else None
        if strategy.model == "value" and self.target is None:
            raise StrategyError("the value model needs an objective with `target` and `tolerance`")

    # ---------------------------------------------------------------- construction

    @staticmethod
    def _config(strategy: Strategy, seed: int, batch_size: int, stop: StopRules, extra: dict | None) -> dict:
        return {
            "strategy": strategy.to_dict(),
            "seed": int(seed),
            "batch_size": int(batch_size),
            "stop": asdict(stop),
            "extra": extra or {},
        }

    @classmethod
    def create(
        cls,
        path: str | Path,
        objective: Objective,
        strategy: Strategy | None = None,
        seed: int = 0,
        batch_size: int = 1,
        stop: StopRules = StopRules(),
        pool_ref: dict | None = None,
        extra: dict | None = None,
    ) -> Campaign:
        """A new campaign file at ``path``; ``extra`` keeps anything a caller needs to rebuild
        the objective later (e.g. the pool path and target). ``strategy`` defaults to ``Strategy()``."""
        from screening.bo.strategy import Strategy

        strategy = Strategy() if strategy is None else strategy
        if pool_ref is None and _is_pool(objective.domain):
            pool_ref = {"n_candidates": len(objective.domain), "content_hash": objective.domain.content_hash()}
        config = cls._config(strategy, seed, batch_size, stop, extra)
        spec = target_spec_of(objective)
        if spec is not None:  # lets `campaign status` count hits without rebuilding the objective
            config["target_spec"] = {"target": spec.target, "tolerance": spec.tolerance}
        store = CampaignStore.create(path, config, pool_ref)
        return cls(objective, store, strategy, seed, batch_size, stop)

    @classmethod
    def open(cls, path: str | Path, objective: Objective) -> Campaign:
        """Resume the campaign in ``path`` with its stored strategy, seed and stop rules."""
        from screening.bo.strategy import Strategy

        store = CampaignStore.open(path)
        cfg = store.config
        ref = store.pool_ref
        if ref and "content_hash" in ref and _is_pool(objective.domain):
            if objective.domain.content_hash() != ref["content_hash"]:
                store.close()
                raise MatscreenError(
                    f"{path}: the pool given is not the pool this campaign was created with (content hash differs)"
                )
        return cls(
            objective,
            store,
            Strategy.from_dict(cfg["strategy"]),
            cfg["seed"],
            cfg["batch_size"],
            StopRules(**cfg["stop"]),
        )

    def close(self) -> None:
        self.store.close()

    def notices(self) -> list[str]:
        """Lines the user should read about the last steps (e.g. a saved model that failed its
        checks and was rebuilt, or results missing from the store); each is returned once."""
        out = [*getattr(self.store, "notices", []), *self._hyper_cache.pop("notices", [])]
        if hasattr(self.store, "notices"):
            self.store.notices = []
        return out

    # ---------------------------------------------------------------- state

    @property
    def domain(self) -> DiscretePool | Box:
        return self.objective.domain

    def history(self) -> History:
        records = self.store.observations()
        hits = [r.ok and bool(self.objective.is_hit(_as_y(r.y))) for r in records]
        return History(records, hits)

    def pending_points(self) -> list[Point]:
        return [self._point_of(p.key, p.x) for p in self.store.pending()]

    def _point_of(self, key: str, x: list[float] | None) -> Point:
        return key if _is_pool(self.domain) else np.asarray(x, dtype=np.float64)

    def _key(self, point: Point) -> str:
        if _is_pool(self.domain):
            return str(point)
        return self.domain.key_of(point)

    def _ask_seed(self, n_told: int, n_pending: int) -> int:
        return int(np.random.SeedSequence([self.seed, n_told, n_pending]).generate_state(1)[0])

    # ---------------------------------------------------------------- ask / tell

    def ask(self, n: int | None = None, fresh: bool = False, file: str | None = None) -> list[Point]:
        """``n`` (default: batch size) points to evaluate next: the pending ones first, then new ones.

        Pending points (asked before, not told yet) come back first, oldest first, so an ask that
        was killed after saving its suggestions resumes to the same points; only the rest of the
        batch is proposed anew and recorded as pending. ``fresh=True`` proposes ``n`` new points
        even when some are pending (a second batch while the first is still in the lab).

        ``file``: the ask file the caller will write; the ask is recorded with it (its name made
        unique, :attr:`last_ask`), and the caller marks it written (``store.mark_written``). An ask
        killed before that is finished by the next one, which returns its points again
        (:meth:`~screening.bo.store.CampaignStore.interrupted_ask`): ``--new`` is deterministic
        under a kill. New points are claimed in the transaction that checks nothing changed since
        they were chosen, so concurrent asks never hand out the same point.
        """
        n = self.batch_size if n is None else int(n)
        self.last_ask = None
        if file is not None:
            interrupted = self.store.interrupted_ask()
            if interrupted is not None:
                self._hyper_cache.setdefault("notices", []).append(
                    f"an ask interrupted at {interrupted.asked_at[:19]} never wrote {interrupted.file};"
                    " these are its points"
                )
                self.last_ask = interrupted.batch
                return [self._pending_point(k) for k in interrupted.keys]
        for _ in range(20):  # another process may tell or ask meanwhile: choose again from its state
            expect = self.store.snapshot()
            pending = self.store.pending()
            again: list[Point] = [] if fresh else [self._point_of(p.key, p.x) for p in pending[:n]]
            new = self._propose(n - len(again)) if len(again) < n else []
            points = again + new
            items = [(self._key(p), None if _is_pool(self.domain) else [float(v) for v in p]) for p in new]
            if not new:  # only points already pending: nothing to claim (a kill loses nothing)
                return points
            batch = self.store.claim(items, expect, file)
            if batch is not None:
                self.last_ask = batch if file is not None else None
                return points
        raise MatscreenError(f"{self.store.path}: other processes kept changing the campaign; ask again")

    def _pending_point(self, key: str) -> Point:
        x = next((p.x for p in self.store.pending() if p.key == key), None)
        return self._point_of(key, x)

    def _propose(self, n: int) -> list[Point]:
        """Suggest ``n`` new points (not told, not pending); :meth:`ask` records them as pending."""
        from screening.bo.suggest import suggest_box, suggest_pool

        records = self.store.observations()
        pending = self.store.pending()
        ok = [r for r in records if r.ok]
        told_y = np.array([_scalar_or_nan(r.y) for r in ok], dtype=np.float64)
        told_loss = np.array([r.loss for r in ok], dtype=np.float64)
        seed = self._ask_seed(len(records), len(pending))
        if _is_pool(self.domain):
            return list(
                suggest_pool(
                    self.strategy,
                    self.domain,
                    [r.key for r in ok],
                    told_y,
                    told_loss,
                    q=n,
                    seed=seed,
                    target=self.target,
                    excluded_ids=[r.key for r in records],
                    pending_ids=[p.key for p in pending],
                    hyper_cache=self._hyper_cache,
                )
            )
        X = np.array([r.x for r in ok], dtype=np.float64).reshape(len(ok), self.domain.dim)
        Xp = np.array([p.x for p in pending], dtype=np.float64).reshape(len(pending), self.domain.dim)
        P = suggest_box(
            self.strategy,
            self.domain,
            X,
            told_y,
            told_loss,
            q=n,
            seed=seed,
            target=self.target,
            X_pending=Xp if len(pending) else None,
            hyper_cache=self._hyper_cache,
        )
        from screening.bo.domain import replace_repeats

        taken = np.array([r.x for r in records if r.x is not None], dtype=np.float64).reshape(-1, self.domain.dim)
        return list(replace_repeats(list(P), self.domain, np.vstack([taken, Xp]), seed))

    def set_box(self, box: Box) -> None:
        """Move a box campaign to ``box`` (e.g. one widened by boundary expansion).

        Why a method: the GP's hyper-parameters are fitted in the box's unit coordinates, so the
        cached ones no longer fit a changed box; dropping them makes the next ask what a resumed
        run (empty cache, same box) would suggest.
        """
        current = self.domain
        if _is_pool(current) or not isinstance(self.objective, BoxObjective):
            raise MatscreenError("only a campaign over a box can change its box")
        if box.dim != current.dim or box.names != current.names:
            raise MatscreenError(f"a campaign's box keeps its inputs: {current.names} cannot become {box.names}")
        if box != current:  # an unchanged box keeps its fitted hyper-parameters
            self._hyper_cache.clear()
        self.objective.domain = box

    def predictive(self, points: Sequence[Point]) -> dict[str, np.ndarray]:
        """The model's view of pool ``points`` given the told data: ``mean`` and ``std`` of the
        modelled quantity (the value, e.g. the gap in eV, for ``model="value"``; the loss for
        ``model="loss"``) and the ``acquisition`` score (a probability for ``window``/``pi``, an
        expected improvement for ``ei``/``logei``/``folded-ei``, in loss units).

        Why: a lab judging an ask file needs to see what the search expects of each suggestion.
        NaN where no model exists yet (the random initial picks) and for box campaigns. Depends
        only on the stored data, so a resumed ask writes the same numbers.
        """
        from screening.bo import fitting  # light: gpytorch loads only where a GP is fitted

        n = len(points)
        out = {k: np.full(n, np.nan) for k in ("mean", "std", "acquisition", "map")}
        if not _is_pool(self.domain) or n == 0:
            return out
        pool: Any = self.domain  # a DiscretePool (checked above)
        ok = [r for r in self.store.observations() if r.ok]
        told_ids = [r.key for r in ok]
        told_y = np.array([_scalar_or_nan(r.y) for r in ok], dtype=np.float64)
        told_loss = np.array([r.loss for r in ok], dtype=np.float64)
        rows = pool.indices_of([str(p) for p in points])
        seed = self._ask_seed(len(ok), 0)
        target = self.target
        window = None  # the label-match mixture's window probability, when it scores the search
        if self.strategy.surrogate == "neighbour":
            from screening.bo import neighbour_search as ns

            state, measured = self._neighbour_models(pool, told_ids, told_y)
            if measured is not None:
                from screening.bo import measured_search as ms

                gp, inp = measured
                mean, std = ms.predictive(gp, inp, rows)
                out["map"] = gp.map_posterior(inp.g[rows])[0]  # the base prediction on the measured scale
                if target is not None:
                    window = ms.window_probability(gp, inp, target.target, target.tolerance, rows)
            else:
                mean, std = ns.reported_predictive(state, rows)
                if target is not None and state.label_match is not None:
                    # the probability the window search ranks by (the mixture's, not its moments')
                    window = np.exp(ns.window_scores(state, target.target, target.tolerance, rows))
        else:
            if len(told_ids) < max(self.strategy.n_init, 2):
                return out
            told_rows = pool.indices_of(told_ids)
            prior_all = pool.prior_mean if self.strategy.use_prior else None
            prior_told = None if prior_all is None else prior_all[told_rows]
            X = pool.features[told_rows]
            surrogate, _ = fitting.fit_surrogate(
                self.strategy, pool.bounds, X, told_y, told_loss, prior_told, target, seed, self._hyper_cache
            )
            prior_cov = None
            if prior_all is not None:
                if self.strategy.model != "value" and target is not None:  # the loss model's covariate
                    prior_cov = np.abs(prior_all - target.target)
                else:
                    prior_cov = prior_all
            prior_rows = None if prior_cov is None else prior_cov[rows]
            mean, std = surrogate.predict(pool.features[rows], prior_rows, include_noise=True)
        if self.strategy.model == "value" and target is None:
            return out
        out["mean"], out["std"] = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if window is not None:
            out["acquisition"] = window
            return out
        best = fitting.incumbent(self.strategy, told_y, told_loss, target) if len(ok) else float("inf")
        scores = fitting.acquisition_scores(self.strategy, np.asarray(mean), np.asarray(std), best, target)
        out["acquisition"] = np.exp(np.asarray(scores.log_score, dtype=np.float64))
        return out

    def _neighbour_models(self, pool: Any, told_ids: list[str], told_y: np.ndarray) -> tuple[Any, Any]:
        """The neighbour state the suggestions came from (built or extended here, never twice) and
        the measured-scale model over it (None where it does not apply)."""
        from screening.bo.optimise_pool import measured_model, neighbour_state

        target = self.target
        state = neighbour_state(
            self.strategy,
            pool,
            told_ids=told_ids,
            told_y=told_y,
            hyper_cache=self._hyper_cache,
            tolerance=target.tolerance if target is not None else None,
            target=target.target if target is not None else None,
        )
        measured = measured_model(
            self.strategy, pool, state, told_ids=told_ids, told_y=told_y, hyper_cache=self._hyper_cache
        )
        return state, measured

    def extend_saved_model(self) -> bool:
        """Extend the saved search model with every result told so far and save it; False where
        there is none to extend (not a neighbour pool campaign, no model built yet, or one the
        next ``ask`` must rebuild: it says why then).

        Why: each ``campaign ask`` runs in a new process; the candidates a new result comes near
        are predicted again when the model takes it in (seconds at 10^6 candidates). ``campaign
        tell`` calls this after recording the results, so the next ``ask`` reads the updated,
        sealed predictions instead: the same model, hence the same suggestions, sooner."""
        if self.strategy.surrogate != "neighbour" or not _is_pool(self.domain):
            return False
        from screening.bo.optimise_pool import extend_saved_state

        ok = [r for r in self.store.observations() if r.ok]
        target = self.target
        return extend_saved_state(
            self.strategy,
            self.domain,
            told_ids=[r.key for r in ok],
            told_y=np.array([_scalar_or_nan(r.y) for r in ok], dtype=np.float64),
            hyper_cache=self._hyper_cache,
            tolerance=target.tolerance if target is not None else None,
            target=target.target if target is not None else None,
        )

    def prepare_new_ask(self) -> bool:
        """Make the picks the next ``ask`` will make (without recording them) and save their
        effect on the saved model, with the points still pending, for a later ``ask --new``
        (:mod:`screening.bo.pending_effect`); False where nothing was saved (not a neighbour pool
        campaign, no sealed model, or the measured-scale model picks).

        Why here: ``campaign tell`` has just extended the model in memory; a second suggestion
        while the first is in the lab (``ask --new``) then reads the effect instead of predicting
        again every candidate the pending picks come near (0.4 s at 10^6 candidates). The picks
        are the next ask's: the same call on the same data and seed; an ask that picks otherwise
        (the campaign changed meanwhile) leaves a file ``ask --new`` does not read."""
        if self.strategy.surrogate != "neighbour" or not _is_pool(self.domain) or self.target is None:
            return False
        from screening.bo import measured_search as ms
        from screening.bo.optimise_pool import pending_effect_basis, save_pending_effect

        pool: Any = self.domain
        state = self._hyper_cache.get("neighbour")
        if state is None or (self.strategy.learns_map and ms.applies(state, pool.known)):
            return False
        records, pending = self.store.observations(), [p.key for p in self.store.pending()]
        n = max(self.batch_size - len(pending), 0)
        basis, saved = pending_effect_basis(self._hyper_cache, pending, n, self._ask_seed(len(records), len(pending)))
        if basis is None or saved:
            return saved
        try:  # only time is at stake: a tell never fails for it (an exhausted pool, a full disk)
            picks = [str(p) for p in self._propose(n)] if n else []
            return save_pending_effect(pool, pending + picks, basis, self._hyper_cache)
        except (MatscreenError, OSError):
            return False

    def learned_map(self) -> Any:
        """The map the search has learned from the base prediction to the measured value
        (:class:`~screening.bo.measured_map.MapSummary`), or None where none is learned (not a
        neighbour pool campaign, ``learn_map`` off, or the base model holds the results itself).

        Why: a scientist must see why the campaign now prefers other crystals — e.g. "measured ≈
        0.9 + 1.3 × predicted (±0.1 eV, from 7 results)"."""
        if not _is_pool(self.domain) or not self.strategy.learns_map or self.target is None:
            return None
        pool: Any = self.domain
        ok = [r for r in self.store.observations() if r.ok]
        told_ids = [r.key for r in ok]
        told_y = np.array([_scalar_or_nan(r.y) for r in ok], dtype=np.float64)
        _, measured = self._neighbour_models(pool, told_ids, told_y)
        if measured is None:
            return None
        gp, inp = measured
        told_rows = pool.indices_of(told_ids)
        lo, hi = (float(np.min(inp.g)), float(np.max(inp.g)))
        if len(told_rows) >= 2:
            lo, hi = float(np.min(inp.g[told_rows])), float(np.max(inp.g[told_rows]))
        return dataclasses.replace(gp.summary((lo, hi)), points_g=inp.g[told_rows], points_y=told_y)

    def tell(
        self,
        points: Sequence[Point],
        ys: Sequence[Any],
        errors: Sequence[str | None] | None = None,
        source: str = "search",
        origin: str | None = None,
    ) -> TellOutcome:
        """Record results for ``points``: ``ys[i]`` is the outcome, or ``errors[i]`` a failure reason.

        ``origin`` names where the results came from (e.g. a results CSV) for error messages.
        Validates the whole batch first; on any problem raises :class:`TellError` and writes nothing.
        Unsolicited points become ``"prior"`` and exact repeats are skipped (see the module notes).
        """
        if errors is None:
            errors = [None] * len(points)
        if not (len(points) == len(ys) == len(errors)):
            raise TellError("<batch>", f"{len(points)} points, {len(ys)} values and {len(errors)} errors", origin)
        evals = [Evaluation(p, y, e) for p, y, e in zip(points, ys, errors)]
        return self.tell_evaluations(evals, source=source, origin=origin)

    def tell_evaluations(
        self, evaluations: Sequence[Evaluation], source: str = "search", origin: str | None = None
    ) -> TellOutcome:
        """Like :meth:`tell` for the objective's own :class:`Evaluation` objects.

        With ``source="search"``, points that are not pending (never asked) are recorded as
        ``"prior"``. Points already told with exactly these values are skipped and listed in the
        outcome's ``already_recorded``. A damaged store raises before anything is recorded.
        """
        self.store.check()
        told = {r.key: r for r in self.store.observations()}
        pending = self.store.pending()
        pending_keys = {p.key for p in pending}
        seen: set[str] = set()
        records: list[ObservationRecord] = []
        outcome = TellOutcome()
        for ev in evaluations:
            key, x = self._validate_point(ev.point, origin, pending)
            if key in seen:
                raise TellError(key, "appears twice in this batch", origin)
            seen.add(key)
            if key in told:
                if not _same_result(told[key], ev):
                    raise TellError(
                        key,
                        f"already told with {_describe(told[key].y, told[key].error)}, now "
                        f"{_describe(ev.y, ev.error)}: each point is evaluated once",
                        origin,
                    )
                outcome.already_recorded.append(key)
                continue
            src = "prior" if source == "search" and key not in pending_keys else source
            (outcome.search if src == "search" else outcome.prior).append(key)
            if ev.error is not None:
                records.append(ObservationRecord(key, x, None, None, str(ev.error), src))
                continue
            y = _check_y(ev.y, key, origin)
            check = getattr(self.objective, "check_y", None)
            if callable(check):
                try:
                    check(_as_y(y))
                except ValueError as exc:
                    raise TellError(key, str(exc), origin) from None
            try:
                loss = float(self.objective.loss(_as_y(y)))
            except Exception as exc:  # noqa: BLE001 - the objective's own complaint, re-labelled
                raise TellError(key, f"the objective cannot compute a loss from this value ({exc})", origin) from exc
            if not math.isfinite(loss):
                raise TellError(key, f"loss {loss} is not finite", origin)
            records.append(ObservationRecord(key, x, y, loss, None, src))
        if records:
            self.store.record_tell(records)
        return outcome

    def _validate_point(
        self, point: Point, origin: str | None, pending: Sequence[Any] = ()
    ) -> tuple[str, list[float] | None]:
        if _is_pool(self.domain):
            key = str(point)
            if not self.domain.contains(key):
                raise TellError(key, "unknown candidate: not in this campaign's pool", origin)
            return key, None
        x = np.asarray(point, dtype=np.float64).reshape(-1)
        key = self.domain.key_of(x) if x.size == self.domain.dim else str(list(x))
        if x.size == self.domain.dim and pending:
            # A results file rounds coordinates: a point within 1e-7 of a box width of a pending
            # suggestion is that suggestion.
            width = self.domain.bounds[1] - self.domain.bounds[0]
            for p in pending:
                if p.x is not None and np.all(np.abs(np.asarray(p.x) - x) <= 1e-7 * width):
                    return p.key, list(p.x)
        if x.size != self.domain.dim or not self.domain.feasible(x.reshape(1, -1))[0]:
            raise TellError(key, "point outside the campaign's box or its constraints", origin)
        return key, [float(v) for v in x]

    # ---------------------------------------------------------------- loop

    def stop_reason(self, budget: int | None = None) -> str | None:
        return stop_reason(self.stop, self.history(), budget, self._pool_size())

    def _pool_size(self) -> int | None:
        return len(self.domain) if _is_pool(self.domain) else None

    def run(
        self, budget: int | None = None, on_evaluation: Callable[[Evaluation, float | None, bool], None] | None = None
    ) -> History:
        """Ask, evaluate with the objective, tell, until a stop rule fires.

        Pending points left by an interrupted run are evaluated first. ``budget`` overrides the
        stored budget (total search evaluations, counting those made before a restart).
        ``on_evaluation(evaluation, loss, is_hit)`` is called after every told batch, per point.
        """
        self._hyper_cache["neighbour_defer_save"] = True
        try:
            return self._run(budget, on_evaluation)
        finally:
            self._hyper_cache.pop("neighbour_defer_save", None)
            if self._hyper_cache.get("neighbour_unsaved"):
                from screening.bo.neighbour_search import save_deferred_state

                save_deferred_state(self._hyper_cache)

    def _run(
        self, budget: int | None, on_evaluation: Callable[[Evaluation, float | None, bool], None] | None
    ) -> History:
        while True:
            history = self.history()
            reason = stop_reason(self.stop, history, budget, self._pool_size())
            if reason is not None:
                self.stopped_because = reason
                return history
            pending = self.pending_points()
            if not pending:
                cap = budget if budget is not None else self.stop.budget
                n = self.batch_size if cap is None else max(1, min(self.batch_size, cap - history.n_search))
                pending = self.ask(n)
            evaluations = self.objective.evaluate(pending)
            self.tell_evaluations(evaluations)
            if on_evaluation is not None:
                for ev in evaluations:
                    if ev.ok:
                        y = _as_y(ev.y)
                        on_evaluation(ev, float(self.objective.loss(y)), bool(self.objective.is_hit(y)))
                    else:
                        on_evaluation(ev, None, False)


def _check_y(y: Any, key: str, origin: str | None) -> Any:
    """y as JSON-able data (float or list of floats), every number finite."""
    if y is None:
        raise TellError(key, "no value given (pass an error reason for a failed evaluation)", origin)
    arr = np.asarray(y, dtype=np.float64) if not isinstance(y, str) else None
    if arr is None:
        try:
            arr = np.asarray(float(y))
        except ValueError:
            raise TellError(key, f"value {y!r} is not a number", origin) from None
    if not np.all(np.isfinite(arr)):
        raise TellError(key, f"value {y!r} is NaN or infinite", origin)
    return float(arr) if arr.ndim == 0 else arr.tolist()


def _same_result(stored: ObservationRecord, ev: Evaluation) -> bool:
    """Whether ``ev`` repeats what is stored: the same failure reason, or the same value(s)."""
    if stored.error is not None or ev.error is not None:
        return stored.error is not None and ev.error is not None and str(ev.error).strip() == stored.error.strip()
    try:
        a = np.asarray(stored.y, dtype=np.float64)
        b = np.asarray(float(ev.y) if isinstance(ev.y, str) else ev.y, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.all(a == b))


def _describe(y: Any, error: str | None) -> str:
    return f"the failure {error!r}" if error is not None else f"the value {y!r}"


def _as_y(y: Any) -> Any:
    return np.asarray(y, dtype=np.float64) if isinstance(y, list) else y


def _scalar_or_nan(y: Any) -> float:
    return float(y) if isinstance(y, (int, float)) else float("nan")
