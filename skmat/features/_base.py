"""Shared behaviour of the stateless physics featurizers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from skmat._inputs import as_compositions, as_structures, to_frame
from skmat._parallel import map_chunks


class BaseFeaturizer(TransformerMixin, BaseEstimator):
    """Stateless featurizer: ``fit`` records the input's shape, ``transform`` does the work.

    Subclasses set ``_input_view`` (``"structure"`` or ``"composition"``), implement
    ``_validate_params()`` (raise ``ValueError`` on bad settings), ``_chunk_kwargs()`` (the
    settings passed to the module-level ``_chunk_function``) and ``get_feature_names_out``.
    They must keep attributes ``n_jobs``, ``verbose`` and ``memory``.

    What ``_items(X)`` returns is what the workers receive and what the ``memory`` cache is
    keyed on, through :func:`skmat._parallel.chunk_digest`: pymatgen Structures and
    Compositions, numpy arrays, numbers, strings and (named) tuples of those are keyed by
    content, so a repeated ``transform`` of equal inputs loads its results. A subclass may
    return lighter records than Structures (``XRDPattern`` does) to make pickling to workers
    cheaper; records of other types must pickle deterministically.

    ``_chunk_size`` (items per task and per cache entry) may be a class attribute or, when the
    subclass exposes a ``chunk_size`` parameter, a property returning it.
    """

    _input_view = "structure"
    _chunk_function = None  # module-level function(list_of_items, **kwargs) -> rows (list or array)
    _chunk_size = 128

    def fit(self, X: Any, y: Any = None) -> BaseFeaturizer:
        """Check parameters and record the input columns; nothing is learned.

        Parameters
        ----------
        X : DataFrame or list of Structure
            Materials, one per row.
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        frame = to_frame(X, default_column=self._input_view)
        self.n_features_in_ = frame.shape[1]
        if isinstance(X, pd.DataFrame) and all(isinstance(c, str) for c in X.columns):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    def _items(self, X: Any) -> list:
        if self._input_view == "composition":
            return as_compositions(X)
        return as_structures(X)

    def transform(self, X: Any) -> np.ndarray:
        """Featurize every row of *X*.

        Returns
        -------
        ndarray of shape (n_samples, n_features_out), float32
        """
        # stateless: transform needs no fit (the ``requires_fit=False`` tag), only valid settings
        self._validate_params()
        items = self._items(X)
        rows = map_chunks(
            type(self)._chunk_function,
            items,
            kwargs=self._chunk_kwargs(),
            n_jobs=self.n_jobs,
            chunk_size=self._chunk_size,
            verbose=self.verbose,
            desc=type(self).__name__,
            memory=self.memory,
        )
        if len(rows) == 0:
            return np.zeros((0, len(self.get_feature_names_out())), dtype=np.float32)
        # the width comes from the rows: building the feature names costs milliseconds for
        # a 1701-bin pattern, more than featurising one structure
        return np.asarray(rows, dtype=np.float32).reshape(len(items), -1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        return tags
