"""The numpy core of powder XRD patterns, free of scikit-learn, pandas and pymatgen.

* radiation wavelengths (:data:`WAVELENGTHS`, :func:`resolve_wavelength`) and 2θ-window checks;
* :func:`broaden`: sticks -> a continuous pattern on an even 2θ grid;
* measured patterns: :func:`read_xy`, :func:`resample_measured` (through d-spacing), the
  baselines and :func:`remove_background`, and :func:`measured_on_grid`, the whole chain that
  :class:`~skmat.features.measured.MeasuredXRD` applies.

:mod:`skmat.features.xrd` and :mod:`skmat.features.measured` build their transformers on these
functions and re-export them; that is where they are documented and imported from. They live
here so that ``skmat identify``, which reads, resamples and compares patterns but fits nothing,
imports numpy and scipy only: scikit-learn, pandas and pymatgen's diffraction module (which
imports matplotlib) cost ~2 s of its cold start.
"""

from __future__ import annotations

import functools
import math
import os
import re
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from scipy.ndimage import grey_opening, uniform_filter1d

from skmat.exceptions import InvalidInputError

#: X-ray wavelengths (Å) by radiation name: pymatgen's ``WAVELENGTHS``, copied so that naming
#: "CuKa" does not import pymatgen.analysis.diffraction (tests/test_features_xrd.py keeps the
#: copy equal to pymatgen's table).
WAVELENGTHS = {
    "CuKa": 1.54184,
    "CuKa2": 1.54439,
    "CuKa1": 1.54056,
    "CuKb1": 1.39222,
    "MoKa": 0.71073,
    "MoKa2": 0.71359,
    "MoKa1": 0.7093,
    "MoKb1": 0.63229,
    "CrKa": 2.291,
    "CrKa2": 2.29361,
    "CrKa1": 2.2897,
    "CrKb1": 2.08487,
    "FeKa": 1.93735,
    "FeKa2": 1.93998,
    "FeKa1": 1.93604,
    "FeKb1": 1.75661,
    "CoKa": 1.79026,
    "CoKa2": 1.79285,
    "CoKa1": 1.78896,
    "CoKb1": 1.63079,
    "AgKa": 0.560885,
    "AgKa2": 0.563813,
    "AgKa1": 0.559421,
    "AgKb1": 0.497082,
}

#: Fine-grid steps per FWHM used by :func:`broaden`. Linear deposition between fine bins shifts
#: weight by at most half a step; its relative error at a peak top is about
#: ``0.7 (step / fwhm)**2`` (Gaussian) and ``(step / fwhm)**2`` (Lorentzian), so 40 keeps it
#: below 1e-3.
FINE_STEPS_PER_FWHM = 40
#: Gaussian kernels are cut at this many standard deviations (exp(-18) ~ 1.5e-8).
GAUSSIAN_CUTOFF_SIGMAS = 6.0
#: :func:`broaden` convolves by FFT when (deposited weights x kernel length) exceeds this
#: times (fine points per bin x FFT length): the measured break-even of the two evaluations.
_FFT_COST_FACTOR = 1.0

PEAK_SHAPES = ("gaussian", "lorentzian", "pseudo_voigt")


def resolve_wavelength(wavelength: str | float) -> float:
    """Wavelength in Å of a radiation name in :data:`WAVELENGTHS` (e.g. ``"CuKa"``) or a number.

    Examples
    --------
    >>> resolve_wavelength("MoKa")
    0.71073
    >>> resolve_wavelength(1.5)
    1.5
    """
    if isinstance(wavelength, str):
        if wavelength not in WAVELENGTHS:
            raise ValueError(f"unknown radiation {wavelength!r}; known: {sorted(WAVELENGTHS)}")
        return WAVELENGTHS[wavelength]
    if isinstance(wavelength, Real) and not isinstance(wavelength, bool) and wavelength > 0:
        return float(wavelength)
    raise ValueError(f"wavelength must be a radiation name or a positive number in Å, got {wavelength!r}")


