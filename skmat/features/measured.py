"""Measured powder XRD patterns: read, repair, resample onto a model's 2θ grid, remove background.

A diffractometer gives intensities at its own 2θ points, for its own wavelength, often on a
sloping background. A model trained on :class:`~skmat.features.XRDPattern` expects patterns on a
fixed grid (by default 5-90° in 1,701 points, Cu Kα) scaled to a maximum of 1. This module
bridges the two:

* :func:`read_xy` reads two-column text files (``.xy``, ``.txt``, ``.csv``).
* :func:`resample_measured` maps every measured point through its d-spacing
  (Bragg's law, :math:`d = \\lambda / (2 \\sin\\theta)`) to the 2θ at which the target
  wavelength sees the same planes, then averages the pattern over each grid bin.
* :func:`rolling_ball_baseline` and :func:`polynomial_baseline` estimate a smooth background.
* :class:`MeasuredXRD` chains them as a stateless scikit-learn transformer whose output
  columns are those of :class:`~skmat.features.XRDPattern`.

The functions are defined in the numpy-only core :mod:`skmat.features._powder` (so that
``skmat identify`` reads and resamples patterns without importing scikit-learn or pandas) and
are imported from here.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted

from skmat._inputs import is_missing, row_labels
from skmat.exceptions import InvalidInputError
from skmat.features._powder import (  # noqa: F401  (the functions are re-exported: this is their home)
    BACKGROUND_METHODS,
    DEFAULT_NEGATIVE_TOLERANCE,
    WAVELENGTHS,
    _check_two_theta_range,
    measured_on_grid,
    polynomial_baseline,
    read_xy,
    remove_background,
    resample_measured,
    rolling_ball_baseline,
    scale_intensity,
)
from skmat.features.xrd import _feature_names

__all__ = [
    "MeasuredXRD",
    "polynomial_baseline",
    "read_xy",
    "remove_background",
    "resample_measured",
    "rolling_ball_baseline",
    "scale_intensity",
]

# --------------------------------------------------------------------------------------------
# scikit-learn transformer
# --------------------------------------------------------------------------------------------


class MeasuredXRD(TransformerMixin, BaseEstimator):
    """Measured powder patterns on the 2θ grid of :class:`~skmat.features.XRDPattern`.

    Each row's measurement is checked and repaired, moved to ``target_wavelength`` through
    d-spacing and averaged onto the grid (:func:`resample_measured`), its background is
    optionally removed (:func:`remove_background`) and it is normalised. Nothing is learned:
    the same row always gives the same output, at fit and at transform, so training patterns
    passed through the same settings get identical preprocessing.

    Parameters
    ----------
    wavelength : str or float, default="CuKa"
        Wavelength of rows without a ``wavelength`` column value (name or Å).
    target_wavelength : str or float, default="CuKa"
        Wavelength of the output grid (that of the simulated training patterns).
    two_theta_range : (float, float), default=(5.0, 90.0)
        First and last grid point, degrees.
    n_bins : int, default=1701
        Grid points.
    background : {"rolling_ball", "polynomial"} or None, default=None
        Baseline removal: a morphological opening of width ``background_window``, or an
        iterative (ModPoly) polynomial fit of degree ``polynomial_degree``.
    background_window : float, default=3.0
        Rolling-ball width, degrees 2θ.
    polynomial_degree : int, default=6
        Degree of the polynomial baseline.
    normalize : {"max", "sum"} or None, default="max"
        Scale each pattern to a maximum of 1, a sum of 1, or not at all.
    intensity_correction : bool, default=True
        See :func:`resample_measured`.
    negative_tolerance : float, default=0.05
        See :func:`resample_measured`.

    Attributes
    ----------
    n_features_in_ : int
        Number of input columns seen in ``fit``.
    feature_names_in_ : ndarray of str
        Input column names.

    Notes
    -----
    Input: a DataFrame with array columns ``two_theta`` and ``intensity`` (and optionally
    ``wavelength``, a name or Å per row), as :func:`~skmat.datasets.fetch_rruff_xrd` returns;
    or a DataFrame with an ``xrd`` column whose cells are ``(two_theta, intensity)`` pairs
    (or ``(2, n)`` arrays); or a list of such pairs. A missing cell raises: this
    transformer has no pattern to give for it.

    Examples
    --------
    >>> import pandas as pd
    >>> two_theta = np.arange(10.0, 80.0, 0.02)
    >>> counts = 50 + 1000 * np.exp(-0.5 * ((two_theta - 31.7) / 0.05) ** 2)
    >>> X = pd.DataFrame({"xrd": [(two_theta, counts)]})
    >>> patterns = MeasuredXRD(background="rolling_ball").fit_transform(X)
    >>> patterns.shape, float(patterns.max()), str(MeasuredXRD().get_feature_names_out()[patterns[0].argmax()])
    ((1, 1701), 1.0, 'xrd_31.70')
    """

    _parameter_constraints: dict = {
        "wavelength": [StrOptions(set(WAVELENGTHS)), Interval(Real, 0, None, closed="neither")],
        "target_wavelength": [StrOptions(set(WAVELENGTHS)), Interval(Real, 0, None, closed="neither")],
        "two_theta_range": ["array-like"],
        "n_bins": [Interval(Integral, 2, None, closed="left")],
        "background": [StrOptions(set(BACKGROUND_METHODS)), None],
        "background_window": [Interval(Real, 0, None, closed="neither")],
        "polynomial_degree": [Interval(Integral, 0, 20, closed="both")],
        "normalize": [StrOptions({"max", "sum"}), None],
        "intensity_correction": ["boolean"],
        "negative_tolerance": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        wavelength: str | float = "CuKa",
        target_wavelength: str | float = "CuKa",
        two_theta_range: tuple[float, float] = (5.0, 90.0),
        n_bins: int = 1701,
        background: str | None = None,
        background_window: float = 3.0,
        polynomial_degree: int = 6,
        normalize: str | None = "max",
        intensity_correction: bool = True,
        negative_tolerance: float = DEFAULT_NEGATIVE_TOLERANCE,
    ):
        self.wavelength = wavelength
        self.target_wavelength = target_wavelength
        self.two_theta_range = two_theta_range
        self.n_bins = n_bins
        self.background = background
        self.background_window = background_window
        self.polynomial_degree = polynomial_degree
        self.normalize = normalize
        self.intensity_correction = intensity_correction
        self.negative_tolerance = negative_tolerance

    def _validate_params(self) -> None:
        validate_parameter_constraints(
            self._parameter_constraints, self.get_params(deep=False), caller_name=type(self).__name__
        )
        _check_two_theta_range(self.two_theta_range)

    @staticmethod
    def _frame(X: Any) -> pd.DataFrame:
        if isinstance(X, pd.DataFrame):
            return X
        if isinstance(X, list | tuple):
            return pd.DataFrame({"xrd": pd.Series(list(X), dtype=object)})
        raise InvalidInputError(
            "expected a DataFrame with 'two_theta' and 'intensity' columns or an 'xrd' column of "
            f"(two_theta, intensity) pairs, or a list of such pairs; got {type(X).__name__}",
            view="xrd",
        )

    def _measurements(self, frame: pd.DataFrame) -> list[tuple[Any, Any, Any, Any, str]]:
        """(label, two_theta, intensity, wavelength, view) of every row."""
        labels = row_labels(frame)
        wavelengths = frame["wavelength"] if "wavelength" in frame.columns else [None] * len(frame)
        rows = []
        if "two_theta" in frame.columns and "intensity" in frame.columns:
            for label, x, y, w in zip(labels, frame["two_theta"], frame["intensity"], wavelengths, strict=True):
                if is_missing(x) or is_missing(y):
                    raise InvalidInputError("no measured pattern in this row", row=label, view="two_theta")
                rows.append((label, x, y, self.wavelength if is_missing(w) else w, "intensity"))
        elif "xrd" in frame.columns:
            for label, cell, w in zip(labels, frame["xrd"], wavelengths, strict=True):
                if is_missing(cell):
                    raise InvalidInputError("no measured pattern in this row", row=label, view="xrd")
                pair = cell
                if isinstance(cell, np.ndarray) and cell.ndim == 2 and cell.shape[0] != 2 and cell.shape[1] == 2:
                    pair = cell.T  # (n, 2) columns as read from a file
                try:
                    x, y = pair
                except (TypeError, ValueError):
                    raise InvalidInputError(
                        "an 'xrd' cell of a measured pattern must be a (two_theta, intensity) pair",
                        row=label,
                        view="xrd",
                    ) from None
                rows.append((label, x, y, self.wavelength if is_missing(w) else w, "xrd"))
        else:
            raise InvalidInputError(
                "no measured patterns: expected columns 'two_theta' and 'intensity', or 'xrd'; "
                f"got {list(frame.columns)}",
                view="xrd",
            )
        return rows

    def fit(self, X: Any, y: Any = None) -> MeasuredXRD:
        """Check parameters and record the input columns; nothing is learned.

        Parameters
        ----------
        X : DataFrame or list of (two_theta, intensity)
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        frame = self._frame(X)
        self.n_features_in_ = frame.shape[1]
        if all(isinstance(c, str) for c in frame.columns):
            self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Patterns of every row on the grid.

        Returns
        -------
        ndarray of shape (n_samples, n_bins), float32, finite and non-negative
        """
        check_is_fitted(self, "n_features_in_")
        return measured_on_grid(
            self._measurements(self._frame(X)),
            self.two_theta_grid(),
            self.target_wavelength,
            background=self.background,
            background_window=self.background_window,
            polynomial_degree=self.polynomial_degree,
            normalize=self.normalize,
            intensity_correction=self.intensity_correction,
            negative_tolerance=self.negative_tolerance,
        )

    def two_theta_grid(self) -> np.ndarray:
        """The 2θ values (degrees) of the output columns."""
        lo, hi = _check_two_theta_range(self.two_theta_range)
        return np.linspace(lo, hi, self.n_bins)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns, ``"xrd_<2θ>"``, as :class:`~skmat.features.XRDPattern`."""
        return _feature_names(self.two_theta_grid())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        return tags
