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
"""

from __future__ import annotations

import math
import os
import re
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.ndimage import grey_opening, uniform_filter1d
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted

from skmat._inputs import is_missing, row_labels
from skmat.exceptions import InvalidInputError
from skmat.features.xrd import WAVELENGTHS, _check_two_theta_range, _feature_names, resolve_wavelength

__all__ = [
    "MeasuredXRD",
    "polynomial_baseline",
    "read_xy",
    "remove_background",
    "resample_measured",
    "rolling_ball_baseline",
]

BACKGROUND_METHODS = ("rolling_ball", "polynomial")
#: Negative intensities down to this fraction of the pattern's maximum are noise around a
#: subtracted background and are clipped to zero; deeper ones mean the column is not an
#: intensity (a difference curve, a log scale) and are refused.
DEFAULT_NEGATIVE_TOLERANCE = 0.05


def _grid_of(grid: tuple[float, float, int]) -> np.ndarray:
    try:
        lo, hi, n_bins = grid
    except (TypeError, ValueError):
        raise ValueError(f"grid must be (first 2θ, last 2θ, number of points), got {grid!r}") from None
    lo, hi = _check_two_theta_range((lo, hi))
    if not (isinstance(n_bins, Integral) and n_bins >= 2):
        raise ValueError(f"the number of grid points must be an integer >= 2, got {n_bins!r}")
    return np.linspace(lo, hi, int(n_bins))


def _measurement_wavelength(wavelength: Any, row: Any, view: str) -> float:
    try:
        value = resolve_wavelength(wavelength)
    except ValueError as exc:
        raise InvalidInputError(str(exc), row=row, view=view) from None
    if not math.isfinite(value):
        raise InvalidInputError(f"wavelength must be finite, got {wavelength!r}", row=row, view=view)
    return value


def _clean_measurement(
    two_theta: Any, intensity: Any, *, negative_tolerance: float, row: Any, view: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validated, sorted, de-duplicated float arrays; see :func:`resample_measured` for the rules."""
    try:
        x = np.asarray(two_theta, dtype=float)
        y = np.asarray(intensity, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"2θ and intensity must be numeric arrays: {exc}", row=row, view=view) from None
    if x.ndim != 1 or y.ndim != 1:
        raise InvalidInputError(
            f"2θ and intensity must be 1-D, got shapes {x.shape} and {y.shape}", row=row, view=view
        )
    if len(x) != len(y):
        raise InvalidInputError(
            f"2θ has {len(x)} values but intensity has {len(y)}", row=row, view=view
        )
    for name, values in (("2θ", x), ("intensity", y)):
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise InvalidInputError(
                f"{name} has {len(bad)} NaN or infinite values (first at point {int(bad[0])}); "
                "remove or fill them before resampling",
                row=row,
                view=view,
            )
    if len(x) and not (x.min() > 0 and x.max() < 180):
        raise InvalidInputError(
            f"2θ must lie strictly between 0 and 180 degrees, got {x.min():g} to {x.max():g}", row=row, view=view
        )
    # unsorted points are a matter of file order: sort; repeated 2θ values (overlapping scans,
    # rounding of the 2θ column) carry one intensity each: average them
    unique_x, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if len(unique_x) < len(x):
        y = np.bincount(inverse, weights=y) / counts
    else:
        y = y[np.argsort(x, kind="stable")]
    x = unique_x
    if len(x) < 2:
        raise InvalidInputError(f"need at least 2 distinct 2θ values, got {len(x)}", row=row, view=view)
    peak = y.max()
    if not peak > 0:
        raise InvalidInputError("the pattern has no positive intensity", row=row, view=view)
    if y.min() < -negative_tolerance * peak:
        raise InvalidInputError(
            f"intensities go down to {y.min():g}, below -{negative_tolerance:g} x the maximum {peak:g}: "
            "this does not look like a diffraction intensity (a difference curve? a log scale?)",
            row=row,
            view=view,
        )
    return x, np.maximum(y, 0.0)


def _lorentz_polarisation(theta: np.ndarray) -> np.ndarray:
    sin_theta, cos_theta = np.sin(theta), np.cos(theta)
    return (1 + np.cos(2 * theta) ** 2) / (sin_theta**2 * cos_theta)


