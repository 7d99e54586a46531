"""Loaders of the CDVAE benchmark datasets: MP-20, Perov-5 and Carbon-24.

Files follow CDVAE's CSV schema (an unnamed index column, ``material_id``, ``cif`` with a P1
pymatgen CIF, then the properties) and are read from ``<data_home>/<name>/<split>.csv`` or
``.csv.gz``. Missing files are downloaded from the CDVAE repository at a pinned commit and
checked against their git blob ids.

Parsing thousands of CIFs plus a spglib call per structure dominates the load time, so:

* a ``<split>.npz`` beside the CSV with the same ``material_id`` order (the layout of the
  shared MP-20 copy: stacked lattices and fractional coordinates) replaces CIF parsing;
* CIFs in the exact P1 layout pymatgen writes go through a reader ~5x faster than
  ``CifParser`` with bit-identical results (``_cif.py``); others through ``CifParser``;
* a ``spacegroup.number`` column (MP-20) replaces the spglib call;
* the remaining per-row work runs in joblib chunks (``n_jobs``);
* parsed cells are cached in the process, keyed by the file contents, so a second call (for
  another target, say) only rebuilds the Structure objects; every call gets new objects.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from skmat.datasets._base import RemoteFile, dataset_bunch, download, find_local, get_data_home, missing_file_error
from skmat.datasets._targets import SYMPREC, derived_columns, symmetry_of
from skmat.exceptions import InvalidInputError

CDVAE_COMMIT = "f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea"
#: Where missing CDVAE files are downloaded from; ``$SKMAT_CDVAE_URL`` overrides it (a mirror,
#: or a local server in tests). Files are fetched as ``<base>/<name>/<split>.csv``.
CDVAE_BASE_URL = f"https://raw.githubusercontent.com/txie-93/cdvae/{CDVAE_COMMIT}/data"
CDVAE_URL_ENV = "SKMAT_CDVAE_URL"

#: git blob ids of the CSVs at CDVAE_COMMIT, checked on every download
CDVAE_BLOB_IDS = {
    ("mp_20", "train"): "b1c9d498565ac2fd8d075a51ff2ef5e51ba6c21f",
    ("mp_20", "val"): "7efe4d7ebeb4f460ceaad35e5326c42111d9c9a1",
    ("mp_20", "test"): "5dc643041df53f5ce4970a79930ad262b4f07acd",
    ("perov_5", "train"): "0769074b5d51d293b765c4371b8f55c468c9c9f2",
    ("perov_5", "val"): "4a2c8dde98347dd0e01fa83dcf3982c2abe98f9f",
    ("perov_5", "test"): "d3c5d5af4b27a2a139149f2bb73c8a3dba9d8ac1",
    ("carbon_24", "train"): "5e7ae970fbad8ddc46b6963e8cd6e425f11783a6",
    ("carbon_24", "val"): "b3e29b927883642426ca1d9632d00359b412742b",
    ("carbon_24", "test"): "9beca843fde489de1fe288b32f9e3ff710d42803",
}
SPLITS = ("train", "val", "test")

# columns of the CSV that the frame replaces by parsed or derived ones
_REPLACED_COLUMNS = {"cif", "spacegroup.number", "num_atoms"}
_FORMULA_SUM = re.compile(r"^_chemical_formula_sum\s+'?([^'\n]+)'?\s*$", re.MULTILINE)

_CACHE_SIZE = 8  # entries are arrays, a few MB each even for MP-20
_parsed_cache: OrderedDict[tuple, list] = OrderedDict()


class _Cell(NamedTuple):
    """One parsed structure, as plain arrays (cheap to pickle, cache and rebuild from)."""

    matrix: np.ndarray
    species: Any  # int16 atomic numbers when ordered and charge-free, else per-site species
    frac_coords: np.ndarray
    spacegroup: int  # 0 when it comes from the CSV instead
    conventional_matrix: np.ndarray | None
    conventional_sites: int | None
    labels: list[str] | None = None  # site labels of a CIF (None: pymatgen's default)


def _compact_species(structure) -> Any:
    from pymatgen.core import Element

    if structure.is_ordered and all(isinstance(sp, Element) for sp in structure.composition):
        return np.asarray(structure.atomic_numbers, dtype=np.int16)
    return [site.species for site in structure]


def _build_structure(species, matrix, frac_coords, labels=None):
    from pymatgen.core import Lattice, Structure

    # Lattice and Structure copy the arrays, so returned structures never alias the cache
    return Structure(Lattice(matrix), species, frac_coords, labels=labels)


def _read_cif(text: str, label):
    """CDVAE CIFs through the fast P1 reader, anything it declines through CifParser."""
    from skmat._inputs import parse_cif
    from skmat.datasets._cif import read_p1_cif

    try:
        structure = read_p1_cif(text)
    except Exception:  # the fast path never decides that a CIF is bad: CifParser does
        structure = None
    return structure if structure is not None else parse_cif(text, label=label, view="cif")


def _check_formula_sum(text: str, structure, label) -> None:
    """A truncated CIF can still parse, with sites missing: compare with its own formula."""
    from pymatgen.core import Composition

    match = _FORMULA_SUM.search(text)
    if match is None:
        return
    try:
        declared = Composition(match.group(1))
    except Exception:  # a formula pymatgen cannot read proves nothing about truncation
        return
    if not declared.almost_equals(structure.composition):
        raise InvalidInputError(
            f"CIF declares {declared.formula} but its atom sites give {structure.composition.formula} "
            "(truncated or damaged CIF?)",
            row=label,
            view="cif",
        )


def _analyse_row(label, source, *, need_spacegroup: bool, conventional: bool) -> _Cell:
    from skmat._inputs import check_structure

    if isinstance(source, str):
        structure = _read_cif(source, label)
        _check_formula_sum(source, structure, label)
    else:
        structure = _build_structure(source[1], source[0], source[2])
    check_structure(structure, label=label, view="structure")
    number, conv_matrix, conv_sites = 0, None, None
    if need_spacegroup or conventional:
        try:
            number, conv_matrix, conv_sites = symmetry_of(structure, conventional=conventional, symprec=SYMPREC)
        except ValueError as exc:
            raise InvalidInputError(str(exc), row=label, view="structure") from exc
    if isinstance(source, str):
        return _Cell(
            structure.lattice.matrix.copy(), _compact_species(structure), structure.frac_coords,
            number, conv_matrix, conv_sites, list(structure.labels),
        )
    return _Cell(source[0], source[1], source[2], number, conv_matrix, conv_sites)


def _analyse_rows(rows: list, *, need_spacegroup: bool, conventional: bool) -> list:
    """Worker: parse/analyse a chunk; a bad row yields its error instead of stopping the chunk."""
    out = []
    for label, source in rows:
        try:
            out.append(_analyse_row(label, source, need_spacegroup=need_spacegroup, conventional=conventional))
        except InvalidInputError as exc:
            out.append(exc)
    return out


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def _npz_sources(npz_path: Path, material_ids: pd.Series):
    """Per-row ``(matrix, atomic numbers, frac coords)`` from an npz, or None if it does not match."""
    with np.load(npz_path) as arrays:
        needed = {"material_id", "num_atoms", "atomic_numbers", "frac_coords", "lattice"}
        if not needed <= set(arrays.files):
            warnings.warn(f"{npz_path} lacks {sorted(needed - set(arrays.files))}; parsing CIFs instead", stacklevel=7)
            return None, None
        ids = arrays["material_id"]
        if len(ids) != len(material_ids) or not np.array_equal(ids.astype(str), material_ids.astype(str).to_numpy()):
            warnings.warn(
                f"{npz_path} does not list the same material_ids as the CSV beside it; parsing CIFs instead",
                stacklevel=7,  # the caller of fetch_*
            )
            return None, None
        offsets = np.r_[0, np.cumsum(arrays["num_atoms"])]
        lattices = arrays["lattice"]
        numbers = arrays["atomic_numbers"].astype(np.int16)
        frac = arrays["frac_coords"]
        spacegroups = arrays["spacegroup_number"] if "spacegroup_number" in arrays.files else None
    sources = [
        (lattices[i], numbers[offsets[i] : offsets[i + 1]], frac[offsets[i] : offsets[i + 1]])
        for i in range(len(ids))
    ]
    return sources, spacegroups


def _valid_spacegroups(values) -> bool:
    values = pd.to_numeric(pd.Series(values), errors="coerce")
    return bool(values.notna().all() and values.between(1, 230).all() and (values % 1 == 0).all())


def _parse_cells(table: pd.DataFrame, npz_path: Path | None, *, conventional: bool, n_jobs, verbose: int, desc: str):
    """Cells (or per-row errors) and the space groups they come with, in table order."""
    from skmat._parallel import map_chunks

    ids = table["material_id"].tolist()
    sources, spacegroups = _npz_sources(npz_path, table["material_id"]) if npz_path else (None, None)
    if sources is None:
        sources = table["cif"].tolist()
    if spacegroups is None and "spacegroup.number" in table.columns:
        spacegroups = table["spacegroup.number"].to_numpy()
    if spacegroups is not None and not _valid_spacegroups(spacegroups):
        spacegroups = None
    need_spacegroup = spacegroups is None
    kwargs = {"need_spacegroup": need_spacegroup, "conventional": conventional}
    if not sources:
        return []
    if isinstance(sources[0], str) or need_spacegroup or conventional:
        cells = map_chunks(
            _analyse_rows, list(zip(ids, sources, strict=True)), kwargs=kwargs,
            n_jobs=n_jobs, chunk_size=256, verbose=verbose, desc=desc,
        )
    else:
        # npz with space groups and the cell as given: nothing per row is left to compute
        cells = [_Cell(m, z, f, 0, None, None) for m, z, f in sources]
    if not need_spacegroup:
        cells = [
            cell if isinstance(cell, InvalidInputError) else cell._replace(spacegroup=int(number))
            for cell, number in zip(cells, spacegroups, strict=True)
        ]
    return cells


def _cached_cells(csv_bytes: bytes, table, npz_path, *, conventional, n_jobs, verbose, desc):
    key = (
        hashlib.sha1(csv_bytes).hexdigest(),
        hashlib.sha1(npz_path.read_bytes()).hexdigest() if npz_path else None,
        bool(conventional),
        SYMPREC,
    )
    if key in _parsed_cache:
        _parsed_cache.move_to_end(key)
        return _parsed_cache[key]
    cells = _parse_cells(table, npz_path, conventional=conventional, n_jobs=n_jobs, verbose=verbose, desc=desc)
    _parsed_cache[key] = cells
    while len(_parsed_cache) > _CACHE_SIZE:
        _parsed_cache.popitem(last=False)
    return cells


def _locate_csv(data_home: Path, name: str, split: str, download_if_missing: bool) -> Path:
    candidates = [f"{name}/{split}.csv", f"{name}/{split}.csv.gz"]
    found = find_local(data_home, candidates)
    if found is not None:
        # files already in the data home are trusted: the shared MP-20 copy is rebuilt from
        # MatterGen's cache and is deliberately not byte-identical to CDVAE's
        return found
    base_url = os.environ.get(CDVAE_URL_ENV) or CDVAE_BASE_URL
    url = f"{base_url.rstrip('/')}/{name}/{split}.csv"
    if not download_if_missing:
        raise missing_file_error(
            data_home, candidates, f"It can be downloaded from {url} (or call with download_if_missing=True)."
        )
    return download(RemoteFile(candidates[0], url, CDVAE_BLOB_IDS[name, split]), data_home)


def _check_options(split: str, errors: str) -> None:
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {SPLITS}, got {split!r}", view="split")
    if errors not in ("raise", "skip"):
        raise InvalidInputError(f"errors must be 'raise' or 'skip', got {errors!r}", view="errors")


def _load_frame(name, split, *, data_home, download_if_missing, conventional, errors, n_jobs, verbose) -> pd.DataFrame:
    """The full frame of one CDVAE split: ids, Structures, compositions, properties, derived targets."""
    _check_options(split, errors)
    home = get_data_home(data_home)
    csv_path = _locate_csv(home, name, split, download_if_missing)
    csv_bytes = _read_bytes(csv_path)
    table = pd.read_csv(io.BytesIO(csv_bytes))
    table = table.drop(columns=[c for c in table.columns if str(c).startswith("Unnamed:")])
    missing = {"material_id", "cif"} - set(table.columns)
    if missing:
        raise InvalidInputError(f"{csv_path} lacks the CDVAE column(s) {sorted(missing)}", view="cif")
    npz_path = home / name / f"{split}.npz"
    cells = _cached_cells(
        csv_bytes, table, npz_path if npz_path.is_file() else None,
        conventional=conventional, n_jobs=n_jobs, verbose=verbose, desc=f"{name}/{split}",
    )

    failed = [i for i, cell in enumerate(cells) if isinstance(cell, InvalidInputError)]
    if failed and errors == "raise":
        first = cells[failed[0]]
        others = f" ({len(failed) - 1} more row(s) fail too)" if len(failed) > 1 else ""
        raise InvalidInputError(
            f"{first.reason}{others}; pass errors='skip' to drop unreadable rows", row=first.row, view=first.view
        )
    if failed:
        warnings.warn(
            f"skipped {len(failed)} of {len(cells)} rows of {csv_path.name} that could not be read "
            f"(first: {cells[failed[0]]})",
            stacklevel=4,  # the caller of fetch_*
        )
        keep = np.setdiff1d(np.arange(len(cells)), failed)
        table = table.iloc[keep].reset_index(drop=True)
        cells = [cells[i] for i in keep]

    structures = [_build_structure(c.species, c.matrix, c.frac_coords, c.labels) for c in cells]
    num_sites = np.array([len(s) for s in structures], dtype=int)
    if conventional:
        matrices = np.stack([c.conventional_matrix for c in cells]) if cells else np.empty((0, 3, 3))
        cell_sites = np.array([c.conventional_sites for c in cells], dtype=int)
    else:
        matrices = np.stack([c.matrix for c in cells]) if cells else np.empty((0, 3, 3))
        cell_sites = num_sites
    derived = derived_columns(matrices, cell_sites, [c.spacegroup for c in cells])
    properties = table.drop(columns=[c for c in table.columns if c in _REPLACED_COLUMNS or c == "material_id"])
    frame = pd.concat(
        [
            pd.DataFrame(
                {
                    "material_id": table["material_id"].to_numpy(),
                    "structure": pd.Series(structures, dtype=object),
                    "composition": pd.Series([s.composition for s in structures], dtype=object),
                }
            ),
            properties.reset_index(drop=True),
            pd.DataFrame({"num_atoms": num_sites}),
            derived,
        ],
        axis=1,
    )
    return frame


_COMMON_DOC = """
    Parameters
    ----------
    split : {{"train", "val", "test"}}, default="val"
        Which CDVAE split.
    data_home : str or path-like, optional
        Data home (see :func:`~skmat.datasets.get_data_home`); the file is
        ``<data_home>/{name}/<split>.csv`` or ``.csv.gz``.
    download_if_missing : bool, default=True
        Download the CSV from CDVAE (commit ``{commit}``, git blob id checked) when it is not in
        the data home. ``False`` raises :class:`~skmat.exceptions.DataNotFoundError` instead.
    return_X_y : bool, default=False
        Return ``(X, y)``: X is a DataFrame with columns ``structure`` and ``composition``
        indexed by ``material_id``, y the target column(s) with the same index.
    target : str or list of str, optional
        Target column(s) or a shortcut: ``"lattice"`` (``a_scaled, b_scaled, c_scaled``),
        ``"lattice_raw"`` (``a, b, c``), ``"angles"``, ``"crystal_system"``. Default
        ``"{default_target}"``.
    conventional : bool, default=False
        Lattice columns of the conventional standard cell (``SpacegroupAnalyzer``, symprec
        0.1) instead of the cell as given; the scaled lengths then divide by the atom count of
        the conventional cell. Runs spglib on every row (slower).
    errors : {{"raise", "skip"}}, default="raise"
        A row whose CIF cannot be read raises :class:`~skmat.exceptions.InvalidInputError`
        naming its ``material_id``; ``"skip"`` drops such rows with a warning saying how many.
    n_jobs : int, optional
        joblib workers for CIF parsing and symmetry analysis.
    verbose : int, default=0
        ``> 0`` shows a progress bar.

    Returns
    -------
    Bunch or (X, y)
        The Bunch has ``frame`` (one row per material: ``material_id``, ``structure``,
        ``composition``, the dataset's properties, ``num_atoms``, ``a, b, c, alpha, beta, gamma``,
        ``a_scaled, b_scaled, c_scaled``, ``spacegroup``, ``crystal_system``), ``data`` (X),
        ``target`` (y), ``feature_names``, ``target_names`` and ``DESCR``.
