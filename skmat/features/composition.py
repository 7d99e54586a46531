"""Magpie element-property statistics of a composition, vectorised over a batch.

The numbers are those of matminer's ``ElementProperty.from_preset("magpie")``: for each of 22
element properties, six statistics over the elements of a composition weighted by their amounts
(minimum, maximum, range, mean, mean absolute deviation, mode). matminer computes them one
composition and one property at a time in Python; here the element table is a numpy array and a
whole batch is one gather plus a few reductions.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils._param_validation import HasMethods, StrOptions, validate_parameter_constraints

from skmat.features._base import BaseFeaturizer

#: Element properties of matminer's "magpie" preset, in matminer's order.
MAGPIE_PROPERTIES: tuple[str, ...] = (
    "Number",
    "MendeleevNumber",
    "AtomicWeight",
    "MeltingT",
    "Column",
    "Row",
    "CovalentRadius",
    "Electronegativity",
    "NsValence",
    "NpValence",
    "NdValence",
    "NfValence",
    "NValence",
    "NsUnfilled",
    "NpUnfilled",
    "NdUnfilled",
    "NfUnfilled",
    "NUnfilled",
    "GSvolume_pa",
    "GSbandgap",
    "GSmagmom",
    "SpaceGroupNumber",
)

#: Statistics of the "magpie" preset, in matminer's order (property-major, statistic-minor).
MAGPIE_STATISTICS: tuple[str, ...] = ("minimum", "maximum", "range", "mean", "avg_dev", "mode")

_MAX_Z = 118  # matminer's tables cover H..Og


def _magpie_table_folder() -> Path:
    # find_spec locates the installed matminer without importing matminer.utils.data, whose
    # import pulls in scipy.stats and pandas (~1 s) only to read these same text files
    spec = importlib.util.find_spec("matminer")
    if spec is None or spec.origin is None:
        raise ImportError("matminer is required for the Magpie element table")
    return Path(spec.origin).parent / "utils" / "data_files" / "magpie_elementdata"


def _read_property(path: Path) -> np.ndarray:
    """One ``.table`` file -> values for Z = 1..118, NaN where matminer finds no number."""
    lines = path.read_text().splitlines()
    values = np.full(_MAX_Z, np.nan)
    for z in range(1, _MAX_Z + 1):
        # same rule as matminer's MagpieData: a missing line or a non-number ("Missing") is NaN
        try:
            values[z - 1] = float(lines[z - 1])
        except (ValueError, IndexError):
            pass
    return values


@functools.cache
def magpie_element_table() -> np.ndarray:
    """Magpie properties of every element, as matminer's ``MagpieData(impute_nan=True)`` sees them.

    Row ``Z`` holds element ``Z`` (row 0 is unused, so that atomic numbers index directly);
    columns follow :data:`MAGPIE_PROPERTIES`. Values that the shipped tables lack are replaced by
    the mean of that property over all elements, which is matminer's default imputation, so
    every element has a finite value. Read once per process; the array is read-only.

    Returns
    -------
    ndarray of shape (119, 22), float64

    Examples
    --------
    >>> table = magpie_element_table()
    >>> table.shape
    (119, 22)
    >>> float(table[26, MAGPIE_PROPERTIES.index("Number")])
    26.0
    """
    folder = _magpie_table_folder()
    table = np.zeros((_MAX_Z + 1, len(MAGPIE_PROPERTIES)))
    for j, name in enumerate(MAGPIE_PROPERTIES):
        values = _read_property(folder / f"{name}.table")
        table[1:, j] = np.where(np.isnan(values), np.nanmean(values), values)
    table.flags.writeable = False
    return table


def magpie_feature_names() -> list[str]:
    """Feature labels of matminer's magpie preset, e.g. ``"MagpieData minimum Number"``."""
    return [f"MagpieData {stat} {prop}" for prop in MAGPIE_PROPERTIES for stat in MAGPIE_STATISTICS]


