"""Campaign directories: set up, reopen and report a search, for the CLI.

A campaign directory holds ``campaign.sqlite`` (the crash-safe state) plus what is needed to
rebuild its objective: for a band-gap pool, the fitted PCA (``pca.json``) and the pool path and
hash in the store's config; for a user objective, its ``package.module:ClassName``. Reports write
``history.csv``, ``convergence.png``, ``pool_map.png`` (pools) and ``summary.json``.

A stored ``package.module:ClassName`` is data, not consent: reopening imports it only when it is a
built-in objective or the user allows it for this run (``allow_objectives``, from
``--allow-objective`` or ``MATSCREEN_ALLOW_OBJECTIVES``). Creating a campaign with ``--objective``
is consent for that run only; nothing about consent is stored.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from screening.bo.baselines import expected_best_loss_curve, expected_draws_to_first_hit
from screening.bo.campaign import Campaign, History, StopRules, TellOutcome
from screening.bo.domain import DiscretePool
from screening.bo.objective import load_objective_class, load_stored_objective_class
from screening.bo.strategy import Strategy
from screening.columns import PRED_BAND_GAP, PRED_BAND_GAP_STD, PRED_FORMATION_ENERGY
from screening.errors import MatscreenError, RecordError
from screening.io.file_digest import file_stamp, settled
from screening.objectives.bandgap.objective import (
    BandGapPool,
    BandGapPoolObjective,
    LeftOutRow,
    check_target,
    file_sha256,
    left_out_frame,
    left_out_summary,
    load_known,
    load_pool,
)
from screening.reduce import PCAReducer
from screening.safe_csv import write_text_csv

STORE_NAME = "campaign.sqlite"
PCA_NAME = "pca.json"
#: Where a new campaign lists the pool and known-data rows it left out (screening.safe_csv).
LEFT_OUT_FILES = {"pool": "pool.errors.csv", "known-data": "known.errors.csv"}


@dataclass
class LeftOutReport:
    """The invalid rows a campaign left out of one input table, and the errors file naming them."""

    what: str  # "pool" or "known-data"
    n_rows: int  # rows of the table, left-out ones included
    rows: list[LeftOutRow]
    path: Path

    def warning(self) -> str:
        """One line for stderr: ``left out 4 of 6,218 pool rows (negative band_gap); see run/pool.errors.csv``."""
        return (
            f"left out {len(self.rows):,} of {self.n_rows:,} {self.what} rows ({left_out_summary(self.rows)}); "
            f"see {self.path}"
        )


@dataclass
class CampaignDir:
    """An open campaign directory: the campaign, and the pool behind it (None for user objectives).

    ``left_out`` holds, for a campaign just created, the invalid rows of its pool and known data
    that it left out (each written to its errors file in the directory)."""

    path: Path
    campaign: Campaign
    pool: BandGapPool | None
    left_out: list[LeftOutReport] = field(default_factory=list)


def create_pool_campaign(
    outdir: str | Path,
    pool_path: str | Path,
    target: float,
    tolerance: float,
    strategy: Strategy,
    seed: int = 0,
    batch_size: int = 1,
    stop: StopRules = StopRules(),
    n_components: int = 3,
    require_band_gap: bool = True,
    pred_as_feature: bool = False,
    known_path: str | Path | None = None,
    max_formation_energy: float | None = None,
    label: str = "band_gap",
    known_label: str | None = None,
    strict: bool = False,
) -> CampaignDir:
    """A new band-gap campaign over a featurised pool; fits and saves the PCA in ``outdir``.

    Invalid rows of the pool and the known data (:func:`~screening.objectives.bandgap.objective.invalid_rows`:
    unusable or repeated ids, non-finite embeddings, gaps that are no band gap, missing
    predictions) are left out and named in ``outdir/pool.errors.csv`` / ``known.errors.csv``
    (``CampaignDir.left_out`` says how many); ``strict`` refuses the table at its first invalid
    row instead. A table with no valid row is refused either way. Duplicate ids keep their first row.

    ``known_label`` names the known data's column when it holds *another* quantity than the
    campaign measures (e.g. the DFT ``band_gap`` of Materials Project crystals while a lab measures
    optical gaps): the known data then shape the network's prediction on their own scale, and the
    campaign learns the map from it to what it measures. None: the known data's ``label`` column
    is the campaign's own quantity.

    ``label`` names the pool's (and known data's) column of band gaps in eV, e.g. ``target`` for
    a CGCNN ``id_prop.csv``; it is stored and used again on reopening.

    ``pred_as_feature`` appends the CGCNN-predicted gap (eV) to the PCA coordinates the GP sees.
    ``known_path`` names a featurised table of labelled non-candidates (prior knowledge for the
    neighbour surrogate); its hash is kept, so a changed file is noticed on reopening.
    ``max_formation_energy`` (eV/atom) restricts the candidates to crystals predicted stable
    enough (``pred_formation_energy_per_atom``); it is stored and re-applied on reopening.
    """
    outdir = Path(outdir)
    if (outdir / STORE_NAME).exists():
        raise MatscreenError(f"{outdir / STORE_NAME}: a campaign already exists here")
    check_target(target, tolerance)  # before the pool is read and anything written
    pool = load_pool(
        pool_path,
        n_components=n_components,
        require_band_gap=require_band_gap,
        max_formation_energy=max_formation_energy,
        label=label,
        strict=strict,
    )
    if known_label is not None and known_path is None:
        raise MatscreenError("--known-label names a column of the known data: give --known too")
    known_left_out: list[LeftOutRow] = []
    known = (
        load_known(
            known_path,
            pool,
            label=known_label or label,
            same_quantity=known_label is None,
            strict=strict,
            left_out=known_left_out,
        )
        if known_path is not None
        else None
    )
    outdir.mkdir(parents=True, exist_ok=True)
    reports = [
        LeftOutReport("pool", pool.n_rows, pool.left_out, outdir / LEFT_OUT_FILES["pool"]),
        LeftOutReport(
            "known-data",
            len(known.ids) + len(known_left_out) if known is not None else 0,
            known_left_out,
            outdir / LEFT_OUT_FILES["known-data"],
        ),
    ]
    for report in reports:
        if report.rows:
            write_text_csv(left_out_frame(report.rows), report.path)
        else:
            report.path.unlink(missing_ok=True)  # no stale list beside a new campaign
    pool.reducer.save(outdir / PCA_NAME)
    objective = _pool_objective(pool, target, tolerance, _uses_prediction(strategy, pool), pred_as_feature, known)
    extra = {
        "kind": "bandgap-pool",
        "pool_path": str(Path(pool_path).resolve()),
        "pool_file_sha256": pool.file_hash,
        "target": target,
        "tolerance": tolerance,
        "n_components": n_components,
        "require_band_gap": require_band_gap,
        "pred_as_feature": pred_as_feature,
        "max_formation_energy": max_formation_energy,
        "label": label,
        "known_label": known_label,
    }
    if known_path is not None:
        extra["known_path"] = str(Path(known_path).resolve())
        extra["known_file_sha256"] = file_sha256(known_path)
    campaign = Campaign.create(
        outdir / STORE_NAME,
        objective,
        strategy,
        seed,
        batch_size,
        stop,
        pool_ref={
            "path": extra["pool_path"],
            "file_sha256": pool.file_hash,
            "content_hash": objective.domain.content_hash(),
            "n_candidates": len(objective.domain),
        },
        extra=extra,
    )
    inputs = {"pool": settled(file_stamp(pool_path)), "known": settled(file_stamp(known_path)) if known_path else None}
    _keep_snapshot(campaign, outdir, pool, known, inputs, [])
    return CampaignDir(outdir, campaign, pool, [r for r in reports if r.rows])


def _keep_snapshot(campaign: Campaign, outdir: Path, pool: BandGapPool, known: Any, inputs: dict, notes: list) -> None:
    """Write the pool snapshot (:mod:`pool_snapshot`) of a pool just read and checked, and record
    it in the store; the objective's domain gets the token that vouches for it. Where it cannot
    be kept (a read-only folder, a table Parquet cannot hold) the campaign reads the pool file in
    each command, as it did before snapshots, and says why once."""
    from screening.objectives.bandgap import pool_snapshot as ps
    from screening.reduce import embedding_columns

    try:
        files = {ps.POOL_SNAPSHOT_NAME: ps.write_pool_snapshot(
            outdir, pool.frame, pool.features, embedding_columns(pool.frame.columns)
        )}  # fmt: skip
        if known is not None:
            files[ps.KNOWN_SNAPSHOT_NAME] = ps.write_known_snapshot(outdir, known)
        record = {"format": ps.FORMAT, "files": files, "inputs": inputs, "emb_dim": _emb_dim(pool)}
        campaign.store.set_meta(ps.META_KEY, record)
        for name in ps.FORMER_NAMES:  # an earlier format's file: no record vouches for it any more
            (outdir / name).unlink(missing_ok=True)
    except (ps.SnapshotUnusable, OSError, MatscreenError) as exc:
        notes.append(f"the pool is read from its file in every command: no snapshot kept ({exc})")
        return
    _vouch(campaign, pool, record)


def _emb_dim(pool: BandGapPool) -> int:
    if pool.embedding is not None:
        return int(pool.embedding.shape[1])
    return int(pool.embedding_dim or 0)


def _vouch(campaign: Campaign, pool: BandGapPool, record: dict) -> None:
    """Give the pool (and the campaign's domain) the token of the checked files it comes from."""
    import hashlib

    extra = campaign.store.config.get("extra", {})
    parts = [extra.get("pool_file_sha256"), extra.get("known_file_sha256")]
    parts += [f"{name}={f['sha256']}" for name, f in sorted(record["files"].items())]
    token = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    pool.content_token = token
    if isinstance(campaign.domain, DiscretePool):
        campaign.domain.content_token = token


def create_objective_campaign(
    outdir: str | Path, spec: str, strategy: Strategy, seed: int = 0, batch_size: int = 1, stop: StopRules = StopRules()
) -> CampaignDir:
    """A new campaign over a user objective class ``package.module:ClassName`` (built without arguments).

    Naming the class here is the user's consent to import it for this run; reopening the campaign
    later needs that consent again (see :func:`open_campaign_dir`).
    """
    outdir = Path(outdir)
    objective = load_objective_class(spec)()
    outdir.mkdir(parents=True, exist_ok=True)
    campaign = Campaign.create(
        outdir / STORE_NAME, objective, strategy, seed, batch_size, stop, extra={"kind": "objective", "spec": spec}
    )
    return CampaignDir(outdir, campaign, None)


def resume_differences(
    stored: dict[str, Any], asked: dict[str, Any], names: dict[str, str] | None = None
) -> list[tuple[str, Any, Any]]:
    """What a command asks for that the campaign stored under the same name does not hold.

    Why: ``matscreen search -o DIR`` resumes the campaign in DIR, and a resumed campaign keeps its
    own pool, target and strategy; a re-run that changed any of them would otherwise report the old
    search as the answer to the new question. ``stored`` is the store's config; ``asked`` maps
    the keys of its ``extra`` (and "strategy", "seed", "batch_size") to the values asked for, and
    ``names`` those keys to what the user calls them (option names). Returns (name, stored value,
    asked value) for each difference. Paths compare resolved; floats with a relative tolerance
    of 1e-12."""
    extra = stored.get("extra", {})
    have = {
        **extra,
        "strategy": stored.get("strategy"),
        "seed": stored.get("seed"),
        "batch_size": stored.get("batch_size"),
    }
    out: list[tuple[str, Any, Any]] = []
    for key, want in asked.items():
        got = have.get(key)
        if key.endswith("_path") and want is not None:
            want = str(Path(want).resolve())
        if isinstance(got, float) and isinstance(want, (int, float)) and not isinstance(want, bool):
            same = math.isclose(got, float(want), rel_tol=1e-12, abs_tol=0.0)
        else:
            same = got == want
        if not same:
            out.append(((names or {}).get(key, key), got, want))
    return out


def open_campaign_dir(outdir: str | Path, allow_objectives: Iterable[str] = ()) -> CampaignDir:
    """Reopen a campaign directory (after a crash, or from another command).

    A user objective named in the store is imported only when listed in ``allow_objectives`` (the
    specs the user consents to for this run); a built-in one always. Anything else raises
    :class:`~screening.bo.objective.ObjectiveError` before any import.
    """
    from screening.bo.store import CampaignStore
    from screening.objectives.bandgap import pool_snapshot as ps

    outdir = Path(outdir)
    with CampaignStore.open(outdir / STORE_NAME) as store:
        cfg = store.config
        record = store.get_meta(ps.META_KEY)
    extra = cfg.get("extra", {})
    strategy = Strategy.from_dict(cfg["strategy"])
    if extra.get("kind") == "objective":
        cls = load_stored_objective_class(extra["spec"], allow_objectives, str(outdir / STORE_NAME))
        return CampaignDir(outdir, Campaign.open(outdir / STORE_NAME, cls()), None)
    if extra.get("kind") != "bandgap-pool":
        raise MatscreenError(f"{outdir}: unknown campaign kind {extra.get('kind')!r}")
    record = copy.deepcopy(record) if isinstance(record, dict) and record.get("format") == ps.FORMAT else None
    recorded = copy.deepcopy(record)
    inputs = dict(record.get("inputs") or {}) if record is not None else {}
    pool_path = Path(extra["pool_path"])
    inputs["pool"] = _checked_input(outdir, pool_path, extra["pool_file_sha256"], inputs.get("pool"), "pool")
    kp = Path(extra["known_path"]) if extra.get("known_path") else None
    if kp is not None:
        inputs["known"] = _checked_input(outdir, kp, extra["known_file_sha256"], inputs.get("known"), "known-data")
    reducer = PCAReducer.load(outdir / PCA_NAME)
    notes: list[str] = []
    snapshot = _read_snapshot(outdir, record, reducer, extra, kp is not None, notes)
    if snapshot is not None:
        pool, known = snapshot
        pool.load_embedding = _embedding_reader(outdir, pool_path, reducer, extra, pool)
    else:
        pool = _load_pool_file(pool_path, reducer, extra)
        known = _load_known_file(kp, pool, extra) if kp is not None else None
    objective = _pool_objective(
        pool,
        extra["target"],
        extra["tolerance"],
        _uses_prediction(strategy, pool),
        extra.get("pred_as_feature", False),
        known,
    )
    campaign = Campaign.open(outdir / STORE_NAME, objective)
    campaign.store.notices.extend(notes)
    if snapshot is None:  # written again (first command of a campaign made before snapshots: silently)
        _keep_snapshot(campaign, outdir, pool, known, inputs, campaign.store.notices if record is not None else [])
        return CampaignDir(outdir, campaign, pool)
    assert record is not None
    _vouch(campaign, pool, record)
    record["inputs"] = inputs
    if record != recorded:  # a file checked by its digest this time: its new stamp saves the next check
        _set_meta_quietly(campaign, ps.META_KEY, record)
    return CampaignDir(outdir, campaign, pool)


def _checked_input(outdir: Path, path: Path, sha256: str, stamp: list | None, what: str) -> list[int] | None:
    """The stamp of the campaign's ``what`` file (pool or known data) once its content is checked
    against the SHA-256 recorded at ``campaign new`` (by stamp first: :func:`check_sha256`);
    None while the file is too young to be trusted by its stamp (:func:`settled`)."""
    from screening.io.file_digest import check_sha256

    if not path.is_file():
        raise MatscreenError(f"{outdir}: its {what} file {path} is gone")
    ok, now = check_sha256(path, sha256, stamp)
    if not ok:
        raise MatscreenError(f"{outdir}: the {what} file {path} changed since the campaign was created")
    return settled(now)


def _read_snapshot(
    outdir: Path, record: dict | None, reducer: PCAReducer, extra: dict, has_known: bool, notes: list[str]
) -> tuple[BandGapPool, Any] | None:
    """The pool (and known data) from the campaign's snapshot, or None (with a note in ``notes``
    when one was recorded but cannot be used: the caller reads the files and writes it again)."""
    from screening.objectives.bandgap import pool_snapshot as ps

    if record is None:
        return None
    files = record.get("files") or {}
    try:
        frame, features, id_order = ps.read_pool_snapshot(outdir, files.get(ps.POOL_SNAPSHOT_NAME))
        known = ps.read_known_snapshot(outdir, files.get(ps.KNOWN_SNAPSHOT_NAME)) if has_known else None
    except ps.SnapshotUnusable as exc:
        notes.append(f"read the pool file again: the pool snapshot {exc}")
        return None
    source = str(extra["pool_path"])
    pool = BandGapPool(frame, features, reducer, source, extra["pool_file_sha256"], None)
    pool.id_order = id_order
    pool.embedding_dim = int(record.get("emb_dim") or 0) or None
    return pool, known


def _load_pool_file(pool_path: Path, reducer: PCAReducer, extra: dict) -> BandGapPool:
    return load_pool(
        pool_path,
        reducer=reducer,
        require_band_gap=extra.get("require_band_gap", True),
        max_formation_energy=extra.get("max_formation_energy"),
        label=extra.get("label", "band_gap"),
        strict=False,  # the rows it left out when created (the file is unchanged: its hash is checked)
    )


def _load_known_file(path: Path, pool: BandGapPool, extra: dict) -> Any:
    known_label = extra.get("known_label")
    return load_known(
        path,
        pool,
        label=known_label or extra.get("label", "band_gap"),
        same_quantity=known_label is None,
        strict=False,
    )


def _embedding_reader(outdir: Path, pool_path: Path, reducer: PCAReducer, extra: dict, snapshot: BandGapPool):
    """Reads the embeddings of a snapshot's pool from the pool file (when the model is built):
    the file checked by its full SHA-256 again, its rows those of the snapshot (whose ids are
    listed only then: 10^6 of them cost a later command 0.05 s for nothing)."""

    def read() -> np.ndarray:
        if not pool_path.is_file() or file_sha256(pool_path) != extra["pool_file_sha256"]:
            raise MatscreenError(f"{outdir}: the pool file {pool_path} changed since the campaign was created")
        pool = _load_pool_file(pool_path, reducer, extra)
        if pool.ids != snapshot.ids or pool.embedding is None:
            raise MatscreenError(
                f"{outdir}: the pool snapshot does not match {pool_path}; delete {outdir}/pool_snapshot.parquet"
            )
        return pool.embedding

    return read


def _set_meta_quietly(campaign: Campaign, key: str, value: Any) -> None:
    """Record ``value`` where the store can be written (a read-only campaign checks files again next time)."""
    try:
        campaign.store.set_meta(key, value)
    except MatscreenError:
        pass


def _uses_prediction(strategy: Strategy, pool: BandGapPool) -> bool:
    """The network's prediction is the GP prior mean when asked for, and always the neighbour
    surrogate's base when the pool has it."""
    return strategy.use_prior or (strategy.surrogate == "neighbour" and "pred_band_gap" in pool.frame.columns)


def _pool_objective(
    pool: BandGapPool, target: float, tolerance: float, use_prior: bool, pred_as_feature: bool = False, known=None
) -> BandGapPoolObjective:
    domain = pool.domain(use_prior, pred_as_feature, known)
    if "band_gap" in pool.frame.columns:
        gaps = pd.to_numeric(pool.frame["band_gap"], errors="coerce").to_numpy(dtype=np.float64)
    else:
        gaps = np.full(len(domain), np.nan)
    return BandGapPoolObjective(domain, gaps, target, tolerance)


def read_prior_file(path: str | Path) -> pd.DataFrame:
    """The prior-data CSV (ids stay text, ``NA`` included, as in every table: screening.io.tables),
    or an error naming the file when it cannot be read."""
    from screening.io.tables import csv_missing_values

    try:
        columns = list(pd.read_csv(path, nrows=0).columns)
        frame = pd.read_csv(path, dtype={"id": str}, **csv_missing_values(columns, {"id"}))
    except FileNotFoundError as exc:
        raise MatscreenError(f"{path}: prior-data file not found") from exc
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MatscreenError(f"{path}: cannot read the prior data as CSV ({exc})") from exc
    if frame.empty:
        raise MatscreenError(f"{path}: the prior data file has no rows")
    return frame


def prior_not_told(cd: CampaignDir, prior_csv: str | Path | None, n_prior: int) -> str | None:
    """Why resuming with these prior options would drop prior data the command gave, or None.

    The prior data are told once, when a search starts; the same command run again resumes it.
    A resume whose ``--prior`` file holds rows the campaign was never told (or whose
    ``--n-prior`` differs from the prior count it was started with) would otherwise ignore them."""
    told_prior = [r for r in cd.campaign.history().records if r.source == "prior"]
    if prior_csv is not None:
        ids = read_prior_file(prior_csv)
        given = set(ids["id"].astype(str).str.strip()) if "id" in ids.columns else set()
        missing = sorted(given - {str(r.key) for r in told_prior})
        if missing:
            return (
                f"{prior_csv} has {len(missing)} crystal(s) this campaign was not started with (e.g. {missing[0]!r}); "
                "prior data are read only when a search starts: tell them with `matscreen campaign tell`, "
                "or name a new -o"
            )
    elif n_prior and n_prior != len(told_prior):
        return f"--n-prior {n_prior}: this campaign started with {len(told_prior)} prior crystal(s)"
    return None


def add_prior_data(cd: CampaignDir, prior_csv: str | Path | None = None, n_prior: int = 0, seed: int = 0) -> int:
    """Tell the prior data once, at the start: rows of ``prior_csv`` (``id`` and optionally
    ``band_gap``; without it the pool's gap is used), or ``n_prior`` random crystals that are
    *not* hits (the seed's setting: the search starts from known misses). Returns rows told."""
    campaign, pool = cd.campaign, cd.pool
    if campaign.store.observations():
        return 0
    objective = campaign.objective
    assert isinstance(objective, BandGapPoolObjective) and pool is not None
    if prior_csv is not None:
        frame = read_prior_file(prior_csv)
        if "id" not in frame.columns:
            raise RecordError("<header>", "prior file needs an 'id' column", str(prior_csv))
        ids = frame["id"].astype(str).str.strip().tolist()
        if "band_gap" in frame.columns:
            campaign.tell(ids, frame["band_gap"].tolist(), source="prior", origin=str(prior_csv))
        else:
            unknown = [i for i in ids if not objective.domain.contains(i)]
            if unknown:
                raise RecordError(unknown[0], "unknown candidate: not in the pool", str(prior_csv))
            campaign.tell_evaluations(objective.evaluate(ids), source="prior", origin=str(prior_csv))
        return len(ids)
    if n_prior < 0:
        raise MatscreenError(f"the number of random prior crystals cannot be negative, got {n_prior}")
    if n_prior > 0:
        hits = [c for c, g in zip(objective.domain.ids, objective.band_gaps) if np.isfinite(g) and objective.is_hit(g)]
        ids = objective.domain.random_ids(n_prior, np.random.default_rng(seed), excluded=hits)
        campaign.tell_evaluations(objective.evaluate(ids), source="prior")
        return n_prior
    return 0


ASK_COLUMNS_DOC = (
    "id; formula, prototype, space_group, n_sites: what the pool says of the crystal (each when the pool has "
    "it); pred_band_gap_eV, pred_band_gap_std_eV, pred_formation_energy_eV_per_atom: the network's predictions; "
    "mean_eV, std_eV: the surrogate's predictive mean and standard deviation of the measured gap (eV) given "
    "everything told so far (with known data: of the label-match mixture); acquisition_score: how much the search "
    "wants this point (for --acq window: the probability that the gap lies in target ± tol); map_eV: the "
    "network's prediction carried to the measured scale by the map learned from the results so far (see "
    "`campaign status`); band_gap_eV, error: empty, for the lab to fill in and `campaign tell`"
)

#: Decimals of the eV values in the files a lab reads (ask files, history.csv): 0.1 meV, finer
#: than any band-gap measurement. The campaign store keeps the exact values.
EV_DECIMALS = 4

#: The ask file's column the lab fills in with the measured gap (read back by
#: :func:`screening.io.lab_files.read_pool_results`), and the one for a failed measurement's reason.
ASK_RESULT_COLUMN = "band_gap_eV"
ASK_ERROR_COLUMN = "error"

#: What an ask file says of each crystal, when the pool has it: (ask-file column, pool columns in
#: order of preference, decimals for a value in eV or eV/atom; None for text and counts).
ASK_POOL_COLUMNS: tuple[tuple[str, tuple[str, ...], int | None], ...] = (
    ("formula", ("formula",), None),
    ("prototype", ("prototype",), None),
    ("space_group", ("space_group", "spacegroup", "space_group_symbol", "spacegroup_symbol"), None),
    ("space_group_number", ("space_group_number", "spacegroup_number"), None),
    ("n_sites", ("n_sites", "nsites", "num_sites"), None),
    ("pred_band_gap_eV", (PRED_BAND_GAP,), EV_DECIMALS),
    ("pred_band_gap_std_eV", (PRED_BAND_GAP_STD,), EV_DECIMALS),
    ("pred_formation_energy_eV_per_atom", (PRED_FORMATION_ENERGY,), EV_DECIMALS),
    ("formation_energy_eV_per_atom", ("formation_energy_per_atom",), EV_DECIMALS),
    ("energy_above_hull_eV_per_atom", ("energy_above_hull",), EV_DECIMALS),
)

#: Every column a pool campaign's ask file has held, this version's and earlier ones' (which had
#: id, formula, pred_band_gap_eV, the surrogate's columns and map_eV): a file whose header uses
#: only these is an ask file that ``campaign ask -o`` may replace (:func:`check_ask_path`).
POOL_ASK_FILE_COLUMNS = frozenset(
    {
        "id",
        *(name for name, _, _ in ASK_POOL_COLUMNS),
        "mean_eV",
        "std_eV",
        "mean_abs_dev_eV",
        "std_abs_dev_eV",
        "acquisition_score",
        "map_eV",
        ASK_RESULT_COLUMN,
        ASK_ERROR_COLUMN,
    }
)


def _pool_source_columns(frame: pd.DataFrame) -> list[tuple[str, str, int | None]]:
    """(ask-file column, the pool's column, decimals) for each descriptive column the pool has."""
    out = []
    for name, candidates, decimals in ASK_POOL_COLUMNS:
        found = next((c for c in candidates if c in frame.columns), None)
        if found is not None:
            out.append((name, found, decimals))
    return out


def _pool_cells(values: pd.Series, decimals: int | None) -> np.ndarray:
    """A pool column as an ask file shows it: eV values rounded to ``decimals``, whole counts as
    integers (``8``, not ``8.0``), text as it is."""
    if decimals is not None:
        return np.round(pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64), decimals)
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if (finite == np.round(finite)).all():
            return values.astype("Int64").to_numpy()
    return values.to_numpy()