def _check_two_theta_range(two_theta_range: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(t) for t in two_theta_range)
    except (TypeError, ValueError):
        raise ValueError(f"two_theta_range must be a pair of numbers, got {two_theta_range!r}") from None
    if not 0 <= lo < hi <= 180:
        raise ValueError(
            f"two_theta_range must satisfy 0 <= low < high <= 180 degrees, got {two_theta_range!r}"
        )
    return lo, hi


# --------------------------------------------------------------------------------------------
# Broadening
# --------------------------------------------------------------------------------------------


def _peak_profile(offset: np.ndarray, fwhm: float, shape: str, eta: float) -> np.ndarray:
    """Unit-area peak profile at *offset* (degrees) from the peak centre."""
    gamma = fwhm / 2
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
    if shape == "gaussian":
        return np.exp(-0.5 * (offset / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    lorentzian = gamma / (np.pi * (offset * offset + gamma * gamma))
    if shape == "lorentzian":
        return lorentzian
    gaussian = np.exp(-0.5 * (offset / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return eta * lorentzian + (1 - eta) * gaussian


@functools.lru_cache(maxsize=32)
def _broadening_plan(n_bins: int, step: float, fwhm: float, shape: str, eta: float):
    """Kernel tables for :func:`broaden`, shared by every pattern on the same grid.

    The fine grid has ``oversample`` points per output bin. A stick deposited on fine point
    ``m * oversample + p`` reaches output bin ``j`` with weight ``kernel[p, j - m + reach]``:
    the convolution on the fine grid, evaluated only where the output needs it (polyphase).
    """
    oversample = max(1, math.ceil(step * FINE_STEPS_PER_FWHM / fwhm))
    if shape == "gaussian":
        sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
        reach = math.ceil(GAUSSIAN_CUTOFF_SIGMAS * sigma / step) + 1
    else:
        # Lorentzian tails fall as 1/x²: keep the whole grid within reach of every stick on it
        reach = n_bins
    offsets = np.arange(-reach, reach + 1) * step  # output bin minus coarse bin of the stick
    phases = np.arange(oversample) * (step / oversample)
    kernel = _peak_profile(offsets[None, :] - phases[:, None], fwhm, shape, eta)
    # circular convolution aliases only into output indices below 2 reach when n_fft >= n + 2 reach - 1
    n_fft = scipy.fft.next_fast_len(n_bins + 2 * reach, real=True)
    # rfft of each phase's kernel, placed so that kernel[p, 0] sits at index 0
    spectra = scipy.fft.rfft(kernel, n=n_fft, axis=1)
    return oversample, reach, kernel, n_fft, spectra


def broaden(
    two_theta: np.ndarray,
    intensity: np.ndarray,
    grid: np.ndarray,
    fwhm: float,
    shape: str = "gaussian",
    eta: float = 0.5,
) -> np.ndarray:
    """Continuous pattern on *grid* from sticks, each spread into a peak of width *fwhm*.

    Each stick is split between its two neighbouring points of a fine grid (linear
    interpolation, ``FINE_STEPS_PER_FWHM`` points per FWHM), and the fine histogram is
    convolved with the unit-area peak profile and read at the points of *grid*. The cost does
    not grow with the number of points times the number of peaks, as a sum of dense
    profiles would. The result is within 1e-3 (relative to the tallest peak) of the exact sum
    of profiles.

    Parameters
    ----------
    two_theta : array-like of shape (n_peaks,)
        Peak positions (degrees). Sticks further outside *grid* than the kernel reaches
        (6σ for a Gaussian, the width of the grid otherwise) are ignored.
    intensity : array-like of shape (n_peaks,)
        Peak areas.
    grid : array-like of shape (n_bins,)
        Evenly spaced, increasing 2θ values.
    fwhm : float
        Full width at half maximum of every peak, in degrees.
    shape : {"gaussian", "lorentzian", "pseudo_voigt"}, default="gaussian"
        Peak profile; the pseudo-Voigt is ``eta * lorentzian + (1 - eta) * gaussian`` with the
        same FWHM.
    eta : float, default=0.5
        Lorentzian fraction of the pseudo-Voigt profile.

    Returns
    -------
    ndarray of shape (n_bins,)
        Intensity density (per degree) on *grid*.

    Examples
    --------
    >>> grid = np.linspace(10, 20, 101)
    >>> pattern = broaden(np.array([15.0]), np.array([1.0]), grid, fwhm=0.5)
    >>> float(grid[pattern.argmax()]), round(float(pattern.sum() * 0.1), 3)
    (15.0, 1.0)
    """
    grid = np.asarray(grid, dtype=float)
    two_theta = np.asarray(two_theta, dtype=float).ravel()
    intensity = np.asarray(intensity, dtype=float).ravel()
    if grid.ndim != 1 or len(grid) < 2:
        raise ValueError("grid must be a 1-D array of at least 2 points")
    step = (grid[-1] - grid[0]) / (len(grid) - 1)
    if not step > 0 or not np.allclose(np.diff(grid), step, rtol=1e-6, atol=0):
        raise ValueError("grid must be evenly spaced and increasing")
    if two_theta.shape != intensity.shape:
        raise ValueError(f"two_theta and intensity differ in length: {two_theta.shape} vs {intensity.shape}")
    if not fwhm > 0:
        raise ValueError(f"fwhm must be positive, got {fwhm}")
    if shape not in PEAK_SHAPES:
        raise ValueError(f"shape must be one of {PEAK_SHAPES}, got {shape!r}")
    return _broaden_on_grid(two_theta, intensity, grid[0], step, len(grid), fwhm, shape, eta)


def _broaden_on_grid(
    two_theta: np.ndarray,
    intensity: np.ndarray,
    start: float,
    step: float,
    n_bins: int,
    fwhm: float,
    shape: str,
    eta: float,
    force_fft: bool | None = None,
) -> np.ndarray:
    """:func:`broaden` on the grid ``start + step * arange(n_bins)``, without input checks.

    ``force_fft`` picks the evaluation of the convolution (tests compare the two); by default
    the cheaper one is used.
    """
    oversample, reach, kernel, n_fft, spectra = _broadening_plan(
        n_bins, float(step), float(fwhm), shape, float(eta) if shape == "pseudo_voigt" else 0.0
    )
    if len(two_theta) == 0:
        return np.zeros(n_bins)

    # Deposit: fine index f = position in fine steps, shared linearly by f0 and f0 + 1
    fine = (two_theta - start) * (oversample / step)
    lower = np.floor(fine)
    upper_share = fine - lower
    fine_index = np.concatenate([lower, lower + 1]).astype(np.int64)
    weight = np.concatenate([intensity * (1 - upper_share), intensity * upper_share])
    coarse, phase = np.divmod(fine_index, oversample)
    # shift so that every coarse bin within reach of the grid has a non-negative index
    coarse = coarse + reach
    inside = (coarse >= 0) & (coarse < n_bins + 2 * reach) & (weight != 0)
    coarse, phase, weight = coarse[inside], phase[inside], weight[inside]

    width = 2 * reach + 1
    use_fft = len(weight) * width > _FFT_COST_FACTOR * oversample * n_fft if force_fft is None else force_fft
    if not use_fft:
        # few sticks: scatter each one's kernel row directly (out index = coarse + offset)
        targets = coarse[:, None] + np.arange(width)[None, :]
        full = np.bincount(
            targets.ravel(), weights=(weight[:, None] * kernel[phase]).ravel(), minlength=n_bins + 4 * reach
        )
    else:
        # long kernels: the same sum as one FFT convolution per phase, summed in frequency space
        histogram = np.zeros((oversample, n_fft))
        np.add.at(histogram, (phase, coarse), weight)
        full = scipy.fft.irfft((scipy.fft.rfft(histogram, axis=1) * spectra).sum(axis=0), n=n_fft)
        # FFT round-off leaves ~1e-9 negatives between peaks; intensities are never negative
        np.maximum(full, 0.0, out=full)
    # stick on coarse bin c (shifted by reach) at kernel column d lands at output c + d - 2 reach
    return full[2 * reach : 2 * reach + n_bins]


# --------------------------------------------------------------------------------------------
# Measured patterns
# --------------------------------------------------------------------------------------------

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


#: how an XRD encoder scales intensities before its network (``XRDEncoder(intensity_scale=...)``)
INTENSITY_SCALES = ("linear", "sqrt")


def scale_intensity(patterns: np.ndarray, how: str) -> np.ndarray:
    """Intensities as the network sees them: ``"linear"`` (unchanged) or ``"sqrt"`` (√I).

    √I is the scale of whole-pattern matching (:mod:`skmat.features.matching`): weak
    reflections, which carry the splitting that tells the crystal systems apart, count more,
    and the strongest lines, which texture (preferred orientation) distorts most in measured
    patterns, count less. Negative values (rounding after a background subtraction) become 0.

    Parameters
    ----------
    patterns : ndarray of shape (n_bins,) or (n_samples, n_bins)
    how : {"linear", "sqrt"}

    Returns
    -------
    ndarray, float32, same shape (a new array)

    Examples
    --------
    >>> scale_intensity(np.array([0.0, 0.25, 1.0]), "sqrt")
    array([0. , 0.5, 1. ], dtype=float32)
    """
    if how not in INTENSITY_SCALES:
        raise ValueError(f"intensity_scale must be one of {INTENSITY_SCALES}, got {how!r}")
    array = np.array(patterns, dtype=np.float32)
    return np.sqrt(np.maximum(array, 0.0)) if how == "sqrt" else array


def measured_on_grid(
    measurements: list,
    grid: np.ndarray,
    target_wavelength: str | float = "CuKa",
    *,
    background: str | None = None,
    background_window: float = 3.0,
    polynomial_degree: int = 6,
    normalize: str | None = "max",
    intensity_correction: bool = True,
    negative_tolerance: float = DEFAULT_NEGATIVE_TOLERANCE,
) -> np.ndarray:
    """Measured patterns on *grid*: resampled, background removed, normalised.

    What :meth:`MeasuredXRD.transform <skmat.features.measured.MeasuredXRD.transform>` returns for
    the same settings (it calls this), without a DataFrame.

    Parameters
    ----------
    measurements : list of (label, two_theta, intensity, wavelength, view)
        One measurement per row; *label* and *view* name the row in errors, *wavelength* is
        a radiation name or Å.
    grid : ndarray of shape (n_bins,)
        Evenly spaced 2θ values (degrees) of the output.
    target_wavelength : str or float, default="CuKa"
    background, background_window, polynomial_degree, normalize, intensity_correction, negative_tolerance
        As :class:`~skmat.features.measured.MeasuredXRD`'s parameters.

    Returns
    -------
    ndarray of shape (n_samples, n_bins), float32, finite and non-negative
    """
    grid = np.asarray(grid, dtype=float)
    if not measurements:
        return np.zeros((0, len(grid)), dtype=np.float32)
    target = resolve_wavelength(target_wavelength)
    patterns = np.stack(
        [
            _resample(x, y, w, grid, target, intensity_correction, negative_tolerance, label, view)
            for label, x, y, w, view in measurements
        ]
    )
    step = (grid[-1] - grid[0]) / (len(grid) - 1)
    patterns = remove_background(
        patterns, background, step=step, window=background_window, degree=polynomial_degree
    ).astype(float)
    if normalize is not None:
        scale = patterns.max(axis=1) if normalize == "max" else patterns.sum(axis=1)
        # a pattern whose background removal left nothing stays all-zero rather than NaN
        patterns = patterns / np.where(scale > 0, scale, 1.0)[:, None]
    return patterns.astype(np.float32)


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
