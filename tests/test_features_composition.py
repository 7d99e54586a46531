"""CompositionFeatures: matminer's Magpie numbers, from every input form, fast."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Element, Species
from sklearn.base import clone

from skmat.exceptions import InvalidInputError
from skmat.features.composition import (
    MAGPIE_PROPERTIES,
    CompositionFeatures,
    magpie_element_table,
    magpie_feature_names,
    magpie_features,
)

# float32 keeps 24 bits: two ulps of relative error covers the float64 -> float32 rounding
FLOAT32_RTOL = 2 * np.finfo(np.float32).eps


@pytest.fixture(scope="module")
def matminer_magpie():
    from matminer.featurizers.composition import ElementProperty

    return ElementProperty.from_preset("magpie")


def _matminer_features(featurizer, compositions) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([featurizer.featurize(c) for c in compositions], dtype=np.float64)


def _edge_compositions() -> list[Composition]:
    return [
        Composition("Fe0.5Co0.5O"),
        Composition("Li0.33CoO2"),
        Composition("NaCl"),  # mode tie: the smaller value wins
        Composition({"Fe": 1.0, "Co": 1.0 + 1e-7}),  # tie only under np.isclose
        Composition("Fe"),  # one element: range and avg_dev are 0
        Composition({Species("Fe", 2): 1, Species("Fe", 3): 2, Species("O", -2): 4}),
        Composition({Species("Li", 1): 0.5, Species("Co", 3.5): 1, Species("O", -2): 2}),
        Composition("OgH2"),  # Og lacks most Magpie data: matminer imputes the element mean
        Composition("Pu2Am3Cf"),
    ]


def test_feature_names_equal_matminer_labels(matminer_magpie):
    names = CompositionFeatures().fit(["NaCl"]).get_feature_names_out()
    assert list(names) == matminer_magpie.feature_labels()
    assert len(names) == 132 and names[0] == "MagpieData minimum Number"


def test_element_table_equals_matminer_imputed_data():
    from matminer.utils.data import MagpieData

    data = MagpieData(impute_nan=True)
    table = magpie_element_table()

    expected = np.array(
        [[data.get_elemental_property(Element.from_Z(z), p) for p in MAGPIE_PROPERTIES] for z in range(1, 119)]
    )
    np.testing.assert_allclose(table[1:], expected, rtol=1e-12, atol=0)
    assert np.all(np.isfinite(table[1:]))


def test_equal_to_matminer_on_mp20(mp20_val_rows, matminer_magpie):
    cell_compositions = [s.composition for s in mp20_val_rows["structure"]]
    reduced_compositions = [Composition(f) for f in mp20_val_rows["pretty_formula"]]
    compositions = cell_compositions + reduced_compositions + _edge_compositions()
    assert len(compositions) >= 400

    expected = _matminer_features(matminer_magpie, compositions)
    got = magpie_features(compositions)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # the statistics really vary across MP-20, so the comparison above is not vacuous
    assert np.all(np.ptp(got[:200], axis=0)[3::6] > 0)  # every property's mean
    assert np.count_nonzero(np.ptp(got[:200], axis=0) > 0) >= 120


def test_transformer_output_is_float32_rounding_of_reference(mp20_val_rows, matminer_magpie):
    compositions = [s.composition for s in mp20_val_rows["structure"][:50]] + _edge_compositions()
    out = CompositionFeatures().fit_transform(compositions)
    assert out.dtype == np.float32 and out.shape == (len(compositions), 132)
    # exactly the float32 cast of the float64 computation ...
    np.testing.assert_array_equal(out, magpie_features(compositions).astype(np.float32))
    # ... hence within float32 rounding of matminer
    expected = _matminer_features(matminer_magpie, compositions)
    np.testing.assert_allclose(out, expected, rtol=FLOAT32_RTOL, atol=1e-6)


def test_mode_tie_breaking_and_species_merge():
    names = magpie_feature_names()
    number_mode = names.index("MagpieData mode Number")
    number_mean = names.index("MagpieData mean Number")
    nacl, fe2o3_species = magpie_features(
        [Composition("NaCl"), Composition({Species("Fe", 2): 1, Species("Fe", 3): 1, Species("O", -2): 1.5})]
    )
    assert nacl[number_mode] == 11  # Na (11) and Cl (17) tie; matminer takes the smaller
    # Fe2+ and Fe3+ add up to Fe2, which outweighs O1.5: the mode is iron, not oxygen
    assert fe2o3_species[number_mode] == 26
    assert fe2o3_species[number_mean] == pytest.approx((2 * 26 + 1.5 * 8) / 3.5)


def test_input_forms_give_same_result(mp20_val_rows):
    rows = mp20_val_rows.iloc[:20]
    structures = list(rows["structure"])
    compositions = [s.composition for s in structures]
    formulas = [c.formula for c in compositions]
    featurizer = CompositionFeatures()
    reference = featurizer.fit_transform(compositions)
    forms = {
        "formula strings": formulas,
        "structures": structures,
        "composition column": pd.DataFrame({"composition": compositions, "band_gap": rows["band_gap"]}),
        "formula column": pd.DataFrame({"composition": formulas}),
        "structure column": rows[["material_id", "structure"]],
    }
    for label, X in forms.items():
        np.testing.assert_allclose(featurizer.fit_transform(X), reference, rtol=1e-6, err_msg=label)
    reduced = featurizer.fit_transform(list(rows["pretty_formula"]))
    # Magpie statistics depend on atomic fractions only, so reduced and cell formulas agree
    np.testing.assert_allclose(reduced, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", ["Xx2O", "not a formula!!", ""])
def test_bad_formula_names_the_row(bad):
    frame = pd.DataFrame({"material_id": ["mp-1", "mp-2", "mp-3"], "composition": ["NaCl", bad, "MgO"]})
    featurizer = CompositionFeatures().fit(frame)
    with pytest.raises(InvalidInputError, match="mp-2") as info:
        featurizer.transform(frame)
    assert info.value.row == "mp-2" and info.value.view == "composition"


def test_unknown_element_in_list_names_the_position():
    with pytest.raises(InvalidInputError, match="Xx") as info:
        CompositionFeatures().fit_transform(["NaCl", "MgO", "Xx2O"])
    assert info.value.row == 2


def test_bad_preset_raises_at_fit_not_init():
    featurizer = CompositionFeatures(preset="deml")  # storing a bad value is allowed (sklearn)
    assert featurizer.get_params()["preset"] == "deml"
    with pytest.raises(ValueError, match="preset"):
        featurizer.fit(["NaCl"])


def test_input_not_mutated(mp20_val_rows):
    frame = mp20_val_rows.iloc[:10][["material_id", "pretty_formula", "structure"]].copy()
    frame["composition"] = frame["pretty_formula"]
    before = frame.copy()
    sites_before = [s.as_dict() for s in frame["structure"]]
    CompositionFeatures().fit_transform(frame)
    pd.testing.assert_frame_equal(frame[["material_id", "composition"]], before[["material_id", "composition"]])
    assert list(frame.columns) == list(before.columns)
    assert [s.as_dict() for s in frame["structure"]] == sites_before


def test_parallel_and_cached_results_identical(mp20_val_rows, tmp_path):
    compositions = [s.composition for s in mp20_val_rows["structure"]]
    reference = CompositionFeatures().fit_transform(compositions)

    parallel = CompositionFeatures(n_jobs=2)
    parallel._chunk_size = 64  # several chunks, so both workers get some and order matters
    np.testing.assert_array_equal(parallel.fit_transform(compositions), reference)

    cached = CompositionFeatures(memory=tmp_path)
    first = cached.fit_transform(compositions)
    second = cached.fit_transform(compositions)  # served from the joblib cache
    np.testing.assert_array_equal(first, reference)
    np.testing.assert_array_equal(second, reference)
    assert any(tmp_path.rglob("output.pkl"))


def test_clone_and_params():
    featurizer = CompositionFeatures(n_jobs=2, verbose=1)
    params = featurizer.get_params()
    assert params == {"preset": "magpie", "n_jobs": 2, "memory": None, "verbose": 1}
    copy = clone(featurizer)
    assert copy is not featurizer and copy.get_params() == params
    copy.set_params(n_jobs=1)
    assert featurizer.n_jobs == 2


def test_empty_input_gives_empty_array():
    out = CompositionFeatures().fit_transform(pd.DataFrame({"composition": pd.Series([], dtype=object)}))
    assert out.shape == (0, 132) and out.dtype == np.float32
    assert magpie_features([]).shape == (0, 132)
