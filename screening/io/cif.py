"""CIF text to pymatgen ``Structure``: a fast path for plain P1 CIFs, pymatgen for the rest.

Why: pymatgen's ``CifParser`` is general (symmetry expansion, disorder, magCIF, Pauling-file
fixes) and pays for it on every file; on the Materials Project CIFs this project featurises it
dominates the cost of reading. Almost all of those files are the simplest kind of CIF: one data
block, only the identity operation ``x, y, z``, fractional coordinates, all occupancies 1. For
exactly that case :func:`parse_p1_cif` reads the cell and the ``_atom_site`` loop directly and
builds the same ``Structure`` that ``Structure.from_str(text, fmt="cif")`` builds. Whenever a CIF
steps outside the case it can prove equal, it returns ``None`` and :func:`structure_from_cif`
hands the text to pymatgen unchanged.

"The same structure" means what pymatgen does on that path, reproduced step by step:

* cell lengths (Å) and angles (degrees) go through ``Lattice.from_parameters``;
* coordinates within 1e-4 (relative) of 1/3 or 2/3 are set to exactly 1/3, 2/3 (pymatgen's
  "fractional coordinates rounded to ideal values");
* coordinates are wrapped into [0, 1) with ``x - floor(x)``, as pymatgen does when it applies the
  identity operation;
* sites are ordered by (Pauling electronegativity, symbol), stably, as pymatgen's
  ``get_sorted_structure`` leaves them; CIF labels are kept as site labels.

Cases the fast path declines (and pymatgen handles): symmetry operations other than the identity,
any occupancy other than 1 (disorder is never rounded away: pymatgen returns a disordered
structure, which graph building rejects with a reason), two sites closer than pymatgen's 1e-4
merge tolerance, several data blocks, oxidation-state or magnetic data, uncertainties such as
``0.25(1)``, multi-line text fields, non-ASCII text, element symbols without an electronegativity
(noble gases He/Ne/Ar, transactinides) whose sort order pymatgen leaves to comparison quirks.
``scripts/check_cif_parser.py`` verifies the equality on every CIF of the MP reference set.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import numpy as np
from pymatgen.core import Composition, Element, Lattice, Structure
from pymatgen.io.cif import CifParser

from screening.errors import InvalidStructureError, StructureReadError
from screening.io.validate import (
    atom_site_problem,
    cell_parameters_problem,
    named_elements,
    parsed_elements_problem,
)

# pymatgen's tokeniser for one CIF line: bare words, or single/double quoted strings.
_TOKEN = re.compile(r"""([^'"\s][\S]*)|'(.*?)'(?!\S)|"(.*?)"(?!\S)""")
_DATA_BLOCK = re.compile(r"^\s*data_", flags=re.MULTILINE)
_DATA_HEADER = re.compile(r"^[ \t]*data_(\S*)", flags=re.MULTILINE)

_CELL_KEYS = (
    "_cell_length_a",
    "_cell_length_b",
    "_cell_length_c",
    "_cell_angle_alpha",
    "_cell_angle_beta",
    "_cell_angle_gamma",
)
# The order in which pymatgen looks for explicit symmetry operations; it uses the first one present.
_SYMOP_KEYS = (
    "_symmetry_equiv_pos_as_xyz",
    "_symmetry_equiv_pos_as_xyz_",
    "_space_group_symop_operation_xyz",
    "_space_group_symop_operation_xyz_",
)
_IDENTITY_OPS = frozenset({"x,y,z", "+x,+y,+z"})
_MAGCIF_MARKERS = ("_space_group_magn", "_atom_site_moment", "_space_group_symop_magn")
_SITE_KEYS = (
    "_atom_site_label",
    "_atom_site_type_symbol",
    "_atom_site_fract_x",
    "_atom_site_fract_y",
    "_atom_site_fract_z",
)
_OCCUPANCY_KEY = "_atom_site_occupancy"

# pymatgen's CifParser defaults.
_FRAC_TOLERANCE = 1e-4  # relative closeness to 1/3, 2/3 that triggers rounding
_SITE_TOLERANCE = 1e-4  # fractional distance under which two sites merge into one (disorder)
# The fast path declines anything within twice pymatgen's merge tolerance, so it never has to
# decide a borderline merge itself.
_MERGE_GUARD = 2 * _SITE_TOLERANCE
_MIN_THICKNESS = 0.01  # Å; pymatgen refuses thinner cells, the fast path leaves them to it


def _element_table() -> dict[str, tuple[Composition, int]]:
    """Element symbol -> (site species, rank in pymatgen's site order) for elements with a finite
    Pauling electronegativity. The rank sorts like ``(X, symbol)``, the key pymatgen's
    ``get_sorted_structure`` compares sites of single elements by. The species is the immutable
    one-element ``Composition`` a fully occupied site holds, built once and shared, so building
    a structure does not rebuild it per site."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns for elements without X
        usable = [el for el in Element if not math.isnan(el.X)]
    usable.sort(key=lambda el: (el.X, el.symbol))
    return {el.symbol: (Composition({el: 1.0}), rank) for rank, el in enumerate(usable)}


_ELEMENTS = _element_table()


def _single_token(text: str) -> str | None:
    """The one CIF value on ``text`` (quotes removed), or None if there is not exactly one."""
    tokens = _TOKEN.findall(text)
    if len(tokens) != 1:
        return None
    return "".join(tokens[0])


def _scan_p1_block(text: str) -> tuple[dict[str, str], dict[str, list[str]]] | None:
    """Split a simple single-block CIF into scalar items and loop columns.

    Conservative on purpose: it returns None (meaning "let pymatgen read it") on anything whose
    tokenisation it does not reproduce exactly, such as multi-line text fields, values split over
    lines, comments after data, repeated keys or ragged loops.
    """
    if not text.isascii() or len(_DATA_BLOCK.findall(text)) != 1:
        return None
    scalars: dict[str, str] = {}
    columns: dict[str, list[str]] = {}
    seen: set[str] = set()
    lines = text.splitlines()
    n_lines = len(lines)
    i = 0
    in_block = False
    while i < n_lines:
        line = lines[i].strip()
        i += 1
        if not line or line[0] == "#":
            continue
        if "#" in line or line[0] == ";":
            return None
        if line.startswith("data_"):
            in_block = True
            continue
        if not in_block:
            return None
        if line[0] == "_":
            parts = line.split(None, 1)
            if parts[0] in seen or parts[0] == "_eof":  # pymatgen stops reading at _eof
                return None
            if len(parts) == 1:  # pymatgen writes long values on the next line
                if i >= n_lines:
                    return None
                nxt = lines[i].strip()
                i += 1
                if not nxt or nxt.startswith(("_", ";", "#", "loop_", "data_")) or "#" in nxt:
                    return None
                parts.append(nxt)
            value = _single_token(parts[1])
            if value is None:
                return None
            seen.add(parts[0])
            scalars[parts[0]] = value
            continue
        if line != "loop_":
            return None
        names: list[str] = []
        while i < n_lines:
            head = lines[i].strip()
            if not head.startswith("_"):
                break
            if " " in head or "\t" in head or head in seen:
                return None
            seen.add(head)
            names.append(head)
            i += 1
        if not names:
            return None
        rows: list[str] = []
        while i < n_lines:
            raw = lines[i].strip()
            if raw.startswith(("_", "loop_", "data_")):
                break
            i += 1
            if raw and raw[0] != "#":
                rows.append(raw)
        block = "\n".join(rows)
        # comments after data, text fields, and tokens pymatgen would read as keys or loop starts
        if "#" in block or block.startswith(";") or "\n;" in block or "loop_" in block:
            return None
        if " _" in block or "\t_" in block:
            return None
        if names[0].startswith("_atom_site_"):
            if "'" in block or '"' in block:
                return None
            values = block.split()
        else:
            values = ["".join(t) for t in _TOKEN.findall(block)]
        n_cols = len(names)
        if not values or len(values) % n_cols:
            return None
        for k, name in enumerate(names):
            columns[name] = values[k::n_cols]
    return scalars, columns


def _is_identity_only(scalars: dict[str, str], columns: dict[str, list[str]]) -> bool:
    """True when the first symmetry-operation field pymatgen would use lists only x, y, z."""
    for key in _SYMOP_KEYS:
        if key in scalars:
            return False  # a one-line op: pymatgen takes a different (warning) branch
        ops = columns.get(key)
        if ops:
            return len(ops) == 1 and ops[0].replace(" ", "").lower() in _IDENTITY_OPS
    return False  # no explicit ops: pymatgen falls back to the space-group symbol


def _round_ideal_fractions(frac: np.ndarray) -> np.ndarray:
    """Set coordinates within pymatgen's tolerance of 1/3 or 2/3 to exactly 1/3 or 2/3."""
    out = frac.copy()
    for ideal in (1 / 3, 2 / 3):
        out[np.abs(frac / ideal - 1.0) <= _FRAC_TOLERANCE] = ideal
    return out


def _has_near_duplicates(frac: np.ndarray, tol: float) -> bool:
    """True if two sites lie within ``tol`` of each other in every fractional coordinate (PBC)."""
    n = frac.shape[0]
    if n < 2:
        return False
    diff = frac[:, None, :] - frac[None, :, :]
    diff -= np.round(diff)
    close = np.all(np.abs(diff) < tol, axis=-1)
    close[np.diag_indices(n)] = False
    return bool(close.any())


def parse_p1_cif(text: str) -> Structure | None:
    """Read a plain P1 CIF directly; None when the CIF is outside the fast path's case.

    The returned structure equals ``Structure.from_str(text, fmt="cif")`` (same species order,
    lattice matrix in Å and fractional coordinates). See the module docstring for the case.
    """
    scanned = _scan_p1_block(text)
    if scanned is None:
        return None
    scalars, columns = scanned
    keys = "\n".join((*scalars, *columns))
    if "_atom_type_oxidation_number" in keys or any(marker in keys for marker in _MAGCIF_MARKERS):
        return None
    if not _is_identity_only(scalars, columns):
        return None
    try:
        cell = [float(scalars[k]) for k in _CELL_KEYS]
    except (KeyError, ValueError):
        return None
    if not all(math.isfinite(v) for v in cell) or min(cell[:3]) <= 0 or not all(0 < v < 180 for v in cell[3:]):
        return None  # pymatgen's path names the bad cell parameter (cell_parameters_problem)
    site_cols = [columns[k] for k in _SITE_KEYS if k in columns]
    if len(site_cols) != len(_SITE_KEYS):
        return None
    labels, symbols, xs, ys, zs = site_cols
    occupancies = columns.get(_OCCUPANCY_KEY)
    n_sites = len(labels)
    if any(len(col) != n_sites for col in (symbols, xs, ys, zs)):
        return None  # the site fields are split over several loops
    if occupancies is not None:
        if len(occupancies) != n_sites:
            return None
        try:
            if any(float(o) != 1.0 for o in occupancies):
                return None  # partial (or odd) occupancy: pymatgen builds the disordered structure
        except ValueError:
            return None
    try:
        elements = [_ELEMENTS[s] for s in symbols]
        frac = np.fromiter(map(float, xs + ys + zs), dtype=np.float64, count=3 * n_sites).reshape(3, n_sites).T.copy()
    except (KeyError, ValueError):
        return None
    if not np.isfinite(frac).all():
        return None
    frac = _round_ideal_fractions(frac)
    if _has_near_duplicates(frac, _MERGE_GUARD):
        return None
    lattice = Lattice.from_parameters(*cell)
    matrix = lattice.matrix
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix)) < 1e-12:
        return None
    thickness = 1.0 / np.linalg.norm(np.linalg.inv(matrix).T, axis=1)
    if (thickness < 2 * _MIN_THICKNESS).any():
        return None
    frac = frac - np.floor(frac)
    order = np.argsort(np.fromiter((rank for _, rank in elements), dtype=np.int64, count=n_sites), kind="stable")
    return Structure(
        lattice,
        [elements[k][0] for k in order],
        frac[order],
        labels=[labels[k] for k in order],
    )


