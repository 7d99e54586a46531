"""MultiModalRegressor / MultiModalClassifier: multi-view predictors tuned end to end."""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from _helpers import tiny_encoder
from skmat import InvalidInputError, MultiModalAligner
from skmat.features import XRDPattern
from skmat.supervised import MultiModalClassifier, MultiModalRegressor

N_BINS = 128
TINY = dict(batch_size=16, validation_fraction=0.0, random_state=0)


def two_views(**aligner_params) -> MultiModalAligner:
    return MultiModalAligner(
        encoders=[
            ("xrd", tiny_encoder("xrd", n_bins=N_BINS, out_dim=16)),
            ("composition", tiny_encoder("composition", hidden_dims=(32,), out_dim=16)),
        ],
        latent_dim=16,
        **{**TINY, "max_epochs": 2, **aligner_params},
    )


@pytest.fixture(scope="module")
def materials(mp20_val_rows):
    """120 MP-20 crystals as xrd + composition columns, scaled a, and crystal systems."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    rows = mp20_val_rows.iloc[:120].reset_index(drop=True)
    structures = list(rows["structure"])
    X = pd.DataFrame(
        {
            "xrd": list(XRDPattern(n_bins=N_BINS).fit_transform(structures)),
            "composition": [s.composition for s in structures],
        },
        index=rows["material_id"],
    )
    a_scaled = np.array([s.lattice.a / len(s) ** (1 / 3) for s in structures])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # spglib's notice about its error handling
        systems = np.array([SpacegroupAnalyzer(s, symprec=0.1).get_crystal_system() for s in structures])
    # two common classes keep the tiny classifier's task learnable
    return X, a_scaled, np.where(systems == "cubic", "cubic", "other")


def test_regressor_learns_the_training_targets(materials):
    X, y, _ = materials
    reg = MultiModalRegressor(two_views(), max_epochs=30, lr=3e-3, **TINY).fit(X, y)
    mean_error = np.abs(y - y.mean()).mean()
    assert is_regressor(reg)
    assert reg.predict(X).shape == (len(X),)
    assert np.abs(reg.predict(X) - y).mean() < 0.6 * mean_error


def test_multioutput_regression_keeps_the_target_shape(materials):
    X, y, _ = materials
    Y = np.column_stack([y, 2 * y + 1])
    reg = MultiModalRegressor(two_views(), max_epochs=1, **TINY).fit(X, Y)
    assert reg.predict(X.iloc[:5]).shape == (5, 2)
    assert reg.y_mean_.shape == (2,)


def test_classifier_probabilities_and_labels(materials):
    X, _, labels = materials
    clf = MultiModalClassifier(two_views(), max_epochs=20, lr=3e-3, **TINY).fit(X, labels)
    assert is_classifier(clf)
    assert list(clf.classes_) == ["cubic", "other"]
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert set(clf.predict(X)) <= set(clf.classes_)
    majority = max(np.mean(labels == c) for c in clf.classes_)
    assert clf.score(X, labels) > majority


def test_rows_may_lack_a_view_but_not_all(materials):
    X, y, _ = materials
    reg = MultiModalRegressor(two_views(), max_epochs=1, **TINY).fit(X, y)
    partial = X.iloc[:4].copy()
    partial["xrd"] = [None, partial["xrd"].iloc[1], None, None]
    assert np.isfinite(reg.predict(partial)).all()
    # a row with only composition predicts what the composition alone says, whatever the xrd cell held
    only_composition = X.iloc[:4][["composition"]]
    np.testing.assert_allclose(reg.predict(only_composition)[[0, 2, 3]], reg.predict(partial)[[0, 2, 3]], rtol=1e-5)
    nothing = X.iloc[:3].copy()
    nothing.loc[nothing.index[1], "composition"] = None
    nothing["xrd"] = [nothing["xrd"].iloc[0], None, None]
    with pytest.raises(InvalidInputError, match=str(nothing.index[1])):
        reg.predict(nothing)


def test_bad_targets_name_the_row(materials):
    X, y, labels = materials
    y_nan = y.copy()
    y_nan[7] = np.nan
    with pytest.raises(InvalidInputError, match=str(X.index[7])):
        MultiModalRegressor(two_views(), max_epochs=1, **TINY).fit(X, y_nan)
    with pytest.raises(InvalidInputError, match="rows but y has"):
        MultiModalRegressor(two_views(), max_epochs=1, **TINY).fit(X, y[:-1])
    labels_none = labels.astype(object)
    labels_none[3] = None
    with pytest.raises(InvalidInputError, match=str(X.index[3])):
        MultiModalClassifier(two_views(), max_epochs=1, **TINY).fit(X, labels_none)
    with pytest.raises(InvalidInputError, match="single class"):
        MultiModalClassifier(two_views(), max_epochs=1, **TINY).fit(X, np.full(len(X), "cubic"))
    with pytest.raises(ValueError, match="requires y"):
        MultiModalRegressor(two_views(), max_epochs=1, **TINY).fit(X, None)
    with pytest.raises(ValueError, match="contrastive_weight"):
        MultiModalRegressor(two_views(), contrastive_weight=-1, **TINY).fit(X, y)


def test_pretraining_is_the_starting_point(materials):
    """With pretrain=True and a learning rate of ~0, the encoders keep the aligner's weights."""
    X, y, _ = materials
    aligner = two_views().fit(X)
    reg = MultiModalRegressor(two_views(), pretrain=True, lr=1e-12, max_epochs=1, **TINY).fit(X, y)
    expected = aligner.net_.module_.state_dict()
    got = reg.net_.module_.aligner.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)
    # and without pretraining they are not the aligner's
    fresh = MultiModalRegressor(two_views(), lr=1e-12, max_epochs=1, random_state=1, batch_size=16,
                                validation_fraction=0.0).fit(X, y)
    first = next(iter(expected))
    assert not torch.allclose(fresh.net_.module_.aligner.state_dict()[first], expected[first])


