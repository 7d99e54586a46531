"""Triclinic training crystals from real monoclinic and orthorhombic ones.

Mineral structure databases hold few triclinic crystals (the AMCSD copy that ``larixite``
ships: 55 of 8,999 entries; MP-20 val: 3 %), while measured sets hold many (RRUFF: 21 of
the 250 development patterns). A classifier trained on such data almost never answers
"triclinic": 2 of 21 measured triclinic patterns were right (``benchmarks/measured_xrd.py``,
leak-controlled MP-20 + AMCSD training).

Many triclinic minerals are slightly sheared versions of a monoclinic or orthorhombic
arrangement (the feldspars albite and microcline, kaolinite, ...): their cell angles are a few
degrees off 90° and the reflections that coincide in the higher-symmetry cell split.
:func:`triclinic_distortion` makes such a variant of a real structure: every cell angle moves
by 1-6° (one of them by less), the lengths by up to 2 %, and each atom by a small random
displacement. The crystal system of the result is checked with spglib at MP-20's
tolerance, not assumed.

The distorted structures are not real materials: like a strained lattice or a noisy pattern
they are training variants of real ones. Measured (one seed, 250 measured RRUFF patterns,
one standard error ~3 points): adding 493 distorted crystals (4 patterns each) to the
leak-controlled MP-20 + AMCSD training raised triclinic accuracy from 10 % to 52 % and left
the overall accuracy where it was (50.8 → 51.2 %); 1,972 of them (13 % of the rows) made
the model answer triclinic too often (overall 38.8 %).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["triclinic_distortion"]


def triclinic_distortion(
    structure,
    random_state: Any = None,
    *,
    angle_range: tuple[float, float] = (1.0, 6.0),
    length_change: float = 0.02,
    displacement: float = 0.08,
    attempts: int = 4,
    symprec: float = 0.1,
):
    """A triclinic variant of *structure*: sheared cell, displaced atoms, checked by spglib.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        Any structure (ordered or not: occupancies are kept).
    random_state : int, numpy.random.Generator or None
    angle_range : (float, float), default=(1.0, 6.0)
        Range of each cell angle's change in degrees (random sign); one angle, drawn at random,
        changes by at most half as much.
    length_change : float, default=0.02
        Largest relative change of each cell length.
    displacement : float, default=0.08
        Standard deviation (Å) of each atom's random displacement along each axis.
    attempts : int, default=4
        Draws tried before giving up.
    symprec : float, default=0.1
        spglib tolerance (Å) at which the result must be triclinic (MP-20's labels use 0.1).

    Returns
    -------
    pymatgen.core.Structure or None
        A new structure, or ``None`` when no draw was triclinic at *symprec* or every draw
        brought two atoms closer than 0.6 Å (or 80 % of the closest distance of the input).
        The input is not modified.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    >>> rutile = Structure.from_spacegroup(
    ...     "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    ... )
    >>> sheared = triclinic_distortion(rutile, random_state=0)
    >>> SpacegroupAnalyzer(sheared, symprec=0.1).get_crystal_system(), len(sheared) == len(rutile)
    ('triclinic', True)
    """
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    low, high = (float(v) for v in angle_range)
    if not 0 <= low <= high < 30:
        raise ValueError(f"angle_range must be (low, high) degrees with 0 <= low <= high < 30, got {angle_range!r}")
    if not 0 <= length_change < 0.5 or not displacement >= 0:
        raise ValueError("length_change must be in [0, 0.5) and displacement >= 0")
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    lengths = np.array(structure.lattice.abc)
    angles = np.array(structure.lattice.angles)
    pairs = np.triu_indices(len(structure), 1)
    closest = float(structure.distance_matrix[pairs].min()) if len(structure) > 1 else np.inf
    for _ in range(attempts):
        change = rng.uniform(low, high, 3) * rng.choice([-1.0, 1.0], 3)
        change[rng.integers(3)] *= rng.uniform(0.0, 0.5)
        lattice = Lattice.from_parameters(
            *(lengths * rng.uniform(1 - length_change, 1 + length_change, 3)), *(angles + change)
        )
        frac = structure.frac_coords + rng.normal(0.0, displacement, structure.frac_coords.shape) / lengths
        try:
            candidate = Structure(lattice, structure.species_and_occu, frac)
        except ValueError:  # angles that make no cell
            continue
        if len(candidate) > 1 and candidate.distance_matrix[pairs].min() < max(0.6, 0.8 * closest):
            continue
        try:
            system = SpacegroupAnalyzer(candidate, symprec=symprec).get_crystal_system()
        except Exception:  # spglib gives up on some cells: try another draw
            continue
        if system == "triclinic":
            return candidate
    return None