def _element_amounts(compositions: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Pad the batch to its largest number of distinct elements.

    Returns atomic numbers ``(n, k)`` (0 marks padding) and amounts ``(n, k)`` (0 in padding).
    Species of one element (Fe2+, Fe3+) are summed into the element, as matminer does through
    ``Composition.element_composition``.
    """
    per_row = []
    for comp in compositions:
        amounts: dict[int, float] = {}
        for species, amount in comp.items():
            z = species.Z
            amounts[z] = amounts.get(z, 0.0) + amount
        per_row.append(amounts)
    width = max((len(a) for a in per_row), default=0)
    numbers = np.zeros((len(per_row), width), dtype=np.intp)
    weights = np.zeros((len(per_row), width))
    for i, amounts in enumerate(per_row):
        numbers[i, : len(amounts)] = list(amounts.keys())
        weights[i, : len(amounts)] = list(amounts.values())
    return numbers, weights


def magpie_features(compositions: Sequence) -> np.ndarray:
    """Magpie statistics of each composition, equal to matminer's ``ElementProperty`` magpie preset.

    For each property in :data:`MAGPIE_PROPERTIES` and element values ``x_i`` with amounts
    ``w_i`` (weights are amounts; only their ratios matter except in the mode's tie test):

    * ``minimum``, ``maximum``, ``range``: unweighted, over the elements present;
    * ``mean``: ``sum(w x) / sum(w)``;
    * ``avg_dev``: ``sum(w |x - mean|) / sum(w)``;
    * ``mode``: value of the most abundant element; among elements whose amounts are
      ``np.isclose`` to the largest, the smallest value (matminer's tie rule).

    Parameters
    ----------
    compositions : sequence of pymatgen Composition
        Element or Species keys (oxidation states are ignored), integer or fractional amounts.
        Every element must be real (``Z`` in 1..118); validate user input with
        :func:`skmat._inputs.as_compositions` first.

    Returns
    -------
    ndarray of shape (n_compositions, 132), float64
        Columns ordered as :func:`magpie_feature_names`.

    Examples
    --------
    >>> from pymatgen.core import Composition
    >>> features = magpie_features([Composition("NaCl"), Composition("Fe2O3")])
    >>> features.shape
    (2, 132)
    >>> names = magpie_feature_names()
    >>> float(features[1, names.index("MagpieData mean Number")])  # (2*26 + 3*8) / 5
    15.2
    """
    n_out = len(MAGPIE_PROPERTIES) * len(MAGPIE_STATISTICS)
    if len(compositions) == 0:
        return np.zeros((0, n_out))
    numbers, weights = _element_amounts(compositions)
    present = numbers > 0
    values = magpie_element_table()[numbers]  # (n, k, n_properties)
    mask = present[:, :, None]

    minimum = np.where(mask, values, np.inf).min(axis=1)
    maximum = np.where(mask, values, -np.inf).max(axis=1)
    total = weights.sum(axis=1)[:, None]
    w = weights[:, :, None]  # padding has weight 0, so it drops out of the sums
    mean = (w * values).sum(axis=1) / total
    avg_dev = (w * np.abs(values - mean[:, None, :])).sum(axis=1) / total
    # matminer: np.isclose(weights, weights.max()) on the raw amounts, then the smallest value
    heaviest = weights.max(axis=1, keepdims=True)
    tied = np.isclose(weights, heaviest) & present
    mode = np.where(tied[:, :, None], values, np.inf).min(axis=1)

    stats = np.stack([minimum, maximum, maximum - minimum, mean, avg_dev, mode], axis=2)
    return stats.reshape(len(compositions), n_out)


def _magpie_chunk(compositions: list, *, preset: str) -> np.ndarray:
    # module level so that joblib can pickle it and Memory can key its cache on it
    return magpie_features(compositions)


class CompositionFeatures(BaseFeaturizer):
    """Element-property statistics of a composition (Magpie, 132 features).

    The "magpie" preset gives, for 22 element properties (atomic number, Mendeleev number,
    atomic weight, melting point, column, row, covalent radius, electronegativity, valence and
    unfilled s/p/d/f electron counts, DFT volume, band gap and magnetic moment of the elemental
    ground state, its space group), six statistics over the elements weighted by atomic
    fraction: minimum, maximum, range, mean, mean absolute deviation and mode [1]_. The values
    equal matminer's ``ElementProperty.from_preset("magpie")`` (element table and imputation of
    missing element data included) and are computed for a whole batch at once, about 30x faster.

    Oxidation states are ignored (Fe2+ and Fe3+ count as Fe). Elements that the Magpie tables
    lack data for get the mean over all elements, as in matminer.

    Parameters
    ----------
    preset : {"magpie"}, default="magpie"
        Which property set and statistics to compute.
    n_jobs : int or None, default=1
        Parallel jobs (joblib). ``None`` defers to ``joblib.parallel_config``.
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
    skmat.features.composition.magpie_features : the same numbers in float64 from a list of
        Compositions.

    References
    ----------
    .. [1] L. Ward, A. Agrawal, A. Choudhary, C. Wolverton, "A general-purpose machine learning
       framework for predicting properties of inorganic materials", npj Comput. Mater. 2,
       16028 (2016).

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"composition": ["NaCl", "Fe2O3", "Li0.5CoO2"]})
    >>> features = CompositionFeatures().fit_transform(frame)
    >>> features.shape, features.dtype
    ((3, 132), dtype('float32'))
    >>> str(CompositionFeatures().fit(frame).get_feature_names_out()[0])
    'MagpieData minimum Number'
    """

    _input_view = "composition"
    _chunk_function = _magpie_chunk
    # one chunk is a single vectorised call; large chunks amortise the numpy overhead
    _chunk_size = 1024

    _parameter_constraints: dict = {
        "preset": [StrOptions({"magpie"})],
        "n_jobs": [Integral, None],
        "memory": [None, str, os.PathLike, HasMethods(["cache"])],
        "verbose": ["verbose"],
    }

    def __init__(self, preset: str = "magpie", n_jobs: int | None = 1, memory: Any = None, verbose: int = 0):
        self.preset = preset
        self.n_jobs = n_jobs
        self.memory = memory
        self.verbose = verbose

    def _validate_params(self) -> None:
        # sklearn's InvalidParameterError is a ValueError naming the parameter and its options
        validate_parameter_constraints(
            self._parameter_constraints, self.get_params(deep=False), caller_name=type(self).__name__
        )

    def _chunk_kwargs(self) -> dict:
        return {"preset": self.preset}

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the 132 output columns, e.g. ``"MagpieData mean Electronegativity"``.

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        ndarray of str
        """
        return np.asarray(magpie_feature_names(), dtype=object)
