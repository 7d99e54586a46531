"""The composition view: :class:`CompositionEncoder`, an MLP over Magpie statistics of a
``composition`` column (Composition or formula) or of the structure's composition."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from skmat._inputs import as_compositions, is_missing, present_structures, row_labels
from skmat.encoders._base import _NeuralViewEncoder, _with_training_doc
from skmat.exceptions import InvalidInputError


@_with_training_doc(max_epochs=30)
class CompositionEncoder(_NeuralViewEncoder):
    """MLP over Magpie element-property statistics of the composition (as UniMat).

    The composition comes from a ``composition`` column (Composition or formula string) or
    from ``structure``. Features are standardised with statistics learned at fit.

    Parameters
    ----------
    hidden_dims : tuple of int, default=(256, 256)
        Hidden layer widths.
    out_dim : int, default=128
        Size of the embedding.
    dropout : float, default=0.1
        Dropout between hidden layers.
    view : str or None, default=None
        Column of compositions; ``None`` means ``"composition"``.
    memory : None, str or joblib.Memory, default=None
        Cache for the Magpie features.
%(training)s

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"composition": ["NaCl", "KCl", "MgO", "CaO"] * 4})
    >>> y = [5.6, 6.3, 4.2, 4.8] * 4
    >>> CompositionEncoder(max_epochs=2, validation_fraction=0, random_state=0).fit(X, y).transform(X).shape
    (16, 128)
    """

    _default_view = "composition"

    def __init__(
        self,
        hidden_dims: tuple[int, ...] = (256, 256),
        out_dim: int = 128,
        dropout: float = 0.1,
        view: str | None = None,
        memory=None,
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
        self.hidden_dims = hidden_dims
        self.out_dim = out_dim
        self.dropout = dropout
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

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView
        from skmat.features.composition import CompositionFeatures

        present = np.zeros(len(frame), dtype=bool)
        compositions: list = [None] * len(frame)
        if view in frame.columns:
            rows = [i for i, v in enumerate(frame[view]) if not is_missing(v)]
            parsed = as_compositions(frame.iloc[rows][[view]].set_axis([row_labels(frame)[i] for i in rows]), column=view)
            for i, c in zip(rows, parsed, strict=True):
                compositions[i] = c
                present[i] = True
        has_structure, structures = present_structures(frame)
        for i, s in zip(np.flatnonzero(has_structure), structures, strict=True):
            if not present[i]:
                compositions[i] = s.composition
                present[i] = True
        chosen = [compositions[i] for i in np.flatnonzero(present)]
        featurizer = CompositionFeatures(memory=self.memory, verbose=self.verbose)
        if chosen:
            features = featurizer.fit_transform(chosen).astype(np.float64)
        else:
            features = np.zeros((0, len(featurizer.fit(["H"]).get_feature_names_out())))
        if fit:
            if len(features) == 0:
                raise InvalidInputError("no row has a composition or structure", view=view)
            self.feature_mean_ = np.nanmean(features, axis=0)
            self.feature_scale_ = np.nanstd(features, axis=0)
            self.feature_scale_[~(self.feature_scale_ > 1e-12)] = 1.0
            self.feature_mean_ = np.nan_to_num(self.feature_mean_)
        check_is_fitted(self, "feature_mean_")
        scaled = np.nan_to_num((features - self.feature_mean_) / self.feature_scale_).astype(np.float32)
        return PreparedView(scaled, present)

    def _make_module(self):
        from skmat.nn.views import MLPEncoder

        return MLPEncoder(
            len(self.feature_mean_), out_dim=self.out_dim, hidden_dims=tuple(self.hidden_dims), dropout=self.dropout
        )