"""

_FEATURES = ["structure", "composition"]


def _fetch(name, default_target, descr, split, data_home, download_if_missing, return_X_y, target,
           conventional, errors, n_jobs, verbose):
    frame = _load_frame(
        name, split, data_home=data_home, download_if_missing=download_if_missing,
        conventional=conventional, errors=errors, n_jobs=n_jobs, verbose=verbose,
    )
    return dataset_bunch(
        frame, id_column="material_id", feature_names=_FEATURES,
        target=default_target if target is None else target, descr=descr, return_X_y=return_X_y,
    )


MP20_DESCR = """MP-20 (CDVAE benchmark split)
=============================

45,231 stable inorganic materials from the Materials Project with at most 20 atoms in the
cell, split 60/20/20 (train 27,136 / val 9,047 / test 9,048) by Xie et al. for CDVAE, and used
by DiffCSP, MatterGen, UniMat and others. Properties: formation_energy_per_atom (eV/atom),
band_gap (eV, PBE), e_above_hull (eV/atom, in CDVAE's files), spacegroup (symprec 0.1).
The literature lattice target is the scaled lengths (a, b, c) / N^(1/3) (target="lattice").

The copy in skmat's shared data home was rebuilt from MatterGen's cache of the same split:
CIFs rewritten from lattice + fractional coordinates, no e_above_hull, and extra columns
dft_bulk_modulus and dft_mag_density; its val.npz holds the same structures as arrays.

Source: https://github.com/txie-93/cdvae (data/mp_20), MIT licence; data CC-BY-4.0 from the
Materials Project.
Cite: T. Xie, X. Fu, O.-E. Ganea, R. Barzilay, T. Jaakkola, "Crystal Diffusion Variational
Autoencoder for Periodic Material Generation", ICLR 2022; A. Jain et al., "The Materials
Project", APL Mater. 1, 011002 (2013).
"""

PEROV5_DESCR = """Perov-5 (CDVAE benchmark split)
===============================

18,928 cubic ABX3 perovskites (5 atoms per cell, 56 elements), split 60/20/20 by CDVAE
(val: 3,787). Properties: heat_ref (heat of formation, eV/atom; the CDVAE target), heat_all,
dir_gap and ind_gap (band gaps, eV; mostly 0), formula.

Source: https://github.com/txie-93/cdvae (data/perov_5), MIT licence.
Cite: I. E. Castelli et al., "New cubic perovskites for one- and two-photon water splitting
using the computational materials repository", Energy Environ. Sci. 5, 9034 (2012); and CDVAE
(Xie et al., ICLR 2022).
"""

CARBON24_DESCR = """Carbon-24 (CDVAE benchmark split)
=================================

10,153 carbon structures with 6-24 atoms per cell found by AIRSS at 10 GPa, split 60/20/20 by
CDVAE (val: 2,032). Property: energy_per_atom (eV/atom, DFT total energy; narrow spread).

Source: https://github.com/txie-93/cdvae (data/carbon_24), MIT licence; data from Materials
Cloud, doi:10.24435/MATERIALSCLOUD:2020.0026/V1.
Cite: C. J. Pickard, "AIRSS data for carbon at 10GPa and the C+N+H+O system at 1GPa",
Materials Cloud Archive 2020.0026/v1 (2020); and CDVAE (Xie et al., ICLR 2022).
"""


def fetch_mp20(
    split: str = "val",
    *,
    data_home=None,
    download_if_missing: bool = True,
    return_X_y: bool = False,
    target: str | list[str] | None = None,
    conventional: bool = False,
    errors: str = "raise",
    n_jobs: int | None = None,
    verbose: int = 0,
):
    """Load the MP-20 benchmark (Materials Project structures with at most 20 atoms).
    {doc}
    Examples
    --------
    >>> from skmat.datasets import fetch_mp20
    >>> X, y = fetch_mp20(split="val", target="lattice", return_X_y=True)  # doctest: +SKIP
    >>> X.shape, y.shape  # doctest: +SKIP
    ((9047, 2), (9047, 3))
    """
    return _fetch("mp_20", "formation_energy_per_atom", MP20_DESCR, split, data_home, download_if_missing,
                  return_X_y, target, conventional, errors, n_jobs, verbose)


def fetch_perov5(
    split: str = "val",
    *,
    data_home=None,
    download_if_missing: bool = True,
    return_X_y: bool = False,
    target: str | list[str] | None = None,
    conventional: bool = False,
    errors: str = "raise",
    n_jobs: int | None = None,
    verbose: int = 0,
):
    """Load the Perov-5 benchmark (cubic ABX3 perovskites, 5 atoms per cell).
    {doc}
    Examples
    --------
    >>> from skmat.datasets import fetch_perov5
    >>> data = fetch_perov5(split="val")  # doctest: +SKIP
    >>> data.frame["num_atoms"].unique().tolist()  # doctest: +SKIP
    [5]
    """
    return _fetch("perov_5", "heat_ref", PEROV5_DESCR, split, data_home, download_if_missing,
                  return_X_y, target, conventional, errors, n_jobs, verbose)


def fetch_carbon24(
    split: str = "val",
    *,
    data_home=None,
    download_if_missing: bool = True,
    return_X_y: bool = False,
    target: str | list[str] | None = None,
    conventional: bool = False,
    errors: str = "raise",
    n_jobs: int | None = None,
    verbose: int = 0,
):
    """Load the Carbon-24 benchmark (AIRSS carbon structures, 6-24 atoms).
    {doc}
    Examples
    --------
    >>> from skmat.datasets import fetch_carbon24
    >>> X, y = fetch_carbon24(return_X_y=True, target="crystal_system")  # doctest: +SKIP
    """
    return _fetch("carbon_24", "energy_per_atom", CARBON24_DESCR, split, data_home, download_if_missing,
                  return_X_y, target, conventional, errors, n_jobs, verbose)


for _func, _name, _default in [
    (fetch_mp20, "mp_20", "formation_energy_per_atom"),
    (fetch_perov5, "perov_5", "heat_ref"),
    (fetch_carbon24, "carbon_24", "energy_per_atom"),
]:
    _func.__doc__ = _func.__doc__.format(
        doc=_COMMON_DOC.format(name=_name, commit=CDVAE_COMMIT[:10], default_target=_default)
    )