def ask_frame(cd: CampaignDir, points: Sequence[Any]) -> pd.DataFrame:
    """The rows of an ask file for ``points``: what a lab needs to judge each suggestion.

    Pool campaigns: ``id``, what the pool says of each crystal (``formula``, ``prototype``,
    ``space_group``, ``n_sites``, the network's ``pred_band_gap_eV`` and
    ``pred_formation_energy_eV_per_atom``, each when the pool has it: :data:`ASK_POOL_COLUMNS`),
    the surrogate's ``mean_eV``, ``std_eV``, ``acquisition_score`` (and ``map_eV``), then the empty
    ``band_gap_eV`` and ``error`` the lab fills in (see :data:`ASK_COLUMNS_DOC`; with
    ``--model loss`` the mean and std are of |gap − target| and named ``mean_abs_dev_eV`` /
    ``std_abs_dev_eV``). eV values are rounded to :data:`EV_DECIMALS`. Box campaigns: one column
    per input. Units are in the column names, so the file stays a plain CSV.
    """
    from screening.io.lab_files import box_columns

    c = cd.campaign
    if not isinstance(c.domain, DiscretePool):
        return pd.DataFrame(np.atleast_2d(np.asarray(points, dtype=np.float64)), columns=box_columns(c.domain))
    columns = ask_columns(cd)
    ids = [str(p) for p in points]
    out = pd.DataFrame({"id": ids})
    if cd.pool is not None:
        frame = cd.pool.frame.iloc[c.domain.indices_of(ids)]  # the pool's rows, in the domain's order
        for name, source, decimals in _pool_source_columns(frame):
            out[name] = _pool_cells(frame[source], decimals)
    # rounded only where a lab reads eV (a band-gap campaign); a user objective's values as they are
    rounded = (lambda v: np.round(np.asarray(v, dtype=np.float64), EV_DECIMALS)) if cd.pool is not None else np.asarray
    post = c.predictive(ids)
    value = c.strategy.model == "value"
    out["mean_eV" if value else "mean_abs_dev_eV"] = rounded(post["mean"])
    out["std_eV" if value else "std_abs_dev_eV"] = rounded(post["std"])
    out["acquisition_score"] = post["acquisition"]
    if "map_eV" in columns:
        out["map_eV"] = rounded(post["map"])
    if ASK_RESULT_COLUMN in columns:
        out[ASK_RESULT_COLUMN] = np.nan
        out[ASK_ERROR_COLUMN] = ""
    return out[columns]


