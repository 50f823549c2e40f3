"""The objective protocol: what a campaign needs from anything it optimises.

An objective owns its *domain* (a :class:`~screening.bo.domain.DiscretePool` of candidates or a
:class:`~screening.bo.domain.Box` of continuous inputs), evaluates points (a pool look-up, a lab
run, a DFT calculation, a simulator), and turns an outcome ``y`` into the scalar *loss* the
campaign minimises. Outcomes may fail point by point: a failure is an :class:`Evaluation` with
``error`` set, never an exception that loses the rest of a batch.

Points are what the domain proposes: candidate ids (``str``) for a pool, rows of floats for a
box. ``y`` is whatever the experiment measures (a band gap in eV, a spectrum as a 1-d array);
only ``loss(y)`` must be a finite float.

Target-value objectives (a property that should hit ``target`` within ``tolerance``) also expose
those two attributes; the campaign can then model ``y`` itself instead of the loss.

A user's own objective is any class satisfying :class:`Objective`, named on the command line as
``package.module:ClassName`` and loaded with :func:`load_objective_class`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from screening.bo.domain import Box, DiscretePool
from screening.errors import MatscreenError


class ObjectiveError(MatscreenError):
    """An objective could not be loaded or does not satisfy the protocol."""


Point = Any  # a candidate id (str) for a DiscretePool, a sequence of floats for a Box


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluating one point: ``y`` on success, ``error`` (a reason) on failure."""

    point: Point
    y: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Objective(Protocol):
    """What a campaign optimises. ``domain`` is a DiscretePool or a Box."""

    domain: DiscretePool | Box

    def evaluate(self, points: Sequence[Point]) -> list[Evaluation]:
        """Evaluate a batch; return one Evaluation per point, in order, failures included."""
        ...

    def loss(self, y: Any) -> float:
        """The scalar the campaign minimises, e.g. |gap - target| in eV."""
        ...

    def is_hit(self, y: Any) -> bool:
        """Whether ``y`` reaches the goal (the campaign's "hit" stop rule)."""
        ...


@dataclass(frozen=True)
class TargetSpec:
    """A target value with a tolerance, in the units of y (e.g. 2.534 ± 0.01 eV)."""

    target: float
    tolerance: float

    def loss(self, y: float) -> float:
        return abs(float(y) - self.target)

    def is_hit(self, y: float) -> bool:
        return abs(float(y) - self.target) <= self.tolerance + 1e-12


def target_spec_of(objective: Objective) -> TargetSpec | None:
    """The objective's target/tolerance if it is a scalar target-value objective, else None."""
    target = getattr(objective, "target", None)
    tol = getattr(objective, "tolerance", None)
    if target is None or tol is None:
        return None
    return TargetSpec(float(target), float(tol))


def load_objective_class(spec: str) -> type:
    """Import ``package.module:ClassName`` and return the class.

    Raises :class:`ObjectiveError` with the reason when the module or class is missing or the
    class lacks the protocol's methods, so a typo on the command line reads clearly.
    """
    if ":" not in spec:
        raise ObjectiveError(f"objective {spec!r}: expected 'package.module:ClassName'")
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ObjectiveError(f"objective {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    cls = getattr(module, class_name, None)
    if cls is None or not isinstance(cls, type):
        raise ObjectiveError(f"objective {spec!r}: module {module_name!r} has no class {class_name!r}")
    missing = [m for m in ("evaluate", "loss", "is_hit") if not callable(getattr(cls, m, None))]
    if missing:
        raise ObjectiveError(f"objective {spec!r}: class lacks {', '.join(missing)}")
    return cls
