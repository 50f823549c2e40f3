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

A campaign file names its objective, but a file is data, not consent: opening a campaign imports
only objectives that :func:`objective_is_allowed` accepts — the built-in ``screening.objectives.*``
or a spec the user names on this command line (``--allow-objective``) or in
``MATSCREEN_ALLOW_OBJECTIVES`` — so a crafted ``campaign.sqlite`` cannot run code.

Objectives may also define ``check_y(y)``, raising ``ValueError`` with the reason when a measured
value is physically impossible (a negative band gap); a campaign refuses such a tell.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from screening.errors import MatscreenError

if TYPE_CHECKING:  # the domain pulls in scipy; `campaign status` must stay light
    from screening.bo.domain import Box, DiscretePool

BUILTIN_OBJECTIVE_PACKAGE = "screening.objectives"
ALLOW_ENV = "MATSCREEN_ALLOW_OBJECTIVES"
_SPEC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


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
    """What a campaign optimises. ``domain`` is a DiscretePool or a Box.

    ``domain`` is a read-only property here so that an objective may declare the narrower type it
    really has (``domain: Box`` on a synthesis objective, ``DiscretePool`` on a pool); a mutable
    protocol attribute would have to match exactly. Moving a box is :class:`BoxObjective`'s job.
    """

    @property
    def domain(self) -> DiscretePool | Box: ...

    def evaluate(self, points: Sequence[Point]) -> list[Evaluation]:
        """Evaluate a batch; return one Evaluation per point, in order, failures included."""
        ...

    def loss(self, y: Any) -> float:
        """The scalar the campaign minimises, e.g. |gap - target| in eV."""
        ...

    def is_hit(self, y: Any) -> bool:
        """Whether ``y`` reaches the goal (the campaign's "hit" stop rule)."""
        ...


@runtime_checkable
class BoxObjective(Objective, Protocol):
    """An objective over a box that the campaign may move (boundary expansion widens it).

    Why separate: a campaign only replaces the box of an objective whose ``domain`` is a
    writable :class:`~screening.bo.domain.Box` attribute, through
    :meth:`screening.bo.campaign.Campaign.set_box`, which checks the new box has the same inputs.
    """

    domain: Box


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


def validate_objective_spec(spec: str) -> str:
    """``spec`` if it is ``dotted.module:ClassName`` made of Python identifiers, else ObjectiveError.

    Checked before anything is imported, so a spec read from a file cannot smuggle in paths,
    relative imports or other syntax.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ObjectiveError(f"objective {spec!r}: expected 'package.module:ClassName'")
    if not _SPEC.fullmatch(spec):
        raise ObjectiveError(
            f"objective {spec!r}: not a 'package.module:ClassName' of Python identifiers (dots between names only)"
        )
    return spec


def allowed_objectives(cli: Iterable[str] = (), environ: dict[str, str] | None = None) -> set[str]:
    """The specs the user consents to import now: given on the command line and in ``MATSCREEN_ALLOW_OBJECTIVES``
    (comma- or whitespace-separated)."""
    env = os.environ if environ is None else environ
    from_env = [s for s in re.split(r"[,\s]+", env.get(ALLOW_ENV, "")) if s]
    return {validate_objective_spec(s.strip()) for s in [*cli, *from_env]}


def objective_is_allowed(spec: str, allowed: Iterable[str] = ()) -> bool:
    """Built-in objectives (``screening.objectives.*``) always; any other spec only when listed in ``allowed``."""
    module_name = spec.partition(":")[0]
    builtin = module_name == BUILTIN_OBJECTIVE_PACKAGE or module_name.startswith(BUILTIN_OBJECTIVE_PACKAGE + ".")
    return builtin or spec in set(allowed)


def load_stored_objective_class(spec: str, allowed: Iterable[str] = (), origin: str = "the campaign file") -> type:
    """The objective class a stored campaign names, imported only with the user's consent.

    ``allowed`` are the specs the user named for this run (:func:`allowed_objectives`). Anything
    else raises :class:`ObjectiveError` before any import, saying how to consent.
    """
    validate_objective_spec(spec)
    if not objective_is_allowed(spec, allowed):
        raise ObjectiveError(
            f"{origin} names the objective {spec!r}, which is not a built-in objective: matscreen does not import "
            f"code named in a campaign file without your consent. If you trust it, rerun with "
            f"--allow-objective {spec} (or set {ALLOW_ENV}={spec})"
        )
    return load_objective_class(spec)


def load_objective_class(spec: str) -> type:
    """Import ``package.module:ClassName`` and return the class.

    For specs the user typed on this command line (their consent); specs read from a file go
    through :func:`load_stored_objective_class`. Raises :class:`ObjectiveError` with the reason
    when the spec is malformed, the module or class is missing or the class lacks the protocol's
    methods, so a typo on the command line reads clearly.
    """
    validate_objective_spec(spec)
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
