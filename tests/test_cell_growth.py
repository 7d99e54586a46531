"""Grown cells (skmat.features.cell_growth) and their use in XRDAugmenter(cell_growth=...)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from _helpers import tiny_aligner, tiny_encoder
from skmat.exceptions import InvalidInputError
from skmat.features.augment import XRDAugmenter, compute_sticks
from skmat.features.cell_growth import grow_cell

# pymatgen's SpacegroupAnalyzer calls spglib, which warns about its legacy error handling
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:spglib")


@pytest.fixture(scope="module")
def structures(mp20_val_rows):
    return list(mp20_val_rows["structure"][:24])


def _space_group(structure) -> int:
    return SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number()


def test_grown_cells_keep_the_space_group_and_grow(structures):
    grown_any = 0
    for i, structure in enumerate(structures):
        grown = grow_cell(structure, 2.0, random_state=i)
        assert _space_group(grown) == _space_group(structure), structure.composition.reduced_formula
        assert grown.volume == pytest.approx(structure.volume * 8.0)
        # the original atoms keep their fractional coordinates, in order
        np.testing.assert_allclose(grown.frac_coords[: len(structure)], structure.frac_coords)
        assert set(grown.composition.elements) <= set(structure.composition.elements)
        grown_any += len(grown) > len(structure)
    # most cells get atoms added (a few small high-symmetry cells have no orbit that fits)
    assert grown_any >= len(structures) // 2


def test_added_atoms_respect_the_minimum_distance_and_the_atom_cap(structures):
    for i, structure in enumerate(structures[:8]):
        grown = grow_cell(structure, 2.5, random_state=i, max_atoms=60, min_distance=1.8)
        assert len(grown) <= max(60, len(structure))
        distances = grown.distance_matrix[len(structure) :]
        distances = distances[distances > 1e-8]
        if len(distances):
            assert distances.min() >= 1.8 - 1e-6


def test_grow_cell_is_seeded_and_leaves_its_input_alone(structures):
    structure = structures[1]
    before = structure.copy()
    first = grow_cell(structure, 1.8, random_state=3)
    second = grow_cell(structure, 1.8, random_state=3)
    assert first == second and len(first) == len(second)
    assert structure == before and structure.lattice == before.lattice


@pytest.mark.parametrize("scale", [0.9, float("nan"), float("inf")])
def test_grow_cell_refuses_a_shrinking_or_non_finite_scale(structures, scale):
    with pytest.raises(ValueError, match="scale"):
        grow_cell(structures[0], scale)


def test_grow_cell_refuses_a_disordered_structure(structures):
    disordered = structures[0].copy()
    disordered.replace(0, {disordered[0].specie.symbol: 0.5, "Fe": 0.5})
    with pytest.raises(ValueError, match="ordered"):
        grow_cell(disordered, 1.5)


def test_augmenter_with_grown_cells_is_seeded_finite_non_negative_and_acts(structures):
    augmenter = XRDAugmenter(cell_growth=(1.5, 2.5), grown_cells=2, grown_fraction=1.0, random_state=0)
    augmenter.fit(structures[:6])
    assert all(len(entry) == 3 for entry in augmenter.sticks_)  # own sticks + 2 grown variants
    first = augmenter.sample(random_state=5)
    np.testing.assert_array_equal(first, augmenter.sample(random_state=5))
    # fitting again from the same seed grows the same cells
    refit = XRDAugmenter(cell_growth=(1.5, 2.5), grown_cells=2, grown_fraction=1.0, random_state=0)
    np.testing.assert_array_equal(first, refit.fit(structures[:6]).sample(random_state=5))
    assert np.all(np.isfinite(first)) and first.min() >= 0
    np.testing.assert_allclose(first.max(axis=1), 1.0, rtol=1e-6)
    # grown cells are larger: their first strong peak comes earlier and they have more peaks
    own = augmenter.set_params(grown_fraction=0.0).sample(random_state=5)
    grid = augmenter.two_theta_grid()
    first_strong = lambda patterns: np.mean([grid[np.argmax(p > 0.2)] for p in patterns])  # noqa: E731
    assert first_strong(first) < first_strong(own)


def test_augmenter_rejects_bad_growth_settings(structures):
    for bad in [(2.0, 1.5), (0.5, 2.0), (1.0,)]:
        with pytest.raises(ValueError, match="cell_growth"):
            XRDAugmenter(cell_growth=bad).fit(structures[:1])
    with pytest.raises(ValueError, match="grown_fraction"):
        XRDAugmenter(cell_growth=(1.0, 2.0), grown_fraction=1.5).fit(structures[:1])


def test_augmenter_names_the_row_it_cannot_grow(structures, mp20_val_rows):
    import pandas as pd

    disordered = structures[0].copy()
    disordered.replace(0, {disordered[0].specie.symbol: 0.5, "Fe": 0.5})
    frame = pd.DataFrame({"structure": [structures[1], disordered]}, index=["ok", "mixed-site"])
    with pytest.raises(InvalidInputError, match="mixed-site"):
        XRDAugmenter(cell_growth=(1.0, 2.0)).fit(frame)


def test_scaled_sticks_of_a_lattice_whose_outermost_reflection_hit_backscatter(data_home):
    """Regression: compute_sticks(lattice_scale=...) used to compute reflections at a wavelength
    that put the outermost one at 2θ = 180°, where the Lorentz factor is infinite; every other
    peak was then dropped as too weak, and this MP-20 structure (Hf2Ga3Co) had no sticks."""
    import pandas as pd
    from pymatgen.core import Structure

    frame = pd.read_csv(data_home / "mp_20" / "val.csv.gz")
    (cif,) = frame.loc[frame["material_id"] == "mp-1224165", "cif"]
    structure = Structure.from_str(cif, fmt="cif")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        scaled = compute_sticks(structure, lattice_scale=(1.0, 3.0))
    unscaled = compute_sticks(structure)
    # a lattice up to 3x larger brings up to 27x the reflections into the window
    assert 5 * len(unscaled.hkl) < len(scaled.hkl) < 30 * len(unscaled.hkl)
    assert np.all(np.isfinite(scaled.structure_intensity)) and scaled.structure_intensity.min() > 0


def _aligner(augment, random_state=0):
    encoders = [
        # no random_state of its own: the aligner's seeds the grown cells and the draws
        ("xrd", tiny_encoder("xrd", augment=augment)),
        ("composition", tiny_encoder("composition")),
    ]
    return tiny_aligner(encoders=encoders, random_state=random_state)


def test_grown_cells_train_inside_the_aligner_seeded_by_it(mp20_val_rows):
    X = mp20_val_rows[["structure"]].iloc[:32].reset_index(drop=True)
    grown = XRDAugmenter(cell_growth=(1.0, 2.0), grown_cells=1)
    first, again = _aligner(grown).fit(X), _aligner(grown).fit(X)
    np.testing.assert_allclose(first.transform(X), again.transform(X), atol=1e-6)
    # another seed grows other cells and draws other patterns: another model
    other = _aligner(grown, random_state=1).fit(X)
    assert not np.allclose(first.transform(X), other.transform(X), atol=1e-4)
    # the augmenter the user passed is left unfitted, and no training-only state stays behind
    assert not hasattr(grown, "sticks_") and grown.random_state is None
    xrd = dict(first.encoders_)["xrd"]
    assert xrd.augmenter_ is None and not hasattr(xrd, "_augmented_structures")
