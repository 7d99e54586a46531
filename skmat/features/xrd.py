"""Powder X-ray diffraction patterns of crystal structures, on a fixed 2θ grid.

The physics is that of pymatgen's :class:`~pymatgen.analysis.diffraction.xrd.XRDCalculator`
(same scattering-factor table, structure factor, Lorentz-polarisation factor, occupancies and
Debye-Waller factors, same merging of coincident peaks), computed as a few numpy array
operations over all reflections and atoms at once, without hkl-family bookkeeping. Sticks are
turned into a continuous pattern by depositing them on a fine grid and convolving with a peak
kernel (:func:`broaden`), which costs the same for 10 or 10,000 peaks.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any, NamedTuple

import numpy as np
from pymatgen.analysis.diffraction.xrd import ATOMIC_SCATTERING_PARAMS
from pymatgen.core.periodic_table import Element
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_parameter_constraints

from skmat._inputs import row_labels, to_frame
from skmat.exceptions import InvalidInputError
from skmat.features._base import BaseFeaturizer

# the wavelength table and the broadening live in the numpy-only core (``skmat identify`` needs
# them without this module's pymatgen and scikit-learn); this module is their documented home
from skmat.features._powder import (  # noqa: F401  (re-exported)
    FINE_STEPS_PER_FWHM,
    GAUSSIAN_CUTOFF_SIGMAS,
    PEAK_SHAPES,
    WAVELENGTHS,
    _broaden_on_grid,
    _check_two_theta_range,
    broaden,
    resolve_wavelength,
)

__all__ = ["WAVELENGTHS", "XRDPattern", "broaden", "compute_peaks"]

#: Peaks closer than this in 2θ (degrees) are one peak (pymatgen's ``TWO_THETA_TOL``).
TWO_THETA_TOL = 1e-5
#: Merged peaks below this fraction of the strongest are numerical zeros of systematic
#: absences and are dropped (pymatgen's ``SCALED_INTENSITY_TOL`` of 1e-3 on a 0-100 scale).
RELATIVE_INTENSITY_TOL = 1e-5
#: Constant of the Cromer-Mann-like fit of the atomic scattering factor used by pymatgen.
_FORM_FACTOR_PREFACTOR = 41.78214


@functools.lru_cache(maxsize=None)
def _element_scattering(symbol: str) -> tuple[int, np.ndarray]:
    """Atomic number and the (4, 2) ``(a_i, b_i)`` coefficients of *symbol*."""
    try:
        coefficients = ATOMIC_SCATTERING_PARAMS[symbol]
    except KeyError:
        raise ValueError(f"no X-ray scattering coefficients for element {symbol!r}") from None
    return Element(symbol).Z, np.asarray(coefficients, dtype=float)


class _Scatterers(NamedTuple):
    """What diffraction needs of a structure: one row per (site, species) pair.

    ``XRDPattern`` hands these light records to its workers instead of Structures: joblib
    pickles them faster, and their hash (the ``memory`` cache key) is stable, whereas a
    ``Structure``'s pickle changes once anything (even ``repr``, which joblib calls when it
    stores a cache entry) fills the lazily computed Cartesian coordinates of its sites.
    """

    lattice_matrix: np.ndarray  # (3, 3), rows are the lattice vectors in Å
    frac_coords: np.ndarray  # (n, 3)
    occupancies: np.ndarray  # (n,)
    element_of: np.ndarray  # (n,) index into ``elements``
    elements: tuple[str, ...]  # element symbols, oxidation states dropped
    ustar: np.ndarray | None  # (n, 3, 3) anisotropic displacements U*, or None


def _scatterers_of(structure) -> _Scatterers:
    """The :class:`_Scatterers` of a pymatgen ``Structure`` (partial occupancies expanded).

    Raises ``ValueError`` for an element without X-ray scattering coefficients or for
    ``U11_cif, ...`` site properties missing on some sites.
    """
    element_index: dict[str, int] = {}
    site_of, element_of, occupancies = [], [], []
    has_ucif = False
    for site_number, site in enumerate(structure):
        for species, occupancy in site.species.items():
            symbol = species.symbol  # drops the oxidation state, as pymatgen does
            if symbol not in element_index:
                _element_scattering(symbol)  # raises for elements without coefficients
                element_index[symbol] = len(element_index)
            element_of.append(element_index[symbol])
            occupancies.append(occupancy)
            site_of.append(site_number)
        has_ucif = has_ucif or "U11_cif" in site.properties
    ustar = None
    if has_ucif:
        # imported only when needed: recent pymatgen (2025+) reads U_cif site properties
        from pymatgen.analysis.diffraction.core import get_ustar

        ustar = get_ustar(structure)[site_of]
    return _Scatterers(
        lattice_matrix=np.array(structure.lattice.matrix, dtype=float),
        frac_coords=structure.frac_coords[site_of],
        occupancies=np.asarray(occupancies, dtype=float),
        element_of=np.asarray(element_of, dtype=np.intp),
        elements=tuple(element_index),
        ustar=ustar,
    )


def _half_sphere_hkl(lattice_matrix: np.ndarray, min_g: float, max_g: float) -> tuple[np.ndarray, np.ndarray]:
    """Miller indices (m, 3) and lengths |g| (m,) of reciprocal lattice points with
    ``min_g <= |g| <= max_g`` in one Friedel half-space (first non-zero index positive).

    The box bound ``|h| <= max_g |a|`` holds because ``h = g . a`` for crystallographic
    reciprocal vectors (no 2π), so the box is the smallest one holding the sphere.
    """
    reciprocal = np.linalg.inv(lattice_matrix).T  # rows a*, b*, c*
    metric = reciprocal @ reciprocal.T
    # 1e-8 Å^-1 slack: pymatgen's sphere search keeps points up to r + 1e-8
    radius = max_g + 1e-8
    lengths = np.sqrt(np.einsum("ij,ij->i", lattice_matrix, lattice_matrix))
    h_max, k_max, l_max = (int(radius * length) for length in lengths)
    h = np.arange(0, h_max + 1, dtype=float)
    k = np.arange(-k_max, k_max + 1, dtype=float)
    l = np.arange(-l_max, l_max + 1, dtype=float)  # noqa: E741 (Miller index)
    # g² = hᵀ G* h split into three 2-D tables, so that the box-sized work is two additions
    hk = (metric[0, 0] * h * h)[:, None] + (metric[1, 1] * k * k)[None, :]
    hk += (2 * metric[0, 1]) * np.outer(h, k)
    hl = (2 * metric[0, 2]) * np.outer(h, l)
    kl = (metric[2, 2] * l * l)[None, :] + (2 * metric[1, 2]) * np.outer(k, l)
    g_squared = hk[:, :, None] + hl[:, None, :] + kl[None, :, :]
    keep = g_squared <= radius * radius
    if min_g > 0:
        keep &= g_squared >= min_g * min_g
    # the h = 0 plane keeps k > 0, and its k = 0 line l > 0: one point of each (g, -g) pair
    keep[0, :k_max, :] = False
    keep[0, k_max, : l_max + 1] = False
    h_index, k_index, l_index = np.nonzero(keep)
    hkl = np.stack([h_index, k_index - k_max, l_index - l_max], axis=1)
    return hkl, np.sqrt(g_squared[keep])


def _phase_sums(hkl: np.ndarray, frac_coords: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``Σ_j weights[j, e] exp(2πi hkl·r_j)`` for every reflection and column e: (m, n_e).

    exp(2πi (hx + ky + lz)) factorises into exp(2πi hx) exp(2πi ky) exp(2πi lz); tabulating the
    three factors per atom and integer index costs a few hundred complex exponentials instead
    of one per (reflection, atom) pair.
    """
    factors = []
    for axis in range(3):
        index = hkl[:, axis]
        low = int(index.min())
        orders = np.arange(low, int(index.max()) + 1, dtype=float)
        table = np.exp((2j * np.pi) * np.outer(orders, frac_coords[:, axis]))  # (n_orders, n_atoms)
        factors.append(table[index - low])  # (m, n_atoms)
    return (factors[0] * factors[1] * factors[2]) @ weights


