"""Larger cells of the same symmetry, for training XRD models that must read minerals' patterns.

MP-20 cells hold at most 20 atoms; the minerals a diffractometer measures often hold 100 or
more. A larger cell puts its first reflections at lower angle and many more of them into the
window, with intensities spread over many atoms. Scaling the lattice alone
(``XRDAugmenter(lattice_scale=...)``) moves the peaks but keeps the few-atom intensity pattern
of the small cell. :func:`grow_cell` also *fills* the scaled cell: it adds atoms on whole
orbits of the structure's own space group (general or special positions), so the grown
structure keeps every symmetry operation of the original and its crystal system (the label)
stays true, while its reflections take the varied intensities of a large cell.

The grown structures are not meant to be real materials: they are training variants of real
ones, like a strained lattice or a noisy pattern. Measured on MP-20 → RRUFF crystal systems
(7,238 training structures, XRDConvNet, patterns rendered by
:class:`~skmat.features.augment.XRDAugmenter`, 250 measured patterns, one standard error
~3 points):

* 5 augmented patterns per structure, 5 epochs: 34.0 % on measured patterns without grown
  cells, 42.4 % when 3 of the 5 come from cells grown 1-2.5x (cubic minerals 5/39 → 15/39);
  clean simulated accuracy 72.2 → 65.7 %.
* ``benchmarks/measured_xrd.py --copies 5 --epochs 5`` (the clean pattern + 4 draws, 60 % of
  the draws grown), against the same run without growth: 40.0 → 41.6 % measured and
  74.6 → 72.4 % simulated with seed 0; 35.6 → 34.0 % and 72.9 → 70.0 % with seed 1.

So the gain seen in the first comparison did not hold up in the benchmark: averaged over the two
seeds, grown cells leave measured accuracy unchanged (37.8 %) and cost 2.5 points on simulated
patterns. The option is kept because it is the one augmentation here that gives a model
large-cell intensity statistics of the right symmetry; it is off by default.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

__all__ = ["grow_cell", "space_group_operations"]


def space_group_operations(structure, symprec: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Rotations ``(k, 3, 3)`` and translations ``(k, 3)`` of a structure's space group.

    In the fractional coordinates of the structure's own cell (spglib), identity first.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    >>> rotations, translations = space_group_operations(nacl)
    >>> len(rotations)  # 48 point operations x 4 centring translations of the conventional cell
    192
    """
    import spglib

    cell = (
        np.asarray(structure.lattice.matrix, dtype=float),
        structure.frac_coords,
        [site.species.elements[0].Z for site in structure],
    )
    with warnings.catch_warnings():
        # spglib >= 2.5 warns about its legacy error handling on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        symmetry = spglib.get_symmetry(cell, symprec=symprec)
    if symmetry is None:
        return np.eye(3)[None], np.zeros((1, 3))
    return np.asarray(symmetry["rotations"], dtype=float), np.asarray(symmetry["translations"], dtype=float)


def _orbit(point: np.ndarray, rotations: np.ndarray, translations: np.ndarray, tolerance: float) -> np.ndarray:
    """Distinct images of a fractional point under the operations (merged within *tolerance*)."""
    images = (np.einsum("kij,j->ki", rotations, point) + translations) % 1.0
    difference = images[:, None] - images[None]
    difference -= np.round(difference)
    close = np.linalg.norm(difference, axis=-1) <= tolerance
    return images[np.unique(np.argmax(close, axis=1))]


def _closest_distance(lattice: np.ndarray, new: np.ndarray, old: np.ndarray) -> float:
    """Shortest periodic (minimum-image) distance from *new* points to *old* points and each other."""
    points = np.vstack([old, new])
    difference = new[:, None] - points[None]
    difference -= np.round(difference)
    distance = np.linalg.norm(difference @ lattice, axis=-1)
    # a new point's zero distance to itself is not a clash
    distance[np.arange(len(new)), len(old) + np.arange(len(new))] = np.inf
    return float(distance.min())


def grow_cell(
    structure,
    scale: float,
    random_state: Any = None,
    *,
    max_atoms: int = 160,
    min_distance: float = 1.6,
    attempts: int = 60,
    symprec: float = 0.1,
):
    """The structure's lattice scaled by *scale* and filled with atoms on its own symmetry orbits.

    The fractional coordinates of the original atoms are kept (the lattice grows around them).
    Then, until the cell holds ``len(structure) * scale**3`` atoms (the original density) or
    ``max_atoms``, random points are drawn (half of them moved onto a symmetry element, so
    special positions with small orbits occur too), and a point's whole orbit under the
    space group is added, as one element of the structure's, when no atom of it comes closer
    than ``min_distance`` to another. Every operation of the original space group maps the
    grown structure onto itself, so its symmetry is at least the original's (and almost
    always exactly it: an accidental higher symmetry needs special coincidences).

    Parameters
    ----------
    structure : pymatgen.core.Structure
        Ordered (one element per site).
    scale : float
        Factor on every lattice vector, ``>= 1``.
    random_state : int, numpy.random.Generator or None
    max_atoms : int, default=160
        No orbit is added that would take the cell past this many atoms.
    min_distance : float, default=1.6
        Closest allowed distance (Å) of an added atom to any other.
    attempts : int, default=60
        Trial points drawn at most.
    symprec : float, default=0.1
        spglib tolerance (Å) for the space group.

    Returns
    -------
    pymatgen.core.Structure
        A new structure; the input is not modified.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    >>> rutile = Structure.from_spacegroup(
    ...     "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    ... )
    >>> grown = grow_cell(rutile, 2.0, random_state=0)
    >>> len(rutile), len(grown) > len(rutile)
    (6, True)
    >>> SpacegroupAnalyzer(grown, symprec=0.1).get_space_group_symbol()
    'P4_2/mnm'
    """
    from pymatgen.core import Lattice, Structure

    if not (math.isfinite(scale) and scale >= 1.0):
        raise ValueError(f"scale must be a finite number >= 1, got {scale!r}")
    if not structure.is_ordered:
        raise ValueError("grow_cell needs an ordered structure (one element per site)")
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    rotations, translations = space_group_operations(structure, symprec)
    lattice = np.asarray(structure.lattice.matrix, dtype=float) * scale
    frac_coords = np.array(structure.frac_coords, dtype=float)
    species = [site.species.elements[0].symbol for site in structure]
    elements = sorted(set(species))
    target = min(max_atoms, int(len(structure) * scale**3))
    # merge images closer than ~0.05 Å: special positions land on themselves to rounding
    tolerance = 0.05 / float(np.max(np.linalg.norm(lattice, axis=1)))
    for _ in range(attempts):
        if len(frac_coords) >= target:
            break
        point = rng.random(3)
        if len(rotations) > 1 and rng.random() < 0.5:
            # halfway to its image under a random operation: on that operation's symmetry
            # element when it is a rotation axis or mirror, hence a smaller (special) orbit
            k = int(rng.integers(1, len(rotations)))
            point = ((point + rotations[k] @ point + translations[k]) / 2) % 1.0
        orbit = _orbit(point, rotations, translations, tolerance)
        if len(frac_coords) + len(orbit) > max_atoms:
            continue
        if _closest_distance(lattice, orbit, frac_coords) < min_distance:
            continue
        frac_coords = np.vstack([frac_coords, orbit])
        species += [elements[int(rng.integers(len(elements)))]] * len(orbit)
    return Structure(Lattice(lattice), species, frac_coords)
