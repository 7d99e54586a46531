"""The seven single-view encoders used on their own, on real materials data.

Structures come from pymatgen's bundled prototypes and MP-20; DOS, charge density and MatBERT
text embeddings from the MultiMat sample; raw text goes through sentence-transformers (the
offline MiniLM weights). Every network is tiny and trains for an epoch or two: these tests
check behaviour (shapes, errors, determinism, persistence, learning), not accuracy.
"""

from __future__ import annotations

import copy
import functools

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from _helpers import prototype_crystals, tiny_encoder
from skmat.datasets import crystal_system_from_spacegroup, fetch_multimat_sample
from skmat.encoders import CompositionEncoder
from skmat.exceptions import InvalidInputError

# one torch thread for the whole suite: see one_torch_thread in conftest.py


OUT_DIM = 8
TINY = dict(out_dim=OUT_DIM, max_epochs=2, batch_size=16, validation_fraction=0.0, random_state=0)

# MultiMat's mp-696961 DOS starts with 21 copies of +23.6 eV: a corrupted header (see
# skmat.features.spectra); every test but the one about it leaves the row out
CORRUPT_DOS_ID = "mp-696961"


#: the shared tiny encoders (see _helpers.py), trained with this module's settings
tiny = functools.partial(tiny_encoder, **TINY)


# -- data -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prototypes():
    """32 real crystals of at most 8 sites (AFLOW prototypes), with a float and a label target."""
    return prototype_crystals(32)


@pytest.fixture(scope="module")
def mp20_compositions(mp20_val_rows):
    """200 MP-20 formulas with formation energy (eV/atom) and crystal system."""
    X = pd.DataFrame({"composition": mp20_val_rows["pretty_formula"].to_numpy()}, index=mp20_val_rows["material_id"])
    energy = mp20_val_rows["formation_energy_per_atom"].to_numpy()
    system = crystal_system_from_spacegroup(mp20_val_rows["spacegroup.number"].to_numpy())
    return X, energy, system


@pytest.fixture(scope="module")
def multimat(data_home):
    X, y = fetch_multimat_sample(data_home=data_home, return_X_y=True, target="bulk_modulus")
    return X, y


def multimat_rows(multimat, view: str, n: int = 40):
    """Rows with *view* and a bulk modulus: (X, bulk modulus in GPa, is it stiffer than 100 GPa)."""
    X, y = multimat
    keep = X[view].notna() & y.notna() & (X.index != CORRUPT_DOS_ID)
    X, y = X[keep].iloc[:n], y[keep].iloc[:n].to_numpy()
    return X, y, y > 100.0


# Band gaps (eV, room temperature, experiment) of well-known materials, and a sentence on each.
MATERIAL_TEXTS = {
    "Sodium chloride crystallizes in the cubic rock-salt structure; each Na is octahedrally "
    "coordinated by six Cl.": 8.5,
    "Silicon adopts the diamond structure with tetrahedral sp3 bonding.": 1.12,
    "Gallium arsenide is a zinc-blende III-V semiconductor.": 1.42,
    "Strontium titanate is a cubic perovskite with corner-sharing TiO6 octahedra.": 3.2,
    "Magnesium oxide has the rock-salt structure and is an ionic insulator.": 7.8,
    "Rutile TiO2 is tetragonal; titanium sits in edge-sharing octahedra.": 3.0,
    "Zinc oxide crystallizes in the hexagonal wurtzite structure.": 3.37,
    "Copper is a face-centred cubic metal.": 0.0,
    "Body-centred cubic alpha iron is a ferromagnetic metal.": 0.0,
    "Germanium has the diamond structure like silicon.": 0.66,
}


@pytest.fixture(scope="module")
def text_frame():
    return pd.DataFrame({"text": list(MATERIAL_TEXTS)}), np.array(list(MATERIAL_TEXTS.values()))


def data_for(kind, prototypes, mp20_compositions, multimat):
    """(encoder kind, X, float target, label target) on real data for that view."""
    if kind in ("structure", "xrd", "image"):
        return prototypes
    if kind == "composition":
        X, energy, system = mp20_compositions
        return X.iloc[:32], energy[:32], system[:32]
    return multimat_rows(multimat, kind)


KINDS = ["structure", "xrd", "composition", "dos", "charge_density", "text", "image"]


