"""Lattice and symmetry targets derived from structures, shared by every structure loader.

The lattice columns are computed from stacked ``(n, 3, 3)`` cell matrices in one vectorised
pass; only the space group needs a per-structure spglib call (:func:`symmetry_of`), which the
loaders run in parallel chunks and reuse from the source file when it already holds one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from skmat.exceptions import InvalidInputError

#: symprec of spglib used for every space group in skmat's datasets. MP (and hence the
#: ``spacegroup.number`` column of MP-20) uses 0.1 Å, which is why it is the default here.
SYMPREC = 0.1

LATTICE_COLUMNS = ["a", "b", "c", "alpha", "beta", "gamma"]
SCALED_COLUMNS = ["a_scaled", "b_scaled", "c_scaled"]
DERIVED_COLUMNS = [*LATTICE_COLUMNS, *SCALED_COLUMNS, "spacegroup", "crystal_system"]

#: ``target=`` shortcuts. "lattice" is the MP-20 literature target (CDVAE, UniMat): lengths
#: divided by the cube root of the number of atoms, which removes most of the size effect.
TARGET_SHORTCUTS: dict[str, list[str] | str] = {
    "lattice": SCALED_COLUMNS,
    "lattice_raw": ["a", "b", "c"],
    "angles": ["alpha", "beta", "gamma"],
    "crystal_system": "crystal_system",
}

CRYSTAL_SYSTEMS = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)
# first space-group number of each crystal system (International Tables), same cuts as
# pymatgen's SpacegroupAnalyzer.get_crystal_system
_SYSTEM_STARTS = np.array([1, 3, 16, 75, 143, 168, 195])


def lattice_parameters(matrices: np.ndarray) -> pd.DataFrame:
    """Lengths (Å) and angles (degrees) of stacked cells, rows of each matrix = lattice vectors.

    Examples
    --------
    >>> import numpy as np
    >>> lattice_parameters(np.diag([3.0, 4.0, 5.0])[None]).round(6).values.tolist()
    [[3.0, 4.0, 5.0, 90.0, 90.0, 90.0]]
    """
    matrices = np.asarray(matrices, dtype=float).reshape(-1, 3, 3)
    lengths = np.linalg.norm(matrices, axis=2)
    angles = np.empty_like(lengths)
    # angle alpha is between b and c, beta between a and c, gamma between a and b
    for out, (i, j) in enumerate([(1, 2), (0, 2), (0, 1)]):
        cosine = np.einsum("nk,nk->n", matrices[:, i], matrices[:, j]) / (lengths[:, i] * lengths[:, j])
        angles[:, out] = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return pd.DataFrame(np.hstack([lengths, angles]), columns=LATTICE_COLUMNS)


def scaled_lengths(lengths: np.ndarray, num_sites: np.ndarray) -> pd.DataFrame:
    """CDVAE's scaled lattice lengths ``(a, b, c) / N**(1/3)`` with N atoms in the cell.

    Examples
    --------
    >>> scaled_lengths([[4.0, 4.0, 8.0]], [8]).values.tolist()
    [[2.0, 2.0, 4.0]]
    """
    lengths = np.asarray(lengths, dtype=float).reshape(-1, 3)
    cube_root = np.cbrt(np.asarray(num_sites, dtype=float)).reshape(-1, 1)
    return pd.DataFrame(lengths / cube_root, columns=SCALED_COLUMNS)


def crystal_system_from_spacegroup(numbers: Sequence[int] | np.ndarray) -> np.ndarray:
    """Crystal system names (pymatgen's lower-case spelling) of space-group numbers 1-230.

    Examples
    --------
    >>> crystal_system_from_spacegroup([1, 14, 62, 139, 166, 194, 225]).tolist()
    ['triclinic', 'monoclinic', 'orthorhombic', 'tetragonal', 'trigonal', 'hexagonal', 'cubic']
    """
    numbers = np.asarray(numbers)
    bad = (numbers < 1) | (numbers > 230)
    if bad.any():
        raise InvalidInputError(
            f"space-group numbers must be 1-230, got {numbers[bad][:5].tolist()}", view="spacegroup"
        )
    index = np.searchsorted(_SYSTEM_STARTS, numbers, side="right") - 1
    return np.asarray(CRYSTAL_SYSTEMS, dtype=object)[index]


def symmetry_of(structure, *, conventional: bool = False, symprec: float = SYMPREC) -> tuple[int, Any, int]:
    """Space-group number of *structure* and, if asked, its conventional standard cell.

    Returns ``(number, cell_matrix, n_sites)``; the matrix and count are ``None`` unless
    *conventional*. Raises :class:`ValueError` when spglib finds no symmetry dataset.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        with warnings.catch_warnings():
            # spglib warns about its own error-handling API on every call: thousands of lines
            warnings.simplefilter("ignore", DeprecationWarning)
            analyzer = SpacegroupAnalyzer(structure, symprec=symprec)
            number = int(analyzer.get_space_group_number())
            if not conventional:
                return number, None, None
            cell = analyzer.get_conventional_standard_structure()
    except Exception as exc:  # spglib failures surface as several exception types
        raise ValueError(f"symmetry analysis failed (symprec={symprec}): {exc}") from exc
    return number, cell.lattice.matrix.copy(), len(cell)


def derived_columns(
    matrices: np.ndarray, num_sites: np.ndarray, spacegroups: np.ndarray
) -> pd.DataFrame:
    """All derived target columns: lattice parameters, scaled lengths, space group, crystal system.

    *matrices* and *num_sites* describe the cell the lattice columns refer to (the cell as
    given, or the conventional one); the scaled lengths use the atom count of that same cell.
    """
    params = lattice_parameters(matrices)
    scaled = scaled_lengths(params[["a", "b", "c"]].to_numpy(), num_sites)
    spacegroups = np.asarray(spacegroups, dtype=int)
    symmetry = pd.DataFrame(
        {"spacegroup": spacegroups, "crystal_system": crystal_system_from_spacegroup(spacegroups)}
    )
    return pd.concat([params, scaled, symmetry], axis=1)


def resolve_target(target: str | Sequence[str], columns: Sequence[str]) -> str | list[str]:
    """Turn ``target=`` (a column, a list of columns or a shortcut) into column name(s).

    Examples
    --------
    >>> resolve_target("lattice", ["a_scaled", "b_scaled", "c_scaled"])
    ['a_scaled', 'b_scaled', 'c_scaled']
    """
    if isinstance(target, str):
        resolved = TARGET_SHORTCUTS.get(target, target) if target not in columns else target
    else:
        resolved = list(target)
        if not resolved:
            raise InvalidInputError("target is an empty list", view="target")
    names = [resolved] if isinstance(resolved, str) else resolved
    missing = [name for name in names if name not in columns]
    if missing:
        raise InvalidInputError(
            f"unknown target column(s) {missing}; columns are {list(columns)} and shortcuts "
            f"{sorted(TARGET_SHORTCUTS)}",
            view="target",
        )
    return list(resolved) if not isinstance(resolved, str) else resolved
