"""Training-time augmentation of simulated powder XRD patterns, so they look measured.

A simulated pattern (:class:`~skmat.features.XRDPattern`) is an idealisation: one peak width,
one profile, exact peak positions and intensities, no background, no noise. Measured patterns
differ in every one of those, and a network trained only on the ideal learns features that
do not transfer. :class:`XRDAugmenter` draws, for every training sample, a new measurement of
the same crystal:

* **lattice strain** — an isotropic scaling plus a small anisotropic strain *projected onto the
  crystal's point group* (averaged over its rotations), so a cubic crystal stays cubic and the
  crystal-system label stays true;
* **sample displacement and zero shift** of 2θ;
* **preferred orientation** (March-Dollase, averaged over each peak's symmetry-equivalent
  reflections) and a per-peak log-normal **intensity perturbation**;
* **Kα2 shoulders** (a second set of peaks at λ(Kα2) with about half the intensity);
* **peak broadening** from the instrument plus Scherrer crystallite-size broadening
  (:math:`\\beta = K\\lambda / (L \\cos\\theta)`, which grows with angle), with a
  **pseudo-Voigt** profile of random Lorentzian fraction;
* a **smooth random background** (low-angle air scatter, an amorphous hump, a slow slope);
* **counting noise** (Poisson at a random count level, plus a little Gaussian read noise);
* a **missing low-angle range** (a scan that starts above 5°).

The augmenter works from stick patterns (:func:`compute_sticks`: peak Miller indices and
structure-factor intensities, computed once per structure and cached), which makes each new
sample cheap: ~1 ms per pattern on one core, against ~1.5 ms to simulate a clean one from the
structure. :func:`augment_patterns` applies the subset of these that make sense to patterns
already on a grid (for ``xrd`` columns without structures).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, NamedTuple

import numpy as np
from scipy.special import erf
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted

from skmat._inputs import as_structures, row_labels, to_frame
from skmat.exceptions import InvalidInputError
from skmat.features.cell_growth import grow_cell, space_group_operations
from skmat.features.xrd import (
    WAVELENGTHS,
    _check_two_theta_range,
    _feature_names,
    _half_sphere_hkl,
    _peaks_of_scatterers,
    _scatterers_of,
    resolve_wavelength,
)

__all__ = ["Sticks", "XRDAugmenter", "augment_patterns", "compute_sticks", "render_sticks"]

#: Kα1/Kα2 pairs (Å) by radiation name of ``WAVELENGTHS`` (the Kα entries are their weighted means).
_KALPHA_DOUBLETS = {
    "CuKa": (1.540562, 1.544390),
    "MoKa": (0.709300, 0.713590),
    "CrKa": (2.289700, 2.293606),
    "FeKa": (1.936042, 1.939980),
    "CoKa": (1.788965, 1.792850),
    "AgKa": (0.559421, 0.563813),
}
#: Scherrer constant for spherical crystallites.
_SCHERRER_K = 0.9
#: Reflections are kept this far (relative, in |g|) beyond the grid so strain can bring them in.
_STICK_MARGIN = 0.06
#: Widths are quantised to this geometric ladder so peaks of similar width share one kernel.
_WIDTH_RATIO = 1.12
#: Lorentzian tails are cut at this many FWHM (1.3 % of the area is beyond).
_LORENTZ_REACH_FWHM = 25.0

# probabilities of the augmentations that a measurement has or has not
P_PREFERRED_ORIENTATION = 0.5
P_KALPHA2 = 0.5
P_BACKGROUND = 0.7
P_LOW_ANGLE_CUT = 0.2


class Sticks(NamedTuple):
    """What :class:`XRDAugmenter` needs of a structure to re-draw its pattern.

    One representative reflection per powder peak (symmetry-equivalent reflections form one
    peak and stay together under the point-group-symmetric strains the augmenter draws).
    """

    hkl: np.ndarray  # (n, 3) float, Miller indices of one reflection of each peak
    structure_intensity: np.ndarray  # (n,) intensity without the Lorentz-polarisation factor
    lattice: np.ndarray  # (3, 3), rows are the lattice vectors (Å)
    rotations: np.ndarray  # (k, 3, 3) Cartesian rotations of the point group


def _lorentz_polarisation(sin_theta: np.ndarray) -> np.ndarray:
    sin_squared = sin_theta * sin_theta
    cos_two_theta = 1 - 2 * sin_squared
    return (1 + cos_two_theta**2) / (sin_squared * np.sqrt(1 - sin_squared))


def _point_group_rotations(structure, symprec: float) -> np.ndarray:
    lattice = np.array(structure.lattice.matrix, dtype=float)
    rotations, _ = space_group_operations(structure, symprec)
    fractional = np.unique(rotations.reshape(-1, 9), axis=0).reshape(-1, 3, 3)
    # fractional W acts on columns f; Cartesian r = Lᵀ f, so R = Lᵀ W L⁻ᵀ
    return np.einsum("ij,kjl,lm->kim", lattice.T, fractional, np.linalg.inv(lattice.T))


def compute_sticks(
    structure,
    *,
    wavelength: str | float = "CuKa",
    two_theta_range: tuple[float, float] = (5.0, 90.0),
    symprec: float = 0.1,
    lattice_scale: tuple[float, float] = (1.0, 1.0),
) -> Sticks:
    """Stick pattern of a structure, in the form :class:`XRDAugmenter` re-draws from.

    The peaks are those of :func:`~skmat.features.xrd.compute_peaks` over ``two_theta_range``
    widened by 6 % in d-spacing on both sides (so strained lattices can bring peaks in), each
    with the Miller indices of one of its reflections, its intensity divided by the
    Lorentz-polarisation factor (recomputed at the strained angle), and the point group.
    With ``lattice_scale`` the reflections cover the window for the lattice scaled by any
    factor in that range (a lattice twice as large puts reflections of twice the ``|g|`` into
    it); their intensities keep the atomic form factors of the unscaled lattice.

    Parameters
    ----------
    structure : pymatgen.core.Structure
    wavelength : str or float, default="CuKa"
    two_theta_range : (float, float), default=(5.0, 90.0)
    symprec : float, default=0.1
        spglib tolerance (Å) for the point group.
    lattice_scale : (float, float), default=(1.0, 1.0)
        Smallest and largest factor the lattice will be scaled by when drawing
        (:class:`XRDAugmenter` ``lattice_scale``).

    Returns
    -------
    Sticks

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    >>> sticks = compute_sticks(nacl)
    >>> sticks.hkl.shape[1], len(sticks.rotations)
    (3, 48)
    """
    wavelength = resolve_wavelength(wavelength)
    lo, hi = _check_two_theta_range(two_theta_range)
    smallest_scale, largest_scale = (float(v) for v in lattice_scale)
    if not 0 < smallest_scale <= largest_scale:
        raise ValueError(f"lattice_scale must be (low, high) with 0 < low <= high, got {lattice_scale!r}")
    min_g = 2 * math.sin(math.radians(lo / 2)) / wavelength * (1 - _STICK_MARGIN) * smallest_scale
    max_g = min(2 * math.sin(math.radians(hi / 2)) / wavelength * (1 + _STICK_MARGIN), 2 / wavelength) * largest_scale
    # reflections beyond the limiting sphere of the real wavelength (|g| > 2/λ) are needed once
    # the lattice is scaled up: compute them with a wavelength short enough to reach them (the
    # intensity without the Lorentz-polarisation factor does not depend on the wavelength).
    # Short enough that they stay below 2θ = 60°: at exactly 2/max_g the outermost reflection
    # sat at 2θ = 180°, where the Lorentz factor is infinite and every peak was then dropped as
    # weaker than it (seen as a divide-by-zero warning on scaled MP-20 lattices)
    if wavelength * max_g / 2 > 0.99:
        wavelength = 1.0 / max_g
    wide_range = tuple(math.degrees(2 * math.asin(min(wavelength * g / 2, 1.0))) for g in (min_g, max_g))
    scatterers = _scatterers_of(structure)
    two_theta, intensity = _peaks_of_scatterers(scatterers, wavelength, wide_range)
    lattice = scatterers.lattice_matrix
    rotations = _point_group_rotations(structure, symprec)
    if len(two_theta) == 0:
        return Sticks(np.zeros((0, 3)), np.zeros(0), lattice, rotations)
    # the merged peak sits at the 2θ of one of its reflections: find that reflection
    hkl, g = _half_sphere_hkl(lattice, min_g * (1 - 1e-9), max_g * (1 + 1e-9))
    reflection_two_theta = np.degrees(2 * np.arcsin(np.minimum(wavelength * g / 2, 1.0)))
    order = np.argsort(reflection_two_theta)
    sorted_two_theta = reflection_two_theta[order]
    right = np.clip(np.searchsorted(sorted_two_theta, two_theta), 1, len(order) - 1)
    nearer_left = np.abs(sorted_two_theta[right - 1] - two_theta) <= np.abs(sorted_two_theta[right] - two_theta)
    chosen = order[np.where(nearer_left, right - 1, right)]
    sin_theta = np.sin(np.radians(two_theta / 2))
    return Sticks(
        # float32 holds Miller indices exactly, at half the memory of the cached sticks
        hkl=hkl[chosen].astype(np.float32),
        structure_intensity=(intensity / _lorentz_polarisation(sin_theta)).astype(np.float32),
        lattice=lattice,
        rotations=rotations,
    )


# --------------------------------------------------------------------------------------------
# Rendering sticks with per-peak widths
# --------------------------------------------------------------------------------------------


def _binned_profile(half_width: int, fwhm_bins: float, eta: float) -> np.ndarray:
    """Unit-area pseudo-Voigt integrated over each bin of offsets -half_width..half_width (bins).

    Integrating over the bin (CDF differences) instead of sampling the centre keeps the peak
    height right for peaks as narrow as one bin.
    """
    edges = np.arange(-half_width - 0.5, half_width + 1.0)
    sigma = fwhm_bins / (2 * math.sqrt(2 * math.log(2)))
    gaussian = 0.5 * (1 + erf(edges / (sigma * math.sqrt(2))))
    lorentzian = 0.5 + np.arctan(edges / (fwhm_bins / 2)) / math.pi
    cdf = eta * lorentzian + (1 - eta) * gaussian
    return np.diff(cdf)


def render_sticks(
    two_theta: np.ndarray,
    intensity: np.ndarray,
    fwhm: np.ndarray | float,
    eta: float,
    grid: np.ndarray,
) -> np.ndarray:
    """Pattern on an even *grid* from sticks whose widths differ from peak to peak.

    Peaks are grouped by width (quantised on a 12 % geometric ladder); each group is deposited
    on the grid (shared linearly between the two nearest bins) and convolved with its
    bin-integrated pseudo-Voigt kernel. Cheaper than :func:`~skmat.features.xrd.broaden` when
    every pattern has its own widths, at augmentation accuracy (a few % in height).

    Parameters
    ----------
    two_theta, intensity : ndarray of shape (n_peaks,)
        Positions (degrees) and areas.
    fwhm : float or ndarray of shape (n_peaks,)
        Full width at half maximum of each peak (degrees).
    eta : float
        Lorentzian fraction of the pseudo-Voigt (0 Gaussian, 1 Lorentzian).
    grid : ndarray of shape (n_bins,)
        Evenly spaced, increasing.

    Returns
    -------
    ndarray of shape (n_bins,)
        Intensity per bin (not per degree).

    Examples
    --------
    >>> grid = np.linspace(5, 90, 1701)
    >>> pattern = render_sticks(np.array([30.0, 60.0]), np.array([1.0, 1.0]), np.array([0.1, 0.4]), 0.5, grid)
    >>> float(grid[pattern.argmax()]), round(float(pattern.sum()), 2)
    (30.0, 1.99)
    """
    grid = np.asarray(grid, dtype=float)
    n_bins = len(grid)
    step = (grid[-1] - grid[0]) / (n_bins - 1)
    two_theta = np.asarray(two_theta, dtype=float)
    intensity = np.asarray(intensity, dtype=float)
    fwhm_bins = np.broadcast_to(np.asarray(fwhm, dtype=float), two_theta.shape) / step
    out = np.zeros(n_bins)
    if len(two_theta) == 0:
        return out
    level = np.round(np.log(np.maximum(fwhm_bins, 1e-3)) / math.log(_WIDTH_RATIO)).astype(int)
    position = (two_theta - grid[0]) / step
    for width_level in np.unique(level):
        members = level == width_level
        width = _WIDTH_RATIO**width_level
        reach = 4.0 * width if eta == 0 else _LORENTZ_REACH_FWHM * width
        half_width = int(min(math.ceil(reach) + 1, n_bins))
        kernel = _binned_profile(half_width, width, eta)
        # deposit on an array padded by the kernel reach, so peaks just off the grid spill in
        padded = np.zeros(n_bins + 2 * half_width + 1)
        index = position[members] + half_width
        lower = np.floor(index)
        share = index - lower
        lower = lower.astype(np.int64)
        inside = (lower >= 0) & (lower + 1 < len(padded))
        np.add.at(padded, lower[inside], intensity[members][inside] * (1 - share[inside]))
        np.add.at(padded, lower[inside] + 1, intensity[members][inside] * share[inside])
        convolved = np.convolve(padded, kernel, mode="same")
        out += convolved[half_width : half_width + n_bins]
    return out


# --------------------------------------------------------------------------------------------
# Drawing one measurement
# --------------------------------------------------------------------------------------------


def _symmetric_strain(rng: np.random.Generator, rotations: np.ndarray, isotropic: float, anisotropic: float):
    strain = np.eye(3) * rng.uniform(-isotropic, isotropic)
    if anisotropic > 0:
        random = rng.normal(0.0, anisotropic, size=(3, 3))
        random = (random + random.T) / 2
        # averaging over the point group keeps only the strain the symmetry allows
        strain += np.einsum("kij,jl,kml->im", rotations, random, rotations) / len(rotations)
    return strain


def _march_dollase(g_cart: np.ndarray, rotations: np.ndarray, direction: np.ndarray, ratio: float) -> np.ndarray:
    """March-Dollase factor of each peak, averaged over its symmetry-equivalent reflections."""
    equivalents = np.einsum("kij,nj->nki", rotations, g_cart)  # (n, k, 3)
    norms = np.linalg.norm(equivalents, axis=2)
    cos_alpha = np.abs(equivalents @ direction) / np.maximum(norms, 1e-12)
    sin_squared = 1 - cos_alpha**2
    return (((ratio**2) * cos_alpha**2 + sin_squared / ratio) ** -1.5).mean(axis=1)


def _smooth_background(rng: np.random.Generator, grid: np.ndarray, amplitude: float) -> np.ndarray:
    """A non-negative smooth background of maximum ``<= amplitude``: air scatter, hump, slope."""
    span = grid[-1] - grid[0]
    air = np.exp(-(grid - grid[0]) / rng.uniform(2.0, 20.0)) * rng.uniform(0, 1)
    hump = np.exp(-0.5 * ((grid - rng.uniform(15.0, 40.0)) / rng.uniform(4.0, 15.0)) ** 2) * rng.uniform(0, 1)
    t = (grid - grid[0]) / span
    slope = (rng.uniform(0, 1) * t + rng.uniform(0, 1) * (1 - t)) * rng.uniform(0, 0.5)
    background = air + hump + slope
    peak = background.max()
    return background * (rng.uniform(0, amplitude) / peak) if peak > 0 else background


def _finish(
    pattern: np.ndarray,
    rng: np.random.Generator,
    grid: np.ndarray,
    *,
    background: float | None,
    counts: tuple[float, float] | None,
    read_noise: float | None,
    low_angle_cut: float | None,
) -> np.ndarray:
    """Background, noise, low-angle cut and max-normalisation of one pattern (max 1 on input)."""
    peak = pattern.max()
    pattern = pattern / peak if peak > 0 else pattern
    if background and rng.random() < P_BACKGROUND:
        pattern = pattern + _smooth_background(rng, grid, background)
    if counts is not None:
        level = math.exp(rng.uniform(math.log(counts[0]), math.log(counts[1])))
        pattern = rng.poisson(np.maximum(pattern, 0) * level) / level
    if read_noise:
        pattern = pattern + rng.normal(0.0, rng.uniform(0, read_noise), size=pattern.shape)
    if low_angle_cut and rng.random() < P_LOW_ANGLE_CUT:
        pattern[grid < rng.uniform(grid[0], low_angle_cut)] = 0.0
    pattern = np.maximum(pattern, 0.0)
    peak = pattern.max()
    return pattern / peak if peak > 0 else pattern


def _kalpha_pair(wavelength: str | float) -> tuple[float, float] | None:
    if isinstance(wavelength, str):
        return _KALPHA_DOUBLETS.get(wavelength)
    return None


def _window_g(grid: np.ndarray, wavelength: float) -> tuple[float, float]:
    """|g| range whose reflections can reach the grid, with room for shifts and Kα2."""
    low, high = (2 * math.sin(math.radians(t / 2)) / wavelength for t in (grid[0], grid[-1]))
    return low * (1 - _STICK_MARGIN), min(high * (1 + _STICK_MARGIN), 2 / wavelength)


def _draw_from_sticks(sticks: Sticks, rng: np.random.Generator, grid: np.ndarray, settings: dict) -> np.ndarray:
    wavelength = settings["wavelength"]
    mean_wavelength = resolve_wavelength(wavelength)
    if len(sticks.structure_intensity) == 0:
        return np.zeros(len(grid))
    strain = _symmetric_strain(rng, sticks.rotations, settings["strain"], settings["anisotropic_strain"])
    scale = 1.0
    if settings["lattice_scale"] is not None:
        low, high = settings["lattice_scale"]
        scale = math.exp(rng.uniform(math.log(low), math.log(high)))
    reciprocal = np.linalg.inv(scale * sticks.lattice @ (np.eye(3) + strain)).T
    g_cart = sticks.hkl @ reciprocal
    g = np.linalg.norm(g_cart, axis=1)
    # only the reflections that land in the window (sticks for scaled lattices hold many more)
    window = _window_g(grid, mean_wavelength)
    inside = (g >= window[0]) & (g <= window[1])
    g_cart, g = g_cart[inside], g[inside]
    intensity = sticks.structure_intensity[inside].astype(float)
    if settings["preferred_orientation"] is not None and rng.random() < P_PREFERRED_ORIENTATION:
        low, high = settings["preferred_orientation"]
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        intensity *= _march_dollase(g_cart, sticks.rotations, direction, rng.uniform(low, high))
    if settings["intensity_noise"]:
        intensity *= rng.lognormal(0.0, settings["intensity_noise"], size=len(intensity))

    doublet = _kalpha_pair(wavelength) if settings["kalpha2"] else None
    if doublet is not None and rng.random() < P_KALPHA2:
        lines = [(doublet[0], 1.0), (doublet[1], rng.uniform(0.45, 0.55))]
    else:
        lines = [(mean_wavelength, 1.0)]
    zero_shift = rng.uniform(-settings["zero_shift"], settings["zero_shift"]) if settings["zero_shift"] else 0.0
    displacement = (
        rng.uniform(-settings["displacement"], settings["displacement"]) if settings["displacement"] else 0.0
    )
    instrument = rng.uniform(*settings["instrument_fwhm"])
    size = settings["crystallite_size"]
    size_angstrom = 10 * math.exp(rng.uniform(math.log(size[0]), math.log(size[1]))) if size is not None else None
    low_eta, high_eta = settings["eta"]
    eta = round(rng.uniform(low_eta, high_eta), 1)  # a handful of profiles: cheap kernels

    positions, areas, widths = [], [], []
    for line_wavelength, weight in lines:
        sin_theta = line_wavelength * g / 2
        reachable = sin_theta < 0.999
        sin_theta = sin_theta[reachable]
        theta = np.arcsin(sin_theta)
        two_theta = np.degrees(2 * theta)
        # sample displacement s over goniometer radius R shifts peaks by -2 (s/R) cos θ (radians)
        two_theta = two_theta + zero_shift - np.degrees(2 * displacement * np.cos(theta))
        fwhm = np.full(len(two_theta), instrument)
        if size_angstrom is not None:
            scherrer = np.degrees(_SCHERRER_K * line_wavelength / (size_angstrom * np.cos(theta)))
            fwhm = np.sqrt(fwhm**2 + scherrer**2)
        positions.append(two_theta)
        areas.append(intensity[reachable] * _lorentz_polarisation(sin_theta) * weight)
        widths.append(fwhm)
    pattern = render_sticks(np.concatenate(positions), np.concatenate(areas), np.concatenate(widths), eta, grid)
    return _finish(
        pattern,
        rng,
        grid,
        background=settings["background"],
        counts=settings["counts"],
        read_noise=settings["read_noise"],
        low_angle_cut=settings["low_angle_cut"],
    )


# --------------------------------------------------------------------------------------------
# Patterns already on a grid
# --------------------------------------------------------------------------------------------


def augment_patterns(
    patterns: np.ndarray,
    rng: np.random.Generator | int | None,
    *,
    two_theta_range: tuple[float, float] = (5.0, 90.0),
    wavelength: str | float = "CuKa",
    zero_shift: float = 0.1,
    strain: float = 0.02,
    extra_fwhm: tuple[float, float] = (0.0, 0.2),
    kalpha2: bool = True,
    background: float | None = 0.3,
    counts: tuple[float, float] | None = (100.0, 10000.0),
    read_noise: float | None = 0.01,
    low_angle_cut: float | None = 15.0,
) -> np.ndarray:
    """Measurement-like copies of patterns already on an even 2θ grid (no structure needed).

    The grid-level subset of :class:`XRDAugmenter`: isotropic strain and zero shift (by
    resampling through d-spacing), extra Gaussian broadening, a Kα2 copy, a smooth background,
    counting noise and a missing low-angle range. Peak intensities, profiles and
    symmetry-aware strain need the sticks: prefer :class:`XRDAugmenter` when structures
    are at hand.

    Parameters
    ----------
    patterns : ndarray of shape (n_samples, n_bins)
        Non-negative patterns (e.g. from ``XRDPattern``).
    rng : numpy Generator, int or None
        Source of randomness; the same seed gives the same output.
    two_theta_range : (float, float), default=(5.0, 90.0)
        Grid of the patterns.
    wavelength : str or float, default="CuKa"
        Radiation of the patterns (for strain and the Kα2 position).
    zero_shift : float, default=0.1
        Maximum absolute shift of 2θ, degrees.
    strain : float, default=0.02
        Maximum absolute isotropic strain (relative change of d).
    extra_fwhm : (float, float), default=(0.0, 0.2)
        Range of the FWHM (degrees) of an extra Gaussian blur.
    kalpha2 : bool, default=True
        Add a Kα2 copy (half intensity) with probability 0.5 (named Kα radiations only).
    background : float or None, default=0.3
        Maximum smooth background relative to the strongest peak (drawn with probability 0.7).
    counts : (float, float) or None, default=(100, 10000)
        Range (log-uniform) of counts at the strongest peak for Poisson noise.
    read_noise : float or None, default=0.01
        Maximum standard deviation of additive Gaussian noise (relative to the maximum).
    low_angle_cut : float or None, default=15.0
        With probability 0.2, zero everything below a 2θ drawn up to this value.

    Returns
    -------
    ndarray of shape (n_samples, n_bins), float32
        Finite, non-negative, maximum 1 (all-zero rows stay zero).

    Examples
    --------
    >>> grid = np.linspace(5, 90, 1701)
    >>> clean = np.exp(-0.5 * ((grid - 30) / 0.06) ** 2)[None]
    >>> noisy = augment_patterns(clean, 0)
    >>> noisy.shape, float(noisy.max()), bool(np.array_equal(noisy, augment_patterns(clean, 0)))
    ((1, 1701), 1.0, True)
    """
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(rng)
    patterns = np.asarray(patterns, dtype=float)
    if patterns.ndim != 2:
        raise ValueError(f"patterns must be 2-D (n_samples, n_bins), got shape {patterns.shape}")
    if not np.all(np.isfinite(patterns)) or np.any(patterns < 0):
        raise ValueError("patterns must be finite and non-negative")
    lo, hi = _check_two_theta_range(two_theta_range)
    grid = np.linspace(lo, hi, patterns.shape[1])
    step = (hi - lo) / (patterns.shape[1] - 1)
    resolve_wavelength(wavelength)  # raises for an unknown radiation name
    doublet = _kalpha_pair(wavelength) if kalpha2 else None
    sin_grid = np.sin(np.radians(grid / 2))
    out = np.empty_like(patterns)
    for row, pattern in enumerate(patterns):
        # a peak at d moves to d (1 + e): read the clean pattern where sin θ is (1 + e) larger
        scale = 1 + rng.uniform(-strain, strain) if strain else 1.0
        shift = rng.uniform(-zero_shift, zero_shift) if zero_shift else 0.0
        source = np.degrees(2 * np.arcsin(np.minimum(sin_grid * scale, 1.0))) - shift
        drawn = np.interp(source, grid, pattern, left=0.0, right=0.0)
        if doublet is not None and rng.random() < P_KALPHA2:
            ratio = doublet[1] / doublet[0]
            source2 = np.degrees(2 * np.arcsin(np.minimum(np.sin(np.radians(source / 2)) / ratio, 1.0)))
            drawn = drawn + rng.uniform(0.45, 0.55) * np.interp(source2, grid, pattern, left=0.0, right=0.0)
        fwhm = rng.uniform(*extra_fwhm) if extra_fwhm else 0.0
        if fwhm > 0:
            drawn = gaussian_filter1d(drawn, fwhm / step / (2 * math.sqrt(2 * math.log(2))), mode="constant")
        out[row] = _finish(
            drawn, rng, grid, background=background, counts=counts, read_noise=read_noise, low_angle_cut=low_angle_cut
        )
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# scikit-learn face
# --------------------------------------------------------------------------------------------


class XRDAugmenter(TransformerMixin, BaseEstimator):
    """Random measurement-like XRD patterns of structures, for training (never for inference).

    ``fit`` computes and caches the stick pattern of each structure (:func:`compute_sticks`);
    :meth:`sample` then draws augmented patterns of any fitted rows, fast enough to redraw every
    mini-batch. ``transform`` draws one augmented pattern per row of its input (seeded by
    ``random_state``, so repeated calls agree). The output grid is that of
    :class:`~skmat.features.XRDPattern` with the same ``wavelength``, ``two_theta_range`` and
    ``n_bins``, max-normalised. Any augmentation is switched off with ``None`` (or 0).

    Parameters
    ----------
    wavelength : str or float, default="CuKa"
    two_theta_range : (float, float), default=(5.0, 90.0)
    n_bins : int, default=1701
    instrument_fwhm : (float, float), default=(0.05, 0.25)
        Range of the instrumental FWHM (degrees 2θ), uniform.
    crystallite_size : (float, float) or None, default=(20.0, 200.0)
        Range of the crystallite size (nm, log-uniform) for Scherrer broadening.
    eta : (float, float), default=(0.0, 1.0)
        Range of the Lorentzian fraction of the pseudo-Voigt profile (rounded to 0.1).
    zero_shift : float, default=0.1
        Maximum absolute zero shift of 2θ (degrees).
    displacement : float, default=5e-4
        Maximum absolute sample displacement / goniometer radius; shifts peaks by
        :math:`-2 (s/R)\\cos\\theta` rad (0.06° at low angle for the default).
    strain : float, default=0.02
        Maximum absolute isotropic strain (DFT lattices are ~1-2 % off measured ones).
    anisotropic_strain : float, default=0.005
        Standard deviation of the anisotropic strain, symmetrised over the point group.
    lattice_scale : (float, float) or None, default=None
        Range (log-uniform) of a factor the whole lattice is scaled by, keeping its point
        group (and crystal system). Simulated training structures often have smaller cells
        than the measured samples (MP-20 has at most 20 atoms per cell; minerals often have
        100 or more): a larger cell puts its first peaks at lower angle and more peaks into
        the window. Intensities keep the atomic form factors of the unscaled lattice, which
        damps the scaled lattice's high-angle peaks as thermal motion does. ``fit`` then
        caches many more reflections (about ``high**3`` times as many).
    cell_growth : (float, float) or None, default=None
        Range (log-uniform) of the scale of *grown* cells
        (:func:`~skmat.features.cell_growth.grow_cell`): the lattice scaled and filled with
        atoms on orbits of the structure's own space group, so the pattern gets the many
        reflections and varied intensities of a large cell while the crystal system stays
        true. ``fit`` grows ``grown_cells`` variants of each structure and caches their sticks
        (about 30 ms per variant); each draw then uses one of them with probability
        ``grown_fraction``. Measured on MP-20 → RRUFF crystal systems: between -1.6 and +8
        points on measured patterns (no gain on average in the benchmark's two seeds) and
        -2 to -6.5 points on clean simulated ones (see :mod:`skmat.features.cell_growth`).
    grown_cells : int, default=3
        Grown variants per structure (with ``cell_growth``).
    grown_fraction : float, default=0.6
        Probability that a draw renders a grown variant rather than the structure itself.
    grown_max_atoms : int, default=160
        Largest grown cell (atoms).
    preferred_orientation : (float, float) or None, default=(0.6, 1.4)
        Range of the March-Dollase ratio r (random direction), drawn with probability 0.5.
    intensity_noise : float or None, default=0.2
        Standard deviation of the log-normal factor on each peak's intensity.
    kalpha2 : bool, default=True
        Add Kα2 peaks (with probability 0.5) for named Kα radiations.
    background : float or None, default=0.3
        Maximum smooth background relative to the strongest peak (probability 0.7).
    counts : (float, float) or None, default=(50.0, 5000.0)
        Range (log-uniform) of counts at the strongest peak (Poisson noise).
    read_noise : float or None, default=0.01
        Maximum standard deviation of additive Gaussian noise, relative to the maximum.
    low_angle_cut : float or None, default=15.0
        With probability 0.2, nothing is recorded below a 2θ drawn up to this value.
    symprec : float, default=0.1
        spglib tolerance for the point group (strain symmetrisation, preferred orientation).
    random_state : int, Generator or None, default=None
        Seed of :meth:`transform` and the default of :meth:`sample`.

    Attributes
    ----------
    sticks_ : list of Sticks, or of lists of Sticks
        Cached stick patterns of the fitted structures; with ``cell_growth`` each entry is a
        list: the structure's own sticks, then those of its grown variants.
    n_features_in_ : int

    See Also
    --------
    augment_patterns : the grid-level subset, for patterns without structures.
    skmat.features.measured.MeasuredXRD : measured patterns onto the same grid.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    >>> augmenter = XRDAugmenter(random_state=0).fit([nacl, nacl])
    >>> batch = augmenter.sample([0, 1, 1], random_state=1)
    >>> batch.shape, float(batch.max()), bool((batch >= 0).all())
    ((3, 1701), 1.0, True)
    >>> bool(np.array_equal(batch, augmenter.sample([0, 1, 1], random_state=1)))
    True
    """

    _parameter_constraints: dict = {
        "wavelength": [StrOptions(set(WAVELENGTHS)), Interval(Real, 0, None, closed="neither")],
        "two_theta_range": ["array-like"],
        "n_bins": [Interval(Integral, 2, None, closed="left")],
        "instrument_fwhm": ["array-like"],
        "crystallite_size": ["array-like", None],
        "eta": ["array-like"],
        "zero_shift": [Interval(Real, 0, None, closed="left"), None],
        "displacement": [Interval(Real, 0, 0.1, closed="both"), None],
        "strain": [Interval(Real, 0, 0.2, closed="both"), None],
        "anisotropic_strain": [Interval(Real, 0, 0.1, closed="both"), None],
        "lattice_scale": ["array-like", None],
        "cell_growth": ["array-like", None],
        "grown_cells": [Interval(Integral, 1, None, closed="left")],
        "grown_fraction": [Interval(Real, 0, 1, closed="both")],
        "grown_max_atoms": [Interval(Integral, 1, None, closed="left")],
        "preferred_orientation": ["array-like", None],
        "intensity_noise": [Interval(Real, 0, None, closed="left"), None],
        "kalpha2": ["boolean"],
        "background": [Interval(Real, 0, None, closed="left"), None],
        "counts": ["array-like", None],
        "read_noise": [Interval(Real, 0, None, closed="left"), None],
        "low_angle_cut": [Interval(Real, 0, 180, closed="both"), None],
        "symprec": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        wavelength: str | float = "CuKa",
        two_theta_range: tuple[float, float] = (5.0, 90.0),
        n_bins: int = 1701,
        instrument_fwhm: tuple[float, float] = (0.05, 0.25),
        crystallite_size: tuple[float, float] | None = (20.0, 200.0),
        eta: tuple[float, float] = (0.0, 1.0),
        zero_shift: float | None = 0.1,
        displacement: float | None = 5e-4,
        strain: float | None = 0.02,
        anisotropic_strain: float | None = 0.005,
        lattice_scale: tuple[float, float] | None = None,
        cell_growth: tuple[float, float] | None = None,
        grown_cells: int = 3,
        grown_fraction: float = 0.6,
        grown_max_atoms: int = 160,
        preferred_orientation: tuple[float, float] | None = (0.6, 1.4),
        intensity_noise: float | None = 0.2,
        kalpha2: bool = True,
        background: float | None = 0.3,
        counts: tuple[float, float] | None = (50.0, 5000.0),
        read_noise: float | None = 0.01,
        low_angle_cut: float | None = 15.0,
        symprec: float = 0.1,
        random_state: Any = None,
    ):
        self.wavelength = wavelength
        self.two_theta_range = two_theta_range
        self.n_bins = n_bins
        self.instrument_fwhm = instrument_fwhm
        self.crystallite_size = crystallite_size
        self.eta = eta
        self.zero_shift = zero_shift
        self.displacement = displacement
        self.strain = strain
        self.anisotropic_strain = anisotropic_strain
        self.lattice_scale = lattice_scale
        self.cell_growth = cell_growth
        self.grown_cells = grown_cells
        self.grown_fraction = grown_fraction
        self.grown_max_atoms = grown_max_atoms
        self.preferred_orientation = preferred_orientation
        self.intensity_noise = intensity_noise
        self.kalpha2 = kalpha2
        self.background = background
        self.counts = counts
        self.read_noise = read_noise
        self.low_angle_cut = low_angle_cut
        self.symprec = symprec
        self.random_state = random_state

    # -- parameters ------------------------------------------------------------------------
    @staticmethod
    def _range(name: str, value: Any, low: float, high: float | None = None) -> tuple[float, float] | None:
        if value is None:
            return None
        try:
            a, b = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a (low, high) pair, got {value!r}") from None
        if not (low <= a <= b and (high is None or b <= high)):
            bound = f" and <= {high}" if high is not None else ""
            raise ValueError(f"{name} must satisfy {low} <= low <= high{bound}, got {value!r}")
        return a, b

    def _settings(self) -> dict:
        validate_parameter_constraints(
            self._parameter_constraints, self.get_params(deep=False), caller_name=type(self).__name__
        )
        _check_two_theta_range(self.two_theta_range)
        instrument = self._range("instrument_fwhm", self.instrument_fwhm, 1e-3)
        if instrument is None:
            raise ValueError("instrument_fwhm cannot be None: every measured peak has a width")
        size = self._range("crystallite_size", self.crystallite_size, 1e-3)
        if size is not None and size[0] <= 0:
            raise ValueError("crystallite_size must be positive")
        counts = self._range("counts", self.counts, 1.0)
        lattice_scale = self._range("lattice_scale", self.lattice_scale, 1e-3)
        return {
            "wavelength": self.wavelength,
            "instrument_fwhm": instrument,
            "crystallite_size": size,
            "eta": self._range("eta", self.eta, 0.0, 1.0),
            "zero_shift": self.zero_shift or 0.0,
            "displacement": self.displacement or 0.0,
            "strain": self.strain or 0.0,
            "anisotropic_strain": self.anisotropic_strain or 0.0,
            "lattice_scale": lattice_scale,
            # cells only grow (scale >= 1); they are then drawn with lattice_scale like any other
            "cell_growth": self._range("cell_growth", self.cell_growth, 1.0),
            "preferred_orientation": self._range("preferred_orientation", self.preferred_orientation, 1e-2),
            "intensity_noise": self.intensity_noise or 0.0,
            "kalpha2": bool(self.kalpha2),
            "background": self.background or None,
            "counts": counts,
            "read_noise": self.read_noise or None,
            "low_angle_cut": self.low_angle_cut or None,
        }

    def two_theta_grid(self) -> np.ndarray:
        """The 2θ values (degrees) of the output columns."""
        lo, hi = _check_two_theta_range(self.two_theta_range)
        return np.linspace(lo, hi, self.n_bins)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns, as :class:`~skmat.features.XRDPattern`."""
        return _feature_names(self.two_theta_grid())

    # -- work ------------------------------------------------------------------------------
    def _sticks_of(self, X: Any, rng: np.random.Generator) -> list:
        """Sticks of each structure of *X*; with ``cell_growth`` each entry is a list: the
        structure's own sticks, then those of its grown variants (drawn from *rng*)."""
        frame = to_frame(X, default_column="structure")
        structures = as_structures(frame)
        labels = row_labels(frame)
        settings = self._settings()
        scale_range = settings["lattice_scale"] or (1.0, 1.0)
        growth = settings["cell_growth"]

        def sticks_of(structure):
            return compute_sticks(
                structure,
                wavelength=self.wavelength,
                two_theta_range=self.two_theta_range,
                symprec=self.symprec,
                lattice_scale=scale_range,
            )

        sticks = []
        for label, structure in zip(labels, structures, strict=True):
            try:
                own = sticks_of(structure)
                if growth is None:
                    sticks.append(own)
                    continue
                variants = [own]
                for _ in range(self.grown_cells):
                    scale = math.exp(rng.uniform(math.log(growth[0]), math.log(growth[1])))
                    grown = grow_cell(
                        structure, scale, rng, max_atoms=self.grown_max_atoms, symprec=self.symprec
                    )
                    variants.append(sticks_of(grown))
                sticks.append(variants)
            except ValueError as exc:
                raise InvalidInputError(str(exc), row=label, view="structure") from exc
        return sticks

    def _pick(self, entry, rng: np.random.Generator) -> Sticks:
        """The sticks one draw renders: the structure's own, or one of its grown variants."""
        if isinstance(entry, Sticks):
            return entry
        if len(entry) > 1 and rng.random() < self.grown_fraction:
            return entry[int(rng.integers(1, len(entry)))]
        return entry[0]

    def fit(self, X: Any, y: Any = None) -> XRDAugmenter:
        """Compute and cache the stick pattern of every structure.

        Parameters
        ----------
        X : DataFrame with a ``structure`` (or ``cif``) column, or list of Structure
        y : ignored

        Returns
        -------
        self
        """
        self._settings()
        # grown cells (cell_growth) are drawn here, from random_state, apart from sample()'s draws
        self.sticks_ = self._sticks_of(X, np.random.default_rng(self.random_state))
        self.n_features_in_ = to_frame(X, default_column="structure").shape[1]
        return self

    def _draw(self, sticks: list, rng: np.random.Generator) -> np.ndarray:
        settings = self._settings()
        grid = self.two_theta_grid()
        out = np.empty((len(sticks), len(grid)), dtype=np.float32)
        for row, entry in enumerate(sticks):
            out[row] = _draw_from_sticks(self._pick(entry, rng), rng, grid, settings)
        return out

    def sample(self, rows: Any = None, random_state: Any = None) -> np.ndarray:
        """Augmented patterns of fitted rows (a row may repeat).

        Parameters
        ----------
        rows : array-like of int, optional
            Positions among the fitted structures; default all, in order.
        random_state : int, Generator or None
            Randomness of this draw. Pass one ``numpy.random.Generator`` across mini-batches
            for fresh draws every batch that replay identically from the same seed; ``None``
            uses the ``random_state`` parameter.

        Returns
        -------
        ndarray of shape (len(rows), n_bins), float32
            Finite, non-negative, maximum 1 (a structure without peaks in range gives zeros).
        """
        check_is_fitted(self, "sticks_")
        rows = np.arange(len(self.sticks_)) if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.sticks_)):
            raise IndexError(f"rows must lie in [0, {len(self.sticks_)}), got {rows.min()}..{rows.max()}")
        seed = self.random_state if random_state is None else random_state
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self._draw([self.sticks_[r] for r in rows], rng)

    def transform(self, X: Any) -> np.ndarray:
        """One augmented pattern per structure of *X*, seeded by ``random_state``.

        Returns
        -------
        ndarray of shape (n_samples, n_bins), float32
        """
        check_is_fitted(self, "n_features_in_")
        seed = self.random_state
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self._draw(self._sticks_of(X, rng), rng)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.non_deterministic = self.random_state is None
        return tags
