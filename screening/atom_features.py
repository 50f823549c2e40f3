"""Element feature tables: the atom-level input of a CGCNN.

Two sources:

* :func:`load_atom_init` reads an original CGCNN ``atom_init.json`` (keys "1" … "100", 92-d
  k-hot vectors). Original checkpoints were trained on that table, so they need it; the file is
  the user's (CGCNN ships it next to its data), never bundled here.
* :func:`element_property_table` builds the project's own k-hot table from pymatgen's element
  data, with the same kind of blocks CGCNN describes (group, period, electronegativity, covalent
  radius, valence electrons, first ionisation energy, electron affinity, block, atomic volume).
  The project's own pretrained model is trained on this table and stores it with its weights,
  so its predictions do not drift if pymatgen's element data is revised.

Tables are dense arrays indexed by atomic number (row 0 unused), so the model looks atoms up
with one gather; an element without a row raises a clear error at graph time.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from screening.errors import ModelLoadError

MAX_Z = 100

# (name, number of bins, low, high, log-scale) for the continuous properties.
CONTINUOUS_BLOCKS: tuple[tuple[str, int, float, float, bool], ...] = (
    ("electronegativity", 10, 0.5, 4.0, False),  # Pauling
    ("covalent_radius", 10, 0.25, 2.5, False),  # Å
    ("first_ionization_energy", 10, 3.5, 25.0, True),  # eV
    ("electron_affinity", 10, -1.0, 3.7, False),  # eV
    ("atomic_volume", 10, 5.0, 120.0, True),  # cm^3/mol (molar volume of the element)
)
GROUP_WIDTH = 19  # column 0: lanthanides and actinides; 1..18: groups
PERIOD_WIDTH = 7
VALENCE_WIDTH = 12
BLOCKS = ("s", "p", "d", "f")


def load_atom_init(path: str | Path) -> np.ndarray:
    """Read an original CGCNN ``atom_init.json`` into a (MAX_Z + 1, width) float32 table.

    Rows of elements missing from the file are NaN, so using one is caught rather than
    silently fed zeros.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read atom_init.json ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: atom_init.json is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: atom_init.json must be an object of atomic number -> feature list")
    if not raw:
        raise ModelLoadError(f"{path}: atom_init.json lists no elements")
    rows: dict[int, np.ndarray] = {}
    for key, vec in raw.items():
        try:
            z = int(key)
        except ValueError:
            raise ModelLoadError(f"{path}: key {key!r} of atom_init.json is not an atomic number") from None
        try:
            rows[z] = np.asarray(vec, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise ModelLoadError(f"{path}: the features of element {key} are not numbers") from None
    widths = {len(v) for v in rows.values()}
    if len(widths) != 1:
        raise ModelLoadError(f"{path}: atom_init.json has rows of different lengths {sorted(widths)}")
    table = np.full((MAX_Z + 1, widths.pop()), np.nan, dtype=np.float32)
    for z, vec in rows.items():
        if 0 < z <= MAX_Z:
            table[z] = vec
    return table


def _one_hot_bin(value: float | None, n_bins: int, low: float, high: float, log: bool) -> np.ndarray:
    out = np.zeros(n_bins, dtype=np.float32)
    if value is None or not math.isfinite(value) or (log and value <= 0):
        return out  # unknown property: the block stays all zero, as in CGCNN's own table
    if log:
        value, low, high = math.log(value), math.log(low), math.log(high)
    frac = (value - low) / (high - low)
    out[min(n_bins - 1, max(0, int(frac * n_bins)))] = 1.0
    return out


def _element_properties(z: int) -> dict[str, float | int | str | None]:
    from pymatgen.core.periodic_table import Element

    el = Element.from_Z(z)

    def safe(fn):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = fn()
            return None if value is None else float(value)
        except Exception:  # pymatgen raises assorted errors for missing data
            return None

    group = el.group
    block = el.block
    if block == "f":
        valence = None
    elif block == "s":
        valence = group
    elif block == "p":
        valence = group - 10
    else:
        valence = group
    if z == 2:
        valence = 2
    return {
        "group": 0 if block == "f" else group,
        "period": el.row,
        "valence": valence,
        "block": block,
        "electronegativity": safe(lambda: el.X),
        "covalent_radius": safe(lambda: el.atomic_radius_calculated or el.atomic_radius),
        "first_ionization_energy": safe(lambda: el.ionization_energies[0]),
        "electron_affinity": safe(lambda: el.electron_affinity),
        "atomic_volume": safe(lambda: el.molar_volume),
    }


def element_feature_vector(z: int) -> np.ndarray:
    """The project's k-hot feature vector of element ``z`` (width :func:`element_feature_width`)."""
    props = _element_properties(z)
    parts = [np.zeros(GROUP_WIDTH, np.float32), np.zeros(PERIOD_WIDTH, np.float32)]
    group, period = props["group"], props["period"]
    assert isinstance(group, int) and isinstance(period, int), f"Z={z}: pymatgen gives integer group and period"
    parts[0][group] = 1.0
    parts[1][min(PERIOD_WIDTH, period) - 1] = 1.0
    for name, n_bins, low, high, log in CONTINUOUS_BLOCKS:
        value = props[name]
        assert value is None or isinstance(value, float), f"Z={z}: {name} comes through safe() as float or None"
        parts.append(_one_hot_bin(value, n_bins, low, high, log))
    valence = np.zeros(VALENCE_WIDTH, np.float32)
    if props["valence"] is not None and 1 <= int(props["valence"]) <= VALENCE_WIDTH:
        valence[int(props["valence"]) - 1] = 1.0
    parts.append(valence)
    block = np.zeros(len(BLOCKS), np.float32)
    if props["block"] in BLOCKS:
        block[BLOCKS.index(props["block"])] = 1.0
    parts.append(block)
    return np.concatenate(parts)


def element_feature_width() -> int:
    return GROUP_WIDTH + PERIOD_WIDTH + sum(b[1] for b in CONTINUOUS_BLOCKS) + VALENCE_WIDTH + len(BLOCKS)


def element_property_table(max_z: int = MAX_Z) -> np.ndarray:
    """The project's own (max_z + 1, width) atom-feature table; row 0 is NaN (no element 0)."""
    table = np.full((max_z + 1, element_feature_width()), np.nan, dtype=np.float32)
    for z in range(1, max_z + 1):
        table[z] = element_feature_vector(z)
    return table