def test_contrastive_term_adds_the_alignment_loss(materials):
    X, y, _ = materials
    reg = MultiModalRegressor(two_views(), contrastive_weight=0.5, max_epochs=1, **TINY).fit(X, y)
    from skmat._training import MultiViewDataset

    module = reg.net_.module_
    prepared = {name: enc._prepare(X.iloc[:16], name, fit=False) for name, enc in reg.encoders_}
    batch, _ = MultiViewDataset(prepared).collate(list(range(16)))
    target = torch.as_tensor(((y[:16] - reg.y_mean_) / reg.y_scale_).astype(np.float32))
    module.eval()
    with torch.no_grad():
        output = module(batch)
        total = module.loss(output, target)
        prediction, _, embeddings, presence = output
        task = torch.nn.functional.mse_loss(prediction.ravel(), target)
        alignment = module.aligner.contrastive(embeddings, presence)
    assert alignment > 0
    torch.testing.assert_close(total, task + 0.5 * alignment)


def test_grid_search_over_nested_aligner_parameters(materials):
    X, y, _ = materials
    search = GridSearchCV(
        MultiModalRegressor(two_views(), max_epochs=1, **TINY),
        {"aligner__latent_dim": [8, 16], "contrastive_weight": [0.0, 0.1]},
        cv=2,
    ).fit(X, y)
    assert search.best_estimator_.net_.module_.aligner.latent_dim in (8, 16)
    reg = MultiModalRegressor(two_views())
    reg.set_params(aligner__encoders__xrd__n_bins=64)
    assert reg.get_params()["aligner__encoders__xrd__n_bins"] == 64
    assert two_views().encoders[0][1].n_bins == N_BINS  # clone semantics: the template is untouched


