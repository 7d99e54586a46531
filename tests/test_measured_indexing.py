"""Indexing measured patterns without a composition: satellites, cubic cells from the peaks alone
(skmat.features.indexing), on real MP-20 structures and the measured RRUFF patterns."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from skmat.datasets import fetch_rruff_xrd
from skmat.exceptions import InvalidInputError
from skmat.features.indexing import index_cubic, indexes_as_cubic, measured_peaks, satellite_peaks
from skmat.features.xrd import compute_peaks


@pytest.fixture(scope="module")
def by_system(mp20_val_rows):
    """(structure, conventional a) of the MP-20 val rows of the fixture, by crystal system."""
    out: dict = {}
    for structure in mp20_val_rows["structure"]:
        sga = SpacegroupAnalyzer(structure, symprec=0.1)
        out.setdefault(sga.get_crystal_system(), []).append(
            (structure, sga.get_conventional_standard_structure().lattice.a))
    return out


def test_kalpha2_and_kbeta_lines_are_satellites_and_the_kalpha1_lines_are_not(by_system):
    structure, _ = by_system["cubic"][0]
    kalpha1, heights = compute_peaks(structure, wavelength="CuKa1")
    kalpha2, _ = compute_peaks(structure, wavelength="CuKa2")
    kbeta, _ = compute_peaks(structure, wavelength="CuKb1")
    # the tube's lines of the same reflections: Kα2 half as strong, Kβ (behind a filter) a tenth
    two_theta = np.r_[kalpha1, kalpha2[: len(kalpha1)], kbeta[: len(kalpha1)]]
    height = np.r_[heights, 0.5 * heights[: len(kalpha2)], 0.1 * heights[: len(kbeta)]]
    satellite = satellite_peaks(two_theta, height, "CuKa")
    n = len(kalpha1)
    assert not satellite[:n].any()
    assert satellite[n:].mean() >= 0.9
    # the same wavelength as a number
    np.testing.assert_array_equal(satellite_peaks(two_theta, height, 1.5418), satellite)
    # one line (a monochromator's Kα1, a synchrotron): no satellites
    assert not satellite_peaks(two_theta, height, "CuKa1").any()
    assert not satellite_peaks(two_theta, height, 0.9).any()


def test_satellite_peaks_rejects_bad_input():
    with pytest.raises(InvalidInputError, match="3 peak positions but 2 heights"):
        satellite_peaks([20.0, 30.0, 40.0], [1.0, 2.0])
    with pytest.raises(InvalidInputError, match="finite"):
        satellite_peaks([20.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="unknown radiation"):
        satellite_peaks([20.0, 30.0], [1.0, 2.0], "CuKz")


def test_real_cubic_cells_are_found_from_the_peaks_alone(by_system):
    for structure, a in by_system["cubic"][:12]:
        peaks, _ = compute_peaks(structure)
        result = index_cubic(peaks + 0.04)  # a zero shift, refined
        assert result.converged and result.figure_of_merit > 40
        assert result.cell[0] == pytest.approx(a, rel=2e-3)
        assert result.zero_shift == pytest.approx(0.04, abs=5e-3)
        assert indexes_as_cubic(peaks)


def test_other_crystal_systems_rarely_index_as_cubic(by_system):
    others = [s for system, rows in by_system.items() if system != "cubic" for s, _ in rows]
    indexed = sum(indexes_as_cubic(compute_peaks(structure)[0]) for structure in others)
    # 2 of the 150: a pseudo-cubic hexagonal and a pseudo-cubic tetragonal cell
    assert len(others) >= 100 and indexed <= 2


def test_measured_rruff_patterns_index_as_cubic_only_when_cubic(data_home):
    frame = fetch_rruff_xrd(data_home=data_home).frame
    cubic = np.array([
        indexes_as_cubic(measured_peaks(x, y, w, row=i)[0], w)
        for i, (x, y, w) in enumerate(zip(frame["two_theta"], frame["intensity"], frame["wavelength"], strict=True))
    ])
    truth = frame["crystal_system"].to_numpy()
    # the figures of indexes_as_cubic's docstring: 27 of the 39 cubic patterns, no other
    assert (truth == "cubic").sum() == 39
    assert cubic.sum() == 27 and np.all(truth[cubic] == "cubic")


def test_satellites_dropped_are_what_lets_measured_cubic_patterns_index(data_home):
    frame = fetch_rruff_xrd(data_home=data_home).frame
    rows = np.flatnonzero(frame["crystal_system"].to_numpy() == "cubic")
    with_satellites = without = 0
    for i in rows:
        x, y, w = frame["two_theta"][i], frame["intensity"][i], frame["wavelength"][i]
        with_satellites += indexes_as_cubic(measured_peaks(x, y, w, drop_satellites=False)[0], w)
        without += indexes_as_cubic(measured_peaks(x, y, w)[0], w)
    assert without >= with_satellites + 8


def test_measured_peaks_names_the_row_of_bad_input():
    grid = np.arange(10, 60, 0.02)
    counts = 50 + 1000 * np.exp(-0.5 * ((grid - 30) / 0.05) ** 2)
    bad = counts.copy()
    bad[7] = np.nan
    with pytest.raises(InvalidInputError, match="NaN") as error:
        measured_peaks(grid, bad, row="sample-3")
    assert error.value.row == "sample-3"
    with pytest.raises(InvalidInputError, match="2θ has 2500 values but intensity has 2499"):
        measured_peaks(grid, counts[:-1], row=0)
    original = counts.copy()
    measured_peaks(grid, counts)
    np.testing.assert_array_equal(counts, original)  # nothing the caller passed is changed
