"""The silver-nanoparticle flow-synthesis objective (Mekki-Berrada et al., npj Comput. Mater. 2021).

Inputs (a :class:`~screening.bo.domain.Box`), in this order:

=========  ===============================================  =========  ==============  ==========
name       meaning                                           unit       paper Run-1 box  hard limit
=========  ===============================================  =========  ==============  ==========
Q_AgNO3    silver-nitrate share of the aqueous flow          %          4–20            4–45
Q_PVA      polyvinyl-alcohol share                           %          10–40           10–40
Q_TSC      trisodium-citrate share                           %          4–20            0.5–30
Q_seed     silver-seed share                                 %          4–20            0.5–20
Q_tot      total flow rate                                   µL/min     200–1000        200–1000
=========  ===============================================  =========  ==============  ==========

with Q_AgNO3 + Q_PVA + Q_TSC + Q_seed ≤ 90 % (the rest is reducing agent and water). The paper
started in the Run-1 box and widened it when BO kept proposing points on its faces; the hard
limits are the widest box it used (its DNN grid search), beyond which the virtual lab is not
calibrated.

Output ``y`` of a condition: the spectra of its successful replicate droplets, an array
(n_ok, 421) of absorbances on 380–800 nm. Failed droplets (no spectrum, NaN) are counted in
:attr:`SynthesisObjective.droplet_log` and left out; a condition whose droplets all failed is a
failed evaluation. ``loss(y)`` is the median over droplets of the AgBONN loss
(:mod:`screening.objectives.synthesis.spectral_loss`).

The objective works with any *lab* that turns conditions into replicate spectra: the embedded
:class:`~screening.objectives.virtual_lab.VirtualLab`, or a real reactor through CSV files
(:func:`write_conditions_csv` / :func:`read_droplet_spectra_csv`, used by ``matscreen synth ask``
and ``tell``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from screening.bo.domain import Box, LinearConstraint
from screening.bo.objective import Evaluation
from screening.errors import RecordError
from screening.io.lab_files import read_csv_as_text
from screening.io.tables import parse_number
from screening.objectives.synthesis.spectral_loss import (
    WAVELENGTHS_NM,
    load_target,
    spectrum_losses,
    unusable_reason,
)
from screening.safe_csv import restore_cell, write_text_csv

INPUT_NAMES = ("Q_AgNO3", "Q_PVA", "Q_TSC", "Q_seed", "Q_tot")
INPUT_UNITS = ("%", "%", "%", "%", "uL/min")
PAPER_INITIAL_BOUNDS = ((4.0, 20.0), (10.0, 40.0), (4.0, 20.0), (4.0, 20.0), (200.0, 1000.0))
"""The Run-1 Latin-hypercube box of the paper."""
PAPER_EXPANDED_BOUNDS = ((4.0, 45.0), (10.0, 40.0), (0.5, 30.0), (0.5, 20.0), (200.0, 1000.0))
"""The widest box the paper used (DNN grid search), our hard limits for boundary expansion."""
INITIAL_BOXES = ("paper", "full")
"""Named starting boxes: the paper's Run-1 box, or its widest box from the start."""
FRACTION_SUM_MAX = 90.0
"""Q_AgNO3 + Q_PVA + Q_TSC + Q_seed ≤ 90 % of the aqueous flow."""
PAPER_BEST_BO_LOSS = 0.167
"""Best condition (median droplet loss) after 8 BO rounds of 15 in the paper's data."""
PAPER_BEST_DNN_LOSS = 0.135
"""Best condition (median droplet loss) of the DNN runs in the paper's data."""


class SpectrumLab(Protocol):
    """Anything that runs conditions and returns replicate spectra.

    ``measure(X)`` takes (n, 5) conditions in :data:`INPUT_NAMES` order and returns one array
    (n_droplets, 421) per condition; a failed droplet is a row of NaN.
    """

    def measure(self, X: np.ndarray) -> list[np.ndarray]: ...


def synthesis_box(initial: str | Sequence[tuple[float, float]] = "paper") -> Box:
    """The search box with the ≤ 90 % constraint and the paper's widest box as hard limits.

    ``initial``: "paper" (the Run-1 box, widened by boundary expansion), "full" (start in the
    widest box) or explicit ``[(low, high)] * 5`` bounds.
    """
    if isinstance(initial, str):
        if initial not in INITIAL_BOXES:
            raise ValueError(f"initial box must be 'paper', 'full' or explicit bounds, got {initial!r}")
        bounds: tuple[tuple[float, float], ...] = PAPER_INITIAL_BOUNDS if initial == "paper" else PAPER_EXPANDED_BOUNDS
    else:
        bounds = tuple((float(lo), float(hi)) for lo, hi in initial)
    hard = tuple((min(b[0], h[0]), max(b[1], h[1])) for b, h in zip(bounds, PAPER_EXPANDED_BOUNDS))
    return Box.from_bounds(
        bounds,
        names=INPUT_NAMES,
        constraints=[LinearConstraint.sum_at_most([0, 1, 2, 3], FRACTION_SUM_MAX)],
        hard_bounds=hard,
    )