def test_pipeline_and_joblib_round_trip(materials, tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    X, y, _ = materials
    pipe = Pipeline([("identity", FunctionTransformer()), ("reg", MultiModalRegressor(two_views(), max_epochs=1, **TINY))])
    pipe.fit(X, y)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    restored = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_allclose(restored.predict(X), pipe.predict(X), atol=1e-6)


@pytest.mark.parametrize("cls, target", [(MultiModalRegressor, 1), (MultiModalClassifier, 2)])
def test_safe_model_file_round_trip(materials, tmp_path, cls, target):
    from skmat.persist import load, save

    X = materials[0]
    y = materials[target]
    model = cls(two_views(), max_epochs=1, **TINY).fit(X, y)
    save(model, tmp_path / "model")
    restored = load(tmp_path / "model")
    assert type(restored) is cls
    np.testing.assert_allclose(restored.predict(X) if cls is MultiModalRegressor else restored.predict_proba(X),
                               model.predict(X) if cls is MultiModalRegressor else model.predict_proba(X),
                               atol=1e-6)


def test_inputs_are_not_mutated(materials):
    X, y, _ = materials
    X_before, y_before = X.copy(deep=True), y.copy()
    reg = MultiModalRegressor(two_views(), pretrain=True, max_epochs=1, **TINY).fit(X, y)
    reg.predict(X)
    pd.testing.assert_index_equal(X.index, X_before.index)
    for column in X:
        for a, b in zip(X[column], X_before[column], strict=True):
            assert (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b)
    np.testing.assert_array_equal(y, y_before)
    assert clone(reg).aligner.encoders[0][1].n_bins == N_BINS


def test_auxiliary_targets_train_a_second_head_in_the_same_fit(materials):
    """Multitask: the crystal system and the lattice length from one classifier fit."""
    X, y, labels = materials
    clf = MultiModalClassifier(two_views(), max_epochs=30, lr=3e-3, **TINY)
    pipe = Pipeline([("clf", clf)]).fit(X, labels, clf__auxiliary_targets=y)  # routed like sample_weight
    clf = pipe.named_steps["clf"]
    lattice = clf.predict_auxiliary(X)
    assert lattice.shape == (len(X), 1)
    assert np.abs(lattice.ravel() - y).mean() < 0.6 * np.abs(y - y.mean()).mean()
    assert clf.predict_proba(X).shape == (len(X), 2)  # the task's columns only
    terms = clf.net_.module_.loss_terms
    assert terms.__self__.n_auxiliary == 1
    with pytest.raises(AttributeError, match="auxiliary_targets"):
        MultiModalClassifier(two_views(), max_epochs=1, **TINY).fit(X, labels).predict_auxiliary(X)
    bad = y.copy()
    bad[5] = np.inf
    with pytest.raises(InvalidInputError, match=str(X.index[5])):
        MultiModalClassifier(two_views(), max_epochs=1, **TINY).fit(X, labels, auxiliary_targets=bad)


def test_auxiliary_targets_survive_the_safe_model_file(materials, tmp_path):
    from skmat.persist import load, save

    X, y, labels = materials
    model = MultiModalRegressor(two_views(), max_epochs=1, **TINY).fit(X, y, auxiliary_targets=np.column_stack([y, y]))
    save(model, tmp_path / "model")
    restored = load(tmp_path / "model")
    np.testing.assert_allclose(restored.predict_auxiliary(X), model.predict_auxiliary(X), atol=1e-5)
    np.testing.assert_allclose(restored.predict(X), model.predict(X), atol=1e-5)


def test_transform_views_restrict_the_views_predict_reads(materials, mp20_val_rows):
    X, y, _ = materials
    reg = MultiModalRegressor(two_views(view_dropout=0.5), max_epochs=1, **TINY).fit(X, y)
    from_composition = reg.predict(X[["composition"]])
    assert not np.allclose(reg.predict(X), from_composition)
    reg.set_params(aligner__transform_views=("composition",))
    np.testing.assert_allclose(reg.predict(X), from_composition, rtol=1e-6)  # the xrd column is not read
    reg.set_params(aligner__transform_views=("dos",))
    with pytest.raises(InvalidInputError, match="dos"):
        reg.predict(X)
