"""MultiModalAligner as a scikit-learn citizen: pipelines, search, persistence, views."""

from __future__ import annotations

import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from _helpers import tiny_encoder
from skmat import CompositionEncoder, MultiModalAligner, StructureEncoder, XRDEncoder
from skmat.exceptions import InvalidInputError


def small_encoders():
    return [
        ("structure", StructureEncoder(hidden_dim=32, n_layers=2, out_dim=32, max_neighbors=8)),
        ("xrd", XRDEncoder(n_bins=256, channels=(8, 16, 32), out_dim=32)),
        ("composition", CompositionEncoder(hidden_dims=(64,), out_dim=32)),
    ]


def small_aligner(**kw):
    params = dict(
        encoders=small_encoders(), latent_dim=16, max_epochs=2, batch_size=32, validation_fraction=0.0, random_state=0
    )
    params.update(kw)
    return MultiModalAligner(**params)


@pytest.fixture(scope="module")
def frame(mp20_val_rows):
    """96 real MP-20 structures and their CDVAE-scaled lattice length a / N^(1/3)."""
    X = mp20_val_rows[["material_id", "structure"]].iloc[:96].reset_index(drop=True)
    scaled_a = np.array([s.lattice.a / len(s) ** (1 / 3) for s in X["structure"]])
    return X, scaled_a


@pytest.fixture(scope="module")
def fitted(frame):
    X, _ = frame
    return small_aligner().fit(X.iloc[:64])


def test_pipeline_with_only_structures_predicts_new_structures(frame):
    X, y = frame
    pipe = Pipeline([("align", small_aligner()), ("reg", Ridge())]).fit(X.iloc[:64], y[:64])
    prediction = pipe.predict(X.iloc[64:])
    assert prediction.shape == (32,)
    assert np.all(np.isfinite(prediction))
    # a list of Structure objects is accepted as well as a DataFrame
    assert np.allclose(pipe.predict(list(X["structure"].iloc[64:])), prediction, atol=1e-5)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_over_temperature_and_latent_dim(frame, n_jobs):
    X, y = frame
    pipe = Pipeline([("align", small_aligner(max_epochs=1)), ("reg", Ridge())])
    grid = {"align__temperature": [0.05, 0.2], "align__latent_dim": [8, 16]}
    search = GridSearchCV(pipe, grid, cv=2, n_jobs=n_jobs, error_score="raise").fit(X.iloc[:64], y[:64])
    assert set(search.best_params_) == set(grid)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


def test_grid_search_without_labels_uses_retrieval_score(frame):
    X, _ = frame
    search = GridSearchCV(small_aligner(max_epochs=1), {"temperature": [0.05, 0.2]}, cv=2, error_score="raise")
    search.fit(X.iloc[:64])
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores >= 0) & (scores <= 1))


