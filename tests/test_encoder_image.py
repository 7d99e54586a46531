"""ImageEncoder on real crystals: SAED images rendered from structures or given in a column,
inside an aligner with the structure view, and the images it refuses."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from _helpers import prototype_crystals, tiny_aligner, tiny_encoder
from skmat.encoders import ImageEncoder
from skmat.exceptions import InvalidInputError
from skmat.features import DiffractionImage
from skmat.retrieval import rank_of_true

TINY = dict(out_dim=8, max_epochs=1, batch_size=16, validation_fraction=0.0, random_state=0)
tiny = functools.partial(tiny_encoder, "image", **TINY)


@pytest.fixture(scope="module")
def crystals():
    return prototype_crystals(32)


@pytest.fixture(scope="module")
def images(crystals):
    """The SAED images the tiny encoder renders, as an ``image`` column of (3, 16, 16) arrays."""
    X, y, _ = crystals
    saed = DiffractionImage(size=16)
    stack = saed.to_images(saed.fit_transform(X))
    return pd.DataFrame({"image": list(stack)}, index=X.index), y


def test_images_are_rendered_from_structures_and_match_a_given_column(crystals, images):
    X, y, _ = crystals
    encoder = tiny().fit(X, y)
    assert encoder.image_shape_ == (3, 16, 16)
    embedded = encoder.transform(X)
    assert embedded.shape == (len(X), 8) and np.all(np.isfinite(embedded))
    # the same images given as a column give the same embeddings
    np.testing.assert_allclose(encoder.transform(images[0]), embedded, atol=1e-6)
    # the images differ between crystals, and so do their embeddings
    assert len({row.tobytes() for row in embedded.round(5)}) > len(X) // 2


def test_given_images_train_without_structures(images):
    X, y = images
    encoder = tiny(max_epochs=2).fit(X, y)
    assert encoder.image_shape_ == (3, 16, 16)
    assert np.all(np.isfinite(encoder.predict(X)))
    losses = encoder.net_.history[:, "train_loss"]
    assert len(losses) == 2 and np.all(np.isfinite(losses))


def test_one_channel_images_are_read_as_height_by_width(images):
    X, y = images
    one = X.assign(image=[cell[0] for cell in X["image"]])
    encoder = tiny().fit(one, y)
    assert encoder.image_shape_ == (1, 16, 16)
    assert encoder.transform(one).shape == (len(X), 8)


def test_inside_an_aligner_with_the_structure_view(crystals):
    X, _, _ = crystals
    aligner = tiny_aligner(("structure", "image"), max_epochs=3, batch_size=8).fit(X)
    assert aligner.views_ == ["structure", "image"]
    fused = aligner.transform(X)
    assert fused.shape == (len(X), 8) and np.all(np.isfinite(fused))
    ranks = rank_of_true(aligner.embed(X, "structure"), aligner.embed(X, "image"))
    assert ranks.shape == (len(X),) and ranks.min() >= 1
    # a row without a structure (so without an image either) is a missing view, not a crash
    holed = X.copy()
    holed.iloc[2, 0] = None
    assert np.all(np.isfinite(aligner.transform(holed.iloc[[0, 1, 3]])))


def test_image_of_another_shape_is_refused_naming_the_row(crystals, images):
    X, y = images
    encoder = tiny().fit(X, y)
    cells = list(X["image"])
    cells[4] = cells[4][:, :8, :8]
    with pytest.raises(InvalidInputError, match=r"shape \(3, 16, 16\)") as info:
        encoder.transform(X.assign(image=cells))
    assert (info.value.row, info.value.view) == (X.index[4], "image")
    # at fit, images of two shapes in one column are refused too
    with pytest.raises(InvalidInputError) as info:
        tiny().fit(X.assign(image=cells), y)
    assert info.value.row == X.index[4]
    # images rendered from structures at another size than those seen at fit are refused
    with pytest.raises(InvalidInputError, match="rendered from structures"):
        encoder.set_params(size=8).transform(crystals[0])


def test_nan_pixels_are_refused_naming_the_row(images):
    X, y = images
    cells = [cell.copy() for cell in X["image"]]
    cells[7][1, 3, 5] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or inf") as info:
        tiny().fit(X.assign(image=cells), y)
    assert (info.value.row, info.value.view) == (X.index[7], "image")
    encoder = tiny().fit(X, y)
    cells[7][1, 3, 5] = np.inf
    with pytest.raises(InvalidInputError, match="NaN or inf") as info:
        encoder.transform(X.assign(image=cells))
    assert info.value.row == X.index[7]


def test_no_image_at_all_and_zero_zone_axis_are_refused(crystals, images):
    X, y, _ = crystals
    with pytest.raises(InvalidInputError, match="no row has an image"):
        tiny().fit(images[0].assign(image=None), y)
    with pytest.raises(InvalidInputError, match=r"\(0, 0, 0\)"):
        tiny(zone_axes=[(0, 0, 1), (0, 0, 0)]).fit(X, y)


def test_a_missing_image_is_refused_by_the_standalone_encoder(images):
    X, y = images
    cells = list(X["image"])
    cells[3] = None
    with pytest.raises(InvalidInputError, match="missing") as info:
        tiny().fit(X.assign(image=cells), y)
    assert info.value.row == X.index[3]


def test_default_network_takes_the_default_images():
    net = ImageEncoder().set_params()  # defaults: 3 zone axes, 64 x 64
    net.image_shape_ = (3, 64, 64)
    module = net._make_module()
    assert module.out_dim == 128 and (module.in_channels, module.height, module.width) == (3, 64, 64)
