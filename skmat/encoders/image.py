"""The image view: :class:`ImageEncoder`, a 2-D CNN over multi-channel images given in an
``image`` column or rendered from structures as electron diffraction (SAED) spot patterns."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from skmat._inputs import image_cells, present_structures, row_labels
from skmat.encoders._base import _NeuralViewEncoder, _with_training_doc
from skmat.exceptions import InvalidInputError


@_with_training_doc(max_epochs=30)
class ImageEncoder(_NeuralViewEncoder):
    """2-D convolutional network over images, e.g. simulated electron diffraction patterns.

    Cells of the ``image`` column are ``(C, H, W)`` arrays (or ``(H, W)``, one channel), all of
    one shape, with finite pixels; they are used as given (no rescaling). When the column is
    absent, each row's image is rendered from its ``structure`` by
    :class:`~skmat.features.DiffractionImage` (one channel per zone axis, each scaled to a
    maximum of 1); a row without a structure then has no image (a missing view).

    Parameters
    ----------
    channels : tuple of int, default=(16, 32, 64, 128)
        Channels of each stride-2 convolution stage of :class:`~skmat.nn.image.ImageCNN`.
    out_dim : int, default=128
        Size of the embedding.
    pooled_size : int, default=4
        The last stage is average-pooled to ``pooled_size x pooled_size`` windows and
        flattened, so the embedding knows where the spots are; ``0`` pools globally.
    zone_axes : sequence of (int, int, int), default=((0, 0, 1), (1, 1, 0), (1, 1, 1))
        Zone axes of the diffraction images rendered from structures (the channels).
    size : int, default=64
        Height and width of the rendered images, pixels.
    max_g : float, default=1.0
        Reciprocal-space radius of the rendered field of view, Å⁻¹.
    view : str or None, default=None
        Column of images; ``None`` means ``"image"``.
    memory : None, str or joblib.Memory, default=None
        Cache of rendered images (see :class:`~skmat.features.DiffractionImage`).
%(training)s

    Attributes
    ----------
    image_shape_ : tuple of int
        ``(channels, height, width)`` of the images seen at ``fit``; ``transform`` refuses any
        other shape, naming the row.
    net_ : skorch.NeuralNet
        The trained network (encoder and head).

    See Also
    --------
    skmat.features.DiffractionImage : the SAED images rendered from structures.
    skmat.nn.image.ImageCNN : the network.

    Examples
    --------
    Diffraction images of real crystals, rendered from their structures, with the lattice
    parameter as the target:

    >>> from skmat.datasets import load_prototypes
    >>> frame = load_prototypes().frame.iloc[:16]
    >>> enc = ImageEncoder(channels=(8, 16), size=32, out_dim=16, max_epochs=1, validation_fraction=0, random_state=0)
    >>> enc = enc.fit(frame[["structure"]], frame["a_scaled"].to_numpy())
    >>> enc.image_shape_, enc.transform(frame[["structure"]]).shape
    ((3, 32, 32), (16, 16))
    """

    _default_view = "image"

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64, 128),
        out_dim: int = 128,
        pooled_size: int = 4,
        zone_axes: tuple = ((0, 0, 1), (1, 1, 0), (1, 1, 1)),
        size: int = 64,
        max_g: float = 1.0,
        view: str | None = None,
        memory: Any = None,
        max_epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.1,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.channels = channels
        self.out_dim = out_dim
        self.pooled_size = pooled_size
        self.zone_axes = zone_axes
        self.size = size
        self.max_g = max_g
        self.view = view
        self.memory = memory
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    def _featurizer(self):
        from skmat.features.saed import DiffractionImage

        return DiffractionImage(
            zone_axes=self.zone_axes, size=self.size, max_g=self.max_g, memory=self.memory, verbose=self.verbose
        )

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView

        if not fit:
            check_is_fitted(self, "image_shape_")
        if view not in frame.columns:
            present, _ = present_structures(frame)
            featurizer = self._featurizer()
            if present.any():
                # rendered from the rows themselves, so that an error names the row's label
                values = featurizer.to_images(featurizer.fit_transform(frame.iloc[np.flatnonzero(present)]))
            else:
                values = np.zeros((0, *featurizer.image_shape), dtype=np.float32)
            if not fit and values.shape[1:] != tuple(self.image_shape_):
                raise InvalidInputError(
                    f"images rendered from structures have shape {values.shape[1:]}, but the encoder was "
                    f"fitted on images of shape {tuple(self.image_shape_)}",
                    view=view,
                )
        else:
            shape = None if fit else tuple(self.image_shape_)
            present, values = image_cells(list(frame[view]), row_labels(frame), shape=shape, view=view)
        if fit:
            if not present.any():
                raise InvalidInputError(
                    f"no row has an image (an {view!r} column, or a structure to render one from)", view=view
                )
            self.image_shape_ = tuple(int(s) for s in values.shape[1:])
        return PreparedView(values.astype(np.float32, copy=False), present)

    def _make_module(self):
        from skmat.nn.image import ImageCNN

        channels, height, width = self.image_shape_
        return ImageCNN(
            in_channels=channels,
            image_size=(height, width),
            out_dim=self.out_dim,
            channels=tuple(self.channels),
            pooled_size=self.pooled_size,
        )