# -- standalone regression and classification ---------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_regression_on_real_data(kind, prototypes, mp20_compositions, multimat):
    X, y, _ = data_for(kind, prototypes, mp20_compositions, multimat)
    encoder = tiny(kind)
    assert encoder.fit(X, y) is encoder
    assert encoder.task_ == "regression"
    prediction = encoder.predict(X)
    assert prediction.shape == (len(X),) and np.all(np.isfinite(prediction))
    assert np.isfinite(encoder.score(X, y))
    embedding = encoder.transform(X)
    assert embedding.shape == (len(X), OUT_DIM) and embedding.dtype == np.float32
    assert np.all(np.isfinite(embedding))
    names = encoder.get_feature_names_out()
    assert len(names) == OUT_DIM and len(set(names)) == OUT_DIM
    with pytest.raises(AttributeError):
        encoder.predict_proba(X)


@pytest.mark.parametrize("kind", KINDS)
def test_classification_on_real_data(kind, prototypes, mp20_compositions, multimat):
    X, _, labels = data_for(kind, prototypes, mp20_compositions, multimat)
    encoder = tiny(kind).fit(X, labels)
    assert encoder.task_ == "classification"
    assert set(encoder.classes_) == set(labels)
    prediction = encoder.predict(X)
    assert prediction.shape == (len(X),) and set(prediction) <= set(labels)
    proba = encoder.predict_proba(X)
    assert proba.shape == (len(X), len(encoder.classes_))
    assert np.all(proba >= 0) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # predict is the most probable class
    assert np.array_equal(prediction, encoder.classes_[proba.argmax(axis=1)])
    assert 0.0 <= encoder.score(X, labels) <= 1.0
    assert encoder.transform(X).shape == (len(X), OUT_DIM)


def test_whole_number_floats_are_regressed_not_classified(mp20_compositions):
    # a target like 120.0 GPa is a quantity: rounding it must not turn the task into 40 classes
    X, energy, _ = mp20_compositions
    whole = np.round(energy[:40] * 10)  # float dtype, whole numbers
    encoder = tiny("composition").fit(X.iloc[:40], whole)
    assert encoder.task_ == "regression"
    assert encoder.predict(X.iloc[:5]).dtype.kind == "f"
    # integers are labels
    assert tiny("composition").fit(X.iloc[:40], whole.astype(int)).task_ == "classification"


def test_refit_with_another_task_forgets_the_first(mp20_compositions):
    X, energy, system = mp20_compositions
    encoder = tiny("composition").fit(X.iloc[:40], system[:40])
    encoder.fit(X.iloc[:40], energy[:40])
    assert encoder.task_ == "regression" and not hasattr(encoder, "classes_")
    assert encoder.predict(X.iloc[:3]).dtype.kind == "f"


def test_two_regression_targets(multimat):
    X, bulk, _ = multimat_rows(multimat, "text")
    two = np.column_stack([bulk, np.log1p(np.abs(bulk))])
    prediction = tiny("text").fit(X, two).predict(X)
    assert prediction.shape == (len(X), 2) and np.all(np.isfinite(prediction))


# -- raw text through sentence-transformers ------------------------------------------------------
def test_text_encoder_embeds_raw_strings(text_frame):
    X, band_gap = text_frame
    encoder = tiny("text", batch_size=4).fit(X, band_gap)
    assert encoder.embedding_dim_ == 384  # all-MiniLM-L6-v2
    assert encoder.transform(X).shape == (len(X), OUT_DIM)
    assert np.all(np.isfinite(encoder.predict(X)))
    # strings are embedded, then used exactly like precomputed vectors
    from skmat.nn.views import SentenceEmbedder

    vectors = SentenceEmbedder().encode(list(X["text"]))
    precomputed = pd.DataFrame({"text": list(vectors)})
    np.testing.assert_allclose(encoder.transform(precomputed), encoder.transform(X), atol=1e-5)


def test_text_embedding_of_another_size_is_refused(multimat, text_frame):
    X, bulk, _ = multimat_rows(multimat, "text")
    encoder = tiny("text").fit(X, bulk)  # 768-d MatBERT vectors
    with pytest.raises(InvalidInputError) as info:
        encoder.transform(text_frame[0])  # 384-d MiniLM vectors
    assert info.value.row == 0 and info.value.view == "text"


