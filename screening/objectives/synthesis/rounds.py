"""Rounds of the nanoparticle-synthesis campaign: BO, BO + spectrum network, or random LHS.

The thin imperative shell around the framework (:class:`~screening.bo.campaign.Campaign`) and
the two-step pieces (:mod:`screening.objectives.synthesis.twostep`), as the paper ran it:

1. round 1: a Latin-hypercube design of ``batch`` conditions that respects the ≤ 90 % constraint;
2. each later round: ``batch`` conditions from the framework's ``Campaign.ask`` (GP-EI with local
   penalisation on the box, hyper-parameters cached between rounds); with
   ``method="bo+dnn"``, from round ``dnn_from`` on, the spectrum network trained on all spectra
   so far proposes ``dnn_batch`` more conditions in parallel (the paper's runs 6–8);
3. after each round, if the best conditions sit on a face of the box, that face moves out
   (boundary expansion, clipped to the hard limits), the campaign moves to the new box
   (``Campaign.set_box``) and the move is recorded;
4. ``method="random"``: a fresh constrained LHS every round, the baseline.

Everything the campaign learns is in its SQLite file (observations with their spectra, pending
points) plus meta entries written through the store: the settings, the current box with its
expansion history, the per-round log, the failed-droplet counts and the target spectrum. A run
killed at any point resumes from that file.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from screening.bo.campaign import Campaign
from screening.bo.domain import BoundaryExpansion, Box
from screening.bo.objective import Evaluation
from screening.bo.store import ObservationRecord
from screening.bo.strategy import Strategy
from screening.errors import MatscreenError, RecordError
from screening.io.lab_files import box_columns
from screening.objectives.synthesis import twostep
from screening.objectives.synthesis.objective import (
    INITIAL_BOXES,
    SPECTRUM_COLUMNS,
    SynthesisObjective,
    condition_id,
    read_droplet_spectra_csv,
    write_conditions_csv,
)
from screening.objectives.synthesis.spectral_loss import unusable_reason

METHODS = ("bo", "bo+dnn", "random")
META_BOX, META_ROUNDS, META_DROPLETS, META_SETTINGS, META_TARGET = (
    "synthesis_box",
    "synthesis_rounds",
    "synthesis_droplets",
    "synthesis_settings",
    "synthesis_target",
)
DEFAULT_TARGET_SOURCE = "the paper's target (shipped)"


def default_strategy(batch: int) -> Strategy:
    """GP on the loss, log-EI, local penalisation; the first ``batch`` points are a constrained LHS."""
    return Strategy(model="loss", acquisition="logei", batch="lp", n_init=batch, box_raw_samples=2048)


@dataclass
class RoundLog:
    """One round: which method proposed which conditions, what they scored, what the box did.

    ``droplets_ok`` counts the droplet spectra used, ``droplets_failed`` the failed droplets by
    reason, so a round's output can say what was left out (both empty for an objective without
    droplets, and in rounds stored before they were kept).
    """

    round: int
    method: str
    keys: list[str]
    losses: list[float | None]
    best_loss_so_far: float
    n_conditions_so_far: int
    seconds: float
    expansions: list[dict] = field(default_factory=list)
    stop: dict | None = None
    droplets_ok: int = 0
    droplets_failed: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CsvTell:
    """What telling one results file did: the round it recorded (None when every condition in
    it was already recorded with these same spectra) and the condition ids it skipped as such
    identical repeats."""

    round: RoundLog | None
    already_recorded: list[str] = field(default_factory=list)


def box_to_meta(box: Box) -> dict:
    return {"lower": list(box.lower), "upper": list(box.upper), "expansions": [asdict(e) for e in box.expansions]}


def box_from_meta(base: Box, meta: dict) -> Box:
    """The campaign's current box: ``base`` (names, constraints, hard limits) with stored bounds."""
    return Box(
        tuple(meta["lower"]),
        tuple(meta["upper"]),
        base.names,
        base.constraints,
        base.hard_lower,
        base.hard_upper,
        tuple(BoundaryExpansion(**e) for e in meta["expansions"]),
    )


