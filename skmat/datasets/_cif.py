"""A fast reader for the P1 CIFs pymatgen's ``CifWriter`` produces (all CDVAE datasets).

pymatgen's general ``CifParser`` spends ~2 ms per small structure (symmetry expansion, site
merging, occupancy bookkeeping); for thousands of P1 files that is most of a dataset's load
time. This reader accepts only the exact layout ``CifWriter`` writes without symmetry (one
``x, y, z`` operation, full occupancies, no oxidation states or magnetic moments) and builds
the same Structure ``CifParser`` would: lattice from the six parameters, coordinates wrapped
into [0, 1) after snapping near-1/3 and near-2/3 values as it does, sites sorted like ``get_sorted_structure``, CIF labels kept. Anything else, and
any doubt (unknown tag, coinciding sites, a very thin cell), returns ``None`` so that the
caller falls back to ``CifParser``.
"""

from __future__ import annotations

import warnings

import numpy as np

_CELL_TAGS = {
    "_cell_length_a": 0,
    "_cell_length_b": 1,
    "_cell_length_c": 2,
    "_cell_angle_alpha": 3,
    "_cell_angle_beta": 4,
    "_cell_angle_gamma": 5,
}
# scalar tags that carry nothing the structure needs (CifParser ignores them too)
_IGNORED_TAGS = {
    "_symmetry_Int_Tables_number",
    "_chemical_formula_structural",
    "_chemical_formula_sum",
    "_cell_volume",
    "_cell_formula_units_Z",
}
_SYMOP_HEADER = ("_symmetry_equiv_pos_site_id", "_symmetry_equiv_pos_as_xyz")
_ATOM_HEADER = (
    "_atom_site_type_symbol",
    "_atom_site_label",
    "_atom_site_symmetry_multiplicity",
    "_atom_site_fract_x",
    "_atom_site_fract_y",
    "_atom_site_fract_z",
    "_atom_site_occupancy",
)
_SITE_TOLERANCE = 1e-4  # CifParser's default: closer sites would be merged by it
_FRAC_TOLERANCE = 1e-4  # CifParser's frac_tolerance
_MIN_THICKNESS = 0.01  # Å, CifParser refuses thinner cells


def read_p1_cif(text: str):
    """Structure of a pymatgen-written P1 CIF, or ``None`` when *text* is anything else."""
    from pymatgen.core import Element, Lattice, Structure

    cell = [None] * 6
    space_group = None
    symops: list[str] = []
    rows: list[list[str]] = []
    header: list[str] = []
    in_loop = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("data_"):
            continue
        if line == "loop_":
            in_loop, header = True, []
            continue
        if line.startswith("_"):
            tag, _, value = line.partition(" ")
            value = value.strip()
            if in_loop and not value:
                if header and (tuple(header) in (_SYMOP_HEADER, _ATOM_HEADER)):
                    return None  # a loop header after rows: not CifWriter's layout
                header.append(tag)
                continue
            in_loop = False
            if tag in _CELL_TAGS:
                cell[_CELL_TAGS[tag]] = value
            elif tag == "_symmetry_space_group_name_H-M":
                space_group = value
            elif tag not in _IGNORED_TAGS:
                return None
            continue
        if not in_loop:
            return None
        if tuple(header) == _SYMOP_HEADER:
            symops.append(line)
        elif tuple(header) == _ATOM_HEADER:
            tokens = line.split()
            if len(tokens) != len(_ATOM_HEADER):
                return None
            rows.append(tokens)
        else:
            return None
    if space_group != "'P 1'" or symops != ["1  'x, y, z'"] or not rows or None in cell:
        return None
    try:
        params = [float(v) for v in cell]
        species = [Element(row[0]) for row in rows]
        occupancies = np.array([float(row[6]) for row in rows])
        frac = np.array([[float(v) for v in row[3:6]] for row in rows])
    except ValueError:
        return None
    if not np.all(occupancies == 1.0) or not np.all(np.isfinite(frac)):
        return None
    # CifParser snaps coordinates within 1e-4 (relative) of 1/3 and 2/3 to the exact value
    for ideal in (1 / 3, 2 / 3):
        frac = np.where(np.abs(frac / ideal - 1) <= _FRAC_TOLERANCE, ideal, frac)
    frac = frac - np.floor(frac)
    lattice = Lattice.from_parameters(*params)
    matrix = lattice.matrix
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-8:
        return None
    thickness = 1.0 / np.linalg.norm(np.linalg.inv(matrix).T, axis=1)
    if thickness.min() < _MIN_THICKNESS:
        return None
    if len(frac) > 1:
        delta = frac[:, None, :] - frac[None, :, :]
        delta -= np.round(delta)
        close = np.all(np.abs(delta) < _SITE_TOLERANCE, axis=2)
        np.fill_diagonal(close, False)
        if close.any():
            return None
    structure = Structure(lattice, species, frac, labels=[row[1] for row in rows])
    with warnings.catch_warnings():
        # sorting asks every element for its electronegativity; noble gases have none and
        # pymatgen warns about it (CifParser's warnings are silenced by skmat as well)
        warnings.simplefilter("ignore", UserWarning)
        return structure.get_sorted_structure()