@pytest.mark.parametrize("blank", ["", "   ", "\n\t "])
def test_empty_or_whitespace_text_is_refused_naming_the_row(text_frame, blank):
    X, band_gap = text_frame
    texts = list(X["text"])
    bad = X.assign(text=texts[:2] + [blank] + texts[3:])
    bad.index = [f"m{i}" for i in range(len(bad))]
    # at fit: an empty string would be embedded as if it were a description
    with pytest.raises(InvalidInputError, match="empty or whitespace") as info:
        tiny("text").fit(bad, band_gap)
    assert (info.value.row, info.value.view) == ("m2", "text")
    # at transform too; None in the same cell is a missing view, not an error
    encoder = tiny("text").fit(X, band_gap)
    with pytest.raises(InvalidInputError, match="empty or whitespace") as info:
        encoder.transform(bad)
    assert info.value.row == "m2"


# -- learning -----------------------------------------------------------------------------------
def test_training_loss_falls_on_a_learnable_target(mp20_compositions):
    # formation energy is largely set by composition (what Magpie features were made for)
    X, energy, _ = mp20_compositions
    encoder = CompositionEncoder(
        hidden_dims=(64,), out_dim=32, max_epochs=20, batch_size=32, validation_fraction=0.0, random_state=0
    ).fit(X, energy)
    losses = encoder.net_.history[:, "train_loss"]
    assert len(losses) == 20
    assert losses[-1] < 0.5 * losses[0]
    assert encoder.score(X, energy) > 0.5


# -- views derived from the structure -----------------------------------------------------------
def test_xrd_is_simulated_from_structure_when_the_column_is_absent(prototypes):
    from skmat.features import XRDPattern

    X, y, _ = prototypes
    encoder = tiny("xrd").fit(X, y)
    patterns = XRDPattern(n_bins=128, normalize="max").fit_transform(X)
    given = pd.DataFrame({"xrd": list(patterns)}, index=X.index)
    np.testing.assert_allclose(encoder.transform(given), encoder.transform(X), atol=1e-5)


def test_given_xrd_patterns_are_used_instead_of_simulating(prototypes):
    from skmat.features import XRDPattern

    X, y, _ = prototypes
    encoder = tiny("xrd").fit(X, y)
    order = np.roll(np.arange(len(X)), 1)
    # patterns of other structures than the row's own, in counts (any scale)
    other_patterns = 250.0 * XRDPattern(n_bins=128, normalize="max").fit_transform(X.iloc[order])
    both = X.assign(xrd=list(other_patterns))
    np.testing.assert_allclose(encoder.transform(both), encoder.transform(X.iloc[order]), atol=1e-5)
    # a missing pattern falls back to simulating from that row's structure
    partly = both.assign(xrd=[None, *list(other_patterns[1:])])
    np.testing.assert_allclose(encoder.transform(partly)[0], encoder.transform(X.iloc[:1])[0], atol=1e-5)


def test_composition_is_taken_from_structure_when_the_column_is_absent(prototypes):
    X, y, _ = prototypes
    formulas = pd.DataFrame({"composition": [s.composition.formula for s in X["structure"]]}, index=X.index)
    encoder = tiny("composition").fit(X, y)
    np.testing.assert_allclose(encoder.transform(formulas), encoder.transform(X), atol=1e-5)
    # a composition column wins over the structure
    swapped = X.assign(composition=list(formulas["composition"].iloc[::-1]))
    np.testing.assert_allclose(encoder.transform(swapped), encoder.transform(formulas.iloc[::-1]), atol=1e-5)


def test_a_list_of_structures_is_a_structure_column(prototypes):
    X, y, _ = prototypes
    encoder = tiny("structure").fit(X, y)
    np.testing.assert_allclose(encoder.transform(list(X["structure"])), encoder.transform(X), atol=1e-5)


# -- errors name the row and the view -----------------------------------------------------------
def test_missing_view_in_a_row_is_refused_at_fit_and_transform(multimat):
    X, y = multimat
    absent = X.index[X["dos"].isna()][0]
    rows = pd.concat([multimat_rows(multimat, "dos", n=10)[0], X.loc[[absent]]])
    target = np.linspace(50.0, 150.0, len(rows))
    with pytest.raises(InvalidInputError) as info:
        tiny("dos").fit(rows, target)
    assert info.value.row == absent and info.value.view == "dos"
    encoder = tiny("dos").fit(rows.iloc[:-1], target[:-1])
    with pytest.raises(InvalidInputError) as info:
        encoder.predict(rows)
    assert info.value.row == absent and info.value.view == "dos"


