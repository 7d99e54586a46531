"""The electronic views computed by DFT: :class:`DOSEncoder` (a transformer over the density of
states) and :class:`ChargeDensityEncoder` (a periodic 3-D CNN over the charge-density grid)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from skmat._inputs import row_labels
from skmat.encoders._base import _NeuralViewEncoder, _with_training_doc
from skmat.exceptions import InvalidInputError


@_with_training_doc(max_epochs=30)
class DOSEncoder(_NeuralViewEncoder):
    """Transformer over the electronic density of states (as MLCM).

    Cells of the ``dos`` column are ``(2, L)`` arrays (energy − E_F in eV, density); every
    material's grid differs, so each is resampled onto a fixed window around the Fermi level.

    Parameters
    ----------
    energy_window : tuple of float, default=(-10.0, 10.0)
        Energies (eV, relative to E_F) kept.
    n_points : int, default=256
        Points of the resampled grid.
    out_dim : int, default=128
        Size of the embedding.
    view : str or None, default=None
        Column of DOS arrays; ``None`` means ``"dos"``.
%(training)s

    Examples
    --------
    Free-electron densities of states, ``g(E) ~ sqrt(E - E_bottom)``, of simple metals, with
    their textbook Fermi energies (eV, Ashcroft & Mermin) as the target. On real data use the
    ``dos`` column of :func:`~skmat.datasets.fetch_multimat_sample`.

    >>> import numpy as np
    >>> import pandas as pd
    >>> fermi_energy = {"Li": 4.74, "Na": 3.24, "K": 2.12, "Cu": 7.00, "Ag": 5.49, "Mg": 7.08, "Al": 11.7, "Pb": 9.47}
    >>> energy = np.linspace(-15.0, 5.0, 401)  # E - E_F, eV
    >>> X = pd.DataFrame({"dos": [np.stack([energy, np.sqrt(np.clip(energy + e_f, 0.0, None))])
    ...                           for e_f in fermi_energy.values()]}, index=list(fermi_energy))
    >>> y = list(fermi_energy.values())
    >>> enc = DOSEncoder(n_points=64, out_dim=16, max_epochs=2, validation_fraction=0, random_state=0).fit(X, y)
    >>> enc.transform(X).shape, enc.predict(X).shape
    ((8, 16), (8,))
    """

    _default_view = "dos"

    def __init__(
        self,
        energy_window: tuple[float, float] = (-10.0, 10.0),
        n_points: int = 256,
        out_dim: int = 128,
        view: str | None = None,
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
        self.energy_window = energy_window
        self.n_points = n_points
        self.out_dim = out_dim
        self.view = view
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

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView
        from skmat.features.spectra import resample_dos

        present, arrays = self._array_cells(frame, view, lambda a: None)
        labels = [row_labels(frame)[i] for i in np.flatnonzero(present)]
        values = np.zeros((len(arrays), self.n_points), dtype=np.float32)
        for i, (label, array) in enumerate(zip(labels, arrays, strict=True)):
            try:
                values[i] = resample_dos([array], energy_window=tuple(self.energy_window), n_points=self.n_points)[0]
            except InvalidInputError as exc:
                # resample_dos names the position in the list it was given; name the material
                raise InvalidInputError(exc.reason, row=label, view=view) from exc
        if fit:
            if len(values) == 0:
                raise InvalidInputError("no row has a DOS", view=view)
            # one global scale: densities are states/eV/cell and span orders of magnitude
            self.dos_scale_ = float(np.percentile(values, 99)) or 1.0
        check_is_fitted(self, "dos_scale_")
        return PreparedView(np.log1p(np.clip(values, 0, None) / self.dos_scale_).astype(np.float32), present)

    def _make_module(self):
        from skmat.nn.views import DOSEncoder as DOSNet

        return DOSNet(self.n_points, out_dim=self.out_dim)


@_with_training_doc(max_epochs=30)
class ChargeDensityEncoder(_NeuralViewEncoder):
    """3-D convolutional network with periodic padding over the charge density (as MLCM).

    Parameters
    ----------
    channels : tuple of int, default=(16, 32, 64)
        Channels per convolution stage.
    out_dim : int, default=128
        Size of the embedding.
    view : str or None, default=None
        Column of 3-D arrays; ``None`` means ``"charge_density"``.
%(training)s

    Examples
    --------
    >>> enc = ChargeDensityEncoder(max_epochs=1)
    >>> enc.get_params()["channels"]
    (16, 32, 64)
    """

    _default_view = "charge_density"

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64),
        out_dim: int = 128,
        view: str | None = None,
        max_epochs: int = 30,
        batch_size: int = 32,
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
        self.view = view
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

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView
        from skmat.features.spectra import normalize_charge_density

        # at fit the grid shape is learned anew (a refit may see another grid)
        grid = None if fit else self.grid_shape_
        present, arrays = self._array_cells(frame, view, lambda a: grid)
        for label, array in zip([row_labels(frame)[i] for i in np.flatnonzero(present)], arrays, strict=True):
            if array.ndim != 3:
                raise InvalidInputError(f"a charge density must be a 3-D grid, got shape {array.shape}", row=label, view=view)
        if fit:
            if not arrays:
                raise InvalidInputError("no row has a charge density", view=view)
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                raise InvalidInputError(f"charge-density grids differ in shape: {sorted(shapes)}", view=view)
            self.grid_shape_ = arrays[0].shape
        labels = [row_labels(frame)[i] for i in np.flatnonzero(present)]
        values = np.zeros((len(arrays), *self.grid_shape_), dtype=np.float32)
        for i, (label, array) in enumerate(zip(labels, arrays, strict=True)):
            try:
                values[i] = normalize_charge_density(array)
            except InvalidInputError as exc:
                raise InvalidInputError(exc.reason, row=label, view=view) from exc
        return PreparedView(values, present)

    def _make_module(self):
        from skmat.nn.views import ChargeDensityCNN

        return ChargeDensityCNN(grid=tuple(self.grid_shape_), out_dim=self.out_dim, channels=tuple(self.channels))