def ask_columns(cd: CampaignDir) -> list[str]:
    """The header of this campaign's ask files (:func:`ask_frame`), without computing a row."""
    from screening.io.lab_files import box_columns

    c = cd.campaign
    if not isinstance(c.domain, DiscretePool):
        return list(box_columns(c.domain))
    value = c.strategy.model == "value"
    return [
        "id",
        *(name for name, _, _ in (_pool_source_columns(cd.pool.frame) if cd.pool is not None else [])),
        "mean_eV" if value else "mean_abs_dev_eV",
        "std_eV" if value else "std_abs_dev_eV",
        "acquisition_score",
        # the network's prediction carried to the measured scale (empty where no map is learned)
        *(["map_eV"] if c.strategy.learns_map else []),
        # for the lab to fill in: a band-gap campaign reads them back with `campaign tell`
        *([ASK_RESULT_COLUMN, ASK_ERROR_COLUMN] if cd.pool is not None else []),
    ]


def map_line(cd: CampaignDir) -> tuple[str | None, dict | None]:
    """The learned map in words and as a dict (None, None where none is learned)."""
    summary_ = cd.campaign.learned_map() if cd.pool is not None else None
    if summary_ is None:
        return None, None
    return summary_.words(), summary_.to_dict()


def default_ask_path(cd: CampaignDir) -> Path:
    """``DIR/ask-<k>.csv``, k the number of observations told so far."""
    return cd.path / f"ask-{len(cd.campaign.store.observations()):04d}.csv"


