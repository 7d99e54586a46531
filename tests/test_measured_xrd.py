"""Measured XRD patterns (resampling, repairs, files, background) and training-time augmentation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from skmat.exceptions import InvalidInputError
from skmat.features.augment import (
    XRDAugmenter,
    _symmetric_strain,
    augment_patterns,
    compute_sticks,
)
from skmat.features.measured import MeasuredXRD, read_xy, remove_background, resample_measured
from skmat.features.xrd import WAVELENGTHS, XRDPattern, compute_peaks

CU_GRID = (5.0, 90.0, 1701)
CU_STEP = 0.05


@pytest.fixture(scope="module")
def rruff(data_home):
    from skmat.datasets import fetch_rruff_xrd

    return fetch_rruff_xrd(data_home=data_home).frame


@pytest.fixture(scope="module")
def structures(mp20_val_rows):
    return list(mp20_val_rows["structure"][:12])


# --------------------------------------------------------------------------------------------
# d-spacing resampling
# --------------------------------------------------------------------------------------------


def _isolated_strong_peaks(two_theta, intensity, min_relative=20.0, gap=0.4):
    """Cu Kα sticks that stand alone (no other stick above 1 % within `gap` degrees)."""
    keep = []
    for i, (t, h) in enumerate(zip(two_theta, intensity, strict=True)):
        if h < min_relative or not 6 < t < 89:
            continue
        neighbours = (np.abs(two_theta - t) < gap) & (intensity > 1.0)
        if neighbours.sum() == 1:
            keep.append(i)
    return two_theta[keep], intensity[keep]


def test_mo_pattern_resampled_lands_on_cu_peaks(structures):
    # simulate each structure with Mo Kα on a fine Mo grid that covers Cu's 5-90° in d-spacing
    mo = XRDPattern(wavelength="MoKa", two_theta_range=(2.0, 40.0), n_bins=3801, peak_width=0.05)
    mo_patterns = mo.fit_transform(structures)
    mo_grid = mo.two_theta_grid()
    checked = 0
    for structure, mo_pattern in zip(structures, mo_patterns, strict=True):
        resampled = resample_measured(mo_grid, mo_pattern, "MoKa", target_wavelength="CuKa", grid=CU_GRID)
        cu_two_theta, cu_intensity = compute_peaks(structure, wavelength="CuKa")
        for position, _ in zip(*_isolated_strong_peaks(cu_two_theta, cu_intensity), strict=True):
            window = slice(int(round((position - 5 - 0.4) / CU_STEP)), int(round((position - 5 + 0.4) / CU_STEP)) + 1)
            found = 5 + CU_STEP * (window.start + int(np.argmax(resampled[window])))
            assert abs(found - position) <= CU_STEP, (structure.formula, position, found)
            checked += 1
    assert checked >= 10


def test_same_wavelength_resampling_is_bin_averaging(rruff):
    two_theta, intensity = rruff["two_theta"].iloc[0], rruff["intensity"].iloc[0]
    pattern = resample_measured(two_theta, intensity, 1.5418, target_wavelength=1.5418, grid=CU_GRID)
    # 0.01° points into 0.05° bins: an interior bin is the trapezoid mean of its 5-6 points
    k = 500
    centre = 5 + CU_STEP * k
    inside = np.abs(two_theta - centre) <= CU_STEP / 2
    assert pattern[k] == pytest.approx(intensity[inside].mean(), rel=0.15)
    assert pattern.dtype == np.float32 and pattern.shape == (1701,)
    assert np.all(pattern >= 0)


def test_coarse_measurement_is_interpolated_and_outside_range_is_zero():
    two_theta = np.arange(20.0, 60.0, 0.2)  # coarser than the grid, covers part of it
    intensity = 1 + np.sin(two_theta / 3)
    pattern = resample_measured(two_theta, intensity, "CuKa", grid=CU_GRID)
    grid = np.linspace(*CU_GRID[:2], CU_GRID[2])
    inside = (grid > 20.5) & (grid < 59.3)
    np.testing.assert_allclose(pattern[inside], np.interp(grid[inside], two_theta, intensity), atol=1e-3)
    assert np.all(pattern[grid < 19.9] == 0) and np.all(pattern[grid > 59.9] == 0)


def test_intensity_correction_only_acts_across_wavelengths(rruff):
    two_theta, intensity = rruff["two_theta"].iloc[3], rruff["intensity"].iloc[3]
    with_correction = resample_measured(two_theta, intensity, "CuKa", intensity_correction=True)
    without = resample_measured(two_theta, intensity, "CuKa", intensity_correction=False)
    np.testing.assert_array_equal(with_correction, without)


# --------------------------------------------------------------------------------------------
# repairs and errors on measured data
# --------------------------------------------------------------------------------------------


def _real_pattern(rruff, row=0):
    return rruff["two_theta"].iloc[row].astype(float), rruff["intensity"].iloc[row].astype(float)


def test_unsorted_points_are_sorted(rruff):
    two_theta, intensity = _real_pattern(rruff)
    order = np.random.default_rng(0).permutation(len(two_theta))
    np.testing.assert_array_equal(
        resample_measured(two_theta[order], intensity[order]), resample_measured(two_theta, intensity)
    )


def test_duplicated_two_theta_values_are_averaged(rruff):
    two_theta, intensity = _real_pattern(rruff)
    # the same scan twice with different counts: equivalent to one scan with the mean counts
    doubled = resample_measured(np.r_[two_theta, two_theta], np.r_[intensity, 3 * intensity])
    np.testing.assert_allclose(doubled, resample_measured(two_theta, 2 * intensity), rtol=1e-6)


def test_small_negative_intensities_are_clipped(rruff):
    two_theta, intensity = _real_pattern(rruff)
    shifted = intensity - 0.02 * intensity.max()  # a slightly over-subtracted background
    assert shifted.min() < 0
    pattern = resample_measured(two_theta, shifted)
    assert pattern.min() >= 0
    np.testing.assert_allclose(pattern, resample_measured(two_theta, np.maximum(shifted, 0)), atol=1e-3)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda x, y: (x, np.where(np.arange(len(y)) == 100, np.nan, y)), "NaN"),
        (lambda x, y: (np.where(np.arange(len(x)) == 7, np.inf, x), y), "NaN or infinite"),
        (lambda x, y: (x, y - 0.5 * y.max()), "does not look like a diffraction intensity"),
        (lambda x, y: (x, y[:-1]), "intensity has"),
        (lambda x, y: (x, np.zeros_like(y)), "no positive intensity"),
        (lambda x, y: (x + 200, y), "between 0 and 180"),
    ],
)
def test_broken_measurements_raise_naming_the_row(rruff, damage, message):
    two_theta, intensity = damage(*_real_pattern(rruff))
    X = pd.DataFrame({"material_id": ["rruff-x"], "two_theta": [two_theta], "intensity": [intensity]})
    with pytest.raises(InvalidInputError, match=message) as info:
        MeasuredXRD().fit_transform(X)
    assert info.value.row == "rruff-x"


@pytest.mark.parametrize("wavelength", [0.0, -1.5, "XxKa"])
def test_bad_wavelength_raises(rruff, wavelength):
    two_theta, intensity = _real_pattern(rruff)
    with pytest.raises(InvalidInputError, match="wavelength|radiation"):
        resample_measured(two_theta, intensity, wavelength)


def test_xrd_pair_cells_and_array_columns_agree(rruff):
    frame = rruff.iloc[:4]
    from_columns = MeasuredXRD().fit_transform(frame[["two_theta", "intensity", "wavelength"]])
    pairs = pd.DataFrame({"xrd": [(x, y) for x, y in zip(frame["two_theta"], frame["intensity"], strict=True)]})
    wavelength = float(frame["wavelength"].iloc[0])  # the same for every RRUFF row
    np.testing.assert_array_equal(MeasuredXRD(wavelength=wavelength).fit_transform(pairs), from_columns)
    np.testing.assert_array_equal(MeasuredXRD(wavelength=wavelength).fit_transform(list(pairs["xrd"])), from_columns)
    assert from_columns.shape == (4, 1701)
    np.testing.assert_allclose(from_columns.max(axis=1), 1.0)
    assert list(MeasuredXRD().get_feature_names_out()) == list(XRDPattern().get_feature_names_out())
    assert clone(MeasuredXRD(background="polynomial")).get_params()["background"] == "polynomial"


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def test_read_xy_round_trips_a_real_pattern(rruff, tmp_path):
    two_theta, intensity = _real_pattern(rruff, 5)
    comma = tmp_path / "pattern.csv"
    lines = ["## RRUFF-like header", "# wavelength 1.5418", "2theta, intensity"]
    lines += [f"{x:.4f}, {y:.3f}" for x, y in zip(two_theta, intensity, strict=True)]
    comma.write_text("\n".join(lines) + "\n")
    read_x, read_y = read_xy(comma)
    np.testing.assert_allclose(read_x, two_theta, atol=1e-4)
    np.testing.assert_allclose(read_y, intensity, atol=1e-3)

    spaced = tmp_path / "pattern.xy"
    spaced.write_text("\n".join(f"{x:.4f}\t{y:.3f}  0.1" for x, y in zip(two_theta, intensity, strict=True)))
    np.testing.assert_allclose(read_xy(spaced)[1], read_y)
    np.testing.assert_array_equal(resample_measured(*read_xy(spaced)), resample_measured(read_x, read_y))


def test_read_xy_rejects_a_broken_data_line(rruff, tmp_path):
    two_theta, intensity = _real_pattern(rruff)
    path = tmp_path / "broken.xy"
    body = [f"{x} {y}" for x, y in zip(two_theta[:50], intensity[:50], strict=True)]
    body.insert(20, "12.5 oops")
    path.write_text("\n".join(body))
    with pytest.raises(InvalidInputError, match="line 21"):
        read_xy(path)


# --------------------------------------------------------------------------------------------
# background
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rolling_ball", "polynomial"])
def test_background_removal_lowers_a_real_baseline_without_negatives(rruff, method):
    # the measured pattern with the highest floor (20th percentile of its intensities)
    floors = [np.percentile(i, 20) / i.max() for i in rruff["intensity"]]
    row = rruff.iloc[[int(np.argmax(floors))]]
    raw = MeasuredXRD(normalize=None).fit_transform(row)[0]
    cleaned = MeasuredXRD(normalize=None, background=method).fit_transform(row)[0]
    assert np.percentile(cleaned, 20) < 0.5 * np.percentile(raw, 20)
    assert cleaned.min() >= 0 and np.all(cleaned <= raw + 1e-4)
    assert cleaned.argmax() == raw.argmax()


def test_background_removal_barely_touches_simulated_patterns(structures):
    clean = XRDPattern().fit_transform(structures[:6])
    for method in ("rolling_ball", "polynomial"):
        treated = remove_background(clean, method)
        assert np.all(treated >= 0)
        # peaks survive: the strongest peak keeps most of its height
        assert np.all(treated.max(axis=1) > 0.85)


# --------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------

ALL_OFF = dict(
    instrument_fwhm=(0.15, 0.15),
    crystallite_size=None,
    eta=(0.0, 0.0),
    zero_shift=None,
    displacement=None,
    strain=None,
    anisotropic_strain=None,
    preferred_orientation=None,
    intensity_noise=None,
    kalpha2=False,
    background=None,
    counts=None,
    read_noise=None,
    low_angle_cut=None,
)
ONE_AT_A_TIME = {
    "instrument_fwhm": (0.05, 0.3),
    "crystallite_size": (20.0, 100.0),
    "eta": (0.3, 1.0),
    "zero_shift": 0.1,
    "displacement": 5e-4,
    "strain": 0.02,
    "anisotropic_strain": 0.01,
    "preferred_orientation": (0.5, 0.7),
    "intensity_noise": 0.3,
    "kalpha2": True,
    "background": 0.3,
    "counts": (50.0, 500.0),
    "read_noise": 0.02,
    "low_angle_cut": 40.0,
}


@pytest.fixture(scope="module")
def sticks_augmenter(structures):
    return XRDAugmenter(**ALL_OFF).fit(structures)


def test_unaugmented_sticks_reproduce_the_simulated_pattern(structures, sticks_augmenter):
    clean = XRDPattern().fit_transform(structures)
    drawn = sticks_augmenter.sample(random_state=0)
    for a, b in zip(drawn, clean, strict=True):
        assert np.corrcoef(a, b)[0, 1] > 0.99
        assert abs(int(a.argmax()) - int(b.argmax())) <= 1


@pytest.mark.parametrize("name", sorted(ONE_AT_A_TIME))
def test_each_augmentation_is_seeded_finite_non_negative_and_acts(structures, sticks_augmenter, name):
    augmenter = clone(sticks_augmenter).set_params(**{name: ONE_AT_A_TIME[name]})
    augmenter.sticks_ = sticks_augmenter.sticks_  # same structures: skip recomputing the sticks
    rows = np.arange(len(structures))
    first = augmenter.sample(rows, random_state=7)
    again = augmenter.sample(rows, random_state=7)
    other = augmenter.sample(rows, random_state=8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.all(np.isfinite(first)) and first.min() >= 0
    np.testing.assert_allclose(first.max(axis=1), 1.0, rtol=1e-6)
    baseline = sticks_augmenter.sample(rows, random_state=7)
    assert np.abs(first - baseline).max() > 0.01, f"{name} changed nothing"


def test_default_augmentation_from_one_generator_across_batches(structures):
    augmenter = XRDAugmenter(random_state=3).fit(structures[:4])
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    batches_a = [augmenter.sample([0, 1, 2, 3], random_state=rng_a) for _ in range(2)]
    batches_b = [augmenter.sample([0, 1, 2, 3], random_state=rng_b) for _ in range(2)]
    np.testing.assert_array_equal(batches_a[1], batches_b[1])
    assert not np.array_equal(batches_a[0], batches_a[1])  # a fresh draw every batch
    np.testing.assert_array_equal(augmenter.transform(structures[:4]), augmenter.transform(structures[:4]))


def test_symmetrised_strain_keeps_a_cubic_crystal_cubic():
    from pymatgen.core import Lattice, Structure

    from skmat.features.augment import _point_group_rotations

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    rotations = _point_group_rotations(nacl, symprec=0.1)
    assert len(rotations) == 48
    strain = _symmetric_strain(np.random.default_rng(0), rotations, isotropic=0.0, anisotropic=0.05)
    np.testing.assert_allclose(strain, np.eye(3) * strain[0, 0], atol=1e-12)
    # a P-1 cell (identity and inversion only) keeps an anisotropic strain
    oblique = Structure(Lattice.from_parameters(5, 6, 7, 80, 85, 95), ["Si", "O"], [[0.1, 0.2, 0.3], [0.6, 0.7, 0.2]])
    rotations = _point_group_rotations(oblique, symprec=0.1)
    assert len(rotations) <= 2
    strain = _symmetric_strain(np.random.default_rng(0), rotations, isotropic=0.0, anisotropic=0.05)
    assert np.abs(strain - np.eye(3) * strain[0, 0]).max() > 1e-3


def test_augment_patterns_on_grid_is_seeded_and_non_negative(structures):
    clean = XRDPattern().fit_transform(structures[:5])
    first = augment_patterns(clean, 5)
    np.testing.assert_array_equal(first, augment_patterns(clean, 5))
    assert not np.array_equal(first, augment_patterns(clean, 6))
    assert np.all(np.isfinite(first)) and first.min() >= 0
    np.testing.assert_allclose(first.max(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        augment_patterns(clean - 1, 0)


def test_augmenter_rejects_bad_settings(structures):
    with pytest.raises(ValueError, match="eta"):
        XRDAugmenter(eta=(0.5, 2.0)).fit(structures[:1])
    with pytest.raises(ValueError, match="instrument_fwhm"):
        XRDAugmenter(instrument_fwhm=None).fit(structures[:1])
    assert "MoKa" in WAVELENGTHS


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_lattice_scale_puts_peaks_where_the_scaled_structure_has_them(structures, scale):
    from scipy.signal import find_peaks

    structure = structures[0]
    augmenter = XRDAugmenter(**ALL_OFF, lattice_scale=(scale, scale)).fit([structure])
    drawn = augmenter.sample(random_state=0)[0]
    scaled = structure.copy()
    scaled.scale_lattice(structure.volume * scale**3)  # twice the cell: reflections beyond 2/λ come in
    reference = XRDPattern().fit_transform([scaled])[0]
    drawn_peaks, _ = find_peaks(drawn, height=0.05)
    reference_peaks, _ = find_peaks(reference, height=1e-4)
    assert len(drawn_peaks) >= 3
    # form factors stay those of the unscaled lattice, so heights differ; positions must not
    distance = np.abs(drawn_peaks[:, None] - reference_peaks[None, :]).min(axis=1)
    assert distance.max() <= 1


def test_lattice_scale_is_seeded_finite_non_negative_and_acts(structures):
    augmenter = XRDAugmenter(lattice_scale=(1.0, 2.0)).fit(structures[:4])
    unscaled = clone(augmenter).set_params(lattice_scale=None).fit(structures[:4])
    first = augmenter.sample(random_state=5)
    np.testing.assert_array_equal(first, augmenter.sample(random_state=5))
    assert np.all(np.isfinite(first)) and first.min() >= 0
    np.testing.assert_allclose(first.max(axis=1), 1.0, rtol=1e-6)
    # larger cells: the first strong peak comes earlier
    grid = augmenter.two_theta_grid()
    first_strong = lambda patterns: np.mean([grid[np.argmax(p > 0.2)] for p in patterns])  # noqa: E731
    assert first_strong(first) < first_strong(unscaled.sample(random_state=5))
    with pytest.raises(ValueError, match="lattice_scale"):
        XRDAugmenter(lattice_scale=(2.0, 1.0)).fit(structures[:1])