def test_missing_structure_is_refused(prototypes):
    X, y, _ = prototypes
    holed = X.iloc[:12].copy()
    holed.iloc[3, 0] = None
    for kind in ("structure", "xrd", "composition"):
        with pytest.raises(InvalidInputError) as info:
            tiny(kind).fit(holed, y[:12])
        assert info.value.row == holed.index[3], kind


def test_disordered_structure_is_refused_naming_the_material(prototypes):
    from pymatgen.core import Structure
    from pymatgen.util import __file__ as util_file
    from pathlib import Path

    X, y, _ = prototypes
    disordered = Structure.from_file(Path(util_file).parent / "structures" / "Li10GeP2S12.json")
    assert not disordered.is_ordered
    holed = X.iloc[:6].copy()
    holed.iloc[4, 0] = disordered
    with pytest.raises(InvalidInputError, match="disordered") as info:
        tiny("structure").fit(holed, y[:6])
    assert info.value.row == holed.index[4]


@pytest.mark.parametrize("architecture", ["cgcnn", "schnet", "dimenetpp"])
def test_every_graph_architecture_trains_inside_the_estimator(architecture, prototypes):
    X, y, _ = prototypes
    encoder = tiny("structure", architecture=architecture, cutoff=3.5, max_neighbors=6).fit(X[:16], y[:16])
    assert encoder.transform(X[16:20]).shape == (4, OUT_DIM)
    assert np.all(np.isfinite(encoder.predict(X[16:20])))
    assert len(encoder.net_.history) == 2


def test_corrupt_real_dos_is_refused_naming_the_material(multimat):
    X, _ = multimat
    rows = X[X["dos"].notna()].iloc[:5]
    rows = pd.concat([rows, X.loc[[CORRUPT_DOS_ID]]])
    with pytest.raises(InvalidInputError, match="strictly increasing") as info:
        tiny("dos").fit(rows, np.linspace(1.0, 2.0, len(rows)))
    assert info.value.row == CORRUPT_DOS_ID and info.value.view == "dos"


def test_wrong_xrd_length_is_refused(prototypes):
    X, y, _ = prototypes
    encoder = tiny("xrd").fit(X, y)
    patterns = [np.ones(128), np.ones(129)]
    with pytest.raises(InvalidInputError, match="shape") as info:
        encoder.transform(pd.DataFrame({"xrd": patterns}, index=["ok", "too-long"]))
    assert info.value.row == "too-long" and info.value.view == "xrd"


@pytest.mark.parametrize("kind", ["dos", "charge_density", "text"])
def test_nan_in_an_array_cell_is_refused(kind, multimat):
    X, bulk, _ = multimat_rows(multimat, kind, n=8)
    cells = [cell.copy() for cell in X[kind]]
    cells[5].flat[7] = np.nan
    holed = X.assign(**{kind: cells})
    with pytest.raises(InvalidInputError, match="NaN") as info:
        tiny(kind).fit(holed, bulk)
    assert info.value.row == X.index[5] and info.value.view == kind


def test_charge_density_of_another_grid_is_refused(multimat):
    X, bulk, _ = multimat_rows(multimat, "charge_density", n=8)
    encoder = tiny("charge_density").fit(X, bulk)
    coarse = X.assign(charge_density=[cell[::2, ::2, ::2] for cell in X["charge_density"]])
    with pytest.raises(InvalidInputError, match="shape") as info:
        encoder.transform(coarse)
    assert info.value.row == X.index[0] and info.value.view == "charge_density"


def test_target_errors(mp20_compositions):
    X, energy, _ = mp20_compositions
    X, energy = X.iloc[:12], energy[:12]
    with pytest.raises(InvalidInputError, match="12 rows") as info:
        tiny("composition").fit(X, energy[:11])
    assert info.value.view == "y"
    with_nan = energy.copy()
    with_nan[4] = np.nan
    with pytest.raises(InvalidInputError, match="NaN") as info:
        tiny("composition").fit(X, with_nan)
    assert info.value.row == X.index[4] and info.value.view == "y"
    labels = np.array(["cubic"] * 6 + [None] + ["hexagonal"] * 5, dtype=object)
    with pytest.raises(InvalidInputError, match="missing") as info:
        tiny("composition").fit(X, labels)
    assert info.value.row == X.index[6]
    with pytest.raises(InvalidInputError, match="single class"):
        tiny("composition").fit(X, ["cubic"] * 12)
    with pytest.raises(ValueError, match="requires y"):
        tiny("composition").fit(X, None)


