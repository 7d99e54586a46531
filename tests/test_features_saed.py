"""DiffractionImage and zone_spots against pymatgen's TEMCalculator, on real structures."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.diffraction.tem import TEMCalculator
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from sklearn.base import clone

from skmat._parallel import chunks_in_cache
from skmat.exceptions import InvalidInputError
from skmat.features.saed import DiffractionImage, _saed_chunk, electron_wavelength, zone_spots


@pytest.fixture(scope="module")
def mp20(mp20_val_rows):
    return mp20_val_rows.iloc[:12][["material_id", "structure"]].reset_index(drop=True)


def pymatgen_spots(structure, axis, symprec=None):
    """TEMCalculator's spots without the direct beam: hkl, positions in Å^-1, normalised intensity."""
    calc = TEMCalculator(beam_direction=axis, symprec=symprec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = calc.get_pattern(structure)
    frame = frame[frame["(hkl)"] != (0, 0, 0)]
    # TEMCalculator places spots on a film, R = lambda L |g| (cm)
    positions = np.stack(frame["Position"].to_numpy()) / (calc.wavelength_rel() * calc.camera_length)
    return np.array(frame["(hkl)"].tolist()), positions, frame["Intensity (norm)"].to_numpy()


@pytest.mark.parametrize("row", [0, 3, 7])
@pytest.mark.parametrize("axis", [(0, 0, 1), (1, 1, 0), (1, -1, 2)])
def test_spots_match_temcalculator_on_mp20(mp20, row, axis):
    structure = mp20["structure"].iloc[row]
    hkl_p, xy_p, intensity_p = pymatgen_spots(structure, axis)
    ours = zone_spots(structure, axis, max_g=np.linalg.norm(xy_p, axis=1).max() * (1 + 1e-9))
    index = {tuple(h): i for i, h in enumerate(ours.hkl)}
    # pymatgen searches the box -10..11 of every index; ours the whole disc, a superset of it
    assert len(hkl_p) > 50 and all(tuple(h) in index for h in hkl_p)
    mine = np.array([index[tuple(h)] for h in hkl_p])
    intensity = ours.intensity[mine] / ours.intensity[mine].max()
    np.testing.assert_allclose(intensity, intensity_p, rtol=0, atol=1e-12)
    # same geometry: every pairwise dot product of positions (pymatgen's y may be mirrored)
    gram_p, gram = xy_p @ xy_p.T, ours.xy[mine] @ ours.xy[mine].T
    np.testing.assert_allclose(gram, gram_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.abs(ours.xy[mine]), np.abs(xy_p), rtol=0, atol=1e-12)


def test_refined_cell_matches_temcalculator_with_symprec(bundled_structures):
    ordered = [s for s in bundled_structures if s.is_ordered and len(s) <= 20]
    structure = ordered[0]
    hkl_p, xy_p, intensity_p = pymatgen_spots(structure, (1, 1, 1), symprec=0.01)
    refined = SpacegroupAnalyzer(structure, symprec=0.01).get_refined_structure()
    ours = zone_spots(refined, (1, 1, 1), max_g=np.linalg.norm(xy_p, axis=1).max() * (1 + 1e-9))
    index = {tuple(h): i for i, h in enumerate(ours.hkl)}
    mine = np.array([index[tuple(h)] for h in hkl_p])
    np.testing.assert_allclose(ours.intensity[mine] / ours.intensity[mine].max(), intensity_p, atol=1e-12)


def test_rock_salt_image_has_the_symmetry_and_absences_of_fcc():
    a = 5.64
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    saed = DiffractionImage(zone_axes=[(0, 0, 1)], size=64, max_g=1.0, spot_width=0.04)
    image = saed.to_images(saed.fit_transform([nacl]))[0, 0]
    assert image.max() == pytest.approx(1.0)
    # [001] of a cubic crystal: four-fold axis and mirrors
    np.testing.assert_allclose(image, np.rot90(image), atol=1e-5)
    np.testing.assert_allclose(image, image[:, ::-1], atol=1e-5)

    def pixel(gx, gy):  # pixel nearest to in-plane coordinates (Å^-1)
        to_index = lambda g: int((g + 1.0) / (2.0 / 64))  # noqa: E731
        return image[to_index(gy), to_index(gx)]

    # F.C.C.: 200 is strong, 100 and 110 are systematically absent; the direct beam is not drawn
    assert pixel(2 / a, 0) > 0.5
    assert pixel(1 / a, 0) < 1e-3 and pixel(1 / a, 1 / a) < 1e-3
    assert pixel(0, 0) < 1e-3


def test_images_of_mp20_rows(mp20):
    saed = DiffractionImage(size=32)
    X = saed.fit_transform(mp20)
    assert X.shape == (len(mp20), 3 * 32 * 32) and X.dtype == np.float32
    images = saed.to_images(X)
    # "per_axis": every zone axis image peaks at 1 (each has spots within 1 Å^-1)
    np.testing.assert_allclose(images.max(axis=(2, 3)), 1.0, rtol=1e-6)
    assert np.isfinite(X).all() and (X >= 0).all()
    # different materials, different patterns
    assert len({row.tobytes() for row in X}) == len(mp20)
    assert len(saed.get_feature_names_out()) == X.shape[1]
    assert saed.get_feature_names_out()[0] == "saed_001_0_0"


def test_normalize_max_keeps_ratios_between_axes(mp20):
    per_axis = DiffractionImage(size=16, normalize="per_axis", symprec=None).fit_transform(mp20.iloc[:2])
    whole = DiffractionImage(size=16, normalize="max", symprec=None).fit_transform(mp20.iloc[:2])
    raw = DiffractionImage(size=16, normalize=None, symprec=None).fit_transform(mp20.iloc[:2])
    np.testing.assert_allclose(whole.max(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(whole, raw / raw.max(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert not np.allclose(per_axis, whole)


@pytest.mark.parametrize("axes", [[(0, 0, 0)], [(0, 0, 1), (0, 0, 0)], [(1, 0)], [(1.5, 0, 0)], []])
def test_bad_zone_axes_are_refused(mp20, axes):
    with pytest.raises(InvalidInputError) as caught:
        DiffractionImage(zone_axes=axes).fit(mp20)
    assert caught.value.view == "zone_axes"
    with pytest.raises(InvalidInputError, match="no direction"):
        zone_spots(mp20["structure"].iloc[0], (0, 0, 0))


def test_transform_is_stateless_cacheable_and_clonable(mp20, tmp_path):
    saed = DiffractionImage(size=16, chunk_size=4, memory=tmp_path)
    first = saed.fit_transform(mp20)
    kwargs = saed._chunk_kwargs()
    assert all(chunks_in_cache(_saed_chunk, saed._items(mp20), kwargs=kwargs, chunk_size=4, memory=tmp_path))
    np.testing.assert_array_equal(clone(saed).transform(mp20), first)


def test_bad_structure_row_is_named(mp20):
    bad = mp20.copy()
    structure = bad["structure"].iloc[2].copy()
    structure.append(structure[0].species, structure[0].coords, coords_are_cartesian=True)
    bad["structure"] = pd.Series([*bad["structure"].iloc[:2], structure, *bad["structure"].iloc[3:]], dtype=object)
    with pytest.raises(InvalidInputError, match="Å apart") as caught:
        DiffractionImage(size=16).fit_transform(bad)
    assert caught.value.row == mp20["material_id"].iloc[2]


def test_electron_wavelength_is_relativistic():
    # 200 kV: 0.02508 Å (non-relativistic 0.02742 Å); the same as pymatgen's
    assert electron_wavelength(200) == pytest.approx(TEMCalculator(voltage=200).wavelength_rel(), rel=1e-12)
    assert electron_wavelength(200) == pytest.approx(0.025079, abs=1e-6)