def _bin_means(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Mean of the piecewise-linear interpolant of (x, y) over each grid bin; 0 where not covered.

    Bin *k* spans ``grid[k] ± step / 2``. When the measurement is finer than the grid this is
    the average of the points in the bin (trapezoid weights); when it is coarser, it is linear
    interpolation at the bin centre, smoothed over one bin. Bins less than half covered by
    the measured range are 0.
    """
    step = (grid[-1] - grid[0]) / (len(grid) - 1)
    edges = np.concatenate([grid - step / 2, [grid[-1] + step / 2]])
    slope = np.diff(y) / np.diff(x)
    # cumulative integral of the interpolant at each measured point
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x))])
    clipped = np.clip(edges, x[0], x[-1])
    segment = np.clip(np.searchsorted(x, clipped, side="right") - 1, 0, len(x) - 2)
    offset = clipped - x[segment]
    integral = cumulative[segment] + y[segment] * offset + 0.5 * slope[segment] * offset**2
    covered = np.diff(clipped)
    means = np.zeros(len(grid))
    enough = covered >= 0.5 * step
    means[enough] = np.diff(integral)[enough] / covered[enough]
    return means


def _resample(
    two_theta: Any,
    intensity: Any,
    wavelength: Any,
    grid: np.ndarray,
    target_wavelength: float,
    intensity_correction: bool,
    negative_tolerance: float,
    row: Any,
    view: str,
) -> np.ndarray:
    source_wavelength = _measurement_wavelength(wavelength, row, view)
    x, y = _clean_measurement(two_theta, intensity, negative_tolerance=negative_tolerance, row=row, view=view)
    if source_wavelength != target_wavelength:
        # same d-spacing: sin θ' = sin θ λ'/λ; planes the target cannot reach (sin θ' > 1) drop out
        theta = np.radians(x / 2)
        sin_target = np.sin(theta) * (target_wavelength / source_wavelength)
        reachable = sin_target < 1
        theta, sin_target, y = theta[reachable], sin_target[reachable], y[reachable]
        theta_target = np.arcsin(sin_target)
        if intensity_correction:
            # integrated intensities carry the Lorentz-polarisation factor of their own angle, and
            # a peak's width scales by dθ'/dθ = tan θ' / tan θ: correct both so peak areas match
            y = y * (_lorentz_polarisation(theta_target) / _lorentz_polarisation(theta))
            y = y * (np.tan(theta) / np.tan(theta_target))
        x = np.degrees(2 * theta_target)
        if len(x) < 2:
            raise InvalidInputError(
                f"fewer than 2 measured points are reachable at {target_wavelength} Å", row=row, view=view
            )
    pattern = _bin_means(x, y, grid)
    if not pattern.max() > 0:
        raise InvalidInputError(
            f"the measured range ({x[0]:.2f}-{x[-1]:.2f}° at the target wavelength) does not overlap the "
            f"grid ({grid[0]:g}-{grid[-1]:g}°) or holds no intensity there",
            row=row,
            view=view,
        )
    return pattern


def resample_measured(
    two_theta: Any,
    intensity: Any,
    wavelength: str | float = "CuKa",
    *,
    target_wavelength: str | float = "CuKa",
    grid: tuple[float, float, int] = (5.0, 90.0, 1701),
    intensity_correction: bool = True,
    negative_tolerance: float = DEFAULT_NEGATIVE_TOLERANCE,
) -> np.ndarray:
    """A measured pattern on the 2θ grid of another wavelength, through d-spacing.

    Each measured point at angle 2θ probes planes of spacing :math:`d = \\lambda / (2
    \\sin\\theta)`; it is moved to the angle 2θ' at which ``target_wavelength`` sees the same
    spacing, :math:`\\sin\\theta' = \\sin\\theta\\, \\lambda' / \\lambda`, so a Mo Kα pattern
    lands where the Cu Kα pattern of the same material would. The moved pattern (linear
    between points) is then averaged over each grid bin (width = grid step): a measurement
    finer than the grid is bin-averaged, a coarser one linearly interpolated.

    Repairs and errors (every error is an :class:`~skmat.exceptions.InvalidInputError`):

    * 2θ values out of order are **sorted**; repeated 2θ values are **merged** into one point
      with the mean of their intensities.
    * NaN or infinite 2θ or intensity values, arrays of different lengths or not 1-D, 2θ
      outside (0, 180)°, fewer than 2 distinct points, a non-positive wavelength and a
      pattern without positive intensity **raise**.
    * Negative intensities down to ``negative_tolerance`` x the maximum (noise around a
      subtracted background) are **clipped to 0**; deeper ones **raise**.
    * Grid bins outside the measured range (less than half covered) are **0**, the value
      of "no diffracted intensity" the network was trained on (a NaN would poison it).
    * Measured points that the target wavelength cannot reach (:math:`\\sin\\theta' > 1`) are
      dropped.

    Parameters
    ----------
    two_theta, intensity : array-like of shape (n_points,)
        The measurement, 2θ in degrees; any intensity scale (counts, max 100, ...).
    wavelength : str or float, default="CuKa"
        Wavelength of the measurement: a name in :data:`~skmat.features.xrd.WAVELENGTHS` or Å.
    target_wavelength : str or float, default="CuKa"
        Wavelength of the model's grid.
    grid : (float, float, int), default=(5.0, 90.0, 1701)
        First and last grid angle (degrees) and number of points, as in ``XRDPattern``.
    intensity_correction : bool, default=True
        When the wavelengths differ, rescale intensities by the ratio of Lorentz-polarisation
        factors and of peak widths (:math:`\\tan\\theta / \\tan\\theta'`), so that peak areas
        are those a measurement at the target wavelength would give.
    negative_tolerance : float, default=0.05
        Deepest negative intensity accepted, as a fraction of the maximum.

    Returns
    -------
    ndarray of shape (n_bins,), float32
        Not normalised (the measured intensity scale is kept), non-negative.

    Examples
    --------
    >>> two_theta = np.arange(10.0, 60.0, 0.01)
    >>> intensity = np.exp(-0.5 * ((two_theta - 31.7) / 0.05) ** 2)
    >>> pattern = resample_measured(two_theta, intensity, "CuKa", grid=(5, 90, 1701))
    >>> round(5 + 0.05 * int(pattern.argmax()), 2)
    31.7
    >>> # the same planes seen with Mo Kα come out where Cu Kα puts them
    >>> sin_mo = np.sin(np.radians(31.7 / 2)) * 0.71073 / 1.54184
    >>> two_theta_mo = np.arange(5.0, 40.0, 0.01)
    >>> mo = np.exp(-0.5 * ((two_theta_mo - np.degrees(2 * np.arcsin(sin_mo))) / 0.03) ** 2)
    >>> pattern = resample_measured(two_theta_mo, mo, "MoKa", grid=(5, 90, 1701))
    >>> round(5 + 0.05 * int(pattern.argmax()), 2)
    31.7
    """
    grid_points = _grid_of(grid)
    target = resolve_wavelength(target_wavelength)
    return _resample(
        two_theta, intensity, wavelength, grid_points, target, intensity_correction, negative_tolerance, None, "xrd"
    ).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Background
# --------------------------------------------------------------------------------------------


def rolling_ball_baseline(pattern: np.ndarray, window: int, smoothing: int | None = None) -> np.ndarray:
    """Background under a pattern by a morphological opening (a flat "rolling ball").

    The opening (minimum then maximum over ``window`` points) cuts every feature narrower
    than the window, i.e. the peaks, and keeps the slowly varying floor; a moving average
    over ``smoothing`` points then removes the opening's steps. The result never exceeds the
    pattern, so subtracting it leaves no negative value.

    Parameters
    ----------
    pattern : ndarray of shape (n,)
    window : int
        Points spanned by the ball; wider than the widest peak (cluster) to keep.
    smoothing : int, optional
        Moving-average width in points; default ``window``.

    Returns
    -------
    ndarray of shape (n,)

    Examples
    --------
    >>> x = np.linspace(0, 10, 501)
    >>> y = 1 + 0.1 * x + np.exp(-0.5 * ((x - 5) / 0.05) ** 2)
    >>> baseline = rolling_ball_baseline(y, window=51)
    >>> round(float(baseline[250]), 1), bool(np.all(baseline <= y))
    (1.5, True)
    """
    pattern = np.asarray(pattern, dtype=float)
    window = max(int(window), 1)
    floor = grey_opening(pattern, size=window, mode="nearest")
    smoothing = window if smoothing is None else max(int(smoothing), 1)
    floor = uniform_filter1d(floor, size=smoothing, mode="nearest")
    return np.minimum(floor, pattern)


def polynomial_baseline(
    pattern: np.ndarray, degree: int = 6, max_iter: int = 100, tol: float = 1e-3
) -> np.ndarray:
    """Background under a pattern by an iteratively clipped polynomial fit (ModPoly).

    A polynomial of ``degree`` is fitted, every point above it is lowered onto it, and the
    fit is repeated until it moves by less than ``tol`` (relative) — Lieber and
    Mahadevan-Jansen's modified polynomial fit [1]_. Peaks are pushed out of the fit while
    the floor between them holds it. The result never exceeds the pattern.

    Parameters
    ----------
    pattern : ndarray of shape (n,)
    degree : int, default=6
        Degree of the polynomial (Chebyshev basis on the pattern's span, well conditioned).
    max_iter : int, default=100
    tol : float, default=1e-3
        Stop when ``|fit_k - fit_{k-1}| / |fit_{k-1}|`` falls below it.

    Returns
    -------
    ndarray of shape (n,)

    References
    ----------
    .. [1] C. A. Lieber and A. Mahadevan-Jansen, "Automated method for subtraction of
       fluorescence from biological Raman spectra", Appl. Spectrosc. 57, 1363-1367 (2003).

    Examples
    --------
    >>> x = np.linspace(0, 10, 501)
    >>> y = 1 + 0.1 * x + np.exp(-0.5 * ((x - 5) / 0.05) ** 2)
    >>> baseline = polynomial_baseline(y, degree=2)
    >>> round(float(baseline[250]), 1), bool(np.all(baseline <= y))
    (1.5, True)
    """
    pattern = np.asarray(pattern, dtype=float)
    if len(pattern) <= degree:
        return np.full_like(pattern, pattern.min())
    x = np.linspace(-1.0, 1.0, len(pattern))
    # least squares onto the polynomials = projection onto the span of an orthonormal basis:
    # one QR up front, then two matrix-vector products per iteration
    orthonormal, _ = np.linalg.qr(np.polynomial.chebyshev.chebvander(x, degree))
    working = pattern.copy()
    previous = None
    for _ in range(max_iter):
        fit = orthonormal @ (orthonormal.T @ working)
        working = np.minimum(working, fit)
        if previous is not None:
            change = np.linalg.norm(fit - previous) / max(np.linalg.norm(previous), 1e-300)
            if change < tol:
                break
        previous = fit
    return np.minimum(fit, pattern)


def remove_background(
    patterns: np.ndarray,
    method: str | None,
    *,
    step: float = 0.05,
    window: float = 3.0,
    degree: int = 6,
) -> np.ndarray:
    """Subtract a baseline from each pattern on an even 2θ grid (rows of *patterns*).

    Only the span between the first and last non-zero points of each row is treated: bins
    outside a measured range are 0 (see :func:`resample_measured`) and must not drag the
    baseline down. Apply the same call to training (simulated) and measured patterns so the
    model sees identical preprocessing at fit and transform; on simulated patterns, which have
    no background, it removes almost nothing.

    Parameters
    ----------
    patterns : ndarray of shape (n_bins,) or (n_samples, n_bins)
    method : {"rolling_ball", "polynomial"} or None
        None returns a copy (negatives clipped to 0).
    step : float, default=0.05
        Grid step in degrees (converts ``window`` to points).
    window : float, default=3.0
        Rolling-ball width in degrees 2θ (also its smoothing width).
    degree : int, default=6
        Polynomial degree for ``"polynomial"``.

    Returns
    -------
    ndarray, same shape, float32, non-negative

    Examples
    --------
    >>> x = np.linspace(5, 90, 1701)
    >>> measured = 0.3 * np.exp(-x / 30) + np.exp(-0.5 * ((x - 30) / 0.06) ** 2)
    >>> cleaned = remove_background(measured, "rolling_ball")
    >>> bool(cleaned[:100].max() < 0.05), round(float(cleaned.max()), 1)
    (True, 1.0)
    """
    if method is not None and method not in BACKGROUND_METHODS:
        raise ValueError(f"background must be one of {BACKGROUND_METHODS} or None, got {method!r}")
    array = np.asarray(patterns, dtype=float)
    single = array.ndim == 1
    rows = np.atleast_2d(array).copy()
    if method is None:
        # FFT broadening leaves rounding negatives (~1e-9) in simulated patterns: clip them too
        rows = np.maximum(rows, 0.0)
        return (rows[0] if single else rows).astype(np.float32)
    window_points = max(int(round(window / step)), 3)
    for row in rows:
        nonzero = np.flatnonzero(row)
        if len(nonzero) < 2:
            continue
        span = slice(nonzero[0], nonzero[-1] + 1)
        segment = row[span]
        if method == "rolling_ball":
            baseline = rolling_ball_baseline(segment, window_points)
        else:
            baseline = polynomial_baseline(segment, degree=degree)
        row[span] = np.maximum(segment - baseline, 0.0)
    return (rows[0] if single else rows).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

_SEPARATORS = re.compile(r"[,;\s]+")
_COMMENT_MARKS = ("#", "!", "%", "//", "'")


def read_xy(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a two-column powder pattern (2θ, intensity) from a text file.

    Columns may be separated by whitespace, commas or semicolons; further columns (e.g.
    standard uncertainties) are ignored. Blank lines, lines starting with ``#``, ``!``,
    ``%``, ``//`` or ``'`` and a text header before the first numeric line (RRUFF files
    start with ``##`` lines) are skipped. The values are returned as read: pass them to
    :func:`resample_measured` (or :class:`MeasuredXRD`) for sorting, merging and checks.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    two_theta, intensity : ndarray of shape (n_points,), float64

    Raises
    ------
    InvalidInputError
        A data line with fewer than two numbers, or a file without any data line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pattern.xy"
    >>> _ = path.write_text("# 2theta, counts\\n10.00, 12\\n10.02, 15\\n")
    >>> read_xy(path)
    (array([10.  , 10.02]), array([12., 15.]))
    """
    path = Path(path)
    two_theta: list[float] = []
    intensity: list[float] = []
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith(_COMMENT_MARKS):
                continue
            fields = [f for f in _SEPARATORS.split(text) if f]
            try:
                x, y = float(fields[0]), float(fields[1])
            except (ValueError, IndexError):
                if not two_theta:  # a column header before the data
                    continue
                raise InvalidInputError(
                    f"line {line_number} is not two numbers (2θ, intensity): {text[:60]!r}",
                    row=str(path),
                    view="xrd",
                ) from None
            two_theta.append(x)
            intensity.append(y)
    if not two_theta:
        raise InvalidInputError("no (2θ, intensity) data lines found", row=str(path), view="xrd")
    return np.asarray(two_theta), np.asarray(intensity)


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
        grid = self.two_theta_grid()
        target = resolve_wavelength(self.target_wavelength)
        out = np.zeros((0, len(grid)), dtype=np.float32)
        measurements = self._measurements(self._frame(X))
        if not measurements:
            return out
        patterns = np.stack(
            [
                _resample(x, y, w, grid, target, self.intensity_correction, self.negative_tolerance, label, view)
                for label, x, y, w, view in measurements
            ]
        )
        step = (grid[-1] - grid[0]) / (len(grid) - 1)
        patterns = remove_background(
            patterns, self.background, step=step, window=self.background_window, degree=self.polynomial_degree
        ).astype(float)
        if self.normalize is not None:
            scale = patterns.max(axis=1) if self.normalize == "max" else patterns.sum(axis=1)
            # a pattern whose background removal left nothing stays all-zero rather than NaN
            patterns = patterns / np.where(scale > 0, scale, 1.0)[:, None]
        return patterns.astype(np.float32)

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
