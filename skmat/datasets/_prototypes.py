"""The real crystal structures pymatgen ships: an offline dataset for demos and fast tests."""

from __future__ import annotations

import functools
import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from skmat.datasets._base import dataset_bunch
from skmat.datasets._targets import SYMPREC, derived_columns, symmetry_of

PROTOTYPES_DESCR = """Crystal prototypes shipped with pymatgen (offline)
==================================================

* 288 AFLOW prototypes (pymatgen/analysis/prototypes/aflow_prototypes.json.gz, the library
  behind pymatgen's AflowPrototypeMatcher): material_id is the AFLOW label, suffixed -1, -2, ...
  where a label occurs more than once; with pearson symbol, strukturbericht designation and
  mineral name where known.
* The ~20 structures of pymatgen's test set (pymatgen/util/structures/*.json: Si, LiFePO4,
  SrTiO3, a Si/SiO2 interface, one partially occupied Li10GeP2S12, ...): material_id is the
  file name.

Derived columns as for MP-20: a, b, c, alpha, beta, gamma; a_scaled, b_scaled, c_scaled
(lengths / N^(1/3), N = sites in the cell); spacegroup (spglib, symprec 0.1); crystal_system.
A small, varied, real set (every crystal system) that needs no network and loads in about a
second: meant for examples and tests, not for benchmarks.

Source: pymatgen (MIT licence). AFLOW prototypes: M. J. Mehl et al., "The AFLOW Library of
Crystallographic Prototypes: Part 1", Comput. Mater. Sci. 136, S1 (2017); D. Hicks et al.,
Part 2, Comput. Mater. Sci. 161, S1 (2019). pymatgen: S. P. Ong et al., Comput. Mater. Sci. 68,
314 (2013).
"""


def _unique_labels(labels: list[str]) -> list[str]:
    counts = Counter(labels)
    seen: Counter = Counter()
    out = []
    for label in labels:
        if counts[label] == 1:
            out.append(label)
        else:
            seen[label] += 1
            out.append(f"{label}-{seen[label]}")
    return out


def _pymatgen_records() -> list[dict]:
    import importlib.util

    import pymatgen.util as util_package
    from pymatgen.core import Structure

    # locate the package without importing it: its __init__ pulls in the structure matcher
    # and costs seconds, while only its data file is needed
    spec = importlib.util.find_spec("pymatgen.analysis.prototypes")
    library = Path(spec.submodule_search_locations[0]) / "aflow_prototypes.json.gz"
    # plain json is ~100x faster than monty's loadfn, which builds StructureNL objects we drop
    entries = json.loads(gzip.decompress(library.read_bytes()))
    ids = _unique_labels([entry["tags"]["aflow"] for entry in entries])
    records = [
        {
            "material_id": material_id,
            "structure": Structure.from_dict(entry["snl"]),
            "source": "aflow",
            "aflow_label": entry["tags"]["aflow"],
            "pearson": entry["tags"].get("pearson") or None,
            "strukturbericht": entry["tags"].get("strukturbericht") or None,
            "mineral": entry["tags"].get("mineral") or None,
        }
        for material_id, entry in zip(ids, entries, strict=True)
    ]
    for path in sorted((Path(util_package.__file__).parent / "structures").glob("*.json")):
        records.append(
            {
                "material_id": path.stem,
                "structure": Structure.from_file(path),
                "source": "pymatgen_test",
                "aflow_label": None,
                "pearson": None,
                "strukturbericht": None,
                "mineral": None,
            }
        )
    return records


@functools.lru_cache(maxsize=1)
def _prototype_frame() -> pd.DataFrame:
    records = _pymatgen_records()
    structures = [record["structure"] for record in records]
    spacegroups = [symmetry_of(s, symprec=SYMPREC)[0] for s in structures]
    frame = pd.DataFrame(records)
    frame.insert(2, "composition", pd.Series([s.composition for s in structures], dtype=object))
    num_sites = np.array([len(s) for s in structures], dtype=int)
    frame["num_atoms"] = num_sites
    matrices = np.stack([s.lattice.matrix for s in structures])
    return pd.concat([frame, derived_columns(matrices, num_sites, spacegroups)], axis=1)


def load_prototypes(*, return_X_y: bool = False, target: str | list[str] | None = None):
    """Load the ~309 real crystal structures that ship with pymatgen (no download).

    The 288 AFLOW prototypes plus pymatgen's ~20 test structures, with the derived lattice
    and symmetry columns of :func:`~skmat.datasets.fetch_mp20`. Built once per process (about
    a second); every call returns new DataFrames and Structure copies, so callers may modify
    them.

    Parameters
    ----------
    return_X_y : bool, default=False
        Return ``(X, y)``: X has columns ``structure`` and ``composition`` indexed by
        ``material_id``.
    target : str or list of str, optional
        Target column(s) or a shortcut (``"lattice"``, ``"lattice_raw"``, ``"angles"``,
        ``"crystal_system"``); default ``"crystal_system"``.

    Returns
    -------
    Bunch or (X, y)
        ``frame`` columns: ``material_id``, ``structure``, ``composition``, ``source``
        (``"aflow"`` or ``"pymatgen_test"``), ``aflow_label``, ``pearson``,
        ``strukturbericht``, ``mineral``, ``num_atoms``, ``a, b, c, alpha, beta, gamma``,
        ``a_scaled, b_scaled, c_scaled``, ``spacegroup``, ``crystal_system``.

    Examples
    --------
    >>> from skmat.datasets import load_prototypes
    >>> X, y = load_prototypes(return_X_y=True, target="crystal_system")
    >>> X.loc["Si", "structure"].composition.reduced_formula
    'Si'
    >>> sorted(y.unique())[:3]
    ['cubic', 'hexagonal', 'monoclinic']
    """
    frame = _prototype_frame().copy()
    frame["structure"] = pd.Series([s.copy() for s in frame["structure"]], dtype=object, index=frame.index)
    return dataset_bunch(
        frame,
        id_column="material_id",
        feature_names=["structure", "composition"],
        target="crystal_system" if target is None else target,
        descr=PROTOTYPES_DESCR,
        return_X_y=return_X_y,
    )
