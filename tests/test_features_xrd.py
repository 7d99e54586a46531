"""XRDPattern: pymatgen's XRDCalculator peaks, broadened onto a grid, fast."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.diffraction.xrd import XRDCalculator
from pymatgen.core import Lattice, Structure
from sklearn.base import clone

from skmat._parallel import chunks_in_cache
from skmat.exceptions import InvalidInputError
from skmat.features.xrd import WAVELENGTHS, XRDPattern, _broaden_on_grid, _xrd_chunk, broaden, compute_peaks

N_COMPARED = 50
RANGE = (5.0, 90.0)


@pytest.fixture(scope="module")
def structures(mp20_val_rows) -> list[Structure]:
    return list(mp20_val_rows["structure"][:N_COMPARED])


def pymatgen_peaks(structure, two_theta_range=RANGE, **calculator_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pattern = XRDCalculator(**calculator_kwargs).get_pattern(structure, two_theta_range=two_theta_range)
    return np.asarray(pattern.x), np.asarray(pattern.y)


@pytest.fixture(scope="module")
def reference_peaks(structures):
    return [pymatgen_peaks(s) for s in structures]


def assert_same_peaks(ours, reference):
    (two_theta, intensity), (ref_two_theta, ref_intensity) = ours, reference
    assert len(two_theta) == len(ref_two_theta)
    np.testing.assert_allclose(two_theta, ref_two_theta, rtol=0, atol=1e-6)
    np.testing.assert_allclose(intensity, ref_intensity, rtol=1e-6, atol=0)


def test_peaks_equal_pymatgen_on_mp20(structures, reference_peaks):
    for structure, reference in zip(structures, reference_peaks, strict=True):
        assert_same_peaks(compute_peaks(structure, "CuKa", RANGE), reference)


def test_broadened_patterns_equal_pymatgen_sticks_broadened(structures, reference_peaks):
    patterns = XRDPattern().fit_transform(structures)
    grid = np.linspace(*RANGE, 1701)
    assert patterns.shape == (N_COMPARED, 1701)
    for row, (ref_two_theta, ref_intensity) in enumerate(reference_peaks):
        reference = broaden(ref_two_theta, ref_intensity, grid, 0.15)
        reference /= reference.max()
        assert np.abs(patterns[row] - reference).max() <= 1e-3


def test_wavelength_table_is_pymatgens():
    # skmat.features._powder keeps a copy (resolving "CuKa" must not import pymatgen's
    # diffraction module, which imports matplotlib): it must not drift from the original
    from pymatgen.analysis.diffraction.xrd import WAVELENGTHS as PYMATGEN_WAVELENGTHS

    assert WAVELENGTHS == PYMATGEN_WAVELENGTHS


@pytest.mark.parametrize("wavelength", ["MoKa", "CrKb1", 1.2, 2])
def test_other_wavelengths_equal_pymatgen(structures, wavelength):
    for structure in structures[:6]:
        ours = compute_peaks(structure, wavelength, (10.0, 70.0))
        assert_same_peaks(ours, pymatgen_peaks(structure, (10.0, 70.0), wavelength=wavelength))


def test_featurizer_uses_the_wavelength(structures):
    structure = structures[0]
    mo = XRDPattern(wavelength="MoKa").fit_transform([structure])[0]
    grid = np.linspace(*RANGE, 1701)
    reference = broaden(*pymatgen_peaks(structure, wavelength="MoKa"), grid, 0.15)
    assert np.abs(mo - reference / reference.max()).max() <= 1e-3
    cu = XRDPattern(wavelength=WAVELENGTHS["CuKa"]).fit_transform([structure])[0]
    np.testing.assert_array_equal(cu, XRDPattern().fit_transform([structure])[0])
    assert np.abs(mo - cu).max() > 0.1  # shorter wavelength: peaks at smaller angles


def substituted(structure: Structure, symbol: str, occupancy: dict) -> Structure:
    copy = structure.copy()
    copy.replace_species({sp: occupancy for sp in copy.types_of_species if sp.symbol == symbol})
    return copy


@pytest.mark.filterwarnings("ignore:No Pauling electronegativity")  # He, when formulas are sorted
def test_partial_occupancy_equals_pymatgen(bundled_structures):
    by_formula = {s.composition.reduced_formula: s for s in bundled_structures}
    mixed = substituted(by_formula["LiFePO4"], "Fe", {"Fe": 0.5, "Co": 0.5})
    vacant = substituted(by_formula["SrTiO3"], "Sr", {"Sr": 0.7})  # oxidation states, as shipped
    disordered = [s for s in bundled_structures if not s.is_ordered]  # Li10GeP2S12 as shipped
    for structure in [mixed, vacant, *disordered]:
        assert not structure.is_ordered
        assert_same_peaks(compute_peaks(structure, "CuKa", RANGE), pymatgen_peaks(structure))
    # disorder changes the pattern: Co scatters differently from Fe
    assert not np.allclose(
        compute_peaks(mixed)[1][:5], compute_peaks(by_formula["LiFePO4"])[1][:5], rtol=1e-3
    )


def test_debye_waller_factors_equal_pymatgen(bundled_structures):
    structure = next(s for s in bundled_structures if s.composition.reduced_formula == "BaNiO3")
    factors = {"Ba": 0.8, "O": 1.5}
    ours = compute_peaks(structure, "CuKa", RANGE, debye_waller_factors=factors)
    assert_same_peaks(ours, pymatgen_peaks(structure, debye_waller_factors=factors))
    plain = compute_peaks(structure, "CuKa", RANGE)
    assert not np.allclose(ours[1], plain[1], rtol=1e-3)
    damped = XRDPattern(debye_waller_factors=factors, normalize=None).fit_transform([structure])
    assert not np.allclose(damped, XRDPattern(normalize=None).fit_transform([structure]), rtol=1e-3)


def test_anisotropic_displacements_equal_pymatgen(bundled_structures):
    structure = next(s for s in bundled_structures if s.composition.reduced_formula == "SrTiO3").copy()
    # isotropic U = 0.01 Å² on Sr, 0.02 Å² elsewhere, in the U_cif convention pymatgen reads
    u_iso = [0.01 if site.specie.symbol == "Sr" else 0.02 for site in structure]
    for name in ("U11_cif", "U22_cif", "U33_cif"):
        structure.add_site_property(name, u_iso)
    for name in ("U23_cif", "U13_cif", "U12_cif"):
        structure.add_site_property(name, [0.0] * len(structure))
    assert_same_peaks(compute_peaks(structure, "CuKa", RANGE), pymatgen_peaks(structure))
    with pytest.raises(ValueError, match="debye_waller_factors"):
        compute_peaks(structure, debye_waller_factors={"Sr": 0.5})


def test_peaks_are_sorted_merged_and_scaled(structures):
    for structure in structures[:10]:
        two_theta, intensity = compute_peaks(structure)
        # merged like pymatgen: one peak per multiple of 1e-5 degrees that 2θ rounds to
        assert np.all(np.diff(np.round(two_theta / 1e-5)) >= 1)
        assert intensity.max() == pytest.approx(100.0)
        assert two_theta.min() >= RANGE[0] and two_theta.max() <= RANGE[1]
    # a range holding no reflection gives no peaks, and an all-zero pattern
    tiny = Structure(Lattice.cubic(2.0), ["Si"], [[0, 0, 0]])
    assert compute_peaks(tiny, two_theta_range=(5, 20))[0].size == 0
    pattern = XRDPattern(two_theta_range=(5, 20), n_bins=31).fit_transform([tiny])
    assert not pattern.any()


@pytest.mark.parametrize("shape", ["gaussian", "lorentzian", "pseudo_voigt"])
@pytest.mark.parametrize("fwhm", [0.15, 0.6])
def test_broaden_equals_dense_profile_sum(rng, shape, fwhm):
    grid = np.linspace(5, 90, 1701)
    two_theta = rng.uniform(4.0, 91.0, 40)  # includes sticks just outside the grid
    intensity = rng.uniform(1, 100, 40)
    eta = 0.3
    offset = grid[None, :] - two_theta[:, None]
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
    gaussian = np.exp(-0.5 * (offset / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    lorentzian = (fwhm / 2) / (np.pi * (offset**2 + (fwhm / 2) ** 2))
    pseudo_voigt = eta * lorentzian + (1 - eta) * gaussian
    dense = intensity @ {"gaussian": gaussian, "lorentzian": lorentzian, "pseudo_voigt": pseudo_voigt}[shape]
    ours = broaden(two_theta, intensity, grid, fwhm, shape, eta)
    assert np.abs(ours - dense).max() <= 1e-3 * dense.max()
    # the direct and the FFT evaluation of the convolution are the same sum
    args = (two_theta, intensity, grid[0], grid[1] - grid[0], len(grid), fwhm, shape, eta)
    by_fft = _broaden_on_grid(*args, force_fft=True)
    np.testing.assert_allclose(by_fft, _broaden_on_grid(*args, force_fft=False), rtol=0, atol=1e-12 * dense.max())


def test_broaden_keeps_peak_area_and_rejects_bad_grids():
    grid = np.linspace(10, 30, 401)
    pattern = broaden([15.0, 20.013], [2.0, 3.0], grid, 0.3)
    assert pattern.sum() * (grid[1] - grid[0]) == pytest.approx(5.0, rel=1e-6)
    assert broaden([], [], grid, 0.3).shape == (401,)
    with pytest.raises(ValueError, match="evenly spaced"):
        broaden([15.0], [1.0], np.geomspace(10, 30, 50), 0.3)
    with pytest.raises(ValueError, match="fwhm"):
        broaden([15.0], [1.0], grid, -0.1)
    with pytest.raises(ValueError, match="shape"):
        broaden([15.0], [1.0], grid, 0.3, shape="voigt")


def test_output_dtype_shape_normalisation_and_names(structures):
    subset = structures[:6]
    by_max = XRDPattern(n_bins=851).fit_transform(subset)
    by_sum = XRDPattern(n_bins=851, normalize="sum").fit_transform(subset)
    raw = XRDPattern(n_bins=851, normalize=None).fit_transform(subset)
    for patterns in (by_max, by_sum, raw):
        assert patterns.dtype == np.float32 and patterns.shape == (6, 851)
        assert np.all(patterns >= 0)
    np.testing.assert_allclose(by_max.max(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(by_sum.sum(axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(raw / raw.max(axis=1, keepdims=True), by_max, atol=1e-6)
    assert raw.max() > 1.0  # sticks on pymatgen's 0-100 scale

    names = XRDPattern().fit(subset).get_feature_names_out()
    assert len(names) == 1701 and list(names[:2]) == ["xrd_5.00", "xrd_5.05"] and names[-1] == "xrd_90.00"
    fine = XRDPattern(two_theta_range=(10, 11), n_bins=1001).fit(subset).get_feature_names_out()
    assert len(set(fine)) == 1001 and fine[1] == "xrd_10.001"


def test_input_forms_agree_and_frame_is_not_mutated(mp20_val_rows):
    frame = mp20_val_rows.iloc[:4][["material_id", "cif"]].copy()
    before = frame.copy()
    from_cif = XRDPattern(n_bins=401).fit_transform(frame)
    pd.testing.assert_frame_equal(frame, before)
    from_structures = XRDPattern(n_bins=401).fit_transform(list(mp20_val_rows["structure"][:4]))
    np.testing.assert_array_equal(from_cif, from_structures)
    assert XRDPattern(n_bins=401).fit_transform([]).shape == (0, 401)


def test_parallel_and_cached_output_identical(structures, tmp_path):
    subset = structures[:8]
    serial = XRDPattern(n_bins=401, chunk_size=3).fit_transform(subset)
    parallel = XRDPattern(n_bins=401, chunk_size=3, n_jobs=2).fit_transform(subset)
    np.testing.assert_array_equal(serial, parallel)

    cached = XRDPattern(n_bins=401, chunk_size=8, memory=tmp_path)
    first = cached.fit_transform(subset)
    np.testing.assert_array_equal(first, serial)
    # joblib writes repr(args) next to the cache entry; repr fills a Structure's lazy Cartesian
    # coordinates and so changes its pickle: the cache key must not depend on that
    [repr(s) for s in subset]
    in_cache = chunks_in_cache(
        _xrd_chunk, cached._items(subset), kwargs=cached._chunk_kwargs(), chunk_size=8, memory=tmp_path
    )
    assert in_cache == [True]
    np.testing.assert_array_equal(cached.transform(subset), first)


@pytest.mark.parametrize("column", ["cif", "structure"])
def test_malformed_cif_names_the_row(mp20_val_rows, column):
    frame = pd.DataFrame(
        {"material_id": list(mp20_val_rows["material_id"][:3]), column: list(mp20_val_rows["cif"][:3])}
    )
    frame.loc[1, column] = "data_broken\n_cell_length_a 4.0\nloop_\n_atom_site_label\n"
    bad_id = frame.loc[1, "material_id"]
    xrd = XRDPattern(n_bins=101).fit(frame)
    with pytest.raises(InvalidInputError) as info:
        xrd.transform(frame)
    assert info.value.row == bad_id and info.value.view == column


def test_element_without_scattering_data_names_the_row(bundled_structures):
    einsteinium = Structure(Lattice.cubic(4.0), ["Es"], [[0, 0, 0]])
    frame = pd.DataFrame({"structure": [bundled_structures[0], einsteinium]}, index=["ok", "es"])
    with pytest.raises(InvalidInputError, match="Es") as info:
        XRDPattern(n_bins=101).fit_transform(frame)
    assert info.value.row == "es"


@pytest.mark.parametrize(
    "params",
    [
        {"peak_width": -0.1},
        {"peak_width": 0},
        {"wavelength": "CuKz"},
        {"wavelength": -1.5},
        {"n_bins": 1},
        {"two_theta_range": (90.0, 5.0)},
        {"two_theta_range": (5.0, 200.0)},
        {"two_theta_range": (5.0,)},
        {"peak_shape": "voigt"},
        {"eta": 1.5},
        {"normalize": "l2"},
        {"debye_waller_factors": {"Xx": 0.5}},
        {"debye_waller_factors": {"O": float("nan")}},
    ],
)
def test_bad_parameters_raise_at_fit(bundled_structures, params):
    xrd = XRDPattern(**params)  # construction only stores
    assert xrd.get_params()[next(iter(params))] is params[next(iter(params))]
    with pytest.raises(ValueError):
        xrd.fit(bundled_structures[:1])


def test_clone_and_get_params_round_trip(structures):
    xrd = XRDPattern(wavelength=0.9, two_theta_range=(10, 60), n_bins=501, peak_shape="pseudo_voigt", eta=0.2)
    params = xrd.get_params()
    twin = clone(xrd)
    assert twin.get_params() == params
    assert XRDPattern(**params).get_params() == params
    np.testing.assert_array_equal(twin.fit_transform(structures[:2]), xrd.fit_transform(structures[:2]))
    twin.set_params(n_bins=201)
    assert twin.fit_transform(structures[:2]).shape == (2, 201)
