"""A campaign's status read from its store alone: what `campaign status` prints, in well under 2 s.

Why apart from :mod:`screening.objectives.bandgap.campaign_dir`: rebuilding a campaign's
objective loads its pool, the PCA and torch, which takes seconds; a status needs none of it. The
store holds every observation with its loss, the pending points, the stop rules and — for
target-value objectives — the target and tolerance, which is all a status needs. Only a user
objective without a stored target is imported (to ask it ``is_hit``), and only with the user's
consent (:func:`screening.bo.objective.load_stored_objective_class`).

Nothing here imports torch, botorch, scipy, pandas, pymatgen or matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from screening.bo.campaign import History, StopRules, _as_y, stop_reason
from screening.bo.objective import TargetSpec, load_stored_objective_class
from screening.bo.store import CampaignStore


def stored_target(config: dict) -> TargetSpec | None:
    """The target and tolerance a campaign was created with: ``config["target_spec"]`` (campaigns
    made since it was stored), else the ``target`` / ``tolerance`` its creator kept in ``extra``."""
    spec = config.get("target_spec")
    if isinstance(spec, dict) and "target" in spec and "tolerance" in spec:
        return TargetSpec(float(spec["target"]), float(spec["tolerance"]))
    extra = config.get("extra") or {}
    if extra.get("target") is not None and extra.get("tolerance") is not None:
        return TargetSpec(float(extra["target"]), float(extra["tolerance"]))
    return None


def campaign_status(store_path: str | Path, allowed_objectives: Iterable[str] = ()) -> dict[str, Any]:
    """Counts, best point, hits, pending points and stop reason of the campaign in ``store_path``.

    ``allowed_objectives`` are the user's consents (``--allow-objective``), needed only for a
    user objective without a stored target.
    """
    path = Path(store_path)
    with CampaignStore.open(path) as store:
        config = store.config
        records = store.observations()
        pending = store.pending()
        pool_ref = store.pool_ref
        notices = list(store.notices)
    spec = stored_target(config)
    is_hit: Callable[[Any], bool]
    if spec is not None:
        is_hit = spec.is_hit
    else:
        extra = config.get("extra") or {}
        if not extra.get("spec"):
            from screening.bo.objective import ObjectiveError

            raise ObjectiveError(f"{path}: the campaign names neither a target nor an objective class")
        objective = load_stored_objective_class(extra["spec"], allowed_objectives, str(path))()
        is_hit = objective.is_hit
    hits = [r.ok and bool(is_hit(_as_y(r.y))) for r in records]
    history = History(records, hits)
    ok = [r for r in records if r.ok and r.loss is not None]
    # every record in ok has a loss; inf only keeps the key total for the type checker
    best = min(ok, key=lambda r: float("inf") if r.loss is None else r.loss) if ok else None
    return {
        "notices": notices,
        "kind": (config.get("extra") or {}).get("kind"),
        "target": spec.target if spec else None,
        "tolerance": spec.tolerance if spec else None,
        "observations": len(records),
        "prior": sum(r.source == "prior" for r in records),
        "search_evaluations": history.n_search,
        "failed": sum(not r.ok for r in records),
        "pending": [p.key if p.x is None else [float(v) for v in p.x] for p in pending],
        "pending_ids": [p.key for p in pending],
        "best_point": best.key if best else None,
        "best_y": best.y if best else None,
        "best_loss": best.loss if best else None,
        "evaluations_to_first_hit": history.first_hit(),
        "hits": [r.key for r, hit in zip(records, hits) if hit and r.source == "search"],
        "prior_hits": [r.key for r, hit in zip(records, hits) if hit and r.source != "search"],
        "hit": any(hits),
        "stop_reason": stop_reason(
            StopRules(**config["stop"]), history, pool_size=(pool_ref or {}).get("n_candidates")
        ),
        "budget": config["stop"].get("budget"),
        "strategy": config["strategy"],
        "seed": config["seed"],
        "batch_size": config["batch_size"],
    }


def format_status(info: dict[str, Any], unit: str | None = None) -> str:
    """``info`` (from :func:`campaign_status`) as a short table for a person.

    ``unit`` of the target and values: eV for band-gap campaigns, none for other objectives
    (the store does not know their units).
    """
    unit = unit if unit is not None else ("eV" if info.get("kind") == "bandgap-pool" else "")

    def num(v: Any, fmt: str = ".4g") -> str:
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)

    u = f" {unit}" if unit else ""
    target = "-" if info["target"] is None else f"{num(info['target'])}{u} ± {num(info['tolerance'])}{u}"
    if info["best_point"] is None:
        best = "-"
    elif isinstance(info["best_y"], (int, float)):
        best = f"{info['best_point']}  y = {num(info['best_y'])}{u}  |Δ| = {num(info['best_loss'])}{u}"
    else:
        best = f"{info['best_point']}  loss = {num(info['best_loss'])}"
    budget = "" if info.get("budget") is None else f" of {info['budget']}"
    pending = info["pending_ids"]
    shown = ", ".join(pending[:10]) + (f" … (+{len(pending) - 10})" if len(pending) > 10 else "")
    hits = info["hits"]
    rows = [
        ("target", target),
        (
            "observations",
            f"{info['observations']} ({info['prior']} prior, {info['search_evaluations']} search"
            f"{budget}, {info['failed']} failed)",
        ),
        ("best", best),
        ("pending", f"{len(pending)}" + (f": {shown}" if pending else "")),
        (
            "hits",
            (", ".join(hits) if hits else "none")
            + (f" (first after {info['evaluations_to_first_hit']} search evaluations)" if hits else ""),
        ),
        ("stop reason", info["stop_reason"] or "none: the campaign goes on"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
