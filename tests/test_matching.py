"""Shift-tolerant pattern similarity and the leak-control rule, on patterns of real structures."""

from __future__ import annotations

import numpy as np
import pytest

from skmat.exceptions import InvalidInputError
from skmat.features import XRDPattern
from skmat.features.matching import matched_references, pattern_similarity


@pytest.fixture(scope="module")
def simulated(bundled_structures):
    featurizer = XRDPattern()
    return featurizer, featurizer.fit_transform(bundled_structures), bundled_structures


def test_a_strained_copy_matches_its_own_structure_best(simulated):
    featurizer, references, structures = simulated
    grid = featurizer.two_theta_grid()
    # the same crystals with lattices 2 % larger: every peak moves, no plain cosine survives that
    strained = []
    for structure in structures:
        copy = structure.copy()
        copy.scale_lattice(structure.volume * 1.02**3)
        strained.append(copy)
    queries = featurizer.transform(strained)
    tolerant = pattern_similarity(queries, references, grid)
    assert tolerant.shape == (len(structures), len(structures)) and tolerant.dtype == np.float32
    assert np.all(tolerant.argmax(axis=1) == np.arange(len(structures)))
    assert np.all(np.diag(tolerant) > 0.95)
    rigid = pattern_similarity(queries, references, grid, scale_range=(1.0, 1.0), n_scales=1)
    assert np.mean(np.diag(rigid)) < np.mean(np.diag(tolerant)) - 0.2
    # rescaling the patterns instead of the references finds the same crystals, with close scores
    moved = pattern_similarity(queries, references, grid, scale="patterns")
    assert np.all(moved.argmax(axis=1) == np.arange(len(structures)))
    assert np.abs(moved - tolerant).max() < 0.1 and np.all(np.diag(moved) > 0.95)
    with pytest.raises(InvalidInputError, match="scale must be"):
        pattern_similarity(queries, references, grid, scale="both")


def test_similarity_is_a_cosine_in_0_1_and_one_for_itself(simulated):
    featurizer, references, _ = simulated
    same = pattern_similarity(references, references, featurizer.two_theta_grid())
    assert np.allclose(np.diag(same), 1.0, atol=1e-5)
    assert same.min() >= 0.0 and same.max() <= 1.0 + 1e-6


def test_inputs_are_not_mutated(simulated):
    featurizer, references, _ = simulated
    before = references.copy()
    pattern_similarity(references[:3], references, featurizer.two_theta_grid())
    np.testing.assert_array_equal(references, before)


def test_bad_input_is_refused(simulated):
    featurizer, references, _ = simulated
    grid = featurizer.two_theta_grid()
    with_nan = references[:2].copy()
    with_nan[1, 10] = np.nan
    with pytest.raises(InvalidInputError, match="row 1 contains NaN"):
        pattern_similarity(with_nan, references, grid)
    with pytest.raises(InvalidInputError, match="share one grid"):
        pattern_similarity(references[:, :-1], references, grid)
    with pytest.raises(InvalidInputError, match="2-D"):
        pattern_similarity(references[0], references, grid)
    with pytest.raises(InvalidInputError, match="scale_range"):
        pattern_similarity(references, references, grid, scale_range=(1.01, 1.04))


def test_a_matched_phase_leaves_with_all_its_entries():
    similarity = np.array([[0.80, 0.10, 0.70, 0.20], [0.30, 0.74, 0.10, 0.76]])
    phases = ["galena", "pyrite", "galena", None]
    assert matched_references(similarity, phases, threshold=0.75).tolist() == [True, False, True, True]
    assert matched_references(similarity, threshold=0.75).tolist() == [True, False, False, True]
    # an unnamed reference never drags other unnamed ones along
    assert matched_references(similarity, [None, None, None, None], threshold=0.75).tolist() == [
        True, False, False, True,
    ]  # fmt: skip
    with pytest.raises(InvalidInputError, match="3 entries for 4 references"):
        matched_references(similarity, phases[:3])
