"""DOS resampling/normalisation and charge density scaling (skmat.features.spectra)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from skmat.exceptions import InvalidInputError
from skmat.features.spectra import (
    DOSResampler,
    dos_energy_grid,
    normalize_charge_density,
    normalize_dos,
    resample_dos,
)


def _dos(energy, density):
    return np.stack([np.asarray(energy, float), np.asarray(density, float)])


# ----------------------------------------------------------------------------- resampling


def test_resample_matches_hand_computed_interpolation():
    # peak of 8 at 0.5 eV, falling linearly to 2 at -1 and at 2 eV; grid step 0.5 eV
    dos = _dos([-1.0, 0.5, 2.0], [2.0, 8.0, 2.0])
    out = resample_dos([dos], energy_window=(-1.0, 2.0), n_points=7)
    # at -0.5: 2 + 6 * (0.5 / 1.5) = 4; at 0: 2 + 6 * (1 / 1.5) = 6; symmetric on the way down
    np.testing.assert_allclose(out[0], [2.0, 4.0, 6.0, 8.0, 6.0, 4.0, 2.0], rtol=1e-6)
    assert out.dtype == np.float32


def test_zero_outside_each_materials_own_range_and_grids_may_differ():
    narrow = _dos([-1.0, 0.0, 1.0], [1.0, 1.0, 1.0])
    wide = _dos(np.linspace(-5, 5, 11), np.arange(11.0))
    out = resample_dos([narrow, wide], energy_window=(-3.0, 3.0), n_points=7)
    np.testing.assert_array_equal(out[0], [0, 0, 1, 1, 1, 0, 0])
    # density equals energy + 5 on the wide grid, so it is linear and exact at every grid point
    np.testing.assert_allclose(out[1], dos_energy_grid((-3.0, 3.0), 7) + 5.0, rtol=1e-6)


def test_array_input_of_shape_n_2_L_equals_list_input(rng):
    energy = np.sort(rng.uniform(-12, 12, size=(3, 50)), axis=1)
    energy[:, 0], energy[:, -1] = -12.5, 12.5
    stacked = np.stack([energy, rng.uniform(0, 3, size=(3, 50))], axis=1)
    np.testing.assert_array_equal(
        resample_dos(stacked, n_points=40), resample_dos(list(stacked), n_points=40)
    )


def test_missing_dos_gives_nan_row():
    out = resample_dos([None, _dos([-1, 1], [1, 1]), float("nan")], n_points=5)
    assert np.isnan(out[0]).all() and np.isnan(out[2]).all()
    assert np.isfinite(out[1]).all()


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.zeros((3, 10)), "shape (2, L)"),
        (np.zeros((10, 2)), "transposed"),
        (_dos([-1.0, np.nan, 1.0], [1, 1, 1]), "energy contains NaN"),
        (_dos([-1.0, 0.0, 1.0], [1, np.inf, 1]), "density contains NaN or inf"),
        (_dos([-1.0, 1.0, 0.5], [1, 1, 1]), "strictly increasing"),
        (_dos([-1.0, -1.0, 1.0], [1, 1, 1]), "strictly increasing"),
        (_dos([3.0, 4.0, 5.0], [1, 1, 1]), "does not contain 0"),
        (_dos([0.0], [1.0]), "at least 2"),
        ("not a dos", "numeric"),
    ],
)
def test_invalid_dos_raises_naming_row_and_view(bad, words):
    good = _dos([-1.0, 1.0], [1.0, 1.0])
    with pytest.raises(InvalidInputError, match="row 2") as info:
        resample_dos([good, good, bad, good], n_points=8)
    assert info.value.row == 2 and info.value.view == "dos"
    assert words in str(info.value)


def test_container_errors():
    with pytest.raises(InvalidInputError, match="wrap one DOS in a list"):
        resample_dos(_dos([-1, 1], [1, 1]))
    with pytest.raises(InvalidInputError, match="got dict"):
        resample_dos({"dos": 1})
    with pytest.raises(ValueError, match="energy_window"):
        resample_dos([_dos([-1, 1], [1, 1])], energy_window=(1.0, -1.0))
    with pytest.raises(ValueError, match="n_points"):
        resample_dos([_dos([-1, 1], [1, 1])], n_points=1)


# ----------------------------------------------------------------------------- normalisation


def test_normalize_dos_methods():
    rows = np.array([[0.0, 1.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0], [np.nan] * 4], dtype=np.float32)
    area = normalize_dos(rows, "area")
    np.testing.assert_allclose(area[0].mean(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(area[0], rows[0] / 1.0, rtol=1e-6)  # mean of row 0 is 1 already
    np.testing.assert_allclose(normalize_dos(rows * 5, "area")[0], area[0], rtol=1e-6)
    peak = normalize_dos(rows, "max")
    np.testing.assert_allclose(peak[0], [0, 1 / 3, 1, 0], rtol=1e-6)
    for out in (area, peak):
        np.testing.assert_array_equal(out[1], 0.0)  # nothing to rescale: stays 0, no NaN
        assert np.isnan(out[2]).all()  # missing stays missing
    np.testing.assert_array_equal(normalize_dos(rows, "none")[0], rows[0])
    with pytest.raises(ValueError, match="normalize"):
        normalize_dos(rows, "l2")


def test_area_normalisation_makes_supercell_dos_equal_to_primitive():
    energy = np.linspace(-15, 15, 700)
    primitive = _dos(energy, np.exp(-((energy - 1.0) ** 2)) + 0.2)
    supercell = _dos(energy, 2.0 * primitive[1])  # twice the atoms: twice the states per cell
    out = DOSResampler(n_points=64).fit_transform([primitive, supercell])
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)
    raw = DOSResampler(n_points=64, normalize="none").fit_transform([primitive, supercell])
    np.testing.assert_allclose(raw[1], 2 * raw[0], rtol=1e-6)


# ----------------------------------------------------------------------------- transformer


def test_resampler_on_dataframe_names_rows_by_material_id():
    frame = pd.DataFrame(
        {"material_id": ["mp-1", "mp-2"], "dos": [_dos([-1, 1], [1, 2]), _dos([1, -1], [1, 1])]},
        index=[10, 11],
    )
    with pytest.raises(InvalidInputError, match="row 'mp-2', view 'dos'"):
        DOSResampler(n_points=8).fit_transform(frame)
    with pytest.raises(InvalidInputError, match="no 'dos' column"):
        DOSResampler().fit_transform(frame.rename(columns={"dos": "spectrum"}))


def test_resampler_pandas_output_and_params():
    frame = pd.DataFrame({"dos": [_dos([-2, 2], [1, 3]), None]}, index=["a", "b"])
    resampler = DOSResampler(energy_window=(-1.0, 1.0), n_points=5, normalize="none")
    resampler.set_output(transform="pandas")
    out = resampler.fit_transform(frame)
    assert list(out.index) == ["a", "b"]
    assert list(out.columns) == ["dos_-1.000eV", "dos_-0.500eV", "dos_0.000eV", "dos_0.500eV", "dos_1.000eV"]
    np.testing.assert_allclose(out.loc["a"].to_numpy(), [1.5, 1.75, 2.0, 2.25, 2.5], rtol=1e-6)
    assert out.loc["b"].isna().all()
    np.testing.assert_array_equal(resampler.energy_grid_, dos_energy_grid((-1.0, 1.0), 5))
    assert clone(resampler).get_params()["n_points"] == 5
    names = DOSResampler(n_points=20001).get_feature_names_out()
    assert len(set(names)) == len(names)
    with pytest.raises(ValueError, match="normalize"):
        DOSResampler(normalize="l2").fit([_dos([-1, 1], [1, 1])])


# ----------------------------------------------------------------------------- real DOS


def test_real_multimat_dos_keeps_states_in_window(multimat_arrays):
    rows = np.flatnonzero(multimat_arrays["dos_exists"])[:12]
    dos = multimat_arrays["dos"][rows]
    grid = dos_energy_grid(n_points=1024)
    out = resample_dos(dos, n_points=1024)
    assert out.shape == (12, 1024) and np.isfinite(out).all() and (out >= 0).all()
    for original, resampled in zip(dos.astype(np.float64), out, strict=True):
        energy, density = original
        low, high = max(-10.0, energy[0]), min(10.0, energy[-1])
        fine = np.linspace(low, high, 100_001)
        states = np.trapezoid(np.interp(fine, energy, density), fine)
        # number of states in the window survives resampling onto the coarser fixed grid
        assert np.trapezoid(resampled, grid) == pytest.approx(states, rel=2e-3)


def test_real_multimat_bad_rows_are_named(multimat_arrays):
    frame = pd.DataFrame({"material_id": multimat_arrays["material_id"], "dos": list(multimat_arrays["dos"])})
    absent = np.flatnonzero(~multimat_arrays["dos_exists"])[0]  # all-zero placeholder: energies not increasing
    with pytest.raises(InvalidInputError) as info:
        DOSResampler().fit_transform(frame.iloc[[absent]])
    assert info.value.row == multimat_arrays["material_id"][absent]
    # mp-696961 starts with a corrupted run of repeated then falling energies: refused, not sorted
    corrupted = np.flatnonzero(multimat_arrays["material_id"] == "mp-696961")
    assert corrupted.size == 1 and multimat_arrays["dos_exists"][corrupted[0]]
    with pytest.raises(InvalidInputError, match="row 'mp-696961'.*strictly increasing"):
        DOSResampler().fit_transform(frame.iloc[corrupted])
    present = frame[multimat_arrays["dos_exists"] & (frame.material_id != "mp-696961")].iloc[:20]
    out = DOSResampler().fit_transform(present)
    np.testing.assert_allclose(out.mean(axis=1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------- charge density


def test_charge_density_scaling_is_invariant_to_electron_count(rng):
    rho = rng.gamma(2.0, 5.0, size=(2, 6, 6, 6))
    for method in ("mean", "log_mean"):
        base = normalize_charge_density(rho, method=method)
        np.testing.assert_allclose(normalize_charge_density(rho * 37.0, method=method), base, rtol=1e-5)
    relative = normalize_charge_density(rho, method="mean")
    np.testing.assert_allclose(relative.mean(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(normalize_charge_density(rho), np.log1p(relative), rtol=1e-5)


def test_charge_density_negative_values_are_clipped_under_log():
    rho = np.full((4, 4, 4), 10.0)
    rho[0, 0, 0] = -5.0
    out = normalize_charge_density(rho)
    assert out[0, 0, 0] == 0.0 and (out > 0).sum() == 63
    assert out.shape == (4, 4, 4)  # one grid in, one grid out


def test_charge_density_sequence_with_missing_grid():
    grid = np.ones((3, 3, 3))
    out = normalize_charge_density([grid, None, 2 * grid], method="mean")
    assert out.shape == (3, 3, 3, 3)
    assert np.isnan(out[1]).all()
    np.testing.assert_allclose(out[[0, 2]], 1.0)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.ones((4, 4)), "3-D grid"),
        (np.ones((4, 4, 5)), "differs from the first grid"),
        (np.where(np.eye(4)[None] > 0, np.nan, 1.0).repeat(4, 0), "NaN or inf"),
        (-np.ones((4, 4, 4)), "must be positive"),
    ],
)
def test_invalid_charge_density_raises_naming_row(bad, words):
    good = np.ones((4, 4, 4))
    with pytest.raises(InvalidInputError, match="row 1, view 'charge_density'") as info:
        normalize_charge_density([good, bad, good])
    assert words in str(info.value)


def test_charge_density_container_errors():
    with pytest.raises(InvalidInputError, match="shape"):
        normalize_charge_density(np.ones((2, 2, 4, 4, 4)))
    with pytest.raises(InvalidInputError, match="all missing"):
        normalize_charge_density([None, None])
    with pytest.raises(ValueError, match="method"):
        normalize_charge_density(np.ones((2, 2, 2)), method="max")


def test_real_multimat_charge_density(multimat_arrays):
    rows = np.flatnonzero(multimat_arrays["charge_density_exists"])[:6]
    raw = multimat_arrays["charge_density"][rows]  # float16, rho * V_cell, some negative voxels
    out = normalize_charge_density(raw)
    assert out.shape == (6, 32, 32, 32) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0
    # ordering of voxels is kept (log1p of a positive rescaling is monotone)
    flat_raw, flat_out = raw[0].astype(np.float32).ravel(), out[0].ravel()
    positive = flat_raw > 0
    assert np.all(np.diff(flat_out[positive][np.argsort(flat_raw[positive])]) >= 0)
    absent = np.flatnonzero(~multimat_arrays["charge_density_exists"])[0]  # all zeros: no electrons
    with pytest.raises(InvalidInputError, match="row 0.*must be positive"):
        normalize_charge_density(multimat_arrays["charge_density"][[absent]])
