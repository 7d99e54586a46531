"""Safe model files (JSON config + safetensors): round trips on real data, and refusals.

Every estimator is tiny and trains one epoch: these tests check that a loaded model computes
exactly what the saved one did, and that a tampered or foreign file is refused before any of
it is used.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline

from _helpers import prototype_crystals, tiny_aligner, tiny_encoder
from skmat.datasets import fetch_multimat_sample
from skmat.persist import CONFIG_FILE, WEIGHTS_FILE, ModelFileError, load, save

TINY = dict(out_dim=8, max_epochs=1, batch_size=16, validation_fraction=0.0, random_state=0)
# MultiMat's mp-696961 DOS has a corrupted energy axis (see skmat.features.spectra)
CORRUPT_DOS_ID = "mp-696961"


#: the shared tiny encoders (see _helpers.py), trained with this module's settings
tiny = functools.partial(tiny_encoder, **TINY)


@pytest.fixture(scope="module")
def prototypes():
    """24 real crystals of at most 8 sites, a float target and a crystal-system label."""
    return prototype_crystals(24)


@pytest.fixture(scope="module")
def multimat(data_home):
    return fetch_multimat_sample(data_home=data_home, return_X_y=True, target="bulk_modulus")


def rows_with(multimat, view: str, n: int = 24):
    X, y = multimat
    keep = X[view].notna() & y.notna() & (X.index != CORRUPT_DOS_ID)
    X, y = X[keep].iloc[:n], y[keep].iloc[:n].to_numpy()
    return X, y, y > 100.0


def data_for(kind, prototypes, multimat):
    if kind in ("structure", "xrd", "image"):
        return prototypes
    if kind == "composition":
        X, y, labels = prototypes
        return pd.DataFrame({"composition": [s.composition for s in X["structure"]]}, index=X.index), y, labels
    return rows_with(multimat, kind)


def assert_same_outputs(restored, original, X):
    np.testing.assert_allclose(restored.transform(X), original.transform(X), atol=1e-6)
    if hasattr(original, "predict"):
        prediction = original.predict(X)
        if prediction.dtype.kind in "fc":
            np.testing.assert_allclose(restored.predict(X), prediction, atol=1e-6)
        else:
            np.testing.assert_array_equal(restored.predict(X), prediction)


# -- round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["structure", "xrd", "composition", "dos", "charge_density", "text", "image"])
def test_every_encoder_round_trips_regression(kind, prototypes, multimat, tmp_path):
    X, y, _ = data_for(kind, prototypes, multimat)
    encoder = tiny(kind).fit(X, y)
    folder = save(encoder, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    restored = load(folder)
    assert type(restored) is type(encoder)
    assert restored.get_params() == encoder.get_params()
    assert_same_outputs(restored, encoder, X)
    assert list(restored.get_feature_names_out()) == list(encoder.get_feature_names_out())
    # the training log survives (losses per epoch)
    assert restored.net_.history[:, "train_loss"] == encoder.net_.history[:, "train_loss"]


@pytest.mark.parametrize("kind", ["structure", "dos"])
def test_classifier_round_trips_with_its_string_classes(kind, prototypes, multimat, tmp_path):
    X, _, labels = data_for(kind, prototypes, multimat)
    encoder = tiny(kind).fit(X, labels)
    restored = load(save(encoder, tmp_path / "model"))
    np.testing.assert_array_equal(restored.classes_, encoder.classes_)
    assert restored.classes_.dtype == encoder.classes_.dtype
    assert_same_outputs(restored, encoder, X)
    np.testing.assert_allclose(restored.predict_proba(X), encoder.predict_proba(X), atol=1e-6)


def test_two_target_regression_round_trips(multimat, tmp_path):
    X, bulk, _ = rows_with(multimat, "text")
    two = np.column_stack([bulk, np.log1p(np.abs(bulk))])
    encoder = tiny("text").fit(X, two)
    restored = load(save(encoder, tmp_path / "model"))
    np.testing.assert_allclose(restored.predict(X), encoder.predict(X), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"loss": "anchored", "fusion": "concat", "learn_temperature": False}])
def test_aligner_round_trips(options, prototypes, tmp_path):
    X, _, _ = prototypes
    aligner = tiny_aligner(**options).fit(X)
    restored = load(save(aligner, tmp_path / "model"))
    assert restored.views_ == aligner.views_
    assert restored.temperature_ == aligner.temperature_
    assert [type(e) for _, e in restored.encoders_] == [type(e) for _, e in aligner.encoders_]
    # the fitted encoder copies keep their input statistics
    np.testing.assert_array_equal(
        dict(restored.encoders_)["composition"].feature_mean_, dict(aligner.encoders_)["composition"].feature_mean_
    )
    assert_same_outputs(restored, aligner, X)
    np.testing.assert_allclose(restored.embed(X, "xrd"), aligner.embed(X, "xrd"), atol=1e-6)
    assert restored.score(X) == aligner.score(X)
    # parameters (nested encoders included) survive
    assert restored.get_params()["encoders__xrd__n_bins"] == 128


def test_a_fitted_pipeline_step_round_trips(prototypes, tmp_path):
    X, y, _ = prototypes
    pipe = Pipeline([("align", tiny_aligner()), ("reg", Ridge())]).fit(X, y)
    before = pipe.predict(X)
    save(pipe.named_steps["align"], tmp_path / "align")
    pipe.steps[0] = ("align", load(tmp_path / "align"))
    np.testing.assert_allclose(pipe.predict(X), before, atol=1e-6)


def test_set_output_survives(prototypes, tmp_path):
    X, y, _ = data_for("composition", prototypes, None)
    encoder = tiny("composition").set_output(transform="pandas").fit(X, y)
    restored = load(save(encoder, tmp_path / "model"))
    out = restored.transform(X)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(encoder.get_feature_names_out())


def test_the_files_are_plain_json_and_tensors(prototypes, tmp_path):
    from safetensors.torch import load_file

    X, y, _ = data_for("composition", prototypes, None)
    encoder = tiny("composition").fit(X, y)
    folder = save(encoder, tmp_path / "model")
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["estimator"]["class"] == "skmat.encoders.CompositionEncoder"
    assert config["versions"]["skmat"] and config["versions"]["torch"] and config["versions"]["sklearn"]
    tensors = load_file(folder / WEIGHTS_FILE)
    assert set(tensors) == set(encoder.net_.module_.state_dict())


def test_unfitted_or_foreign_estimators_are_not_saved(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        save(tiny("composition"), tmp_path / "a")
    ridge = Ridge().fit([[0.0], [1.0]], [0.0, 1.0])
    ridge.net_ = None  # looks fitted, but is not an skmat estimator
    with pytest.raises(ModelFileError, match="cannot be saved"):
        save(ridge, tmp_path / "b")


# -- refusals -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_folder(prototypes, tmp_path_factory):
    X, y, _ = data_for("composition", prototypes, None)
    return save(tiny("composition").fit(X, y), tmp_path_factory.mktemp("saved") / "model")


def tampered(saved_folder, tmp_path, edit) -> str:
    """A copy of the saved model whose config went through *edit*."""
    import shutil

    folder = tmp_path / "tampered"
    shutil.copytree(saved_folder, folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    edit(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    return folder


def test_an_unknown_class_is_refused_without_importing_it(saved_folder, tmp_path):
    def to_os_system(config):
        config["estimator"]["class"] = "os.system"
        config["estimator"]["params"] = {"command": "touch pwned"}

    with pytest.raises(ModelFileError, match="os.system"):
        load(tampered(saved_folder, tmp_path, to_os_system))
    assert not (tmp_path / "pwned").exists()


def test_a_non_skmat_class_nested_in_the_aligner_is_refused(prototypes, tmp_path):
    X, _, _ = prototypes
    folder = save(tiny_aligner().fit(X), tmp_path / "aligner")

    def swap_encoder(config):
        config["estimator"]["fitted_encoders"][0][1]["class"] = "subprocess.Popen"

    with pytest.raises(ModelFileError, match="subprocess.Popen"):
        load(tampered(folder, tmp_path, swap_encoder))


def test_another_minor_version_is_refused_and_a_patch_version_warns(saved_folder, tmp_path):
    from skmat import __version__
    from skmat.persist import _release

    major, minor, patch = _release(__version__)

    def stamp(version):
        return lambda config: config["versions"].update(skmat=version)

    with pytest.raises(ModelFileError, match="major/minor"):
        load(tampered(saved_folder, tmp_path / "minor", stamp(f"{major}.{minor + 1}.0")))
    with pytest.raises(ModelFileError, match="major/minor"):
        load(tampered(saved_folder, tmp_path / "major", stamp(f"{major + 1}.{minor}.{patch}")))
    with pytest.warns(UserWarning, match="written by skmat"):
        restored = load(tampered(saved_folder, tmp_path / "patch", stamp(f"{major}.{minor}.{patch + 1}")))
    assert hasattr(restored, "net_")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(format="pickle"), "not an skmat model"),
        (lambda c: c.update(format_version=99), "format version"),
        (lambda c: c["versions"].update(skmat="banana"), "unreadable"),
        (lambda c: c["estimator"]["params"].update(__reduce__=1), "no parameters"),
        (lambda c: c["estimator"]["fitted"].update(fit=1), "refused fitted attribute"),
        (lambda c: c["estimator"]["fitted"].update(__class___=1), "refused fitted attribute"),
        (lambda c: c["estimator"]["params"].update(hidden_dims={"__pickle__": "gASV"}), "unknown tag"),
        (
            lambda c: c["estimator"]["fitted"].update(
                feature_mean_={"__ndarray__": {"dtype": "|V8", "shape": [1], "data": [0]}}
            ),
            "refused array",
        ),
        # a network of another width than the weights
        (lambda c: c["estimator"]["params"].update(out_dim=9), "do not fit"),
    ],
)
def test_tampered_configs_are_refused(edit, message, saved_folder, tmp_path):
    with pytest.raises(ModelFileError, match=message):
        load(tampered(saved_folder, tmp_path, edit))


def test_missing_or_broken_files_are_refused(saved_folder, tmp_path):
    import shutil

    with pytest.raises(ModelFileError, match="not an skmat model folder"):
        load(tmp_path)
    folder = tmp_path / "broken"
    shutil.copytree(saved_folder, folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load(folder)
    shutil.copy(saved_folder / CONFIG_FILE, folder / CONFIG_FILE)
    (folder / WEIGHTS_FILE).write_bytes(b"\x80\x04K\x01.")  # a pickle, not safetensors
    with pytest.raises(ModelFileError, match="weights"):
        load(folder)