def compute_peaks(
    structure,
    wavelength: str | float = "CuKa",
    two_theta_range: tuple[float, float] | None = (5.0, 90.0),
    debye_waller_factors: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Powder diffraction peaks (sticks) of a structure, as pymatgen's ``get_pattern`` gives.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        Ordered or disordered (partial occupancies weight the scattering factors). Site
        properties ``U11_cif, ..., U12_cif`` (Å²) switch on anisotropic Debye-Waller factors.
    wavelength : str or float, default="CuKa"
        A name in :data:`WAVELENGTHS` or a wavelength in Å.
    two_theta_range : (float, float) or None, default=(5.0, 90.0)
        Range of 2θ in degrees; ``None`` means every reflection in the limiting sphere.
    debye_waller_factors : dict of str to float, optional
        Isotropic B factors (Å²) by element symbol; intensity of an element's scattering is
        damped by ``exp(-B s²)``.

    Returns
    -------
    two_theta : ndarray of shape (n_peaks,)
        Peak positions in degrees, increasing. Reflections within 1e-5° are one peak.
    intensity : ndarray of shape (n_peaks,)
        Intensities scaled so that the strongest is 100; peaks below 1e-3 are dropped.

    See Also
    --------
    XRDPattern : the broadened patterns on a grid, as a scikit-learn transformer.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    >>> two_theta, intensity = compute_peaks(nacl, two_theta_range=(20, 50))
    >>> [round(float(t), 2) for t in two_theta], [round(float(i), 1) for i in intensity]
    ([27.39, 31.73, 45.49], [8.1, 100.0, 65.6])
    """
    return _peaks_of_scatterers(_scatterers_of(structure), wavelength, two_theta_range, debye_waller_factors)


def _peaks_of_scatterers(
    scatterers: _Scatterers,
    wavelength: str | float = "CuKa",
    two_theta_range: tuple[float, float] | None = (5.0, 90.0),
    debye_waller_factors: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`compute_peaks` of a :class:`_Scatterers` record (no Structure needed)."""
    wavelength = resolve_wavelength(wavelength)
    lo, hi = (0.0, 180.0) if two_theta_range is None else _check_two_theta_range(two_theta_range)
    min_g, max_g = (2 * math.sin(math.radians(t / 2)) / wavelength for t in (lo, hi))
    hkl, g = _half_sphere_hkl(scatterers.lattice_matrix, min_g, max_g)
    if len(g) == 0:
        return np.zeros(0), np.zeros(0)

    debye_waller_factors = debye_waller_factors or {}
    frac_coords, occupancies, element_of, ustar = (
        scatterers.frac_coords,
        scatterers.occupancies,
        scatterers.element_of,
        scatterers.ustar,
    )
    if ustar is not None and any(debye_waller_factors.values()):
        raise ValueError("debye_waller_factors cannot be combined with the U11_cif, ... site properties")
    tables = [_element_scattering(symbol) for symbol in scatterers.elements]
    atomic_numbers = np.array([z for z, _ in tables], dtype=float)
    coefficients = np.stack([c for _, c in tables])  # (n_elements, 4, 2)
    b_factors = np.array([float(debye_waller_factors.get(e, 0.0)) for e in scatterers.elements])
    # Atomic scattering factors of every element at every reflection, s = sin(θ)/λ = g/2:
    #   f(s) = Z - 41.78214 s² Σ_i a_i exp(-b_i s²)           (n_refl, n_elements)
    s_squared = (g / 2) ** 2
    gaussians = np.exp(-coefficients[None, :, :, 1] * s_squared[:, None, None])
    form = atomic_numbers - _FORM_FACTOR_PREFACTOR * s_squared[:, None] * np.einsum(
        "mei,ei->me", gaussians, coefficients[:, :, 0]
    )
    if b_factors.any():
        form = form * np.exp(-b_factors[None, :] * s_squared[:, None])

    # Structure factor F(g) = Σ_j occ_j f_j(g) exp(2πi g·r_j)
    if ustar is None:
        # phases of each element's scatterers summed first, then weighted by its form factor
        by_element = np.zeros((len(occupancies), len(atomic_numbers)))
        by_element[np.arange(len(occupancies)), element_of] = occupancies
        structure_factor = np.einsum("me,me->m", form, _phase_sums(hkl, frac_coords, by_element))
    else:
        # anisotropic displacements make every scatterer's weight depend on the reflection
        hkl_float = hkl.astype(float)
        displacement = np.exp(-2 * np.pi**2 * np.einsum("mi,nij,mj->mn", hkl_float, ustar, hkl_float))
        weight = form[:, element_of] * occupancies * displacement
        phases = _phase_sums(hkl, frac_coords, np.eye(len(occupancies)))
        structure_factor = np.einsum("mj,mj->m", weight, phases)
    structure_intensity = structure_factor.real**2 + structure_factor.imag**2

    # Lorentz-polarisation factor (1 + cos² 2θ) / (sin² θ cos θ), with sin θ = λ g / 2
    sin_theta = np.minimum(wavelength * g / 2, 1.0)
    sin_squared = sin_theta * sin_theta
    cos_two_theta = 1 - 2 * sin_squared
    lorentz_polarisation = (1 + cos_two_theta**2) / (sin_squared * np.sqrt(1 - sin_squared))
    intensity = structure_intensity * lorentz_polarisation
    two_theta = np.degrees(2 * np.arcsin(sin_theta))

    # Merge reflections whose 2θ rounds to the same multiple of TWO_THETA_TOL; the peak sits
    # at the lowest 2θ of its group, as in pymatgen (which visits reflections by increasing g).
    order = np.argsort(two_theta, kind="stable")
    two_theta, intensity = two_theta[order], intensity[order]
    keys = np.round(two_theta / TWO_THETA_TOL).astype(np.int64)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    two_theta = two_theta[starts]
    intensity = np.add.reduceat(intensity, starts)
    strongest = intensity.max()
    if strongest <= 0:
        return np.zeros(0), np.zeros(0)
    keep = intensity / strongest > RELATIVE_INTENSITY_TOL
    return two_theta[keep], intensity[keep] * (100.0 / strongest)


# --------------------------------------------------------------------------------------------
# scikit-learn transformer
# --------------------------------------------------------------------------------------------


def _normalise(pattern: np.ndarray, normalize: str | None) -> np.ndarray:
    if normalize is None:
        return pattern
    scale = pattern.max() if normalize == "max" else pattern.sum()
    return pattern / scale if scale > 0 else pattern


def _xrd_chunk(
    scatterers: list[_Scatterers],
    *,
    wavelength: str | float,
    two_theta_range: tuple[float, float],
    n_bins: int,
    peak_width: float,
    peak_shape: str,
    eta: float,
    normalize: str | None,
    debye_waller_factors: Mapping[str, float] | None,
) -> np.ndarray:
    # module level so that joblib can pickle it and Memory can key its cache on it
    grid = np.linspace(two_theta_range[0], two_theta_range[1], n_bins)
    step = (grid[-1] - grid[0]) / (n_bins - 1)
    out = np.empty((len(scatterers), n_bins), dtype=np.float32)
    for row, record in enumerate(scatterers):
        two_theta, intensity = _peaks_of_scatterers(record, wavelength, two_theta_range, debye_waller_factors)
        pattern = _broaden_on_grid(two_theta, intensity, grid[0], step, n_bins, peak_width, peak_shape, eta)
        out[row] = _normalise(pattern, normalize)
    return out


def _feature_names(grid: np.ndarray) -> np.ndarray:
    # two decimals ("xrd_5.00") unless the grid is finer than that
    for decimals in range(2, 10):
        names = [f"xrd_{x:.{decimals}f}" for x in grid]
        if len(set(names)) == len(names):
            break
    return np.asarray(names, dtype=object)


class XRDPattern(BaseFeaturizer):
    r"""Powder X-ray diffraction pattern of each structure on a fixed 2θ grid.

    The peaks are those of pymatgen's ``XRDCalculator.get_pattern`` [1]_ (positions and
    intensities agree to about 1e-13), which follows chapters 11 and 12 of De Graef and McHenry [2]_:

    1. Every reciprocal lattice vector :math:`\mathbf{g}_{hkl}` inside the limiting sphere
       :math:`|\mathbf{g}| \le 2 / \lambda` (and inside ``two_theta_range``) is a reflection
       at the Bragg angle :math:`\sin\theta = \lambda |\mathbf{g}| / 2`. Walking over all of
       them counts symmetry-equivalent planes, so no multiplicity factor is needed. Friedel's
       law :math:`I(\mathbf{g}) = I(-\mathbf{g})` holds (no anomalous dispersion), so one
       half-space is computed.
    2. The atomic scattering factor of each element at :math:`s = \sin\theta / \lambda` is
       :math:`f(s) = Z - 41.78214\, s^2 \sum_{i=1}^{4} a_i \exp(-b_i s^2)`, with pymatgen's
       fitted :math:`(a_i, b_i)` (``ATOMIC_SCATTERING_PARAMS``), times
       :math:`\exp(-B s^2)` when a Debye-Waller factor :math:`B` is given.
    3. The structure factor sums over the sites, weighted by occupancy (so disordered
       structures work): :math:`F_{hkl} = \sum_j o_j f_j \exp(2\pi i\, \mathbf{g}_{hkl}
       \cdot \mathbf{r}_j)`, and :math:`I_{hkl} = |F_{hkl}|^2`. Site properties
       ``U11_cif, ..., U12_cif`` add anisotropic factors
       :math:`\exp(-2\pi^2 \mathbf{h}^T U^* \mathbf{h})` per site.
    4. The Lorentz-polarisation factor
       :math:`(1 + \cos^2 2\theta) / (\sin^2\theta \cos\theta)` multiplies :math:`I_{hkl}`.
    5. Reflections within 1e-5° of 2θ are one peak; peaks weaker than 1e-5 of the strongest
       (unextinguished rounding of systematic absences) are dropped; the strongest is 100.

    Each stick then becomes a unit-area peak of width ``peak_width`` on the grid
    ``np.linspace(*two_theta_range, n_bins)`` (see :func:`~skmat.features.xrd.broaden`), and the
    pattern is normalised. Everything is array arithmetic over all reflections and atoms at once,
    about 30x faster than ``get_pattern`` per structure.

    Parameters
    ----------
    wavelength : str or float, default="CuKa"
        Radiation name in :data:`~skmat.features.xrd.WAVELENGTHS` (``"CuKa"``, ``"MoKa"``,
        ...) or a wavelength in Å.
    two_theta_range : (float, float), default=(5.0, 90.0)
        First and last grid point, degrees.
    n_bins : int, default=1701
        Number of grid points (1701 gives 0.05° steps on 5-90°).
    peak_width : float, default=0.15
        Full width at half maximum of every peak, degrees 2θ.
    peak_shape : {"gaussian", "lorentzian", "pseudo_voigt"}, default="gaussian"
        Peak profile.
    eta : float, default=0.5
        Lorentzian fraction of the pseudo-Voigt profile (ignored otherwise).
    normalize : {"max", "sum"} or None, default="max"
        Scale each pattern to a maximum of 1, a sum of 1, or not at all (sticks on a
        0-100 scale, peaks of unit area per unit stick).
    debye_waller_factors : dict of str to float, optional
        Isotropic Debye-Waller B factors (Å²) by element symbol.
    n_jobs : int or None, default=1
        Parallel jobs (joblib). ``None`` defers to ``joblib.parallel_config``.
    chunk_size : int, default=64
        Structures per task (and per cache entry with ``memory``).
    memory : None, str, path-like or joblib.Memory, default=None
        Cache of computed chunks.
    verbose : int, default=0
        ``> 0`` shows a progress bar.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of the input seen in ``fit``.
    feature_names_in_ : ndarray of str
        Input column names, when the input was a DataFrame with string column names.

    See Also
    --------
    skmat.features.xrd.compute_peaks : the sticks of one structure.
    skmat.features.xrd.broaden : sticks to a pattern on a grid.

    References
    ----------
    .. [1] S. P. Ong et al., "Python Materials Genomics (pymatgen): A robust, open-source
       python library for materials analysis", Comput. Mater. Sci. 68, 314-319 (2013).
    .. [2] M. De Graef and M. E. McHenry, "Structure of Materials: An Introduction to
       Crystallography, Diffraction and Symmetry", Cambridge University Press (2007).

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    >>> xrd = XRDPattern(two_theta_range=(10, 80), n_bins=701)
    >>> patterns = xrd.fit_transform([nacl])
    >>> patterns.shape, patterns.dtype, float(patterns.max())
    ((1, 701), dtype('float32'), 1.0)
    >>> str(xrd.get_feature_names_out()[patterns[0].argmax()])
    'xrd_31.70'
    """

    _input_view = "structure"
    _chunk_function = _xrd_chunk

    _parameter_constraints: dict = {
        "wavelength": [StrOptions(set(WAVELENGTHS)), Interval(Real, 0, None, closed="neither")],
        "two_theta_range": ["array-like"],
        "n_bins": [Interval(Integral, 2, None, closed="left")],
        "peak_width": [Interval(Real, 0, None, closed="neither")],
        "peak_shape": [StrOptions(set(PEAK_SHAPES))],
        "eta": [Interval(Real, 0, 1, closed="both")],
        "normalize": [StrOptions({"max", "sum"}), None],
        "debye_waller_factors": [dict, None],
        "n_jobs": [Integral, None],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "memory": [None, str, os.PathLike, HasMethods(["cache"])],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        wavelength: str | float = "CuKa",
        two_theta_range: tuple[float, float] = (5.0, 90.0),
        n_bins: int = 1701,
        peak_width: float = 0.15,
        peak_shape: str = "gaussian",
        eta: float = 0.5,
        normalize: str | None = "max",
        debye_waller_factors: dict | None = None,
        n_jobs: int | None = 1,
        chunk_size: int = 64,
        memory: Any = None,
        verbose: int = 0,
    ):
        self.wavelength = wavelength
        self.two_theta_range = two_theta_range
        self.n_bins = n_bins
        self.peak_width = peak_width
        self.peak_shape = peak_shape
        self.eta = eta
        self.normalize = normalize
        self.debye_waller_factors = debye_waller_factors
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size
        self.memory = memory
        self.verbose = verbose

    @property
    def _chunk_size(self) -> int:
        # BaseFeaturizer reads the chunk size here; it is a parameter of this featurizer
        return self.chunk_size

    def _validate_params(self) -> None:
        # sklearn's InvalidParameterError is a ValueError naming the parameter and its options
        validate_parameter_constraints(
            self._parameter_constraints, self.get_params(deep=False), caller_name=type(self).__name__
        )
        _check_two_theta_range(self.two_theta_range)
        for symbol, b_factor in (self.debye_waller_factors or {}).items():
            _element_scattering(symbol)  # raises for symbols without scattering data
            if not (isinstance(b_factor, Real) and math.isfinite(b_factor)):
                raise ValueError(
                    f"Debye-Waller factor of {symbol!r} must be a finite number, got {b_factor!r}"
                )

    def _chunk_kwargs(self) -> dict:
        return {
            "wavelength": self.wavelength,
            "two_theta_range": _check_two_theta_range(self.two_theta_range),
            "n_bins": int(self.n_bins),
            "peak_width": float(self.peak_width),
            "peak_shape": self.peak_shape,
            "eta": float(self.eta),
            "normalize": self.normalize,
            "debye_waller_factors": dict(self.debye_waller_factors) if self.debye_waller_factors else None,
        }

    def _items(self, X: Any) -> list[_Scatterers]:
        structures = super()._items(X)
        # extract here, not in the workers, so that every error names its row
        frame = to_frame(X, default_column="structure")
        view = "structure" if "structure" in frame.columns else "cif"
        has_b_factors = any((self.debye_waller_factors or {}).values())
        records = []
        for label, structure in zip(row_labels(frame), structures, strict=True):
            try:
                record = _scatterers_of(structure)
            except ValueError as exc:
                raise InvalidInputError(str(exc), row=label, view=view) from exc
            if record.ustar is not None and has_b_factors:
                raise InvalidInputError(
                    "debye_waller_factors cannot be combined with the U11_cif, ... site properties",
                    row=label,
                    view=view,
                )
            records.append(record)
        return records

    def two_theta_grid(self) -> np.ndarray:
        """The 2θ values (degrees) of the output columns."""
        lo, hi = _check_two_theta_range(self.two_theta_range)
        return np.linspace(lo, hi, self.n_bins)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns, ``"xrd_<2θ>"`` (e.g. ``"xrd_5.00"``).

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        ndarray of str
        """
        return _feature_names(self.two_theta_grid())