def split_data_blocks(text: str) -> list[tuple[str, str]]:
    """(block name, block text) for every ``data_`` block of a CIF, in file order.

    Why: pymatgen reads a multi-block file whole and keeps only the first structure, and its
    cost grows faster than the file (a 10,000-block file took 18 minutes for one record). The
    boundaries are found in one pass over the text, so splitting is linear in the file size and
    every block can become its own record. Text before the first block (comments) is dropped.
    """
    starts = [(m.start(), m.group(1)) for m in _DATA_HEADER.finditer(text)]
    ends = [start for start, _ in starts[1:]] + [len(text)]
    return [(name, text[start:end]) for (start, name), end in zip(starts, ends)]


def parse_cif_with_pymatgen(text: str) -> Structure:
    """pymatgen's general reader, exactly as ``Structure.from_str(text, fmt="cif")`` calls it.

    Its warnings (rounded coordinates, composition checks) are silenced: they are routine for
    database CIFs, and real failures surface as exceptions. Before parsing, the cell and the
    ``_atom_site`` rows are checked (:func:`screening.io.validate.atom_site_problem`): pymatgen
    drops a row with an unknown symbol or an occupancy of 0/−1/NaN/``.`` without a word, reads
    ``Uuo`` as U and a ``.`` coordinate as 0, so such a CIF raises :class:`InvalidStructureError`
    instead; after parsing, the structure's elements must be the ones the rows name.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = CifParser.from_str(text)
        blocks = list(parser.as_dict().values())
        for block in blocks:
            problem = cell_parameters_problem(block) or atom_site_problem(block)
            if problem is not None:
                raise InvalidStructureError("?", problem)
        parsed = parser.parse_structures(primitive=False)[0]
    named = named_elements(blocks[0]) if len(blocks) == 1 else None
    if named is not None:
        problem = parsed_elements_problem(named, {el.symbol for el in parsed.composition.elements})
        if problem is not None:
            raise InvalidStructureError("?", problem)
    return Structure.from_sites(parsed, properties=parsed.properties)


def structure_from_cif(text: str, record_id: str = "?", source: str | None = None) -> Structure:
    """Parse CIF text into a ``Structure``, fast for plain P1 CIFs, pymatgen otherwise.

    Disorder is kept, not rounded: a CIF with partial occupancies gives a disordered structure
    (``structure.is_ordered`` is False). Raises :class:`StructureReadError` naming the record
    when the text is not a readable CIF.
    """
    if not isinstance(text, str) or not text.strip():
        raise StructureReadError(record_id, "empty CIF text", source)
    n_blocks = len(_DATA_HEADER.findall(text))
    if n_blocks > 1:
        raise StructureReadError(
            record_id,
            f"{n_blocks} data blocks in one record (pymatgen would keep only the first); give one block per "
            "record (a .cif file or a folder of them is split into file#block records automatically)",
            source,
        )
    try:
        structure = parse_p1_cif(text)
    except Exception:  # the fast path only declines; anything unexpected is pymatgen's to judge
        structure = None
    if structure is not None:
        return structure
    try:
        return parse_cif_with_pymatgen(text)
    except InvalidStructureError as exc:
        raise InvalidStructureError(record_id, exc.reason, source) from None
    except Exception as exc:  # pymatgen raises ValueError, KeyError, ZeroDivisionError, ...
        reason = str(exc).strip().splitlines()
        detail = reason[-1] if reason else type(exc).__name__
        raise StructureReadError(record_id, f"unreadable CIF ({type(exc).__name__}: {detail})", source) from exc


def describe_disorder(structure: Structure, limit: int = 3) -> str | None:
    """A short human description of the partially occupied sites, or None if fully ordered."""
    bad: list[Any] = [(i, site.species) for i, site in enumerate(structure) if not site.is_ordered]
    if not bad:
        return None
    shown = ", ".join(f"site {i} ({species.formula})" for i, species in bad[:limit])
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"partial occupancy at {len(bad)} site(s): {shown}{more}"