def test_joblib_round_trip_in_a_fresh_process(fitted, frame, tmp_path):
    X, _ = frame
    path = tmp_path / "aligner.joblib"
    joblib.dump(fitted, path)
    X.iloc[64:].to_pickle(tmp_path / "X.pkl")
    expected = fitted.transform(X.iloc[64:])
    script = (
        "import joblib, numpy as np, pandas as pd, sys\n"
        f"model = joblib.load({str(path)!r})\n"
        f"X = pd.read_pickle({str(tmp_path / 'X.pkl')!r})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, model.transform(X))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_same_random_state_same_result(frame):
    X, _ = frame
    a = small_aligner().fit(X.iloc[:48]).transform(X.iloc[48:64])
    b = small_aligner().fit(X.iloc[:48]).transform(X.iloc[48:64])
    np.testing.assert_array_equal(a, b)


def test_transform_from_experimental_views_only(fitted, frame):
    """UniMat's experimentally accessible setting: a pattern and a composition, no structure."""
    X, _ = frame
    rows = X.iloc[64:72]
    from skmat.features import XRDPattern

    patterns = XRDPattern(n_bins=256).fit_transform(rows)
    experimental = pd.DataFrame(
        {"xrd": list(patterns), "composition": [s.composition.formula for s in rows["structure"]]}
    )
    aligner = clone(fitted).set_params(transform_views=("xrd", "composition"))
    aligner.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    from_experiment = aligner.transform(experimental)
    from_structure = aligner.transform(rows)
    assert from_experiment.shape == (8, 16)
    # the same two views, derived from the structure or given directly, embed identically
    np.testing.assert_allclose(from_experiment, from_structure, atol=1e-5)


def test_embed_score_and_feature_names(fitted, frame):
    X, _ = frame
    z = fitted.embed(X.iloc[64:], view="xrd")
    assert z.shape == (32, 16)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    assert 0.0 <= fitted.score(X.iloc[64:]) <= 1.0
    assert list(fitted.get_feature_names_out()) == [f"latent{i}" for i in range(16)]
    out = clone(fitted).set_output(transform="pandas")
    out.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    assert list(out.transform(X.iloc[64:70]).columns) == list(fitted.get_feature_names_out())


def test_concat_fusion_has_one_block_per_view(frame):
    X, _ = frame
    aligner = small_aligner(fusion="concat", max_epochs=1).fit(X.iloc[:48])
    assert aligner.transform(X.iloc[48:52]).shape == (4, 48)
    assert aligner.get_feature_names_out()[16] == "xrd0"


def test_nested_parameters_reach_the_encoders():
    aligner = small_aligner()
    aligner.set_params(encoders__xrd__n_bins=128, encoders__structure__architecture="schnet")
    params = aligner.get_params()
    assert params["encoders__xrd__n_bins"] == 128
    assert params["xrd__n_bins"] == 128
    assert clone(aligner).get_params()["encoders__structure__architecture"] == "schnet"
    default = MultiModalAligner()
    default.set_params(encoders__xrd__n_bins=512)
    assert default.get_params()["encoders__xrd__n_bins"] == 512


def test_rows_with_missing_views_are_masked_not_dropped(fitted, frame):
    X, _ = frame
    rows = X.iloc[64:70].copy()
    rows["xrd"] = [None] * len(rows)
    rows.loc[rows.index[0], "structure"] = None
    rows["composition"] = [s.composition if s is not None else "NaCl" for s in rows["structure"]]
    before = rows.copy()
    Z = fitted.transform(rows)
    assert Z.shape == (6, 16) and np.all(np.isfinite(Z))
    pd.testing.assert_frame_equal(rows, before)  # the user's frame is not mutated


@pytest.mark.parametrize(
    "params, message",
    [
        ({"loss": "nope"}, "loss must be one of"),
        ({"fusion": "sum"}, "fusion must be one of"),
        ({"loss": "anchored", "anchor": "dos"}, "anchor 'dos'"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_parameters_raise_at_fit(frame, params, message):
    X, _ = frame
    with pytest.raises(ValueError, match=message):
        small_aligner(**params).fit(X.iloc[:8])


def test_bad_input_names_the_problem(frame):
    X, _ = frame
    with pytest.raises(InvalidInputError, match="no row has a composition|absent from every row"):
        small_aligner().fit(pd.DataFrame({"text": ["a", "b", "c"]}))
    with pytest.raises(InvalidInputError, match="at least 2 rows"):
        small_aligner().fit(X.iloc[:1])
    broken = X.iloc[:4].copy()
    broken["structure"] = broken["structure"].astype(object)
    broken.loc[broken.index[2], "structure"] = "data_broken\n_cell_length_a 1\n"
    with pytest.raises(InvalidInputError, match=str(broken["material_id"].iloc[2])):
        small_aligner().fit(broken)


@pytest.mark.parametrize("loss", ["clip", "all_pairs", "anchored", "tensor", "barlow"])
def test_every_loss_sends_gradients_to_every_encoder_it_aligns(frame, loss):
    """One backward pass through the aligner's module: each encoder and projection gets a
    non-zero gradient (for 'clip', only the two views it aligns do)."""
    import torch

    from skmat._training import MultiViewDataset
    from skmat.nn.losses import ContrastiveLoss
    from skmat.nn.multiview import MultiViewAligner

    X, _ = frame
    encoders = small_encoders()
    names = [name for name, _ in encoders]
    prepared = {name: enc._prepare(X.iloc[:24], name, fit=True) for name, enc in encoders}
    options = {"anchor": "structure"} if loss == "anchored" else {"views": ("structure", "xrd")} if loss == "clip" else {}
    torch.manual_seed(0)
    module = MultiViewAligner(
        {name: enc._make_module() for name, enc in encoders}, latent_dim=16, loss=ContrastiveLoss(loss, **options)
    )
    batch, _ = MultiViewDataset(prepared).collate(list(range(24)))
    value = module.loss(module(batch))
    assert torch.isfinite(value)
    value.backward()
    aligned = names[:2] if loss == "clip" else names
    for name in aligned:
        for part in (module.encoders[name], module.projections[name]):
            grads = [p.grad for p in part.parameters() if p.requires_grad]
            assert all(g is not None for g in grads), name
            assert sum(float(g.abs().sum()) for g in grads) > 0, name


@pytest.mark.parametrize("loss", ["all_pairs", "tensor", "barlow"])
def test_a_view_missing_from_the_whole_batch_gives_a_finite_loss(frame, loss):
    """Rows that have composition and XRD patterns but no structure: the structure view is
    absent from the whole batch, the loss stays finite and the present views still learn."""
    import torch

    from skmat._training import MultiViewDataset
    from skmat.features import XRDPattern
    from skmat.nn.losses import ContrastiveLoss
    from skmat.nn.multiview import MultiViewAligner

    X, _ = frame
    encoders = small_encoders()
    fitted = {name: enc._prepare(X.iloc[:24], name, fit=True) for name, enc in encoders}
    assert all(view.present.all() for view in fitted.values())
    no_structure = pd.DataFrame(
        {
            "xrd": list(XRDPattern(n_bins=256).fit_transform(X.iloc[24:48])),
            "composition": [s.composition for s in X["structure"].iloc[24:48]],
        }
    )
    prepared = {name: enc._prepare(no_structure, name, fit=False) for name, enc in encoders}
    assert not prepared["structure"].present.any()
    torch.manual_seed(0)
    module = MultiViewAligner({name: enc._make_module() for name, enc in encoders}, 16, ContrastiveLoss(loss))
    batch, _ = MultiViewDataset(prepared).collate(list(range(24)))
    value = module.loss(module(batch))
    assert torch.isfinite(value)
    value.backward()
    xrd_grads = [p.grad for p in module.encoders["xrd"].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in xrd_grads)
    if loss == "all_pairs":  # three-way terms (tensor, 3-view barlow) need all three views
        assert sum(float(g.abs().sum()) for g in xrd_grads) > 0


def test_xrd_augmentation_applies_inside_the_aligner(frame):
    """XRDEncoder(augment=True) in an aligner trains on redrawn patterns (a different model than
    without it, same seed), and leaves no training-only state behind."""
    X, _ = frame
    X = X.iloc[:48]

    def aligner(augment):
        encoders = [("xrd", tiny_encoder("xrd", augment=augment)), ("composition", tiny_encoder("composition"))]
        return small_aligner(encoders=encoders, max_epochs=1, batch_size=16)

    plain, augmented = aligner(False).fit(X), aligner(True).fit(X)
    again = aligner(True).fit(X)
    assert not np.allclose(plain.transform(X), augmented.transform(X), atol=1e-4)
    np.testing.assert_allclose(augmented.transform(X), again.transform(X), atol=1e-6)  # seeded
    assert "iterator_train__collate_fn" not in vars(augmented.net_)
    xrd = dict(augmented.encoders_)["xrd"]
    assert xrd.augmenter_ is None and not hasattr(xrd, "augmented_row_")