class SynthesisCampaign:
    """A synthesis campaign in ``directory`` (``campaign.sqlite`` + CSV/plot outputs).

    The target spectrum is stored with the campaign: reopened with the objective's default
    target (and no ``target_source``), the stored one is used; reopened with a different target,
    :class:`MatscreenError` names both. ``target_source`` says where the objective's target came
    from (a file path), for the store and for that message; None means the caller did not choose
    one. A campaign stored before targets were kept takes the target it is reopened with.
    """

    def __init__(
        self,
        directory: str | Path,
        objective: SynthesisObjective,
        method: str = "bo",
        batch: int = 15,
        seed: int = 0,
        dnn_from: int = 3,
        dnn_batch: int | None = None,
        expand: bool = True,
        strategy: Strategy | None = None,
        target_source: str | None = None,
    ) -> None:
        if method not in METHODS:
            raise MatscreenError(f"method must be one of {METHODS}, got {method!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.objective = objective
        path = self.directory / "campaign.sqlite"
        if path.exists():
            self.campaign = Campaign.open(path, objective)
            settings = self.campaign.store.get_meta(META_SETTINGS, {})
            method, batch, seed = (
                settings.get("method", method),
                settings.get("batch", batch),
                settings.get("seed", seed),
            )
            dnn_from, dnn_batch, expand = (
                settings.get("dnn_from", dnn_from),
                settings.get("dnn_batch", dnn_batch),
                settings.get("expand", expand),
            )
            box_meta = self.campaign.store.get_meta(META_BOX)
            if box_meta:
                self.campaign.set_box(box_from_meta(objective.domain, box_meta))
        else:
            self.campaign = Campaign.create(
                path, objective, strategy or default_strategy(batch), seed=seed, batch_size=batch
            )
            self.campaign.store.set_meta(
                META_SETTINGS,
                {
                    "method": method,
                    "batch": batch,
                    "seed": seed,
                    "dnn_from": dnn_from,
                    "dnn_batch": dnn_batch,
                    "expand": expand,
                },
            )
            self.campaign.store.set_meta(META_BOX, box_to_meta(objective.domain))
        self.method, self.batch, self.seed = method, int(batch), int(seed)
        self.dnn_from, self.dnn_batch, self.expand = int(dnn_from), int(dnn_batch or batch), bool(expand)
        self.target_source = self._settle_target(target_source)
        self._model: twostep.SpectrumEnsemble | None = None
        self._records_cache: tuple[int, list] = (-1, [])
        self._round_ok = 0  # this round's droplets so far, for its log
        self._round_failed: Counter[str] = Counter()
        self._probe = objective.domain.uniform(500, np.random.default_rng(12345))

    def _settle_target(self, given_source: str | None) -> str | None:
        """Store the target spectrum with a new campaign; on reopen, restore or check it.

        Why: every told condition's loss was computed against this target, so scoring later
        rounds against another would silently mix two objectives in one campaign.
        Returns where the target in use came from (None for an objective without one).
        """
        target = getattr(self.objective, "target", None)
        if target is None:
            return None
        here = np.asarray(target, dtype=float)
        from screening.objectives.synthesis.spectral_loss import load_target

        shipped = load_target()
        default = here.shape == shipped.shape and bool(np.array_equal(here, shipped))
        source = given_source or (DEFAULT_TARGET_SOURCE if default else "the target given")
        stored = self.campaign.store.get_meta(META_TARGET)
        if stored is None:
            self.campaign.store.set_meta(META_TARGET, {"source": source, "absorbance": here.tolist()})
            return source
        kept = np.asarray(stored["absorbance"], dtype=float)
        if kept.shape == here.shape and np.array_equal(kept, here):
            return str(stored["source"])
        if given_source is None and default and isinstance(self.objective, SynthesisObjective):
            self.objective.target = kept  # reopened without a target: the campaign's own
            return str(stored["source"])
        self.campaign.close()
        raise MatscreenError(
            f"{self.directory}: this campaign was created with target {stored['source']}, but {source} is a "
            "different spectrum; leave --target out to use the stored one, or start a new campaign directory"
        )

    # ------------------------------------------------------------------ state

    def _records(self) -> list:
        """Told observations, parsed once per change (spectra make the JSON large)."""
        n = len(self.campaign.store.told_keys())
        if n != self._records_cache[0]:
            self._records_cache = (n, self.campaign.store.observations())
        return self._records_cache[1]

    def rounds(self) -> list[RoundLog]:
        return [RoundLog(**r) for r in self.campaign.store.get_meta(META_ROUNDS, [])]

    def observations(self) -> pd.DataFrame:
        """One row per told condition: inputs, loss, droplets used/failed, source, round."""
        round_of = {k: (r.round, r.method) for r in self.rounds() for k in r.keys}
        drops = self.campaign.store.get_meta(META_DROPLETS, {})
        names = box_columns(self.objective.domain)
        rows = []
        for rec in self._records():
            cid = condition_id(rec.x)
            rnd, meth = round_of.get(rec.key, (None, rec.source))
            d = drops.get(cid, {})
            rows.append(
                {
                    "condition_id": cid,
                    **dict(zip(names, rec.x)),
                    "loss": rec.loss,
                    "round": rnd,
                    "method": meth,
                    "source": rec.source,
                    "droplets_ok": d.get("ok"),
                    "droplets_failed": d.get("failed"),
                    "error": rec.error,
                }
            )
        columns = ["condition_id", *names, "loss", "round", "method", "source", "droplets_ok", "droplets_failed"]
        return pd.DataFrame(rows, columns=[*columns, "error"])  # the columns even before the first tell

    def told_spectra(self) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Conditions, droplet-spectra blocks and losses of every successful observation."""
        recs = [r for r in self._records() if r.ok]
        X = np.array([r.x for r in recs], dtype=float).reshape(len(recs), self.objective.domain.dim)
        return X, [np.asarray(r.y, dtype=float) for r in recs], np.array([r.loss for r in recs], dtype=float)

    def best(self) -> tuple[np.ndarray, np.ndarray, float] | None:
        """Best condition so far: its inputs, median spectrum and loss."""
        X, blocks, losses = self.told_spectra()
        if not len(losses):
            return None
        i = int(np.argmin(losses))
        block = np.atleast_2d(blocks[i])
        return X[i], np.median(block, axis=0), float(losses[i])

    # ------------------------------------------------------------------ one round

    def _record_droplets(self) -> None:
        summary = getattr(self.objective, "failure_summary", None)
        if not callable(summary):  # a user objective without droplet bookkeeping
            return
        stored = self.campaign.store.get_meta(META_DROPLETS, {})
        stored.update(summary())
        self.campaign.store.set_meta(META_DROPLETS, stored)
        for r in self.objective.droplet_log:
            if r.ok:
                self._round_ok += 1
            else:
                self._round_failed[r.reason or "unknown"] += 1
        self.objective.droplet_log.clear()

    def _tell(self, evaluations: list, source: str) -> None:
        self.campaign.tell_evaluations(evaluations, source=source)
        self._record_droplets()

    def _dnn_points(self, round_no: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self.objective, "target", None) is None:
            raise MatscreenError("the spectrum-network step needs an objective with a `target` spectrum")
        X, blocks, _ = self.told_spectra()
        Xt, Yt = twostep.training_set(X, blocks)
        self._model = twostep.fit_spectrum_model(Xt, Yt, self.objective.domain, seed=self.seed * 1000 + round_no)
        pts = twostep.propose(
            self._model,
            self.objective.domain,
            self.objective.target,
            self.dnn_batch,
            seed=self.seed * 1000 + round_no,
            exclude=np.vstack([X, exclude]) if len(exclude) else X,
        )
        return pts, twostep.predicted_loss(self._model, pts, self.objective.target)

    def _finish_round(self, round_no: int, method: str, keys: list[str], started: float, stop: dict | None) -> RoundLog:
        obs = {r.key: r.loss for r in self._records()}
        losses = [obs.get(k) for k in keys]
        finite = [v for v in obs.values() if v is not None]
        expansions: list[dict] = []
        if self.expand and finite:
            X, _, all_losses = self.told_spectra()
            best = X[np.argsort(all_losses)[:3]]
            before = len(self.objective.domain.expansions)
            self.campaign.set_box(
                self.objective.domain.expanded_at_boundary(
                    best, reason=f"round {round_no}: best conditions on the boundary"
                )
            )
            names = box_columns(self.objective.domain)
            expansions = [{**asdict(e), "input": names[e.dim]} for e in self.objective.domain.expansions[before:]]
            self.campaign.store.set_meta(META_BOX, box_to_meta(self.objective.domain))
        log = RoundLog(
            round_no,
            method,
            keys,
            losses,
            float(min(finite)) if finite else float("nan"),
            len(obs),
            round(time.time() - started, 2),
            expansions,
            stop,
            self._round_ok,
            dict(self._round_failed),
        )
        self._round_ok, self._round_failed = 0, Counter()
        self.campaign.store.set_meta(META_ROUNDS, self.campaign.store.get_meta(META_ROUNDS, []) + [asdict(log)])
        return log

    def run_round(self) -> RoundLog:
        """Ask, evaluate in the objective's lab, tell: one round of the chosen method."""
        round_no = len(self.rounds()) + 1
        started = time.time()
        box = self.objective.domain
        points = self.campaign.pending_points()  # a round killed after its ask resumes with the same points
        if self.method == "random":
            if not points:
                points = list(box.latin_hypercube(self.batch, seed=self.seed * 1000 + round_no))
                self.campaign.store.add_pending((box.key_of(p), [float(v) for v in p]) for p in points)
            method = "random"
        else:
            points = points or self.campaign.ask(self.batch)
            method = "lhs" if round_no == 1 else "bo"
        self._tell(self.objective.evaluate(points), source="search")
        keys = [box.key_of(p) for p in points]
        stop = None
        if self.method == "bo+dnn" and round_no >= self.dnn_from:
            before = self._model
            pts, predicted = self._dnn_points(round_no, np.vstack(points))
            evaluations = self.objective.evaluate(pts)
            self._tell(evaluations, source="dnn")
            measured = np.array([self.objective.loss(e.y) if e.ok else np.nan for e in evaluations])
            keys += [box.key_of(p) for p in pts]
            method = "bo+dnn"
            _, _, losses = self.told_spectra()
            probe_now = twostep.predicted_loss(self._model, self._probe, self.objective.target)
            probe_before = (
                None if before is None else twostep.predicted_loss(before, self._probe, self.objective.target)
            )
            newest_pred = None if before is None else twostep.predicted_loss(before, pts, self.objective.target)
            check = twostep.check_stop(
                float(np.min(losses)),
                getattr(self.objective, "hit_loss", -np.inf),
                probe_now,
                probe_before,
                newest_pred,
                measured,
            )
            stop = {**asdict(check), "stop": check.stop, "dnn_predicted": predicted.round(4).tolist()}
        return self._finish_round(round_no, method, keys, started, stop)

    def run(
        self, rounds: int, on_round: Callable[[RoundLog], None] | None = None, stop_on_hit: bool = False
    ) -> list[RoundLog]:
        """Run until ``rounds`` rounds are done (counting rounds done before a restart)."""
        while len(self.rounds()) < rounds:
            log = self.run_round()
            if on_round is not None:
                on_round(log)
            if stop_on_hit and log.best_loss_so_far <= getattr(self.objective, "hit_loss", -np.inf):
                break
        return self.rounds()

    # ------------------------------------------------------------------ a real reactor (CSV)

    def ask_csv(self, path: str | Path, dnn: int = 0) -> Path:
        """Write the next batch (pending points first) as CSV; ``dnn`` adds network proposals."""
        points = self.campaign.pending_points()
        if not points:
            points = self.campaign.ask(self.batch)
            if dnn and len(self.told_spectra()[2]) >= 2:
                self.dnn_batch = int(dnn)
                pts, _ = self._dnn_points(len(self.rounds()) + 1, np.vstack(points))
                self.campaign.store.add_pending((self.objective.domain.key_of(p), [float(v) for v in p]) for p in pts)
                points += list(pts)
        return write_conditions_csv(path, points)

    def tell_csv(self, path: str | Path) -> CsvTell:
        """Tell a reactor's droplet spectra (see :func:`read_droplet_spectra_csv`) for pending points.

        A condition already recorded with exactly these spectra is skipped, so telling a file
        twice is harmless; one recorded with different spectra, one never asked, or a spectrum
        the loss cannot score refuses the whole file before anything is written.
        """
        started = time.time()
        results = read_droplet_spectra_csv(path, check=unusable_reason)
        pending = {condition_id(p): p for p in self.campaign.pending_points()}
        told = {condition_id(r.x): r for r in self._records() if r.x is not None}
        unknown = [c for c in results if c not in pending and c not in told]
        if unknown:
            raise RecordError(
                unknown[0], "condition_id is not pending in this campaign (ask first, or a typo?)", str(path)
            )
        repeats = [c for c in results if c not in pending]
        for c in repeats:
            self._check_repeat(c, told[c], results[c], str(path))
        fresh = [c for c in results if c in pending]
        if not fresh:
            # A tell killed between its commit and its round log left these conditions in no
            # round: a retry writes that round now rather than leave them out of rounds.csv.
            logged = {k for log in self.rounds() for k in log.keys}
            orphans = [told[c].key for c in repeats if told[c].key not in logged]
            if orphans:
                return CsvTell(self._finish_round(len(self.rounds()) + 1, "csv", orphans, started, None), repeats)
            return CsvTell(None, repeats)
        evaluations = [self.objective.split_droplets(pending[c], results[c]) for c in fresh]
        self._tell(evaluations, source="search")
        keys = [self.objective.domain.key_of(pending[c]) for c in fresh]
        return CsvTell(self._finish_round(len(self.rounds()) + 1, "csv", keys, started, None), repeats)

    def _check_repeat(self, cid: str, stored: ObservationRecord, spectra: np.ndarray, source: str) -> None:
        """Refuse droplet spectra for an already recorded condition unless they are what was recorded.

        Why: each condition is told once; a silently ignored new measurement would be lost, and
        an overwritten one would change a loss the model has already learnt from.
        """
        log = self.objective.droplet_log
        before = len(log)
        again = self.objective.split_droplets(stored.x or [], spectra)
        counts = {"ok": sum(r.ok for r in log[before:]), "failed": sum(not r.ok for r in log[before:])}
        del log[before:]  # a comparison, not a measurement
        recorded = self.campaign.store.get_meta(META_DROPLETS, {}).get(cid)
        why: str | None
        if recorded is not None and recorded != counts:
            why = (
                f"{recorded['ok']} usable and {recorded['failed']} failed droplets are recorded, this file has "
                f"{counts['ok']} and {counts['failed']}"
            )
        else:
            why = _difference(stored, again)
        if why is not None:
            raise RecordError(
                cid,
                f"already recorded with different results: {why}; each condition is told once "
                "(run a new measurement as a new condition)",
                source,
            )

    def close(self) -> None:
        self.campaign.close()


def _difference(stored: ObservationRecord, again: Evaluation) -> str | None:
    """How a condition's new droplet spectra differ from its recorded ones, or None if they do not."""
    if stored.error is not None or again.error is not None:
        if stored.error == again.error:
            return None
        return f"recorded as {stored.error or 'measured'!r}, this file gives {again.error or 'usable spectra'!r}"
    a, b = np.asarray(stored.y, dtype=float), np.asarray(again.y, dtype=float)
    if a.shape != b.shape:
        return f"{len(a)} usable droplet spectra are recorded, this file has {len(b)}"
    diff = np.argwhere(a != b)
    if not len(diff):
        return None
    i, j = diff[0]
    return f"usable droplet {i + 1} at {SPECTRUM_COLUMNS[j]} nm: {a[i, j]:g} recorded, {b[i, j]:g} in this file"


# --------------------------------------------------------------------------- reports


def method_curves(sc: SynthesisCampaign) -> dict[str, np.ndarray]:
    """Running best loss per round of the conditions each method proposed (BO incl. the LHS
    start, the spectrum network, random LHS), for the per-round comparison the paper drew."""
    obs = sc.observations()
    n_rounds = len(sc.rounds())
    curves: dict[str, np.ndarray] = {}
    groups = {"bo": ("lhs", "bo", "bo+dnn"), "random": ("random",), "csv": ("csv",)}
    for name, methods in groups.items():
        sel = obs[obs["method"].isin(methods) & (obs["source"] == "search")]
        if len(sel):
            curves[name] = _running_best(sel, n_rounds)
    dnn = obs[obs["source"] == "dnn"]
    if len(dnn):
        # the DNN arm builds on the BO data: its running best includes the BO rounds before it
        both = obs[obs["source"].isin(["search", "dnn"])]
        curves["bo+dnn"] = _running_best(both, n_rounds)
    return curves


def _running_best(frame: pd.DataFrame, n_rounds: int) -> np.ndarray:
    best, out = np.inf, []
    for r in range(1, n_rounds + 1):
        v = frame.loc[frame["round"] == r, "loss"].dropna()
        if len(v):
            best = min(best, float(v.min()))
        out.append(best if np.isfinite(best) else np.nan)
    return np.array(out)


SHAP_MISSING = 'SHAP importance skipped: the optional shap package is not installed (pip install "matscreen[shap]")'
SHAP_MIN_CONDITIONS = 10


def _shap_available() -> bool:
    """SHAP is an optional extra (``pip install matscreen[shap]``); reports skip it without."""
    import importlib.util

    return importlib.util.find_spec("shap") is not None


def write_report(
    sc: SynthesisCampaign,
    extra_curves: dict[str, np.ndarray] | None = None,
    shap: bool = True,
    seed: int = 0,
    on_notice: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """observations.csv, rounds.csv, best_loss_per_round.png, best_spectrum.png and, with ``shap``,
    shap_importance.csv/.png (spectrum network trained on every condition so far).

    When SHAP is asked for but cannot be computed (the extra is not installed, too few
    conditions, no target spectrum), one line saying why goes to ``on_notice`` (default: a
    warning), so a missing report file is never a silent surprise.
    """
    notice = on_notice or (lambda msg: warnings.warn(msg, stacklevel=3))
    from screening.io.atomic import write_csv_atomic
    from screening.objectives.synthesis import plots
    from screening.objectives.synthesis.objective import PAPER_BEST_BO_LOSS, PAPER_BEST_DNN_LOSS

    d = sc.directory
    paths: dict[str, Path] = {}
    write_csv_atomic(sc.observations(), d / "observations.csv", index=False)
    paths["observations"] = d / "observations.csv"
    write_csv_atomic(pd.DataFrame([asdict(r) for r in sc.rounds()]), d / "rounds.csv", index=False)
    paths["rounds"] = d / "rounds.csv"
    curves = {**method_curves(sc), **(extra_curves or {})}
    paths["best_loss_plot"] = plots.plot_best_loss_per_round(
        curves,
        d / "best_loss_per_round.png",
        references={"paper BO, 8 rounds": PAPER_BEST_BO_LOSS, "paper DNN": PAPER_BEST_DNN_LOSS},
    )
    best = sc.best()
    target = getattr(sc.objective, "target", None)
    if shap and not _shap_available():
        notice(SHAP_MISSING)
        shap = False
    elif shap and target is None:
        notice("SHAP importance skipped: the objective has no target spectrum to explain the loss against")
    if best is not None and target is not None:
        X, blocks, losses = sc.told_spectra()
        i = int(np.argmin(losses))
        paths["best_spectrum_plot"] = plots.plot_spectrum_vs_target(
            best[1], target, d / "best_spectrum.png", label=f"best, loss {best[2]:.3f}", droplets=blocks[i]
        )
        if shap and len(X) < SHAP_MIN_CONDITIONS:
            notice(
                f"SHAP importance skipped: it needs at least {SHAP_MIN_CONDITIONS} conditions with a spectrum, "
                f"this campaign has {len(X)}"
            )
        elif shap:
            from screening.objectives.synthesis.explain import shap_table, spectrum_summaries

            Xt, Yt = twostep.training_set(X, blocks)
            model = twostep.fit_spectrum_model(Xt, Yt, sc.objective.domain, seed=seed)
            names = box_columns(sc.objective.domain)
            table, _ = shap_table(spectrum_summaries(model, target), Xt, names, seed=seed)
            write_csv_atomic(table, d / "shap_importance.csv", index=True)
            paths["shap"] = d / "shap_importance.csv"
            paths["shap_plot"] = plots.plot_shap_importance(table, d / "shap_importance.png")
    return paths


# --------------------------------------------------------------------------- CLI helpers


def build_objective(
    lab: str = "virtual",
    objective: str | None = None,
    target: str | None = None,
    box: str = "paper",
    replicates: int = 21,
    seed: int = 0,
    hit_loss: float = 0.10,
):
    """The objective a synthesis command runs: the AgBONN objective on the virtual lab (``lab="virtual"``)
    or on a CSV-driven reactor (``lab="csv"``), or a user's class named ``package.module:ClassName``
    (constructed with no arguments; it must satisfy :class:`~screening.objectives.base.Objective`)."""
    from screening.bo.objective import load_objective_class
    from screening.objectives.synthesis.objective import CsvLab, synthesis_box
    from screening.objectives.synthesis.spectral_loss import load_target
    from screening.objectives.synthesis.virtual_lab import VirtualLab

    if objective:
        return load_objective_class(objective)()
    if lab not in ("virtual", "csv"):
        raise MatscreenError(f"--lab must be 'virtual' or 'csv', got {lab!r}")
    if box not in INITIAL_BOXES:
        raise MatscreenError(f"--box must be one of {', '.join(INITIAL_BOXES)}, got {box!r}")
    the_lab = VirtualLab(n_replicates=replicates, seed=seed) if lab == "virtual" else CsvLab()
    return SynthesisObjective(lab=the_lab, target=load_target(target), domain=synthesis_box(box), hit_loss=hit_loss)


def run_csv_lab(
    sc: SynthesisCampaign,
    rounds: int,
    poll_seconds: float = 5.0,
    timeout_seconds: float = 86400.0,
    dnn: int = 0,
    on_round: Callable[[RoundLog], None] | None = None,
    on_wait: Callable[[Path, Path], None] | None = None,
) -> list[RoundLog]:
    """Drive a real reactor through files: per round write ``ask-RR.csv`` and wait for the
    reactor's ``results-RR.csv`` (droplet spectra) in the campaign directory, then tell it."""
    while len(sc.rounds()) < rounds:
        r = len(sc.rounds()) + 1
        ask = sc.ask_csv(sc.directory / f"ask-{r:02d}.csv", dnn=dnn if r >= sc.dnn_from else 0)
        results = sc.directory / f"results-{r:02d}.csv"
        if on_wait is not None:
            on_wait(ask, results)
        waited = 0.0
        while not results.exists():
            if waited >= timeout_seconds:
                raise MatscreenError(
                    f"no {results} after {timeout_seconds:.0f} s; rerun to keep waiting (state is saved)"
                )
            time.sleep(poll_seconds)
            waited += poll_seconds
        told = sc.tell_csv(results)
        if told.round is None:  # a stale file: telling it again would loop here for ever
            raise MatscreenError(
                f"{results}: every condition in it is already recorded (a file from an earlier round?); "
                f"move it away and rerun, so the reactor can write the results of {ask}"
            )
        if on_round is not None:
            on_round(told.round)
    return sc.rounds()
