"""Per-record structure checks, run before a structure is turned into a graph.

Why: pymatgen builds a ``Structure`` from almost anything, and the graph code embeds whatever it
gets. A NaN cell length, a 0° angle, a NaN coordinate, two atoms on one spot or an empty site
used to come out as a normal-looking embedding (isolated atoms, another formula), and a
one-atom cell of 0.05 Å asked the neighbour search for ~10⁷ neighbours (5 GiB). Each check here
is a pure function that returns ``None`` or a reason; :func:`validate_structure` runs them in an
order where the cheap ones guard the expensive ones (the neighbour budget is checked from the
cell volume before any neighbour search), and raises :class:`InvalidStructureError` whose reason
starts with the check's name, e.g. ``min_distance: sites 0 and 1 are 0.120 Å apart ...``.

The checks and their default thresholds (:class:`StructureLimits`):

========================= =================================================================
``lattice``               every matrix entry finite, volume > 1e-3 Å³
``angles``                α, β, γ within [5°, 175°]
``coordinates``           every fractional coordinate finite
``occupancy``             every species amount finite and in (0, 1], each site's total ≤ 1,
                          no empty site (partial occupancy passes here: graph building refuses
                          it with its own message)
``element``               every species a real element (no dummy species such as ``Xx``)
``max_sites``             at most 500 sites
``neighbour_budget``      at most 2,000 neighbours per site expected within the graph radius
                          (8 Å): ``n_sites · 4/3·π·r³ / volume``, decided before any search
``min_distance``          no two sites (periodic images included) closer than 0.5 Å
========================= =================================================================

CIF text has more checks that only the text can show, because pymatgen silently drops or
misreads such sites (``cell_parameters_problem``, ``atom_site_problem``): a cell length ≤ 0 or
an angle outside (0°, 180°); an ``_atom_site`` symbol that names no element exactly (``123``,
``Xx``, ``Uuo``, which pymatgen reads as U) or is missing (``?``, ``.``); a missing coordinate
(pymatgen reads ``.`` as 0); an occupancy that is missing or not a number in (0, 1]. After
parsing, the elements of the structure must be those the rows name (``parsed_elements_problem``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from screening.errors import InvalidStructureError

# The graph radius of every model the project ships (screening.graphs.DEFAULT_RADIUS); kept here
# as a number because io/ sits above graphs in the import order.
GRAPH_RADIUS = 8.0  # Å


@dataclass(frozen=True)
class StructureLimits:
    """Thresholds of :func:`validate_structure` (lengths in Å, angles in degrees)."""

    min_distance: float = 0.5
    max_sites: int = 500
    min_angle: float = 5.0
    max_angle: float = 175.0
    min_volume: float = 1e-3
    radius: float = GRAPH_RADIUS
    max_neighbours_per_site: int = 2000


DEFAULT_LIMITS = StructureLimits()
_OCC_TOLERANCE = 1e-6


def lattice_problem(matrix: np.ndarray, min_volume: float = DEFAULT_LIMITS.min_volume) -> str | None:
    """Non-finite entries or a flat (or left-handed to zero) cell."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        return "lattice: cell vectors are not finite numbers"
    volume = abs(float(np.linalg.det(matrix)))
    if not volume > min_volume:
        return f"lattice: cell volume {volume:.3g} Å³ is not positive (minimum {min_volume:g} Å³)"
    return None


def cell_angles(matrix: np.ndarray) -> tuple[float, float, float]:
    """(α, β, γ) in degrees of a finite 3×3 lattice matrix (rows a, b, c)."""
    a, b, c = np.asarray(matrix, dtype=np.float64)

    def angle(u: np.ndarray, v: np.ndarray) -> float:
        cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
        return math.degrees(math.acos(max(-1.0, min(1.0, cos))))

    return angle(b, c), angle(a, c), angle(a, b)


def angles_problem(angles: Sequence[float], low: float, high: float) -> str | None:
    """Any cell angle outside [low, high] degrees (a 0° angle is a flat cell, not a crystal)."""
    names = ("alpha", "beta", "gamma")
    for name, value in zip(names, angles):
        if not (math.isfinite(value) and low <= value <= high):
            return f"angles: {name} = {value:.4g}° is outside [{low:g}°, {high:g}°]"
    return None


