"""Density of states and charge density: raw arrays -> fixed-size float32 inputs for the encoders.

* :func:`resample_dos` puts densities of states recorded on per-material energy grids onto one
  fixed grid around the Fermi level; :func:`normalize_dos` rescales them;
  :class:`DOSResampler` is both as a scikit-learn transformer.
* :func:`normalize_charge_density` turns VASP-style ``rho * V_cell`` grids into a scale a
  network can learn from.

Pure numpy: nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from skmat._inputs import is_missing, row_labels
from skmat.exceptions import InvalidInputError

_DOS_NORMALIZATIONS = ("none", "max", "area")
_CHARGE_DENSITY_METHODS = ("log_mean", "mean")


def _check_energy_window(energy_window: Any, n_points: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in energy_window)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"energy_window must be a pair (low, high) in eV, got {energy_window!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"energy_window must satisfy low < high (finite), got {energy_window!r}")
    if isinstance(n_points, bool) or not isinstance(n_points, int | np.integer) or n_points < 2:
        raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}")
    return low, high


def dos_energy_grid(energy_window: tuple[float, float] = (-10.0, 10.0), n_points: int = 256) -> np.ndarray:
    """The fixed energy grid (eV, relative to E_F) that :func:`resample_dos` samples on.

    Both ends are included: ``np.linspace(low, high, n_points)``.

    Examples
    --------
    >>> dos_energy_grid((-1.0, 1.0), 5).tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    low, high = _check_energy_window(energy_window, n_points)
    return np.linspace(low, high, int(n_points))


