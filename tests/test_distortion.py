"""triclinic_distortion: triclinic training variants of real MP-20 crystals, checked by spglib."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from skmat.features.distortion import triclinic_distortion


@pytest.fixture(scope="module")
def monoclinic_and_orthorhombic(mp20_val_rows):
    # space groups 3-74: monoclinic and orthorhombic
    rows = mp20_val_rows[mp20_val_rows["spacegroup.number"].between(3, 74)]
    return list(rows["structure"][:12])


def test_distorted_crystals_are_triclinic_and_keep_their_atoms(monoclinic_and_orthorhombic):
    made = 0
    for i, structure in enumerate(monoclinic_and_orthorhombic):
        before = structure.copy()
        sheared = triclinic_distortion(structure, random_state=i)
        assert structure == before  # the input is not modified
        if sheared is None:
            continue
        made += 1
        assert SpacegroupAnalyzer(sheared, symprec=0.1).get_crystal_system() == "triclinic"
        assert sheared.composition == structure.composition
        angles = np.abs(np.array(sheared.lattice.angles) - np.array(structure.lattice.angles))
        assert angles.max() >= 1.0 - 1e-6 and angles.max() <= 6.0 + 1e-6
        assert np.allclose(sheared.lattice.abc, structure.lattice.abc, rtol=0.021)
    assert made >= 10, f"only {made} of {len(monoclinic_and_orthorhombic)} distorted"


def test_distortion_is_seeded(monoclinic_and_orthorhombic):
    structure = monoclinic_and_orthorhombic[0]
    first, again = triclinic_distortion(structure, random_state=3), triclinic_distortion(structure, random_state=3)
    other = triclinic_distortion(structure, random_state=4)
    assert first == again
    assert not np.allclose(first.lattice.matrix, other.lattice.matrix)


def test_no_triclinic_draw_gives_none():
    cubic = Structure(Lattice.cubic(4.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    # no shear and no displacement: the crystal stays cubic, so no triclinic variant exists
    assert triclinic_distortion(cubic, random_state=0, angle_range=(0, 0), length_change=0, displacement=0) is None


@pytest.mark.parametrize(
    "settings", [dict(angle_range=(5, 2)), dict(angle_range=(-1, 2)), dict(length_change=0.6), dict(displacement=-0.1)]
)
def test_bad_settings_are_refused(settings):
    cubic = Structure(Lattice.cubic(4.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError):
        triclinic_distortion(cubic, **settings)