def coordinates_problem(frac_coords: np.ndarray) -> str | None:
    frac = np.asarray(frac_coords, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(frac).all(axis=1)) if frac.size else np.zeros(0, int)
    if len(bad):
        return f"coordinates: site {int(bad[0])} has a non-finite coordinate {frac[bad[0]].tolist()}"
    return None


def occupancy_problem(site_species: Sequence[Mapping[Any, float]]) -> str | None:
    """Species amounts per site: each finite and in (0, 1], a site's total at most 1, no empty site.

    Partial occupancy (0 < total < 1, or several species) is not a problem here: it is disorder,
    which graph building refuses with its own message.
    """
    for k, species in enumerate(site_species):
        if len(species) == 0:
            return f"occupancy: site {k} holds no species (an occupancy of 0 or NaN)"
        total = 0.0
        for sp, amount in species.items():
            amount = float(amount)
            if not (math.isfinite(amount) and 0.0 < amount <= 1.0 + _OCC_TOLERANCE):
                return f"occupancy: site {k} has {sp} at occupancy {amount:g}; must be in (0, 1]"
            total += amount
        if total > 1.0 + _OCC_TOLERANCE:
            return f"occupancy: site {k} totals {total:g} > 1"
    return None


def element_problem(site_species: Sequence[Mapping[Any, float]]) -> str | None:
    """A species that is no element of the periodic table (pymatgen's dummy species, e.g. ``Xx``)."""
    from pymatgen.core.periodic_table import DummySpecies, Element, Species

    for k, species in enumerate(site_species):
        for sp in species:
            if isinstance(sp, DummySpecies) or not isinstance(sp, (Element, Species)):
                return f"element: site {k} has {str(sp)!r}, which is not a chemical element"
    return None


def expected_neighbours(n_sites: int, volume: float, radius: float) -> float:
    """Mean neighbours per site within ``radius`` Å at the cell's atom density (n / volume)."""
    return n_sites * (4.0 / 3.0) * math.pi * radius**3 / volume


def neighbour_budget_problem(n_sites: int, volume: float, radius: float, max_per_site: int) -> str | None:
    """Refuse cells whose graph would be huge, from the volume alone (no search is run)."""
    expected = expected_neighbours(n_sites, volume, radius)
    if expected > max_per_site:
        return (
            f"neighbour_budget: ~{expected:.3g} neighbours per site expected within {radius:g} Å "
            f"({n_sites} sites in {volume:.3g} Å³); the limit is {max_per_site}"
        )
    return None


def min_distance_problem(structure: Any, min_distance: float) -> str | None:
    """Two sites (or a site and its own periodic image) closer than ``min_distance`` Å.

    Only call after :func:`neighbour_budget_problem`: the search is bounded by the density.
    """
    centre, point, images, dist = structure.get_neighbor_list(r=min_distance, exclude_self=False)
    is_self = (centre == point) & np.all(np.asarray(images).reshape(len(dist), 3) == 0, axis=1)
    return pair_distance_problem(centre[~is_self], point[~is_self], dist[~is_self], min_distance)


def pair_distance_problem(
    centre: np.ndarray, point: np.ndarray, distance: np.ndarray, min_distance: float
) -> str | None:
    """The ``min_distance`` check on a pair list that holds every pair (periodic images included,
    each site's zero-distance pair with itself excluded) up to at least ``min_distance``: the
    graph's own neighbour list serves, so graph building needs no second neighbour search."""
    if len(distance) == 0:
        return None
    k = int(np.argmin(distance))
    if not distance[k] < min_distance:
        return None
    i, j = int(centre[k]), int(point[k])
    what = f"site {i} and its own periodic image are" if i == j else f"sites {min(i, j)} and {max(i, j)} are"
    return f"min_distance: {what} {float(distance[k]):.3f} Å apart (minimum {min_distance:g} Å)"


