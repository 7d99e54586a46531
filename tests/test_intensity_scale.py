"""``XRDEncoder(intensity_scale=...)``: what the network reads, at fit, in augmented batches and
at transform (the same scaling everywhere, or simulated -> measured transfer breaks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _helpers import prototype_crystals, tiny_encoder

from skmat.features.measured import scale_intensity
from skmat.features.xrd import XRDPattern


@pytest.fixture(scope="module")
def crystals():
    X, _, systems = prototype_crystals(24)
    return X, systems


def test_sqrt_encoder_reads_the_square_root_of_what_linear_reads(crystals):
    X, _ = crystals
    linear = tiny_encoder("xrd")._prepare(X, "xrd", fit=False).values
    root = tiny_encoder("xrd", intensity_scale="sqrt")._prepare(X, "xrd", fit=False).values
    np.testing.assert_allclose(root, np.sqrt(linear), atol=1e-6)
    # weak reflections gain against the strongest one
    assert root[linear > 0].min() > linear[linear > 0].min()


def test_sqrt_applies_to_given_patterns_and_augmented_batches(crystals):
    X, systems = crystals
    patterns = XRDPattern(n_bins=128).fit_transform(list(X["structure"]))
    given = pd.DataFrame({"xrd": list(5.0 * patterns)}, index=X.index)  # any scale: maximum is 1 after
    prepared = tiny_encoder("xrd", intensity_scale="sqrt")._prepare(given, "xrd", fit=False).values
    np.testing.assert_allclose(prepared, np.sqrt(patterns), atol=1e-5)
    encoder = tiny_encoder("xrd", intensity_scale="sqrt", augment=True, max_epochs=1, random_state=0)
    encoder.fit(X, systems)
    assert encoder.augmenter_ is None  # training-only state is dropped, as without scaling


def test_augmented_batches_are_scaled_like_the_transform(crystals):
    from skmat._training import MultiViewDataset
    from skmat.encoders.xrd import _AugmentedBatches
    from skmat.features.augment import XRDAugmenter

    X, _ = crystals
    structures = list(X["structure"])
    augmenter = XRDAugmenter(n_bins=128, random_state=0).fit(structures)
    prepared = tiny_encoder("xrd")._prepare(X, "xrd", fit=False)
    dataset = MultiViewDataset({"xrd": prepared})
    rows = np.arange(len(X))

    def batch(scale):
        collate = _AugmentedBatches(dataset.collate, "xrd", augmenter, rows, np.random.default_rng(1), None, 0.05, scale)
        views, _ = collate(list(range(8)))
        return views.views["xrd"][0].numpy()

    linear, root = batch("linear"), batch("sqrt")
    assert not np.allclose(linear, prepared.values[:8], atol=1e-3)  # redrawn, not the clean pattern
    np.testing.assert_allclose(root, np.sqrt(linear), atol=1e-5)


def test_linear_and_sqrt_train_different_models(crystals):
    X, systems = crystals
    common = dict(max_epochs=2, random_state=0, validation_fraction=0.0)
    linear = tiny_encoder("xrd", **common).fit(X, systems).transform(X)
    root = tiny_encoder("xrd", intensity_scale="sqrt", **common).fit(X, systems).transform(X)
    assert not np.allclose(linear, root, atol=1e-4)


def test_unknown_scale_is_refused(crystals):
    X, systems = crystals
    with pytest.raises(ValueError, match="intensity_scale must be one of"):
        tiny_encoder("xrd", intensity_scale="log", max_epochs=1).fit(X, systems)
    with pytest.raises(ValueError, match="intensity_scale"):
        scale_intensity(np.ones(4), "cubic")


def test_scale_intensity_leaves_its_input_alone():
    given = np.array([[0.0, -1e-9, 0.25, 1.0]])
    before = given.copy()
    out = scale_intensity(given, "sqrt")
    np.testing.assert_array_equal(given, before)
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.5, 1.0]])


def test_augment_fraction_redraws_that_share_of_a_batch(crystals):
    from skmat._training import MultiViewDataset
    from skmat.encoders.xrd import _AugmentedBatches
    from skmat.features.augment import XRDAugmenter

    X, systems = crystals
    augmenter = XRDAugmenter(n_bins=128, random_state=0).fit(list(X["structure"]))
    prepared = tiny_encoder("xrd")._prepare(X, "xrd", fit=False)
    dataset = MultiViewDataset({"xrd": prepared})
    rows = np.arange(len(X))

    def redrawn(fraction, seed):
        collate = _AugmentedBatches(dataset.collate, "xrd", augmenter, rows, np.random.default_rng(seed), None, 0.05,
                                    "linear", fraction)
        views, _ = collate(list(range(len(X))))
        return ~np.all(np.isclose(views.views["xrd"][0].numpy(), prepared.values, atol=1e-6), axis=1)

    assert redrawn(1.0, 0).all() and not redrawn(0.0, 0).any()
    # a fresh half of the rows in every batch: 24 rows, three draws
    counts = [int(redrawn(0.5, seed).sum()) for seed in range(3)]
    assert all(4 <= c <= 20 for c in counts) and len({tuple(redrawn(0.5, s)) for s in range(3)}) > 1
    with pytest.raises(ValueError, match="augment_fraction"):
        tiny_encoder("xrd", augment=True, augment_fraction=1.5, max_epochs=1).fit(X, systems)