def _check_one_dos(value: Any, label: Any) -> tuple[np.ndarray, np.ndarray]:
    """Energy and density of one material, or an error naming the row."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot read the DOS as a numeric array ({exc})", row=label, view="dos"
        ) from exc
    if array.ndim != 2 or array.shape[0] != 2:
        hint = " (it looks transposed: pass dos.T)" if array.ndim == 2 and array.shape[1] == 2 else ""
        raise InvalidInputError(
            f"expected an array of shape (2, L): row 0 energy - E_F (eV), row 1 density; "
            f"got shape {array.shape}{hint}",
            row=label,
            view="dos",
        )
    if array.shape[1] < 2:
        raise InvalidInputError("a DOS needs at least 2 energy points", row=label, view="dos")
    if not np.all(np.isfinite(array)):
        which = "energy" if not np.all(np.isfinite(array[0])) else "density"
        raise InvalidInputError(f"{which} contains NaN or inf", row=label, view="dos")
    energy, density = array
    steps = np.diff(energy)
    if np.any(steps <= 0):
        # Refuse rather than sort. The one real case we know (MultiMat's mp-696961) starts with
        # 21 copies of +23.6 eV and then 3 falling values, all with density 0: a corrupted header.
        # Sorting would plant zero-density points inside the valid range (one at -6.5 eV), a
        # false gap the model would learn from. The caller knows best what the bad points are.
        first = int(np.argmax(steps <= 0))
        raise InvalidInputError(
            f"energies must be strictly increasing; energy[{first}] = {energy[first]:.6g} is followed "
            f"by {energy[first + 1]:.6g}. Trim or mark this row missing (None)",
            row=label,
            view="dos",
        )
    if not energy[0] <= 0.0 <= energy[-1]:
        # every DOS relative to the Fermi level spans 0; absolute energies (E, not E - E_F) are the
        # usual slip, and resampling them onto a window around 0 would give silent zeros
        raise InvalidInputError(
            f"energy grid [{energy[0]:.4g}, {energy[-1]:.4g}] eV does not contain 0: energies must be "
            "E - E_Fermi, not absolute",
            row=label,
            view="dos",
        )
    return energy, density


def _resample_rows(items: Sequence, labels: Sequence, grid: np.ndarray) -> np.ndarray:
    out = np.empty((len(items), grid.size), dtype=np.float32)
    for i, (label, value) in enumerate(zip(labels, items, strict=True)):
        if is_missing(value):
            out[i] = np.nan  # a missing view stays visible as NaN; the aligner masks it
            continue
        energy, density = _check_one_dos(value, label)
        # linear interpolation; outside the material's own energy range there is no information,
        # and 0 (no states recorded) keeps the fixed grid comparable across materials
        out[i] = np.interp(grid, energy, density, left=0.0, right=0.0)
    return out


def _as_dos_items(dos: Any) -> list:
    if isinstance(dos, np.ndarray) and dos.dtype != object:
        if dos.ndim == 2:
            raise InvalidInputError(
                f"expected a list of (2, L) arrays or an array of shape (n, 2, L); got a single 2-D "
                f"array of shape {dos.shape}: wrap one DOS in a list",
                view="dos",
            )
        if dos.ndim != 3:
            raise InvalidInputError(
                f"expected an array of shape (n, 2, L), got shape {dos.shape}", view="dos"
            )
        return list(dos)
    if isinstance(dos, str) or not isinstance(dos, Sequence | np.ndarray | pd.Series):
        raise InvalidInputError(
            f"expected a list of (2, L) arrays or an array of shape (n, 2, L), got {type(dos).__name__}",
            view="dos",
        )
    return list(dos)


def resample_dos(
    dos: Any,
    energy_window: tuple[float, float] = (-10.0, 10.0),
    n_points: int = 256,
) -> np.ndarray:
    """Resample densities of states onto one fixed energy grid around the Fermi level.

    Each material's DOS comes on its own energy grid (in the MultiMat data the window and step
    differ per material). This linearly interpolates every one onto
    ``dos_energy_grid(energy_window, n_points)``; grid points outside a material's own energy
    range get density 0 (no states recorded there).

    Parameters
    ----------
    dos : sequence of array-like of shape (2, L), or ndarray of shape (n, 2, L)
        Row 0 is the energy E - E_F in eV, strictly increasing; row 1 is the density (taken as
        given: small negative values from tetrahedron integration pass through). ``L`` may differ
        between materials. ``None`` or NaN marks a missing DOS and gives a row of NaN.
    energy_window : (float, float), default=(-10.0, 10.0)
        Lowest and highest energy of the grid, eV relative to E_F (both included).
    n_points : int, default=256
        Number of grid points.

    Returns
    -------
    ndarray of shape (n, n_points), float32

    Raises
    ------
    InvalidInputError
        Naming the row (its position in *dos*) and view ``"dos"``, when a DOS is not (2, L),
        holds NaN/inf, has energies that are not strictly increasing (they are not sorted for
        you: in real data that has meant corruption, see the source comment), or has an energy
        range that does not contain 0 (absolute energies instead of E - E_F).

    See Also
    --------
    DOSResampler : the same as a scikit-learn transformer, with normalisation.

    Examples
    --------
    >>> import numpy as np
    >>> energy = np.array([-2.0, 0.0, 2.0])
    >>> density = np.array([1.0, 3.0, 5.0])
    >>> resample_dos([np.stack([energy, density])], energy_window=(-3, 3), n_points=7)
    array([[0., 1., 2., 3., 4., 5., 0.]], dtype=float32)
    """
    grid = dos_energy_grid(energy_window, n_points)
    items = _as_dos_items(dos)
    return _resample_rows(items, list(range(len(items))), grid)


def normalize_dos(resampled: np.ndarray, method: str = "area") -> np.ndarray:
    """Rescale resampled DOS rows (output of :func:`resample_dos`) one by one.

    Parameters
    ----------
    resampled : ndarray of shape (n, n_points)
    method : {"area", "max", "none"}, default="area"
        ``"area"`` divides each row by its mean over the window, so the area under it equals the
        window width and values are O(1). The raw density is per cell, so the same material in a
        cell twice as large has twice the DOS; dividing it out compares materials by the shape
        of their DOS. ``"max"`` divides by the row's maximum (sensitive to one sharp d/f peak).
        ``"none"`` keeps states/eV/cell. Rows that are zero everywhere (no states recorded in
        the window) stay zero; NaN rows (missing) stay NaN.

    Returns
    -------
    ndarray of shape (n, n_points), float32

    Examples
    --------
    >>> import numpy as np
    >>> normalize_dos(np.array([[0.0, 2.0, 4.0]]), "max").tolist()
    [[0.0, 0.5, 1.0]]
    """
    if method not in _DOS_NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {_DOS_NORMALIZATIONS}, got {method!r}")
    values = np.asarray(resampled, dtype=np.float32)
    if method == "none":
        return values.copy()
    scale = values.mean(axis=1, keepdims=True) if method == "area" else values.max(axis=1, keepdims=True)
    # an all-zero row has nothing to rescale: dividing by 1 keeps it zero instead of making NaN
    scale = np.where(scale > 0, scale, np.float32(1.0))
    return (values / scale).astype(np.float32, copy=False)


class DOSResampler(TransformerMixin, BaseEstimator):
    """Put densities of states on one fixed energy grid around E_F, optionally normalised.

    Stateless: ``fit`` only checks the parameters. Input is the ``dos`` view: each cell a
    ``(2, L)`` array (energy - E_F in eV, density), ``L`` free per material.

    Parameters
    ----------
    energy_window : (float, float), default=(-10.0, 10.0)
        Energy range of the output grid, eV relative to E_F. ±10 eV holds the valence and
        conduction bands that set bonding and optical properties; deep core states are left out.
    n_points : int, default=256
        Grid points (a step of 0.078 eV for the default window, close to the ~0.05 eV of the
        Materials Project DOS). A multiple of :class:`skmat.nn.views.DOSEncoder`'s patch size
        avoids padding.
    normalize : {"area", "max", "none"}, default="area"
        Per-row scaling, see :func:`normalize_dos`. ``"area"`` removes the dependence on cell
        size (a supercell has proportionally more states per cell).

    Attributes
    ----------
    energy_grid_ : ndarray of shape (n_points,)
        The energies (eV) of the output columns; set by ``fit``.

    See Also
    --------
    resample_dos, normalize_dos

    Examples
    --------
    >>> import numpy as np
    >>> energy = np.linspace(-12, 8, 400)
    >>> dos = [np.stack([energy, np.exp(-energy**2)]), None]
    >>> out = DOSResampler(n_points=64).fit_transform(dos)
    >>> out.shape, bool(np.isnan(out[1]).all())
    ((2, 64), True)
    """

    def __init__(self, energy_window=(-10.0, 10.0), n_points=256, normalize="area"):
        self.energy_window = energy_window
        self.n_points = n_points
        self.normalize = normalize

    def _validate_params(self) -> np.ndarray:
        if self.normalize not in _DOS_NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {_DOS_NORMALIZATIONS}, got {self.normalize!r}")
        return dos_energy_grid(self.energy_window, self.n_points)

    def fit(self, X: Any, y: Any = None) -> DOSResampler:
        """Check the parameters; nothing is learned.

        Parameters
        ----------
        X : DataFrame with a ``dos`` column, or sequence of (2, L) arrays, or ndarray (n, 2, L)
        y : ignored

        Returns
        -------
        self
        """
        self.energy_grid_ = self._validate_params()
        self.n_features_in_ = X.shape[1] if isinstance(X, pd.DataFrame) else 1
        if isinstance(X, pd.DataFrame) and all(isinstance(c, str) for c in X.columns):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Resample (and normalise) every row of *X*.

        Returns
        -------
        ndarray of shape (n_samples, n_points), float32
            Missing DOS (``None``/NaN cells) give rows of NaN.
        """
        grid = self._validate_params()  # stateless: transform works without fit, like fit would
        if isinstance(X, pd.DataFrame):
            if "dos" not in X.columns:
                raise InvalidInputError(f"no 'dos' column; columns are {list(X.columns)}", view="dos")
            items, labels = list(X["dos"]), row_labels(X)
        else:
            items = _as_dos_items(X)
            labels = list(X.index) if isinstance(X, pd.Series) else list(range(len(items)))
        return normalize_dos(_resample_rows(items, labels, grid), self.normalize)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """One name per grid energy, e.g. ``dos_-10.000eV``."""
        grid = self._validate_params()
        # enough decimals to keep neighbouring names apart on a fine grid
        decimals = max(3, math.ceil(-math.log10(grid[1] - grid[0])) + 1)
        names = [f"dos_{0.0 if abs(e) < 10**-decimals else e:.{decimals}f}eV" for e in grid]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        # input is a list of (2, L) arrays, not a 2-D feature matrix
        tags.input_tags.two_d_array = False
        return tags