def structure_problem(structure: Any, limits: StructureLimits = DEFAULT_LIMITS) -> str | None:
    """The first failed check for a pymatgen ``Structure``, or None when it may be embedded."""
    matrix = structure.lattice.matrix
    problem = lattice_problem(matrix, limits.min_volume)
    if problem is None:
        problem = angles_problem(cell_angles(matrix), limits.min_angle, limits.max_angle)
    if problem is None:
        problem = coordinates_problem(structure.frac_coords)
    if problem is not None:
        return problem
    species = [site.species for site in structure]
    problem = occupancy_problem(species) or element_problem(species)
    if problem is not None:
        return problem
    n_sites = len(structure)
    if n_sites > limits.max_sites:
        return f"max_sites: {n_sites} sites; the limit is {limits.max_sites}"
    volume = abs(float(np.linalg.det(matrix)))
    problem = neighbour_budget_problem(n_sites, volume, limits.radius, limits.max_neighbours_per_site)
    if problem is not None:
        return problem
    if limits.min_distance <= 0:  # off, or left to graph building (pair_distance_problem)
        return None
    return min_distance_problem(structure, limits.min_distance)


def validate_structure(
    structure: Any, record_id: str, source: str | None = None, limits: StructureLimits = DEFAULT_LIMITS
) -> None:
    """Raise :class:`InvalidStructureError` (record id, source, named reason) for a structure that
    must not be embedded; return quietly otherwise."""
    problem = structure_problem(structure, limits)
    if problem is not None:
        raise InvalidStructureError(record_id, problem, source)


# --- CIF atom-site rows (what pymatgen would drop or misread without a word) ----------------

_SPECIAL_SYMBOLS = re.compile("Hw|Ow|Wat|wat|OH|OH2|NO3")  # water and groups pymatgen maps itself
_UNCERTAINTY = re.compile(r"\(\d+\)$")
_LEADING_LETTERS = re.compile(r"[A-Za-z]+")
#: CIF's two placeholders: ``?`` (unknown) and ``.`` (inapplicable). pymatgen reads a ``.``
#: coordinate as 0, drops a site whose occupancy or type symbol is ``.``, and so on.
MISSING_VALUES = frozenset({"?", "."})
_COORDINATE_KEYS = tuple(f"_atom_site_{kind}_{axis}" for kind in ("fract", "Cartn") for axis in "xyz")


def cif_symbol_element(symbol: str) -> str | None:
    """The element a CIF atom-site symbol or label names, read strictly, or None.

    The symbol's leading letters must be an element symbol exactly (``Fe2+`` -> Fe, ``O1`` -> O,
    ``na`` -> Na); pymatgen instead falls back to the first letter, so ``Uuo`` (a placeholder for
    element 118) became uranium and ``Ob`` oxygen. pymatgen's own water and group symbols
    (``Ow``, ``Hw``, ``OH`` ...) map to the element it reads them as ("" for ``OH``: no site).
    """
    from pymatgen.core.periodic_table import Element

    symbol = symbol.strip()
    special = _SPECIAL_SYMBOLS.match(symbol)
    if special:
        return {"Hw": "H", "Ow": "O", "Wat": "O", "wat": "O", "OH": "", "OH2": "", "NO3": "N"}[special.group()]
    letters = _LEADING_LETTERS.match(symbol)
    if letters is None:
        return None
    name = letters.group().title()
    if not Element.is_valid_symbol(name):
        return None
    return {"D": "H", "T": "H"}.get(name, name)  # pymatgen reads the hydrogen isotopes as H


def _column(block: Mapping[str, Any], key: str) -> list[str] | None:
    values = block.get(key)
    if values is None:
        return None
    return [str(v) for v in ([values] if isinstance(values, str) else values)]


def _site_name(labels: list[str] | None, k: int) -> str:
    return f"site {labels[k]!r}" if labels and k < len(labels) else f"site row {k + 1}"


def cell_parameters_problem(block: Mapping[str, Any]) -> str | None:
    """Cell lengths that are not finite and positive, angles outside (0°, 180°) or a missing
    (``?`` / ``.``) cell value, in one CIF data block; pymatgen otherwise answers only "no
    structures" for them."""
    checks = (
        (("_cell_length_a", "_cell_length_b", "_cell_length_c"), lambda v: v > 0,
         "cell lengths must be finite and positive (Å)"),
        (("_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"), lambda v: 0 < v < 180,
         "cell angles must lie strictly between 0° and 180°"),
    )  # fmt: skip
    for keys, sane, rule in checks:
        for key in keys:
            raw = block.get(key)
            if raw is None or not isinstance(raw, str):
                continue
            if raw.strip() in MISSING_VALUES:
                return f"lattice: {key} = {raw!r}, a missing value; {rule}"
            try:
                value = float(_UNCERTAINTY.sub("", raw.strip()))
            except ValueError:
                continue  # not a number: pymatgen's error says so
            if not (math.isfinite(value) and sane(value)):
                return f"lattice: {key} = {raw!r}; {rule}"
    return None


