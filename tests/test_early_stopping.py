"""Early stopping of classifiers watches the validation accuracy, not the cross-entropy."""

import numpy as np
import pytest

from skmat.encoders import CompositionEncoder, XRDEncoder
from skmat.supervised import MultiModalClassifier, MultiModalRegressor


@pytest.fixture(scope="module")
def rows(mp20_val_rows):
    frame = mp20_val_rows.iloc[:120]
    return frame[["structure", "spacegroup.number"]].assign(composition=[s.composition for s in frame["structure"]])


def _crystal_systems(frame):
    from skmat.datasets import crystal_system_from_spacegroup

    return np.asarray(crystal_system_from_spacegroup(frame["spacegroup.number"].to_numpy()))


def test_classifier_records_validation_accuracy_and_stops_on_it(rows):
    y = _crystal_systems(rows)
    model = XRDEncoder(n_bins=256, channels=(4, 8), max_epochs=30, validation_fraction=0.1, patience=2,
                       random_state=0).fit(rows, y)
    history = model.net_.history
    accuracy = np.array(history[:, "valid_acc"])
    assert np.all((accuracy >= 0) & (accuracy <= 1))
    stopping = dict(model.net_.callbacks)["early_stopping"]
    assert stopping.monitor == "valid_acc" and not stopping.lower_is_better
    if len(history) < 30:  # stopped early: the last `patience` epochs did not beat the best before them
        assert accuracy[:-2].max() >= accuracy[-2:].max()


def test_fused_classifier_counts_only_the_class_column_of_auxiliary_targets(rows):
    from skmat.align import MultiModalAligner

    y = _crystal_systems(rows)
    auxiliary = np.random.default_rng(0).normal(size=(len(rows), 3))
    aligner = MultiModalAligner(encoders=[("composition", CompositionEncoder(hidden_dims=(16,), out_dim=8))],
                                latent_dim=8)
    model = MultiModalClassifier(aligner, max_epochs=3, random_state=0).fit(rows, y, auxiliary_targets=auxiliary)
    accuracy = np.array(model.net_.history[:, "valid_acc"])
    assert accuracy.shape == (3,) and np.all((accuracy >= 0) & (accuracy <= 1))


def test_regressor_still_stops_on_validation_loss(rows):
    from skmat.align import MultiModalAligner

    y = np.array([s.volume / len(s) for s in rows["structure"]])
    aligner = MultiModalAligner(encoders=[("composition", CompositionEncoder(hidden_dims=(16,), out_dim=8))],
                                latent_dim=8)
    model = MultiModalRegressor(aligner, max_epochs=2, random_state=0).fit(rows, y)
    callbacks = dict(model.net_.callbacks)
    assert callbacks["early_stopping"].monitor == "valid_loss"
    assert "valid_acc" not in model.net_.history[-1]


def test_xrd_encoder_trains_every_epoch_by_default(rows):
    y = _crystal_systems(rows)
    model = XRDEncoder(n_bins=256, channels=(4, 8), max_epochs=3, random_state=0).fit(rows, y)
    assert len(model.net_.history) == 3
    assert "early_stopping" not in dict(model.net_.callbacks) and "valid_acc" not in model.net_.history[-1]