def condition_id(x: Sequence[float]) -> str:
    """Short stable id of a condition (hash of its exact coordinates), for CSV exchange."""
    text = ",".join(repr(float(v)) for v in np.asarray(x, dtype=np.float64).reshape(-1))
    return "c" + hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class DropletRecord:
    """One droplet's fate: ``ok`` with its loss, or failed with the reason."""

    condition: str
    droplet: int
    ok: bool
    loss: float | None
    reason: str | None = None


@dataclass
class SynthesisObjective:
    """Match the target UV-Vis spectrum by choosing flow conditions (the AgBONN problem).

    ``lab``: a :class:`SpectrumLab` (default: the shipped virtual lab, seed 0). ``target``: the
    target spectrum on the 421-point grid (default: the shipped fit of the paper's target).
    ``hit_loss``: a condition whose median loss is at or below it is a hit (the stop rule).
    """

    lab: SpectrumLab | None = None
    target: np.ndarray = field(default_factory=load_target)
    domain: Box = field(default_factory=synthesis_box)
    hit_loss: float = 0.10
    droplet_log: list[DropletRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.target is None:  # an explicit None keeps meaning "the shipped target"
            self.target = load_target()
        self.target = np.asarray(self.target, dtype=float)
        if self.target.shape != WAVELENGTHS_NM.shape:
            raise ValueError(
                f"target must have {WAVELENGTHS_NM.size} points (380–800 nm, 1 nm), got {self.target.shape}"
            )

    def _lab(self) -> SpectrumLab:
        if self.lab is None:
            from screening.objectives.synthesis.virtual_lab import VirtualLab

            self.lab = VirtualLab()
        return self.lab

    def split_droplets(self, point: Sequence[float], spectra: np.ndarray) -> Evaluation:
        """Evaluation of one condition from its raw droplet spectra; failures go to the log."""
        key = condition_id(point)
        spectra = np.atleast_2d(np.asarray(spectra, dtype=float))
        losses = spectrum_losses(spectra, self.target) if spectra.size else np.empty(0)
        ok = np.isfinite(losses)
        for i, (good, loss) in enumerate(zip(ok, losses)):
            reason = None if good else (unusable_reason(spectra[i]) or "loss not finite")
            self.droplet_log.append(DropletRecord(key, i, bool(good), float(loss) if good else None, reason))
        if not ok.any():
            return Evaluation(
                np.asarray(point, dtype=float), error=f"all {len(ok)} droplets failed (no usable spectrum)"
            )
        return Evaluation(np.asarray(point, dtype=float), y=np.round(spectra[ok], 6))

    def evaluate(self, points: Sequence[Sequence[float]] | np.ndarray) -> list[Evaluation]:
        """Run the conditions in the lab; one Evaluation per condition, failed droplets excluded."""
        X = np.atleast_2d(np.asarray(points, dtype=float))
        if len(X) == 0:
            return []
        blocks = self._lab().measure(X)
        return [self.split_droplets(x, block) for x, block in zip(X, blocks)]

    def droplet_losses(self, y: np.ndarray) -> np.ndarray:
        """Finite per-droplet losses of a condition's spectra (NaN rows dropped)."""
        losses = spectrum_losses(np.atleast_2d(np.asarray(y, dtype=float)), self.target)
        return losses[np.isfinite(losses)]

    def loss(self, y: np.ndarray) -> float:
        """Median over the droplets of 1 − cos(minmax target, minmax spectrum)·δ(peak)."""
        losses = self.droplet_losses(y)
        if losses.size == 0:
            raise ValueError("no droplet with a usable spectrum")
        return float(np.median(losses))

    def is_hit(self, y: np.ndarray) -> bool:
        return self.loss(y) <= self.hit_loss

    def failure_summary(self) -> dict[str, dict[str, int]]:
        """Per condition id: droplets used and droplets excluded as failed."""
        out: dict[str, dict[str, int]] = {}
        for r in self.droplet_log:
            d = out.setdefault(r.condition, {"ok": 0, "failed": 0})
            d["ok" if r.ok else "failed"] += 1
        return out


# --- CSV exchange with a real reactor ----------------------------------------------------------

SPECTRUM_COLUMNS = [str(int(w)) for w in WAVELENGTHS_NM]


def write_conditions_csv(path: str | Path, points: Sequence[Sequence[float]]) -> Path:
    """The conditions to run: ``condition_id`` plus one column per input, full precision."""
    X = np.atleast_2d(np.asarray(points, dtype=float))
    frame = pd.DataFrame(X, columns=list(INPUT_NAMES))
    frame.insert(0, "condition_id", [condition_id(x) for x in X])
    return write_text_csv(frame, path, float_format="%.17g")


def read_droplet_spectra_csv(
    path: str | Path, check: Callable[[np.ndarray], str | None] | None = None
) -> dict[str, np.ndarray]:
    """A reactor's results: one row per droplet, ``condition_id``, then absorbance columns
    ``380`` … ``800`` (nm). A droplet with no spectrum leaves every absorbance empty (or NaN).

    Returns condition id → (n_droplets, 421) with NaN rows for failed droplets. A missing
    column, an empty condition id, a non-numeric absorbance, a spectrum with only some values
    missing or any infinite value, or a spectrum ``check`` objects to (it returns the reason,
    e.g. :func:`~screening.objectives.synthesis.spectral_loss.unusable_reason`) raises
    :class:`RecordError` naming the file, line and condition; nothing is returned in that case.
    Why refuse rather than count such a droplet as failed: only the usable spectra are stored,
    so the measurement would be lost while its condition could no longer be told.
    """
    path = Path(path)
    frame = read_csv_as_text(path)
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in ["condition_id"] + SPECTRUM_COLUMNS if c not in frame.columns]
    if missing:
        shown = missing[:5] + (["…"] if len(missing) > 5 else [])
        raise RecordError("<header>", f"missing columns {shown} (need condition_id and 380…800)", str(path))
    if frame.empty:
        raise RecordError("<file>", "no droplet rows", str(path))
    out: dict[str, list[np.ndarray]] = {}
    for line, row in enumerate(frame.to_dict("records"), start=2):
        cid = restore_cell(row["condition_id"].strip())
        if not cid:
            raise RecordError(f"line {line}", "empty condition_id", str(path))
        values = _absorbances(row, f"line {line}", path)
        problem = _holes(values) or _objection(values, check)
        if problem:
            raise RecordError(f"line {line}", f"condition {cid}: {problem}", str(path))
        out.setdefault(cid, []).append(values)
    return {k: np.vstack(v) for k, v in out.items()}