def atom_site_problem(block: Mapping[str, Any]) -> str | None:
    """Bad ``_atom_site`` rows of one parsed CIF data block (``CifParser.as_dict()`` values).

    pymatgen skips a row whose symbol names no element and a row whose occupancy is 0, negative,
    NaN or ``.``, reads a ``.`` coordinate as 0 and ``Uuo`` as uranium, and so would change the
    structure silently (``Cl`` for NaCl); each is an error here, naming the site. The type symbol
    decides the element when the block has one (as in pymatgen), else the label.
    """
    labels = _column(block, "_atom_site_label")
    types = _column(block, "_atom_site_type_symbol")
    symbols, what = (types, "type symbol") if types is not None else (labels, "label")
    for k, symbol in enumerate(symbols or []):
        where = _site_name(labels, k)
        if symbol.strip() in MISSING_VALUES:
            return f"element: {where} has {what} {symbol!r}, a missing value; give the element"
        if cif_symbol_element(symbol) is None:
            return f"element: {where} has {what} {symbol!r}, which names no chemical element"
    for key in _COORDINATE_KEYS:
        for k, raw in enumerate(_column(block, key) or []):
            if raw.strip() in MISSING_VALUES:
                return f"coordinates: {_site_name(labels, k)} has {key} {raw!r}, a missing value (pymatgen reads 0)"
    for k, raw in enumerate(_column(block, "_atom_site_occupancy") or []):
        text = _UNCERTAINTY.sub("", raw.strip())
        where = _site_name(labels, k)
        if text in MISSING_VALUES:
            return f"occupancy: {where} has occupancy {raw!r}, a missing value; give a number in (0, 1]"
        try:
            value = float(text)
        except ValueError:
            return f"occupancy: {where} has occupancy {raw!r}, which is not a number"
        if not (math.isfinite(value) and 0.0 < value <= 1.0 + _OCC_TOLERANCE):
            return f"occupancy: {where} has occupancy {raw!r}; must be in (0, 1]"
    return None


def named_elements(block: Mapping[str, Any]) -> set[str] | None:
    """The elements the ``_atom_site`` rows of one CIF data block name (:func:`cif_symbol_element`);
    None when a row uses one of pymatgen's group symbols (``OH``, ``NO3`` ...), whose atoms
    pymatgen adds itself, so the text alone cannot say which elements to expect."""
    types = _column(block, "_atom_site_type_symbol")
    symbols = types if types is not None else _column(block, "_atom_site_label")
    if any(_SPECIAL_SYMBOLS.match(s.strip()) for s in symbols or []):
        return None
    return {e for e in (cif_symbol_element(s) for s in symbols or []) if e}


def parsed_elements_problem(named: set[str], parsed: set[str]) -> str | None:
    """Elements the CIF text names that the parsed structure lacks, or holds without the text
    naming them: the last guard against a site pymatgen dropped or renamed on its own."""
    lost, extra = sorted(named - parsed), sorted(parsed - named)
    if lost:
        return (
            f"element: the CIF's atom sites name {', '.join(sorted(named))} but the parsed structure has no "
            f"{', '.join(lost)} (a site was dropped while reading)"
        )
    if extra:
        return f"element: the parsed structure holds {', '.join(extra)}, which no atom site of the CIF names"
    return None


__all__ = [
    "DEFAULT_LIMITS",
    "GRAPH_RADIUS",
    "StructureLimits",
    "angles_problem",
    "atom_site_problem",
    "cell_angles",
    "MISSING_VALUES",
    "cell_parameters_problem",
    "cif_symbol_element",
    "coordinates_problem",
    "element_problem",
    "expected_neighbours",
    "lattice_problem",
    "min_distance_problem",
    "pair_distance_problem",
    "named_elements",
    "neighbour_budget_problem",
    "occupancy_problem",
    "parsed_elements_problem",
    "structure_problem",
    "validate_structure",
]