def test_unfitted_encoder_raises_not_fitted(prototypes):
    from sklearn.exceptions import NotFittedError

    X, _, _ = prototypes
    for kind in KINDS:
        for method in ("transform", "predict", "get_feature_names_out"):
            with pytest.raises(NotFittedError):
                args = () if method == "get_feature_names_out" else (X,)
                getattr(tiny(kind), method)(*args)


# -- sklearn citizenship ------------------------------------------------------------------------
def _snapshot(X: pd.DataFrame) -> list:
    return [(column, [copy.deepcopy(cell) for cell in X[column]]) for column in X.columns]


def _same_cells(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    return a == b


@pytest.mark.parametrize("kind", ["structure", "composition", "dos", "charge_density"])
def test_inputs_are_not_mutated(kind, prototypes, mp20_compositions, multimat):
    X, y, _ = data_for(kind, prototypes, mp20_compositions, multimat)
    X, y = X.iloc[:16], y[:16]
    before, y_before, index_before = _snapshot(X), y.copy(), X.index.copy()
    encoder = tiny(kind, max_epochs=1).fit(X, y)
    encoder.predict(X)
    encoder.transform(X)
    assert X.index.equals(index_before) and list(X.columns) == [c for c, _ in before]
    for column, cells in before:
        assert all(_same_cells(a, b) for a, b in zip(cells, X[column], strict=True)), column
    np.testing.assert_array_equal(y, y_before)


@pytest.mark.parametrize("kind", ["structure", "xrd", "composition"])
def test_same_random_state_gives_identical_predictions(kind, prototypes):
    X, y, _ = prototypes
    # with dropout, shuffling and a validation split all in play
    make = lambda: tiny(kind, validation_fraction=0.2, max_epochs=2)  # noqa: E731
    first, second = make().fit(X, y), make().fit(X, y)
    np.testing.assert_array_equal(first.predict(X), second.predict(X))
    np.testing.assert_array_equal(first.transform(X), second.transform(X))


def test_transform_is_independent_of_batching(mp20_compositions):
    X, energy, _ = mp20_compositions
    X, energy = X.iloc[:64], energy[:64]
    encoder = tiny("composition").fit(X, energy)
    whole = encoder.transform(X)
    pieces = np.concatenate([encoder.transform(X.iloc[i : i + 5]) for i in range(0, 64, 5)])
    np.testing.assert_allclose(pieces, whole, atol=1e-5)


@pytest.mark.parametrize("kind", ["structure", "dos", "text"])
def test_joblib_round_trip(kind, prototypes, mp20_compositions, multimat, text_frame, tmp_path):
    if kind == "text":
        X, y = text_frame  # raw strings: the sentence model must not be pickled with the encoder
    else:
        X, y, _ = data_for(kind, prototypes, mp20_compositions, multimat)
    encoder = tiny(kind, batch_size=4).fit(X, y)
    path = tmp_path / "encoder.joblib"
    joblib.dump(encoder, path)
    restored = joblib.load(path)
    np.testing.assert_array_equal(restored.predict(X), encoder.predict(X))
    np.testing.assert_array_equal(restored.transform(X), encoder.transform(X))
    if kind == "text":
        assert path.stat().st_size < 5_000_000  # MiniLM weights are ~90 MB


def test_set_output_pandas_names_the_embedding_columns(mp20_compositions):
    X, energy, _ = mp20_compositions
    encoder = tiny("composition").set_output(transform="pandas").fit(X.iloc[:32], energy[:32])
    out = encoder.transform(X.iloc[:32])
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == list(encoder.get_feature_names_out())
    assert out.index.equals(X.index[:32])


def test_cross_validation_clones_and_scores(mp20_compositions):
    X, energy, _ = mp20_compositions
    encoder = tiny("composition", max_epochs=1)
    scores = cross_val_score(encoder, X.iloc[:48], energy[:48], cv=2)
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    assert not hasattr(encoder, "net_")  # cross_val_score fitted clones
    assert clone(encoder).get_params() == encoder.get_params()