def ask_into_file(
    cd: CampaignDir, path: str | Path | None = None, n: int | None = None, fresh: bool = False
) -> tuple[pd.DataFrame, Path]:
    """Ask for the next ``n`` points and write them as an ask file (atomically, text cells
    neutralised); returns its rows and the file written.

    The file is ``path`` (default :func:`default_ask_path`), checked first
    (:func:`check_ask_path`) so a refused path leaves no points pending; where an earlier ask
    file of that name still lists pending points, ``-2``, ``-3``, ... is added before ``.csv``.
    An earlier ask killed before it wrote its file is finished instead: its points, to its file
    (:meth:`Campaign.ask`)."""
    from screening.safe_csv import write_text_csv

    c = cd.campaign
    path = Path(path) if path is not None else default_ask_path(cd)
    check_ask_path(cd, path)
    points = c.ask(n, fresh=fresh, file=str(path))
    batch = c.last_ask
    if batch is not None:
        path = Path(c.store.ask_file(batch))
    frame = ask_frame(cd, points)
    write_text_csv(frame, path)
    if batch is not None:
        c.store.mark_written(batch)
    return frame, path


def check_ask_path(cd: CampaignDir, path: Path) -> None:
    """Refuse an ask file path that would replace something other than an earlier, unfilled ask file.

    Why: ``campaign ask -o`` replaced whatever it was given; ``-o DIR/campaign.sqlite`` lost every
    observation, and ``-o`` naming the pool made every later command refuse the campaign. A path
    is free when nothing is there, or when the file there is an ask file of this campaign: its
    header is this version's (:func:`ask_columns`) or, for a pool campaign, uses only the columns
    ask files have held (:data:`POOL_ASK_FILE_COLUMNS`: files written before the descriptive and
    fill-in columns were added), and its ``band_gap_eV`` and ``error`` cells are still empty (a
    lab's filled-in file holds its measurements: never replaced)."""
    if path.is_dir():
        raise MatscreenError(f"{path} is a folder; -o names the ask file to write (e.g. {path / 'ask.csv'})")
    if not path.exists():
        return
    extra = cd.campaign.store.config.get("extra", {})
    protected = [cd.path / STORE_NAME, *(Path(extra[k]) for k in ("pool_path", "known_path") if extra.get(k))]
    if any(path.resolve() == p.resolve() for p in protected):
        raise MatscreenError(f"{path} is one of this campaign's own files; write the ask file somewhere else")
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader([handle.readline()]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        header = []
    earlier = (
        isinstance(cd.campaign.domain, DiscretePool)
        and cd.pool is not None
        and header[:1] == ["id"]
        and set(header) <= POOL_ASK_FILE_COLUMNS
    )
    if header != ask_columns(cd) and not earlier:
        raise MatscreenError(
            f"{path} exists and is not an ask file of this campaign; name a new file (or remove it first)"
        )
    if not {ASK_RESULT_COLUMN, ASK_ERROR_COLUMN} & set(header):
        return
    try:  # an ask file is small: read whole only once its header says it is one
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # pandas' parser errors are ValueErrors
        raise MatscreenError(f"{path} exists and cannot be read as an ask file ({exc}); name a new file") from exc
    for column in (ASK_RESULT_COLUMN, ASK_ERROR_COLUMN):
        if column in frame.columns:
            filled = [n for n, cell in enumerate(frame[column], start=2) if cell.strip()]
            if filled:
                raise MatscreenError(
                    f"{path} holds results ({column} filled in on line {filled[0]}); name a new file for the next "
                    "ask (tell these results with `matscreen campaign tell` if you have not)"
                )


def tell_results_file(cd: CampaignDir, path: str | Path) -> TellOutcome:
    """Read a lab's results CSV and tell it: every row is checked (a band gap must be finite, 0–100 eV)
    before anything is written, and a malformed file names the file, line and reason."""
    from screening.io.lab_files import read_box_results, read_pool_results

    c = cd.campaign
    if cd.pool is not None or isinstance(c.domain, DiscretePool):
        check = getattr(c.objective, "check_y", None)
        res = read_pool_results(path, check=check if callable(check) else None)
    else:
        res = read_box_results(path, c.domain)
    return c.tell(res.points, res.ys, res.errors, origin=str(path))


def summary(cd: CampaignDir) -> dict[str, Any]:
    """Counts, best point, hit, pending and the pool's random-search baseline, for ``search`` and
    ``summary.json``; ``campaign status`` reads the same counts from the store alone
    (:func:`screening.bo.status.campaign_status`). The learned map is added by
    :func:`write_report` (it costs building the model)."""
    c = cd.campaign
    h = c.history()
    ok = [(r, hit) for r, hit in zip(h.records, h.hits) if r.ok]
    # a told-ok record always has a loss; inf only keeps the key total for the type checker
    best = min(ok, key=lambda t: np.inf if t[0].loss is None else t[0].loss) if ok else None
    out: dict[str, Any] = {
        "observations": len(h.records),
        "prior": sum(r.source == "prior" for r in h.records),
        "search_evaluations": h.n_search,
        "failed": sum(not r.ok for r in h.records),
        "pending": [str(p) if isinstance(p, str) else [float(v) for v in p] for p in c.pending_points()],
        "best_point": best[0].key if best else None,
        "best_y": best[0].y if best else None,
        "best_loss": best[0].loss if best else None,
        "evaluations_to_first_hit": h.first_hit(),
        "hits": [r.key for r, hit in zip(h.records, h.hits) if hit and r.source == "search"],
        "prior_hits": [r.key for r, hit in zip(h.records, h.hits) if hit and r.source != "search"],
        "hit": any(h.hits),
        "stop_reason": c.stop_reason(),
        "strategy": c.strategy.to_dict(),
        "seed": c.seed,
        "batch_size": c.batch_size,
    }
    obj = c.objective
    if isinstance(obj, BandGapPoolObjective) and np.all(np.isfinite(obj.band_gaps)):
        told = {r.key for r in h.records if r.source == "prior"}
        remaining = len(obj.domain) - len(told)
        hits_left = sum(obj.is_hit(g) for cid, g in zip(obj.domain.ids, obj.band_gaps) if cid not in told)
        out["pool_candidates"] = len(obj.domain)
        out["pool_hits_after_prior"] = int(hits_left)
        out["random_search_expected_evaluations"] = expected_draws_to_first_hit(remaining, int(hits_left))
    return out


HISTORY_COLUMNS_DOC = (
    "band-gap campaigns: seq, id, formula, source (prior/search), band_gap_eV (measured), abs_deviation_eV "
    "(|band_gap_eV − target|), best_abs_deviation_eV (the smallest so far), hit, error, told_at; eV values to "
    "4 decimals (0.1 meV). Campaigns over your own objective: seq, id (a pool) or one column per input (a box), "
    "source, y, loss (the objective's loss(y): 0 at the goal, smaller is better), best_loss, hit, error, "
    "told_at; numbers to 10 significant digits"
)


def history_file_frame(cd: CampaignDir, history: History | None = None) -> tuple[pd.DataFrame, str]:
    """The rows of ``history.csv`` and the float format to write them with (:data:`HISTORY_COLUMNS_DOC`).

    Why: a lab reads this file; ``point, y, loss`` and ``0.30000000000000004`` said nothing to it.
    Band-gap campaigns get plain names with units and eV values rounded to :data:`EV_DECIMALS`
    (written as ``%.4f``); other objectives keep ``y`` and ``loss`` (units are the objective's),
    written to 10 significant digits. The campaign store keeps the exact values."""
    from screening.io.lab_files import box_columns

    h = history if history is not None else cd.campaign.history()
    frame = h.to_frame()
    dom = cd.campaign.domain
    if cd.pool is None:
        if isinstance(dom, DiscretePool):
            frame = frame.rename(columns={"point": "id"})
        else:  # one column per input instead of the store's text key ("0.30000000000000004,1.5")
            names = box_columns(dom)
            xs = [r.x if r.x is not None and len(r.x) == len(names) else [np.nan] * len(names) for r in h.records]
            inputs = pd.DataFrame(np.array(xs, dtype=np.float64).reshape(len(xs), len(names)), columns=names)
            frame = pd.concat([frame[["seq"]], inputs, frame.drop(columns=["seq", "point"])], axis=1)
        frame["y"] = [
            "[" + ", ".join(f"{v:.10g}" for v in r.y) + "]" if isinstance(r.y, list) else r.y for r in h.records
        ]
        return frame, "%.10g"
    frame = frame.rename(
        columns={"point": "id", "y": "band_gap_eV", "loss": "abs_deviation_eV", "best_loss": "best_abs_deviation_eV"}
    )
    for column in ("band_gap_eV", "abs_deviation_eV", "best_abs_deviation_eV"):
        frame[column] = np.round(pd.to_numeric(frame[column], errors="coerce").astype(np.float64), EV_DECIMALS)
    if "formula" in cd.pool.frame.columns:
        formulas = dict(zip(cd.pool.frame["id"].astype(str), cd.pool.frame["formula"]))
        frame.insert(2, "formula", frame["id"].map(formulas))
    return frame, f"%.{EV_DECIMALS}f"


def write_report(cd: CampaignDir) -> dict[str, Path]:
    """history.csv, convergence.png, pool_map.png (pool campaigns) and summary.json in the directory."""
    from screening.io.atomic import write_json_atomic
    from screening.plots import convergence_plot, pool_map_plot
    from screening.safe_csv import write_text_csv

    c, out = cd.campaign, cd.path
    h = c.history()
    frame, float_format = history_file_frame(cd, h)
    paths = {"history": out / "history.csv", "summary": out / "summary.json", "convergence": out / "convergence.png"}
    write_text_csv(frame, paths["history"], float_format=float_format)  # ids and errors come from users' files
    learned = c.learned_map() if cd.pool is not None else None  # once: summary.json and the plot
    info = summary(cd)
    info["learned_map"] = learned.to_dict() if learned is not None else None
    write_json_atomic(info, paths["summary"], indent=2, default=str)
    curve = h.best_loss_curve()
    losses = h.losses()
    prior_mask = np.array([r.source == "prior" for r in h.records], dtype=bool)
    start = float(np.nanmin(losses[prior_mask])) if prior_mask.any() and np.isfinite(losses[prior_mask]).any() else None
    random_curve = None
    tol = getattr(c.objective, "tolerance", None)
    obj = c.objective
    if isinstance(obj, BandGapPoolObjective) and np.all(np.isfinite(obj.band_gaps)):
        prior_ids = {r.key for r in h.records if r.source == "prior"}
        avail = np.array([cid not in prior_ids for cid in obj.domain.ids])
        random_curve = expected_best_loss_curve(
            np.abs(obj.band_gaps[avail] - obj.target), max(len(curve), 20), start=start if start is not None else np.inf
        )
    convergence_plot(
        curve,
        paths["convergence"],
        random_curve,
        tol,
        start,
        ylabel="best |gap − target| (eV)" if cd.pool is not None else "best loss",
    )
    if cd.pool is not None:
        paths["pool_map"] = out / "pool_map.png"
        assert isinstance(obj, BandGapPoolObjective), "a campaign directory with a pool has a pool objective"
        dom = obj.domain
        rows = {cid: i for i, cid in enumerate(dom.ids)}
        picks = [rows[r.key] for r in h.records if r.source == "search"]
        prior = [rows[r.key] for r in h.records if r.source == "prior"]
        hits = [rows[r.key] for r, hit in zip(h.records, h.hits) if hit]
        gaps = obj.band_gaps if np.all(np.isfinite(obj.band_gaps)) else None
        pool_map_plot(cd.pool.features, gaps, paths["pool_map"], picks, prior, hits)
        if learned is not None and "pred_band_gap" in cd.pool.frame.columns:
            from screening.plots import learned_map_plot

            paths["learned_map"] = out / "learned_map.png"
            learned_map_plot(
                learned.points_g,
                learned.points_y,
                learned.grid,
                learned.mean,
                learned.std,
                learned.words(),
                paths["learned_map"],
            )
    return paths
