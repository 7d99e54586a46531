"""Inverse design by retrieval on real MultiMat rows: the DOS mismatch and best-of-n scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _helpers import tiny_aligner, tiny_encoder
from skmat.exceptions import InvalidInputError
from skmat.inverse_design import dos_mismatch, inverse_design_scores

N_ROWS = 48


@pytest.fixture(scope="module")
def arrays(data_home):
    with np.load(data_home / "multimat_sample" / "multimat_sample.npz") as npz:
        return {key: npz[key] for key in ("material_id", "dos", "dos_exists", "charge_density", "charge_density_exists")}


@pytest.fixture(scope="module")
def rows(arrays):
    """The first N_ROWS materials with a readable DOS and a charge density, indexed by id."""
    usable = arrays["dos_exists"] & arrays["charge_density_exists"] & (arrays["material_id"] != "mp-696961")
    picked = np.flatnonzero(usable)[:N_ROWS]
    return pd.DataFrame(
        {
            "dos": [arrays["dos"][i].astype(np.float64) for i in picked],
            "charge_density": [arrays["charge_density"][i].astype(np.float32) for i in picked],
        },
        index=pd.Index(arrays["material_id"][picked], name="material_id"),
    )


@pytest.fixture(scope="module")
def aligner(rows):
    encoders = [(kind, tiny_encoder(kind, out_dim=16)) for kind in ("dos", "charge_density")]
    return tiny_aligner(encoders=encoders).fit(rows)


def _window_integral(dos, window=(-5.0, 5.0), n=20001):
    grid = np.linspace(*window, n)
    return np.trapezoid(np.interp(grid, dos[0], dos[1], left=0, right=0), grid)


# -- dos_mismatch ------------------------------------------------------------------------------
def test_identical_dos_has_zero_mismatch(rows):
    for dos in rows["dos"].iloc[:5]:
        assert dos_mismatch(dos, dos) == 0.0


@pytest.mark.parametrize("factor", [2.0, 0.25, 1.1])
def test_scaled_dos_mismatch_is_the_scale_difference(rows, factor):
    dos = rows["dos"].iloc[3]
    scaled = np.stack([dos[0], factor * dos[1]])
    assert dos_mismatch(dos, scaled) == pytest.approx(abs(1 - factor), rel=1e-6)  # float32 resampling


def test_empty_found_dos_has_mismatch_one(rows):
    dos = rows["dos"].iloc[7]
    assert dos_mismatch(dos, np.stack([dos[0], np.zeros_like(dos[1])])) == pytest.approx(1.0)


def test_same_density_on_another_grid_matches(rows):
    # inserting the midpoints keeps the piecewise-linear DOS the same function on a new grid
    energy, density = rows["dos"].iloc[2]
    mid_energy = (energy[:-1] + energy[1:]) / 2
    mid_density = (density[:-1] + density[1:]) / 2
    order = np.argsort(np.r_[energy, mid_energy])
    regridded = np.stack([np.r_[energy, mid_energy][order], np.r_[density, mid_density][order]])
    assert dos_mismatch(rows["dos"].iloc[2], regridded) < 1e-9


def test_two_real_materials_match_an_independent_fine_integral(rows):
    a, b = rows["dos"].iloc[0], rows["dos"].iloc[1]
    grid = np.linspace(-5, 5, 20001)
    difference = np.abs(np.interp(grid, a[0], a[1], left=0, right=0) - np.interp(grid, b[0], b[1], left=0, right=0))
    expected = np.trapezoid(difference, grid) / _window_integral(a)
    assert dos_mismatch(a, b) == pytest.approx(expected, rel=1e-2)
    # the numerator is symmetric, the denominator is the target's
    assert dos_mismatch(a, b) * _window_integral(a) == pytest.approx(dos_mismatch(b, a) * _window_integral(b), rel=1e-2)


def test_window_restricts_the_comparison(rows):
    # a DOS that agrees with the target above E_F and is empty below it
    dos = rows["dos"].iloc[5]
    upper_only = np.stack([dos[0], np.where(dos[0] >= 0, dos[1], 0.0)])
    assert dos_mismatch(dos, upper_only, window=(0.5, 5.0)) == pytest.approx(0.0, abs=1e-12)
    below = _window_integral(dos, (-5.0, 0.0))
    assert dos_mismatch(dos, upper_only) == pytest.approx(below / _window_integral(dos), rel=2e-2)


def test_corrupt_and_empty_targets_are_refused(arrays, rows):
    corrupt = arrays["dos"][list(arrays["material_id"]).index("mp-696961")]
    with pytest.raises(InvalidInputError, match="strictly increasing"):
        dos_mismatch(rows["dos"].iloc[0], corrupt)
    dos = rows["dos"].iloc[0]
    with pytest.raises(InvalidInputError, match="integrates to 0"):
        dos_mismatch(np.stack([dos[0], np.zeros_like(dos[1])]), dos)
    with pytest.raises(ValueError, match="low < high"):
        dos_mismatch(dos, dos, window=(5, -5))


# -- inverse_design_scores ---------------------------------------------------------------------
def test_scores_follow_the_retrieval_order(aligner, rows):
    queries, database = rows.iloc[:10], rows.iloc[10:]
    result = inverse_design_scores(aligner, queries, database, view="charge_density", n_max=15)
    assert result.mismatch.shape == result.best_of_n.shape == result.random_best_of_n.shape == (10, 15)
    # the retrieval is the cosine ranking of the aligner's own embeddings
    similarity = aligner.embed(queries, "dos") @ aligner.embed(database, "charge_density").T
    expected_first = database.index[np.argmax(similarity, axis=1)]
    np.testing.assert_array_equal(result.retrieved[:, 0], expected_first)
    assert (np.diff(result.similarity, axis=1) <= 1e-6).all()
    # each score is the mismatch of the retrieved material's own DOS
    for i in (0, 4):
        for j in (0, 6):
            found = database.loc[result.retrieved[i, j], "dos"]
            assert result.mismatch[i, j] == pytest.approx(dos_mismatch(queries["dos"].iloc[i], found), rel=1e-9)
    assert (np.diff(result.best_of_n, axis=1) <= 0).all()
    np.testing.assert_allclose(result.best_of_n[:, 0], result.mismatch[:, 0])
    assert (result.best_possible <= result.best_of_n[:, -1] + 1e-12).all()


def test_random_baseline_is_the_exact_expectation(aligner, rows):
    queries, database = rows.iloc[:4], rows.iloc[4:]
    result = inverse_design_scores(aligner, queries, database, n_max=5)
    all_mismatch = np.array([[dos_mismatch(q, d) for d in database["dos"]] for q in queries["dos"]])
    # one random material: the database mean
    np.testing.assert_allclose(result.random_best_of_n[:, 0], all_mismatch.mean(axis=1), rtol=1e-9)
    # n random materials: matches a Monte Carlo estimate
    rng = np.random.default_rng(0)
    draws = np.array([rng.choice(len(database), size=5, replace=False) for _ in range(4000)])
    monte_carlo = all_mismatch[:, draws].min(axis=2).mean(axis=1)
    np.testing.assert_allclose(result.random_best_of_n[:, 4], monte_carlo, rtol=0.05)
    assert (np.diff(result.random_best_of_n, axis=1) <= 1e-12).all()
    np.testing.assert_allclose(result.best_possible, all_mismatch.min(axis=1))
    summary = result.summary()
    np.testing.assert_array_equal(summary["n"], np.arange(1, 6))


def test_self_is_found_or_excluded(aligner, rows):
    queries = rows.iloc[:6]
    kept = inverse_design_scores(aligner, queries, rows, n_max=rows.shape[0])
    # with the whole database retrieved, each target's own material is among them at mismatch 0
    assert (kept.best_of_n[:, -1] == 0).all()
    excluded = inverse_design_scores(aligner, queries, rows, n_max=10, exclude_same_index=True)
    assert not (excluded.retrieved == np.asarray(queries.index)[:, None]).any()
    assert excluded.n_database == len(rows) - 1
    assert (excluded.best_possible > 0).all()


def test_bad_inputs_name_the_row(aligner, rows):
    database = rows.iloc[10:30].copy()
    with pytest.raises(InvalidInputError, match="n_max=25"):
        inverse_design_scores(aligner, rows.iloc[:2], database, n_max=25)
    database["dos"] = database["dos"].astype(object)
    database.iloc[3, database.columns.get_loc("dos")] = None
    with pytest.raises(InvalidInputError) as error:
        inverse_design_scores(aligner, rows.iloc[:2], database, n_max=5)
    assert error.value.row == database.index[3] and error.value.view == "dos"
    with pytest.raises(InvalidInputError, match="no column 'structure'"):
        inverse_design_scores(aligner, rows.iloc[:2], database, view="structure")
