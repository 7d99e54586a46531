"""Turning what a user passes (DataFrame, list, strings) into views, with row-named errors.

Nothing here mutates its input: DataFrames are read, never written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from skmat.exceptions import InvalidInputError


def to_frame(X: Any, *, default_column: str = "structure") -> pd.DataFrame:
    """Return *X* as a DataFrame with one column per view.

    A DataFrame is returned as is (not copied, never modified); a Series keeps its name (or
    takes *default_column*); a list/tuple/array of objects becomes one column.
    """
    if isinstance(X, pd.DataFrame):
        duplicated = X.columns[X.columns.duplicated()]
        if len(duplicated):
            # frame[view] would be a DataFrame, and each row would silently read one of them
            raise InvalidInputError(
                f"column {duplicated[0]!r} appears more than once; each view needs one column", view=str(duplicated[0])
            )
        return X
    if isinstance(X, pd.Series):
        return X.to_frame(name=X.name if X.name is not None else default_column)
    if isinstance(X, dict):
        return pd.DataFrame(X)
    if _is_single_material(X):
        # a Structure is a Sequence of sites: iterating it would make one row per site
        raise InvalidInputError(
            f"expected a DataFrame or a list of {default_column} objects, got a single "
            f"{type(X).__name__}; wrap it in a list"
        )
    if isinstance(X, str) or not isinstance(X, Sequence | np.ndarray):
        # a lone Structure or CIF string is a common slip: say what is expected
        raise InvalidInputError(
            f"expected a DataFrame or a list of {default_column} objects, got {type(X).__name__}"
        )
    if isinstance(X, np.ndarray) and X.ndim != 1:
        raise InvalidInputError(
            f"expected a 1-D sequence of {default_column} objects, got an array of shape {X.shape}"
        )
    column = pd.Series(list(X), dtype=object)
    return pd.DataFrame({default_column: column})


def _is_single_material(X: Any) -> bool:
    """A lone pymatgen Structure/Molecule (or Composition), recognised without importing pymatgen."""
    module = type(X).__module__ or ""
    return module.startswith("pymatgen.") and (hasattr(X, "sites") or hasattr(X, "num_atoms"))


def check_has_rows(frame: pd.DataFrame, *, view: str | None = None) -> None:
    """Refuse a frame with no rows (sklearn refuses 0 samples too): an empty result would only
    hide the mistake, and most often the frame was filtered down to nothing by accident."""
    if len(frame) == 0:
        raise InvalidInputError(f"X has no rows (columns: {list(frame.columns)})", view=view)


def standardized_targets(values: Any, labels: list, *, name: str, view: str) -> tuple:
    """Numeric targets, checked finite (naming the first bad row), standardised per column.

    Standardised targets train at one learning rate whatever their unit. Returns the float32
    targets, their mean and their scale (standard deviation + 1e-12), per column.
    """
    try:
        target = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {name} as numbers: {exc}", view=view) from exc
    finite = np.isfinite(target).reshape(len(target), -1).all(axis=1)
    if not finite.all():
        raise InvalidInputError(f"{name} contains NaN or inf", row=labels[int(np.flatnonzero(~finite)[0])], view=view)
    mean = target.mean(axis=0)
    scale = target.std(axis=0) + 1e-12
    return ((target - mean) / scale).astype(np.float32), mean, scale


def row_labels(frame: pd.DataFrame) -> list:
    """Labels used in error messages: ``material_id`` when present, else the index."""
    if "material_id" in frame.columns:
        return list(frame["material_id"])
    return list(frame.index)


def is_missing(value: Any) -> bool:
    """True for the marks of a missing view in a cell: ``None``, a float NaN (numpy's too),
    ``pd.NA`` and ``pd.NaT``."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _parse_structure(value: Any, label: Any, view: str):
    from pymatgen.core import Structure

    if isinstance(value, Structure):
        structure = value
    elif isinstance(value, str):
        structure = parse_cif(value, label=label, view=view)
    elif isinstance(value, dict):
        try:
            structure = Structure.from_dict(value)
        except Exception as exc:  # pymatgen raises many types for a bad dict
            raise InvalidInputError(f"cannot build a Structure from dict: {exc}", row=label, view=view) from exc
    else:
        raise InvalidInputError(
            f"expected a pymatgen Structure or a CIF string, got {type(value).__name__}",
            row=label,
            view=view,
        )
    check_structure(structure, label=label, view=view)
    check_known_elements(structure.composition, label=label, view=view)
    return structure


def parse_cif(text: str, *, label: Any = None, view: str = "structure"):
    """Parse one CIF string into a :class:`~pymatgen.core.Structure`, or raise naming *label*."""
    import warnings

    from pymatgen.core import Structure

    if not text.strip():
        raise InvalidInputError("empty CIF text", row=label, view=view)
    try:
        with warnings.catch_warnings():
            # pymatgen warns about every rounding it does in CIFs; an error below says more
            warnings.simplefilter("ignore")
            return Structure.from_str(text, fmt="cif")
    except Exception as exc:  # CifParser raises ValueError, KeyError, IndexError, ...
        raise InvalidInputError(f"malformed CIF ({type(exc).__name__}: {exc})", row=label, view=view) from exc


#: longest lattice vector accepted, Å (the largest inorganic cells are a few hundred Å)
MAX_CELL_LENGTH = 1e4
#: largest cell volume accepted, Å^3 (a 215 Å cube; powder reflections grow with the volume)
MAX_CELL_VOLUME = 1e7
#: smallest cell volume per site accepted, Å^3 (solid hydrogen at 300 GPa has ~1.3)
MIN_VOLUME_PER_SITE = 0.1
#: largest |fractional coordinate| accepted (a site this many cells away is a unit mix-up)
MAX_FRACTIONAL_COORDINATE = 1e3
#: smallest distance accepted between two atoms (or an atom and a periodic image of itself), Å.
#: The shortest bond in chemistry is H-H at 0.74 Å; the shortest distance in MP-20 val (9,047
#: structures) is 0.748 Å (H-H in SnH4, mp-1079902), in pymatgen's 309 prototypes 0.99 Å (N-H in
#: NH3), in perov_5 and carbon_24 val 1.34 Å and 1.22 Å. Closer atoms are a duplicated site or a
#: unit mix-up, and would give zero-length graph edges and finite, meaningless embeddings.
MIN_INTERATOMIC_DISTANCE = 0.5


def check_structure(structure, *, label: Any = None, view: str = "structure") -> None:
    """Refuse structures no featurizer can use: no sites, non-finite lattice or coordinates."""
    if len(structure) == 0:
        raise InvalidInputError("structure has no sites", row=label, view=view)
    matrix = structure.lattice.matrix
    if not np.all(np.isfinite(matrix)):
        raise InvalidInputError("lattice contains NaN or inf", row=label, view=view)
    if not np.all(np.isfinite(structure.frac_coords)):
        raise InvalidInputError("atomic coordinates contain NaN or inf", row=label, view=view)
    if abs(np.linalg.det(matrix)) < 1e-6:
        raise InvalidInputError("lattice has zero volume", row=label, view=view)
    # Bounds that keep featurizers from allocating without limit (found by tests/test_fuzz.py):
    # reflections grow with the cell volume, neighbours with the density, and pymatgen's
    # neighbour search with how far a fractional coordinate lies outside the cell.
    longest = float(np.linalg.norm(matrix, axis=1).max())
    if longest > MAX_CELL_LENGTH:
        raise InvalidInputError(
            f"a lattice vector is {longest:.4g} Å long (limit {MAX_CELL_LENGTH:g} Å): not a unit cell; "
            "are the lengths in Å?",
            row=label,
            view=view,
        )
    volume = abs(float(np.linalg.det(matrix)))
    if volume > MAX_CELL_VOLUME:
        raise InvalidInputError(
            f"cell volume {volume:.4g} Å^3 exceeds {MAX_CELL_VOLUME:g} Å^3: not a crystal unit cell skmat can featurize",
            row=label,
            view=view,
        )
    volume_per_site = volume / len(structure)
    if volume_per_site < MIN_VOLUME_PER_SITE:
        raise InvalidInputError(
            f"{volume_per_site:.3g} Å^3 per site (limit {MIN_VOLUME_PER_SITE:g}): atoms would overlap; "
            "are the lengths in Å?",
            row=label,
            view=view,
        )
    farthest = float(np.abs(structure.frac_coords).max())
    if farthest > MAX_FRACTIONAL_COORDINATE:
        raise InvalidInputError(
            f"a fractional coordinate is {farthest:.4g} (limit {MAX_FRACTIONAL_COORDINATE:g}): "
            "Cartesian coordinates given as fractional?",
            row=label,
            view=view,
        )
    check_min_distance(structure, label=label, view=view)


def check_min_distance(
    structure, *, min_distance: float = MIN_INTERATOMIC_DISTANCE, label: Any = None, view: str = "structure"
) -> None:
    """Refuse two atoms closer than *min_distance* Å (:data:`MIN_INTERATOMIC_DISTANCE`), naming both sites.

    Periodic images count: a site closer than *min_distance* to its own image means a lattice
    vector that short. Two partially occupied sites whose occupancies sum to at most 1 are
    exempt: they are alternative positions of one atom (a split site), never both filled.
    pymatgen's Cython neighbour list makes this ~0.1 ms for an MP-20 cell.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> s = Structure(Lattice.cubic(4.2), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0.55]])
    >>> check_min_distance(s, label="mp-0")
    Traceback (most recent call last):
    ...
    skmat.exceptions.InvalidInputError: row 'mp-0', view 'structure': sites 1 (Cl) and 2 (Cl) are 0.21 Å apart (minimum 0.5 Å): a duplicated atom?
    """
    import warnings

    with warnings.catch_warnings():
        # pymatgen warns when a cell is very small; the error below says more
        warnings.simplefilter("ignore")
        centres, neighbours, _, distances = structure.get_neighbor_list(min_distance)
    if len(distances) == 0:
        return
    occupancy = None
    if not structure.is_ordered:
        occupancy = np.array([site.species.num_atoms for site in structure])
    # shortest first, so the message names the worst pair
    for k in np.argsort(distances, kind="stable"):
        i, j = int(centres[k]), int(neighbours[k])
        if occupancy is not None and occupancy[i] < 1 and occupancy[j] < 1 and occupancy[i] + occupancy[j] <= 1 + 1e-6:
            continue
        if i > j:
            i, j = j, i
        first, second = structure[i].species_string, structure[j].species_string
        what = (
            f"site {i} ({first}) is {distances[k]:.2f} Å from a periodic image of itself"
            if i == j
            else f"sites {i} ({first}) and {j} ({second}) are {distances[k]:.2f} Å apart"
        )
        raise InvalidInputError(
            f"{what} (minimum {min_distance:g} Å): a duplicated atom?", row=label, view=view
        )


def check_known_elements(composition, *, label: Any = None, view: str = "composition") -> None:
    """Refuse pymatgen's dummy species: ``Composition("Xx2O")`` parses, but ``Xx`` is no element."""
    from pymatgen.core.periodic_table import DummySpecies

    for el in composition.elements:
        if isinstance(el, DummySpecies):
            raise InvalidInputError(f"unknown element symbol {el.symbol!r}", row=label, view=view)


def as_structures(X: Any, *, column: str = "structure") -> list:
    """Structures of every row of *X*, validated; errors name the row.

    Accepts a DataFrame with a ``structure`` column (Structure objects or CIF strings) or a
    ``cif`` column, or a list of Structures / CIF strings.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> s = Structure(Lattice.cubic(4.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> len(as_structures([s, s]))
    2
    """
    frame = to_frame(X, default_column=column)
    if column not in frame.columns:
        if "cif" in frame.columns:
            column = "cif"
        else:
            raise InvalidInputError(
                f"no {column!r} column; columns are {list(frame.columns)}", view=column
            )
    labels = row_labels(frame)
    out = []
    for label, value in zip(labels, frame[column], strict=True):
        if is_missing(value):
            raise InvalidInputError("structure is missing", row=label, view=column)
        out.append(_parse_structure(value, label, column))
    return out


def as_compositions(X: Any, *, column: str = "composition") -> list:
    """Compositions of every row: from a ``composition`` column (Composition or formula),
    else derived from ``structure``/``cif``. Unknown element symbols raise naming the row.
    """
    from pymatgen.core import Composition, Structure

    frame = to_frame(X, default_column=column)
    if column not in frame.columns:
        if "structure" in frame.columns or "cif" in frame.columns:
            return [s.composition for s in as_structures(frame)]
        if frame.shape[1] == 1 and frame.columns[0] == "structure":
            return [s.composition for s in as_structures(frame)]
        raise InvalidInputError(
            f"no {column!r} or 'structure' column; columns are {list(frame.columns)}", view=column
        )
    labels = row_labels(frame)
    out = []
    for label, value in zip(labels, frame[column], strict=True):
        if is_missing(value):
            raise InvalidInputError("composition is missing", row=label, view=column)
        if isinstance(value, Structure):
            check_structure(value, label=label, view=column)
            value = value.composition
        elif isinstance(value, str):
            try:
                value = Composition(value)
            except Exception as exc:  # pymatgen raises ValueError or KeyError for bad symbols
                raise InvalidInputError(f"cannot parse formula {value!r}: {exc}", row=label, view=column) from exc
        elif not isinstance(value, Composition):
            raise InvalidInputError(
                f"expected a Composition or formula string, got {type(value).__name__}",
                row=label,
                view=column,
            )
        if value.num_atoms <= 0:
            raise InvalidInputError("composition is empty", row=label, view=column)
        check_known_elements(value, label=label, view=column)
        out.append(value)
    return out


def present_structures(frame: pd.DataFrame) -> tuple[np.ndarray, list]:
    """Rows of *frame* that carry a structure (``structure`` or ``cif`` column), and those
    structures, validated. Missing cells are allowed here: views derived from the structure
    are then missing for that row.
    """
    column = "structure" if "structure" in frame.columns else "cif" if "cif" in frame.columns else None
    present = np.zeros(len(frame), dtype=bool)
    if column is None:
        return present, []
    structures = []
    for i, (label, value) in enumerate(zip(row_labels(frame), frame[column], strict=True)):
        if is_missing(value):
            continue
        structures.append(_parse_structure(value, label, column))
        present[i] = True
    return present, structures


def check_texts(values: Sequence[Any], labels: Sequence[Any], *, view: str = "text") -> None:
    """Refuse empty or whitespace-only strings among the cells of a text view, naming the row.

    A sentence model embeds ``""`` as readily as a description, so an empty cell would enter
    training as a real, meaningless text view. A missing text is ``None`` (or NaN); non-string
    cells (precomputed embeddings) are left to the caller.

    Examples
    --------
    >>> check_texts(["NaCl adopts the rock-salt structure.", None], ["mp-22862", "mp-1"])
    >>> check_texts(["NaCl adopts the rock-salt structure.", "  \\n"], ["mp-22862", "mp-1"])
    Traceback (most recent call last):
    ...
    skmat.exceptions.InvalidInputError: row 'mp-1', view 'text': text is empty or whitespace only; use None for a missing text view
    """
    for label, value in zip(labels, values, strict=True):
        if isinstance(value, str) and not value.strip():
            raise InvalidInputError(
                "text is empty or whitespace only; use None for a missing text view", row=label, view=view
            )


def image_cells(
    cells: Sequence[Any], labels: Sequence[Any], *, shape: tuple[int, int, int] | None = None, view: str = "image"
) -> tuple[np.ndarray, np.ndarray]:
    """Present mask and the float32 ``(n_present, C, H, W)`` stack of an image view's cells.

    A cell is ``None``/NaN (a missing view), a ``(C, H, W)`` array, an ``(H, W)`` array (one
    channel) or, when *shape* is given, a flat array of ``C * H * W`` pixels (a row of
    :class:`~skmat.features.DiffractionImage`'s output). Every present cell must have *shape*
    (or, with ``shape=None``, the shape of the first present cell) and finite pixels; the
    error names the first row that does not.

    Examples
    --------
    >>> import numpy as np
    >>> present, images = image_cells([np.zeros((2, 4, 4)), None], ["mp-1", "mp-2"])
    >>> present.tolist(), images.shape
    ([True, False], (1, 2, 4, 4))
    >>> image_cells([np.zeros(32), np.zeros(32)], ["mp-1", "mp-2"], shape=(2, 4, 4))[1].shape
    (2, 2, 4, 4)
    >>> image_cells([np.zeros((2, 4, 4)), np.zeros((2, 4, 5))], ["mp-1", "mp-2"])
    Traceback (most recent call last):
    ...
    skmat.exceptions.InvalidInputError: row 'mp-2', view 'image': expected an image of shape (2, 4, 4) (channels, height, width), got shape (2, 4, 5)
    """
    present = np.zeros(len(cells), dtype=bool)
    stack = []
    expected = None if shape is None else tuple(int(s) for s in shape)
    for i, (label, value) in enumerate(zip(labels, cells, strict=True)):
        if is_missing(value):
            continue
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"cannot read the image as numbers: {exc}", row=label, view=view) from exc
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 1 and expected is not None and array.size == int(np.prod(expected)):
            array = array.reshape(expected)
        if array.ndim != 3 or (expected is not None and array.shape != expected):
            wanted = f"of shape {expected}" if expected is not None else "(channels, height, width) or (height, width)"
            raise InvalidInputError(
                f"expected an image {wanted} (channels, height, width), got shape {array.shape}"
                if expected is not None
                else f"expected an image {wanted}, got shape {array.shape}",
                row=label,
                view=view,
            )
        if array.size == 0:
            raise InvalidInputError(f"image has no pixels (shape {array.shape})", row=label, view=view)
        bad = ~np.isfinite(array)
        if bad.any():
            channel, y, x = np.argwhere(bad)[0]
            raise InvalidInputError(
                f"{int(bad.sum())} pixel(s) are NaN or inf (first at channel {channel}, row {y}, column {x})",
                row=label,
                view=view,
            )
        expected = array.shape
        stack.append(array)
        present[i] = True
    if not stack:
        return present, np.zeros((0, *(expected or (0, 0, 0))), dtype=np.float32)
    return present, np.stack(stack)