def _absorbances(row: dict[Hashable, Any], where: str, path: Path) -> np.ndarray:
    """One droplet row's absorbances on the 421-point grid; an empty or NaN cell is NaN."""
    values = np.empty(len(SPECTRUM_COLUMNS))
    for j, column in enumerate(SPECTRUM_COLUMNS):
        text = row[column].strip()
        if text == "" or text.lower() == "nan":
            values[j] = np.nan
            continue
        try:
            values[j] = parse_number(text)
        except ValueError:
            raise RecordError(where, f"absorbance at {column} nm is {text!r}, not a number", str(path)) from None
    return values


def _holes(values: np.ndarray) -> str | None:
    """Why a droplet row is neither a whole spectrum nor a whole failure (every value empty or NaN).

    Why: a partial spectrum is not a failed droplet, and guessing the missing values would make
    up data; an infinite absorbance is a reading error, never a measurement.
    """
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size == 0 or np.isnan(values).all():
        return None
    shown = ", ".join(f"{SPECTRUM_COLUMNS[j]} nm ({values[j]:g})" for j in bad[:5]) + (" …" if bad.size > 5 else "")
    return (
        f"absorbance missing or not finite at {shown}, {bad.size} of {values.size} values; give the whole "
        "spectrum, or leave every value empty for a failed droplet"
    )


def _objection(values: np.ndarray, check: Callable[[np.ndarray], str | None] | None) -> str | None:
    """``check``'s reason to refuse a complete spectrum, worded so the file's author can act on it."""
    if check is None or not np.isfinite(values).all():
        return None
    reason = check(values)
    if reason is None:
        return None
    return (
        f"{reason} (peak absorbance {values.max():.4g}): the loss cannot score this spectrum; negative values "
        "are fine where the peak is positive. Correct the spectrum, or leave every value empty for a failed droplet"
    )


class CsvLab:
    """A real reactor behind files: ``measure`` cannot run synchronously, so the campaign uses
    ask (:func:`write_conditions_csv`) and tell (:func:`read_droplet_spectra_csv`) instead."""

    def measure(self, X: np.ndarray) -> list[np.ndarray]:
        raise RuntimeError("a CSV lab is driven by `matscreen synth ask` / `synth tell`, not run directly")