def _charge_density_scale(grid: np.ndarray, method: str, label: Any) -> np.ndarray:
    mean = float(grid.mean(dtype=np.float64))
    if not mean > 0:
        raise InvalidInputError(
            f"mean charge density is {mean:.4g}; it must be positive (the grid holds no electrons)",
            row=label,
            view="charge_density",
        )
    # Why divide by the mean: VASP stores rho * V_cell, and its mean over the grid is the number of
    # electrons in the cell. rho / mean(rho) is then the density relative to the cell's average:
    # the same for a primitive cell and a supercell, and comparable across materials whatever
    # their volume and electron count (both depend on the cell chosen, not on the material).
    relative = grid / np.float32(mean)
    if method == "mean":
        return relative
    # Why log1p: near nuclei the relative density reaches 10^2-10^3 while bonding regions are
    # ~0.1-3; on a linear scale a few core voxels dominate every convolution. log1p compresses the
    # cores and is ~linear (log1p(x) ~ x) in the valence region that carries the chemistry.
    # Negative values (PAW augmentation / Fourier ringing; 143 of 303 MultiMat grids have some)
    # are unphysical and are clipped to 0 before the log.
    return np.log1p(np.maximum(relative, 0.0))


def normalize_charge_density(rho: Any, method: str = "log_mean") -> np.ndarray:
    """Scale charge density grids (VASP CHGCAR convention, ``rho * V_cell``) for a 3-D CNN.

    Parameters
    ----------
    rho : ndarray of shape (D1, D2, D3), or (n, D1, D2, D3), or sequence of (D1, D2, D3) arrays
        One grid, or several of one common shape. In a sequence, ``None``/NaN marks a missing
        grid and gives a grid of NaN.
    method : {"log_mean", "mean"}, default="log_mean"
        ``"mean"``: ``rho / mean(rho)``, the density relative to the cell average (independent of
        cell volume and electron count). ``"log_mean"``: ``log1p(max(rho / mean(rho), 0))``, which
        also compresses the core peaks (see the source for why).

    Returns
    -------
    ndarray of float32, shape (D1, D2, D3) for one grid, (n, D1, D2, D3) otherwise

    Raises
    ------
    InvalidInputError
        Naming the row and view ``"charge_density"`` for a grid that is not 3-D, holds NaN/inf,
        differs in shape from the others, or has a non-positive mean.

    Examples
    --------
    >>> import numpy as np
    >>> rho = np.random.default_rng(0).uniform(0.0, 50.0, size=(8, 8, 8))
    >>> out = normalize_charge_density(rho, method="mean")
    >>> out.shape, out.dtype, round(float(out.mean()), 4)
    ((8, 8, 8), dtype('float32'), 1.0)
    """
    if method not in _CHARGE_DENSITY_METHODS:
        raise ValueError(f"method must be one of {_CHARGE_DENSITY_METHODS}, got {method!r}")
    single = isinstance(rho, np.ndarray) and rho.dtype != object and rho.ndim == 3
    if single:
        items = [rho]
    elif isinstance(rho, np.ndarray) and rho.dtype != object:
        if rho.ndim != 4:
            raise InvalidInputError(
                f"expected one grid (D1, D2, D3) or a batch (n, D1, D2, D3), got shape {rho.shape}",
                view="charge_density",
            )
        items = list(rho)
    elif isinstance(rho, str) or not isinstance(rho, Sequence | np.ndarray | pd.Series):
        raise InvalidInputError(
            f"expected a 3-D array or a sequence of 3-D arrays, got {type(rho).__name__}",
            view="charge_density",
        )
    else:
        items = list(rho)

    grids: list[np.ndarray | None] = []
    shape = None
    for label, value in enumerate(items):
        if is_missing(value):
            grids.append(None)
            continue
        try:
            grid = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"cannot read as a numeric array ({exc})", row=label, view="charge_density"
            ) from exc
        if grid.ndim != 3:
            raise InvalidInputError(
                f"expected a 3-D grid, got shape {grid.shape}", row=label, view="charge_density"
            )
        if shape is None:
            shape = grid.shape
        elif grid.shape != shape:
            raise InvalidInputError(
                f"grid shape {grid.shape} differs from the first grid's {shape}; resample to one shape",
                row=label,
                view="charge_density",
            )
        if not np.all(np.isfinite(grid)):
            raise InvalidInputError("grid contains NaN or inf", row=label, view="charge_density")
        grids.append(_charge_density_scale(grid, method, label))

    if shape is None:
        raise InvalidInputError("no charge density grid given (all missing or empty)", view="charge_density")
    out = np.full((len(grids), *shape), np.nan, dtype=np.float32)
    for i, grid in enumerate(grids):
        if grid is not None:
            out[i] = grid
    return out[0] if single else out
