"""ImageCNN (skmat.nn.image) and the image-view validation (skmat._inputs.image_cells), on
diffraction images of real MP-20 structures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skmat._inputs import image_cells
from skmat.exceptions import InvalidInputError
from skmat.features.saed import DiffractionImage
from skmat.nn.image import ImageCNN

SIZE = 32


@pytest.fixture(scope="module")
def images(mp20_val_rows):
    """(labels, images (16, 3, 32, 32)) of 16 MP-20 val structures."""
    rows = mp20_val_rows.iloc[:16]
    saed = DiffractionImage(size=SIZE)
    return list(rows["material_id"]), saed.to_images(saed.fit_transform(rows[["structure"]]))


def test_embeds_flat_and_stacked_batches_alike(images):
    _, stack = images
    torch.manual_seed(0)
    net = ImageCNN(in_channels=3, image_size=SIZE, out_dim=8).eval()
    x = torch.from_numpy(stack)
    z = net(x)
    assert z.shape == (16, 8) and torch.isfinite(z).all()
    torch.testing.assert_close(net(x.flatten(1)), z)
    # GroupNorm: a row's embedding does not depend on the rest of its batch
    torch.testing.assert_close(net(x[:1]), z[:1], atol=1e-6, rtol=1e-5)
    # different materials, different embeddings
    assert torch.cdist(z, z)[~torch.eye(16, dtype=bool)].min() > 1e-4


def test_wrong_input_shape_is_refused():
    net = ImageCNN(in_channels=3, image_size=SIZE, out_dim=8)
    with pytest.raises(ValueError, match=r"expected shape \(B, 3, 32, 32\)"):
        net(torch.rand(2, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match="expected shape"):
        net(torch.rand(2, 3 * SIZE * SIZE + 1))


def test_positions_survive_the_head_unless_pooled_globally(images):
    # a spot pattern and its mirror image differ only in where the spots are
    _, stack = images
    x = torch.from_numpy(stack[:4])
    mirrored = torch.flip(x, dims=[3])
    torch.manual_seed(0)
    kept = ImageCNN(3, SIZE, out_dim=8, pooled_size=2).eval()
    assert (kept(x) - kept(mirrored)).abs().max() > 1e-3


def test_learns_to_tell_two_materials_apart(images):
    # a few optimiser steps separate the patterns of two real structures (the gradient reaches
    # every stage); a broken network (e.g. a detached stage) would stay at chance
    _, stack = images
    x = torch.from_numpy(stack[:2]).repeat(4, 1, 1, 1)
    y = torch.tensor([0, 1] * 4)
    torch.manual_seed(0)
    net = ImageCNN(3, SIZE, out_dim=2, dropout=0.0)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(20):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.05
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.features.parameters())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_channels=0, image_size=8), "in_channels"),
        (dict(in_channels=1, image_size=(8,)), "image_size"),
        (dict(in_channels=1, image_size=8, kernel_size=2), "kernel_size"),
        (dict(in_channels=1, image_size=8, pooled_size=-1), "pooled_size"),
        (dict(in_channels=1, image_size=8, channels=()), "channels"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageCNN(**kwargs)


# -- image_cells: what an ImageEncoder's _prepare calls ------------------------------------------
def test_image_cells_accepts_stacks_flat_rows_and_missing_views(images):
    labels, stack = images
    cells = [stack[0], None, stack[2].ravel(), float("nan"), stack[4]]
    present, values = image_cells(cells, labels[:5], shape=(3, SIZE, SIZE))
    assert present.tolist() == [True, False, True, False, True]
    np.testing.assert_array_equal(values, stack[[0, 2, 4]])


@pytest.mark.parametrize(
    "defect, match",
    [
        (lambda a: a[:, :-1], r"expected an image of shape \(3, 32, 32\).*got shape \(3, 31, 32\)"),
        (lambda a: a[:2], r"got shape \(2, 32, 32\)"),
        (lambda a: a.ravel()[:-1], r"got shape \(3071,\)"),
        (lambda a: np.where(np.arange(a.size).reshape(a.shape) == 40, np.nan, a), r"1 pixel\(s\) are NaN or inf \(first at channel 0, row 1, column 8\)"),
        (lambda a: np.full_like(a, np.inf), r"3072 pixel\(s\) are NaN or inf"),
        (lambda a: np.array(["a"] * 4), "cannot read the image as numbers"),
    ],
)
def test_image_cells_names_the_bad_row(images, defect, match):
    labels, stack = images
    cells = list(stack[:5])
    cells[3] = defect(stack[3])
    with pytest.raises(InvalidInputError, match=match) as caught:
        image_cells(cells, labels[:5], shape=(3, SIZE, SIZE))
    assert caught.value.row == labels[3] and caught.value.view == "image"
    # without a known shape (at fit), the first present row sets it
    if "pixel" not in match and "numbers" not in match and "3071" not in match:
        with pytest.raises(InvalidInputError) as caught:
            image_cells(cells, labels[:5])
        assert caught.value.row == labels[3]
